#!/usr/bin/env bash
# The whole test suite: installs what the tests need, builds every binary,
# then runs unit and integration tests (real containers: run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cargo build --workspace --all-targets
cargo test --workspace
# The same isolation and cgroup tests again on a cgroup2-only kernel (a VM;
# the clients tests need podman and containerd, which the VM does not have).
./scripts/vm-test.sh cgroups devices security lifecycle namespaces mounts process hooks seccomp cli
# The cgroup suite once more with systemd as PID 1 (the --systemd-cgroup driver).
HAKO_VM_SYSTEMD=1 ./scripts/vm-test.sh cgroups
