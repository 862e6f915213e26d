#!/usr/bin/env bash
# There (the GPU machine, after scripts/gpu-pack.sh here and `carry: [".gpu"]`): runs every
# CUDA test, compute-sanitizer (memcheck, racecheck) on the kernel tests, and the decode
# roofline benchmarks. Logs land in $OUT (summary.txt: one line per step with its exit code
# and seconds). Usage: gpu-check.sh [tests] [sanitize] [bench] (default: all three). Each
# step has its own timeout (90 s); a full run should take a few minutes, but the worst case
# of all three parts passes the device tool's 10-minute command limit, so a first call on a
# fresh machine should ask for `tests bench` and a second one for `sanitize`.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/specdec-gpu}
mkdir -p "$out"
export LD_LIBRARY_PATH=$PWD/.gpu/criterion/lib:${LD_LIBRARY_PATH:-}
nccl=$(python3 -c "import nvidia.nccl as m; print(list(m.__path__)[0])" 2>/dev/null) &&
  export LD_LIBRARY_PATH=$nccl/lib:$LD_LIBRARY_PATH
bin=.gpu/bin
step() { # name, timeout seconds, log file, command...
  local name=$1 secs=$2 log=$3; shift 3
  local t0=$SECONDS
  echo "== $name" >>"$out/$log"
  timeout "$secs" "$@" >>"$out/$log" 2>&1
  echo "$name: rc=$? in $((SECONDS - t0)) s" | tee -a "$out/summary.txt"
}
parts=${*:-tests sanitize bench}
{ date -u; nvidia-smi; } >"$out/device.txt" 2>&1
case " $parts " in *" tests "*)
  for t in test_cuda_lang test_cuda_device test_cuda_backend test_cuda_ops test_cuda_matmul test_cuda_verify \
           test_cuda_engine test_cuda_serving test_comm_cuda_kernels test_comm_cuda_intra test_comm_nccl; do
    step "$t" 90 tests.log "$bin/$t" --jobs 1 --verbose
  done ;;
esac
case " $parts " in *" sanitize "*)
  for t in test_cuda_ops test_cuda_matmul test_cuda_verify; do
    for tool in memcheck racecheck; do
      step "$t $tool" 90 sanitizer.log compute-sanitizer --tool "$tool" --target-processes all \
        --error-exitcode 9 "$bin/$t" --jobs 1
    done
  done ;;
esac
case " $parts " in *" bench "*)
  for ty in bf16 q8_0 q4_k; do
    step "roofline llama7b x4 $ty" 90 bench.txt "$bin/roofline" --shape llama7b --layers 4 --type "$ty"
  done
  step "roofline smollm2 q4_1" 60 bench.txt "$bin/roofline" --shape smollm2 --type q4_1 --tokens 256 ;;
esac
cat "$out/summary.txt"
