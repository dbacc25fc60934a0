#!/usr/bin/env bash
# Benchmark suite (issue 9): nftkit next to its competitors on the same work, each run in
# throwaway network namespaces (nothing outside them is touched; only 10.99.x, 172.16/12
# and TEST-NET addresses). Runs are interleaved (a, b, c, a, b, c, ...) so machine load
# hits every tool alike; times are taken inside the namespace around the command itself
# (process start included, `ip netns exec` and namespace creation not).
#
#   1 redirect     kubernetes-qpoint-init's default ruleset: per-command iptables and
#                  ip6tables (legacy, nft), iptables-restore of each flavour, nft -f
#                  (create-only, replace idiom), nftkit redirect
#   2 masquerade   N = 10, 1 000, 10 000, 50 000 non-masquerade CIDRs: iptables-legacy-
#                  restore and iptables-nft-restore (rule per CIDR, upstream's ruleset),
#                  nft -f (rule per CIDR; interval set), nftkit masquerade --once
#   3 reconcile    no-op resync at 10 000: nftkit daemon (time from its log, ruleset
#                  events from `nft monitor`), legacy resync (iptables-legacy-restore of
#                  the same rules again, as upstream), nft -f replace
#   4 datapath     client -> router (masquerade) -> server namespaces; new TCP connections
#                  per second (bench/cps.py) and iperf3 throughput with N = 0, 1 000,
#                  10 000 CIDRs: nftkit's ruleset vs iptables-legacy rule per CIDR
#   5 readback     at 10 000: nftkit verify / status --json vs nft -j list ruleset and
#                  iptables-legacy-save
#   6 footprint    binary size, startup (--version), peak RSS applying 50 000 CIDRs
#   7 netpol log   new TCP connections per second through a node with 200 NetworkPolicies:
#                  nftkit netpol --log-verdicts none / drops / all, and no rules
#   8 netpol tiers 1 000 local pods, 200 NetworkPolicies, 50 ClusterNetworkPolicies
#                  (bench/netpol_tiers_gen.py; the bench connections walk the Admin,
#                  NetworkPolicy and Baseline tiers): (a) one-shot apply: nftkit netpol vs
#                  `nft -f` of its --dry-run vs nftkit --backend iptables-legacy; (c) new
#                  TCP conn/s through the node with each, with nftkit's table of the same
#                  pods and no policies, and with no rules; (b) pod event
#                  -> rules in the kernel (median, p99; 100 events, whole-table 30 at
#                  --quick): set elements only vs the whole table replaced
#
#   scripts/bench.sh [--quick] [--runs N] [--only "1 2 ..."] [--static] [--reference]
#
# --quick: 3 runs, fewer sizes (under 3 minutes, and about 5 more for workload 8);
# default 7 runs (under 15 minutes, and about 10 more for workload 8).
# --static: measure the static binary the container image ships (x86_64 musl, built as
# scripts/build-image.sh does; about 10 minutes the first time) instead of the dynamic
# release build; it starts ~0.5 ms faster. NFTKIT=path measures that binary.
# Prints a table of medians (min/max) with ratios and the issue's targets; writes JSON to
# bench/results/bench-<UTC time>.json (--reference: bench/results/reference-<date>.json).
# Needs root, nft, iptables (both flavours), python3, jq, iperf3, /usr/bin/time.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0 RUNS= ONLY="1 2 3 4 5 6 7 8" REFERENCE=0 STATIC=0
while [ $# -gt 0 ]; do
    case $1 in
        --quick) QUICK=1 ;;
        --runs) RUNS=$2; shift ;;
        --only) ONLY=$2; shift ;;
        --reference) REFERENCE=1 ;;
        --static) STATIC=1 ;;
        -h | --help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
if [ "$QUICK" = 1 ]; then
    RUNS=${RUNS:-3} SIZES="10 10000" DP_SIZES="0 10000" DP_SECONDS=1 STARTUP_RUNS=10 RSS_RUNS=1
    W8_EVENTS=100 W8_WHOLE_EVENTS=30
else
    RUNS=${RUNS:-7} SIZES="10 1000 10000 50000" DP_SIZES="0 1000 10000" DP_SECONDS=2 STARTUP_RUNS=21 RSS_RUNS=3
    W8_EVENTS=100 W8_WHOLE_EVENTS=100
fi

[ "$(id -u)" -eq 0 ] || { echo "bench.sh: needs root (network namespaces)" >&2; exit 1; }
for t in nft iptables-legacy-restore iptables-nft-restore ip6tables-legacy-restore \
    ip6tables-nft-restore iptables-legacy-save python3 jq iperf3 /usr/bin/time; do
    command -v "$t" >/dev/null || { echo "bench.sh: missing $t" >&2; exit 1; }
done
NFTKIT=${NFTKIT:-}
# nftkit's log level comes from its flags alone here (RUST_LOG would override them).
unset RUST_LOG
if [ -z "$NFTKIT" ] && [ "$STATIC" = 1 ]; then
    rustup target add x86_64-unknown-linux-musl >/dev/null
    CC_x86_64_unknown_linux_musl=musl-gcc cargo build --release --quiet \
        --target x86_64-unknown-linux-musl --bin nftkit
    NFTKIT=target/x86_64-unknown-linux-musl/release/nftkit
elif [ -z "$NFTKIT" ]; then
    cargo build --release --quiet --bin nftkit
    NFTKIT=target/release/nftkit
fi
NFTKIT=$(realpath "$NFTKIT")
BENCH=$PWD/bench

W=$(mktemp -d /tmp/nkbench.XXXXXX)
SAMPLES=$W/samples.tsv
: >"$SAMPLES"
P=nkb$$
NSS=()
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for n in "${NSS[@]}"; do ip netns del "$n" 2>/dev/null || true; done
    rm -rf "$W"
}
trap cleanup EXIT

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
sample() {
    [ -n "$5" ] || { echo "bench.sh: no value for $1 $2 $3 $4 (the command failed, see above)" >&2; exit 1; }
    printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$SAMPLES"
}
ns_new() { ip netns del "$1" 2>/dev/null || true; ip netns add "$1"; ip -n "$1" link set lo up; NSS+=("$1"); }
ns_del() { ip netns del "$1" 2>/dev/null || true; }
# ns_del_settled NS: delete NS and give the kernel a moment to tear it down. Teardown
# (freeing the previous tool's 10 000-element table, an RCU grace period) runs in a
# kernel worker after `ip netns del` returns; without the pause it competes with the
# next tool's timed run on this 2-core machine, and which tool it hits depends only on
# the order of the rotation.
ns_del_settled() { ns_del "$1"; quiesce; }
# quiesce: wait (at most 5 s) until the CPUs were at least 90% idle over 100 ms, so a
# namespace's teardown (its table, tens of thousands of conntrack entries after the
# datapath workload) has finished before the next timed run.
quiesce() {
    local i a b
    for ((i = 0; i < 50; i++)); do
        a=$(head -1 /proc/stat)
        sleep 0.1
        b=$(head -1 /proc/stat)
        awk -v a="$a" -v b="$b" 'BEGIN {
            split(a, x); split(b, y); tot = 0
            for (k = 2; k <= 11; k++) tot += y[k] - x[k]
            idle = (y[5] - x[5]) + (y[6] - x[6])
            exit !(tot > 0 && idle / tot >= 0.9) }' && return 0
    done
    return 0 # still busy after 5 s: go on (a loaded machine must not end the run)
}

# timed NS CMD...: run CMD inside NS, print its wall time in ms (taken inside the namespace).
timed() {
    local ns=$1; shift
    local out
    out=$(ip netns exec "$ns" bash -c 's=$EPOCHREALTIME; "$@" >'"$W"'/last.out 2>&1 || exit 99; e=$EPOCHREALTIME; echo $(( ${e/./} - ${s/./} ))' _ "$@") ||
        { echo "bench.sh: failed in $ns: $*" >&2; cat "$W/last.out" >&2; exit 1; }
    awk -v us="$out" 'BEGIN { printf "%.3f\n", us / 1000 }'
}

# log_us MESSAGE FIELD: FIELD (microseconds) of nftkit's json log line MESSAGE in the last
# timed output, in ms.
log_us() {
    # Lines that are not JSON (a command's own output) are skipped.
    jq -rR --arg m "$1" --arg f "$2" 'fromjson? | select(.fields.message == $m) | .fields[$f] / 1000' "$W/last.out" | tail -1
}

# Inputs for every size used.
gen() { [ -d "$W/n$1" ] || python3 "$BENCH/gen.py" "$1" "$W/n$1"; }
nftkit_scripts() { # nftkit's own --dry-run as nft input: replace idiom and create-only
    gen "$1"
    [ -f "$W/n$1/nft-replace.nft" ] && return
    "$NFTKIT" -q --dry-run masquerade --config-dir "$W/n$1/config" >"$W/n$1/nft-replace.nft"
    sed '1,2d' "$W/n$1/nft-replace.nft" >"$W/n$1/nft-set.nft"
}

# ---- 1: kubernetes-qpoint-init's default ruleset ----------------------------------------
w1() {
    log "1: redirect default ruleset, $RUNS runs"
    local d=$W/w1
    mkdir -p "$d"
    "$NFTKIT" -q --dry-run redirect >"$d/replace.nft"
    sed '1,2d' "$d/replace.nft" >"$d/create.nft"
    # The competitors' inputs: bench/qpoint-v{4,6}.restore and bench/qpoint-percmd.sh.
    cp "$BENCH/qpoint-v4.restore" "$d/v4.restore"
    cp "$BENCH/qpoint-v6.restore" "$d/v6.restore"
    cp "$BENCH/qpoint-percmd.sh" "$d/percmd.sh"
    local ns=${P}w1 i
    for ((i = 0; i < RUNS; i++)); do
        for name in nftkit-redirect nft-f-create nft-f-replace iptables-legacy-restore iptables-nft-restore \
            iptables-legacy-percmd iptables-nft-percmd; do
            ns_new "$ns"
            case $name in
                nftkit-redirect) ms=$(timed "$ns" "$NFTKIT" -q redirect) ;;
                nft-f-create) ms=$(timed "$ns" nft -f "$d/create.nft") ;;
                nft-f-replace) ms=$(timed "$ns" nft -f "$d/replace.nft") ;;
                iptables-legacy-restore) ms=$(timed "$ns" sh -c "iptables-legacy-restore --noflush <$d/v4.restore && ip6tables-legacy-restore --noflush <$d/v6.restore") ;;
                iptables-nft-restore) ms=$(timed "$ns" sh -c "iptables-nft-restore --noflush <$d/v4.restore && ip6tables-nft-restore --noflush <$d/v6.restore") ;;
                iptables-legacy-percmd) ms=$(timed "$ns" bash "$d/percmd.sh" iptables-legacy ip6tables-legacy) ;;
                iptables-nft-percmd) ms=$(timed "$ns" bash "$d/percmd.sh" iptables-nft ip6tables-nft) ;;
            esac
            sample 1-redirect "$name" - ms "$ms"
            ns_del_settled "$ns"
        done
    done
}

# ---- 2: masquerade apply with N CIDRs ---------------------------------------------------
w2() {
    local ns=${P}w2 n i name ms
    for n in $SIZES; do
        nftkit_scripts "$n"
        log "2: masquerade apply, $n CIDRs, $RUNS runs"
        local d=$W/n$n
        for ((i = 0; i < RUNS; i++)); do
            for name in nftkit-masquerade iptables-legacy-restore iptables-nft-restore nft-f-rules nft-f-set; do
                ns_new "$ns"
                case $name in
                    nftkit-masquerade)
                        # Timed as a user runs it (default log level, no wrapper process).
                        ms=$(timed "$ns" "$NFTKIT" masquerade --once --config-dir "$d/config")
                        # The kernel's share (the batch check and commit inside one sendmsg),
                        # from a second, untimed apply with debug logs in a fresh namespace.
                        ns_del "$ns"
                        ns_new "$ns"
                        timed "$ns" "$NFTKIT" -v --log-format json masquerade --once --config-dir "$d/config" >/dev/null
                        sample 2-masquerade-apply "nftkit: kernel commit alone" "$n" ms "$(log_us "batch sent and acknowledged" commit_us)"
                        ;;
                    iptables-legacy-restore) ms=$(timed "$ns" iptables-legacy-restore --noflush "$d/legacy.rules") ;;
                    iptables-nft-restore) ms=$(timed "$ns" iptables-nft-restore --noflush "$d/legacy.rules") ;;
                    nft-f-rules) ms=$(timed "$ns" nft -f "$d/nft-rules.nft") ;;
                    nft-f-set) ms=$(timed "$ns" nft -f "$d/nft-set.nft") ;;
                esac
                sample 2-masquerade-apply "$name" "$n" ms "$ms"
                ns_del_settled "$ns"
            done
        done
    done
}

# ---- 3: no-op reconcile at 10 000 -------------------------------------------------------
# nft_monitor NS FILE: ruleset events of NS into FILE (one line each); prints the pid.
nft_monitor() {
    ip netns exec "$1" nft monitor >"$2" 2>/dev/null &
    echo $!
}
# resync_times LOG: ms of the last $RUNS no-op resyncs in an nftkit daemon's json LOG.
resync_times() { python3 "$BENCH/resync_times.py" "$1" "$RUNS"; }
w3() {
    local n=10000 d=$W/n10000 i
    nftkit_scripts $n
    log "3: no-op reconcile at $n CIDRs, $RUNS runs"
    # nftkit daemon: resync every second, -v json log; events while it resyncs.
    local ns=${P}w3d
    ns_new "$ns"
    ip netns exec "$ns" "$NFTKIT" -v --log-format json masquerade \
        --config-dir "$d/config" --resync-interval 1 2>"$W/daemon.log" &
    local daemon=$!
    PIDS+=("$daemon")
    for _ in $(seq 300); do grep -q '"applied"' "$W/daemon.log" && break; sleep 0.1; done
    local mon
    mon=$(nft_monitor "$ns" "$W/daemon.events")
    PIDS+=("$mon")
    sleep 0.3
    wait_resyncs() { # wait_resyncs N: until N more in-sync passes are logged
        local c0
        c0=$(grep -c '"in sync; nothing sent"' "$W/daemon.log" || true)
        for _ in $(seq $(($1 * 20 + 50))); do
            [ "$(grep -c '"in sync; nothing sent"' "$W/daemon.log" || true)" -ge $((c0 + $1)) ] && break
            sleep 0.1
        done
    }
    wait_resyncs "$RUNS"
    kill "$mon" 2>/dev/null || true
    wait "$mon" 2>/dev/null || true
    # Then with another program committing in the namespace between resyncs (as
    # kube-proxy does on a node): the ruleset generation moves, so every resync reads
    # the table back in full and compares it.
    local split
    split=$(wc -l <"$W/daemon.log")
    ip netns exec "$ns" bash -c 'while :; do nft add table ip nkb-other; nft delete table ip nkb-other; sleep 0.2; done' &
    local bumper=$!
    PIDS+=("$bumper")
    wait_resyncs "$RUNS"
    kill "$bumper" 2>/dev/null || true
    wait "$bumper" 2>/dev/null || true
    kill -TERM "$daemon" 2>/dev/null || true
    wait "$daemon" 2>/dev/null || true
    head -n "$split" "$W/daemon.log" >"$W/daemon.quiet.log"
    tail -n +"$((split + 1))" "$W/daemon.log" >"$W/daemon.busy.log"
    local kind name
    for kind in quiet busy; do
        resync_times "$W/daemon.$kind.log" >"$W/resync"
        [ -s "$W/resync" ] || { echo "bench.sh: no resync in the daemon log:" >&2; tail "$W/daemon.log" >&2; exit 1; }
        name=nftkit-daemon-resync
        [ $kind = busy ] && name="nftkit-daemon-resync (others committing)"
        while read -r ms; do sample 3-noop-reconcile "$name" $n ms "$ms"; done <"$W/resync"
    done
    local ev
    ev=$(wc -l <"$W/daemon.events")
    sample 3-noop-reconcile nftkit-daemon-resync $n events "$ev"
    ns_del "$ns"

    # Legacy resync and nft replace, interleaved, each namespace with its own monitor.
    local nl=${P}w3l nr=${P}w3r nk=${P}w3k
    ns_new "$nl"; ns_new "$nr"; ns_new "$nk"
    ip netns exec "$nl" iptables-legacy-restore --noflush "$d/legacy.rules"
    ip netns exec "$nr" nft -f "$d/nft-set.nft"
    ip netns exec "$nr" "$NFTKIT" -q masquerade --once --config-dir "$d/config" # nftkit's own table, for verify
    ip netns exec "$nk" "$NFTKIT" -q masquerade --once --config-dir "$d/config" # re-run below, unchanged
    local ml mr mk
    ml=$(nft_monitor "$nl" "$W/legacy.events"); PIDS+=("$ml")
    mr=$(nft_monitor "$nr" "$W/replace.events"); PIDS+=("$mr")
    mk=$(nft_monitor "$nk" "$W/rerun.events"); PIDS+=("$mk")
    sleep 0.3
    for ((i = 0; i < RUNS; i++)); do
        sample 3-noop-reconcile iptables-legacy-resync $n ms "$(timed "$nl" iptables-legacy-restore --noflush "$d/legacy.rules")"
        sample 3-noop-reconcile nft-f-replace $n ms "$(timed "$nr" nft -f "$d/nft-replace.nft")"
        sample 3-noop-reconcile "nftkit verify (one-shot compare)" $n ms "$(timed "$nr" "$NFTKIT" verify masquerade --config-dir "$d/config")"
        # A one-shot apply run again with the same config: compares, sends nothing.
        sample 3-noop-reconcile "nftkit masquerade --once (unchanged re-run)" $n ms "$(timed "$nk" "$NFTKIT" masquerade --once --config-dir "$d/config")"
    done
    sleep 0.3
    kill "$ml" "$mr" "$mk" 2>/dev/null || true
    wait "$ml" "$mr" "$mk" 2>/dev/null || true
    sample 3-noop-reconcile "nftkit masquerade --once (unchanged re-run)" $n events "$(($(grep -c . "$W/rerun.events" || true) / RUNS))"
    ns_del "$nk"
    # Events per resync. Legacy tables are not nf_tables: `nft monitor` cannot see them
    # (it rewrites the whole nat table blob each time, invisible here).
    sample 3-noop-reconcile iptables-legacy-resync $n events "$(($(wc -l <"$W/legacy.events") / RUNS))"
    sample 3-noop-reconcile nft-f-replace $n events "$(($(grep -c . "$W/replace.events" || true) / RUNS))"
    ns_del "$nl"; ns_del "$nr"
}

# ---- 4: datapath ------------------------------------------------------------------------
dp_up() { # client -> router -> server
    local c=$1 r=$2 s=$3
    ns_new "$c"; ns_new "$r"; ns_new "$s"
    dp_links "$c" "$r" "$s"
}
dp_links() { # the links and addresses of dp_up, with an existing router
    local c=$1 r=$2 s=$3
    ip link add vc0 netns "$c" type veth peer name vrc netns "$r"
    ip link add vs0 netns "$s" type veth peer name vrs netns "$r"
    ip -n "$c" addr add 10.99.1.2/24 dev vc0
    ip -n "$r" addr add 10.99.1.1/24 dev vrc
    ip -n "$r" addr add 10.99.2.1/24 dev vrs
    ip -n "$s" addr add 10.99.2.2/24 dev vs0
    ip -n "$c" link set vc0 up; ip -n "$r" link set vrc up; ip -n "$r" link set vrs up; ip -n "$s" link set vs0 up
    ip -n "$c" route add default via 10.99.1.1
    ip netns exec "$r" sysctl -qw net.ipv4.ip_forward=1
    ip netns exec "$c" sysctl -qw net.ipv4.ip_local_port_range="1024 65000"
}
w4() {
    local c=${P}c r=${P}r s=${P}s i n kind
    for n in $DP_SIZES; do gen "$n"; done
    log "4: datapath, N = $DP_SIZES, $RUNS runs x ${DP_SECONDS}s"
    for ((i = 0; i < RUNS; i++)); do
        for n in $DP_SIZES; do
            for kind in nftkit iptables-legacy; do
                dp_up "$c" "$r" "$s"
                if [ $kind = nftkit ]; then
                    ip netns exec "$r" "$NFTKIT" -q masquerade --once --config-dir "$W/n$n/config"
                else
                    ip netns exec "$r" iptables-legacy-restore --noflush "$W/n$n/legacy.rules"
                fi
                ip netns exec "$s" timeout $((DP_SECONDS + 5)) python3 "$BENCH/cps.py" server 10.99.2.2 5001 $((DP_SECONDS + 4)) &
                local srv=$!
                sleep 0.3
                read -r cps fails _ < <(ip netns exec "$c" timeout $((DP_SECONDS + 5)) python3 "$BENCH/cps.py" client 10.99.2.2 5001 "$DP_SECONDS" 2000000)
                kill "$srv" 2>/dev/null || true
                wait "$srv" 2>/dev/null || true
                sample 4-datapath $kind "$n" cps "$cps"
                [ "$fails" = 0 ] || log "  $kind N=$n: $fails failed connects"
                # Masqueraded? The server must have seen the router's address.
                ip netns exec "$s" timeout 10 iperf3 -s -1 -p 5201 >/dev/null 2>&1 &
                srv=$!
                sleep 0.3
                local bps
                bps=$(ip netns exec "$c" timeout 10 iperf3 -c 10.99.2.2 -p 5201 -t "$DP_SECONDS" -J | jq '.end.sum_received.bits_per_second')
                wait "$srv" 2>/dev/null || true
                sample 4-datapath $kind "$n" mbps "$(awk -v b="$bps" 'BEGIN { printf "%.1f", b / 1e6 }')"
                ns_del "$c"; ns_del "$s"; ns_del_settled "$r"
            done
        done
    done
}

# ---- 5: read-back / verify at 10 000 ----------------------------------------------------
w5() {
    local n=10000 d=$W/n10000 i ns=${P}w5
    nftkit_scripts $n
    log "5: read-back at $n CIDRs, $RUNS runs"
    # Two namespaces: with upstream's 10 000 legacy rules next to it, `--backend auto`
    # would rightly pick iptables-legacy for nftkit (CONTRACT.md), which is not this test.
    local nl=${P}w5l
    ns_new "$ns"; ns_new "$nl"
    ip netns exec "$ns" "$NFTKIT" -q masquerade --once --config-dir "$d/config"
    ip netns exec "$nl" iptables-legacy-restore --noflush "$d/legacy.rules"
    for ((i = 0; i < RUNS; i++)); do
        sample 5-readback "nftkit verify masquerade" $n ms "$(timed "$ns" "$NFTKIT" verify masquerade --config-dir "$d/config")"
        # Mostly the kernel's share (its element dump walks the set again every 32 KiB),
        # from a second, untimed verify with debug logs.
        timed "$ns" "$NFTKIT" -v --log-format json verify masquerade --config-dir "$d/config" >/dev/null
        sample 5-readback "nftkit: element dump alone" $n ms "$(log_us "set elements read back" dump_us)"
        sample 5-readback "nftkit status --json" $n ms "$(timed "$ns" "$NFTKIT" status --json)"
        sample 5-readback "nft -j list ruleset" $n ms "$(timed "$ns" nft -j list ruleset)"
        sample 5-readback "iptables-legacy-save" $n ms "$(timed "$nl" iptables-legacy-save)"
    done
    ns_del "$ns"; ns_del "$nl"
}

# ---- 6: footprint -----------------------------------------------------------------------
w6() {
    local n=50000 d=$W/n50000 i ns=${P}w6 name
    nftkit_scripts $n
    log "6: footprint (startup $STARTUP_RUNS runs, RSS at $n CIDRs $RSS_RUNS runs)"
    # The static image binary (scripts/build-image.sh), only if built from the current sources.
    local static
    static=target/x86_64-unknown-linux-musl/release/nftkit
    if [ -f "$static" ] && [ -z "$(find src nft-compat/src Cargo.lock -newer "$static" -print -quit)" ]; then
        sample 6-footprint "binary (static: ${static#target/})" - bytes "$(stat -c %s "$static")"
    else
        log "  no up-to-date static binary (scripts/build-image.sh builds it); its size is not reported"
    fi
    [ "$NFTKIT" -ef "$static" ] || sample 6-footprint "binary (measured: ${NFTKIT#"$PWD"/})" - bytes "$(stat -c %s "$NFTKIT")"
    ns_new "$ns"
    for ((i = 0; i < STARTUP_RUNS; i++)); do
        sample 6-footprint "nftkit --version" - ms "$(timed "$ns" "$NFTKIT" --version)"
        sample 6-footprint "nft --version" - ms "$(timed "$ns" nft --version)"
        sample 6-footprint "iptables-legacy --version" - ms "$(timed "$ns" iptables-legacy --version)"
    done
    ns_del "$ns"
    for ((i = 0; i < RSS_RUNS; i++)); do
        for name in nftkit-masquerade nft-f iptables-legacy-restore iptables-nft-restore; do
            ns_new "$ns"
            case $name in
                nftkit-masquerade) set -- "$NFTKIT" -q masquerade --once --config-dir "$d/config" ;;
                nft-f) set -- nft -f "$d/nft-set.nft" ;;
                iptables-legacy-restore) set -- iptables-legacy-restore --noflush "$d/legacy.rules" ;;
                iptables-nft-restore) set -- iptables-nft-restore --noflush "$d/legacy.rules" ;;
            esac
            ip netns exec "$ns" /usr/bin/time -f %M -o "$W/rss" "$@" >/dev/null
            sample 6-footprint "$name" $n rss_kb "$(tail -1 "$W/rss")"
            ns_del "$ns"
        done
    done
}

started=$(date +%s)
# netpol_wait NS ADDR LOG: until NS's netpol table dispatches ADDR's ingress (at most 20 s;
# LOG is shown if not): ADDR in the verdict map ingress-networkpolicy-v4 (tier chains), or
# the pod chain ingress/bench/server of the layout before them.
netpol_wait() {
    local tries=0
    until ip netns exec "$1" nft list map inet nftkit-netpol ingress-networkpolicy-v4 2>/dev/null | grep -qF "$2 " ||
        ip netns exec "$1" nft list chain inet nftkit-netpol ingress/bench/server >/dev/null 2>&1; do
        tries=$((tries + 1))
        [ $tries -lt 400 ] || { echo "bench.sh: netpol never applied" >&2; cat "$3" >&2; exit 1; }
        sleep 0.05
    done
}
# ---- 7: netpol verdict logging ---------------------------------------------------------
# The client -> router -> server datapath of workload 4, the router a node running
# `nftkit netpol --from-file --watch` with 1 000 pods / 200 policies (bench/netpol_gen.py)
# where the server pod is isolated and admits the client: new TCP connections per second
# with --log-verdicts none, drops and all (all logs every admitted connection, cut by the
# kernel to --log-rate 100/s), next to the router without any rules.
w7() {
    local c=${P}c r=${P}r s=${P}s i mode pid
    local f=$W/netpol-cluster.json
    [ -f "$f" ] || python3 "$BENCH/netpol_gen.py" "$f"
    log "7: netpol cps, 200 policies, logging none/drops/all, $RUNS runs x ${DP_SECONDS}s"
    for ((i = 0; i < RUNS; i++)); do
        for mode in no-rules none drops all; do
            dp_up "$c" "$r" "$s"
            # No masquerade here: the server answers the client's own address.
            ip -n "$s" route add default via 10.99.2.1
            pid=
            if [ $mode != no-rules ]; then
                ip netns exec "$r" "$NFTKIT" -q netpol --node-name node-0 --from-file "$f" --watch \
                    --log-verdicts "$mode" >"$W/w7.log" 2>&1 &
                pid=$!
                PIDS+=("$pid")
                netpol_wait "$r" 10.99.2.2 "$W/w7.log"
            fi
            ip netns exec "$s" timeout $((DP_SECONDS + 5)) python3 "$BENCH/cps.py" server 10.99.2.2 5001 $((DP_SECONDS + 4)) &
            local srv=$!
            sleep 0.3
            read -r cps fails _ < <(ip netns exec "$c" timeout $((DP_SECONDS + 5)) python3 "$BENCH/cps.py" client 10.99.2.2 5001 "$DP_SECONDS" 2000000)
            kill "$srv" 2>/dev/null || true
            wait "$srv" 2>/dev/null || true
            [ "$fails" = 0 ] || log "  netpol $mode: $fails failed connects"
            sample 7-netpol-logging "$mode" 200 cps "$cps"
            if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
            ns_del "$c"; ns_del "$s"; ns_del_settled "$r"
        done
    done
}

# ---- 8: netpol tiers --------------------------------------------------------------------
# 1 000 local pods (all on node-0), 200 NetworkPolicies and 50 ClusterNetworkPolicies
# (bench/netpol_tiers_gen.py; the client and server pods' connections walk the Admin,
# NetworkPolicy and Baseline tiers). (a) one-shot apply in a fresh namespace: nftkit netpol
# vs `nft -f` of its --dry-run vs nftkit --backend iptables-legacy; (c) new TCP conn/s
# through the node with each of them, with nftkit's table of the same pods and no
# policies, and with no rules; (b) pod event -> rules in the
# kernel (bench/netpol_churn.py: rename of the --watch file to the daemon's NEWGEN), set
# elements only vs the whole table replaced (another program commits before each event).
w8() {
    local d=$W/w8 f=$W/w8/cluster.json cnps=50 i name ms
    mkdir -p "$d"
    # An nftkit that refuses ClusterNetworkPolicies, or reads them and builds the same table
    # as without them (parsing before compiling landed), is measured without them (N = 0).
    python3 "$BENCH/netpol_tiers_gen.py" "$d/no-cnp.json" --no-cnp
    "$NFTKIT" -q --dry-run netpol --node-name node-0 --from-file "$d/no-cnp.json" >"$d/no-cnp.nft"
    python3 "$BENCH/netpol_tiers_gen.py" "$f"
    if ! "$NFTKIT" -q --dry-run netpol --node-name node-0 --from-file "$f" >"$d/dry.nft" 2>"$d/dry.err" ||
        cmp -s "$d/dry.nft" "$d/no-cnp.nft"; then
        log "8: this nftkit does not enforce ClusterNetworkPolicies ($(head -c 200 "$d/dry.err" || true)); measuring without them"
        cp "$d/no-cnp.json" "$f"
        cp "$d/no-cnp.nft" "$d/dry.nft"
        cnps=0
    fi
    sample 8-netpol-tiers "nftkit --dry-run (nft -f input)" $cnps lines "$(wc -l <"$d/dry.nft")"
    local ns=${P}w8 legacy_runs=$RUNS at
    log "8a: netpol one-shot apply, 1 000 local pods / 200 NP / $cnps CNP, $RUNS runs"
    for ((i = 0; i < RUNS; i++)); do
        for name in nftkit-netpol nft-f iptables-legacy; do
            [ $name != iptables-legacy ] || [ "$i" -lt "$legacy_runs" ] || continue
            at=$ns
            [ $name != iptables-legacy ] || at=${P}r-iptables-legacy
            ns_new "$at"
            case $name in
                nftkit-netpol) ms=$(timed "$at" "$NFTKIT" -q netpol --node-name node-0 --from-file "$f") ;;
                nft-f)
                    ms=$(timed "$at" nft -f "$d/dry.nft")
                    # nftkit's own share: read, build and print, no kernel.
                    sample 8-netpol-tiers "nftkit --dry-run (no kernel)" $cnps ms "$(timed "$at" "$NFTKIT" -q --dry-run netpol --node-name node-0 --from-file "$f")"
                    ;;
                iptables-legacy)
                    ms=$(timed "$at" "$NFTKIT" -q --backend iptables-legacy netpol --node-name node-0 --from-file "$f")
                    sample 8-netpol-tiers "iptables-legacy rules" $cnps rules "$(ip netns exec "$at" iptables-legacy-save | grep -c '^-A')"
                    ;;
            esac
            sample 8-netpol-tiers "$name" $cnps ms "$ms"
            if [ $name = iptables-legacy ]; then
                # Slower than 20 s: once is enough at this budget (said in the log and n).
                if [ "${ms%.*}" -gt 20000 ] && [ "$legacy_runs" = "$RUNS" ]; then
                    legacy_runs=1
                    log "  iptables-legacy apply took $ms ms: measured once"
                fi
                # The last one stays: (c)'s iptables-legacy router.
                [ "$i" -lt $((legacy_runs - 1)) ] || continue
            fi
            ns_del_settled "$at"
        done
    done

    # One router namespace per mode, set up once (the iptables-legacy one is (a)'s last
    # run, applied there), the client and server namespaces attached anew for every run.
    local c=${P}c s=${P}s mode r
    ns_new "${P}r-no-rules"
    ns_new "${P}r-nftkit"
    ip netns exec "${P}r-nftkit" "$NFTKIT" -q netpol --node-name node-0 --from-file "$f"
    # The same pods without any policy: nftkit's table with nothing to enforce (conntrack
    # and the tier lookups that all miss), the floor the policies' own cost sits on.
    jq '.items |= map(select(.kind != "NetworkPolicy" and .kind != "ClusterNetworkPolicy"))' "$f" >"$d/no-policies.json"
    ns_new "${P}r-nftkit-no-policies"
    ip netns exec "${P}r-nftkit-no-policies" "$NFTKIT" -q netpol --node-name node-0 --from-file "$d/no-policies.json"
    log "8c: netpol cps, $RUNS runs x ${DP_SECONDS}s: no rules, nftkit without and with the policies, iptables-legacy"
    for ((i = 0; i < RUNS; i++)); do
        for mode in no-rules nftkit-no-policies nftkit iptables-legacy; do
            r=${P}r-$mode
            ns_new "$c"; ns_new "$s"
            dp_links "$c" "$r" "$s"
            ip -n "$s" route add default via 10.99.2.1
            ip netns exec "$s" timeout $((DP_SECONDS + 5)) python3 "$BENCH/cps.py" server 10.99.2.2 5001 $((DP_SECONDS + 4)) &
            local srv=$!
            sleep 0.3
            read -r cps fails hs < <(ip netns exec "$c" timeout $((DP_SECONDS + 5)) python3 "$BENCH/cps.py" client 10.99.2.2 5001 "$DP_SECONDS" 2000000)
            kill "$srv" 2>/dev/null || true
            wait "$srv" 2>/dev/null || true
            [ "$fails" = 0 ] || log "  netpol $mode: $fails failed connects"
            sample 8-netpol-tiers "cps: $mode" $cnps cps "$cps"
            sample 8-netpol-tiers "cps: $mode" $cnps hs "$hs"
            ns_del "$c"; ns_del_settled "$s"
        done
    done
    for mode in no-rules nftkit-no-policies nftkit iptables-legacy; do ns_del "${P}r-$mode"; done

    log "8b: pod event -> kernel, $W8_EVENTS events incremental, $W8_WHOLE_EVENTS whole-table"
    ns_new "$ns"
    cp "$f" "$d/watched.json"
    ip netns exec "$ns" "$NFTKIT" --log-format json netpol --node-name node-0 \
        --from-file "$d/watched.json" --watch --debounce 10ms --resync-interval 1h 2>"$d/daemon.log" &
    local daemon=$!
    PIDS+=("$daemon")
    local tries=0
    until grep -q '"netpol table updated' "$d/daemon.log"; do
        tries=$((tries + 1))
        [ $tries -lt 1200 ] && kill -0 "$daemon" 2>/dev/null || { echo "bench.sh: the netpol daemon never applied" >&2; cat "$d/daemon.log" >&2; exit 1; }
        sleep 0.05
    done
    local kind split events lat what
    for mode in delta whole; do
        events=$W8_EVENTS
        [ $mode = delta ] || events=$W8_WHOLE_EVENTS
        split=$(wc -l <"$d/daemon.log")
        timeout $((events * 20 + 30)) ip netns exec "$ns" python3 "$BENCH/netpol_churn.py" "$f" "$d/watched.json" \
            "$events" $mode "$daemon" "$d/churn-$mode.tsv"
        sleep 0.5 # the daemon's log line after the commit
        what=incremental
        [ $mode = delta ] || what=whole-table
        while read -r kind lat; do
            [ "$kind" != lost ] || { log "  $mode: an event never reached the kernel (15 s)"; continue; }
            sample 8-netpol-tiers "event->kernel: $what" $cnps ms "$lat"
        done <"$d/churn-$mode.tsv"
        # Which path the daemon took, and its own time (counters read, batch, read-back).
        tail -n +"$((split + 1))" "$d/daemon.log" >"$d/daemon-$mode.log"
        python3 "$BENCH/netpol_update_times.py" "$d/daemon-$mode.log" >"$d/paths-$mode.tsv"
        sample 8-netpol-tiers "$what run: element-only updates" $cnps events "$(grep -c '^elements' "$d/paths-$mode.tsv" || true)"
        sample 8-netpol-tiers "$what run: whole-table updates" $cnps events "$(grep -c '^whole' "$d/paths-$mode.tsv" || true)"
        local read_ms path
        while read -r kind ms read_ms; do
            path=$([ "$kind" = elements ] && echo "elements only" || echo "whole table")
            sample 8-netpol-tiers "daemon apply: $path" $cnps ms "$ms"
            sample 8-netpol-tiers "daemon read->updated: $path" $cnps ms "$read_ms"
        done <"$d/paths-$mode.tsv"
    done
    kill -TERM "$daemon" 2>/dev/null || true
    wait "$daemon" 2>/dev/null || true
    ns_del "$ns"
}

for w in $ONLY; do "w$w"; done

stamp=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p bench/results
if [ "$REFERENCE" = 1 ]; then
    out=bench/results/reference-$(date -u +%F).json
else
    out=bench/results/bench-$stamp.json
fi
jq -n --arg date "$(date -u +%FT%TZ)" --arg kernel "$(uname -r)" --arg nft "$(nft --version)" \
    --arg iptables "$(iptables-legacy --version) / $(iptables-nft --version)" \
    --arg nftkit "$("$NFTKIT" --version) ($(readelf -l "$NFTKIT" 2>/dev/null | grep -q 'program interpreter' && echo dynamically linked || echo static))" --arg cpu "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')" \
    --arg cores "$(nproc)" --arg load "$(cut -d' ' -f1-3 /proc/loadavg)" --argjson runs "$RUNS" \
    --argjson quick "$QUICK" --argjson seconds "$(($(date +%s) - started))" --arg workloads "$ONLY" \
    '{date: $date, kernel: $kernel, nft: $nft, iptables: $iptables, nftkit: $nftkit, cpu: $cpu,
      cores: $cores, load: $load, runs: $runs, quick: ($quick == 1), wall_seconds: $seconds,
      workloads: $workloads}' >"$W/meta.json"
python3 "$BENCH/report.py" "$SAMPLES" "$W/meta.json" "$out"
