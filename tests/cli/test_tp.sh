#!/usr/bin/env bash
# Tensor parallelism end to end on the real SmolLM2 (9 heads, 3 KV heads: splits over 3
# ranks): greedy text under `specdec launch -n 3` (intra backend) and `mpirun -n 3` (mpi)
# is byte-identical to the single-rank run, target-only and with the n-gram, layer-skip and
# draft-model drafters (the draft model on rank 0 only: --draft-ranks 1), token trees
# included (the draft rank's, and a TP target's with a local drafter); seeded sampled TP runs
# (a q-tree among them) are reproducible; a stalled or killed draft rank ends a tree run
# naming it; 2 ranks are refused with SD_ERR_TP_PLAN naming the numbers on
# every rank; under mpirun, ranks given different contexts (-c) are refused at once on every
# rank. Usage: test_tp.sh PATH/TO/specdec
set -u
bin="$1"
model="${SPECDEC_MODEL:-${XDG_CACHE_HOME:-$HOME/.cache}/specdec/SmolLM2-135M-Instruct.Q4_1.gguf}"
[ -r "$model" ] || { echo "SKIP: model $model not present"; exit 77; }
. "$(dirname "$0")/lib.sh"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 SPECDEC_COMM_TIMEOUT_MS=60000
p="def fibonacci(n):
    # return the n-th Fibonacci number
"
run=(run -m "$model" -p "$p" -n 24 --temp 0 -t 1)

"$bin" "${run[@]}" >"$tmp/single" 2>"$tmp/err"
check "single rank runs" [ -s "$tmp/single" ]

same_as_single() { # name, command...: exit 0 and stdout identical to the single-rank text
  local name="$1"; shift
  "$@" >"$tmp/out" 2>"$tmp/err"; local rc=$?
  check "$name: exit 0 (got $rc)" [ "$rc" -eq 0 ]
  check "$name: text identical to the single rank" cmp -s "$tmp/out" "$tmp/single"
  [ "$rc" -eq 0 ] || tail -3 "$tmp/err"
}
same_as_single "launch -n 3" "$bin" launch -n 3 -- "$bin" "${run[@]}"
same_as_single "launch -n 3 ngram" "$bin" launch -n 3 -- "$bin" "${run[@]}" --draft ngram --k 4
same_as_single "launch -n 3 layerskip" "$bin" launch -n 3 -- "$bin" "${run[@]}" --draft layerskip:20
same_as_single "launch -n 3 draft model on rank 0" \
  "$bin" launch -n 3 -- "$bin" "${run[@]}" --draft "$model" --draft-ranks 1 --k 3
# token trees: the draft rank's (static, dynamic), a TP target's with a local drafter
for tree in "--draft $model --draft-ranks 1 --tree 4x2x2x1" "--draft $model --draft-ranks 1 --tree dynamic:12" \
            "--draft layerskip:20 --tree 3x2x1"; do
  # shellcheck disable=SC2086
  same_as_single "launch -n 3 $tree" "$bin" launch -n 3 -- "$bin" "${run[@]}" --stats $tree
  check "launch -n 3 $tree: drafted" grep -q "drafted [1-9]" "$tmp/err"
done

# sampled q-trees from the draft rank: the same seed gives the same text
qtree=(launch -n 3 -- "$bin" run -m "$model" -p "$p" -n 24 --temp 0.8 --seed 7 -t 1 \
  --draft "$model" --draft-ranks 1 --tree 3x2x1 --tree-sample q)
"$bin" "${qtree[@]}" >"$tmp/s1" 2>"$tmp/err"; rc1=$?
"$bin" "${qtree[@]}" >"$tmp/s2" 2>"$tmp/err"; rc2=$?
check "sampled q-tree TP runs (rc $rc1, $rc2)" [ "$((rc1 + rc2))" -eq 0 ]
check "sampled q-tree TP run is reproducible" cmp -s "$tmp/s1" "$tmp/s2"

# the draft rank stalls, then dies, mid-run (collective 131: the first tree step's broadcast
# of the tree's tokens when this was written): the target ranks' wait ends naming rank 0
start=$SECONDS
SPECDEC_FAULT=stall:rank=0:op=131 SPECDEC_COMM_TIMEOUT_MS=3000 "$bin" launch -n 3 -- \
  "$bin" "${run[@]}" --draft "$model" --draft-ranks 1 --tree 4x2x2x1 >/dev/null 2>"$tmp/es"; rc=$?
check "stalled draft rank: exit 3 (got $rc)" [ "$rc" -eq 3 ]
check "stalled draft rank: SD_ERR_COMM_TIMEOUT naming rank 0" \
  grep -q "SD_ERR_COMM_TIMEOUT.*rank(s) 0 had not arrived" "$tmp/es"
check "stalled draft rank: bounded ($((SECONDS - start)) s)" [ $((SECONDS - start)) -lt 60 ]
start=$SECONDS
SPECDEC_FAULT=crash:rank=0:op=131 SPECDEC_COMM_TIMEOUT_MS=3000 "$bin" launch -n 3 -- \
  "$bin" "${run[@]}" --draft "$model" --draft-ranks 1 --tree 4x2x2x1 >/dev/null 2>"$tmp/ek"; rc=$?
check "killed draft rank: fails (got $rc)" [ "$rc" -ne 0 ]
check "killed draft rank: the others name rank 0" \
  grep -Eq "(SD_ERR_COMM_TIMEOUT|SD_ERR_PEER_LOST).*rank 0" "$tmp/ek"
check "killed draft rank: bounded ($((SECONDS - start)) s)" [ $((SECONDS - start)) -lt 90 ]

if command -v mpirun >/dev/null && "$bin" hangtest --ranks 1 --steps 1 --comm mpi >/dev/null 2>&1; then
  # Open MPI gives ranks a pty for stdout, so `run` ends its text with the newline it
  # prints on terminals: compare without it.
  mpirun --oversubscribe -n 3 "$bin" "${run[@]}" >"$tmp/out" 2>"$tmp/err"; rc=$?
  check "mpirun -n 3: exit 0 (got $rc)" [ "$rc" -eq 0 ]
  check "mpirun -n 3: text identical to the single rank" \
    cmp -s <(printf '%s' "$(cat "$tmp/out")") <(printf '%s' "$(cat "$tmp/single")")
  # ranks started with different contexts: refused on every rank before the first token
  long=(run -m "$model" -p "$p" -n 2000 --temp 0 -t 1)
  start=$(date +%s)
  timeout -k 5 60 mpirun --oversubscribe -n 1 "$bin" "${long[@]}" -c 256 : -n 2 "$bin" "${long[@]}" \
    >"$tmp/out" 2>"$tmp/err"; rc=$? secs=$(( $(date +%s) - start ))
  check "mpirun, -c 256 on rank 0 only: exit 4 (got $rc)" [ "$rc" -eq 4 ]
  check "mpirun, -c 256 on rank 0 only: within 30 s (took $secs s)" [ "$secs" -lt 30 ]
  check "mpirun, -c 256 on rank 0 only: every rank names the context sizes" [ "$(grep -c \
    'SD_ERR_RANK_DIVERGENCE: rank 1 was given a different request than rank 0: the context size (n_ctx) is 256 on rank 0, 4096 on rank 1' \
    "$tmp/err")" -eq 3 ]
  check "mpirun, -c 256 on rank 0 only: no text" [ ! -s "$tmp/out" ]
fi

sampled=(run -m "$model" -p "Once upon a time" -n 16 --temp 0.8 --seed 9 -t 1)
"$bin" launch -n 3 -- "$bin" "${sampled[@]}" >"$tmp/s1" 2>/dev/null
"$bin" launch -n 3 -- "$bin" "${sampled[@]}" >"$tmp/s2" 2>/dev/null
check "sampled TP run reproducible" cmp -s "$tmp/s1" "$tmp/s2"
check "sampled TP run produced text" [ -s "$tmp/s1" ]

"$bin" launch -n 2 -- "$bin" "${run[@]}" >"$tmp/out" 2>"$tmp/err"; rc=$?
check "2 ranks refused: exit 1 (got $rc)" [ "$rc" -eq 1 ]
check "2 ranks refused: rank 0 names the plan" grep -q '^\[rank 0\] specdec: error: load model: SD_ERR_TP_PLAN: .*9 .*heads.* 2' "$tmp/err"
check "2 ranks refused: rank 1 too" grep -q '^\[rank 1\] specdec: error: load model: SD_ERR_TP_PLAN' "$tmp/err"
check "2 ranks refused: no text" [ ! -s "$tmp/out" ]
finish test_tp
