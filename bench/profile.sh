#!/usr/bin/env bash
# What the hardened default profile costs: `run` latency of a plain config
# (`hako-runtime spec`) against the hardened one (`spec --hardened`: default
# capabilities, a ~370-syscall seccomp allowlist, masked and read-only
# paths), for hako-runtime and crun on the same two configs, interleaved
# round-robin in one run.
#
# Usage: bench/profile.sh             (builds the release hako-runtime)
#        HAKO_RUNTIME=PATH N=100 bench/profile.sh
# Prints medians and p90 in ms, hardened/plain per runtime and hako/crun
# per profile.
set -euo pipefail

N=${N:-100}
TIMEOUT=${TIMEOUT:-20}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
# shellcheck source=bench/lib.sh
source "$here/lib.sh"
[[ $(id -u) == 0 ]] || { echo "profile.sh: must run as root" >&2; exit 1; }
command -v jq >/dev/null || { echo "profile.sh: jq is missing" >&2; exit 1; }

if [[ -n ${HAKO_RUNTIME:-} ]]; then
    hako=$HAKO_RUNTIME
else
    echo "building hako-runtime (release)..." >&2
    (cd "$repo" && cargo build --release -q -p hako-runtime-cli)
    hako=${CARGO_TARGET_DIR:-$repo/target}/x86_64-unknown-linux-gnu/release/hako-runtime
fi
hako=$(realpath "$hako")
crun=$(command -v crun || true)

work=$(mktemp -d /tmp/hako-profile.XXXXXX)
chmod 755 "$work"
cleanup() {
    for r in "$work"/root-*; do
        [[ -d $r ]] || continue
        local bin=$hako
        [[ $r == *crun* ]] && bin=$crun
        for id in $(ls "$r" 2>/dev/null); do
            timeout 10 "$bin" --root "$r" delete -f "$id" >/dev/null 2>&1 || true
        done
    done
    rm -rf "$work"
}
trap cleanup EXIT

if [[ -n $crun && -r /sys/fs/cgroup/unified/cgroup.controllers ]] &&
    grep -qw hugetlb /sys/fs/cgroup/unified/cgroup.controllers; then
    echo "note: moving hugetlb to a v1 hierarchy for crun (shared/README.md)" >&2
    mkdir -p /sys/fs/cgroup/hugetlb
    mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb || true
fi

busybox=/bin/busybox
[[ -x $busybox ]] || busybox=$(command -v busybox)
rootfs=$work/rootfs
mkdir -p "$rootfs"/{bin,etc,tmp,proc,sys,dev,root,var}
cp "$busybox" "$rootfs/bin/busybox"
for a in $("$busybox" --list); do [[ $a == busybox ]] || ln -s busybox "$rootfs/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' >"$rootfs/etc/passwd"
echo 'root:x:0:' >"$rootfs/etc/group"

for profile in plain hardened; do
    b=$work/bundle-$profile
    mkdir -p "$b"
    ln -s "$rootfs" "$b/rootfs"
    flag=()
    [[ $profile == hardened ]] && flag=(--hardened)
    "$hako" spec "${flag[@]}" --bundle "$b"
    jq '.ociVersion = "1.0.2" | .process.terminal = false | .process.args = ["/bin/true"]' \
        "$b/config.json" >"$b/config.json.new"
    mv "$b/config.json.new" "$b/config.json"
done
echo "seccomp rules in the hardened config: $(jq '[.linux.seccomp.syscalls[].names | length] | add' "$work/bundle-hardened/config.json") syscall names"

variants=()
for rt in hako crun; do
    [[ $rt == crun && -z $crun ]] && { echo "note: crun is not installed; skipped" >&2; continue; }
    for profile in plain hardened; do variants+=("$rt/$profile"); done
done

seq=0
run_one() { # VARIANT -> appends µs to its file
    local rt=${1%/*} profile=${1#*/} bin
    bin=$hako
    [[ $rt == crun ]] && bin=$crun
    seq=$((seq + 1))
    local t0 t1
    t0=$(now_us)
    if ! timeout -k 2 "$TIMEOUT" "$bin" --root "$work/root-$rt" run --bundle "$work/bundle-$profile" \
        "p$$-$seq" </dev/null >/dev/null 2>>"$work/err.$rt"; then
        echo "FAIL: $1 run" >&2
        tail -3 "$work/err.$rt" >&2
        exit 1
    fi
    t1=$(now_us)
    echo $((t1 - t0)) >>"$work/t.${1/\//-}"
}

for v in "${variants[@]}"; do run_one "$v"; done # warm-up and sanity
rm -f "$work"/t.*
echo "run of /bin/true, $N runs per variant, interleaved in rotating order"
interleave "$N" run_one "${variants[@]}"

declare -A MED=()
for v in "${variants[@]}"; do
    read -r m p <<<"$(stats "$work/t.${v/\//-}")"
    MED[$v]=$m
    printf '    %-14s median %7s ms   p90 %7s ms\n' "$v" "$m" "$p"
done
echo
for rt in hako crun; do
    [[ -n ${MED[$rt/plain]:-} ]] || continue
    echo "$rt hardened/plain: $(ratio "${MED[$rt/hardened]}" "${MED[$rt/plain]}")"
done
if [[ -n ${MED[crun/plain]:-} ]]; then
    for profile in plain hardened; do
        echo "hako/crun ($profile): $(ratio "${MED[hako/$profile]}" "${MED[crun/$profile]}")"
    done
fi
