#!/usr/bin/env bash
# Where a push's server CPU goes: perf samples (cpu-clock, with call
# graphs) of Berth while one client pushes a blob, as a text report.
# Usage: bench/profile-push.sh OUT.txt [fresh|stored] [sendfile|pieces] [CHUNK_BYTES] [SIZE_MIB]
#   fresh: new content; stored: the same content pushed before to another
#   repository. CHUNK_BYTES 0 (default) pushes in one PUT.
# Env: BERTH (the binary; default: the release build), SKIP_BUILD=1.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$1 KIND=${2:-fresh} WRITER=${3:-sendfile} CHUNK=${4:-0} SIZE_MIB=${5:-1024}
command -v perf >/dev/null || { apt-get update -qq && apt-get install -y -qq linux-perf >/dev/null; }
. bench/lib.sh
BERTH=${BERTH_BIN:-$BERTH}
start_registry berth "$W/data"
head -c $((SIZE_MIB * 1048576)) /dev/urandom > "$W/big"
D="sha256:$(openssl dgst -sha256 -r "$W/big" | cut -d' ' -f1)"
push() { "$BB" push-file --base "$URL" --repo "$1" --file "$W/big" --digest "$D" --writer "$WRITER" --chunk "$CHUNK"; }
[ "$KIND" = stored ] && push bench/first > /dev/null
sync
perf record -F 999 -e cpu-clock -g -p "$PID" -o "$W/perf.data" 2> /dev/null & REC=$!
sleep 0.5
c0=$(cpu_ticks "$PID")
secs=$(push bench/second | sed 's/.*"seconds":\([0-9.e-]*\).*/\1/')
cpu=$(echo "scale=2; ($(cpu_ticks "$PID") - c0) / $TICK" | bc)
sleep 0.3; kill -INT "$REC"; wait "$REC" || true
{ set +o pipefail
  echo "# $KIND ${SIZE_MIB} MiB push, $WRITER client, chunk ${CHUNK}: ${secs} s, server CPU ${cpu} s while profiled ($(date -u +%Y-%m-%d), $("$BERTH" --version 2>/dev/null | head -1))"
  echo "## Symbols (self time)"
  perf report -i "$W/perf.data" --no-children --sort sym --stdio 2> /dev/null | grep -E '^ +[0-9]' | head -40
  echo "## Call graphs of the top symbols"
  perf report -i "$W/perf.data" --no-children --sort sym --percent-limit 2 -g caller,1,callee,function,percent --stdio 2> /dev/null | grep -v '^$' | grep -v '^#' | head -400
} > "$OUT"
stop_registry
echo "$OUT: $secs s, $cpu s CPU" >&2
