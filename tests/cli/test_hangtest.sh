#!/usr/bin/env bash
# The hang-regression harness end to end: `specdec hangtest` on random models, over the
# intra backend (forked ranks) and the mpi backend (mpirun), target groups of 2 and 4 ranks
# with draft groups of 1 and 2, STEPS speculative steps each (default 2000; the slow test
# runs 100000), with every step's data-dependent payload allreduce checked. Then the faults:
# a stalled rank -> exit 3 (timeout) with the stall reported in time, a crashed rank ->
# exit 5 (peer death), a corrupted token -> exit 4 (divergence) naming the step; never a
# hang, no rank left running, no /dev/shm segment left behind. Every run has its own
# deadline (`bounded`): a run that hangs — deadlines broken in the comm layer, say — fails
# its check after that many seconds (exit 124) instead of running into CTest's timeout.
# Usage: test_hangtest.sh PATH/TO/specdec [STEPS]
set -u
bin="$1"
steps="${2:-2000}"
if [ "${SPECDEC_TEST_SANITIZER_PASS:-0}" = 1 ] && [ "$steps" -gt 300 ]; then
  echo "note: sanitizer pass: $steps steps cut to 300 (the release pass runs them all)"
  steps=300
fi
. "$(dirname "$0")/lib.sh"
export SPECDEC_COMM_TIMEOUT_MS=20000
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
shm_before=$(ls /dev/shm | grep -c '^specdec-' || true)
bounded() { # seconds, command...: the command, killed (exit 124, or 137 after 5 s more) when it hangs
  local secs="$1"; shift
  timeout -k 5 "$secs" "$@"
}
clean_secs=$((120 + steps / 10)) # a clean run: 2,000 steps take 10-40 s here
fault_secs=45                    # a fault run ends within the 1.5 s deadline + grace

clean_run() { # name, args...: exit 0 and the "ok" summary line
  local name="$1"; shift
  bounded "$clean_secs" "$@" >"$tmp/out" 2>"$tmp/err"; local rc=$?
  check "$name: exit 0 (got $rc)" [ "$rc" -eq 0 ]
  check "$name: $steps steps ok" grep -q " $steps steps in .*: ok$" "$tmp/out"
  [ "$rc" -eq 0 ] || tail -5 "$tmp/err"
  grep -o '([0-9.]* steps/s), max step latency [0-9.]* ms' "$tmp/out" | sed "s/^/  $name: /"
}

clean_run "intra T=2 D=1" "$bin" hangtest --ranks 2 --steps "$steps"
clean_run "intra T=4 D=1" "$bin" hangtest --ranks 4 --steps "$steps"
clean_run "intra T=4 D=2" "$bin" hangtest --ranks 4 --draft-ranks 2 --steps "$steps"
clean_run "intra T=2 ngram" "$bin" hangtest --ranks 2 --draft ngram --steps "$steps"
if command -v mpirun >/dev/null && bounded 60 "$bin" hangtest --ranks 1 --steps 1 --comm mpi >/dev/null 2>&1; then
  clean_run "mpi T=2 D=1" mpirun --oversubscribe -n 2 "$bin" hangtest --ranks 2 --comm mpi --steps "$steps"
  clean_run "mpi T=4 D=2" mpirun --oversubscribe -n 4 "$bin" hangtest --ranks 4 --draft-ranks 2 --comm mpi --steps "$steps"
  # a stalled rank under mpi is named by the others, as under intra
  SPECDEC_COMM_TIMEOUT_MS=1500 SPECDEC_FAULT=stall:rank=1:op=300 bounded "$fault_secs" \
    mpirun --oversubscribe -n 2 "$bin" hangtest --ranks 2 --comm mpi --steps 400 --seed 3 \
    >"$tmp/out" 2>"$tmp/err"; rc=$?
  check "mpi stall: exit 3 (got $rc)" [ "$rc" -eq 3 ]
  check "mpi stall: rank 1 named" grep -q "SD_ERR_COMM_TIMEOUT: .*rank(s) 1 had not arrived" "$tmp/err"
else
  echo "note: mpi backend not built or mpirun missing: mpi runs skipped"
fi

# Faults, with a 1.5 s collective timeout.
fault_run() { # name, fault, expected exit code, stderr pattern
  local start end rc
  start=$(date +%s%N)
  SPECDEC_COMM_TIMEOUT_MS=1500 SPECDEC_FAULT="$2" bounded "$fault_secs" "$bin" hangtest --ranks 2 \
    --steps 400 --seed 3 >"$tmp/out" 2>"$tmp/err"; rc=$?
  end=$(date +%s%N)
  check "$1: exit $3 (got $rc)" [ "$rc" -eq "$3" ]
  check "$1: reported '$4'" grep -q "$4" "$tmp/err"
  ms=$(( (end - start) / 1000000 ))
  echo "  $1: whole job ended in $ms ms"
  sleep 0.2; check "$1: no rank left running" bash -c "! pgrep -f '[s]pecdec hangtest --ranks 2 --steps 400 --seed 3' >/dev/null"
}
fault_run stall "stall:rank=1:op=300" 3 "SD_ERR_COMM_TIMEOUT: .*rank(s) 1 had not arrived"
check "stall: flight record printed" grep -q "specdec flight:" "$tmp/err"
fault_run crash "crash:rank=1:op=300" 5 "SD_ERR_PEER_LOST: .*rank 1"
fault_run corrupt "corrupt:rank=1:step=20" 4 "SD_ERR_RANK_DIVERGENCE: ranks disagree on the tokens of step 20"
fault_run corrupt-draft "corrupt-draft:rank=1:step=20" 4 "SD_ERR_RANK_DIVERGENCE: ranks disagree on the tokens of step"
SPECDEC_FAULT=delay:rank=1:ms=1 bounded "$fault_secs" "$bin" hangtest --ranks 2 --steps 100 >"$tmp/out" 2>&1
check "delay: still completes" grep -q " 100 steps in .*: ok$" "$tmp/out"
SPECDEC_FAULT=bogus bounded "$fault_secs" "$bin" hangtest --ranks 2 --steps 10 >"$tmp/out" 2>"$tmp/err"; rc=$?
check "malformed SPECDEC_FAULT: non-zero exit" [ "$rc" -ne 0 ]
check "malformed SPECDEC_FAULT: named" grep -q "bogus" "$tmp/err"

# Stall reported within timeout + 2 s of the stall: rank 0's own report time.
SPECDEC_COMM_TIMEOUT_MS=1500 SPECDEC_FAULT=stall:rank=1:op=5 SPECDEC_LAUNCH_GRACE_MS=200 \
  bounded "$fault_secs" "$bin" hangtest --ranks 2 --steps 50 >"$tmp/out" 2>"$tmp/err"; rc=$?
check "early stall: exit 3 (got $rc)" [ "$rc" -eq 3 ]

# Bad flags: one error line, exit 2.
bounded 30 "$bin" hangtest --ranks 0 >"$tmp/out" 2>"$tmp/err"; check "--ranks 0" usage_error $? "$tmp/err"
bounded 30 "$bin" hangtest --ranks 2 --draft-ranks 3 >"$tmp/out" 2>"$tmp/err"; check "--draft-ranks > ranks" usage_error $? "$tmp/err"
bounded 30 "$bin" hangtest --comm carrier-pigeon >"$tmp/out" 2>"$tmp/err"; check "--comm unknown" usage_error $? "$tmp/err"

shm_after=$(ls /dev/shm | grep -c '^specdec-' || true)
check "no /dev/shm segments left ($shm_before before, $shm_after after)" [ "$shm_after" -le "$shm_before" ]
finish test_hangtest
