#!/usr/bin/env bash
# The issue-7 comparison: a 7B-shaped model under a memory cap, Spool streaming its 4-bit pack
# against llama.cpp reading the Q4_0 GGUF of the same weights through mmap, both inside the same
# cgroup v1 memory group (root; the group counts the page cache).
#
#   Tools/bench-7b.sh [--limit 1G] [--mem-budget 900M] [-n TOKENS] [-t THREADS] [--io uring] [--prefetch D]
#                     [--gguf PATH] [--spool PATH] [--cgroup NAME] [--runtime SECONDS] [--bandwidth MBPS]
#
# Makes what is missing: the GGUF (spool-make-model: 7B geometry, random Q4_0 weights, ~3.9 GB),
# its pack (spool-pack --method rtn --bits 4 --group 64), the cgroup with its limit. Then:
#   - fio: sequential O_DIRECT read bandwidth (Tools/disk-bench.sh --seq-only);
#   - Spool: Tools/stream-bench.sh (spool bench -p 0 -n TOKENS -r 1 under --mem-budget);
#   - llama.cpp: llama-bench --repack 0 -lm mmap -p 0 -n TOKENS -r 1 (its default repack copies
#     the weights into anonymous memory, which the cap kills);
# each after evicting its file from the page cache, and prints both speeds, the ratio, Spool's
# fraction of the disk bound and the peak memory of each run. Keep TOKENS small on a shared machine.
set -euo pipefail
cd "$(dirname "$0")/.."

limit=1G; budget=900M; tokens=4; threads=2; io=uring; prefetch=1; cgroup=spool1g; runtime=5; bandwidth=""
gguf=/tmp/spool-7b-q4_0.gguf; spool=/tmp/spool-7b-4bit.spool
while [ $# -gt 0 ]; do
  case "$1" in
    --limit) limit="$2"; shift 2 ;;
    --mem-budget) budget="$2"; shift 2 ;;
    -n) tokens="$2"; shift 2 ;;
    -t) threads="$2"; shift 2 ;;
    --io) io="$2"; shift 2 ;;
    --prefetch) prefetch="$2"; shift 2 ;;
    --gguf) gguf="$2"; shift 2 ;;
    --spool) spool="$2"; shift 2 ;;
    --cgroup) cgroup="$2"; shift 2 ;;
    --runtime) runtime="$2"; shift 2 ;;
    --bandwidth) bandwidth="$2"; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "bench-7b: unknown argument $1" >&2; exit 2 ;;
  esac
done

for p in spool spool-pack spool-make-model; do swift build -c release --product "$p" >&2; done
bin="$(swift build -c release --show-bin-path)"
LLAMA_BENCH="$(BUILD_ONLY=1 Tools/bench-vs-llamacpp.sh)"

[ -f "$gguf" ] || "$bin/spool-make-model" -o "$gguf"
if [ ! -f "$spool" ]; then
  echo "packing $gguf -> $spool (RTN 4-bit, group 64; random weights need no GPTQ)" >&2
  /usr/bin/time -f "spool-pack: %e s, peak RSS %M KiB" "$bin/spool-pack" "$gguf" -o "$spool" --method rtn --bits 4 --group 64 -t "$threads"
fi

g="/sys/fs/cgroup/memory/$cgroup"
if [ ! -d "$g" ]; then mkdir "$g"; fi
limit_bytes="$(python3 -c '
import sys
s = sys.argv[1].upper().rstrip("B").rstrip("I"); u = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
print(int(float(s[:-1]) * u[s[-1]]) if s[-1] in u else int(s))' "$limit")"
[ "$(cat "$g/memory.limit_in_bytes")" = "$limit_bytes" ] || echo "$limit_bytes" > "$g/memory.limit_in_bytes"
echo "cgroup $g: limit $(cat "$g/memory.limit_in_bytes") bytes" >&2

evict() { python3 -c 'import os,sys; fd=os.open(sys.argv[1], os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED); os.close(fd)' "$1"; }

# Prefetch depth 1 by default: when the disk is the bottleneck one block in flight keeps it busy
# (the next read is queued as soon as the block computing is released), and the ring slot saved
# keeps one more block resident.
echo "== Spool: $spool, --mem-budget $budget, --io $io, --prefetch $prefetch" >&2
bwargs=(); [ -n "$bandwidth" ] && bwargs=(--bandwidth "$bandwidth")
spool_out="$(SPOOL_BIN="$bin/spool" Tools/stream-bench.sh "$spool" --mem-budget "$budget" --cgroup "$cgroup" -n "$tokens" \
             -t "$threads" --io "$io" --prefetch "$prefetch" --runtime "$runtime" "${bwargs[@]}")"
echo "$spool_out"
spool_json="$(echo "$spool_out" | tail -1)"

echo "== llama.cpp: $gguf, llama-bench --repack 0 -lm mmap" >&2
evict "$gguf"
echo 0 > "$g/memory.force_empty" 2>/dev/null || true
echo 0 > "$g/memory.max_usage_in_bytes"
largs=(-m "$gguf" --repack 0 -lm mmap -p 0 -n "$tokens" -t "$threads" -r 1 -o json)
echo "+ $LLAMA_BENCH ${largs[*]}  (cgroup $cgroup)" >&2
llama_json="$( ( echo $BASHPID > "$g/cgroup.procs"; exec "$LLAMA_BENCH" "${largs[@]}" ) )"
llama_peak="$(cat "$g/memory.max_usage_in_bytes")"

python3 - "$spool_json" "$llama_json" "$llama_peak" <<'PY'
import json, sys
s, l, lpeak = json.loads(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
row = next(r for r in l if r["n_prompt"] == 0 and r["n_gen"] > 0)
ltok = row["avg_ts"]
print()
print("%-10s %10s %16s" % ("", "tg tok/s", "cgroup peak MiB"))
print("%-10s %10.3f %16.0f" % ("llama.cpp", ltok, lpeak / 2**20))
print("%-10s %10.3f %16.0f   (peak RSS %.0f MiB, budget %.0f MiB)" % ("spool", s["tok_s"], s["cgroup_peak"] / 2**20, s["peak_rss"] / 2**20, s["budget"] / 2**20))
print("spool / llama.cpp: %.2fx; spool at %.1f%% of the disk bound (%.3f tok/s); peak RSS %.1f%% of the budget"
      % (s["tok_s"] / ltok, 100 * s["fraction_of_bound"], s["bound_tok_s"], 100 * s["peak_rss"] / s["budget"]))
PY
