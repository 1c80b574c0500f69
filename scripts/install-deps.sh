#!/usr/bin/env bash
# Installs the Debian packages hako's build and tests need. Idempotent.
set -euo pipefail
PKGS=(
  busybox-static   # the test rootfs
  libseccomp-dev pkg-config  # seccomp filters (libseccomp)
  iproute2 procps  # ip, ps (hako-runtime ps runs ps(1))
  podman crun runc # real clients and anchors
  containerd       # containerd + ctr, driving hako-runtime through its runc shim
  hyperfine        # benchmarks
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi
