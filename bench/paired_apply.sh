#!/bin/bash
# Paired small applies: `masquerade --once` at N CIDRs for each nftkit binary given and
# iptables-legacy-restore of upstream's rules for the same CIDRs, one after the other in
# every round, each in a fresh network namespace (timed inside it, process start
# included); prints medians and the median of the per-round ratios to
# iptables-legacy-restore. Root; touches nothing outside its namespaces.
#
#   bench/paired_apply.sh ROUNDS N NFTKIT_BINARY...
#   e.g. bench/paired_apply.sh 15 10 target/release/nftkit /tmp/nftkit-old
set -euo pipefail
rounds=$1 n=$2
shift 2
[ $# -gt 0 ] || { echo "usage: $0 ROUNDS N NFTKIT_BINARY..." >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
w=$(mktemp -d /tmp/nkpaired.XXXXXX)
ns=nkpaired$$
trap 'ip netns del "$ns" 2>/dev/null || true; rm -rf "$w"' EXIT
python3 "$here/gen.py" "$n" "$w/in" >/dev/null
bins=()
for b in "$@"; do bins+=("$(realpath "$b")"); done
# timed_in_ns CMD...: wall microseconds of CMD inside a fresh namespace.
timed_in_ns() {
    ip netns add "$ns"
    ip netns exec "$ns" bash -c 's=$EPOCHREALTIME; "$@" >/dev/null 2>&1 || exit 99; e=$EPOCHREALTIME; echo $(( ${e/./} - ${s/./} ))' _ "$@"
    ip netns del "$ns"
    sleep 0.2 # the namespace's teardown runs in a kernel worker
}
for ((r = 0; r < rounds; r++)); do
    line=""
    for b in "${bins[@]}"; do
        line+=" $(timed_in_ns "$b" masquerade --once --config-dir "$w/in/config")"
    done
    line+=" $(timed_in_ns iptables-legacy-restore --noflush "$w/in/legacy.rules")"
    echo "$line"
done | python3 -c '
import statistics as st, sys
names = sys.argv[1:] + ["iptables-legacy-restore"]
rows = [list(map(int, l.split())) for l in sys.stdin]
for i, name in enumerate(names):
    ms = [r[i] / 1000 for r in rows]
    ratio = st.median(r[i] / r[-1] for r in rows)
    print(f"{name:48s} median {st.median(ms):7.2f} ms  min {min(ms):7.2f}  per-round ratio {ratio:.2f}x")
' "${bins[@]}"
