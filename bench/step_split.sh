#!/usr/bin/env bash
# Where a speculative step's time goes (issue 17 item 4): draft vs verify (target forward +
# check) vs the check alone vs the rest, from `specdec chat --stats`, for each drafter on a
# code prompt, next to target-only. Greedy, batch 1.
#   bash bench/step_split.sh [SPECDEC] [THREADS] [N]   (default build/bin/specdec, 2, 128)
# Models: $CACHE/SmolLM2-135M-Instruct.Q4_1.gguf and Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-build/bin/specdec} t=${2:-2} n=${3:-128}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/specdec
smol=$cache/SmolLM2-135M-Instruct.Q4_1.gguf qwen=$cache/Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf
prompt=$(tail -n +3 bench/prompts/code-rename.txt)
echo "# $(date -u +%FT%TZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
for run in "$smol|" "$smol|model:$smol" "$smol|ngram" "$smol|layerskip" "$qwen|" "$qwen|ngram" "$qwen|layerskip"; do
  model=${run%%|*} draft=${run#*|}
  echo "## $(basename "$model") draft=${draft:-none} (load $(cut -d' ' -f1 /proc/loadavg))"
  "$bin" chat -m "$model" -p "$prompt" -n "$n" --temp 0 --ignore-eos -t "$t" --stats ${draft:+--draft "$draft"} \
    2>&1 >/dev/null | grep -E '^specdec: (prefill|drafter|decode time)' | sed "s|$cache/||g"
done
