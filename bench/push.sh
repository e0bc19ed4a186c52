#!/usr/bin/env bash
# The push benchmark (issue 12): Berth and CNCF distribution side by side in
# one run, pushing a blob of fresh content from three kinds of client (curl,
# a sendfile(2) client, a client writing 16 KiB pieces), monolithic and in
# 16 MiB chunks, against the limit of this machine's disk (the same bytes
# written by dd with conv=fdatasync, on the same filesystem). Then pushes of
# content the store already holds. Reports medians of TRIALS runs: MB/s,
# server CPU seconds per GiB, net bytes the server wrote to disk, peak RSS.
# Usage: bench/push.sh [SIZE_MIB]   (default 1024)
# Env: TRIALS (5), REGS (berth,dist), CLIENTS (curl,sendfile,pieces),
#      MODES (mono,chunked), SKIP_BUILD=1 to use the built binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${1:-1024}
TRIALS=${TRIALS:-5}
REGS=${REGS:-berth,dist}
CLIENTS=${CLIENTS:-curl,sendfile,pieces}
MODES=${MODES:-mono,chunked}
CHUNK=$((16 * 1024 * 1024))
. bench/lib.sh

BYTES=$((SIZE_MIB * 1024 * 1024))
GIB=1073741824
echo "generating a ${SIZE_MIB} MiB blob..." >&2
head -c "$BYTES" /dev/urandom > "$W/big"
# Fresh content for every push: the first 32 bytes change, so does the digest.
freshen() {
  head -c 32 /dev/urandom | dd of="$W/big" bs=32 count=1 conv=notrunc status=none
  DIGEST="sha256:$(openssl dgst -sha256 -r "$W/big" | cut -d' ' -f1)"
}
# Net bytes the process sent to the disk: written minus those dropped
# before writeback (a file deleted while still in the page cache).
disk_bytes() { awk '/^write_bytes/ {w=$2} /^cancelled_write_bytes/ {c=$2} END {printf "%d\n", w-c}' "/proc/$1/io"; }
per_gib() { echo "scale=3; $1 * $GIB / $BYTES" | bc; }

push() { # client mode repo -> seconds
  local client=$1 mode=$2 repo=$3 u out
  case $client in
    curl)
      if [ "$mode" = mono ]; then
        u=$(with_digest "$(upload_url "$URL" "$repo")" "$DIGEST")
        out=$(curl -s -o /dev/null -w '%{http_code} %{time_total}' -X PUT -H 'Expect:' \
          -H 'Content-Type: application/octet-stream' -T "$W/big" "$u")
        [ "${out%% *}" = 201 ] || { echo "curl push failed: $out" >&2; exit 1; }
        echo "${out#* }"
      else
        # One process per PATCH (curl) and nothing else: sizes, status and
        # Location are read by bash itself, so the loop adds no processes
        # of its own to either registry's time.
        local t0 off=0 n code line p
        t0=$(date +%s.%N); u=$(upload_url "$URL" "$repo")
        for p in "$W"/pieces/piece.*; do
          n=$CHUNK; [ "$p" = "$LAST_PIECE" ] && n=$LAST_LEN
          code=$(curl -s -D "$W/h" -o /dev/null -w '%{http_code}' -X PATCH -H 'Expect:' \
            -H 'Content-Type: application/octet-stream' \
            -H "Content-Range: $off-$((off + n - 1))" -T "$p" "$u")
          [ "$code" = 202 ] || { echo "PATCH failed: $code" >&2; exit 1; }
          while IFS= read -r line; do
            line=${line%$'\r'}
            case "${line,,}" in location:*) u=${line#*: } ;; esac
          done < "$W/h"
          case "$u" in http*) ;; *) u="$URL$u" ;; esac
          off=$((off + n))
        done
        code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT "$(with_digest "$u" "$DIGEST")")
        [ "$code" = 201 ] || { echo "chunked PUT failed: $code" >&2; exit 1; }
        echo "$(date +%s.%N) - $t0" | bc
      fi ;;
    sendfile|pieces)
      local chunk=0
      [ "$mode" = chunked ] && chunk=$CHUNK
      "$BB" push-file --base "$URL" --repo "$repo" --file "$W/big" --digest "$DIGEST" \
        --writer "$client" --chunk "$chunk" | sed 's/.*"seconds":\([0-9.e-]*\).*/\1/' ;;
  esac
}

# The limit: the same bytes written and fdatasync'd by dd on this
# filesystem. The disk's speed moves from minute to minute here, so it is
# measured right before every push, and each push is reported as a share
# of the limit measured with it.
limit() {
  sync
  local t0; t0=$(date +%s%N)
  dd if="$W/big" of="$W/dd.out" bs=4M conv=fdatasync status=none
  echo "scale=1; $BYTES * 1000 / ($(date +%s%N) - $t0)" | bc
  rm -f "$W/dd.out"
}
LIMITS=()

declare -A R
IFS=, read -ra regs <<<"$REGS"; IFS=, read -ra clients <<<"$CLIENTS"; IFS=, read -ra modes <<<"$MODES"
if [[ ",$MODES," == *",chunked,"* ]]; then
  mkdir -p "$W/pieces"
fi
for mode in "${modes[@]}"; do
  for client in "${clients[@]}"; do
    for reg in "${regs[@]}"; do
      secs=(); cpu=(); disk=(); share=(); rss=0
      for t in $(seq "$TRIALS"); do
        freshen
        lim=$(limit); LIMITS+=("$lim")
        if [ "$mode" = chunked ] && [ "$client" = curl ]; then
          rm -f "$W"/pieces/*; (cd "$W/pieces" && split -b "$CHUNK" -d -a 3 ../big piece.)
          LAST_PIECE=$(ls "$W"/pieces/piece.* | tail -1); LAST_LEN=$(stat -c %s "$LAST_PIECE")
        fi
        sync
        start_registry "$reg" "$W/$reg-data"
        c0=$(cpu_ticks "$PID"); d0=$(disk_bytes "$PID")
        s1=$(push "$client" "$mode" bench/push); secs+=("$s1")
        share+=("$(echo "scale=3; 100 * $BYTES / 1000000 / $s1 / $lim" | bc)")
        cpu+=("$(( $(cpu_ticks "$PID") - c0 ))"); disk+=("$(( $(disk_bytes "$PID") - d0 ))")
        h=$(hwm_kib "$PID"); [ "$h" -gt "$rss" ] && rss=$h
        stop_registry; rm -rf "$W/$reg-data"
      done
      k="$reg.$mode.$client"
      R[$k.mbps]=$(echo "scale=1; $BYTES / 1000000 / $(printf '%s\n' "${secs[@]}" | median)" | bc)
      R[$k.cpu]=$(per_gib "$(echo "scale=3; $(printf '%s\n' "${cpu[@]}" | median) / $TICK" | bc)")
      R[$k.disk]=$(( $(printf '%s\n' "${disk[@]}" | median) / 1048576 ))
      R[$k.rss]=$(( rss / 1024 ))
      R[$k.share]=$(printf '%s\n' "${share[@]}" | median)
      echo "$k: ${R[$k.mbps]} MB/s (${R[$k.share]}% of the limit), ${R[$k.cpu]} s CPU/GiB, ${R[$k.disk]} MiB to disk, RSS peak ${R[$k.rss]} MiB (${secs[*]}; limits ${LIMITS[*]: -$TRIALS})" >&2
    done
  done
done

# Content the store already holds: pushed once to one repository, then
# again to others (monolithic with the digest; chunked, whose digest is
# known only at the end).
for reg in "${regs[@]}"; do
  for mode in mono chunked; do
    secs=(); cpu=(); disk=()
    freshen
    start_registry "$reg" "$W/$reg-data"
    push sendfile mono bench/first > /dev/null
    sync
    for t in $(seq "$TRIALS"); do
      c0=$(cpu_ticks "$PID"); d0=$(disk_bytes "$PID")
      secs+=("$(push sendfile "$mode" "bench/again$t")")
      sleep 1 # let a dropped file's pages be counted as cancelled
      cpu+=("$(( $(cpu_ticks "$PID") - c0 ))"); disk+=("$(( $(disk_bytes "$PID") - d0 ))")
    done
    stop_registry; rm -rf "$W/$reg-data"
    k="$reg.dedup.$mode"
    R[$k.mbps]=$(echo "scale=1; $BYTES / 1000000 / $(printf '%s\n' "${secs[@]}" | median)" | bc)
    R[$k.cpu]=$(per_gib "$(echo "scale=3; $(printf '%s\n' "${cpu[@]}" | median) / $TICK" | bc)")
    R[$k.disk]=$(( $(printf '%s\n' "${disk[@]}" | median) / 1048576 ))
    echo "$k: ${R[$k.mbps]} MB/s, ${R[$k.cpu]} s CPU/GiB, ${R[$k.disk]} MiB to disk (${secs[*]})" >&2
  done
done

LIMIT=$(printf '%s\n' "${LIMITS[@]:-0}" | median)
LOW=$(printf '%s\n' "${LIMITS[@]:-0}" | sort -g | head -1); HIGH=$(printf '%s\n' "${LIMITS[@]:-0}" | sort -g | tail -1)
ratio() { echo "scale=2; $1 / $2" | bc; }
mkdir -p bench/out
{
  echo "Push benchmark, ${SIZE_MIB} MiB blob, fresh content each push, median of $TRIALS runs; $(nproc) cores; $(date -u +%Y-%m-%d)."
  echo "fdatasync'd write limit on this filesystem (dd bs=4M conv=fdatasync, measured before every push): median $LIMIT MB/s, from $LOW to $HIGH."
  echo
  echo "| push | client | Berth MB/s (median share of the limit measured with each push) | Berth CPU s/GiB | distribution MB/s | distribution CPU s/GiB | Berth / distribution |"
  echo "|---|---|---|---|---|---|---|"
  for mode in "${modes[@]}"; do
    for client in "${clients[@]}"; do
      b="berth.$mode.$client"; d="dist.$mode.$client"
      echo "| $mode | $client | ${R[$b.mbps]:-} (${R[$b.share]:-}%) | ${R[$b.cpu]:-} | ${R[$d.mbps]:-} | ${R[$d.cpu]:-} | $( [ -n "${R[$d.mbps]:-}" ] && ratio "${R[$b.mbps]:-0}" "${R[$d.mbps]}")x |"
    done
  done
  echo
  echo "| push of stored content (sendfile client) | Berth MB/s | Berth CPU s/GiB | Berth MiB to disk | distribution MB/s | distribution CPU s/GiB | distribution MiB to disk |"
  echo "|---|---|---|---|---|---|---|"
  for mode in mono chunked; do
    b="berth.dedup.$mode"; d="dist.dedup.$mode"
    echo "| $mode | ${R[$b.mbps]:-} | ${R[$b.cpu]:-} | ${R[$b.disk]:-} | ${R[$d.mbps]:-} | ${R[$d.cpu]:-} | ${R[$d.disk]:-} |"
  done
  echo
  echo "Peak RSS during a push (MiB), Berth: $(for k in "${!R[@]}"; do [[ $k == berth.*.rss ]] && echo "${R[$k]}"; done | sort -n | tail -1)."
} | tee bench/out/push.md
