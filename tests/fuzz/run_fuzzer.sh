#!/usr/bin/env bash
# One bounded libFuzzer run (the `fuzz` CTest label; scripts/fuzz.sh for long runs):
#   run_fuzzer.sh FUZZER SEED_CORPUS SECONDS WORKDIR [libFuzzer flags...]
# Fuzzes for SECONDS from the checked-in seeds plus WORKDIR/corpus (new inputs go there, never
# into the source tree), with a 10 s limit per input (a slow input is a finding: no silent hang)
# and 2 GiB of RSS. Prints libFuzzer's final statistics and a one-line summary; exits non-zero
# with the crashing input saved as WORKDIR/crash-* (or timeout-*, oom-*) when a property fails.
set -u
fuzzer="$1" seeds="$2" seconds="$3" work="$4"
shift 4
mkdir -p "$work/corpus"
name=$(basename "$seeds")
dict="$(dirname "$seeds")/$name.dict"
# -error_exitcode: libFuzzer's default, 77, is CTest's skip code here
args=(-max_total_time="$seconds" -error_exitcode=1 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
      -artifact_prefix="$work/" -max_len=65536)
[ -f "$dict" ] && args+=(-dict="$dict")
start=$(date +%s)
"$fuzzer" "${args[@]}" "$@" "$work/corpus" "$seeds" >"$work/log" 2>&1
rc=$?
end=$(date +%s)
grep -E '^stat::|^(INFO|==|SUMMARY|fuzz property)' "$work/log" | grep -v '^INFO: Seed\|^INFO: Loaded' | tail -30
last=$(grep -E '^#[0-9]+' "$work/log" | tail -1)
execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log")
echo "$rc $((end - start))" >"$work/summary" # for scripts/fuzz.sh's table
echo "fuzz $name: rc $rc, $((end - start)) s, ${execs:-?} executions; last status: ${last:-none}"
echo "fuzz $name: corpus now $(ls "$work/corpus" | wc -l) inputs in $work/corpus; log $work/log"
if [ "$rc" -ne 0 ]; then
  ls "$work"/crash-* "$work"/timeout-* "$work"/oom-* "$work"/leak-* 2>/dev/null | sed 's/^/artifact: /'
  tail -60 "$work/log"
fi
exit "$rc"
