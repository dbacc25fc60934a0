#!/usr/bin/env bash
# Workload 1 of the benchmark: apply kubernetes-qpoint-init's default ruleset, nftkit next
# to its competitors, interleaved, each run in a fresh network namespace (the
# `ip netns exec` overhead is in every number alike). Prints median/min/max in ms and
# ratios against `nft -f` (create-only). Needs root; builds nftkit --release.
#
#   scripts/bench-redirect.sh [RUNS]     (default 15)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-15}
cargo build --release --quiet --bin nftkit
NFTKIT=$PWD/target/release/nftkit
work=$(mktemp -d)
ns=nkbench$$
trap 'ip netns del $ns 2>/dev/null || true; rm -rf "$work"' EXIT

# The same ruleset in each tool's input language.
"$NFTKIT" -q --dry-run redirect > "$work/replace.nft"          # nftkit's replace idiom
sed '1,2d' "$work/replace.nft" > "$work/create.nft"              # create-only
# The other tools' inputs (shared with scripts/bench.sh).
cp bench/qpoint-v4.restore "$work/v4.restore"
cp bench/qpoint-v6.restore "$work/v6.restore"
export QPOINT_PERCMD=$PWD/bench/qpoint-percmd.sh
percmd() { bash "$QPOINT_PERCMD" "$@"; }
export -f percmd

declare -A cmd=(
    [nftkit-redirect]="$NFTKIT -q redirect"
    [nft-f-create]="nft -f $work/create.nft"
    [nft-f-replace]="nft -f $work/replace.nft"
    [legacy-restore]="sh -c 'iptables-legacy-restore --noflush < $work/v4.restore && ip6tables-legacy-restore --noflush < $work/v6.restore'"
    [nft-restore]="sh -c 'iptables-nft-restore --noflush < $work/v4.restore && ip6tables-nft-restore --noflush < $work/v6.restore'"
    [legacy-percmd]="bash -c 'percmd iptables-legacy ip6tables-legacy'"
    [nft-percmd]="bash -c 'percmd iptables-nft ip6tables-nft'"
)
order=(nftkit-redirect nft-f-create nft-f-replace legacy-restore nft-restore legacy-percmd nft-percmd)
for name in "${order[@]}"; do : > "$work/$name.ms"; done
for ((i = 0; i < runs; i++)); do
    for name in "${order[@]}"; do
        ip netns add $ns
        t0=$(date +%s%N)
        eval "ip netns exec $ns ${cmd[$name]}" >/dev/null
        t1=$(date +%s%N)
        ip netns del $ns
        echo "scale=3; ($t1 - $t0) / 1000000" | bc >> "$work/$name.ms"
    done
done
stat() { sort -n "$1" | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.2f %.2f %.2f\n", m, a[1], a[NR]}'; }
base=$(stat "$work/nft-f-create.ms" | cut -d' ' -f1)
printf '%-18s %10s %10s %10s %12s\n' workload median_ms min_ms max_ms vs_nft_create
json="{\"date\":\"$(date -u +%FT%TZ)\",\"kernel\":\"$(uname -r)\",\"nft\":\"$(nft --version)\",\"iptables\":\"$(iptables --version)\",\"runs\":$runs,\"results\":{"
sep=""
for name in "${order[@]}"; do
    read -r med min max < <(stat "$work/$name.ms")
    ratio=$(echo "scale=2; $med / $base" | bc)
    printf '%-18s %10s %10s %10s %11sx\n' "$name" "$med" "$min" "$max" "$ratio"
    json+="$sep\"$name\":{\"median_ms\":$med,\"min_ms\":$min,\"max_ms\":$max,\"ratio_vs_nft_create\":$ratio}"
    sep=","
done
mkdir -p bench/results
echo "$json}}" > "bench/results/redirect-$(date -u +%Y%m%dT%H%M%SZ).json"
