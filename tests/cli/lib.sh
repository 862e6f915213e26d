# Shared pieces of the tests/cli scripts: source it after `set -u`. Gives $tmp (removed at
# exit), the pass/fail counters, check NAME CONDITION..., usage_error RC FILE, finish, and
# for the CUDA scripts need_model and skip_without_cuda.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
check() { # name, condition...
  local name="$1"; shift
  if "$@"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $name"; fi
}
usage_error() { # rc, stderr file: exit 2 with exactly one "specdec: error:" line
  [ "$1" -eq 2 ] && [ "$(wc -l < "$2")" -eq 1 ] && grep -q '^specdec: error: ' "$2"
}
finish() { # name: the summary line; the script's exit status
  echo "$1: $pass passed, $fail failed"
  [ $fail -eq 0 ]
}
need_model() { # $model: SPECDEC_MODEL or the default model; skip (77) when absent
  model="${SPECDEC_MODEL:-${XDG_CACHE_HOME:-$HOME/.cache}/specdec/SmolLM2-135M-Instruct.Q4_1.gguf}"
  [ -r "$model" ] || { echo "SKIP: model $model not present"; exit 77; }
}
skip_without_cuda() { # rc, stderr file of a --device cuda run: skip (77) when it had no CUDA
  if [ "$1" -ne 0 ] && grep -Eq 'not built|does not exist \(0 devices\)' "$2"; then
    echo "SKIP: no CUDA here: $(cat "$2")"; exit 77
  fi
}
