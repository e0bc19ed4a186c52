#!/usr/bin/env bash
# Slow, silent and greedy clients against Berth (issue 9, item 4).
# Starts Berth on loopback under an open-file limit, measures a normal
# client's manifest GETs on the idle server, then again while SILENT silent
# sockets, UPLOADS uploads sending a byte every 2 s and DOWNLOADS downloads
# reading 1 KiB every 2 s are open; samples the server's open descriptors
# every few seconds. Everything is bounded in count and time.
# Usage: bench/slow-clients.sh   (env: SILENT UPLOADS DOWNLOADS SECS NOFILE
#                                  READ_TIMEOUT WRITE_TIMEOUT REQUESTS;
#                                  SKIP_BUILD=1 uses the binaries built;
#                                  ATTACK_CPU=1 SERVER_CPUS=0 pin the attack
#                                  tool and Berth plus the measuring client
#                                  to separate cores, to tell the server's
#                                  cost from the attack tool's)
set -euo pipefail
cd "$(dirname "$0")/.."
SILENT=${SILENT:-1000}
UPLOADS=${UPLOADS:-300}
DOWNLOADS=${DOWNLOADS:-300}
SECS=${SECS:-40}
NOFILE=${NOFILE:-1024}
READ_TIMEOUT=${READ_TIMEOUT:-10s}
WRITE_TIMEOUT=${WRITE_TIMEOUT:-10s}
REQUESTS=${REQUESTS:-2000}

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/berth/target}"
[ -n "${SKIP_BUILD:-}" ] || cargo build --release -q -p berth-server -p berth-bench
BERTH="$CARGO_TARGET_DIR/release/berth"
BB="$CARGO_TARGET_DIR/release/berth-bench"
SLOW="$CARGO_TARGET_DIR/release/slow-clients"

W=$(mktemp -d /tmp/berth-slow.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
URL="http://127.0.0.1:$port"
printf '{"storage":{"rootDirectory":"%s/data"},"http":{"address":"127.0.0.1","port":"%s","readTimeout":"%s","writeTimeout":"%s"},"log":{"level":"info","output":"%s/berth.log"}}' \
  "$W" "$port" "$READ_TIMEOUT" "$WRITE_TIMEOUT" "$W" > "$W/berth.json"
# The client side needs room for its own sockets.
need=$((SILENT + UPLOADS + DOWNLOADS + 1024))
ulimit -n $((need > NOFILE ? need : NOFILE))
pin() { # cpus command... : runs the command on those cores when asked (always in a subshell: it execs)
  local cpus=$1; shift
  if [ -n "$cpus" ]; then exec taskset -c "$cpus" "$@"; else exec "$@"; fi
}
pin "${SERVER_CPUS:-}" prlimit --nofile="$NOFILE:$NOFILE" "$BERTH" serve "$W/berth.json" > /dev/null &
PID=$!
PIDS+=("$PID")
"$BB" wait-ready --url "$URL/v2/" > /dev/null
fds() { ls "/proc/$PID/fd" | wc -l; }

# Seed: a 16 MiB layer, a config and a manifest.
head -c $((16 << 20)) /dev/urandom > "$W/layer"
echo '{"architecture":"amd64","os":"linux"}' > "$W/config"
push() { # repo file -> digest
  local d loc
  d="sha256:$(sha256sum "$2" | cut -d' ' -f1)"
  loc=$(curl -s -D - -o /dev/null -X POST "$URL/v2/$1/blobs/uploads/" | tr -d '\r' | awk 'tolower($1)=="location:" {print $2}')
  case "$loc" in http*) ;; *) loc="$URL$loc" ;; esac
  case "$loc" in *\?*) loc="$loc&digest=$d" ;; *) loc="$loc?digest=$d" ;; esac
  curl -sf -o /dev/null -X PUT -H 'Expect:' -H 'Content-Type: application/octet-stream' -T "$2" "$loc"
  echo "$d"
}
LAYER=$(push bench/app "$W/layer")
CONFIG=$(push bench/app "$W/config")
MT=application/vnd.oci.image.manifest.v1+json
printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%s}]}' \
  "$MT" "$CONFIG" "$(stat -c %s "$W/config")" "$LAYER" "$(stat -c %s "$W/layer")" > "$W/manifest"
curl -sf -o /dev/null -X PUT -H "Content-Type: $MT" --data-binary @"$W/manifest" "$URL/v2/bench/app/manifests/v1"
MANIFEST="$URL/v2/bench/app/manifests/v1"

echo "Berth pid $PID, open-file limit $NOFILE, readTimeout $READ_TIMEOUT, writeTimeout $WRITE_TIMEOUT"
echo "idle: open fds $(fds)"
IDLE=$(pin "${SERVER_CPUS:-}" "$BB" latency --url "$MANIFEST" --requests "$REQUESTS")
echo "idle: $IDLE"

pin "${ATTACK_CPU:-}" "$SLOW" --addr "127.0.0.1:$port" --silent "$SILENT" --uploads "$UPLOADS" --downloads "$DOWNLOADS" \
  --blob "/v2/bench/app/blobs/$LAYER" --blob-size $((16 << 20)) --secs "$SECS" > "$W/attack.json" &
ATTACK=$!
PIDS+=("$ATTACK")
(
  t=0
  while kill -0 "$ATTACK" 2>/dev/null; do
    echo "t=${t}s open fds $(fds)"
    sleep 3
    t=$((t + 3))
  done
) &
SAMPLER=$!
PIDS+=("$SAMPLER")
sleep 5 # let the attack open its sockets
BUSY=$(pin "${SERVER_CPUS:-}" "$BB" latency --url "$MANIFEST" --requests "$REQUESTS")
echo "under attack: $BUSY"
wait "$ATTACK" || true
wait "$SAMPLER" 2>/dev/null || true
echo "attack: $(cat "$W/attack.json")"
echo "after: open fds $(fds)"
p() { sed "s/.*\"$1\":\([0-9.]*\).*/\1/" <<<"$2"; }
ip50=$(p p50_ms "$IDLE"); ip99=$(p p99_ms "$IDLE"); bp50=$(p p50_ms "$BUSY"); bp99=$(p p99_ms "$BUSY")
printf '\n| manifest GET | idle | under attack | ratio |\n|---|---|---|---|\n'
printf '| req/s (sequential) | %.0f | %.0f | %.2f |\n' "$(p rps "$IDLE")" "$(p rps "$BUSY")" "$(echo "$(p rps "$BUSY") / $(p rps "$IDLE")" | bc -l)"
printf '| p50 ms | %.3f | %.3f | %.2f |\n' "$ip50" "$bp50" "$(echo "$bp50 / $ip50" | bc -l)"
printf '| p99 ms | %.3f | %.3f | %.2f |\n' "$ip99" "$bp99" "$(echo "$bp99 / $ip99" | bc -l)"
grep -c 'Too many open files' "$W/berth.log" | sed 's/^/"Too many open files" lines in the log: /' || true
