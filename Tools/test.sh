#!/usr/bin/env bash
# The test command: fetch the default model if needed, then build and run every test in release
# mode (the model tests run real forward passes; debug builds are far too slow for them).
set -euo pipefail
cd "$(dirname "$0")/.."
Tools/fetch-model.sh >/dev/null
export SPOOL_REQUIRE_MODEL=1
swift test -c release -Xswiftc -enable-testing "$@"
