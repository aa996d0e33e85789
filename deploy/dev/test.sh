#!/usr/bin/env bash
# Runs the whole test suite: every crate's unit, property and integration
# tests, the interop tests against real SIPp/baresip/kamailio on loopback, and
# a build of the cargo-fuzz targets. Installs missing packages first.
#
# With VOICEGATE_REQUIRE_PEERS=1 (CI sets it) a test that would skip for a
# missing tool fails instead.
set -euo pipefail
cd "$(dirname "$0")/../.."
deploy/dev/setup.sh
cargo test --workspace --all-targets
cargo test --workspace --doc
# The fuzz targets are their own workspace; build them so they keep compiling
# (running them needs nightly: see crates/sip/fuzz/Cargo.toml).
for fuzz in crates/sip/fuzz crates/media/fuzz; do
  CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}" \
    cargo build --manifest-path "$fuzz/Cargo.toml"
done
echo "test.sh: all tests passed"
