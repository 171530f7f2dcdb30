#!/usr/bin/env bash
# The main job: fetch the default model, build spool in release mode, and generate a reply.
set -euo pipefail
cd "$(dirname "$0")/.."
model="$(Tools/fetch-model.sh)"
swift build -c release --product spool
prompt=${1:-"<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"}
.build/release/spool generate -m "$model" -p "$(printf "$prompt")" -n 64 --temperature 0
