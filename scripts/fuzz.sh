#!/usr/bin/env bash
# Runs each cargo-fuzz target in fuzz/ for SECONDS (default 60), one after
# the other, each as one libFuzzer process (one job, one worker: the
# machine is shared). Not part of scripts/test.sh or CI.
#
#   scripts/fuzz.sh [SECONDS]
#
# The committed seeds in fuzz/corpus/<target>/ are only read; what the
# fuzzer finds goes to fuzz/target/corpus/<target>/ (ignored by git). A
# crash stops the run and leaves its input in fuzz/artifacts/<target>/.
# See fuzz/README.md for reproducing and minimising.
set -euo pipefail

seconds=${1:-60}
cd "$(dirname "$0")/.."

# cargo-fuzz passes -Z flags (sanitizer, coverage) to rustc; this machine
# has only a stable toolchain, which accepts them with RUSTC_BOOTSTRAP.
export RUSTC_BOOTSTRAP=1
# libseccomp is linked statically, as in the main build (.cargo/config.toml
# sets these too; the crt-static rustflags there are overridden by the
# RUSTFLAGS cargo-fuzz sets, as a sanitizer build needs).
export LIBSECCOMP_LINK_TYPE=${LIBSECCOMP_LINK_TYPE:-static}
export LIBSECCOMP_LIB_PATH=${LIBSECCOMP_LIB_PATH:-/usr/lib/x86_64-linux-gnu}

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi

for target in spec seccomp; do
    work=fuzz/target/corpus/$target
    mkdir -p "$work"
    echo "== fuzz target $target for ${seconds}s"
    # --debug-assertions: overflow checks and debug_assert! count as crashes.
    cargo fuzz run --debug-assertions "$target" "$work" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" \
        -rss_limit_mb=2048 \
        -timeout=10 \
        -dict="fuzz/dicts/$target.dict" \
        -print_final_stats=1
done
