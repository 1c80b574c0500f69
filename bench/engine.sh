#!/usr/bin/env bash
# The engine end to end, against podman and containerd, in one run:
#
# (1) `hako run --rm --network none busybox /bin/true` against `podman run
#     --rm --network none` (crun and runc) and `ctr run --rm` through
#     containerd's runc shim (--runc-binary runc and crun), interleaved
#     (lib.sh's interleave) after WARM warm-up runs of each; medians, p90
#     and hako's ratio to each (issue 6's target: <= 0.25x podman).
# (2) VmRSS and PSS of hako-monitor holding a running `sleep` (`hako run
#     -d`) against conmon's for `podman run -d` of the same; medians of R.
# (3) M detached `sleep 1000` containers: time to start them one after
#     another, `ps` with all of them running, one `rm -f` of them all; what
#     each costs (sum of the monitors' VmRSS and PSS / M, and MemAvailable
#     before - after / M); then nothing may be left (monitor, mount,
#     cgroup, state directory, `ps -aq` line). Again with PM podman
#     containers (conmon, runc) for comparison.
#
# Every tool gets one image, built here from Debian's busybox-static: an
# OCI layout (a single uncompressed layer) pulled by `hako pull oci:…` and
# `podman pull oci:…`, and the same layout as an archive for `ctr images
# import`. Storage for all of them, and containerd's root, state and
# socket, are in a temp dir under /var/tmp; everything is removed at the
# end (trap), and the script fails when something of hako's is left.
#
# crun and cgroups: crun 1.8.1 refuses to run while the cgroup2 mount at
# /sys/fs/cgroup/unified holds hugetlb (hybrid mode; see
# shared/README.md). With HUGETLB=move (the default) the script moves
# hugetlb to a v1 hierarchy at /sys/fs/cgroup/hugetlb for part (1) only
# and moves it back right after (and in the trap), re-enabling it in every
# cgroup.subtree_control that had it. HUGETLB=keep leaves the machine
# alone and drops the crun variants when crun cannot run. Parts (2) and
# (3) use runc under podman, so they never need the move.
#
# Usage: bench/engine.sh                   (builds the workspace in release)
# Knobs (environment): N (rounds of (1), default 20), WARM (warm-up runs
#   of each variant, default 3), R (containers for (2), default 5),
#   M (hako containers for (3), default 200), PM (podman containers for
#   (3), default 50; 0 skips), PARTS (which of 1 2 3 to run, default
#   "1 2 3"), NET (part (1)'s network for hako and podman: none, the
#   default, or bridge, each tool's default bridge network through CNI;
#   ctr always gets a namespace with loopback only), VARIANTS (default
#   "hako podman-crun podman-runc ctr-runc ctr-crun"), HUGETLB (move|keep), BIN (a directory
#   with prebuilt hako, hako-monitor, hako-runtime, hako-init).
set -euo pipefail

N=${N:-20}
WARM=${WARM:-3}
R=${R:-5}
M=${M:-200}
PM=${PM:-50}
VARIANTS=${VARIANTS:-hako podman-crun podman-runc ctr-runc ctr-crun}
HUGETLB=${HUGETLB:-move}
PARTS=${PARTS:-1 2 3}
NET=${NET:-none}
[[ $NET == none || $NET == bridge ]] || { echo "engine.sh: NET must be none or bridge" >&2; exit 1; }
part() { [[ " $PARTS " == *" $1 "* ]]; }
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
# shellcheck source=bench/lib.sh
source "$here/lib.sh"

die() { echo "engine.sh: $*" >&2; exit 1; }
[[ $(id -u) == 0 ]] || die "must run as root"
for tool in podman conmon runc crun containerd ctr containerd-shim-runc-v2 busybox sha256sum; do
    command -v $tool >/dev/null || die "$tool is missing (scripts/install-deps.sh)"
done
! ldd /bin/busybox >/dev/null 2>&1 || die "/bin/busybox must be Debian's busybox-static"

if [[ -n ${BIN:-} ]]; then
    rel=$(realpath "$BIN")
else
    echo "building the workspace (release)..." >&2
    (cd "$repo" && cargo build --release -q --workspace)
    rel=${CARGO_TARGET_DIR:-$repo/target}/x86_64-unknown-linux-gnu/release
fi
hako=$rel/hako
for b in hako hako-monitor hako-runtime hako-init; do [[ -x $rel/$b ]] || die "missing $rel/$b"; done

# Lowercase: podman names an image pulled from oci:DIR after DIR's path.
work=/var/tmp/hako-engine.$$.$RANDOM
mkdir -m 755 "$work"
IMG=localhost/busybox:latest
H=("$hako" --root "$work/hako" --runroot "$work/hako-run")
P=(podman --root "$work/podman" --runroot "$work/podman-run" --cgroup-manager cgroupfs)
PRUN=(--pull never --network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
PRUN1=("${PRUN[@]/#none/$NET}") # part (1)
ns=hakobench$$
ctd=$work/containerd
C=(ctr --address "$ctd/sock" --namespace "$ns")
ctd_pid=
hugetlb_moved=
declare -a hugetlb_had=()
declare -a problems=()

# --- hugetlb: v2 → v1 and back ---------------------------------------------
v2=/sys/fs/cgroup/unified
v1h=/sys/fs/cgroup/hugetlb
hugetlb_hierarchy() { awk '$1 == "hugetlb" { print $2 }' /proc/cgroups; }
hugetlb_move() {
    [[ -d $v2 ]] && grep -qw hugetlb "$v2/cgroup.controllers" || return 0
    mapfile -t hugetlb_had < <(grep -lw hugetlb $(find "$v2" -name cgroup.subtree_control) | sort -r)
    mkdir -p "$v1h"
    local i f
    for ((i = 0; i < 50; i++)); do
        # hako enables every controller it finds; disable again each try.
        for f in "${hugetlb_had[@]}"; do echo -hugetlb >"$f" 2>/dev/null || true; done
        if mount -t cgroup -o hugetlb cgroup "$v1h" 2>/dev/null; then
            hugetlb_moved=1
            echo "hugetlb moved to a v1 hierarchy at $v1h for part (1)" >&2
            return 0
        fi
        sleep 0.1
    done
    rmdir "$v1h" 2>/dev/null || true
    echo "engine.sh: could not move hugetlb off cgroup2; crun variants dropped" >&2
    return 1
}
hugetlb_restore() {
    [[ -n $hugetlb_moved ]] || return 0
    local i d f
    # Empty cgroups the runs left (podman's libpod_parent/conmon, the
    # containerd namespace): only then does the hierarchy die at umount.
    for ((i = 0; i < 50; i++)); do
        find "$v1h" -mindepth 1 -depth -type d -exec rmdir {} + 2>/dev/null || true
        [[ $(awk '$1 == "hugetlb" { print $3 }' /proc/cgroups) == 1 ]] && break
        sleep 0.1
    done
    # A v1 hierarchy is destroyed at umount only when its root has no
    # children then (dying ones count): umount, remount, until it is gone.
    for ((i = 0; i < 50; i++)); do
        mountpoint -q "$v1h" && umount "$v1h"
        for ((d = 0; d < 10; d++)); do
            [[ $(hugetlb_hierarchy) == 0 ]] && break 2
            sleep 0.1
        done
        mount -t cgroup -o hugetlb cgroup "$v1h" 2>/dev/null || true
        find "$v1h" -mindepth 1 -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
    mountpoint -q "$v1h" && umount "$v1h"
    rmdir "$v1h" 2>/dev/null || true
    if [[ $(hugetlb_hierarchy) != 0 ]]; then
        echo "engine.sh: hugetlb is still on a v1 hierarchy (/proc/cgroups); it is NOT back on cgroup2" >&2
        return 1
    fi
    for ((i = ${#hugetlb_had[@]} - 1; i >= 0; i--)); do # parents first
        f=${hugetlb_had[i]}
        [[ -e $f ]] && { echo +hugetlb >"$f" || echo "engine.sh: could not re-enable hugetlb in $f" >&2; }
    done
    hugetlb_moved=
    echo "hugetlb back on cgroup2" >&2
}

# --- cleanup ------------------------------------------------------------------
unmount_under() { # DIR: lazily unmounts whatever is mounted below it
    local m
    for m in $(awk -v d="$1/" 'index($2, d) == 1 { print $2 }' /proc/self/mounts | sort -r); do
        umount -l "$m" || true
    done
}
cleanup() {
    set +e
    local ids
    ids=$("${H[@]}" ps -aq --no-trunc 2>/dev/null)
    [[ -n $ids ]] && "${H[@]}" rm -f $ids >/dev/null 2>&1
    "${P[@]}" rm -f -a -t 0 >/dev/null 2>&1
    "${P[@]}" rmi -a -f >/dev/null 2>&1
    if [[ -n $ctd_pid ]]; then
        for c in $("${C[@]}" tasks ls -q 2>/dev/null); do "${C[@]}" tasks kill -s KILL "$c" >/dev/null 2>&1; done
        for c in $("${C[@]}" containers ls -q 2>/dev/null); do
            "${C[@]}" tasks rm -f "$c" >/dev/null 2>&1; "${C[@]}" containers rm "$c" >/dev/null 2>&1
        done
        kill "$ctd_pid" 2>/dev/null; wait "$ctd_pid" 2>/dev/null
    fi
    rmdir /sys/fs/cgroup/*/"$ns" 2>/dev/null
    # NET=bridge: the default network's bridge outlives the store; drop it
    # if this run made it.
    [[ -n $made_bridge ]] && ip link show hako0 >/dev/null 2>&1 && ip link delete hako0 2>/dev/null
    hugetlb_restore
    unmount_under "$work"
    rm -rf "$work"
}
made_bridge=
[[ $NET == bridge ]] && ! ip link show hako0 >/dev/null 2>&1 && made_bridge=1
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the image ------------------------------------------------------------------
echo "building the busybox-static image..." >&2
rootfs=$work/rootfs
mkdir -p "$rootfs"/{bin,etc,tmp,proc,sys,dev,root}
cp /bin/busybox "$rootfs/bin/busybox"
for a in $("$rootfs/bin/busybox" --list); do [[ $a == busybox ]] || ln -s busybox "$rootfs/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' >"$rootfs/etc/passwd"
echo 'root:x:0:' >"$rootfs/etc/group"
layout=$work/img/busybox # hako names it localhost/busybox:latest
mkdir -p "$layout/blobs/sha256"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$rootfs" -cf "$work/layer.tar" .
blob() { # blob FILE MEDIA-TYPE → descriptor JSON; moves FILE into the layout
    local d
    d=$(sha256sum "$1" | cut -d' ' -f1)
    mv "$1" "$layout/blobs/sha256/$d"
    printf '{"mediaType":"%s","digest":"sha256:%s","size":%s}' "$2" "$d" "$(stat -c %s "$layout/blobs/sha256/$d")"
}
diff_id=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
layer=$(blob "$work/layer.tar" application/vnd.oci.image.layer.v1.tar)
printf '{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$diff_id" >"$work/config.json"
config=$(blob "$work/config.json" application/vnd.oci.image.config.v1+json)
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":%s,"layers":[%s]}' \
    "$config" "$layer" >"$work/manifest.json"
manifest=$(blob "$work/manifest.json" application/vnd.oci.image.manifest.v1+json)
printf '{"schemaVersion":2,"manifests":[%s,"annotations":{"org.opencontainers.image.ref.name":"latest","io.containerd.image.name":"%s"}}]}' \
    "${manifest%\}}" "$IMG" >"$layout/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
tar -C "$layout" -cf "$work/busybox.oci.tar" .

"${H[@]}" pull -q "oci:$layout:latest" >/dev/null
pid=$("${P[@]}" pull -q "oci:$layout:latest")
"${P[@]}" tag "$pid" "$IMG"

# containerd of our own
mkdir -p "$ctd"
cat >"$ctd/config.toml" <<EOF
version = 2
root = "$ctd/root"
state = "$ctd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$ctd/sock"
[ttrpc]
  address = "$ctd/sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$ctd/opt"
EOF
containerd --config "$ctd/config.toml" </dev/null >"$ctd/log" 2>&1 &
ctd_pid=$!
for ((i = 0; i < 300; i++)); do
    [[ -S $ctd/sock ]] && "${C[@]}" version >/dev/null 2>&1 && break
    kill -0 "$ctd_pid" 2>/dev/null || { cat "$ctd/log" >&2; die "containerd exited"; }
    sleep 0.1
done
"${C[@]}" images import "$work/busybox.oci.tar" >/dev/null

# --- (1) run --rm /bin/true -------------------------------------------------------
part1() {
read -ra vs <<<"$VARIANTS"
if [[ " ${vs[*]} " == *" podman-crun "* || " ${vs[*]} " == *" ctr-crun "* ]]; then
    if ! "${C[@]}" run --rm --runc-binary "$(command -v crun)" "$IMG" "probe$$" /bin/true >/dev/null 2>&1; then
        if [[ $HUGETLB != move ]] || ! hugetlb_move; then
            vs=("${vs[@]/podman-crun/}"); vs=("${vs[@]/ctr-crun/}")
            read -ra vs <<<"${vs[*]}"
            echo "crun cannot run here (hybrid cgroups); crun variants dropped" >&2
        fi
    fi
fi
declare -A cmd_of=(
    [hako]="hako run --rm --network $NET"
    [podman-crun]="podman run --rm --network $NET, crun"
    [podman-runc]="podman run --rm --network $NET, runc"
    [ctr-runc]="ctr run --rm, runc shim + runc"
    [ctr-crun]="ctr run --rm, runc shim + crun"
)
one() { # one VARIANT: runs /bin/true once, appends the wall time in µs
    local t0 t1
    t0=$(now_us)
    case $1 in
    hako) "${H[@]}" run --rm --network "$NET" "$IMG" /bin/true ;;
    podman-crun) "${P[@]}" run --rm "${PRUN1[@]}" --runtime crun "$IMG" /bin/true ;;
    podman-runc) "${P[@]}" run --rm "${PRUN1[@]}" --runtime runc "$IMG" /bin/true ;;
    ctr-runc) "${C[@]}" run --rm --runc-binary "$(command -v runc)" "$IMG" "t$RANDOM$RANDOM" /bin/true ;;
    ctr-crun) "${C[@]}" run --rm --runc-binary "$(command -v crun)" "$IMG" "t$RANDOM$RANDOM" /bin/true ;;
    *) die "unknown variant $1" ;;
    esac </dev/null >/dev/null
    t1=$(now_us)
    echo $((t1 - t0)) >>"$work/t-$1"
}
for v in "${vs[@]}"; do
    for ((i = 0; i < WARM; i++)); do one "$v"; done
    : >"$work/t-$v"
done
echo "part (1): $N interleaved rounds of ${vs[*]}..." >&2
interleave "$N" one "${vs[@]}"
hugetlb_restore

declare -gA med p90
for v in "${vs[@]}"; do read -r "med[$v]" "p90[$v]" < <(stats "$work/t-$v"); done
echo
echo "(1) /bin/true in busybox, end to end: median (p90) of $N interleaved rounds, ms"
for v in "${vs[@]}"; do
    if [[ $v == hako ]]; then r=; else r="hako/this $(ratio "${med[hako]:-}" "${med[$v]}")"; fi
    printf "    %-40s %8s (%8s)   %s\n" "${cmd_of[$v]}" "${med[$v]}" "${p90[$v]}" "$r"
done
if [[ -n ${med[hako]:-} && -n ${med[podman-crun]:-} ]]; then
    echo "    issue 6 target: hako <= 0.25x podman; measured $(ratio "${med[hako]}" "${med[podman-crun]}")x podman+crun"
fi

}
part 1 && part1

# --- helpers for (2) and (3) ---------------------------------------------------------
kb() { awk -v f="$2:" '$1 == f { print $2 }' "$1"; } # kb FILE FIELD
monitor_pids() { # hako-monitor processes of this run's store
    local p
    for p in $(pgrep -x hako-monitor); do
        { tr '\0' ' ' <"/proc/$p/cmdline"; } 2>/dev/null | grep -qF -- "--run-dir $work/hako-run/" && echo "$p"
    done
    return 0
}
conmon_pids() {
    local p
    for p in $(pgrep -x conmon); do
        { tr '\0' ' ' <"/proc/$p/cmdline"; } 2>/dev/null | grep -qF -- "$work/podman" && echo "$p"
    done
    return 0
}
mem_of() { # mem_of PID... → "sum-VmRSS sum-Pss" in kB
    local p r s tr=0 ts=0
    for p in "$@"; do
        r=$(kb "/proc/$p/status" VmRSS); s=$(kb "/proc/$p/smaps_rollup" Pss)
        tr=$((tr + ${r:-0})); ts=$((ts + ${s:-0}))
    done
    echo "$tr $ts"
}
avail() { kb /proc/meminfo MemAvailable; }
settle() { sync; sleep 1; }

# --- (2) one monitor's memory ------------------------------------------------------------
part2() {
echo "part (2): $R sleeping containers each..." >&2
: >"$work/rss-h"; : >"$work/pss-h"; : >"$work/rss-c"; : >"$work/pss-c"
hids=(); pids=()
for ((i = 0; i < R; i++)); do
    hids+=("$("${H[@]}" run -d --network none "$IMG" sleep 1000)")
    pids+=("$("${P[@]}" run -d "${PRUN[@]}" --runtime runc "$IMG" sleep 1000)")
done
sleep 0.5
for id in "${hids[@]}"; do
    p=$(cat "$work/hako-run/containers/$id/monitor.pid")
    kb "/proc/$p/status" VmRSS >>"$work/rss-h"; kb "/proc/$p/smaps_rollup" Pss >>"$work/pss-h"
done
for id in "${pids[@]}"; do
    p=$("${P[@]}" inspect --format '{{.State.ConmonPid}}' "$id")
    kb "/proc/$p/status" VmRSS >>"$work/rss-c"; kb "/proc/$p/smaps_rollup" Pss >>"$work/pss-c"
done
"${H[@]}" rm -f "${hids[@]}" >/dev/null
"${P[@]}" rm -f -t 0 "${pids[@]}" >/dev/null
read -r rh _ < <(stats "$work/rss-h" 1 0); read -r sh _ < <(stats "$work/pss-h" 1 0)
read -r rc _ < <(stats "$work/rss-c" 1 0); read -r sc _ < <(stats "$work/pss-c" 1 0)
echo
echo "(2) the monitor of a running sleep, median of $R, kB"
printf "    %-14s VmRSS %6s   PSS %6s\n" hako-monitor "$rh" "$sh" conmon "$rc" "$sc"
echo "    hako-monitor/conmon: VmRSS $(ratio "$rh" "$rc"), PSS $(ratio "$sh" "$sc")"

}
part 2 && part2

# --- (3) many detached containers -------------------------------------------------------------
# many TOOL COUNT: starts COUNT sleeps, times ps and rm -f, measures memory.
declare -A r_start r_ps r_rm r_rss r_pss r_avail r_left
many() {
    local tool=$1 n=$2 i t0 t1 a0 a1 ids=() out
    settle
    a0=$(avail)
    t0=$(now_us)
    for ((i = 0; i < n; i++)); do
        case $tool in
        hako) ids+=("$("${H[@]}" run -d --network none "$IMG" sleep 1000)") ;;
        podman) ids+=("$("${P[@]}" run -d "${PRUN[@]}" --runtime runc "$IMG" sleep 1000)") ;;
        esac
    done
    t1=$(now_us)
    r_start[$tool]=$(awk -v t=$((t1 - t0)) -v n="$n" 'BEGIN { printf "%.2f s (%.1f ms each)", t / 1e6, t / 1e3 / n }')
    settle
    a1=$(avail)
    r_avail[$tool]=$(((a0 - a1) / n))
    case $tool in
    hako) mapfile -t mp < <(monitor_pids) ;;
    podman) mapfile -t mp < <(conmon_pids) ;;
    esac
    [[ ${#mp[@]} == "$n" ]] || problems+=("$tool: ${#mp[@]} monitors for $n containers")
    read -r rs ps_ < <(mem_of "${mp[@]}")
    r_rss[$tool]=$((rs / n)); r_pss[$tool]=$((ps_ / n))
    t0=$(now_us)
    case $tool in
    hako) out=$("${H[@]}" ps) ;;
    podman) out=$("${P[@]}" ps) ;;
    esac
    t1=$(now_us)
    r_ps[$tool]=$(awk -v t=$((t1 - t0)) 'BEGIN { printf "%.0f ms", t / 1e3 }')
    [[ $(($(wc -l <<<"$out") - 1)) == "$n" ]] || problems+=("$tool ps: $(($(wc -l <<<"$out") - 1)) lines for $n containers")
    t0=$(now_us)
    case $tool in
    hako) "${H[@]}" rm -f "${ids[@]}" >/dev/null ;;
    podman) "${P[@]}" rm -f -t 0 "${ids[@]}" >/dev/null ;;
    esac
    t1=$(now_us)
    r_rm[$tool]=$(awk -v t=$((t1 - t0)) -v n="$n" 'BEGIN { printf "%.2f s (%.1f ms each)", t / 1e6, t / 1e3 / n }')
    settle
    r_left[$tool]=$((($(avail) - a0) / n))
    [[ $tool == hako ]] && check_hako_clean "${ids[@]}"
    return 0
}
check_hako_clean() { # IDS...: nothing of theirs may be left
    local left id d
    left=$(monitor_pids | wc -l)
    [[ $left == 0 ]] || problems+=("hako: $left hako-monitor processes left")
    left=$(awk -v a="$work/hako/" -v b="$work/hako-run/" 'index($2, a) == 1 || index($2, b) == 1' /proc/self/mounts)
    [[ -z $left ]] || problems+=("hako: mounts left: $left")
    for id in "$@"; do
        for d in /sys/fs/cgroup/*/hako/"$id" /sys/fs/cgroup/hako/"$id"; do
            [[ -e $d ]] && problems+=("hako: cgroup left: $d")
        done
    done
    for d in "$work/hako/containers" "$work/hako-run/containers"; do
        [[ -z $(ls -A "$d" 2>/dev/null) ]] || problems+=("hako: $d not empty: $(ls -A "$d" | head -3 | tr '\n' ' ')")
    done
    left=$("${H[@]}" ps -aq)
    [[ -z $left ]] || problems+=("hako: ps -aq lists $(wc -l <<<"$left") containers")
    return 0
}
if part 3; then
    echo "part (3): $M hako containers, $PM podman containers..." >&2
    many hako "$M"
    ((PM > 0)) && many podman "$PM"
    echo
    echo "(3) N detached 'sleep 1000' containers (podman with conmon + runc)"
    for t in hako podman; do
        [[ -n ${r_start[$t]:-} ]] || continue
        n=$M; [[ $t == podman ]] && n=$PM
        echo "    $t, N=$n:"
        echo "      start all, one after another:   ${r_start[$t]}"
        echo "      ps with all running:             ${r_ps[$t]}"
        echo "      rm -f of all (one command):      ${r_rm[$t]}"
        echo "      per container: monitor VmRSS ${r_rss[$t]} kB, PSS ${r_pss[$t]} kB; MemAvailable drop ${r_avail[$t]} kB"
        echo "      MemAvailable after rm - before start, per container: ${r_left[$t]} kB"
    done
fi

if ((${#problems[@]})); then
    echo >&2
    printf 'engine.sh: FAILED: %s\n' "${problems[@]}" >&2
    exit 1
fi
echo "    hako: nothing left (monitors, mounts, cgroups, state dirs, ps -aq)"
