#!/bin/bash
# Unpacking one gzip layer into an empty directory: hako's unpacker
# (crates/image/examples/unpack.rs, release build) against `tar -xzf`
# (GNU tar, gunzip in a second process) and, as the floor, gunzip alone
# to /dev/null.
#
#   bench/unpack.sh [LAYER.tar.gz]     (default: a Debian minbase bookworm
#                                      layer made like bench/pull.sh's)
#   RUNS=N (default 7)
#
# Prints the median and p90 of each in seconds and hako/tar.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
RUNS=${RUNS:-7}
CACHE=${HAKO_BENCH_CACHE:-/var/tmp/hako-bench}

layer=${1:-}
if [[ -z $layer ]]; then
    layer=$CACHE/debian-layer.tar.gz
    if [[ ! -f $layer ]]; then
        rootfs=$CACHE/rootfs-debian
        if [[ ! -f $CACHE/rootfs-debian.done ]]; then
            mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
            echo "debootstrap --variant=minbase bookworm from ${mirror:=http://deb.debian.org/debian} (once; minutes)..." >&2
            rm -rf "$rootfs" && mkdir -p "$CACHE"
            debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$CACHE/debootstrap.log" 2>&1
            touch "$CACHE/rootfs-debian.done"
        fi
        tar -C "$rootfs" --numeric-owner --sort=name --xattrs -cf - . | gzip -n -6 >"$layer.tmp"
        mv "$layer.tmp" "$layer"
    fi
fi

cd "$here/.."
cargo build -q --release -p hako-image --example unpack
bin=${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release/examples/unpack
work=$(mktemp -d /var/tmp/hako-unpack-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT

# Every run gets a fresh directory, all removed at the end: ext4 without a
# journal (this VM's) scans past inodes freed in the last 60-360 s when
# allocating (recently_deleted), so an `rm -rf` of the previous run's
# 7,000 files would make the next run spend seconds in the kernel,
# whichever unpacker it is (see bench/pull.sh).
run_no=0
run() {
    local v=$1 dest t0 t1
    run_no=$((run_no + 1))
    dest=$work/dest.$run_no
    mkdir "$dest" && sync
    t0=$(now_us)
    case $v in
    hako) "$bin" "$dest" "$layer" >/dev/null ;;
    tar) tar -C "$dest" --numeric-owner --xattrs --xattrs-include='*' -xzf "$layer" ;;
    gunzip) gzip -dc "$layer" >/dev/null ;;
    esac
    t1=$(now_us)
    echo $((t1 - t0)) >>"$work/$v.times"
}

echo "layer: $layer ($(stat -c %s "$layer") bytes), $RUNS runs each, into $work" >&2
interleave "$RUNS" run hako tar gunzip
read -r h h90 < <(stats "$work/hako.times" 1000000 3)
read -r t t90 < <(stats "$work/tar.times" 1000000 3)
read -r g g90 < <(stats "$work/gunzip.times" 1000000 3)
printf '%-8s %8s %8s\n' "" median p90
printf '%-8s %8s %8s\n' hako "$h" "$h90" tar "$t" "$t90" gunzip "$g" "$g90"
echo "hako/tar: $(ratio "$h" "$t")"
