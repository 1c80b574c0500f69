#!/usr/bin/env bash
# Benchmark hako-runtime against runc and crun on one busybox-static bundle.
#
# Usage: bench/runtime.sh            (builds target/x86_64-unknown-linux-gnu/release/hako-runtime)
#        HAKO_RUNTIME=PATH bench/runtime.sh
# Knobs (environment): N (runs per runtime for a/b/e, default 50),
#   SERIAL (runs for c, default 100), PAR (runs for d, default 100),
#   JOBS (parallelism for d, default 4), TIMEOUT (seconds per call, default 20),
#   RUNTIMES (default "hako runc crun"; a missing runtime is skipped).
#
# Workloads, all on the same bundle (config from `hako-runtime spec`, process
# /bin/true, no terminal, ociVersion 1.0.2 so crun 1.8.1 accepts it), runtimes
# interleaved round-robin so drift hits each one alike:
#   (a) `RT run --bundle B ID`, wall time of each call
#   (b) `RT create` + `RT start` + `RT delete -f`, wall time of the three calls
#   (c) SERIAL `run` back to back, total wall
#   (d) PAR `run`, JOBS at a time, total wall; each call has a timeout, and a
#       call that times out is reported as a hang (not waited on forever)
#   (e) peak RSS of `RT run`:
#       self = VmHWM of the runtime process itself, read from
#              /proc/PID/status when it stops at exit (PTRACE_EVENT_EXIT; only
#              the runtime is traced, not its children);
#       tree = /usr/bin/time -f %M, i.e. ru_maxrss over the runtime and every
#              descendant it reaped. That includes the container's init, which
#              for hako and crun is a forked copy of the runtime until it execs
#              and for runc is a separate `runc init` process.
# Every call runs under `timeout` (the same ~1 ms cost for every runtime).
# Each runtime gets its own --root in a private temp dir; container IDs are
# unique; everything is deleted on exit.
set -euo pipefail

N=${N:-50}
SERIAL=${SERIAL:-100}
PAR=${PAR:-100}
JOBS=${JOBS:-4}
TIMEOUT=${TIMEOUT:-20}
RUNTIMES=${RUNTIMES:-"hako runc crun"}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
# shellcheck source=bench/lib.sh
source "$here/lib.sh"

if [[ $(id -u) != 0 ]]; then
    echo "runtime.sh: must run as root" >&2
    exit 1
fi

# --- hako-runtime binary ------------------------------------------------------
if [[ -n ${HAKO_RUNTIME:-} ]]; then
    hako=$HAKO_RUNTIME
else
    echo "building hako-runtime (release)..." >&2
    (cd "$repo" && cargo build --release -q -p hako-runtime-cli)
    hako=${CARGO_TARGET_DIR:-$repo/target}/x86_64-unknown-linux-gnu/release/hako-runtime
fi
[[ -x $hako ]] || { echo "runtime.sh: $hako is not executable" >&2; exit 1; }
hako=$(realpath "$hako")

# --- scratch space and cleanup ------------------------------------------------
work=$(mktemp -d /tmp/hako-bench.XXXXXX)
chmod 755 "$work"
tag="hb$$"

declare -A BIN=()
declare -a RTS=()

cleanup() {
    local rt id
    for rt in "${RTS[@]}"; do
        [[ -d $work/root-$rt ]] || continue
        for id in $(ls "$work/root-$rt" 2>/dev/null); do
            timeout 10 "${BIN[$rt]}" --root "$work/root-$rt" delete -f "$id" >/dev/null 2>&1 || true
        done
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- runtimes -----------------------------------------------------------------
hugetlb_on_v2() {
    [[ -r /sys/fs/cgroup/unified/cgroup.controllers ]] &&
        grep -qw hugetlb /sys/fs/cgroup/unified/cgroup.controllers
}

for rt in $RUNTIMES; do
    case $rt in
    hako) BIN[hako]=$hako ;;
    *)
        if p=$(command -v "$rt"); then
            BIN[$rt]=$p
        else
            echo "note: $rt is not installed; skipped" >&2
            continue
        fi
        ;;
    esac
    RTS+=("$rt")
done
if [[ " ${RTS[*]} " == *" crun "* ]] && hugetlb_on_v2; then
    # crun 1.8.1 refuses hybrid cgroups with a v2 controller (shared/README.md).
    echo "note: moving the hugetlb controller to a v1 hierarchy for crun" >&2
    mkdir -p /sys/fs/cgroup/hugetlb
    mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb ||
        echo "warning: could not move hugetlb to v1; crun will likely fail" >&2
fi

# --- bundle -------------------------------------------------------------------
busybox=$(command -v busybox || true)
for p in /bin/busybox /usr/bin/busybox; do [[ -x $p ]] && busybox=$p && break; done
[[ -n $busybox ]] || { echo "runtime.sh: busybox-static is missing" >&2; exit 1; }
bundle=$work/bundle
mkdir -p "$bundle/rootfs"/{bin,etc,tmp,proc,sys,dev,root,var}
chmod 1777 "$bundle/rootfs/tmp"
cp "$busybox" "$bundle/rootfs/bin/busybox"
for a in $("$busybox" --list); do
    [[ $a == busybox ]] || ln -s busybox "$bundle/rootfs/bin/$a"
done
echo 'root:x:0:0:root:/root:/bin/sh' >"$bundle/rootfs/etc/passwd"
echo 'root:x:0:' >"$bundle/rootfs/etc/group"
"$hako" spec --bundle "$bundle"
jq '.ociVersion = "1.0.2" | .process.terminal = false | .process.args = ["/bin/true"]' \
    "$bundle/config.json" >"$bundle/config.json.new"
mv "$bundle/config.json.new" "$bundle/config.json"

# --- peak-RSS helper (ptrace, stops the runtime at exit and reads VmHWM) ------
cat >"$work/peakrss.c" <<'EOF'
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <unistd.h>

static long hwm_kb(pid_t pid) {
    char path[64], line[256];
    long kb = -1;
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6)) { kb = strtol(line + 6, NULL, 10); break; }
    fclose(f);
    return kb;
}

/* peakrss OUTFILE CMD ARGS...: runs CMD, writes the VmHWM (kB) it had when it
 * exited to OUTFILE, exits with CMD's status. */
int main(int argc, char **argv) {
    if (argc < 3) return 2;
    pid_t pid = fork();
    if (pid == 0) {
        ptrace(PTRACE_TRACEME, 0, 0, 0);
        raise(SIGSTOP);
        execv(argv[2], argv + 2);
        _exit(127);
    }
    int st;
    long kb = -1;
    waitpid(pid, &st, 0);
    ptrace(PTRACE_SETOPTIONS, pid, 0, PTRACE_O_TRACEEXIT | PTRACE_O_TRACEEXEC | PTRACE_O_EXITKILL);
    ptrace(PTRACE_CONT, pid, 0, 0);
    for (;;) {
        if (waitpid(pid, &st, 0) < 0) return 3;
        if (WIFEXITED(st) || WIFSIGNALED(st)) break;
        int sig = WSTOPSIG(st), ev = st >> 16;
        if (sig == SIGTRAP && ev == PTRACE_EVENT_EXIT) kb = hwm_kb(pid);
        ptrace(PTRACE_CONT, pid, 0, (sig == SIGTRAP && ev) ? 0 : sig);
    }
    FILE *o = fopen(argv[1], "w");
    if (o) { fprintf(o, "%ld\n", kb); fclose(o); }
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}
EOF
peakrss=""
if command -v cc >/dev/null && cc -O2 -o "$work/peakrss" "$work/peakrss.c" 2>/dev/null; then
    peakrss=$work/peakrss
else
    echo "note: no C compiler; peak RSS of the runtime process itself is not measured" >&2
fi

# --- helpers ------------------------------------------------------------------
seq_id=0
newid() { seq_id=$((seq_id + 1)); ID="$tag-$1-$seq_id"; }
errlog=$work/errors.log
fails=0
hangs=0

# rtc RT ARGS...: one runtime call under a timeout; stdio away from us.
rtc() {
    local rt=$1
    shift
    timeout -k 2 "$TIMEOUT" "${BIN[$rt]}" --root "$work/root-$rt" "$@" </dev/null >/dev/null 2>>"$errlog.$rt"
}

# note_rc RT WHAT RC: count failures and hangs (timeout exits 124/137).
note_rc() {
    if [[ $3 == 124 || $3 == 137 ]]; then
        hangs=$((hangs + 1))
        echo "HANG: $1 $2 (no exit after ${TIMEOUT}s)" >&2
    elif [[ $3 != 0 ]]; then
        fails=$((fails + 1))
        echo "FAIL: $1 $2 exited $3" >&2
    fi
}


declare -A RES=()

# --- sanity: every runtime runs the bundle -----------------------------------
for rt in "${RTS[@]}"; do
    mkdir -p "$work/root-$rt"
    newid check
    if ! rtc "$rt" run --bundle "$bundle" "$ID"; then
        echo "runtime.sh: $rt cannot run the bundle:" >&2
        tail -5 "$errlog.$rt" >&2 || true
        exit 1
    fi
done
echo "runtimes: $(for rt in "${RTS[@]}"; do printf '%s=%s ' "$rt" "${BIN[$rt]}"; done)"
echo "versions: runc $(runc --version 2>/dev/null | awk 'NR==1{print $3}'), crun $(crun --version 2>/dev/null | awk 'NR==1{print $3}')"
echo

# --- (a) run ------------------------------------------------------------------
echo "(a) run of /bin/true, $N runs each, interleaved"
for ((i = 0; i < N; i++)); do
    for rt in "${RTS[@]}"; do
        newid a
        t0=$(now_us)
        rc=0
        rtc "$rt" run --bundle "$bundle" "$ID" || rc=$?
        t1=$(now_us)
        note_rc "$rt" "run $ID" $rc
        echo $((t1 - t0)) >>"$work/a.$rt"
    done
done
for rt in "${RTS[@]}"; do
    read -r m p <<<"$(stats "$work/a.$rt")"
    RES[a.$rt]=$m RES[a90.$rt]=$p
    printf '    %-5s median %7.1f ms   p90 %7.1f ms\n' "$rt" "$m" "$p"
done

# --- (b) create + start + delete -f ------------------------------------------
echo "(b) create + start + delete -f, $N runs each, interleaved"
for ((i = 0; i < N; i++)); do
    for rt in "${RTS[@]}"; do
        newid b
        t0=$(now_us)
        rc=0
        rtc "$rt" create --bundle "$bundle" "$ID" || rc=$?
        [[ $rc != 0 ]] || rtc "$rt" start "$ID" || rc=$?
        rtc "$rt" delete -f "$ID" || [[ $rc != 0 ]] || rc=$?
        t1=$(now_us)
        note_rc "$rt" "create/start/delete $ID" $rc
        echo $((t1 - t0)) >>"$work/b.$rt"
    done
done
for rt in "${RTS[@]}"; do
    read -r m p <<<"$(stats "$work/b.$rt")"
    RES[b.$rt]=$m RES[b90.$rt]=$p
    printf '    %-5s median %7.1f ms   p90 %7.1f ms\n' "$rt" "$m" "$p"
done

# --- (c) SERIAL runs in a row ------------------------------------------------
echo "(c) $SERIAL runs in a row, wall"
for rt in "${RTS[@]}"; do
    t0=$(now_us)
    for ((i = 0; i < SERIAL; i++)); do
        newid c
        rc=0
        rtc "$rt" run --bundle "$bundle" "$ID" || rc=$?
        note_rc "$rt" "run $ID" $rc
    done
    t1=$(now_us)
    RES[c.$rt]=$(awk -v d=$((t1 - t0)) 'BEGIN { printf "%.0f", d / 1000 }')
    printf '    %-5s %7s ms\n' "$rt" "${RES[c.$rt]}"
done

# --- (d) PAR runs, JOBS at a time --------------------------------------------
echo "(d) $PAR runs, $JOBS at a time, wall (timeout ${TIMEOUT}s per run)"
for rt in "${RTS[@]}"; do
    rcdir=$work/d.$rt
    mkdir -p "$rcdir"
    t0=$(now_us)
    running=0
    for ((i = 0; i < PAR; i++)); do
        newid d
        (
            rc=0
            rtc "$rt" run --bundle "$bundle" "$ID" || rc=$?
            echo "$ID $rc" >"$rcdir/$i"
        ) &
        running=$((running + 1))
        if ((running >= JOBS)); then
            wait -n || true
            running=$((running - 1))
        fi
    done
    wait
    t1=$(now_us)
    RES[d.$rt]=$(awk -v d=$((t1 - t0)) 'BEGIN { printf "%.0f", d / 1000 }')
    h=0 f=0 done_=0
    for r in "$rcdir"/*; do
        read -r id rc <"$r"
        done_=$((done_ + 1))
        if [[ $rc == 124 || $rc == 137 ]]; then
            h=$((h + 1))
            echo "HANG: $rt run $id (no exit after ${TIMEOUT}s)" >&2
        elif [[ $rc != 0 ]]; then
            f=$((f + 1))
            echo "FAIL: $rt run $id exited $rc" >&2
        fi
    done
    hangs=$((hangs + h)) fails=$((fails + f))
    RES[dh.$rt]="$h hang, $f fail, $done_/$PAR done"
    printf '    %-5s %7s ms   (%s)\n' "$rt" "${RES[d.$rt]}" "${RES[dh.$rt]}"
done

# --- (e) peak RSS -------------------------------------------------------------
RSSN=$((N < 20 ? N : 20))
echo "(e) peak RSS of \`run\`, median of $RSSN runs each, interleaved (MiB; self = runtime process, tree = with reaped children)"
for ((i = 0; i < RSSN; i++)); do
    for rt in "${RTS[@]}"; do
        newid e
        rc=0
        /usr/bin/time -o "$work/tree" -f %M timeout -k 2 "$TIMEOUT" "${BIN[$rt]}" --root "$work/root-$rt" \
            run --bundle "$bundle" "$ID" </dev/null >/dev/null 2>>"$errlog.$rt" || rc=$?
        note_rc "$rt" "run $ID" $rc
        tail -1 "$work/tree" >>"$work/etree.$rt"
        if [[ -n $peakrss ]]; then
            newid e
            rc=0
            timeout -k 2 "$TIMEOUT" "$peakrss" "$work/self" "${BIN[$rt]}" --root "$work/root-$rt" \
                run --bundle "$bundle" "$ID" </dev/null >/dev/null 2>>"$errlog.$rt" || rc=$?
            note_rc "$rt" "run $ID (traced)" $rc
            cat "$work/self" >>"$work/eself.$rt"
        fi
    done
done
# values are KiB; shown in MiB
for rt in "${RTS[@]}"; do
    read -r m _ <<<"$(stats "$work/etree.$rt" 1024)"
    RES[et.$rt]=$m
    RES[es.$rt]=-
    if [[ -s $work/eself.$rt ]]; then
        read -r m _ <<<"$(stats "$work/eself.$rt" 1024)"
        RES[es.$rt]=$m
    fi
    printf '    %-5s self %6s MiB   tree %6s MiB\n' "$rt" "${RES[es.$rt]}" "${RES[et.$rt]}"
done

# --- summary ------------------------------------------------------------------
has() { [[ " ${RTS[*]} " == *" $1 "* ]]; }
col() { has "$2" && echo "${RES[$1.$2]:-}" || echo -; }
echo
echo "Summary (medians; ratios < 1 mean hako is faster/smaller)"
printf '| %-34s | %9s | %9s | %9s | %9s | %9s |\n' measure hako runc crun hako/runc hako/crun
printf '|%s|%s|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..36})" ----------- ----------- ----------- ----------- -----------
row() {
    local label=$1 key=$2 h r c
    h=$(col "$key" hako) r=$(col "$key" runc) c=$(col "$key" crun)
    printf '| %-34s | %9s | %9s | %9s | %9s | %9s |\n' "$label" "$h" "$r" "$c" "$(ratio "$h" "$r")" "$(ratio "$h" "$c")"
}
row "(a) run, median ms" a
row "(a) run, p90 ms" a90
row "(b) create+start+delete, median ms" b
row "(b) create+start+delete, p90 ms" b90
row "(c) $SERIAL run in a row, ms" c
row "(d) $PAR run, $JOBS at a time, ms" d
row "(e) peak RSS self, MiB" es
row "(e) peak RSS tree, MiB" et
echo
echo "failures: $fails, hangs: $hangs"
for rt in "${RTS[@]}"; do
    if [[ -s $errlog.$rt ]]; then
        echo "--- last stderr lines of $rt:"
        tail -5 "$errlog.$rt"
    fi
done
[[ $fails == 0 && $hangs == 0 ]]
