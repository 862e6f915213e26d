#!/usr/bin/env bash
# Installs what specdec needs to build and test on Debian: compilers, CMake, Criterion, Open MPI,
# the server's libraries (libmicrohttpd, cJSON; libcurl and curl for its tests), and the Python
# packages used by the reference checks, the server's client test and the Python package.
# Idempotent; skips what is there. --fuzz also installs clang and its libFuzzer runtime
# (scripts/fuzz.sh).
set -euo pipefail

need_apt=()
command -v cmake >/dev/null || need_apt+=(cmake)
command -v cc >/dev/null || need_apt+=(build-essential)
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
pkg-config --exists criterion 2>/dev/null || need_apt+=(libcriterion-dev)
command -v python3 >/dev/null || need_apt+=(python3)
python3 -m pip --version >/dev/null 2>&1 || need_apt+=(python3-pip)
python3 -c "import ensurepip" 2>/dev/null || need_apt+=(python3-venv) # the pip-install test
command -v unzip >/dev/null || need_apt+=(unzip)
# The `mpi` comm backend and mpirun for its tests (CPU ranks; the CPU counterpart of NCCL).
command -v mpicc >/dev/null || need_apt+=(libopenmpi-dev)
command -v mpirun >/dev/null || need_apt+=(openmpi-bin)
# `specdec serve`: HTTP server and JSON libraries; libcurl and curl for its tests.
pkg-config --exists libmicrohttpd 2>/dev/null || need_apt+=(libmicrohttpd-dev)
pkg-config --exists libcjson 2>/dev/null || need_apt+=(libcjson-dev)
pkg-config --exists libcurl 2>/dev/null || need_apt+=(libcurl4-openssl-dev)
command -v curl >/dev/null || need_apt+=(curl)
# scripts/fuzz.sh (install-deps.sh --fuzz): clang with its libFuzzer runtime.
if [ "${1:-}" = "--fuzz" ]; then
  command -v clang >/dev/null || need_apt+=(clang)
  if ! echo 'int LLVMFuzzerTestOneInput(const char *d, long n) { return 0; }' |
      clang -x c -fsanitize=fuzzer -o /dev/null - 2>/dev/null; then
    need_apt+=(libclang-rt-dev)
  fi
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# Reference checks: NumPy forward over the GGUF file, HF tokenizers as the reference tokenizer,
# jinja2 as the reference chat-template renderer (tests/fuzz/chat_jinja.py); the official
# OpenAI client for the server's client test (tests/serve/test_openai_client.py); pytest for
# the Python package's tests, setuptools and wheel to `pip install ./python` offline.
py_missing=$(python3 - <<'PY'
import importlib.util
need = {"numpy": "numpy", "gguf": "gguf==0.19.0", "tokenizers": "tokenizers",
        "openai": "openai", "jinja2": "jinja2", "pytest": "pytest", "setuptools": "setuptools",
        "wheel": "wheel"}
print(" ".join(v for k, v in need.items() if importlib.util.find_spec(k) is None))
PY
)
if [ -n "$py_missing" ]; then
  # shellcheck disable=SC2086
  python3 -m pip install -q $py_missing 2>/dev/null ||
    python3 -m pip install -q --break-system-packages $py_missing
fi
