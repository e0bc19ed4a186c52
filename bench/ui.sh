#!/usr/bin/env bash
# The web interface's render benchmark (not a timed test): a release Berth
# with 10,000 repositories and one repository of 5,000 tags; the median
# (and p99) of many sequential GETs of each page over loopback, and the
# first GET of each page, before anything is remembered. The time
# includes the client's side of one loopback HTTP request (~0.1 ms), so it
# is an upper bound of the server's.
# Usage: bench/ui.sh   (REPOS, TAGS, RUNS override the sizes)
set -euo pipefail
cd "$(dirname "$0")/.."
REPOS=${REPOS:-10000}
TAGS=${TAGS:-5000}
RUNS=${RUNS:-200}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/berth/target}"
cargo build --release -q -p berth-server -p berth-bench
BERTH="$CARGO_TARGET_DIR/release/berth"
BB="$CARGO_TARGET_DIR/release/berth-bench"

W=$(mktemp -d /tmp/berth-ui-bench.XXXXXX)
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf '{"storage":{"rootDirectory":"%s/data"},"http":{"address":"127.0.0.1","port":"%s"},"log":{"level":"warn","output":"%s/berth.log"}}' \
  "$W" "$port" "$W" > "$W/berth.json"
"$BERTH" serve "$W/berth.json" > /dev/null &
PID=$!
URL="http://127.0.0.1:$port"
"$BB" wait-ready --url "$URL/v2/" > /dev/null

t0=$(date +%s)
"$BB" seed-repos --base "$URL" --repos "$REPOS" --concurrency 8 > /dev/null
"$BB" seed-tags --base "$URL" --repo seed/tags --tags "$TAGS" > /dev/null
echo "seeded $REPOS repositories and $TAGS tags in $(( $(date +%s) - t0 )) s" >&2

p50() { sed 's/.*"p50_ms":\([0-9.]*\).*"p99_ms":\([0-9.]*\).*/\1 \2/'; }
row() { # label url
  # The first request finds nothing remembered (no manifest facts, no list
  # rows); the next few warm up, then RUNS are measured.
  read -r first _ < <("$BB" latency --url "$URL$2" --requests 1 | p50)
  "$BB" latency --url "$URL$2" --requests 5 > /dev/null
  read -r m p < <("$BB" latency --url "$URL$2" --requests "$RUNS" | p50)
  printf '| %s | `%s` | %.2f | %.2f | %.2f |\n' "$1" "$2" "$m" "$p" "$first"
}
echo "| page ($REPOS repositories, $TAGS tags) | URL | median ms | p99 ms | first request ms |"
echo "|---|---|---|---|---|"
row "repository list, first page (50)" "/"
row "repository list, JSON twin" "/ui/api/repositories"
row "repository list, page in the middle" "/?after=seed/r05000"
row "repository list, Z to A" "/?sort=-name"
row "search matching nothing (scans all names)" "/?q=nothing-matches"
row "search, 1 match" "/?q=r04321"
row "repository of $TAGS tags, first page (100)" "/ui/r/seed/tags"
row "repository of $TAGS tags, JSON twin" "/ui/api/r/seed/tags"
row "repository of $TAGS tags, tag filter" "/ui/r/seed/tags?filter=t49"
row "image page" "/ui/r/seed/tags/-/image/t1"
row "compare" "/ui/r/seed/tags/-/compare?a=t1&b=t2"
