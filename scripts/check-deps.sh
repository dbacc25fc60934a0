#!/usr/bin/env bash
# Checks the dependency graph with cargo-deny against deny.toml:
#   licenses  every crate's licence is one of the permissive ones deny.toml allows
#             (ring: Apache-2.0 AND ISC);
#   bans      crates present in several versions are reported as warnings.
# Installs cargo-deny (cargo install) when it is missing. Not run by CI; run it when
# Cargo.lock changes.
#
#   scripts/check-deps.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deny >/dev/null 2>&1 || cargo install --locked cargo-deny
cargo deny check licenses bans
