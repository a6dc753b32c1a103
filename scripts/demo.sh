#!/usr/bin/env bash
# Deploys daolinet on this machine and shows it working: a single-site lab of two
# hosts (network namespaces with their own Open vSwitch and agent) and the controller.
# Installs what it needs first.  `./scripts/demo.sh down` removes a lab left behind.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/python scripts/demo.py "$@"
