#!/usr/bin/env bash
# The whole test suite, on a fresh machine or a warm one:
# installs the real clients the tests drive, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
# One target directory outside the clone, reused across runs on this machine.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/berth/target}"
cargo test --workspace --locked "$@"
