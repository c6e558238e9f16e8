#!/usr/bin/env bash
# Runs every check and test Weft has: formatting, lints, unit tests and the end-to-end
# tests that start real `weft` processes. Needs only the Rust toolchain; anything else a
# test needs is installed here first (nothing yet beyond cargo's own downloads).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test (unit and end-to-end)"
cargo test --workspace --locked
