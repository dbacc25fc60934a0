#!/usr/bin/env bash
# Build the static nftkit binaries (musl, x86_64 and aarch64, release) and the multi-arch
# FROM-scratch image (an OCI image index with linux/amd64 and linux/arm64) from
# Containerfile, tagged with Cargo.toml's version.
#
#   scripts/build-image.sh                              # binaries + image + dist/nftkit-<version>.oci.tar
#   scripts/build-image.sh --push registry.example/nftkit   # ... and push <name>:<version>
#   scripts/build-image.sh --binaries-only              # only dist/bin/linux-{amd64,arm64}/nftkit
#   scripts/build-image.sh --glibc                      # fallback, see below
#
# Installs what it needs when missing (as root on Debian): the two rustup targets,
# musl-tools (musl-gcc: ring compiles C for x86_64 musl), buildah, the PyPI
# package ziglang and cargo-zigbuild (zig is the aarch64 C compiler and linker, with its
# own musl headers), and cargo-auditable (the dependency list is embedded in each binary,
# section .dep-v0, for image scanners).
#
# --glibc: when the musl targets cannot be installed (no rustup, offline), build an
# x86_64 glibc binary with crt-static instead and an amd64-only image. Name resolution
# (redirect's TO_DOMAIN) in such a binary still reads /etc/hosts and /etc/resolv.conf,
# but glibc's static NSS is a compromise; prefer the musl build.
#
# Output: dist/bin/linux-<arch>/nftkit, dist/nftkit-<version>.oci.tar (oci-archive, tag
# <version>), the local image nftkit:<version>, and the binary sizes. STORAGE_DRIVER
# (default vfs, which works in VMs and nested containers) is passed to buildah.
set -euo pipefail
cd "$(dirname "$0")/.."

PUSH= GLIBC=0 BINARIES_ONLY=0
while [ $# -gt 0 ]; do
    case $1 in
        --push) PUSH=${2:?--push needs REGISTRY/NAME}; shift ;;
        --glibc) GLIBC=1 ;;
        --binaries-only) BINARIES_ONLY=1 ;;
        -h | --help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "build-image.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

version=$(awk -F'"' '/^\[package\]/ { p = 1 } p && /^version *=/ { print $2; exit }' Cargo.toml)
[ -n "$version" ] || { echo "build-image.sh: no version in Cargo.toml" >&2; exit 1; }
image=nftkit:$version
archive=dist/nftkit-$version.oci.tar
storage=(--storage-driver "${STORAGE_DRIVER:-vfs}")

apt_install() { # apt_install PACKAGE...: install the Debian packages when root and apt exist
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing $*" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" ||
            { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"; }
    else
        echo "build-image.sh: missing $* (install it, or run as root on Debian)" >&2
        return 1
    fi
}
need_cargo_tool() { # need_cargo_tool BINARY CRATE
    command -v "$1" >/dev/null 2>&1 || cargo install --locked "$2"
}

# Tools. The musl targets come from rustup; without them, fall back to --glibc.
if [ "$GLIBC" = 0 ]; then
    if ! rustup target add x86_64-unknown-linux-musl aarch64-unknown-linux-musl; then
        echo "build-image.sh: cannot install the musl targets; building the glibc fallback (--glibc)" >&2
        GLIBC=1
    fi
fi
need_cargo_tool cargo-auditable cargo-auditable
if [ "$GLIBC" = 0 ]; then
    command -v musl-gcc >/dev/null 2>&1 || apt_install musl-tools
    # zig from PyPI (python3 -m ziglang), which cargo-zigbuild finds by itself.
    command -v zig >/dev/null 2>&1 || python3 -c 'import ziglang' 2>/dev/null ||
        python3 -m pip install --quiet ziglang
    need_cargo_tool cargo-zigbuild cargo-zigbuild
fi
if [ "$BINARIES_ONLY" = 0 ]; then
    command -v buildah >/dev/null 2>&1 || apt_install buildah
fi

# Binaries, staged where Containerfile takes them: dist/bin/linux-$TARGETARCH/nftkit.
rm -rf dist/bin
mkdir -p dist/bin/linux-amd64 dist/bin/linux-arm64
if [ "$GLIBC" = 1 ]; then
    RUSTFLAGS="-C target-feature=+crt-static" cargo auditable build --release \
        --target x86_64-unknown-linux-gnu --bin nftkit
    cp target/x86_64-unknown-linux-gnu/release/nftkit dist/bin/linux-amd64/nftkit
    platforms=(linux/amd64)
else
    CC_x86_64_unknown_linux_musl=musl-gcc cargo auditable build --release \
        --target x86_64-unknown-linux-musl --bin nftkit
    cargo auditable zigbuild --release --target aarch64-unknown-linux-musl --bin nftkit
    cp target/x86_64-unknown-linux-musl/release/nftkit dist/bin/linux-amd64/nftkit
    cp target/aarch64-unknown-linux-musl/release/nftkit dist/bin/linux-arm64/nftkit
    platforms=(linux/amd64 linux/arm64)
fi
for p in "${platforms[@]}"; do
    bin=dist/bin/${p/\//-}/nftkit
    # A static binary has no program interpreter (PT_INTERP) to name.
    if LC_ALL=C readelf -l "$bin" | grep -q "Requesting program interpreter"; then
        echo "build-image.sh: $bin is dynamically linked" >&2
        exit 1
    fi
    size=$(stat -c %s "$bin")
    awk -v p="$p" -v b="$bin" -v s="$size" 'BEGIN { printf "%-12s %s  %d bytes (%.2f MiB), static\n", p, b, s, s / 1048576 }'
done
[ "$BINARIES_ONLY" = 1 ] && exit 0

# The image index: one FROM-scratch image per platform (no RUN, so no emulation needed).
# A previous run's list (or an image) of the same name goes first.
buildah "${storage[@]}" manifest rm "$image" >/dev/null 2>&1 || true
buildah "${storage[@]}" rmi -f "$image" >/dev/null 2>&1 || true
buildah "${storage[@]}" manifest create "$image" >/dev/null
for p in "${platforms[@]}"; do
    buildah "${storage[@]}" bud --quiet --platform "$p" --manifest "$image" \
        -f Containerfile -t "$image-${p#linux/}" .
done
buildah "${storage[@]}" manifest inspect "$image" |
    jq -r '"index \(.mediaType // "")", (.manifests[] | "  \(.platform.os)/\(.platform.architecture)  \(.digest)  \(.size) bytes")'
mkdir -p dist
rm -f "$archive"
buildah "${storage[@]}" manifest push --all --format oci "$image" "oci-archive:$archive:$version"
printf 'archive      %s  %d bytes\n' "$archive" "$(stat -c %s "$archive")"
if [ -n "$PUSH" ]; then
    # REGISTRY/NAME, or a destination with its transport (oci:DIR, dir:DIR, ...).
    # TLS_VERIFY=false only for a plain-http test registry.
    dest=$PUSH
    case $dest in
        docker://* | oci:* | oci-archive:* | dir:* | docker-archive:* | containers-storage:*) ;;
        *) dest=docker://$dest ;;
    esac
    buildah "${storage[@]}" manifest push --all --format oci --tls-verify="${TLS_VERIFY:-true}" \
        "$image" "$dest:$version"
    echo "pushed       $dest:$version"
fi
