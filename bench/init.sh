#!/bin/bash
# hako-init against the anchors (tini-static, catatonit; whichever are
# installed: apt-get install tini catatonit): binary size, VmRSS of the
# pause mode, and the time of `INIT /bin/true` against `/bin/true` alone
# (median and p90 of interleaved rounds; each run includes bash's fork).
#
#   bench/init.sh [ROUNDS]        (default 500; uses the release build)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
rounds=${1:-500}
target=${CARGO_TARGET_DIR:-$here/../target}
init=$target/x86_64-unknown-linux-gnu/release/hako-init
[ -x "$init" ] || { echo "build it first: cargo build --release --workspace" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

declare -A bin=([hako-init]=$init)
# Off pid 1 all three act as subreapers (tini only with -s).
declare -A flags=([hako-init]="" [tini]="-s" [catatonit]="")
declare -A pause=([hako-init]="$init --pause")
if [ -x /usr/bin/tini-static ]; then bin[tini]=/usr/bin/tini-static; fi
if [ -x /usr/bin/catatonit ]; then
    bin[catatonit]=/usr/bin/catatonit
    pause[catatonit]="/usr/bin/catatonit -P"
fi

echo "== size (bytes) and pause VmRSS (kB)"
for name in "${!bin[@]}"; do
    rss=-
    if [ -n "${pause[$name]:-}" ]; then
        ${pause[$name]} & pid=$!
        sleep 0.2
        rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
        kill -TERM "$pid"; wait "$pid" || true
    fi
    printf '%-10s %8d bytes  pause VmRSS %s kB\n' "$name" "$(stat -c %s "${bin[$name]}")" "$rss"
done

run_one() {
    local v=$1 t0 t1
    if [ "$v" = direct ]; then
        t0=$(now_us); /bin/true; t1=$(now_us)
    else
        t0=$(now_us); "${bin[$v]}" ${flags[$v]} -- /bin/true; t1=$(now_us)
    fi
    echo $((t1 - t0)) >> "$tmp/$v"
}

echo "== INIT -- /bin/true vs /bin/true, $rounds interleaved rounds (ms: median p90)"
interleave "$rounds" run_one direct "${!bin[@]}"
read -r base _ < <(stats "$tmp/direct" 1000 3)
printf '%-10s %s\n' direct "$(stats "$tmp/direct" 1000 3)"
for name in "${!bin[@]}"; do
    s=$(stats "$tmp/$name" 1000 3)
    printf '%-10s %s  (+%s ms, %sx direct)\n' "$name" "$s" \
        "$(awk -v a="${s%% *}" -v b="$base" 'BEGIN { printf "%.3f", a - b }')" "$(ratio "${s%% *}" "$base")"
done
