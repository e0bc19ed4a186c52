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

# The server's integration suite again, every server three replicas of one
# configuration on the store replicas share (S3 on a real Garage, state in
# a real PostgreSQL; the harness starts both), behind a round-robin
# balancer in the test process: each request goes to the next replica.
# Tests of what belongs to one process (its connections, TLS, counters,
# rate limits, token and miss caches) start one replica. Left out: the tests of the filesystem store's own promises
# (directory fsyncs, page-cache bypass, a full disk, corruption planted in
# files, open file descriptors), which that store does not make.
fs_only_files="durability push_io scrub"
fs_only_tests="a_full_disk_is_said_plainly_and_loses_nothing a_download_nobody_reads_is_cut_and_releases_its_descriptors"
targets=()
for f in crates/server/tests/*.rs; do
  name=$(basename "$f" .rs)
  case " $fs_only_files " in *" $name "*) continue ;; esac
  targets+=(--test "$name")
done
skips=()
for t in $fs_only_tests; do skips+=(--skip "$t"); done
BERTH_TEST_STORE=shared BERTH_TEST_REPLICAS=3 cargo test -p berth-server --locked "${targets[@]}" "$@" -- "${skips[@]}"
