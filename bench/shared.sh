#!/usr/bin/env bash
# The shared store measured (bench/shared.sh): Berth on S3 (a real Garage,
# one node) and PostgreSQL, against the same S3 server driven by a plain S3
# client, and CNCF distribution on the local filesystem, in one run.
#   1. A blob of SIZE_MB (1024) pushed (curl, monolithic PUT) and pulled
#      (curl) through Berth, against a plain S3 client's multipart upload
#      and streamed download of the same file: MB/s, ratios, Berth's CPU.
#   2. Manifest GET by tag (wrk -t1 -c32): Berth on the shared store
#      against distribution on the filesystem.
# Medians of TRIALS (3) runs. Every process runs on this machine (2 cores):
# the S3 server, PostgreSQL, Berth and the client share them.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
TRIALS=${TRIALS:-3}
SIZE_MB=${SIZE_MB:-1024}
GARAGE=${BERTH_GARAGE:-$HOME/.cache/berth/tools/bin/garage}
[ -x "$GARAGE" ] || { echo "Garage not found: scripts/install-test-deps.sh builds it" >&2; exit 2; }
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)

# PostgreSQL, as the postgres user (setpriv execs, so the pid is the server's).
mkdir -p "$W/pg" && chown postgres "$W/pg"
setpriv --reuid=postgres --regid=postgres --clear-groups "$PGBIN/initdb" -A trust -U berth -D "$W/pg/data" > /dev/null
PGPORT=$(free_port)
setpriv --reuid=postgres --regid=postgres --clear-groups "$PGBIN/postgres" -D "$W/pg/data" -p "$PGPORT" \
  -k "$W/pg" -c listen_addresses=127.0.0.1 > "$W/pg.log" 2>&1 &
PIDS+=($!)
until "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PGPORT"; do sleep 0.1; done
"$PGBIN/createdb" -h 127.0.0.1 -p "$PGPORT" -U berth berth

# Garage: one node, a bucket, a key.
S3PORT=$(free_port); RPC=$(free_port); ADMIN=$(free_port)
KEY=GK0123456789abcdef01234567
SECRET=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
cat > "$W/garage.toml" <<TOML
metadata_dir = "$W/garage/meta"
data_dir = "$W/garage/data"
db_engine = "lmdb"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$RPC"
rpc_public_addr = "127.0.0.1:$RPC"
rpc_secret = "$(openssl rand -hex 32)"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$S3PORT"
root_domain = ".s3.garage.localhost"
[admin]
api_bind_addr = "127.0.0.1:$ADMIN"
TOML
RUST_LOG=warn "$GARAGE" -c "$W/garage.toml" server > "$W/garage.log" 2>&1 &
PIDS+=($!)
g() { "$GARAGE" -c "$W/garage.toml" "$@" > /dev/null; }
until node=$("$GARAGE" -c "$W/garage.toml" status 2>/dev/null | awk 'length($1)==16 && $1 ~ /^[0-9a-f]+$/ {print $1; exit}') && [ -n "$node" ]; do sleep 0.1; done
g layout assign -z dc1 -c 10G "$node"; g layout apply --version 1
g bucket create berth; g key import --yes -n bench "$KEY" "$SECRET"
g bucket allow --read --write --owner berth --key "$KEY"
S3URL="http://127.0.0.1:$S3PORT"

# Berth on the shared store.
BPORT=$(free_port)
cat > "$W/shared.json" <<JSON
{"storage":{"rootDirectory":"$W/berth-local",
  "storageDriver":{"name":"s3","bucket":"berth","region":"garage","regionendpoint":"$S3URL",
    "forcepathstyle":true,"secure":false,"accesskey":"$KEY","secretkey":"$SECRET","rootdirectory":"/berth"},
  "cacheDriver":{"name":"postgres","url":"postgres://berth@127.0.0.1:$PGPORT/berth"}},
 "http":{"address":"127.0.0.1","port":"$BPORT"},"log":{"level":"warn","output":"$W/berth.log"}}
JSON
"$BERTH" serve "$W/shared.json" > /dev/null &
BPID=$!
PIDS+=("$BPID")
BURL="http://127.0.0.1:$BPORT"
"$BB" wait-ready --url "$BURL/v2/" > /dev/null

s3() { "$BB" s3 "$1" --endpoint "$S3URL" --bucket berth --key-id "$KEY" --secret "$SECRET" "${@:2}" | sed 's/.*"seconds":\([0-9.e-]*\).*/\1/'; }
mbps() { echo "scale=0; $SIZE_MB * 1048576 / $1 / 1000000" | bc; }

raw_put=(); raw_get=(); push=(); pull=(); push_cpu=(); pull_cpu=()
for t in $(seq "$TRIALS"); do
  f="$W/blob-$t"
  head -c "$((SIZE_MB << 20))" /dev/urandom > "$f"
  digest="sha256:$(sha256sum "$f" | cut -d' ' -f1)"
  raw_put+=("$(s3 put --file "$f" --name "raw/$t")")
  raw_get+=("$(s3 get --name "raw/$t")")
  c0=$(cpu_ticks "$BPID")
  t0=$(date +%s%N)
  code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -H 'Content-Type: application/octet-stream' \
    -T "$f" "$(with_digest "$(upload_url "$BURL" bench/big)" "$digest")")
  [ "$code" = 201 ] || { echo "push answered $code" >&2; exit 1; }
  push+=("$(echo "scale=3; ($(date +%s%N) - $t0) / 1000000000" | bc)")
  push_cpu+=("$(echo "scale=2; ($(cpu_ticks "$BPID") - $c0) / $TICK * 1024 / $SIZE_MB" | bc)")
  c0=$(cpu_ticks "$BPID")
  t0=$(date +%s%N)
  curl -s -o /dev/null "$BURL/v2/bench/big/blobs/$digest"
  pull+=("$(echo "scale=3; ($(date +%s%N) - $t0) / 1000000000" | bc)")
  pull_cpu+=("$(echo "scale=2; ($(cpu_ticks "$BPID") - $c0) / $TICK * 1024 / $SIZE_MB" | bc)")
  rm -f "$f"
done
m() { printf '%s\n' "$@" | median; }
RP=$(m "${raw_put[@]}"); RG=$(m "${raw_get[@]}"); BP=$(m "${push[@]}"); BG=$(m "${pull[@]}")
PEAK=$(hwm_kib "$BPID")

# Manifest GET by tag: Berth on the shared store, distribution on the
# filesystem, the same small images pushed to both.
acc='Accept: application/vnd.oci.image.manifest.v1+json'
"$BB" push-small --base "$BURL" --concurrency 8 --images "${SMALL_IMAGES:-200}" > /dev/null
wb=$(wrk -t1 -c32 -d"${DURATION:-10}"s --latency -H "$acc" "$BURL/v2/bench/small/manifests/t7")
start_registry dist "$W/dist"
"$BB" push-small --base "$URL" --concurrency 8 --images "${SMALL_IMAGES:-200}" > /dev/null
wd=$(wrk -t1 -c32 -d"${DURATION:-10}"s --latency -H "$acc" "$URL/v2/bench/small/manifests/t7")
stop_registry
rps() { echo "$1" | awk '/^Requests\/sec/ {print int($2)}'; }
pct() { echo "$1" | awk -v p="$2" '$1==p {print $2}'; }

echo "Shared store: Berth on Garage (S3, 1 node) + PostgreSQL $(basename "$(dirname "$PGBIN")"), $SIZE_MB MiB blob, medians of $TRIALS"
printf '%-34s %12s %12s %8s\n' "" "plain S3" "Berth" "ratio"
printf '%-34s %9s MB/s %7s MB/s %7sx\n' "push (curl PUT / multipart upload)" "$(mbps "$RP")" "$(mbps "$BP")" "$(echo "scale=2; $BP / $RP" | bc)"
printf '%-34s %9s MB/s %7s MB/s %7sx\n' "pull (curl GET / streamed GET)" "$(mbps "$RG")" "$(mbps "$BG")" "$(echo "scale=2; $BG / $RG" | bc)"
echo "Berth CPU per GiB: push $(m "${push_cpu[@]}") s, pull $(m "${pull_cpu[@]}") s; peak RSS $((PEAK / 1024)) MiB"
echo "(ratio: Berth's time over the plain client's, 1.00 = as fast)"
printf '%-34s %12s %12s %8s\n' "manifest GET by tag (wrk -c32)" "distribution" "Berth" "ratio"
printf '%-34s %12s %12s %7sx\n' "requests/s" "$(rps "$wd")" "$(rps "$wb")" "$(echo "scale=1; $(rps "$wb") / $(rps "$wd")" | bc)"
printf '%-34s %12s %12s\n' "p50 / p99" "$(pct "$wd" 50%) / $(pct "$wd" 99%)" "$(pct "$wb" 50%) / $(pct "$wb" 99%)"
