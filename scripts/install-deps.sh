#!/usr/bin/env bash
# Installs the Debian packages hako's build and tests need. Idempotent.
set -euo pipefail
PKGS=(
  busybox-static   # the test rootfs
  libseccomp-dev pkg-config  # seccomp filters (libseccomp)
  iproute2 procps  # ip, ps (hako-runtime ps runs ps(1))
  uidmap passwd    # newuidmap/newgidmap, useradd (rootless tests)
  podman crun runc # real clients and anchors
  containerd       # containerd + ctr, driving hako-runtime through its runc shim
  hyperfine        # benchmarks
  docker-registry skopeo apache2-utils  # image tests: registry, pushes, htpasswd
  umoci jq debootstrap  # bench/pull.sh anchors and its Debian image
  containernetworking-plugins iptables curl  # hako-network: CNI plugins, their rules, port tests
)
# The cgroup2-only VM of scripts/vm-test.sh (no recommends: no firmware,
# no GUI bits).
VM_PKGS=(qemu-system-x86 linux-image-amd64 cpio dash systemd)
missing() {
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}
mapfile -t want < <(missing "${PKGS[@]}")
mapfile -t want_vm < <(missing "${VM_PKGS[@]}")
if [ ${#want[@]} -gt 0 ] || [ ${#want_vm[@]} -gt 0 ]; then
  apt-get update -q
fi
if [ ${#want[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${want[@]}"
fi
if [ ${#want_vm[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${want_vm[@]}"
fi
