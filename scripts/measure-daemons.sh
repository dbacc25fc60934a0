#!/usr/bin/env bash
# Measures the reconcile loop of the two daemons `local-address` and `dnat`, each in a
# throw-away network namespace (root needed; nothing outside the namespaces is touched):
#
#   1. no-op resync cost: the daemon runs with --sync-interval 1s and -vv; each resync logs
#      "resync" when it starts and "in sync; nothing sent" when it ends, and the time
#      between the two is one in-sync resync (address check, foreign-drop check, table
#      read-back and compare);
#   2. proof that a no-op resync is read-only: `nft monitor` in the namespace during
#      several resyncs prints nothing (no table, chain, rule or set event);
#   3. repair latency: delete the table (`nft delete table`, --persist so others may) or the
#      address (`ip addr del`) and time until it is back (polled every 10 ms). With a 1 s
#      interval the expected value is ~0.5 s (uniform over the interval) + one repair.
#
#   scripts/measure-daemons.sh [ROUNDS]        # default 5 rounds per measurement
#   NFTKIT=target/release/nftkit scripts/measure-daemons.sh
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${1:-5}
NFTKIT=${NFTKIT:-target/debug/nftkit}
[ -x "$NFTKIT" ] || cargo build --bin nftkit
[ "$(id -u)" -eq 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }

NS=nkmeasure$$
LOG=$(mktemp /tmp/nkmeasure.XXXXXX)
DAEMON=
cleanup() {
    [ -n "$DAEMON" ] && kill -TERM "$DAEMON" 2>/dev/null && wait "$DAEMON" 2>/dev/null || true
    ip netns del "$NS" 2>/dev/null || true
    rm -f "$LOG"
}
trap cleanup EXIT

now_ns() { date +%s%N; }

start_daemon() {
    : >"$LOG"
    ip netns exec "$NS" env -u RUST_LOG NO_COLOR=1 "$NFTKIT" -vv "$@" 2>"$LOG" &
    DAEMON=$!
    for _ in $(seq 100); do grep -q "reconciling" "$LOG" && return 0; sleep 0.1; done
    echo "daemon did not start:" >&2; cat "$LOG" >&2; exit 1
}

stop_daemon() {
    kill -TERM "$DAEMON"; wait "$DAEMON" || true; DAEMON=
}

# Mean/min/max of the in-sync resyncs in the log (microseconds): each "in sync; nothing
# sent" line paired with the "resync" line that started its step.
resync_cost() {
    grep -aE " resync$|in sync; nothing sent" "$LOG" |
        sed -E 's/^[^T]*T([0-9]+):([0-9]+):([0-9.]+)Z(.*)$/\1 \2 \3 \4/' |
        awk '{ t = $1 * 3600 + $2 * 60 + $3 }
             / resync$/ { start = t; next }
             /nothing sent/ && start != "" { d = (t - start) * 1e6; n++; s += d;
                 if (min == "" || d < min) min = d; if (d > max) max = d; start = "" }
             END { if (n) printf "%d in-sync resyncs: mean %.0f us, min %.0f us, max %.0f us\n", n, s / n, min, max;
                   else print "no in-sync resync logged" }'
}

# `nft monitor` during SECS seconds of resyncs. Half a second before the end a canary table
# is added and removed with nft, which shows the monitor was listening.
monitor_events() {
    local secs=$1 out ours
    ip netns exec "$NS" timeout "$secs" nft monitor >"$LOG.mon" 2>&1 &
    local mon=$!
    sleep "$(awk -v s="$secs" 'BEGIN { print s - 0.5 }')"
    ip netns exec "$NS" nft add table inet canary
    ip netns exec "$NS" nft delete table inet canary
    wait "$mon" || true
    out=$(cat "$LOG.mon"); rm -f "$LOG.mon"
    ours=$(printf '%s\n' "$out" | grep -v canary | grep -v '(nft)$' | grep -c . || true)
    echo "nft monitor over ${secs}s of 1s resyncs: $ours events from nftkit; canary seen: $(printf '%s' "$out" | grep -q 'add table inet canary' && echo yes || echo NO)"
    [ "$ours" -eq 0 ] || printf '%s\n' "$out" | grep -v canary | head -5
}

# Time until `check` succeeds after `break_it` ran, in ms (polled every 10 ms, 5 s max).
repair_ms() {
    local break_it=$1 check=$2 t0
    eval "$break_it"
    t0=$(now_ns)
    for _ in $(seq 500); do
        if eval "$check" >/dev/null 2>&1; then echo $((($(now_ns) - t0) / 1000000)); return; fi
        sleep 0.01
    done
    echo "timeout"
}

repairs() {
    local what=$1 break_it=$2 check=$3 all=() ms
    for _ in $(seq "$ROUNDS"); do
        # Spread the breakage over the interval.
        sleep "0.$((RANDOM % 10))"
        ms=$(repair_ms "$break_it" "$check")
        all+=("$ms")
    done
    printf '%s repaired after (ms): %s' "$what" "${all[*]}"
    printf '%s\n' "${all[@]}" | awk '$1 != "timeout" { n++; s += $1 } END { if (n) printf "  (mean %.0f ms)\n", s / n; else print "" }'
}

ip netns add "$NS"
ip netns exec "$NS" ip link set lo up
echo "nftkit: $NFTKIT ($("$NFTKIT" --version)); kernel $(uname -r); $(nproc) cores"

echo
echo "== local-address --ip-address 10.96.0.2 --setup-iptables --sync-interval 1s --persist --cleanup"
start_daemon local-address --ip-address 10.96.0.2 --setup-iptables --sync-interval 1s --persist --cleanup
monitor_events 5.5
resync_cost
repairs "table (nft delete table)" \
    "ip netns exec $NS nft delete table inet nftkit-local-address" \
    "ip netns exec $NS nft list table inet nftkit-local-address"
repairs "address (ip addr del)" \
    "ip netns exec $NS ip addr del 10.96.0.2/32 dev lo" \
    "ip netns exec $NS ip -o addr show dev lo | grep -q ' 10.96.0.2/32 '"
stop_daemon
echo "after SIGTERM with --cleanup: table $(ip netns exec "$NS" nft list table inet nftkit-local-address >/dev/null 2>&1 && echo present || echo gone), address $(ip netns exec "$NS" ip -o addr show dev lo | grep -q ' 10.96.0.2/32 ' && echo present || echo gone)"

echo
echo "== dnat --map 169.254.169.254:80=198.51.100.5:8080,169.254.169.254:81=198.51.100.5:8081 --map [2001:db8::254]:80=[2001:db8::5]:8080 --accept-uids 988 --sync-interval 1s --persist --cleanup"
start_daemon dnat --map 169.254.169.254:80=198.51.100.5:8080,169.254.169.254:81=198.51.100.5:8081 \
    --map '[2001:db8::254]:80=[2001:db8::5]:8080' --accept-uids 988 --sync-interval 1s --persist --cleanup
monitor_events 5.5
resync_cost
repairs "table (nft delete table)" \
    "ip netns exec $NS nft delete table inet nftkit-dnat" \
    "ip netns exec $NS nft list table inet nftkit-dnat"
stop_daemon
