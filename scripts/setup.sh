#!/usr/bin/env bash
# Fresh Debian machine with Rust → dependencies installed, hako built, and a
# real container run. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cargo build --release --workspace
rt=target/x86_64-unknown-linux-gnu/release/hako-runtime
bundle=$(mktemp -d /tmp/hako-demo.XXXXXX)
trap 'rm -rf "$bundle"' EXIT
mkdir -p "$bundle/rootfs/bin"
cp /bin/busybox "$bundle/rootfs/bin/"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$bundle/rootfs/bin/$a"; done
"$rt" spec --bundle "$bundle"
# No terminal: print and exit.
sed -i 's/"terminal": true/"terminal": false/; s/"sh"$/"sh", "-c", "echo hello from a hako container: $(hostname), pid $$"/' "$bundle/config.json"
"$rt" run --bundle "$bundle" "demo-$$"
