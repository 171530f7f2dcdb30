#!/usr/bin/env bash
# Packs the default model in each variant given and scores it: one JSON line per variant
# (size, perplexity, pack wall/CPU time, peak RSS of the pack) appended to $OUT.
# Runs one job at a time (the machines are shared); run it in the background with a log.
#
#   Tools/quant-table.sh CHUNKS NAME "SPOOL-PACK ARGS" [NAME "ARGS" ...]
#   e.g. Tools/quant-table.sh 40 gptq3 "--bits 3 --group 64 --method gptq"
#
# GPTQ variants calibrate on wiki.valid.tokens (never the test file); perplexity follows the
# llama.cpp protocol on wiki.test.raw, context 512, the first CHUNKS chunks.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
chunks="$1"; shift
model="$("$here/fetch-model.sh")"
calib="$repo/../shared/data/wikitext-2/wiki.valid.tokens"
test_raw="$repo/../shared/data/wikitext-2-raw/wiki.test.raw"
work="${WORK:-/tmp/quant-table}"
out="${OUT:-$work/results.jsonl}"
threads="${THREADS:-2}"
mkdir -p "$work"

while [ $# -ge 2 ]; do
  name="$1"; args="$2"; shift 2
  spool="$work/$name.spool"
  echo "== $name: spool-pack $args ($(uptime | sed 's/.*load/load/'))" >&2
  # shellcheck disable=SC2086
  /usr/bin/time -v -o "$work/$name.time" "$repo/.build/release/spool-pack" "$model" -o "$spool" $args \
      --calib "$calib" -t "$threads" 2> "$work/$name.pack.log" > "$work/$name.alloc.txt"
  size=$(stat -c %s "$spool")
  wall=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$work/$name.time")
  user=$(sed -n 's/.*User time (seconds): //p' "$work/$name.time")
  sys=$(sed -n 's/.*System time (seconds): //p' "$work/$name.time")
  rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$work/$name.time")
  load=$(uptime | sed 's/.*load average: //')
  "$repo/.build/release/spool" perplexity -m "$spool" -f "$test_raw" -c 512 --chunks "$chunks" --json -t "$threads" \
      > "$work/$name.ppl.json" 2> "$work/$name.ppl.log"
  ppl=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["perplexity"])' "$work/$name.ppl.json")
  printf '{"name":"%s","args":"%s","chunks":%s,"bytes":%s,"mib":%.2f,"ppl":%s,"pack_wall":"%s","pack_user_s":%s,"pack_sys_s":%s,"pack_rss_kb":%s,"load_after":"%s"}\n' \
    "$name" "$args" "$chunks" "$size" "$(echo "$size / 1048576" | bc -l)" "$ppl" "$wall" "$user" "$sys" "$rss" "$load" | tee -a "$out"
  rm -f "$spool"
done
