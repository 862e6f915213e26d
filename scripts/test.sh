#!/usr/bin/env bash
# Builds specdec and runs the whole default test suite (everything but `slow`):
# a release build, then an AddressSanitizer+UBSan build of the same tests, then a
# ThreadSanitizer build of the multi-threaded suites (tests/tsan.cmake).
# Installs what it needs first. SPECDEC_SKIP_ASAN=1 / SPECDEC_SKIP_TSAN=1 skip those passes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/fetch-model.sh >/dev/null
jobs=$(nproc)

cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSPECDEC_TESTS=ON >/dev/null
cmake --build build -j "$jobs"
(cd build && ctest --output-on-failure -j "$jobs" -LE slow)

if [ "${SPECDEC_SKIP_ASAN:-0}" != 1 ]; then
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSPECDEC_SANITIZE=address >/dev/null
  cmake --build build-asan -j "$jobs"
  # the longest tests skip or shrink here (SPECDEC_TEST_SANITIZER_PASS): they ran in full above
  (cd build-asan && ASAN_OPTIONS=detect_leaks=1 SPECDEC_TEST_SANITIZER_PASS=1 \
     ctest --output-on-failure -j "$jobs" -LE 'slow|reference')
fi

if [ "${SPECDEC_SKIP_TSAN:-0}" != 1 ]; then
  # the scheduler, thread pool, comm (intra, watchdog, mpi), concurrent generation and the
  # server under TSan: their own runner (Criterion cannot start under TSan), no CUDA code
  cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSPECDEC_SANITIZE=thread \
    -DSPECDEC_CUDA=OFF >/dev/null
  cmake --build build-tsan -j "$jobs"
  (cd build-tsan && ctest --output-on-failure -j "$jobs" -L tsan)
fi
