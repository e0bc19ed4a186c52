#!/usr/bin/env bash
# The whole test suite, on a fresh machine or a warm one:
# installs the real clients the tests drive, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
# One target directory outside the clone, reused across runs on this machine.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/berth/target}"
# What review would ask for is checked, not hoped for: formatting, and
# clippy with warnings as errors (unwrap denied outside tests, see each
# crate's root).
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked "$@"
