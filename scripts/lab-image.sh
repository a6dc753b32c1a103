#!/usr/bin/env bash
# Builds the image of a lab "host": Debian bookworm (debootstrap, minbase) with systemd
# as PID 1, Python for Ansible, and every OS package the roles install already in place
# (so converging a lab host needs no mirror), plus a busybox rootfs for the nested
# Docker engine.  The tag is a hash of this file, so an unchanged recipe is never built
# twice:  scripts/lab-image.sh  prints the image name (building it when missing).
# Traffic: the Debian mirror only.
set -euo pipefail
MIRROR=${DAOLINET_LAB_MIRROR:-http://deb.debian.org/debian}
PACKAGES=(
  openvswitch-switch docker.io wireguard-tools wireguard-go
  iproute2 iputils-ping traceroute tcpdump netcat-openbsd ethtool iptables kmod procps
  nftables busybox-static python3-venv python3-apt python3-cryptography etcd-server
  etcd-client
)
hash=$(sha256sum "$0" | cut -c1-12)
image=daolinet-lab-host:$hash
if docker image inspect "$image" >/dev/null 2>&1; then
  echo "$image"
  exit 0
fi

root=$(mktemp -d /var/tmp/daolinet-lab-image.XXXXXX)
cleanup() {
  umount "$root/proc" 2>/dev/null || true
  rm -rf --one-file-system "$root"
}
trap cleanup EXIT
start=$SECONDS
echo "lab-image: debootstrap bookworm into $root" >&2
debootstrap --variant=minbase --include=python3,systemd,systemd-sysv,dbus \
  bookworm "$root" "$MIRROR" >"$root.log" 2>&1 || { tail -20 "$root.log" >&2; exit 1; }
rm -f "$root.log"

echo "lab-image: installing ${PACKAGES[*]}" >&2
# No service starts inside the build chroot.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"
mount -t proc proc "$root/proc"
chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o Dpkg::Use-Pty=0 \
  --no-install-recommends "${PACKAGES[@]}" >"$root.log" 2>&1 || { tail -20 "$root.log" >&2; exit 1; }
rm -f "$root.log"
umount "$root/proc"
rm -f "$root/usr/sbin/policy-rc.d"

# A 2 MB busybox image for the nested Docker engine (imported by the tests).
bb=$(mktemp -d)
mkdir -p "$bb/bin" "$bb/tmp" "$bb/etc"
cp "$root/bin/busybox" "$bb/bin/busybox"
for app in $("$bb/bin/busybox" --list); do
  [[ $app == busybox ]] || ln -s busybox "$bb/bin/$app"
done
echo 'root:x:0:0:root:/root:/bin/sh' >"$bb/etc/passwd"
mkdir -p "$root/usr/local/share/daolinet-lab"
tar -C "$bb" -cf "$root/usr/local/share/daolinet-lab/busybox.tar" .
rm -rf "$bb"

# A container is not a machine: no consoles, no udev, no kernel module loading.
for unit in getty@tty1.service console-getty.service serial-getty@.service \
  systemd-udevd.service systemd-udev-trigger.service systemd-modules-load.service \
  sys-kernel-config.mount sys-kernel-debug.mount sys-kernel-tracing.mount \
  systemd-remount-fs.service systemd-firstboot.service apt-daily.timer \
  apt-daily-upgrade.timer e2scrub_reap.service; do
  ln -sf /dev/null "$root/etc/systemd/system/$unit"
done
# The roles enable what they need; nothing of theirs runs before they have run.
chroot "$root" systemctl disable docker.service docker.socket containerd.service \
  openvswitch-switch.service etcd.service >/dev/null 2>&1 || true
: >"$root/etc/machine-id"
rm -f "$root/etc/hostname"
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/*.log

echo "lab-image: importing $image" >&2
tar --numeric-owner -C "$root" -c . | docker import \
  -c 'CMD ["/lib/systemd/systemd"]' -c 'ENV container=docker' \
  - "$image" >/dev/null
echo "lab-image: built $image in $((SECONDS - start)) s" >&2
echo "$image"
