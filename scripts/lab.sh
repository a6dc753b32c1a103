#!/usr/bin/env bash
# The two-site lab: Docker containers running systemd are the "hosts", each site its
# own Docker network, a router container between them, and playbooks/site.yml
# deploys daolinet on them over the docker connection.
#
#   scripts/lab.sh up        build the host image (cached), create the lab, deploy
#   scripts/lab.sh deploy    re-run site.yml on the running lab (changes nothing)
#   scripts/lab.sh down      remove the lab (and the dockerd this script started)
#   scripts/lab.sh status    what is running
#   scripts/lab.sh image     build the host image if needed, print its name
#   scripts/lab.sh dockerd-up | dockerd-down   only the Docker engine (tests); up
#                            prints "started" when it had to start one
#
# A Docker engine is used if one answers; otherwise one is started and `down` (or
# `dockerd-down`) stops it again.  Traffic goes only to the lab's own containers
# and networks, and to the Debian mirror when the image is built.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
STATE=/run/daolinet-lab
DOCKERD_PID=$STATE/dockerd.pid
INVENTORY=inventory/lab

log() { echo "lab: $*" >&2; }

dockerd_up() {
  if docker info >/dev/null 2>&1; then
    return 0
  fi
  mkdir -p "$STATE"
  log "no Docker engine answers; starting dockerd (log: $STATE/dockerd.log)"
  # setsid: the engine outlives this script (lab up) and is stopped by pid.
  setsid dockerd --pidfile "$DOCKERD_PID" >"$STATE/dockerd.log" 2>&1 </dev/null &
  for _ in $(seq 100); do
    docker info >/dev/null 2>&1 && { touch "$STATE/dockerd.ours"; echo started; return 0; }
    sleep 0.3
  done
  log "dockerd did not start:"; tail -20 "$STATE/dockerd.log" >&2
  return 1
}

dockerd_down() {
  [[ -f $STATE/dockerd.ours && -f $DOCKERD_PID ]] || return 0
  local pid; pid=$(cat "$DOCKERD_PID")
  log "stopping the dockerd this script started (pid $pid)"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.3
  done
  rm -f "$STATE/dockerd.ours"
}

venv() {
  scripts/bootstrap.sh
  export PATH="$ROOT/.venv/bin:$PATH"
}

# name site network address [extra docker run args...]
HOSTS=(
  "lab-ctl  a lab-site-a 198.18.1.10"
  "lab-a1   a lab-site-a 198.18.1.11"
  "lab-a2   a lab-site-a 198.18.1.12"
  "lab-b1   b lab-site-b 198.18.2.11"
)
NETWORKS=(
  "lab-site-a 198.18.1.0/24 198.18.1.254"
  "lab-site-b 198.18.2.0/24 198.18.2.254"
)
# The options a systemd "host" needs here (no --privileged: see ENVIRONMENT.md).
HOST_OPTS=(
  --cap-add ALL --cap-drop SYS_RESOURCE
  --security-opt seccomp=unconfined --security-opt apparmor=unconfined
  --device /dev/net/tun --cgroupns=host -v /sys/fs/cgroup:/sys/fs/cgroup:rw
  --tmpfs /run --tmpfs /run/lock
  # /proc/sys is read-only in a container: the sysctls a daolinet host needs are set
  # at creation (the agent only checks them).
  --sysctl net.ipv4.ip_forward=1
  --sysctl net.ipv4.conf.all.rp_filter=0 --sysctl net.ipv4.conf.default.rp_filter=0
  --sysctl net.ipv4.conf.all.send_redirects=0 --sysctl net.ipv4.conf.default.send_redirects=0
)

lab_up() {
  venv
  dockerd_up >/dev/null
  local image; image=$(scripts/lab-image.sh)
  local net subnet router
  for line in "${NETWORKS[@]}"; do
    read -r net subnet router <<<"$line"
    docker network inspect "$net" >/dev/null 2>&1 ||
      docker network create --subnet "$subnet" --label daolinet-lab=1 "$net" >/dev/null
  done
  if ! docker container inspect lab-router >/dev/null 2>&1; then
    log "creating lab-router"
    docker run -d --name lab-router --hostname lab-router --label daolinet-lab=1 \
      "${HOST_OPTS[@]}" --network lab-site-a --ip 198.18.1.254 "$image" \
      sleep infinity >/dev/null
    docker network connect --ip 198.18.2.254 lab-site-b lab-router
    # The router only routes between the sites: no way out of the lab.
    docker exec lab-router ip route del default 2>/dev/null || true
  fi
  local name site addr
  for line in "${HOSTS[@]}"; do
    read -r name site net addr <<<"$line"
    if ! docker container inspect "$name" >/dev/null 2>&1; then
      log "creating $name (site $site, $addr)"
      docker run -d --name "$name" --hostname "$name" --label daolinet-lab=1 \
        --stop-signal SIGRTMIN+3 "${HOST_OPTS[@]}" --network "$net" --ip "$addr" "$image" >/dev/null
    fi
    router=$(for n in "${NETWORKS[@]}"; do set -- $n; if [[ $1 == "$net" ]]; then echo "$3"; fi; done)
    # Default route through the router: the other site, and nothing beyond it.
    docker exec "$name" ip route replace default via "$router"
  done
  lab_deploy
  for line in "${HOSTS[@]}"; do
    read -r name _ <<<"$line"
    # busybox for the nested engines (the image carries its rootfs).
    docker exec "$name" sh -c 'command -v docker >/dev/null || exit 0
      docker image inspect busybox:lab >/dev/null 2>&1 ||
      docker import /usr/local/share/daolinet-lab/busybox.tar busybox:lab >/dev/null'
  done
  cat <<'EOT'

The lab is up: site A = lab-ctl (controller), lab-a1, lab-a2; site B = lab-b1.
Try:
  docker exec lab-a1 docker network create -d daolinet --ipam-driver daolinet --subnet 10.20.0.0/24 web
  docker exec lab-a2 docker network create -d daolinet --ipam-driver daolinet --subnet 10.20.0.0/24 web
  docker exec lab-b1 docker network create -d daolinet --ipam-driver daolinet --subnet 10.20.0.0/24 web
  docker exec lab-a1 docker run -d --name w1 --network web --ip 10.20.0.11 busybox:lab nc -ll -p 7000 -e echo hello
  docker exec lab-a2 docker run --rm --network web busybox:lab nc -w 3 10.20.0.11 7000
  docker exec lab-b1 docker run --rm --network web busybox:lab ping -c 3 10.20.0.11
  docker exec lab-a2 docker run --rm --network web busybox:lab traceroute -n 10.20.0.11
  docker exec lab-ctl daolictl route list
  docker exec lab-ctl daolictl host list
  docker exec lab-b1 wg show
Re-run the deployment (changes nothing):  scripts/lab.sh deploy
Tear it down:                            scripts/lab.sh down
EOT
}

lab_deploy() {
  venv
  log "running playbooks/site.yml on the lab"
  ANSIBLE_CONFIG=$ROOT/ansible.cfg ansible-playbook -i "$INVENTORY" playbooks/site.yml "$@"
}

lab_down() {
  local ids
  ids=$(docker ps -aq --filter label=daolinet-lab=1 2>/dev/null || true)
  [[ -n $ids ]] && docker rm -f $ids >/dev/null
  ids=$(docker network ls -q --filter label=daolinet-lab=1 2>/dev/null || true)
  [[ -n $ids ]] && docker network rm $ids >/dev/null
  dockerd_down
  log "lab removed"
}

case ${1:-} in
  up) lab_up ;;
  deploy) shift; lab_deploy "$@" ;;
  down) lab_down ;;
  status) docker ps --filter label=daolinet-lab=1 ;;
  dockerd-up) dockerd_up ;;
  dockerd-down) dockerd_down ;;
  image) dockerd_up >/dev/null; scripts/lab-image.sh ;;
  *) echo "usage: $0 up|deploy|down|status|image" >&2; exit 2 ;;
esac
