# Shared pieces of the tests/cli scripts: source it after `set -u`. Gives $tmp (removed at
# exit), the pass/fail counters, check NAME CONDITION..., usage_error RC FILE and finish.
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
