#!/usr/bin/env bash
# Tensor parallelism on CUDA end to end: `ENABLE_INTRA_NODE_COMM=1 specdec launch -n 3 --
# specdec run --device cuda` (the cuda_ipc backend: the IPC allreduce kernels inside the
# forward's CUDA graphs; SmolLM2 has 9 heads, so TP 3) prints exactly the single-rank CUDA
# greedy text on every rank; a stalled rank and a killed rank end the others with
# SD_ERR_COMM_TIMEOUT (exit 3) naming the rank, in bounded time, no rank left behind. On a
# GPU, and in the CUDA host mode (few tokens: a token takes seconds there). Skips (77)
# without CUDA, a device or the model. Usage: test_cli_cuda_tp.sh PATH/TO/specdec
set -u
bin="$1"
. "$(dirname "$0")/lib.sh"
need_model

p="The capital of France is"
run() { "$bin" run -m "$model" -p "$p" -n 3 --temp 0 --device cuda "$@"; }
run >"$tmp/one" 2>"$tmp/e"; rc=$?
skip_without_cuda "$rc" "$tmp/e"
check "single-rank cuda run exits 0 ($(head -c 300 "$tmp/e"))" [ "$rc" -eq 0 ]

export ENABLE_INTRA_NODE_COMM=1 SPECDEC_LOG=info
"$bin" launch -n 3 -- "$bin" run -m "$model" -p "$p" -n 3 --temp 0 --device cuda \
  >"$tmp/tp" 2>"$tmp/e3"; rc=$?
check "TP 3 cuda run exits 0 ($(tail -c 400 "$tmp/e3"))" [ "$rc" -eq 0 ]
check "TP 3 text (rank 0's stdout) == the single-rank cuda text" cmp -s "$tmp/one" "$tmp/tp"
check "every rank finished" [ "$(grep -c 'decode 3 tokens' "$tmp/e3")" -eq 3 ]

# hangtest (a draft group of 2 ranks with its own cuda_ipc communicator, drafts broadcast to
# the target group of 3) and commbench on the GPU path (host mode: that they run, not timings)
"$bin" hangtest --ranks 3 --steps 4 --draft-ranks 2 --device cuda >"$tmp/ht" 2>&1; rc=$?
check "hangtest --device cuda exits 0 ($(tail -c 300 "$tmp/ht"))" [ "$rc" -eq 0 ]
check "hangtest --device cuda runs on cuda_ipc" grep -q "comm cuda_ipc" "$tmp/ht"
"$bin" launch -n 2 -- "$bin" commbench --device cuda --sizes 4,300K --iters 2 >"$tmp/cb" 2>&1
rc=$?
check "commbench --device cuda exits 0 ($(tail -c 300 "$tmp/cb"))" [ "$rc" -eq 0 ]
check "commbench --device cuda: cuda_ipc, results checked" \
  grep -q "every result equals the rank-order reference" "$tmp/cb"

# a stalled rank: the others' IPC kernels hit their device deadline, naming rank 1
start=$SECONDS
SPECDEC_FAULT=stall:rank=1:op=30 SPECDEC_COMM_TIMEOUT_MS=3000 "$bin" launch -n 3 -- \
  "$bin" run -m "$model" -p "$p" -n 3 --temp 0 --device cuda >/dev/null 2>"$tmp/es"; rc=$?
check "stalled rank: exit 3 (got $rc)" [ "$rc" -eq 3 ]
check "stalled rank: SD_ERR_COMM_TIMEOUT waiting for rank 1" \
  grep -q "SD_ERR_COMM_TIMEOUT.*waiting for rank 1" "$tmp/es"
check "stalled rank: bounded ($((SECONDS - start)) s)" [ $((SECONDS - start)) -lt 60 ]

# a killed rank: the same (the launcher waits for the survivors: in the host mode they
# compute the rest of the forward, seconds, before its sync reports the failure)
start=$SECONDS
SPECDEC_LAUNCH_GRACE_MS=50000 SPECDEC_FAULT=crash:rank=2:op=30 SPECDEC_COMM_TIMEOUT_MS=3000 \
  "$bin" launch -n 3 -- \
  "$bin" run -m "$model" -p "$p" -n 3 --temp 0 --device cuda >/dev/null 2>"$tmp/ek"; rc=$?
check "killed rank: fails (got $rc)" [ "$rc" -ne 0 ]
check "killed rank: the others name rank 2" \
  grep -Eq "(SD_ERR_COMM_TIMEOUT|SD_ERR_PEER_LOST).*rank 2" "$tmp/ek"
check "killed rank: bounded ($((SECONDS - start)) s)" [ $((SECONDS - start)) -lt 90 ]
check "no rank left running" [ -z "$(pgrep -f -- "-p $p -n 3 --temp 0 --device cuda" || true)" ]

finish test_cli_cuda_tp
