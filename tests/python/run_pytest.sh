#!/usr/bin/env bash
# python/tests under pytest, against this build's libspecdec.so (SPECDEC_LIB), the C test
# helper and the specdec command. Usage: run_pytest.sh LIB PY_HELPER SPECDEC_CLI SOURCE_DIR.
# Exits 77 (ctest: skipped), saying why, when pytest is not installed.
set -u
lib=$1 helper=$2 cli=$3 src=$4
if ! python3 -c "import pytest" 2>/dev/null; then
  echo "SKIP: pytest is not installed (scripts/install-deps.sh installs it)"
  exit 77
fi
export SPECDEC_LIB="$lib" SPECDEC_PY_HELPER="$helper" SPECDEC_CLI="$cli"
export PYTHONPATH="$src/python${PYTHONPATH:+:$PYTHONPATH}" PYTHONDONTWRITEBYTECODE=1
exec python3 -m pytest -q -p no:cacheprovider -rs "$src/python/tests"
