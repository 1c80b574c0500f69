#!/usr/bin/env bash
# The whole test suite: installs what the tests need, builds every binary,
# then runs unit and integration tests (real containers: run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cargo build --workspace --all-targets
cargo test --workspace
