#!/usr/bin/env bash
# End-to-end check of `specdec bench` on the default model with two small prompts: exit 0,
# valid JSON naming every drafter and k with numeric speedup/acceptance fields, greedy
# speculative outputs equal to target-only (no MISMATCH), --json - and repeats, the shipped
# prompt set's format; bad flags give one error line and exit 2, bad files exit 1. Usage: test_bench.sh PATH/TO/specdec
set -u
bin="$1"
model="${SPECDEC_MODEL:-${XDG_CACHE_HOME:-$HOME/.cache}/specdec/SmolLM2-135M-Instruct.Q4_1.gguf}"
[ -r "$model" ] || { echo "SKIP: model $model not present"; exit 77; }
here="$(cd "$(dirname "$0")" && pwd)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
check() { # name, condition...
  local name="$1"; shift
  if "$@"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $name"; fi
}
error_exit() { # rc, stderr file, expected rc: exactly one "specdec: error:" line
  [ "$1" -eq "$3" ] && [ "$(wc -l < "$2")" -eq 1 ] && grep -q '^specdec: error: ' "$2"
}

mkdir "$tmp/prompts"
printf 'category: chat\n\nWhat is the capital of France?\n' > "$tmp/prompts/a-chat.txt"
printf 'category: code\n\nAdd type hints to this function:\n\ndef add(a, b):\n    return a + b\n' \
  > "$tmp/prompts/b-code.txt"
printf 'not a prompt file, ignored\n' > "$tmp/prompts/README.md"

"$bin" bench -m "$model" -n 16 --k 2 -t 2 --draft ngram --draft layerskip:15 \
  --prompts "$tmp/prompts" --json "$tmp/out.json" --trace "$tmp/trace.jsonl" >"$tmp/table" 2>"$tmp/err"; rc=$?
check "bench exits 0" [ "$rc" -eq 0 ]
check "no MISMATCH" bash -c "! grep -q MISMATCH '$tmp/table' '$tmp/err'"
check "table has the target-only and drafter rows" \
  bash -c "grep -q '^target-only .* all ' '$tmp/table' && grep -q '^ngram  *2  code ' '$tmp/table' \
           && grep -q '^layerskip:15  *2  all ' '$tmp/table'"
check "table states exactness" grep -q '^exact: ' "$tmp/table"
check "JSON parses" python3 -m json.tool "$tmp/out.json" /dev/null
check "JSON content" python3 - "$tmp/out.json" <<'EOF'
import json, numbers, sys
d = json.load(open(sys.argv[1]))
assert d["drafters"] == ["ngram", "layerskip:15"], d["drafters"]
assert d["k"] == [2], d["k"]
assert d["device"]["kind"] == "cpu" and d["device"]["threads"] == 2 and d["device"]["cores"] >= 1
assert "bench" in d["command"] and d["date"].endswith("Z") and d["mismatches"] == 0
assert [p["category"] for p in d["prompts"]] == ["chat", "code"]
for p in d["prompts"]:
    runs = {(r["drafter"], r["k"]): r for r in p["runs"]}
    assert set(runs) == {("none", 0), ("ngram", 2), ("layerskip:15", 2)}, set(runs)
    for key, r in runs.items():
        for f in ("speedup", "acceptance_rate", "mean_accepted_len", "tok_s"):
            assert isinstance(r[f], numbers.Real) and not isinstance(r[f], bool), (key, f)
        assert r["exact"] is (None if key[0] == "none" else True), (key, r["exact"])
        assert r["tokens"] == runs[("none", 0)]["tokens"] > 0
        assert 0 <= r["acceptance_rate"] <= 1 and r["mean_accepted_len"] >= 1
        assert sum(r["accepted_hist"]) == r["steps"]
cats = {(s["drafter"], s["k"], s["category"]) for s in d["summary"]}
for dr, k in (("none", 0), ("ngram", 2), ("layerskip:15", 2)):
    assert {(dr, k, c) for c in ("chat", "code", "all")} <= cats, cats
base = [s for s in d["summary"] if s["drafter"] == "none"]
assert all(abs(s["speedup"] - 1) < 1e-9 for s in base), base
EOF
check "--trace: a record per step of every run, adding up to the JSON" python3 - \
  "$tmp/out.json" "$tmp/trace.jsonl" <<'EOF'
import collections, json, sys
d = json.load(open(sys.argv[1]))
steps = collections.defaultdict(list)
for line in open(sys.argv[2]):
    s = json.loads(line)
    steps[(s["prompt"], s["drafter"], s["k_max"])].append(s)
    assert s["repeat"] == 0 and s["request"] == 0 and len(s["drafted"]) <= max(s["k"], 0)
    assert 0 <= s["accepted"] <= len(s["drafted"]) and s["verify_ms"] > 0
for p in d["prompts"]:
    for r in p["runs"]:
        got = steps.pop((p["name"], r["drafter"], r["k"]))
        assert [s["step"] for s in got] == list(range(r["steps"])), (p["name"], r["drafter"])
        hist = [0] * len(r["accepted_hist"])
        for s in got: hist[s["accepted"]] += 1
        assert hist == r["accepted_hist"], (hist, r["accepted_hist"])
        assert got[0]["pos"] + r["tokens"] <= got[-1]["pos"] + got[-1]["accepted"] + 1  # a stop may drop a tail
assert not steps, steps.keys()
EOF

"$bin" bench -m "$model" -n 4 --k 1 -t 2 --draft ngram --repeats 2 --prompts "$tmp/prompts" \
  --json - >"$tmp/stdout.json" 2>"$tmp/stdout.err"; rc=$?
check "--json -: exit 0" [ "$rc" -eq 0 ]
check "--json -: stdout is the JSON, with both repeats" python3 - "$tmp/stdout.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
assert d["config"]["repeats"] == 2
assert all(len(r["decode_seconds_all"]) == 2 for p in d["prompts"] for r in p["runs"])
EOF
check "--json -: the table goes to stderr" grep -q '^target-only' "$tmp/stdout.err"

check "shipped prompt set: 3+ prompts in each of chat, code, summarize" python3 - \
  "$here/../../bench/prompts" <<'EOF'
import collections, pathlib, sys
n = collections.Counter()
for f in pathlib.Path(sys.argv[1]).glob("*.txt"):
    head, blank, body = f.read_text().split("\n", 2)
    assert head.startswith("category: ") and blank == "" and body.strip(), f
    n[head.split(": ", 1)[1]] += 1
assert all(n[c] >= 3 for c in ("chat", "code", "summarize")), n
EOF

"$bin" bench -m "$model" --k 0 >"$tmp/o" 2>"$tmp/e"; rc=$?
check "--k 0: exit 2, one line" error_exit "$rc" "$tmp/e" 2
check "--k 0: nothing on stdout" [ ! -s "$tmp/o" ]
"$bin" bench -m "$model" --k 2,x >"$tmp/o" 2>"$tmp/e"; rc=$?
check "--k 2,x: exit 2, one line" error_exit "$rc" "$tmp/e" 2
"$bin" bench -m "$model" --frobnicate 1 >"$tmp/o" 2>"$tmp/e"; rc=$?
check "unknown flag: exit 2, one line" error_exit "$rc" "$tmp/e" 2
"$bin" bench -m "$model" --draft layerskip:30 --prompts "$tmp/prompts" >"$tmp/o" 2>"$tmp/e"; rc=$?
check "layerskip:L >= n_layer: exit 2, one line" error_exit "$rc" "$tmp/e" 2
"$bin" bench -m "$tmp/missing.gguf" >"$tmp/o" 2>"$tmp/e"; rc=$?
check "missing model: exit 1, one line" error_exit "$rc" "$tmp/e" 1
check "missing model: names the file" grep -q missing.gguf "$tmp/e"
"$bin" bench -m "$model" --prompts "$tmp/nowhere" >"$tmp/o" 2>"$tmp/e"; rc=$?
check "missing prompt dir: exit 1, one line" error_exit "$rc" "$tmp/e" 1
printf 'no category line\n' > "$tmp/prompts/c-bad.txt"
"$bin" bench -m "$model" --prompts "$tmp/prompts" >"$tmp/o" 2>"$tmp/e"; rc=$?
check "prompt without category: exit 1, one line" error_exit "$rc" "$tmp/e" 1

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
