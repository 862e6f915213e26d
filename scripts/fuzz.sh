#!/usr/bin/env bash
# Coverage-guided fuzzing of every tests/fuzz target with libFuzzer (docs/reliability.md):
#   bash scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
# Builds build-fuzz/ with clang (-DSPECDEC_SANITIZE=fuzzer: libFuzzer + ASan + UBSan, CUDA
# off), then runs the `fuzz` CTest label — each fuzz_run_<target> fuzzes SECONDS (default 60)
# from its checked-in corpus (new inputs and crash-* files land in
# build-fuzz/tests/fuzz-work/<target>/) — and prints one summary line per target: time,
# executions, coverage (cov = edges, ft = features), corpus size, crashes.
# SPECDEC_FUZZ_JOBS (default 1) targets run at once; SPECDEC_FUZZ_NICE (default 19) is their
# niceness, so a long run leaves the machine's cores to others. Exit non-zero when a target
# found a crash (its input is kept under fuzz-work/<target>/).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
jobs="${SPECDEC_FUZZ_JOBS:-1}"
niceness="${SPECDEC_FUZZ_NICE:-19}"
bash scripts/install-deps.sh --fuzz
bash scripts/fetch-model.sh >/dev/null # fuzz_tokenizer reads SmolLM2's vocabulary

CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSPECDEC_SANITIZE=fuzzer \
  -DSPECDEC_CUDA=OFF -DSPECDEC_FUZZ_SECONDS="$seconds" >/dev/null
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=($(cd tests/fuzz && for f in fuzz_*.c; do n=${f#fuzz_}; n=${n%.c}; [ -d "$n" ] && echo "$n"; done))
fi
nice -n "$niceness" cmake --build build-fuzz -j "$(nproc)" --target "${targets[@]/#/fuzz_}"
regex="^fuzz_run_($(IFS='|'; echo "${targets[*]}"))\$"
rc=0
(cd build-fuzz && nice -n "$niceness" ctest -L fuzz -R "$regex" -j "$jobs" --output-on-failure) || rc=$?

echo
echo "target | seconds run | exit | executions | exec/s | cov | ft | corpus | crashes"
for t in "${targets[@]}"; do
  log="build-fuzz/tests/fuzz-work/$t/log"
  [ -f "$log" ] || { echo "$t | (no log)"; continue; }
  last=$(grep -aE '^#[0-9]+' "$log" | tail -1 || true) # none when it stopped while loading
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  cov=$(sed -n 's/.* cov: \([0-9]*\) .*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\) .*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9a-zA-Z]*\) .*/\1/p' <<<"$last")
  crashes=$(ls "build-fuzz/tests/fuzz-work/$t" | grep -cE '^(crash|timeout|oom|leak)-' || true)
  read -r rc_t secs_t <"build-fuzz/tests/fuzz-work/$t/summary" || true
  echo "$t | ${secs_t:-?} | ${rc_t:-?} | ${execs:-?} | ${rate:-?} | ${cov:-?} | ${ft:-?} | ${corp:-?} | $crashes"
done
exit "$rc"
