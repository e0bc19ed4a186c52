# Shared by the benchmark scripts (sourced from the repository root):
# installs the peers and tools, builds Berth and berth-bench in release,
# makes a work directory that is removed on exit, and starts and stops
# Berth or CNCF distribution on a free port.
need=()
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v nginx >/dev/null || need+=(nginx-light)
command -v wrk >/dev/null || need+=(wrk)
command -v ab >/dev/null || need+=(apache2-utils)
command -v curl >/dev/null || need+=(curl)
command -v bc >/dev/null || need+=(bc)
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/berth/target}"
[ -n "${SKIP_BUILD:-}" ] || cargo build --release -q -p berth-server -p berth-bench
BERTH="$CARGO_TARGET_DIR/release/berth"
BB="$CARGO_TARGET_DIR/release/berth-bench"

W=$(mktemp -d /tmp/berth-bench.XXXXXX)
chmod 755 "$W"  # nginx workers run unprivileged
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
TICK=$(getconf CLK_TCK)

# start_registry NAME DATADIR [UPSTREAM] -> sets PID and URL; with an
# upstream URL, a pull-through cache of it (Berth's sync, distribution's proxy).
start_registry() {
  local name=$1 data=$2 upstream=${3:-} port t0 ext="" proxy=""
  port=$(free_port)
  t0=$(date +%s%N)
  mkdir -p "$data"
  if [ -n "$upstream" ]; then
    ext=$(printf ',"extensions":{"sync":{"registries":[{"urls":["%s"],"onDemand":true,"content":[{"prefix":"**"}]}]}}' "$upstream")
    proxy="proxy: { remoteurl: $upstream }"
  fi
  if [ "$name" = berth ]; then
    printf '{"storage":{"rootDirectory":"%s"},"http":{"address":"127.0.0.1","port":"%s"},"log":{"level":"warn","output":"%s/berth.log"}%s}' \
      "$data" "$port" "$W" "$ext" > "$W/berth.json"
    "$BERTH" serve "$W/berth.json" > /dev/null &
  else
    cat > "$W/dist.yml" <<YML
version: 0.1
log: { level: error, accesslog: { disabled: true } }
storage: { filesystem: { rootdirectory: $data }, delete: { enabled: true } }
http: { addr: 127.0.0.1:$port }
$proxy
YML
    docker-registry serve "$W/dist.yml" > "$W/dist.log" 2>&1 &
  fi
  PID=$!
  PIDS+=("$PID")
  URL="http://127.0.0.1:$port"
  "$BB" wait-ready --url "$URL/v2/" > /dev/null
  READY_MS=$(( ($(date +%s%N) - t0) / 1000000 ))
}
stop_registry() { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; }

upload_url() { # base repo -> upload Location (absolute)
  local loc
  loc=$(curl -s -D - -o /dev/null -X POST "$1/v2/$2/blobs/uploads/" | tr -d '\r' | awk 'tolower($1)=="location:" {print $2}')
  case "$loc" in http*) echo "$loc" ;; *) echo "$1$loc" ;; esac
}
with_digest() { case "$1" in *\?*) echo "$1&digest=$2" ;; *) echo "$1?digest=$2" ;; esac; }

