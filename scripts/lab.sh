#!/usr/bin/env bash
# The lab: Docker containers running systemd are the "hosts", each site its own
# Docker network, router containers between them (one of them a NAT), and
# playbooks/site.yml deploys daolinet on them over the docker connection.  Hosts,
# sites, networks and addresses come from inventory/lab/hosts.yml: a host added there
# is created and joins on the next `up`.
#
#   scripts/lab.sh up        build the host image (cached), create the lab, deploy
#   scripts/lab.sh deploy [ARGS]  re-run site.yml on the running lab (changes nothing;
#                            ARGS go to ansible-playbook, e.g. --check --diff)
#   scripts/lab.sh down      remove the lab (and the dockerd this script started)
#   scripts/lab.sh restart NAME  reboot a lab host (or router): restart its container
#   scripts/lab.sh status    what is running
#   scripts/lab.sh image     build the host image if needed, print its name
#   scripts/lab.sh dockerd-up | dockerd-down   only the Docker engine (tests); up
#                            prints "started" when it had to start one
#
# A Docker engine is used if one answers; otherwise one is started and `down` (or
# `dockerd-down`) stops it again.  DAOLINET_WHEELHOUSE (a tarball made by
# roles/daolinet/files/wheelhouse.sh) is installed instead of a build of this checkout.  Traffic goes only to the lab's own containers
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
  # setsid: the engine outlives this script (lab up) and is stopped by pid.  Without
  # the caller's other descriptors: a lock the caller holds (`flock FILE cmd`, the
  # Molecule and integration locks) must not stay held by the engine after the caller
  # ends.
  (
    for fd in /proc/self/fd/*; do
      fd=${fd##*/}
      ((fd > 2)) && eval "exec $fd>&-"
    done 2>/dev/null
    exec setsid dockerd --pidfile "$DOCKERD_PID" >"$STATE/dockerd.log" 2>&1 </dev/null
  ) &
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

# The lab as inventory/lab describes it (the only place that does), one line each:
#   network NAME SUBNET
#   router  NAME GATEWAY|- MASQUERADE|- NET=ADDR...
#   host    NAME SITE controller|docker|other GATEWAY|- NET=ADDR
lab_topology() {
  ansible-inventory -i "$INVENTORY" --list | python3 -c '
import json, sys
inv = json.load(sys.stdin)
hostvars = inv["_meta"]["hostvars"]
def members(group):
    g = inv.get(group, {})
    out = list(g.get("hosts", []))
    for child in g.get("children", []):
        out += members(child)
    return out
routers = set(members("lab_routers"))
controllers, dockers = set(members("daolinet_controller")), set(members("daolinet_hosts"))
nets = {}
for name, v in sorted(hostvars.items()):
    nets.update(v.get("lab_networks", {}))
for net, subnet in sorted(nets.items()):
    print("network", net, subnet)
for name in sorted(routers):
    v = hostvars[name]
    links = " ".join(f"{n}={a}" for n, a in sorted(v["lab_links"].items()))
    print("router", name, v.get("lab_gateway", "-"), v.get("lab_masquerade", "-"), links)
for name in sorted(set(hostvars) - routers):
    v = hostvars[name]
    kind = "controller" if name in controllers else "docker" if name in dockers else "other"
    print("host", name, v.get("daolinet_site", "default"), kind, v.get("lab_gateway", "-"),
          v["lab_network"] + "=" + v["daolinet_address"])
'
}

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

# name gateway|- net=addr...: the container, on its networks at its addresses.
lab_container() {
  local name=$1 gateway=$2 image=$3; shift 3
  local first=${1%%=*} addr=${1#*=} link
  if ! docker container inspect "$name" >/dev/null 2>&1; then
    log "creating $name ($*)"
    docker run -d --name "$name" --hostname "$name" --label daolinet-lab=1 \
      --stop-signal SIGRTMIN+3 "${HOST_OPTS[@]}" --network "$first" --ip "$addr" \
      "$image" </dev/null >/dev/null
    shift
    for link in "$@"; do
      docker network connect --ip "${link#*=}" "${link%%=*}" "$name" </dev/null
    done
  fi
  # Only through the lab's routers: nothing beyond the lab.  Set now, and by a unit
  # of the host at every boot: Docker makes its network's gateway the default route
  # whenever the container starts, so `restart NAME` would lose it otherwise.
  local route="ip route replace default via $gateway"
  [[ $gateway != - ]] || route="ip route del default || true"
  docker exec -i "$name" sh -c 'cat >/etc/systemd/system/lab-route.service &&
    mkdir -p /etc/systemd/system/multi-user.target.wants &&
    ln -sf ../lab-route.service /etc/systemd/system/multi-user.target.wants/' <<EOT
[Unit]
Description=The lab's route through its router
After=network.target
Before=network-online.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c '$route'

[Install]
WantedBy=multi-user.target
EOT
  docker exec "$name" sh -c "$route" </dev/null 2>/dev/null
}

# A host's reboot: its container restarts (systemd, dockerd, the agent and the
# containers run with a restart policy come back by themselves).
lab_restart() {
  local name=${1:?usage: $0 restart NAME}
  docker container inspect -f '{{index .Config.Labels "daolinet-lab"}}' "$name" 2>/dev/null |
    grep -qx 1 || { log "$name is not a lab container"; exit 2; }
  docker restart "$name" >/dev/null
  log "$name restarted"
}

lab_up() {
  venv
  dockerd_up >/dev/null
  local image topo; image=$(scripts/lab-image.sh)
  topo=$(lab_topology)
  local kind name a b c rest
  while read -r kind name a rest; do
    [[ $kind == network ]] || continue
    docker network inspect "$name" >/dev/null 2>&1 ||
      docker network create --subnet "$a" --label daolinet-lab=1 "$name" >/dev/null
  done <<<"$topo"
  while read -r kind name a b rest; do
    [[ $kind == router ]] || continue
    # shellcheck disable=SC2086  # rest: the router's NET=ADDR links
    lab_container "$name" "$a" "$image" $rest
    if [[ $b != - ]]; then
      # A NAT router: the hidden subnet leaves with the router's own address.
      docker exec -i "$name" nft -f - <<EOT
table ip lab_nat
delete table ip lab_nat
table ip lab_nat {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr $b ip daddr != $b masquerade
  }
}
EOT
    fi
  done <<<"$topo"
  local dockers=() sites=()
  while read -r kind name a b c rest; do
    [[ $kind == host ]] || continue
    lab_container "$name" "$c" "$image" $rest
    [[ $b == docker ]] && { dockers+=("$name"); sites+=("$a"); }
  done <<<"$topo"
  lab_deploy
  for name in "${dockers[@]}"; do
    # busybox for the nested engines (the image carries its rootfs).
    docker exec "$name" sh -c 'docker image inspect busybox:lab >/dev/null 2>&1 ||
      docker import /usr/local/share/daolinet-lab/busybox.tar busybox:lab >/dev/null'
  done
  lab_hints
}

# What to try, with the lab's own names (lab_up's topo, dockers, sites): a server on
# the first Docker host, a client on another host of its site, one on a host of every
# other site.
lab_hints() {
  local i first=${dockers[0]} near="" far=()
  for i in "${!dockers[@]}"; do
    ((i > 0)) || continue
    if [[ ${sites[i]} == "${sites[0]}" ]]; then
      [[ -n $near ]] || near=${dockers[i]}
    elif [[ " ${far[*]} " != *" ${sites[i]}:"* ]]; then
      far+=("${sites[i]}:${dockers[i]}")
    fi
  done
  echo
  echo "The lab is up:"
  while read -r kind name a b c rest; do
    [[ $kind == host ]] && echo "  $name  site $a  $b  $rest"
  done <<<"$topo"
  echo "Try (a daolinet network made on one host appears on every host):"
  echo "  docker exec $first docker network create -d daolinet --ipam-driver daolinet --subnet 10.20.0.0/24 web"
  echo "  docker exec $first docker run -d --name w1 --network web --ip 10.20.0.11 busybox:lab nc -ll -p 7000 -e echo hello"
  if [[ -n $near ]]; then
    echo "  docker exec $near docker run --rm --network web busybox:lab nc -w 3 10.20.0.11 7000"
    echo "  docker exec $near docker run --rm --network web busybox:lab traceroute -n 10.20.0.11"
  fi
  for i in "${far[@]}"; do
    echo "  docker exec ${i#*:} docker run --rm --network web busybox:lab ping -c 3 10.20.0.11   # site ${i%%:*}"
  done
  local ctl
  ctl=$(awk '$1 == "host" && $4 == "controller" { print $2; exit }' <<<"$topo")
  if [[ -n $ctl ]]; then
    echo "  docker exec $ctl daolictl route list      # live connections (a --rm client's end with it)"
    echo "  docker exec $ctl daolictl host list"
    echo "  docker exec $ctl daolictl replica list    # which replica leads, and the switches each masters"
  fi
  [[ ${#far[@]} -eq 0 ]] || echo "  docker exec ${far[0]#*:} wg show"
  cat <<'EOT'
Re-run the deployment (changes nothing):  scripts/lab.sh deploy
Add a host: describe it in inventory/lab/hosts.yml, then scripts/lab.sh up
Tear it down:                            scripts/lab.sh down
EOT
}

lab_deploy() {
  venv
  log "running playbooks/site.yml on the lab"
  # DAOLINET_WHEELHOUSE: a tarball of roles/daolinet/files/wheelhouse.sh to install
  # instead of one built from this checkout.
  local extra=()
  [[ -z ${DAOLINET_WHEELHOUSE:-} ]] || extra=(-e "daolinet_wheelhouse=$DAOLINET_WHEELHOUSE")
  ANSIBLE_CONFIG=$ROOT/ansible.cfg ansible-playbook -i "$INVENTORY" playbooks/site.yml \
    "${extra[@]}" "$@"
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
  restart) lab_restart "${2:-}" ;;
  status) docker ps --filter label=daolinet-lab=1 ;;
  dockerd-up) dockerd_up ;;
  dockerd-down) dockerd_down ;;
  image) dockerd_up >/dev/null; scripts/lab-image.sh ;;
  *) echo "usage: $0 up|deploy|restart NAME|down|status|image" >&2; exit 2 ;;
esac
