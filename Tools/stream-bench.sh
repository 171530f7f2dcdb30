#!/usr/bin/env bash
# Spool's decode speed in the streaming regime, as a fraction of the disk bound.
#
#   Tools/stream-bench.sh MODEL --mem-budget SIZE [--cgroup NAME] [-n TOKENS] [--io uring|pread|mmap]
#                         [--ctx N] [-t THREADS] [--prefetch D] [--runtime SECONDS] [--bandwidth MBPS]
#
# 1. fio measures the disk's sequential O_DIRECT read bandwidth on MODEL itself (Tools/disk-bench.sh
#    --seq-only; --bandwidth MBPS skips it and uses the given figure);
# 2. MODEL is evicted from the page cache and `spool bench -p 0 -n TOKENS -r 1` runs in the
#    streaming regime under --mem-budget (inside the cgroup v1 memory group NAME when --cgroup is
#    given: root only; the group counts the page cache, and its peak usage is reported);
# 3. it prints the bound, bandwidth ÷ bytes that must be read per token (the blocks the planner
#    could not keep resident), and Spool's decode as a fraction of it. The last line is JSON.
#
# SPOOL_BIN overrides the spool binary (default: this checkout's release build, built if needed).
set -euo pipefail
cd "$(dirname "$0")/.."

model=""; budget=""; cgroup=""; tokens=4; io=uring; ctx=64; threads=2; prefetch=""; runtime=5; bandwidth=""
while [ $# -gt 0 ]; do
  case "$1" in
    --mem-budget) budget="$2"; shift 2 ;;
    --cgroup) cgroup="$2"; shift 2 ;;
    -n) tokens="$2"; shift 2 ;;
    --io) io="$2"; shift 2 ;;
    --ctx) ctx="$2"; shift 2 ;;
    -t) threads="$2"; shift 2 ;;
    --prefetch) prefetch="$2"; shift 2 ;;
    --runtime) runtime="$2"; shift 2 ;;
    --bandwidth) bandwidth="$2"; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) model="$1"; shift ;;
  esac
done
[ -n "$model" ] && [ -n "$budget" ] || { sed -n '2,17p' "$0" >&2; exit 2; }
[ -r "$model" ] || { echo "stream-bench: cannot read $model" >&2; exit 1; }

if [ -z "${SPOOL_BIN:-}" ]; then
  swift build -c release --product spool >&2
  SPOOL_BIN="$(swift build -c release --show-bin-path)/spool"
fi

if [ -z "$bandwidth" ]; then
  bandwidth="$(Tools/disk-bench.sh "$model" --seq-only --runtime "$runtime" | tee /dev/stderr | awk '/^seq_read_MBps/ {print $2}')"
fi

# Drop the file's clean pages so neither run starts with weights in memory.
evict() { python3 -c 'import os,sys; fd=os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED); os.close(fd)' "$1"; }

# run_in_cgroup CMD...: runs CMD inside $cgroup (if set), after resetting the group's peak usage.
run_in_cgroup() {
  if [ -n "$cgroup" ]; then
    local g="/sys/fs/cgroup/memory/$cgroup"
    [ -w "$g/cgroup.procs" ] || { echo "stream-bench: no writable cgroup v1 memory group $g (root; mkdir it and set memory.limit_in_bytes)" >&2; exit 1; }
    # Pages charged to the group by earlier runs (it keeps a file's page cache after its reader
    # exits) would count in this run's peak: reclaim them first.
    echo 0 > "$g/memory.force_empty" 2>/dev/null || true
    echo 0 > "$g/memory.max_usage_in_bytes"
    ( echo $BASHPID > "$g/cgroup.procs"; exec "$@" )
  else
    "$@"
  fi
}

evict "$model"
args=(bench -m "$model" --mem-budget "$budget" -p 0 -n "$tokens" -r 1 -t "$threads" -c "$ctx" --io "$io" --json)
[ -n "$prefetch" ] && args+=(--prefetch "$prefetch")
echo "+ $SPOOL_BIN ${args[*]}${cgroup:+  (cgroup $cgroup)}" >&2
report="$(run_in_cgroup "$SPOOL_BIN" "${args[@]}")"
cgroup_peak=0
if [ -n "$cgroup" ]; then
  cgroup_peak="$(cat "/sys/fs/cgroup/memory/$cgroup/memory.max_usage_in_bytes")"
  cgroup_limit="$(cat "/sys/fs/cgroup/memory/$cgroup/memory.limit_in_bytes")"
fi

python3 - "$report" "$bandwidth" "$budget" "$cgroup_peak" "${cgroup_limit:-0}" <<'PY'
import json, sys
r = json.loads(sys.argv[1]); mbps = float(sys.argv[2]); budget_s = sys.argv[3]
peak_cg, limit_cg = int(sys.argv[4]), int(sys.argv[5])
units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
b = budget_s.strip().upper().rstrip("B").rstrip("I")
budget = int(float(b[:-1]) * units[b[-1]]) if b[-1:] in units else int(float(b))
s = r.get("streaming") or {}
bpt = s.get("bytesReadPerToken", 0)
tok = r["decode"]["medianTokensPerSecond"]
rss = r["peakRSSBytes"]
bound = mbps * 1e6 / bpt if bpt else float("inf")
print("model: %s (%.2f GB file)" % (r["model"], r["modelFileBytes"] / 1e9))
print("disk: %.0f MB/s sequential O_DIRECT (fio)" % mbps)
print("streaming (%s): %d blocks resident, %d streamed, %.1f MB read per token, %.2f GB/s achieved, I/O wait %.0f%%"
      % (s.get("backend"), s.get("residentLayers", 0), s.get("streamedLayers", 0), bpt / 1e6,
         s.get("readBytesPerSecond", 0) / 1e9, 100 * s.get("ioWaitFraction", 0)))
print("effective read rate while decoding: %.0f MB/s (bytes per token x tok/s)" % (bpt * tok / 1e6))
print("disk bound: %.3f tok/s (%.0f MB/s / %.1f MB per token)" % (bound, mbps, bpt / 1e6))
print("spool decode: %.3f tok/s = %.1f%% of the disk bound" % (tok, 100 * tok / bound))
print("peak RSS: %.0f MiB = %.1f%% of the budget (%s)" % (rss / 2**20, 100 * rss / budget, budget_s))
if peak_cg:
    print("cgroup peak usage (RSS + page cache): %.0f MiB of %.0f MiB" % (peak_cg / 2**20, limit_cg / 2**20))
print(json.dumps({"tok_s": tok, "bound_tok_s": bound, "fraction_of_bound": tok / bound, "bytes_per_token": bpt,
                  "disk_MBps": mbps, "peak_rss": rss, "budget": budget, "cgroup_peak": peak_cg}))
PY
