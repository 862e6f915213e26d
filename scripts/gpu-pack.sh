#!/usr/bin/env bash
# Here (no GPU needed): builds the CUDA tests and benchmarks and packs what the GPU machine
# needs into .gpu/ (ignored; name it in the device tool's `carry`): the test and benchmark
# binaries (Criterion linked in statically except its runtime, which
# ../shared/gpu/criterion-runtime.sh adds) — about 20 MB. Then, on the GPU machine:
#   bash scripts/gpu-check.sh            # every CUDA test, compute-sanitizer, benchmarks -> $OUT
set -euo pipefail
cd "$(dirname "$0")/.."
targets="specdec_cli roofline test_cuda_lang test_cuda_device test_cuda_backend test_cuda_ops
         test_cuda_matmul test_cuda_verify test_cuda_engine test_cuda_serving test_comm_cuda_kernels
         test_comm_cuda_intra test_comm_nccl"
cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSPECDEC_TESTS=ON -DSPECDEC_BENCH=ON >/dev/null
# shellcheck disable=SC2086
cmake --build build-gpu -j "$(nproc)" --target $targets
rm -rf .gpu/bin
mkdir -p .gpu/bin
cp build-gpu/bin/specdec build-gpu/bin/roofline .gpu/bin/
for t in $targets; do [ -x "build-gpu/tests/$t" ] && cp "build-gpu/tests/$t" .gpu/bin/; done
[ -d .gpu/criterion/lib ] || bash ../shared/gpu/criterion-runtime.sh .gpu/criterion
du -sh .gpu
