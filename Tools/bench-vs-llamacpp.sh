#!/usr/bin/env bash
# Run llama.cpp's llama-bench and `spool bench` on the same GGUF with the same threads, then print
# both and Spool's speed ratios.
#
# llama.cpp comes from the llama-cpp-python sdist on PyPI (it vendors llama.cpp under vendor/llama.cpp).
# It is built once, natively for this CPU, and cached under ~/.cache/spool/llama.cpp (never in the repo).
#
# Usage: Tools/bench-vs-llamacpp.sh [MODEL.gguf] [THREADS]
#   BUILD_ONLY=1 Tools/bench-vs-llamacpp.sh   only builds (or finds) llama-bench and prints its path.
#   SPOOL_MODEL=smol-4bit.spool Tools/bench-vs-llamacpp.sh   spool bench runs that file (e.g. a .spool
#   packed from the GGUF) while llama-bench runs the GGUF: the issue's comparison.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${SPOOL_LLAMA_CACHE:-$HOME/.cache/spool/llama.cpp}"
MODEL="${1:-}"
THREADS="${2:-2}"
PP=512
TG=128
REPS="${REPS:-5}"

apt_install() {
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
  else
    echo "bench: please install $* (no apt-get or not root)" >&2
    exit 1
  fi
}

build_llama_bench() {
  local bin="$CACHE/build/bin/llama-bench"
  if [ -x "$bin" ]; then echo "$bin"; return; fi
  command -v cmake >/dev/null 2>&1 || apt_install cmake >&2
  command -v g++ >/dev/null 2>&1 || apt_install g++ >&2
  mkdir -p "$CACHE"
  if [ ! -d "$CACHE/src" ]; then
    local dl="$CACHE/download"
    rm -rf "$dl" && mkdir -p "$dl"
    python3 -m pip download --quiet --no-deps --no-binary :all: llama-cpp-python -d "$dl" >&2
    local sdist
    sdist="$(ls "$dl"/llama_cpp_python-*.tar.gz | head -1)"
    tar -xzf "$sdist" -C "$dl"
    mv "$dl"/llama_cpp_python-*/vendor/llama.cpp "$CACHE/src"
    rm -rf "$dl"
  fi
  cmake -S "$CACHE/src" -B "$CACHE/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=OFF >&2
  cmake --build "$CACHE/build" --target llama-bench -j "$(nproc)" >&2
  echo "$bin"
}

LLAMA_BENCH="$(build_llama_bench)"
if [ "${BUILD_ONLY:-0}" = 1 ]; then echo "$LLAMA_BENCH"; exit 0; fi

[ -n "$MODEL" ] || MODEL="$(Tools/fetch-model.sh)"
swift build -c release --product spool >&2
SPOOL="$(swift build -c release --show-bin-path)/spool"

# The machine may be shared: the load average goes with the figures.
echo "== load before: $(uptime)"
echo "== llama.cpp llama-bench ($LLAMA_BENCH)"
LLAMA_JSON="$("$LLAMA_BENCH" -m "$MODEL" -p "$PP" -n "$TG" -t "$THREADS" -r "$REPS" -o json)"
echo "$LLAMA_JSON"
echo "== spool bench (${SPOOL_MODEL:-$MODEL})"
SPOOL_JSON="$("$SPOOL" bench -m "${SPOOL_MODEL:-$MODEL}" -p "$PP" -n "$TG" -t "$THREADS" -r "$REPS" --json)"
echo "$SPOOL_JSON"
echo "== load after: $(uptime)"

python3 - "$LLAMA_JSON" "$SPOOL_JSON" "$PP" "$TG" <<'EOF'
import json, sys
llama, spool, pp, tg = json.loads(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def llama_rate(prompt, gen):
    for r in llama:
        if r["n_prompt"] == prompt and r["n_gen"] == gen:
            return r["avg_ts"], r["stddev_ts"]
    raise SystemExit(f"llama-bench output has no pp{prompt}/tg{gen} row")
lpp, lpp_sd = llama_rate(pp, 0)
ltg, ltg_sd = llama_rate(0, tg)
spp, stg = spool["prefill"], spool["decode"]
print()
print(f"{'test':8} {'llama.cpp tok/s':>18} {'spool tok/s':>18} {'ratio':>7}")
print(f"{'pp%d' % pp:8} {lpp:11.1f} ± {lpp_sd:4.1f} {spp['medianTokensPerSecond']:11.1f} ± {spp['stddevTokensPerSecond']:4.1f} {spp['medianTokensPerSecond'] / lpp:6.2f}x")
print(f"{'tg%d' % tg:8} {ltg:11.1f} ± {ltg_sd:4.1f} {stg['medianTokensPerSecond']:11.1f} ± {stg['stddevTokensPerSecond']:4.1f} {stg['medianTokensPerSecond'] / ltg:6.2f}x")
print("(llama.cpp reports mean ± stddev, spool median ± stddev)")
EOF
