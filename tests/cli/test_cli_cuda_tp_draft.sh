#!/usr/bin/env bash
# A draft group on CUDA: `ENABLE_INTRA_NODE_COMM=1 specdec launch -n 3 -- specdec run --device
# cuda --draft MODEL --draft-ranks 3` (SmolLM2 drafting for itself on its own cuda_ipc
# communicator, drafts verified by the TP 3 target) prints exactly the single-rank CUDA
# greedy text. Its own test beside cli_cuda_tp: minutes in the CUDA host mode. Skips (77)
# without CUDA, a device or the model. Usage: test_cli_cuda_tp_draft.sh PATH/TO/specdec
set -u
bin="$1"
. "$(dirname "$0")/lib.sh"
need_model

p="The capital of France is"
"$bin" run -m "$model" -p "$p" -n 3 --temp 0 --device cuda >"$tmp/one" 2>"$tmp/e"; rc=$?
skip_without_cuda "$rc" "$tmp/e"
check "single-rank cuda run exits 0 ($(head -c 300 "$tmp/e"))" [ "$rc" -eq 0 ]

export ENABLE_INTRA_NODE_COMM=1 SPECDEC_LOG=info
"$bin" launch -n 3 -- "$bin" run -m "$model" -p "$p" -n 3 --temp 0 --device cuda \
  --draft "$model" --draft-ranks 3 --k 2 >"$tmp/dr" 2>"$tmp/ed"; rc=$?
check "TP 3 cuda run with a draft group exits 0 ($(tail -c 400 "$tmp/ed"))" [ "$rc" -eq 0 ]
check "the draft group's text == the single-rank cuda text" cmp -s "$tmp/one" "$tmp/dr"
check "every rank finished" [ "$(grep -c 'decode 3 tokens' "$tmp/ed")" -eq 3 ]
check "every rank joined on cuda_ipc" [ "$(grep -c "comm: cuda_ipc for 3 ranks" "$tmp/ed")" -eq 3 ]

finish test_cli_cuda_tp_draft
