#!/usr/bin/env bash
# Berth's benchmark: Berth and CNCF distribution (Debian's docker-registry)
# side by side in one run, with nginx as the ceiling for raw pulls.
# Usage: bench/run.sh [SIZE_MIB]   (default 1024: the 1 GiB blob)
# Prints a Markdown table (also written to bench/out/results.md).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${1:-1024}
TRIALS=${TRIALS:-3}
# SECTIONS: any of compare (vs distribution and nginx), auth, gc, proxy
# (pull-through: Berth's sync vs distribution's proxy mode).
SECTIONS=${SECTIONS:-compare,auth,gc,proxy}
want() { [[ ",$SECTIONS," == *",$1,"* ]]; }

. bench/lib.sh

declare -A R
BYTES=$((SIZE_MIB * 1024 * 1024))
make_big() {
  echo "generating a ${SIZE_MIB} MiB blob..." >&2
  head -c "$BYTES" /dev/urandom > "$W/big"
  DIGEST="sha256:$(openssl dgst -sha256 -r "$W/big" | cut -d' ' -f1)"
}
if want compare; then
make_big
mkdir -p "$W/pieces" && (cd "$W/pieces" && split -b 64M -d -a 3 ../big piece.)

for reg in berth dist; do
  echo "== $reg ==" >&2
  # Monolithic push (fresh store each trial).
  mono=(); mono_cpu=()
  for t in $(seq "$TRIALS"); do
    start_registry "$reg" "$W/$reg-mono-$t"
    [ "$t" = 1 ] && R[$reg.rss_idle]=$(rss_kib "$PID")
    c0=$(cpu_ticks "$PID")
    u=$(with_digest "$(upload_url "$URL" big/mono)" "$DIGEST")
    out=$(curl -s -o /dev/null -w '%{http_code} %{time_total}' -X PUT -H 'Expect:' -H 'Content-Type: application/octet-stream' -T "$W/big" "$u")
    [ "${out%% *}" = 201 ] || { echo "$reg monolithic push failed: $out" >&2; exit 1; }
    mono+=("${out#* }"); mono_cpu+=("$(( $(cpu_ticks "$PID") - c0 ))")
    R[$reg.rss_peak_push]=$(hwm_kib "$PID")
    stop_registry; rm -rf "$W/$reg-mono-$t"
  done
  R[$reg.mono_s]=$(printf '%s\n' "${mono[@]}" | median)
  R[$reg.mono_cpu]=$(printf '%s\n' "${mono_cpu[@]}" | median)

  # Chunked push (64 MiB PATCHes with Content-Range), then pulls.
  chunked=()
  for t in $(seq "$TRIALS"); do
    start_registry "$reg" "$W/$reg-chunk"
    u=$(upload_url "$URL" big/chunked)
    t0=$(date +%s.%N); off=0
    for p in "$W"/pieces/piece.*; do
      n=$(stat -c %s "$p")
      hdr=$(curl -s -D - -o /dev/null -X PATCH -H 'Expect:' -H 'Content-Type: application/octet-stream' -H "Content-Range: $off-$((off + n - 1))" -T "$p" "$u" | tr -d '\r')
      code=$(echo "$hdr" | head -1 | awk '{print $2}')
      [ "$code" = 202 ] || { echo "$reg PATCH failed: $code" >&2; exit 1; }
      loc=$(echo "$hdr" | awk 'tolower($1)=="location:" {print $2}')
      case "$loc" in http*) u=$loc ;; *) u="$URL$loc" ;; esac
      off=$((off + n))
    done
    code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT "$(with_digest "$u" "$DIGEST")")
    [ "$code" = 201 ] || { echo "$reg chunked PUT failed: $code" >&2; exit 1; }
    chunked+=("$(echo "$(date +%s.%N) - $t0" | bc)")
    if [ "$t" -lt "$TRIALS" ]; then stop_registry; rm -rf "$W/$reg-chunk"; fi
  done
  R[$reg.chunk_s]=$(printf '%s\n' "${chunked[@]}" | median)
  pulls=(); pull_cpu=()
  for t in $(seq "$TRIALS"); do
    c0=$(cpu_ticks "$PID")
    out=$(curl -s -o /dev/null -w '%{http_code} %{time_total}' "$URL/v2/big/chunked/blobs/$DIGEST")
    [ "${out%% *}" = 200 ] || { echo "$reg pull failed: $out" >&2; exit 1; }
    pulls+=("${out#* }"); pull_cpu+=("$(( $(cpu_ticks "$PID") - c0 ))")
  done
  R[$reg.pull_s]=$(printf '%s\n' "${pulls[@]}" | median)
  R[$reg.pull_cpu]=$(printf '%s\n' "${pull_cpu[@]}" | median)
  R[$reg.rss_peak_blob]=$(hwm_kib "$PID")
  stop_registry; rm -rf "$W/$reg-chunk"

  # Small images at concurrency 8, then manifest GET/HEAD by tag at 32.
  start_registry "$reg" "$W/$reg-small"
  c0=$(cpu_ticks "$PID")
  small=$("$BB" push-small --base "$URL" --concurrency 8 --images "${SMALL_IMAGES:-2000}")
  R[$reg.small_rate]=$(echo "$small" | sed 's/.*"images_per_sec":\([0-9.]*\).*/\1/')
  R[$reg.small_cpu_ms]=$(echo "scale=3; ($(cpu_ticks "$PID") - $c0) * 1000 / $TICK / ${SMALL_IMAGES:-2000}" | bc)
  acc='Accept: application/vnd.oci.image.manifest.v1+json'
  murl="$URL/v2/bench/small/manifests/t7"
  w=$(wrk -t1 -c32 -d"${DURATION:-10}"s --latency -H "$acc" "$murl")
  R[$reg.get_rps]=$(echo "$w" | awk '/^Requests\/sec/ {print int($2)}')
  R[$reg.get_p50]=$(echo "$w" | awk '$1=="50%" {print $2}')
  R[$reg.get_p99]=$(echo "$w" | awk '$1=="99%" {print $2}')
  a=$(ab -k -i -q -c32 -t"${DURATION:-10}" -n 10000000 -H "$acc" "$murl" 2>/dev/null)
  R[$reg.head_rps]=$(echo "$a" | awk '/^Requests per second/ {print int($4)}')
  R[$reg.head_p50]=$(echo "$a" | awk '$1=="50%" {print $2"ms"}')
  R[$reg.head_p99]=$(echo "$a" | awk '$1=="99%" {print $2"ms"}')

  # Listings.
  "$BB" seed-tags --base "$URL" --repo bench/tags --tags 1000 >/dev/null
  R[$reg.tags_ms]=$(printf '%.2f' "$("$BB" latency --url "$URL/v2/bench/tags/tags/list" --requests 200 | sed 's/.*"p50_ms":\([0-9.]*\).*/\1/')")
  "$BB" seed-repos --base "$URL" --repos 1000 >/dev/null
  R[$reg.catalog_ms]=$(printf '%.2f' "$("$BB" latency --url "$URL/v2/_catalog?n=1000" --requests 100 | sed 's/.*"p50_ms":\([0-9.]*\).*/\1/')")
  R[$reg.rss_peak]=$(hwm_kib "$PID")
  stop_registry
  # Start-up with 1,000+ repositories stored.
  starts=()
  for t in $(seq "$TRIALS"); do
    start_registry "$reg" "$W/$reg-small"; starts+=("$READY_MS"); stop_registry
  done
  R[$reg.start_ms]=$(printf '%s\n' "${starts[@]}" | median)
  rm -rf "$W/$reg-small"
done

fi

# Authentication overhead: manifest GET by tag, anonymous vs htpasswd vs API key.
if want auth; then
acc='Accept: application/vnd.oci.image.manifest.v1+json' 
echo "== berth with auth ==" >&2
htpasswd -nbB -C 10 bench bench-pw > "$W/htpasswd"
port=$(free_port)
cat > "$W/berth-auth.json" <<JSON
{"storage":{"rootDirectory":"$W/berth-auth"},"http":{"address":"127.0.0.1","port":"$port","realm":"bench",
 "auth":{"htpasswd":{"path":"$W/htpasswd"},"apikey":true},
 "accessControl":{"repositories":{"**":{"anonymousPolicy":["read"],"policies":[{"users":["bench"],"actions":["read","create","update","delete"]}]}}}},
 "log":{"level":"warn","output":"$W/berth-auth.log"}}
JSON
"$BERTH" serve "$W/berth-auth.json" > /dev/null & PID=$!; PIDS+=("$PID"); URL="http://127.0.0.1:$port"
"$BB" wait-ready --url "$URL/livez" > /dev/null
BASIC="Basic $(printf 'bench:bench-pw' | base64 -w0)"
curl -s -o /dev/null -H "Authorization: $BASIC" "$URL/v2/" # warm the verification cache
KEY=$(curl -s -H "Authorization: $BASIC" -X POST -d '{"label":"bench"}' "$URL/zot/auth/apikey" | sed 's/.*"apiKey":"\([^"]*\)".*/\1/')
KEYAUTH="Basic $(printf 'bench:%s' "$KEY" | base64 -w0)"
AUTH_HEADER="$BASIC" "$BB" push-small --base "$URL" --concurrency 1 --images 1 --repo bench/auth > /dev/null
for mode in anonymous basic apikey; do
  case $mode in anonymous) h="X-Bench: 1" ;; basic) h="Authorization: $BASIC" ;; apikey) h="Authorization: $KEYAUTH" ;; esac
  w=$(wrk -t1 -c32 -d"${DURATION:-10}"s --latency -H "$acc" -H "$h" "$URL/v2/bench/auth/manifests/t0")
  R[auth.$mode.rps]=$(echo "$w" | awk '/^Requests\/sec/ {print int($2)}')
  R[auth.$mode.p99]=$(echo "$w" | awk '$1=="99%" {print $2}')
  if echo "$w" | grep -q "Non-2xx"; then echo "auth bench ($mode): requests failed" >&2; echo "$w" >&2; exit 1; fi
done
stop_registry

fi

# Garbage collection: a pass over a large store, and pushes while it runs.
if want gc; then
echo "== berth gc ==" >&2
GC_BLOBS=${GC_BLOBS:-100000}; GC_MANIFESTS=${GC_MANIFESTS:-10000}
"$BB" seed-store --root "$W/gc-store" --manifests "$GC_MANIFESTS" --blobs "$GC_BLOBS" > /dev/null
printf '{"storage":{"rootDirectory":"%s","gcDelay":"1h"},"http":{"port":"0"},"log":{"level":"warn"}}' "$W/gc-store" > "$W/gc.json"
gc_out=$(/usr/bin/time -f '%e %M' "$BERTH" gc "$W/gc.json" 2> "$W/gc.time")
R[gc.summary]=$(echo "$gc_out" | head -1)
R[gc.secs]=$(tail -1 "$W/gc.time" | awk '{print $1}')
R[gc.rss_mib]=$(( $(tail -1 "$W/gc.time" | awk '{print $2}') / 1024 ))
# Push throughput on a large store: GC off, then GC passes back to back,
# interleaved, each after a sync so that neither pays the other's writeback.
rm -rf "$W/gc-store"; "$BB" seed-store --root "$W/gc-store" --manifests "$GC_MANIFESTS" --blobs "$GC_BLOBS" > /dev/null
idle=(); busy=()
for t in $(seq "$TRIALS"); do
  for mode in idle busy; do
    interval=$([ $mode = busy ] && echo 100ms || echo 0s)
    port=$(free_port)
    printf '{"storage":{"rootDirectory":"%s","gcDelay":"1h","gcInterval":"%s"},"http":{"address":"127.0.0.1","port":"%s"},"log":{"level":"info","output":"%s/gc-%s.log"}}' \
      "$W/gc-store" "$interval" "$port" "$W" "$mode" > "$W/gc-serve.json"
    sync; sleep 1
    "$BERTH" serve "$W/gc-serve.json" > /dev/null & PID=$!; PIDS+=("$PID"); URL="http://127.0.0.1:$port"
    "$BB" wait-ready --url "$URL/v2/" > /dev/null
    [ $mode = busy ] && sleep 1
    out=$("$BB" push-small --base "$URL" --concurrency 8 --images "${SMALL_IMAGES:-2000}" --repo "bench/gc$t$mode")
    rate=$(echo "$out" | sed 's/.*"images_per_sec":\([0-9.]*\).*/\1/')
    if [ $mode = busy ]; then busy+=("$rate"); else idle+=("$rate"); fi
    stop_registry
  done
done
R[gc.push.idle]=$(printf '%s\n' "${idle[@]}" | median)
R[gc.push.busy]=$(printf '%s\n' "${busy[@]}" | median)
R[gc.passes]=$(grep -c "garbage collected" "$W/gc-busy.log" || true)
fi

# Pull-through: an image with the big layer on a plain distribution
# (the upstream), pulled directly, through Berth and through distribution's
# proxy (each cold with an empty cache, then warm), and from a Berth it
# was pushed to (the plain local pull).
if want proxy; then
[ -f "$W/big" ] || make_big
OCI_M=application/vnd.oci.image.manifest.v1+json
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}' > "$W/config.json"
CDIGEST="sha256:$(openssl dgst -sha256 -r "$W/config.json" | cut -d' ' -f1)"
printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%s}]}' \
  "$OCI_M" "$CDIGEST" "$(stat -c %s "$W/config.json")" "$DIGEST" "$BYTES" > "$W/manifest.json"
push_image() { # base
  local f d code
  for f in config big; do
    d=$([ $f = big ] && echo "$DIGEST" || echo "$CDIGEST")
    code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -H 'Expect:' -H 'Content-Type: application/octet-stream' -T "$W/$([ $f = big ] && echo big || echo config.json)" "$(with_digest "$(upload_url "$1" big/app)" "$d")")
    [ "$code" = 201 ] || { echo "push of $f to $1 failed: $code" >&2; exit 1; }
  done
  code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -H "Content-Type: $OCI_M" --data-binary @"$W/manifest.json" "$1/v2/big/app/manifests/v1")
  [ "$code" = 201 ] || { echo "manifest push to $1 failed: $code" >&2; exit 1; }
}
pull_image() { # base -> seconds for manifest, config and layer, in a client's order
  local t0; t0=$(date +%s.%N)
  curl -sf -o /dev/null -H "Accept: $OCI_M" "$1/v2/big/app/manifests/v1" || { echo "pull of manifest from $1 failed" >&2; exit 1; }
  curl -sf -o /dev/null "$1/v2/big/app/blobs/$CDIGEST" || { echo "pull of config from $1 failed" >&2; exit 1; }
  curl -sf -o /dev/null "$1/v2/big/app/blobs/$DIGEST" || { echo "pull of layer from $1 failed" >&2; exit 1; }
  echo "$(date +%s.%N) - $t0" | bc
}
echo "== pull-through ==" >&2
start_registry dist "$W/upstream"; UP_PID=$PID; UP=$URL
push_image "$UP"
direct=(); plain=()
start_registry berth "$W/plain"; push_image "$URL"
for t in $(seq "$TRIALS"); do direct+=("$(pull_image "$UP")"); plain+=("$(pull_image "$URL")"); done
stop_registry; rm -rf "$W/plain"
R[px.direct]=$(printf '%s\n' "${direct[@]}" | median)
R[px.plain]=$(printf '%s\n' "${plain[@]}" | median)
for reg in berth dist; do
  cold=(); warm=()
  for t in $(seq "$TRIALS"); do
    sync; sleep 1
    start_registry "$reg" "$W/px-$reg" "$UP"
    cold+=("$(pull_image "$URL")"); warm+=("$(pull_image "$URL")")
    stop_registry; rm -rf "$W/px-$reg"
  done
  R[px.$reg.cold]=$(printf '%s\n' "${cold[@]}" | median)
  R[px.$reg.warm]=$(printf '%s\n' "${warm[@]}" | median)
done
PID=$UP_PID; stop_registry
fi

# nginx: the ceiling for a raw pull of the same file.
if want compare; then
port=$(free_port); mkdir -p "$W/www" "$W/nginx"; ln "$W/big" "$W/www/big"
cat > "$W/nginx.conf" <<NGX
worker_processes 1; error_log $W/nginx/error.log; pid $W/nginx/nginx.pid; daemon off;
events {}
http { access_log off; sendfile on; server { listen 127.0.0.1:$port; root $W/www; } }
NGX
nginx -c "$W/nginx.conf" -p "$W/nginx" & PIDS+=("$!"); sleep 0.5
ng=()
for t in $(seq "$TRIALS"); do out=$(curl -s -o /dev/null -w '%{http_code} %{time_total}' "http://127.0.0.1:$port/big"); [ "${out%% *}" = 200 ] || { echo "nginx: $out" >&2; exit 1; }; ng+=("${out#* }"); done
NGINX_S=$(printf '%s\n' "${ng[@]}" | median)
fi

gbps() { printf '%.2f' "$(echo "scale=4; $BYTES / $1 / 1000000000" | bc)"; }
ratio() { printf '%.2f' "$(echo "scale=4; $1 / $2" | bc)"; }
mkdir -p bench/out
{
  if want compare; then
  echo "Berth vs CNCF distribution $(docker-registry --version 2>&1 | awk '{print $3}'), ${SIZE_MIB} MiB blob, median of $TRIALS; $(nproc) cores, $(date -u +%F)."
  echo
  echo "| measure | Berth | distribution | Berth advantage |"
  echo "|---|---|---|---|"
  echo "| monolithic push | $(gbps "${R[berth.mono_s]}") GB/s ($(printf '%.2f' "${R[berth.mono_s]}") s) | $(gbps "${R[dist.mono_s]}") GB/s ($(printf '%.2f' "${R[dist.mono_s]}") s) | $(ratio "${R[dist.mono_s]}" "${R[berth.mono_s]}")x |"
  echo "| server CPU for that push | $(echo "scale=2; ${R[berth.mono_cpu]}/$TICK" | bc) s | $(echo "scale=2; ${R[dist.mono_cpu]}/$TICK" | bc) s | |"
  echo "| chunked push (64 MiB chunks) | $(gbps "${R[berth.chunk_s]}") GB/s | $(gbps "${R[dist.chunk_s]}") GB/s | $(ratio "${R[dist.chunk_s]}" "${R[berth.chunk_s]}")x |"
  echo "| pull | $(gbps "${R[berth.pull_s]}") GB/s | $(gbps "${R[dist.pull_s]}") GB/s | $(ratio "${R[dist.pull_s]}" "${R[berth.pull_s]}")x |"
  echo "| pull vs nginx ($(gbps "$NGINX_S") GB/s) | $(echo "scale=0; 100 * $NGINX_S / ${R[berth.pull_s]}" | bc)% | $(echo "scale=0; 100 * $NGINX_S / ${R[dist.pull_s]}" | bc)% | |"
  echo "| small-image push, c=8 | ${R[berth.small_rate]%.*} img/s, ${R[berth.small_cpu_ms]} ms CPU/img | ${R[dist.small_rate]%.*} img/s, ${R[dist.small_cpu_ms]} ms CPU/img | $(ratio "${R[berth.small_rate]}" "${R[dist.small_rate]}")x |"
  echo "| manifest GET by tag, c=32 | ${R[berth.get_rps]} req/s, p50 ${R[berth.get_p50]}, p99 ${R[berth.get_p99]} | ${R[dist.get_rps]} req/s, p50 ${R[dist.get_p50]}, p99 ${R[dist.get_p99]} | $(ratio "${R[berth.get_rps]}" "${R[dist.get_rps]}")x |"
  echo "| manifest HEAD by tag, c=32 | ${R[berth.head_rps]} req/s, p50 ${R[berth.head_p50]}, p99 ${R[berth.head_p99]} | ${R[dist.head_rps]} req/s, p50 ${R[dist.head_p50]}, p99 ${R[dist.head_p99]} | $(ratio "${R[berth.head_rps]}" "${R[dist.head_rps]}")x |"
  echo "| tags/list, 1,000 tags (p50) | ${R[berth.tags_ms]} ms | ${R[dist.tags_ms]} ms | $(ratio "${R[dist.tags_ms]}" "${R[berth.tags_ms]}")x |"
  echo "| _catalog, 1,000 repositories (p50) | ${R[berth.catalog_ms]} ms | ${R[dist.catalog_ms]} ms | $(ratio "${R[dist.catalog_ms]}" "${R[berth.catalog_ms]}")x |"
  echo "| start-up, 1,000 repositories stored | ${R[berth.start_ms]} ms | ${R[dist.start_ms]} ms | |"
  echo "| RSS idle | $((R[berth.rss_idle] / 1024)) MiB | $((R[dist.rss_idle] / 1024)) MiB | |"
  echo "| RSS peak: ${SIZE_MIB} MiB push / pull / small images | $((R[berth.rss_peak_push] / 1024)) / $((R[berth.rss_peak_blob] / 1024)) / $((R[berth.rss_peak] / 1024)) MiB | $((R[dist.rss_peak_push] / 1024)) / $((R[dist.rss_peak_blob] / 1024)) / $((R[dist.rss_peak] / 1024)) MiB | |"
  fi
  if want gc; then
  echo
  echo "| garbage collection (Berth) | figure |"
  echo "|---|---|"
  echo "| one pass, ${GC_BLOBS} blobs / ${GC_MANIFESTS} manifests | ${R[gc.secs]} s, peak RSS ${R[gc.rss_mib]} MiB: ${R[gc.summary]} |"
  echo "| small-image push c=8, GC idle | ${R[gc.push.idle]%.*} img/s |"
  echo "| small-image push c=8, GC passes back to back | ${R[gc.push.busy]%.*} img/s ($(echo "scale=0; 100 * ${R[gc.push.busy]} / ${R[gc.push.idle]}" | bc)% of idle) |"
  fi
  if want proxy; then
  echo
  echo "Pull of an image with a ${SIZE_MIB} MiB layer (manifest, config, layer), median of $TRIALS; the upstream is a plain distribution on loopback."
  echo
  echo "| pull | Berth | distribution proxy | Berth advantage |"
  echo "|---|---|---|---|"
  echo "| directly from the upstream | $(printf '%.2f' "${R[px.direct]}") s | | |"
  echo "| plain local pull (image pushed to Berth) | $(printf '%.2f' "${R[px.plain]}") s | | |"
  echo "| cold, through the cache | $(printf '%.2f' "${R[px.berth.cold]}") s ($(ratio "${R[px.berth.cold]}" "${R[px.direct]}")x direct) | $(printf '%.2f' "${R[px.dist.cold]}") s ($(ratio "${R[px.dist.cold]}" "${R[px.direct]}")x direct) | $(ratio "${R[px.dist.cold]}" "${R[px.berth.cold]}")x |"
  echo "| warm, from the cache | $(printf '%.2f' "${R[px.berth.warm]}") s ($(ratio "${R[px.berth.warm]}" "${R[px.plain]}")x plain) | $(printf '%.2f' "${R[px.dist.warm]}") s ($(ratio "${R[px.dist.warm]}" "${R[px.plain]}")x plain) | $(ratio "${R[px.dist.warm]}" "${R[px.berth.warm]}")x |"
  fi
  if want auth; then
  echo
  echo "| manifest GET by tag, c=32, Berth with auth | req/s | p99 | vs anonymous |"
  echo "|---|---|---|---|"
  for mode in anonymous basic apikey; do
    echo "| $mode | ${R[auth.$mode.rps]} | ${R[auth.$mode.p99]} | $(ratio "${R[auth.$mode.rps]}" "${R[auth.anonymous.rps]}")x |"
  done
  fi
} | tee bench/out/results.md
