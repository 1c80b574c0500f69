#!/usr/bin/env bash
# Cold pull + unpack of one image from Debian's docker-registry on
# 127.0.0.1: `hako pull` against `podman pull` and `skopeo copy` + `umoci
# unpack`, each into fresh storage every time, interleaved round-robin in
# one run (the registry and its blobs stay warm in the page cache, as in
# shared/ANCHORS.md).
#
# Usage: bench/pull.sh                 (the Debian minbase image, 5 rounds)
#        VARIANTS="hako podman" bench/pull.sh   (a subset)
#        IMAGE=busybox N=20 bench/pull.sh
#        HAKO=PATH bench/pull.sh       (a prebuilt hako binary)
# The Debian image is a debootstrap --variant=minbase bookworm rootfs
# (~204 MB, one gzip layer of ~95 MB), built once and kept in
# $HAKO_BENCH_CACHE (default /var/tmp/hako-bench).
# Prints medians and p90 in seconds, and hako's ratio to each anchor.
#
# Deleted trees and the next run: this VM's ext4 has no journal ("mounted
# filesystem without journal" in dmesg), and without one the inode
# allocator (fs/ext4/ialloc.c, find_inode_bit/recently_deleted) skips
# every free inode deleted less than 60 s ago (360 s while its inode table
# block is dirty), one lookup each, for every inode it allocates. An
# `rm -rf` of the previous run's ~7,000 inodes therefore makes each create
# of the next run scan past thousands of them, and the cost grows with
# every deleted tree inside the window: measured here, hako into a fresh
# directory 1.4 s, right after deleting one earlier run's tree 3.9 s, after
# four 9.4 s, most of it sys time, and podman and umoci pay the same. So
# by default (SETTLE=keep) no run's storage is deleted before the end:
# each run gets a fresh directory on a filesystem with no recent
# deletions, whichever tool it is, and everything is removed once at the
# end (that needs ~1 GB per round; the script checks the free space).
# SETTLE=wait deletes each run's tree right away and then waits until the
# deletion is older than the allocator's window (sync, then RECENTCY s,
# default 61) before the next run: slower, and only as good as the inode
# table blocks staying clean.
set -euo pipefail

N=${N:-5}
SETTLE=${SETTLE:-keep}
RECENTCY=${RECENTCY:-61}
IMAGE=${IMAGE:-debian}
CACHE=${HAKO_BENCH_CACHE:-/var/tmp/hako-bench}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
# shellcheck source=bench/lib.sh
source "$here/lib.sh"
[[ $(id -u) == 0 ]] || { echo "pull.sh: must run as root" >&2; exit 1; }
for tool in docker-registry skopeo umoci podman jq curl; do
    command -v $tool >/dev/null || { echo "pull.sh: $tool is missing (scripts/install-deps.sh)" >&2; exit 1; }
done

if [[ -n ${HAKO:-} ]]; then
    hako=$HAKO
else
    echo "building hako (release)..." >&2
    (cd "$repo" && cargo build --release -q -p hako-cli)
    hako=${CARGO_TARGET_DIR:-$repo/target}/x86_64-unknown-linux-gnu/release/hako
fi
hako=$(realpath "$hako")

work=$(mktemp -d /var/tmp/hako-pull.XXXXXX)
registry_pid=
unmount_under() { # DIR: lazily unmounts whatever is mounted below it
    local m
    for m in $(awk -v d="$1" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r); do
        umount -l "$m" || true
    done
}
cleanup() {
    [[ -n $registry_pid ]] && kill "$registry_pid" 2>/dev/null || true
    # podman may leave its storage mounted; nothing else here mounts.
    unmount_under "$work"
    rm -rf "$work"
}
trap cleanup EXIT

# --- the image's root filesystem -------------------------------------------
case $IMAGE in
debian)
    rootfs=$CACHE/rootfs-debian
    if [[ ! -f $CACHE/rootfs-debian.done ]]; then
        command -v debootstrap >/dev/null || { echo "pull.sh: debootstrap is missing" >&2; exit 1; }
        mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
        mirror=${mirror:-http://deb.debian.org/debian}
        echo "debootstrap --variant=minbase bookworm from $mirror (once; minutes)..." >&2
        rm -rf "$rootfs" && mkdir -p "$CACHE"
        debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$CACHE/debootstrap.log" 2>&1
        touch "$CACHE/rootfs-debian.done"
    fi
    ;;
busybox)
    rootfs=$work/rootfs-busybox
    mkdir -p "$rootfs"/{bin,etc,tmp}
    cp "$(command -v busybox)" "$rootfs/bin/busybox"
    for a in $("$rootfs/bin/busybox" --list); do [[ $a == busybox ]] || ln -s busybox "$rootfs/bin/$a"; done
    ;;
*) echo "pull.sh: IMAGE is debian or busybox" >&2; exit 1 ;;
esac

# --- an OCI layout with one gzip layer, pushed to a local registry ----------
layout=$work/layout
mkdir -p "$layout/blobs/sha256"
tar -C "$rootfs" --numeric-owner --sort=name --xattrs -cf "$work/layer.tar" .
diff_id=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
gzip -n -6 <"$work/layer.tar" >"$work/layer.tar.gz"
rm "$work/layer.tar"
blob() { # FILE -> moves it into the layout, prints its digest hex
    local d
    d=$(sha256sum "$1" | cut -d' ' -f1)
    mv "$1" "$layout/blobs/sha256/$d"
    echo "$d"
}
layer_size=$(stat -c %s "$work/layer.tar.gz")
layer=$(blob "$work/layer.tar.gz")
jq -cn --arg d "sha256:$diff_id" '{architecture: "amd64", os: "linux",
    config: {Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], Cmd: ["/bin/sh"]},
    rootfs: {type: "layers", diff_ids: [$d]}}' >"$work/config.json"
config_size=$(stat -c %s "$work/config.json")
config=$(blob "$work/config.json")
jq -cn --arg c "sha256:$config" --argjson cs "$config_size" --arg l "sha256:$layer" --argjson ls "$layer_size" \
    '{schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $c, size: $cs},
      layers: [{mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: $l, size: $ls}]}' >"$work/manifest.json"
manifest_size=$(stat -c %s "$work/manifest.json")
manifest=$(blob "$work/manifest.json")
jq -cn --arg m "sha256:$manifest" --argjson ms "$manifest_size" \
    '{schemaVersion: 2, manifests: [{mediaType: "application/vnd.oci.image.manifest.v1+json",
      digest: $m, size: $ms, annotations: {"org.opencontainers.image.ref.name": "latest"}}]}' >"$layout/index.json"
echo '{"imageLayoutVersion": "1.0.0"}' >"$layout/oci-layout"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$work/registry.yml" <<EOF
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $work/registry}}
http: {addr: 127.0.0.1:$port}
EOF
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done
ref=127.0.0.1:$port/bench/$IMAGE:latest
skopeo copy -q --dest-tls-verify=false "oci:$layout:latest" "docker://$ref"
unpacked=$(du -sm "$rootfs" | cut -f1)
echo "image $ref: layer $((layer_size / 1000000)) MB gzip, ~$unpacked MB unpacked, $(find "$rootfs" | wc -l) entries"

# --- the variants -----------------------------------------------------------
run_hako() {
    "$hako" --root "$1/root" --runroot "$1/run" pull -q "$ref" >/dev/null
}
run_podman() {
    podman --root "$1/root" --runroot "$1/run" --storage-driver overlay \
        pull -q --tls-verify=false "$ref" >/dev/null
}
run_skopeo_umoci() {
    skopeo copy -q --src-tls-verify=false "docker://$ref" "oci:$1/oci:latest" &&
        umoci unpack --image "$1/oci:latest" "$1/bundle" >/dev/null
}
read -r -a variants <<<"${VARIANTS:-hako podman skopeo_umoci}"
case $SETTLE in
keep)
    # Per run at most the blob, the unpacked tree and some slack.
    need_mb=$(((N + 1) * ${#variants[@]} * (layer_size / 1000000 + unpacked + 50)))
    free_mb=$(df -Pm "$work" | awk 'NR == 2 {print $4}')
    if ((free_mb < 2 * need_mb)); then
        echo "pull.sh: $free_mb MB free, keeping every run needs ~$need_mb MB: SETTLE=wait" >&2
        SETTLE=wait
    fi
    ;;
wait) ;;
*) echo "pull.sh: SETTLE is keep or wait" >&2; exit 1 ;;
esac
echo "storage of each run: $SETTLE"
# The cost of creating an inode here, now: ~10-20 µs on a settled
# filesystem, hundreds while recent deletions (another benchmark's
# cleanup, another developer's rm -rf: the window is the whole
# filesystem's) are being skipped. Printed before and after the timed
# runs, so a run whose figures include that penalty says so.
probe=0
fs_probe() {
    local d=$work/probe-$((probe += 1)) t0 t1
    mkdir "$d"
    t0=$(now_us)
    (cd "$d" && seq 2000 | xargs touch)
    t1=$(now_us)
    echo "inode creation ($1): $(((t1 - t0) / 2000)) µs per file"
    if ((t1 - t0 > 2000 * 100)); then
        echo "    (slow: inodes deleted in the last minutes are being skipped; wait ~6 min after a large rm -rf)"
    fi
}
fs_probe before
seq=0
run_one() {
    local dir=$work/run-$((seq += 1)) t0 t1
    mkdir -p "$dir"
    sync
    t0=$(now_us)
    if ! "run_$1" "$dir" 2>"$work/err"; then
        echo "FAIL: $1" >&2
        tail -5 "$work/err" >&2
        exit 1
    fi
    t1=$(now_us)
    echo $((t1 - t0)) >>"$work/t.$1"
    unmount_under "$dir"
    if [[ $SETTLE == wait ]]; then
        rm -rf "$dir"
        sync
        sleep "$RECENTCY"
    fi
}
for v in "${variants[@]}"; do run_one "$v"; done # warm-up and sanity
rm -f "$work"/t.*
echo "cold pull+unpack, $N runs per variant, interleaved in rotating order"
interleave "$N" run_one "${variants[@]}"

fs_probe after

declare -A MED=()
for v in "${variants[@]}"; do
    read -r m p <<<"$(stats "$work/t.$v" 1000000 3)"
    MED[$v]=$m
    printf '    %-14s median %8s s   p90 %8s s\n' "$v" "$m" "$p"
done
echo
for v in podman skopeo_umoci; do
    [[ -n ${MED[$v]:-} && -n ${MED[hako]:-} ]] || continue
    echo "hako/$v: $(ratio "${MED[hako]}" "${MED[$v]}")"
done
