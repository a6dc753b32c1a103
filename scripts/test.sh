#!/usr/bin/env bash
# The whole test suite: lint, types, unit tests, integration tests on real Open
# vSwitch instances in network namespaces.  Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"

echo "== lint and types"
ruff check controller hostnet tests benchmarks
mypy

echo "== unit and integration tests"
# pytest exits 5 when it collected nothing: that is a failure here too.
pytest -p no:cacheprovider tests/unit tests/integration "$@"
