# Shared by the benchmark scripts: timing, medians, ratios, and the
# interleaved loop. Source it; it defines functions only.

# Microseconds since the epoch.
now_us() { local t=${EPOCHREALTIME/./}; echo $((10#$t)); }

# stats FILE [DIVISOR] [DECIMALS]: "median p90" of the numbers in FILE
# (one per line), divided by DIVISOR (default 1000: µs → ms).
stats() {
    sort -n "$1" | awk -v div="${2:-1000}" -v dec="${3:-2}" '{v[NR]=$1} END {
        if (NR == 0) { print "nan nan"; exit }
        m = (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2
        k = int(0.9 * NR); if (k < 0.9 * NR) k++; if (k < 1) k = 1
        printf "%." dec "f %." dec "f\n", m / div, v[k] / div }'
}

# ratio A B: A/B with two decimals, "-" when either is missing or zero.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 > 0 && a + 0 > 0) printf "%.2f", a / b; else printf "-" }'; }

# interleave N FUNCTION VARIANT...: N rounds, each calling FUNCTION once
# per variant. The order rotates every round: a run pays for the teardown
# of the one before it, so no variant always follows the same one.
interleave() {
    local n=$1 fn=$2 i j
    shift 2
    local vs=("$@")
    for ((i = 0; i < n; i++)); do
        for ((j = 0; j < ${#vs[@]}; j++)); do "$fn" "${vs[(i + j) % ${#vs[@]}]}"; done
    done
}
