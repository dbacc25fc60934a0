#!/usr/bin/env bash
# Builds everything and runs every test, including the end-to-end tests that
# create network namespaces and program nf_tables (they need root).
#
#   scripts/test.sh                 # all tests
#   scripts/test.sh e2e_redirect::  # extra arguments go to the test harness (filters)
#
# Integration tests are two binaries: tests/netns (needs root) and tests/it (no
# root); a filter matches module paths, so `e2e_redirect::` selects the tests of
# tests/netns/e2e_redirect.rs.
#
# Missing tools (nft, iptables, ip, socat, conntrack, setpriv, jq, musl-gcc,
# qemu-aarch64-static) are installed with apt-get when running as root on Debian/Ubuntu;
# the image's static binaries (tests/netns/static_binary.rs, tests/netns/cross_aarch64.rs) also need
# the two musl rustup targets, zig (PyPI ziglang) and cargo-zigbuild, installed below.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "warning: not running as root; the end-to-end tests (network namespaces, nf_tables) will fail." >&2
    echo "warning: run as root, e.g. sudo -E scripts/test.sh" >&2
fi

# command -> Debian package providing it
declare -A pkg_for=(
    [nft]=nftables
    [iptables]=iptables
    [ip]=iproute2
    [socat]=socat
    [conntrack]=conntrack
    [setpriv]=util-linux
    [jq]=jq
    [sysctl]=procps
    [unshare]=util-linux
    [musl-gcc]=musl-tools
    [qemu-aarch64-static]=qemu-user-static
)
missing=()
for cmd in nft iptables ip socat conntrack setpriv jq sysctl unshare musl-gcc qemu-aarch64-static; do
    if ! command -v "$cmd" >/dev/null 2>&1; then
        missing+=("${pkg_for[$cmd]}")
    fi
done
# GNU time (not the shell keyword) measures peak RSS in the reliability tests.
[ -x /usr/bin/time ] || missing+=(time)
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing missing packages: ${missing[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update
        apt-get install -y --no-install-recommends "${missing[@]}"
    else
        echo "warning: missing packages (${missing[*]}) and cannot install them (need root and apt-get)" >&2
    fi
fi

# The static binaries' toolchains: musl targets (x86_64: C by musl-gcc; aarch64: zig as
# C compiler and linker, through cargo-zigbuild), as scripts/build-image.sh uses them.
rustup target add x86_64-unknown-linux-musl aarch64-unknown-linux-musl
python3 -c 'import ziglang' 2>/dev/null || command -v zig >/dev/null 2>&1 ||
    python3 -m pip install --quiet ziglang ||
    python3 -m pip install --quiet --break-system-packages ziglang # Debian's own python3 (PEP 668)
command -v cargo-zigbuild >/dev/null 2>&1 || cargo install --locked cargo-zigbuild

cargo build --workspace --all-targets
# --include-ignored: nothing is skipped here (CI runs as root).
# Property tests: 10 000 cases each in CI (see tests/it/proptest_*.rs).
export PROPTEST_CASES=${PROPTEST_CASES:-10000}
cargo test --workspace --no-fail-fast -- --test-threads=2 --include-ignored "$@"
