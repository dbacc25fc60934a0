#!/usr/bin/env bash
# Measures `nftkit masquerade` against what ip-masq-agent-v2 does, each run in a fresh
# network namespace (root needed; nothing outside the namespaces is touched):
#
#   1. apply time with N non-masquerade CIDRs (default 10 000, /30s that do not merge):
#      a. nftkit masquerade --once --config-dir DIR   (one netlink batch, interval set;
#         the whole process: config read, backend auto-detection, batch, read-back check),
#         and from its log the batch commit alone; again with --backend nftables (skips
#         `auto`'s look at the iptables binaries)
#      b. iptables-legacy-restore --noflush of upstream's ruleset: the POSTROUTING jump
#         plus one `-A IP-MASQ-AGENT -d CIDR -j RETURN` rule per CIDR (upstream writes the
#         chain this way on every resync)
#      c. nft -f of nftkit's own --dry-run script (the same set, through the nft binary)
#      Rounds are interleaved (a, b, c, a, b, c, ...) so machine load hits all alike.
#   2. no-op resync: the daemon runs with --resync-interval 1 -v --log-format json on the
#      same config; one resync is the time from its "resync" debug line (config re-read
#      starts) to "in sync; nothing sent" (kernel read back and compared, nothing sent).
#      Also, as a proxy seen from outside, the wall time of `nftkit verify masquerade`
#      (process start, config read, read-back, compare).
#   Medians (and min/max) over ROUNDS runs.
#
#   scripts/measure-masquerade.sh [ROUNDS] [CIDRS]      # defaults: 7 rounds, 10000 CIDRs
#   NFTKIT=target/release/nftkit scripts/measure-masquerade.sh   (default; built if missing)
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${1:-7}
CIDRS=${2:-10000}
NFTKIT=${NFTKIT:-target/release/nftkit}
[ -x "$NFTKIT" ] || cargo build --release --bin nftkit
NFTKIT=$(realpath "$NFTKIT")
[ "$(id -u)" -eq 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }
for t in iptables-legacy-restore nft python3 ip; do
    command -v "$t" >/dev/null || { echo "missing $t" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/nkmasq-measure.XXXXXX)
NS=nkmasqm$$
DAEMON=
cleanup() {
    if [ -n "$DAEMON" ]; then kill -TERM "$DAEMON" 2>/dev/null || true; wait "$DAEMON" 2>/dev/null || true; fi
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# Config dir, upstream's iptables-restore input, and nftkit's nft script.
mkdir -p "$WORK/config"
python3 - "$CIDRS" "$WORK" <<'EOF'
import ipaddress, sys
n, work = int(sys.argv[1]), sys.argv[2]
base = int(ipaddress.IPv4Address("10.0.0.0"))
cidrs = [f"{ipaddress.IPv4Address(base + i * 8)}/30" for i in range(n)]
with open(f"{work}/config/ip-masq-agent", "w") as f:
    f.write("nonMasqueradeCIDRs:\n" + "".join(f"  - {c}\n" for c in cidrs))
ret = '-m comment --comment "ip-masq-agent: local traffic is not subject to MASQUERADE"'
with open(f"{work}/upstream.rules", "w") as f:
    f.write("*nat\n:IP-MASQ-AGENT - [0:0]\n")
    f.write('-A POSTROUTING -m comment --comment "ip-masq-agent: ensure nat POSTROUTING directs all non-LOCAL destination traffic to our custom IP-MASQ-AGENT chain" -m addrtype ! --dst-type LOCAL -j IP-MASQ-AGENT\n')
    f.write(f"-A IP-MASQ-AGENT {ret} -d 169.254.0.0/16 -j RETURN\n")
    for c in cidrs:
        f.write(f"-A IP-MASQ-AGENT {ret} -d {c} -j RETURN\n")
    f.write('-A IP-MASQ-AGENT -m comment --comment "ip-masq-agent: outbound traffic is subject to MASQUERADE (must be last in chain)" -j MASQUERADE\nCOMMIT\n')
EOF
"$NFTKIT" -q --dry-run masquerade --config-dir "$WORK/config" > "$WORK/nftkit.nft"

fresh_ns() {
    ip netns del "$NS" 2>/dev/null || true
    ip netns add "$NS"
    ip -n "$NS" link set lo up
}

now_ns() { date +%s%N; }
ms() { awk -v ns="$1" 'BEGIN { printf "%.3f\n", ns / 1000000 }'; }

# run_timed NAME CMD...: time CMD in a fresh namespace, append ms to $WORK/NAME.
run_timed() {
    local name=$1; shift
    fresh_ns
    local t0 t1
    t0=$(now_ns)
    "$@" >"$WORK/last.out" 2>&1 || { echo "$name failed:" >&2; cat "$WORK/last.out" >&2; exit 1; }
    t1=$(now_ns)
    ms $((t1 - t0)) >>"$WORK/$name"
}

stats() { # file -> "median min max"
    sort -n "$1" | awk '{a[NR]=$1} END {m = (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2; printf "%.1f %.1f %.1f\n", m, a[1], a[NR]}'
}

echo "apply of $CIDRS non-masquerade CIDRs, $ROUNDS rounds, fresh namespace each ($NFTKIT)"
for _ in $(seq "$ROUNDS"); do
    run_timed nftkit ip netns exec "$NS" "$NFTKIT" --log-format json masquerade --once --config-dir "$WORK/config"
    # Its own log: the batch commit alone ("applied" elapsed_us, before the read-back check).
    jq -r 'select(.fields.message == "applied") | .fields.elapsed_us / 1000' "$WORK/last.out" >>"$WORK/nftkit_commit"
    # Check it really applied (the jump, the set and the masquerade rule).
    [[ "$(ip netns exec "$NS" nft list table inet nftkit-masquerade)" == *"masquerade comment"* ]] ||
        { echo "nftkit did not apply" >&2; exit 1; }
    run_timed nftkit_nft ip netns exec "$NS" "$NFTKIT" -q --backend nftables masquerade --once --config-dir "$WORK/config"
    run_timed iptables_legacy ip netns exec "$NS" iptables-legacy-restore --noflush "$WORK/upstream.rules"
    rules=$(ip netns exec "$NS" iptables-legacy -t nat -S IP-MASQ-AGENT | wc -l)
    [ "$rules" -eq $((CIDRS + 3)) ] || { echo "iptables-legacy: $rules lines in IP-MASQ-AGENT" >&2; exit 1; }
    run_timed nft_f ip netns exec "$NS" nft -f "$WORK/nftkit.nft"
done
printf '%-48s %10s %10s %10s\n' "apply ($CIDRS CIDRs)" "median ms" "min" "max"
for n in nftkit nftkit_commit nftkit_nft iptables_legacy nft_f; do
    read -r med min max < <(stats "$WORK/$n")
    case $n in
        nftkit) label="nftkit masquerade --once (whole process)" ;;
        nftkit_commit) label="  of which the netlink batch (log)" ;;
        nftkit_nft) label="nftkit --backend nftables (no auto-detection)" ;;
        iptables_legacy) label="iptables-legacy-restore (rule per CIDR)" ;;
        nft_f) label="nft -f (same interval set)" ;;
    esac
    printf '%-48s %10s %10s %10s\n' "$label" "$med" "$min" "$max"
done

# No-op resync: the daemon on the same config, -v json log.
fresh_ns
ip netns exec "$NS" "$NFTKIT" -v --log-format json masquerade --config-dir "$WORK/config" \
    --resync-interval 1 2>"$WORK/daemon.log" &
DAEMON=$!
need=$((ROUNDS + 1))
for _ in $(seq 600); do
    [ "$(grep -c '"in sync; nothing sent"' "$WORK/daemon.log" || true)" -ge "$need" ] && break
    sleep 0.1
done
kill -TERM "$DAEMON"; wait "$DAEMON" || true; DAEMON=
python3 bench/resync_times.py "$WORK/daemon.log" "$ROUNDS" --first >"$WORK/resync"
[ -s "$WORK/resync" ] || { echo "no resync found in the daemon log:" >&2; cat "$WORK/daemon.log" >&2; exit 1; }

fresh_ns
ip netns exec "$NS" "$NFTKIT" -q masquerade --once --config-dir "$WORK/config"
for _ in $(seq "$ROUNDS"); do
    t0=$(now_ns)
    ip netns exec "$NS" "$NFTKIT" -q verify masquerade --config-dir "$WORK/config" >/dev/null
    t1=$(now_ns)
    ms $((t1 - t0)) >>"$WORK/verify"
done
printf '%-48s %10s %10s %10s\n' "no-op resync ($CIDRS CIDRs)" "median ms" "min" "max"
read -r med min max < <(stats "$WORK/resync")
printf '%-48s %10s %10s %10s\n' "daemon resync (log: resync -> in sync), n=$(wc -l <"$WORK/resync")" "$med" "$min" "$max"
read -r med min max < <(stats "$WORK/verify")
printf '%-48s %10s %10s %10s\n' "nftkit verify masquerade (whole process)" "$med" "$min" "$max"
