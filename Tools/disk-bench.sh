#!/usr/bin/env bash
# Measures the disk with fio, bypassing the page cache (O_DIRECT): sequential read bandwidth, and
# random reads of 4K, 32K and 128K (what partial-layer / hot-cold neuron reads would see).
#
#   Tools/disk-bench.sh [FILE] [--runtime SECONDS] [--seq-only] [--bytes-per-token BYTES [--tok-s X]]
#
# --seq-only runs only the sequential tests and prints one last line "seq_read_MBps N" (the better
# queue depth), for scripts (Tools/stream-bench.sh).
# FILE is read, never written (default: a 1 GiB scratch file made next to the model cache and
# removed afterwards). With --bytes-per-token (bytes a decode step must read from disk, i.e. the
# non-resident weights) it prints the disk bound in tokens/s, and with --tok-s a measured decode
# speed as a fraction of that bound.
set -euo pipefail

file=""
runtime=5
bytes_per_token=""
tok_s=""
seq_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    --runtime) runtime="$2"; shift 2 ;;
    --bytes-per-token) bytes_per_token="$2"; shift 2 ;;
    --tok-s) tok_s="$2"; shift 2 ;;
    --seq-only) seq_only=1; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) file="$1"; shift ;;
  esac
done

command -v fio >/dev/null || { echo "disk-bench: fio is not installed (apt-get install fio)" >&2; exit 1; }

cleanup=""
if [ -z "$file" ]; then
  dir="${SPOOL_BENCH_DIR:-$HOME/.cache/spool}"
  mkdir -p "$dir"
  file="$dir/disk-bench.$$.bin"
  cleanup="$file"
  trap 'rm -f "$cleanup"' EXIT
  # Written with O_DIRECT so the scratch data is not sitting in the page cache.
  dd if=/dev/urandom of="$file" bs=1M count=1024 oflag=direct status=none
fi
[ -r "$file" ] || { echo "disk-bench: cannot read $file" >&2; exit 1; }

engine=io_uring
fio --name=probe --filename="$file" --readonly --rw=read --bs=1M --size=1M --direct=1 \
    --ioengine=io_uring --output=/dev/null >/dev/null 2>&1 || engine=libaio

# run NAME RW BS IODEPTH [ENGINE [JOBS]] -> prints "MB/s IOPS"
run() {
  fio --name="$1" --filename="$file" --readonly --rw="$2" --bs="$3" --iodepth="$4" --direct=1 \
      --ioengine="${5:-$engine}" --numjobs="${6:-1}" --invalidate=0 \
      --runtime="$runtime" --time_based --group_reporting --output-format=json 2>/dev/null |
    python3 -c 'import json,sys; r=json.load(sys.stdin)["jobs"][0]["read"]; print("%.0f %.0f" % (r["bw_bytes"]/1e6, r["iops"]))'
}

echo "file: $file ($(stat -c %s "$file") bytes), engine $engine, ${runtime}s per test, O_DIRECT"
# Virtual disks often scale with queue depth well past 32, so both are shown; the bound below
# uses the better one (Spool's io_uring reader keeps up to 256 reads in flight by default).
read -r seq_mb seq_iops < <(run seq read 1M 32)
printf '%-22s %8s MB/s\n' "sequential 1M qd32" "$seq_mb"
read -r deep_mb deep_iops < <(run seqdeep read 1M 256)
printf '%-22s %8s MB/s\n' "sequential 1M qd256" "$deep_mb"
read -r psync_mb psync_iops < <(run seqsync read 1M 1 psync 4)
printf '%-22s %8s MB/s\n' "sequential 1M pread x4" "$psync_mb"
if [ "${deep_mb%.*}" -gt "${seq_mb%.*}" ]; then seq_mb=$deep_mb; fi
if [ "$seq_only" = 1 ]; then echo "seq_read_MBps $seq_mb"; exit 0; fi
for bs in 4k 32k 128k; do
  read -r mb iops < <(run "rand$bs" randread "$bs" 32)
  printf '%-22s %8s MB/s %10s IOPS\n' "random $bs qd32" "$mb" "$iops"
done

if [ -n "$bytes_per_token" ]; then
  python3 - "$seq_mb" "$bytes_per_token" "$tok_s" <<'PY'
import sys
mb, bpt, tok = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
bound = mb * 1e6 / bpt
print("disk bound: %.3f tok/s (%.0f MB/s / %.1f MB per token)" % (bound, mb, bpt / 1e6))
if tok:
    print("decode %.3f tok/s = %.1f%% of the disk bound" % (float(tok), 100 * float(tok) / bound))
PY
fi
