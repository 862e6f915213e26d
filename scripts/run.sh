#!/usr/bin/env bash
# Installs what is needed, builds specdec, fetches the default model (SmolLM2-135M-Instruct
# Q4_1, once) and runs `specdec run` with the given options, e.g.
#   bash scripts/run.sh -p "The capital of France is" -n 64
# With no options it uses a demo prompt.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/fetch-model.sh >/dev/null
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DSPECDEC_TESTS=OFF >/dev/null
cmake --build build -j "$(nproc)" --target specdec_cli >/dev/null
if [ $# -eq 0 ]; then
  set -- -p "Speculative decoding makes language models faster because" -n 96 --temp 0
fi
exec build/bin/specdec run "$@"
