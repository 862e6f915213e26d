#!/usr/bin/env bash
# `specdec run --device cuda` end to end on the default model: the same greedy text as
# `--device cpu`, target-only and speculative. On a GPU, and in the CUDA host mode (where it
# is the end-to-end run of the CUDA backend; docs/cuda.md). Skips (77) in a build without
# CUDA, on a machine without a device, or without the model. Usage: test_cli_cuda.sh PATH/TO/specdec
set -u
bin="$1"
. "$(dirname "$0")/lib.sh"
need_model

p="The capital of France is"
"$bin" run -m "$model" -p "$p" -n 10 --temp 0 --device cuda >"$tmp/cuda" 2>"$tmp/e"; rc=$?
skip_without_cuda "$rc" "$tmp/e"
"$bin" run -m "$model" -p "$p" -n 10 --temp 0 --device cpu -t 2 >"$tmp/cpu" 2>/dev/null
check "cuda run exits 0 ($(head -c 300 "$tmp/e"))" [ "$rc" -eq 0 ]
check "cuda greedy text is non-empty" [ -s "$tmp/cuda" ]
check "cuda greedy text == cpu greedy text" cmp -s "$tmp/cuda" "$tmp/cpu"

q="Repeat this list twice: red, green, blue."
"$bin" chat -m "$model" -p "$q" -n 10 --temp 0 --device cpu -t 2 >"$tmp/g0" 2>/dev/null
"$bin" chat -m "$model" -p "$q" -n 10 --temp 0 --device cuda --draft ngram --k 4 >"$tmp/g1" 2>"$tmp/e1"; rc=$?
check "cuda speculative run exits 0 ($(head -c 300 "$tmp/e1"))" [ "$rc" -eq 0 ]
check "cuda --draft ngram greedy == cpu plain greedy" cmp -s "$tmp/g0" "$tmp/g1"

finish test_cli_cuda
