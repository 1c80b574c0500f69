#!/usr/bin/env bash
# hako-monitor against podman's conmon.
#
# Usage: bench/monitor.sh    (builds hako-monitor, hako-runtime and the
#                             roundtrip example in release)
# Knobs (environment): N (rounds of the round-trip, default 30),
#   R (containers per monitor for the RSS figure, default 5).
#
# (a) RSS: VmRSS (and VmHWM) from /proc of each hako-monitor holding a
#     running `sleep` container (through hako-runtime), against conmon
#     holding the same under podman (`--runtime runc`, cgroupfs, --network
#     none, its own --root/--runroot, an image `podman import`ed from the
#     same busybox-static rootfs). R containers each; medians.
# (b) Wall time of spawn → start → exit of /bin/true through the monitor,
#     timed inside crates/monitor/examples/roundtrip.rs (spawn(), attach
#     before start, `hako-runtime start`, Exit frame); against
#     `hako-runtime run` of the same bundle (the monitor's overhead) and
#     `podman run --rm` of /bin/true (conmon's whole path). Medians of N.
set -euo pipefail

N=${N:-30}
R=${R:-5}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
# shellcheck source=bench/lib.sh
source "$here/lib.sh"

[[ $(id -u) == 0 ]] || { echo "monitor.sh: must run as root" >&2; exit 1; }

echo "building hako-monitor, hako-runtime, roundtrip (release)..." >&2
(cd "$repo" && cargo build --release -q -p hako-monitor -p hako-runtime-cli --bins --examples)
rel=${CARGO_TARGET_DIR:-$repo/target}/x86_64-unknown-linux-gnu/release
monitor=$rel/hako-monitor
runtime=$rel/hako-runtime
roundtrip=$rel/examples/roundtrip
for b in "$monitor" "$runtime" "$roundtrip"; do [[ -x $b ]] || { echo "missing $b" >&2; exit 1; }; done

work=$(mktemp -d /tmp/hako-bench-monitor.XXXXXX)
chmod 755 "$work"
tag="hm$$"
P=(podman --root "$work/podman" --runroot "$work/podman-run" --cgroup-manager cgroupfs --runtime runc)
declare -a IDS=()

cleanup() {
    local id
    for id in "${IDS[@]}"; do
        "$runtime" --root "$work/root" delete -f "$id" >/dev/null 2>&1 || true
    done
    "${P[@]}" rm -f -a >/dev/null 2>&1 || true
    "${P[@]}" rmi -a -f >/dev/null 2>&1 || true
    umount -R "$work/podman" 2>/dev/null || true
    umount "$work/podman/overlay" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- a busybox-static rootfs, a bundle, and the same as a podman image ----
rootfs=$work/rootfs
mkdir -p "$rootfs"/{bin,etc,tmp,proc,sys,dev,root}
cp "$(command -v busybox)" "$rootfs/bin/busybox"
for a in $("$rootfs/bin/busybox" --list); do [[ $a == busybox ]] || ln -s busybox "$rootfs/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' >"$rootfs/etc/passwd"
echo 'root:x:0:' >"$rootfs/etc/group"
tar -C "$rootfs" -cf "$work/rootfs.tar" .
"${P[@]}" import -q "$work/rootfs.tar" "localhost/hako-bench-busybox:$tag" >/dev/null

bundle() { # bundle DIR ARGS-JSON
    mkdir -p "$1"
    cp -a "$rootfs" "$1/rootfs"
    "$runtime" spec --bundle "$1"
    python3 - "$1/config.json" "$2" <<'PY'
import json, sys
p, args = sys.argv[1], json.loads(sys.argv[2])
c = json.load(open(p))
c["process"]["terminal"] = False
c["process"]["args"] = args
json.dump(c, open(p, "w"))
PY
}
bundle "$work/sleep" '["sleep", "1000"]'
bundle "$work/true" '["/bin/true"]'
mkdir -p "$work/root" "$work/logs"

vm() { # vm PID FIELD → kB
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"
}

# --- (a) RSS ----------------------------------------------------------------
: >"$work/rss-hako"; : >"$work/hwm-hako"; : >"$work/rss-conmon"; : >"$work/hwm-conmon"
for ((i = 0; i < R; i++)); do
    id=$tag-s$i
    IDS+=("$id")
    run=$work/run-$id
    mkdir -m 700 "$run"
    line=$("$monitor" --id "$id" --bundle "$work/sleep" --run-dir "$run" --log-path "$work/logs/$id.log" \
        --runtime "$runtime" --runtime-arg --root --runtime-arg "$work/root" --sync-fd 3 3>&1 >/dev/null 2>&1)
    [[ $line == *'"pid"'* ]] || { echo "create failed: $line" >&2; exit 1; }
    "$runtime" --root "$work/root" start "$id"
    cid=$("${P[@]}" run -d --network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 \
        "localhost/hako-bench-busybox:$tag" sleep 1000)
    sleep 0.3
    mpid=$(cat "$run/monitor.pid")
    cpid=$("${P[@]}" inspect --format '{{.State.ConmonPid}}' "$cid")
    vm "$mpid" VmRSS >>"$work/rss-hako"; vm "$mpid" VmHWM >>"$work/hwm-hako"
    vm "$cpid" VmRSS >>"$work/rss-conmon"; vm "$cpid" VmHWM >>"$work/hwm-conmon"
done
read -r rh _ < <(stats "$work/rss-hako" 1 0)
read -r hh _ < <(stats "$work/hwm-hako" 1 0)
read -r rc _ < <(stats "$work/rss-conmon" 1 0)
read -r hc _ < <(stats "$work/hwm-conmon" 1 0)
echo "(a) RSS of the monitor holding a running sleep, median of $R (kB)"
printf "    %-14s VmRSS %6s  VmHWM %6s\n" hako-monitor "$rh" "$hh" conmon "$rc" "$hc"
echo "    ratio hako-monitor/conmon: VmRSS $(ratio "$rh" "$rc"), VmHWM $(ratio "$hh" "$hc")"
for id in "${IDS[@]}"; do "$runtime" --root "$work/root" kill "$id" KILL >/dev/null 2>&1 || true; done
"${P[@]}" rm -f -a -t 0 >/dev/null 2>&1 || true

# --- (b) round trip -----------------------------------------------------------
: >"$work/rt-monitor"; : >"$work/rt-run"; : >"$work/rt-podman"
round() {
    local id=$tag-r$RANDOM$RANDOM t0
    case $1 in
    monitor)
        IDS+=("$id")
        mkdir -m 700 "$work/run-$id"
        "$roundtrip" "$monitor" "$runtime" "$work/root" "$work/true" "$work/run-$id" \
            "$work/logs/$id.log" "$id" >>"$work/rt-monitor"
        "$runtime" --root "$work/root" delete "$id" >/dev/null ;;
    run)
        t0=$(now_us)
        "$runtime" --root "$work/root" run --bundle "$work/true" "$id" </dev/null >/dev/null
        echo $(($(now_us) - t0)) >>"$work/rt-run" ;;
    podman)
        t0=$(now_us)
        "${P[@]}" run --rm --network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 \
            "localhost/hako-bench-busybox:$tag" /bin/true >/dev/null
        echo $(($(now_us) - t0)) >>"$work/rt-podman" ;;
    esac
}
interleave "$N" round monitor run podman
read -r m mp < <(stats "$work/rt-monitor")
read -r ms _ < <(awk '{ print $2 }' "$work/rt-monitor" >"$work/rt-spawn"; stats "$work/rt-spawn")
read -r mt _ < <(awk '{ print $3 }' "$work/rt-monitor" >"$work/rt-start"; stats "$work/rt-start")
read -r r rp < <(stats "$work/rt-run")
read -r p pp < <(stats "$work/rt-podman")
echo "(b) /bin/true, median (p90) of $N, ms"
printf "    %-42s %7s (%s)\n" "hako-monitor spawn-start-Exit frame" "$m" "$mp" \
    "hako-runtime run (no monitor)" "$r" "$rp" "podman run --rm (conmon, runc)" "$p" "$pp"
echo "    of which spawn() (monitor + runtime create) $ms, runtime start $mt"
echo "    ratio monitor/runtime-run $(ratio "$m" "$r"), monitor/podman $(ratio "$m" "$p")"
