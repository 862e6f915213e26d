#!/usr/bin/env bash
# Builds specdec and runs the whole default test suite (everything but `slow`):
# a release build, then an AddressSanitizer+UBSan build of the same tests, then a
# ThreadSanitizer build of the multi-threaded suites (tests/tsan.cmake), then the CUDA tests
# in the CUDA host mode (the CUDA sources as host code, kernels run on the CPU). Installs what
# it needs first. SPECDEC_SKIP_ASAN=1 / SPECDEC_SKIP_TSAN=1 / SPECDEC_SKIP_CUDA_SIM=1 skip
# those passes; each pass prints its time ("pass NAME: N s").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/fetch-model.sh >/dev/null
jobs=$(nproc)
# the time of each pass (its build and its tests), for the CI budget (docs/cuda.md, "Cost")
pass_start=$SECONDS
pass_done() { echo "pass $1: $((SECONDS - pass_start)) s"; pass_start=$SECONDS; }

cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSPECDEC_TESTS=ON >/dev/null
cmake --build build -j "$jobs"
(cd build && ctest --output-on-failure -j "$jobs" -LE slow)
pass_done release

if [ "${SPECDEC_SKIP_ASAN:-0}" != 1 ]; then
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSPECDEC_SANITIZE=address >/dev/null
  cmake --build build-asan -j "$jobs"
  # the longest tests skip or shrink here (SPECDEC_TEST_SANITIZER_PASS): they ran in full above
  (cd build-asan && ASAN_OPTIONS=detect_leaks=1 SPECDEC_TEST_SANITIZER_PASS=1 \
     ctest --output-on-failure -j "$jobs" -LE 'slow|reference')
  pass_done asan
fi

if [ "${SPECDEC_SKIP_TSAN:-0}" != 1 ]; then
  # the scheduler, thread pool, comm (intra, watchdog, mpi), concurrent generation and the
  # server under TSan: their own runner (Criterion cannot start under TSan), no CUDA code
  cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSPECDEC_SANITIZE=thread \
    -DSPECDEC_CUDA=OFF >/dev/null
  cmake --build build-tsan -j "$jobs"
  (cd build-tsan && ctest --output-on-failure -j "$jobs" -L tsan)
  pass_done tsan
fi

# The CUDA host mode (docs/cuda.md, "The CUDA host mode"): every CUDA test executes, and the
# kernel tests run again with the threads of each block in reverse and in a seeded random
# order (a result that changes is a missing barrier or a race), and under ASan+UBSan.
if [ "${SPECDEC_SKIP_CUDA_SIM:-0}" != 1 ]; then
  kernel_tests="test_cuda_lang test_cuda_device test_cuda_backend test_cuda_ops test_cuda_matmul test_cuda_verify
                test_comm_cuda_kernels"
  kernel_regex="^($(echo $kernel_tests | tr ' ' '|'))\$"
  cmake -S . -B build-cudasim -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSPECDEC_CUDA_SIM=ON >/dev/null
  # shellcheck disable=SC2086
  cmake --build build-cudasim -j "$jobs" --target $kernel_tests test_cuda_engine test_cuda_serving \
    test_comm_cuda_intra test_comm_nccl test_cuda_tp test_cuda_serve_tp specdec_cli
  (cd build-cudasim && ctest --output-on-failure -j "$jobs" -L cuda -LE slow)
  # what executed there (a skipped test does not count as tested): one line per test binary
  awk '/ Testing: /{t=$3} /Synthesis/{sub(/.*Synthesis: /, ""); print "  " t ": " $0}' \
    build-cudasim/Testing/Temporary/LastTest.log
  pass_done cudasim
  for schedule in reverse random:1; do
    (cd build-cudasim && SPECDEC_CUDA_SIM_SCHEDULE=$schedule ctest --output-on-failure -j "$jobs" -R "$kernel_regex")
  done
  pass_done cudasim-schedules
  if [ "${SPECDEC_SKIP_ASAN:-0}" != 1 ]; then
    cmake -S . -B build-cudasim-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSPECDEC_CUDA_SIM=ON \
      -DSPECDEC_SANITIZE=address >/dev/null
    # shellcheck disable=SC2086
    cmake --build build-cudasim-asan -j "$jobs" --target $kernel_tests
    (cd build-cudasim-asan && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure -j "$jobs" -R "$kernel_regex")
    pass_done cudasim-asan
  fi
fi
