#!/usr/bin/env bash
# `pip install ./python` into a fresh virtual environment finds the C library (SPECDEC_LIB,
# this build's) and puts it in the package; the installed package, imported from outside
# the source tree, loads it and generates. (Building the library inside pip instead is the
# same cmake build of the specdec_shared target.) Usage: test_pip_install.sh LIB PY_HELPER SRC.
# Exits 77 naming why when venv, setuptools or wheel are missing.
set -u
lib=$1 helper=$2 src=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp" "$src/python/build" "$src/python/specdec.egg-info"' EXIT
python3 -c "import setuptools, wheel, venv" 2>/dev/null ||
  { echo "SKIP: python3 lacks venv, setuptools or wheel (scripts/install-deps.sh installs them)"; exit 77; }
python3 -m venv --system-site-packages "$tmp/venv" || exit 1
# offline: the build backend is the system's setuptools (no isolated build environment)
SPECDEC_LIB="$lib" "$tmp/venv/bin/python" -m pip install -q --no-build-isolation --no-deps \
  "$src/python" || { echo "FAIL: pip install ./python"; exit 1; }
"$helper" synth "$tmp/m.gguf" gpt2 320 7 || exit 1
cd "$tmp" && env -u SPECDEC_LIB -u PYTHONPATH "$tmp/venv/bin/python" - "$tmp/m.gguf" <<'PY'
import sys
import specdec
where = specdec.library_path()
assert "site-packages" in str(where) and where.name == "libspecdec.so", where
with specdec.Model(sys.argv[1], n_threads=1) as m:
    r = m.generate("the quick brown fox", max_tokens=8, temperature=0, drafter="ngram")
    assert len(r.tokens) >= 1, r
print("installed package at", where, "generates:", r.tokens)
PY
