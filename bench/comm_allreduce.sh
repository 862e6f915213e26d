#!/usr/bin/env bash
# Allreduce latency and bus bandwidth (nccl-tests definitions, see apps/cli/commbench.c) of the
# intra and mpi backends for 2 and 4 ranks, as one markdown table per rank count:
#   bench/comm_allreduce.sh [SPECDEC [OUT.md]]
# SPECDEC defaults to build/bin/specdec, OUT.md to stdout. Environment: SIZES (commbench
# --sizes, default 4 B .. 64 MiB in powers of 4), ITERS / WARMUP (default: commbench's
# size-dependent counts), DTYPE (f32), RANKS ("2 4"). intra runs under `specdec launch`,
# mpi under mpirun (skipped when mpirun is missing or the build has no mpi backend). The
# raw JSON of every run is kept next to OUT.md as OUT.md.d/<backend>-<ranks>.json.
set -euo pipefail
bin="${1:-build/bin/specdec}"
out="${2:-/dev/stdout}"
ranks="${RANKS:-2 4}"
args=(--dtype "${DTYPE:-f32}")
[ -n "${SIZES:-}" ] && args+=(--sizes "$SIZES")
[ -n "${ITERS:-}" ] && args+=(--iters "$ITERS")
[ -n "${WARMUP:-}" ] && args+=(--warmup "$WARMUP")
if [ "$out" = /dev/stdout ]; then raw=$(mktemp -d); trap 'rm -rf "$raw"' EXIT; else raw="$out.d"; mkdir -p "$raw"; fi
mpirun_flags=(--oversubscribe)
[ "$(id -u)" -eq 0 ] && mpirun_flags+=(--allow-run-as-root)

for n in $ranks; do
  echo "intra, $n ranks ..." >&2
  "$bin" launch -n "$n" -- env SPECDEC_COMM=intra "$bin" commbench "${args[@]}" --json "$raw/intra-$n.json" >&2
  if command -v mpirun > /dev/null; then
    echo "mpi, $n ranks ..." >&2
    mpirun "${mpirun_flags[@]}" -x SPECDEC_COMM=mpi -n "$n" "$bin" commbench "${args[@]}" \
      --json "$raw/mpi-$n.json" >&2 || echo "mpi run failed (no mpi backend?)" >&2
  fi
done

python3 - "$raw" $ranks > "$out" <<'EOF'
import json, os, sys
raw, ranks = sys.argv[1], sys.argv[2:]

def load(name):
    path = os.path.join(raw, name)
    return {r["bytes"]: r for r in json.load(open(path))["results"]} if os.path.exists(path) else {}

def size(b):
    for unit, k in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if b >= k and b % k == 0:
            return f"{b // k} {unit}"
    return f"{b} B"

for n in ranks:
    intra, mpi = load(f"intra-{n}.json"), load(f"mpi-{n}.json")
    print(f"\n### {n} ranks\n")
    print("| size | intra median µs | intra p99 µs | intra busbw GB/s | mpi median µs | mpi p99 µs "
          "| mpi busbw GB/s | mpi / intra latency |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for b in sorted(set(intra) | set(mpi)):
        i, m = intra.get(b), mpi.get(b)
        cell = lambda r, k, f: format(r[k], f) if r else "-"
        ratio = f"{m['median_us'] / i['median_us']:.2f}" if i and m and i["median_us"] > 0 else "-"
        bad = [name for name, r in (("intra", i), ("mpi", m)) if r and not r["ok"]]
        print(f"| {size(b)}{' MISMATCH ' + ','.join(bad) if bad else ''} | {cell(i, 'median_us', '.2f')} "
              f"| {cell(i, 'p99_us', '.2f')} | {cell(i, 'busbw_gbs', '.3f')} | {cell(m, 'median_us', '.2f')} "
              f"| {cell(m, 'p99_us', '.2f')} | {cell(m, 'busbw_gbs', '.3f')} | {ratio} |")
    small = [b for b in intra if b < 256 * 1024 and b in mpi]
    slower = [size(b) for b in sorted(small) if intra[b]["median_us"] >= mpi[b]["median_us"]]
    if small:
        verdict = "yes" if not slower else "no: intra is not faster at " + ", ".join(slower)
        print(f"\nintra beats mpi below 256 KiB (median latency, {n} ranks): {verdict}")
EOF
