#!/usr/bin/env bash
# A two-minute tour of `nftkit redirect` in throw-away network namespaces.
#
#   scripts/demo.sh            # debug build
#   scripts/demo.sh --release  # release build
#
# Builds nftkit, creates a "pod" namespace and a "remote" namespace joined by a
# veth, starts a local proxy listener on 127.0.0.1:10080 in the pod and a web
# server at 198.51.100.7:80 on the remote, shows the dry-run ruleset, applies
# it, and shows a connection from uid 1001 landing on the proxy while uid 1010
# (the proxy's own uid) reaches the remote. Everything is removed on exit.
# Needs root; installs socat/iproute2/nftables/util-linux if missing (apt-get).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "demo.sh needs root (network namespaces, nf_tables): sudo $0 $*" >&2
    exit 1
fi

declare -A pkg_for=([nft]=nftables [ip]=iproute2 [socat]=socat [setpriv]=util-linux [timeout]=coreutils)
missing=()
for cmd in nft ip socat setpriv timeout; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("${pkg_for[$cmd]}")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing missing packages: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"
fi

profile=debug
if [ "${1:-}" = "--release" ]; then
    profile=release
    cargo build --release --bin nftkit
else
    cargo build --bin nftkit
fi
NFTKIT="$PWD/target/$profile/nftkit"

POD="nkdemo-pod-$$"
REMOTE="nkdemo-rem-$$"
pids=()
cleanup() {
    set +e
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    ip netns del "$POD" 2>/dev/null
    ip netns del "$REMOTE" 2>/dev/null
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }

step "network: pod 198.51.100.1 <-veth-> remote 198.51.100.7 (and 2001:db8::1 / ::7)"
ip netns add "$POD"
ip netns add "$REMOTE"
ip -n "$POD" link set lo up
ip -n "$REMOTE" link set lo up
ip -n "$POD" link add eth0 type veth peer name eth0 netns "$REMOTE"
ip -n "$POD" addr add 198.51.100.1/24 dev eth0
ip -n "$POD" -6 addr add 2001:db8::1/64 dev eth0 nodad
ip -n "$REMOTE" addr add 198.51.100.7/24 dev eth0
ip -n "$REMOTE" -6 addr add 2001:db8::7/64 dev eth0 nodad
ip -n "$POD" link set eth0 up
ip -n "$REMOTE" link set eth0 up
echo "pod namespace: $POD, remote namespace: $REMOTE"

step "servers: proxy on 127.0.0.1:10080 in the pod, web server on 198.51.100.7:80"
ip netns exec "$POD" socat TCP-LISTEN:10080,bind=127.0.0.1,reuseaddr,fork \
    SYSTEM:'echo hello from the local proxy on 127.0.0.1 port 10080' &
pids+=($!)
ip netns exec "$REMOTE" socat TCP-LISTEN:80,bind=198.51.100.7,reuseaddr,fork \
    SYSTEM:'echo hello from the remote 198.51.100.7 port 80' &
pids+=($!)
for _ in $(seq 50); do
    if ip netns exec "$POD" ss -Hltn 'sport = :10080' | grep -q . &&
        ip netns exec "$REMOTE" ss -Hltn 'sport = :80' | grep -q .; then
        break
    fi
    sleep 0.1
done

# connect NS UID GID HOST PORT: one TCP connection as uid/gid, prints the answer
connect() {
    ip netns exec "$1" setpriv --reuid "$2" --regid "$3" --clear-groups \
        timeout 5 socat -T3 - "TCP4:$4:$5,connect-timeout=3" </dev/null || echo "(connection failed)"
}

step "before nftkit: uid 1001 -> 198.51.100.7:80"
connect "$POD" 1001 1001 198.51.100.7 80

step "what nftkit would program (dry run: no kernel change, no privileges needed)"
show "$NFTKIT" --dry-run redirect

step "apply in the pod namespace (defaults: ACCEPT_UIDS=1010 PORT_MAPPING=10080:80,10443:443)"
show ip netns exec "$POD" "$NFTKIT" redirect

step "the pod's ruleset"
show ip netns exec "$POD" nft list ruleset

step "uid 1001 -> 198.51.100.7:80 (redirected to the proxy)"
a=$(connect "$POD" 1001 1001 198.51.100.7 80)
echo "$a"
step "uid 1010 -> 198.51.100.7:80 (the proxy's uid is exempt: reaches the remote)"
b=$(connect "$POD" 1010 1010 198.51.100.7 80)
echo "$b"

step "verify, re-apply (idempotent), status, delete"
show ip netns exec "$POD" "$NFTKIT" verify redirect
show ip netns exec "$POD" "$NFTKIT" redirect
show ip netns exec "$POD" "$NFTKIT" status
show ip netns exec "$POD" "$NFTKIT" delete redirect
show ip netns exec "$POD" nft list ruleset

step "result"
ok=0
case "$a" in *"local proxy"*) echo "OK   uid 1001 was redirected to 127.0.0.1:10080" ;; *) echo "FAIL uid 1001: $a"; ok=1 ;; esac
case "$b" in *"remote"*) echo "OK   uid 1010 reached 198.51.100.7:80" ;; *) echo "FAIL uid 1010: $b"; ok=1 ;; esac
exit "$ok"
