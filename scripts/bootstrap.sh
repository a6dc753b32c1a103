#!/usr/bin/env bash
# Installs what daolinet needs on a Debian 12 machine (run as root): the OS packages
# and a virtualenv (.venv) with the pinned Python dependencies.  Idempotent: a second
# run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  openvswitch-switch openvswitch-common iproute2 ethtool iperf3 traceroute tcpdump
  iputils-ping netcat-openbsd procps python3 python3-venv python3-pip
  docker.io busybox-static
  docker-compose  # Compose (Debian's 1.29) for tests/integration/test_docker_names.py
  wireguard-tools wireguard-go nftables
  debootstrap
  etcd-server etcd-client
  chromium chromium-driver  # the live map's browser test (tests/integration/test_live_map.py)
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "bootstrap: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
stamp=.venv/.daolinet-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [[ ! -x .venv/bin/python || ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  echo "bootstrap: creating .venv with the pinned dependencies"
  "$PYTHON" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[dev]'
  echo "$want" > "$stamp"
fi
