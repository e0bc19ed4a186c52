#!/usr/bin/env bash
# Berth's soak benchmark: CLIENTS (default 200) concurrent clients mix
# pushes, pulls, tag lists and deletes against one Berth for SECONDS
# (default 600), with one SIGKILL and restart half-way; then every
# acknowledged write is read back and checked. Each minute it prints
# operations, errors, and the server's RSS and open file descriptors.
#
# Usage: bench/soak.sh [SECONDS]      (env: CLIENTS, PROFILE=release|dev, REPORT_SECS, KEEP=1)
# Loopback only; bounded in time (each request has a deadline, the whole
# run SECONDS plus at most 15 minutes of verification). Exits non-zero if
# any error is not explained by the restart or any read-back fails.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-600}
CLIENTS=${CLIENTS:-200}
PROFILE=${PROFILE:-release}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/berth/target}"
if [ "$PROFILE" = release ]; then
  cargo build --release -q -p berth-server -p berth-bench
  BIN="$CARGO_TARGET_DIR/release"
else
  cargo build -q -p berth-server -p berth-bench
  BIN="$CARGO_TARGET_DIR/debug"
fi
BERTH="$BIN/berth"
BB="$BIN/berth-bench"

W=$(mktemp -d /tmp/berth-soak.XXXXXX)
PID=""
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
URL="http://127.0.0.1:$PORT"
# GC and its grace delay short enough to run several times during the soak.
cat > "$W/config.json" <<JSON
{
  "storage": {"rootDirectory": "$W/data", "gc": true, "gcDelay": "2m", "gcInterval": "1m"},
  "http": {"address": "127.0.0.1", "port": "$PORT"},
  "log": {"level": "warn", "output": "$W/berth.log"}
}
JSON

start_berth() {
  "$BERTH" serve "$W/config.json" >> "$W/berth.out" 2>&1 &
  PID=$!
  echo "$PID" > "$W/berth.pid"
  "$BB" wait-ready --url "$URL/v2/" --timeout-secs 120 > /dev/null
}

now_ms() { date +%s%3N; }
start_berth
echo "soak: $CLIENTS clients for ${DURATION}s against $URL ($PROFILE build), one SIGKILL at $((DURATION / 2))s"
timeout $((DURATION + 900)) "$BB" soak --base "$URL" --clients "$CLIENTS" --seconds "$DURATION" \
  --restart-file "$W/restarts" --pid-file "$W/berth.pid" --report-secs "${REPORT_SECS:-60}" &
SOAK=$!

sleep $((DURATION / 2))
KILL_MS=$(now_ms)
kill -KILL "$PID"
wait "$PID" 2>/dev/null || true
start_berth
READY_MS=$(now_ms)
echo "$KILL_MS $READY_MS" >> "$W/restarts"
echo "{\"restart\": {\"killed_at_s\": $((DURATION / 2)), \"down_ms\": $((READY_MS - KILL_MS))}}"

RC=0
wait "$SOAK" || RC=$?
PANICS=$(cat "$W/berth.out" "$W/berth.log" 2>/dev/null | grep -ci 'panicked' || true)
ERRORS=$(cat "$W/berth.log" 2>/dev/null | grep -c 'ERROR' || true)
echo "{\"server\": {\"panics\": ${PANICS:-0}, \"error_log_lines\": ${ERRORS:-0}, \"store_kib\": $(du -sk "$W/data" | cut -f1)}}"
[ "${PANICS:-0}" = 0 ] || RC=1
exit "$RC"
