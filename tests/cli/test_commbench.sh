#!/usr/bin/env bash
# End-to-end checks of `specdec commbench`: under `specdec launch -n 2` with the intra
# backend the table names the backend and ranks and has one verified ("ok") row per size,
# the JSON parses with busbw = algbw * 2 (n-1)/n; f16 and bf16 verify too; under mpirun
# (when built and installed) the mpi backend does the same; a single rank runs the single
# backend; bad flags give one error line and exit 2. Usage: test_commbench.sh PATH/TO/specdec
set -u
bin="$1"
. "$(dirname "$0")/lib.sh"
table_ok() { # table file, backend, ranks, sizes...: header and one "ok" row per size
  local f="$1" backend="$2" ranks="$3"; shift 3
  grep -q "^# commbench: backend $backend, $ranks ranks" "$f" || return 1
  grep -q '^# every result equals the rank-order reference on every rank' "$f" || return 1
  [ "$(grep -Ec '^ +[0-9]+ ' "$f")" -eq $# ] || return 1
  for s in "$@"; do grep -Eq "^ +$s +[0-9]+ +[0-9]+ +[0-9.]+ +[0-9.]+ +[0-9.]+ +[0-9.]+  ok$" "$f" || return 1; done
}
json_ok() { # json file, backend, ranks, sizes...
  python3 - "$@" <<'EOF'
import json, sys
path, backend, ranks, sizes = sys.argv[1], sys.argv[2], int(sys.argv[3]), [int(s) for s in sys.argv[4:]]
d = json.load(open(path))
assert d["backend"] == backend and d["ranks"] == ranks and d["date"].endswith("Z"), d
assert [r["bytes"] for r in d["results"]] == sizes, d["results"]
for r in d["results"]:
    assert r["ok"] is True and r["iters"] >= 1 and r["median_us"] > 0 and r["p99_us"] >= r["median_us"], r
    # the bandwidths follow from the median as printed (9 significant digits)
    assert abs(r["algbw_gbs"] - r["bytes"] / r["median_us"] / 1e3) <= 1e-8 * r["algbw_gbs"], r
    assert abs(r["busbw_gbs"] - r["algbw_gbs"] * 2 * (ranks - 1) / ranks) <= 1e-8 * r["busbw_gbs"], r
EOF
}

# ---- intra under specdec launch -------------------------------------------------------------
export SPECDEC_COMM_TIMEOUT_MS=20000
"$bin" launch -n 2 -- env SPECDEC_COMM=intra "$bin" commbench --sizes 4,4K,256K --iters 5 --warmup 1 \
  > "$tmp/table" 2> "$tmp/err"
check "intra, 2 ranks: exit 0" [ $? -eq 0 ]
check "intra table: every size verified" table_ok "$tmp/table" intra 2 4 4096 262144
"$bin" launch -n 2 -- env SPECDEC_COMM=intra "$bin" commbench --sizes 64,128K --iters 3 --json - \
  > "$tmp/json" 2> "$tmp/err"
check "intra JSON" json_ok "$tmp/json" intra 2 64 131072
for dt in f16 bf16; do
  "$bin" launch -n 3 -- env SPECDEC_COMM=intra "$bin" commbench --dtype $dt --sizes 2,1K,200K --iters 3 \
    > "$tmp/table" 2> "$tmp/err"
  check "intra $dt, 3 ranks" table_ok "$tmp/table" intra 3 2 1024 204800
done
"$bin" launch -n 2 -- env SPECDEC_COMM=intra "$bin" commbench --sizes 16 --iters 2 --json "$tmp/out.json" \
  > "$tmp/table" 2> "$tmp/err"
check "--json FILE: table on stdout" table_ok "$tmp/table" intra 2 16
check "--json FILE: the JSON" json_ok "$tmp/out.json" intra 2 16

# ---- mpi under mpirun ---------------------------------------------------------------------------
if command -v mpirun > /dev/null; then
  # (sanitizer builds: Open MPI's own allocations outlive MPI_Finalize)
  LSAN_OPTIONS="suppressions=$(dirname "$0")/../mpi/lsan.supp:print_suppressions=0" \
  ASAN_OPTIONS="${ASAN_OPTIONS:-}${ASAN_OPTIONS:+:}fast_unwind_on_malloc=0" \
    mpirun --allow-run-as-root --oversubscribe -x SPECDEC_COMM=mpi -n 2 "$bin" commbench --sizes 4,256K --iters 3 \
    > "$tmp/table" 2> "$tmp/err"; rc=$?
  if grep -q 'has no mpi backend' "$tmp/err"; then
    echo "note: mpi part skipped (this build has no mpi backend)"
  else
    check "mpi, 2 ranks: exit 0" [ $rc -eq 0 ]
    check "mpi table" table_ok "$tmp/table" mpi 2 4 262144
  fi
else
  echo "note: mpi part skipped (no mpirun)"
fi

# ---- one rank, bad flags ----------------------------------------------------------------------------
"$bin" commbench --sizes 4,1K --iters 2 > "$tmp/table" 2> "$tmp/err"
check "single rank" table_ok "$tmp/table" single 1 4 1024
for args in "--sizes 0" "--sizes 4,,8x" "--sizes 6" "--dtype f64" "--iters 0" "--warmup -1" "--bogus 1" "--iters"; do
  "$bin" commbench $args > /dev/null 2> "$tmp/err"; rc=$?
  check "commbench $args is a usage error" usage_error $rc "$tmp/err"
done

finish test_commbench
