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

echo "== deployment: ansible-lint (production profile), molecule (two-site lab)"
ansible-lint roles playbooks tests/molecule
# Molecule's hosts are containers: use the Docker engine that runs, or start one
# for the run and stop it afterwards.
dockerd_started=$(scripts/lab.sh dockerd-up)
trap '[[ -z ${dockerd_started:-} ]] || scripts/lab.sh dockerd-down' EXIT
DAOLINET_LAB_IMAGE=$(scripts/lab-image.sh)
DAOLINET_WHEELHOUSE=$(roles/daolinet/files/wheelhouse.sh "$PWD" \
  "$HOME/.cache/daolinet/wheelhouse" "$PWD/.venv/bin/python" | cut -d' ' -f3)
export DAOLINET_LAB_IMAGE DAOLINET_WHEELHOUSE
(cd tests && molecule test)
