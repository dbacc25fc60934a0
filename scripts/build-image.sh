#!/usr/bin/env bash
# Build a static nftkit (glibc, crt-static: this toolchain has no musl target installed)
# and, when podman or buildah is available, the FROM-scratch image in Containerfile.
set -euo pipefail
cd "$(dirname "$0")/.."
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --target x86_64-unknown-linux-gnu --bin nftkit
bin=target/x86_64-unknown-linux-gnu/release/nftkit
ls -l "$bin"
if ldd "$bin" 2>&1 | grep -q "not a dynamic executable\|statically linked"; then
    echo "static: yes"
else
    echo "error: $bin is dynamically linked" >&2
    exit 1
fi
tag=${1:-nftkit:dev}
if command -v podman >/dev/null 2>&1; then
    podman build -f Containerfile -t "$tag" .
elif command -v buildah >/dev/null 2>&1; then
    # vfs works on hosts without overlay support (VMs, nested containers).
    buildah bud --storage-driver "${STORAGE_DRIVER:-vfs}" -f Containerfile -t "$tag" .
    buildah --storage-driver "${STORAGE_DRIVER:-vfs}" images "$tag"
else
    echo "podman/buildah not installed: binary built, image not built" >&2
fi
