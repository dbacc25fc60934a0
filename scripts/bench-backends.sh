#!/usr/bin/env bash
# Apply time of a 10 000-CIDR masquerade config on each backend (nftables, iptables-legacy,
# iptables-nft): median of RUNS runs, each in a fresh network namespace (first apply) and
# then once more on top (replace). Needs root; touches only its own namespaces.
#
#   scripts/bench-backends.sh            # RUNS=7 CIDRS=10000, release build
#   RUNS=5 CIDRS=5000 NFTKIT=target/debug/nftkit scripts/bench-backends.sh
#
# "apply" is what nftkit logs as elapsed_us for the atomic apply alone (one netlink batch,
# or one iptables-restore per family); "command" is the wall time of the whole
# `nftkit masquerade --once` process (config parsing, apply, read-back and compare).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-7}
CIDRS=${CIDRS:-10000}
BACKENDS=${BACKENDS:-"nftables iptables-legacy iptables-nft"}
if [ -z "${NFTKIT:-}" ]; then
    cargo build --release --bin nftkit >&2
    NFTKIT=$PWD/target/release/nftkit
fi
NFTKIT=$(realpath "$NFTKIT")
[ "$(id -u)" -eq 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }

work=$(mktemp -d)
ns="nkbench$$"
cleanup() {
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# 10.a.b.0/25 for consecutive (a, b): never adjacent, so the merge keeps every one.
mkdir -p "$work/cfg" "$work/state"
{
    printf 'nonMasqueradeCIDRs:\n'
    for ((i = 0; i < CIDRS; i++)); do
        printf -- '- 10.%d.%d.0/25\n' $((i / 256)) $((i % 256))
    done
} >"$work/cfg/ip-masq-agent"

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# One run: prints "apply_us command_us" for the first apply and for the replace.
run_once() {
    local backend=$1
    ip netns add "$ns"
    local out t0 t1 a1 a2 c1 c2
    for pass in 1 2; do
        t0=$(date +%s%N)
        out=$(ip netns exec "$ns" env NFTKIT_STATE_DIR="$work/state" "$NFTKIT" \
            --backend "$backend" --log-format json masquerade --config-dir "$work/cfg" --once 2>&1) || {
            echo "$out" >&2
            exit 1
        }
        t1=$(date +%s%N)
        local a
        a=$(printf '%s\n' "$out" | grep '"applied"' | sed -n 's/.*"elapsed_us":\([0-9]*\).*/\1/p' | tail -1)
        if [ "$pass" = 1 ]; then a1=$a; c1=$(((t1 - t0) / 1000)); else a2=$a; c2=$(((t1 - t0) / 1000)); fi
    done
    ip netns del "$ns"
    echo "$a1 $c1 $a2 $c2"
}

printf '%d CIDRs, %d runs each, medians in ms (%s)\n' "$CIDRS" "$RUNS" "$NFTKIT"
printf '%-16s %12s %12s %12s %12s\n' backend apply-first command-first apply-replace command-replace
for b in $BACKENDS; do
    : >"$work/$b"
    for ((r = 0; r < RUNS; r++)); do run_once "$b" >>"$work/$b"; done
    cols=()
    for c in 1 2 3 4; do
        cols+=("$(awk -v c=$c '{print $c}' "$work/$b" | median | awk '{printf "%.1f", $1/1000}')")
    done
    printf '%-16s %12s %12s %12s %12s\n' "$b" "${cols[@]}"
done
