#!/usr/bin/env bash
# `specdec serve` on the default model, driven with curl: health, models, chat (template
# applied: the same text as `specdec chat`), streaming (SSE deltas join to the non-streaming
# text, usage chunk, data: [DONE]), completions with a stop string (the same text as
# `specdec run --stop`), seeded sampling, a bad body, /metrics, a speculative server giving the
# same greedy text, and SIGTERM -> exit 0. Usage: test_serve_curl.sh PATH/TO/specdec
set -u
bin="$1"
model="${SPECDEC_MODEL:-${XDG_CACHE_HOME:-$HOME/.cache}/specdec/SmolLM2-135M-Instruct.Q4_1.gguf}"
[ -r "$model" ] || { echo "SKIP: model $model not present"; exit 77; }
command -v curl >/dev/null || { echo "SKIP: curl not installed (scripts/install-deps.sh)"; exit 77; }
# shellcheck source=../cli/lib.sh
. "$(dirname "$0")/../cli/lib.sh"
srv_pid=""
trap '[ -n "$srv_pid" ] && kill -KILL "$srv_pid" 2>/dev/null; rm -rf "$tmp"' EXIT
model_id=$(basename "$model" .gguf)

start_server() { # extra serve flags...: sets srv_pid and url once /health answers 200
  "$bin" serve -m "$model" --port 0 -t 2 -c 1024 "$@" 2>"$tmp/server.err" &
  srv_pid=$!
  url=""
  for _ in $(seq 600); do # the serving line, then /health 200; 60 s at most
    kill -0 "$srv_pid" 2>/dev/null || break
    [ -z "$url" ] && url=$(sed -n 's|^specdec: serving .* on \(http://[0-9.]*:[0-9]*\)$|\1|p' "$tmp/server.err")
    [ -n "$url" ] && [ "$(curl -s -o /dev/null -w '%{http_code}' "$url/health")" = 200 ] && return 0
    sleep 0.1
  done
  echo "FAIL: server did not become ready; its stderr:"; cat "$tmp/server.err"
  exit 1
}
stop_server() { # SIGTERM; sets stop_rc to the exit status (124 when it did not exit in 30 s)
  kill -TERM "$srv_pid"
  for _ in $(seq 300); do kill -0 "$srv_pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$srv_pid" 2>/dev/null; then stop_rc=124; else wait "$srv_pid"; stop_rc=$?; fi
  srv_pid=""
  [ "$stop_rc" -eq 0 ] || { echo "server exit status $stop_rc; its stderr:"; tail -n 30 "$tmp/server.err"; }
}
post() { # path, body, out file: prints the HTTP status
  curl -sS --max-time 120 -o "$3" -w '%{http_code}' -H 'Content-Type: application/json' \
       --data-binary "$2" "$url$1"
}
js() { # file, python expression over d (the parsed JSON): prints its value
  python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}
sse_json() { # SSE file: the chunks (every data: line but [DONE]) as one JSON array
  python3 -c 'import json, sys
lines = [l[6:] for l in open(sys.argv[1]).read().split("\n") if l.startswith("data: ")]
print(json.dumps([json.loads(l) for l in lines if l != "[DONE]"]))' "$1"
}

start_server
check "serving line names the model" grep -q "^specdec: serving $model_id on http://127.0.0.1:" "$tmp/server.err"
curl -sS -o "$tmp/h" "$url/health"
check "/health: status ok" [ "$(js "$tmp/h" 'd["status"]')" = ok ]
curl -sS -o "$tmp/m" "$url/v1/models"
check "/v1/models lists the model id" [ "$(js "$tmp/m" 'd["object"] + " " + d["data"][0]["id"]')" = "list $model_id" ]

# Chat, greedy: the template is applied exactly as `specdec chat` applies it.
q="What is the capital of France?"
chat='{"model":"'"$model_id"'","messages":[{"role":"user","content":"'"$q"'"}],"max_tokens":16,"temperature":0'
st=$(post /v1/chat/completions "$chat}" "$tmp/c")
check "chat: 200" [ "$st" = 200 ]
js "$tmp/c" 'd["choices"][0]["message"]["content"]' >"$tmp/c.txt"
"$bin" chat -m "$model" -p "$q" -n 16 --temp 0 -t 1 >"$tmp/cli_chat.txt" 2>/dev/null
check "chat: answers Paris" grep -q Paris "$tmp/c.txt"
check "chat: same text as specdec chat (template applied)" \
  [ "$(cat "$tmp/c.txt")" = "$(cat "$tmp/cli_chat.txt")" ]
check "chat: object, role, finish_reason" [ "$(js "$tmp/c" 'd["object"], d["choices"][0]["message"]["role"], d["choices"][0]["finish_reason"] in ("stop", "length")')" = "('chat.completion', 'assistant', True)" ]
check "chat: usage counts add up" [ "$(js "$tmp/c" '(u := d["usage"])["prompt_tokens"] > 10 and 1 <= u["completion_tokens"] <= 16 and u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]')" = True ]
check "chat: specdec statistics object" [ "$(js "$tmp/c" '"acceptance_rate" in d["specdec"] and d["specdec"]["stop_reason"] in ("eos", "stop", "length")')" = True ]

# Streaming: SSE chunks whose deltas join to the same text, a usage chunk, data: [DONE] last.
curl -sS -N --max-time 120 -H 'Content-Type: application/json' -o "$tmp/s" \
  --data-binary "$chat"',"stream":true,"stream_options":{"include_usage":true}}' "$url/v1/chat/completions"
sse_json "$tmp/s" >"$tmp/s.json"
check "stream: last line is data: [DONE]" [ "$(grep -v '^$' "$tmp/s" | tail -n 1)" = "data: [DONE]" ]
# (or a ": keep-alive" comment, sent while a token takes more than a second: a loaded machine)
check "stream: every non-empty line is a data: line or a comment" \
  bash -c "! grep -v '^$' '$tmp/s' | grep -v '^: ' | grep -qv '^data: '"
check "stream: first delta has the assistant role" [ "$(js "$tmp/s.json" 'd[0]["object"], d[0]["choices"][0]["delta"]["role"]')" = "('chat.completion.chunk', 'assistant')" ]
js "$tmp/s.json" '"".join((c["choices"][0]["delta"].get("content") or "") for c in d if c["choices"])' >"$tmp/s.txt"
check "stream: deltas join to the non-streaming text" cmp -s "$tmp/s.txt" "$tmp/c.txt"
finish=$(js "$tmp/c" 'd["choices"][0]["finish_reason"]')
check "stream: the last choice chunk has the same finish_reason" \
  [ "$(js "$tmp/s.json" '[c for c in d if c["choices"]][-1]["choices"][0]["finish_reason"]')" = "$finish" ]
counts='("prompt_tokens", "completion_tokens", "total_tokens")'
check "stream: a last chunk without choices carries the usage" [ "$(js "$tmp/s.json" 'd[-1]["choices"]')" = "[]" ]
check "stream: usage equals the non-streaming usage" [ "$(js "$tmp/s.json" "[d[-1]['usage'][k] for k in $counts]")" = "$(js "$tmp/c" "[d['usage'][k] for k in $counts]")" ]

# Completions: greedy text equals `specdec run` on the same prompt; a stop string ends it.
p="The capital of France is"
comp='{"model":"'"$model_id"'","prompt":"'"$p"'","max_tokens":40,"temperature":0'
post /v1/completions "$comp}" "$tmp/p" >/dev/null
post /v1/completions "$comp"',"stop":["."]}' "$tmp/ps" >"$tmp/ps.code"
"$bin" run -m "$model" -p "$p" -n 40 --temp 0 -t 1 >"$tmp/run.txt" 2>/dev/null
"$bin" run -m "$model" -p "$p" -n 40 --temp 0 -t 1 --stop . >"$tmp/run_stop.txt" 2>/dev/null
js "$tmp/p" 'd["choices"][0]["text"]' >"$tmp/p.txt"
js "$tmp/ps" 'd["choices"][0]["text"]' >"$tmp/ps.txt"
check "completions: object text_completion" [ "$(js "$tmp/p" 'd["object"]')" = text_completion ]
check "completions: greedy text equals specdec run" [ "$(cat "$tmp/p.txt")" = "$(cat "$tmp/run.txt")" ]
check "completions: unstopped text has a period (so the stop check means something)" grep -q '[.]' "$tmp/p.txt"
check "completions + stop: 200, finish_reason stop" [ "$(cat "$tmp/ps.code") $(js "$tmp/ps" 'd["choices"][0]["finish_reason"]')" = "200 stop" ]
check "completions + stop: no period, equals specdec run --stop" \
  bash -c "! grep -q '[.]' '$tmp/ps.txt' && [ \"\$(cat '$tmp/ps.txt')\" = \"\$(cat '$tmp/run_stop.txt')\" ]"

# Seeded sampling: the same seed repeats, another seed differs, and equals `specdec chat`
# with the server's sampler (no top-k, top-p 1, no min-p).
seeded() { # seed, out file
  post /v1/chat/completions '{"model":"'"$model_id"'","messages":[{"role":"user","content":"Tell me a story."}],"max_tokens":24,"temperature":0.8,"seed":'"$1"'}' "$2" >/dev/null
  js "$2" 'd["choices"][0]["message"]["content"]' >"$2.txt"
}
seeded 5 "$tmp/r1"; seeded 5 "$tmp/r2"; seeded 6 "$tmp/r3"
"$bin" chat -m "$model" -p "Tell me a story." -n 24 --temp 0.8 --seed 5 --top-k 0 --top-p 1 \
  --min-p 0 -t 1 >"$tmp/cli_seed.txt" 2>/dev/null
check "seed: same seed, same text" cmp -s "$tmp/r1.txt" "$tmp/r2.txt"
check "seed: different seed, different text" bash -c "! cmp -s '$tmp/r1.txt' '$tmp/r3.txt'"
check "seed: reported back" [ "$(js "$tmp/r1" 'd["specdec"]["seed"]')" = 5 ]
check "seed: same text as specdec chat --seed" [ "$(cat "$tmp/r1.txt")" = "$(cat "$tmp/cli_seed.txt")" ]

# Bad input: malformed JSON and an unknown model give 400 with an OpenAI error body.
st=$(post /v1/chat/completions '{"model": "'"$model_id"'", "messages": [' "$tmp/e1")
check "malformed JSON: 400" [ "$st" = 400 ]
check "malformed JSON: error body" [ "$(js "$tmp/e1" 'd["error"]["type"] == "invalid_request_error" and len(d["error"]["message"]) > 0 and set(d["error"]) >= {"param", "code"}')" = True ]
st=$(post /v1/chat/completions '{"model":"no-such-model","messages":[{"role":"user","content":"hi"}]}' "$tmp/e2")
check "unknown model: 400 model_not_found naming it" [ "$st $(js "$tmp/e2" 'd["error"]["code"], "no-such-model" in d["error"]["message"]')" = "400 ('model_not_found', True)" ]

# Metrics: Prometheus text with the specdec_ names, counting what was sent above.
curl -sS -D "$tmp/mh" -o "$tmp/metrics" "$url/metrics"
check "/metrics: text/plain" grep -qi '^content-type: text/plain' "$tmp/mh"
check "/metrics: specdec_ lines with HELP and TYPE" bash -c "grep -q '^# TYPE specdec_' '$tmp/metrics' && grep -q '^# HELP specdec_' '$tmp/metrics'"
check "/metrics: 400s counted" grep -Eq '^specdec_requests_total\{status="400"\} [1-9]' "$tmp/metrics"
check "/metrics: generated tokens counted" grep -Eq '^specdec_generation_tokens_total [1-9]' "$tmp/metrics"
check "/metrics: TTFT histogram" grep -q '^specdec_time_to_first_token_seconds_bucket{le="+Inf"}' "$tmp/metrics"

stop_server
check "SIGTERM: exit 0" [ "$stop_rc" -eq 0 ]

# A speculative server (n-gram drafter) gives the same greedy chat text.
start_server --draft ngram --k 4
post /v1/chat/completions "$chat}" "$tmp/cn" >/dev/null
check "--draft ngram: same greedy chat text" \
  [ "$(js "$tmp/cn" 'd["choices"][0]["message"]["content"]')" = "$(cat "$tmp/c.txt")" ]
check "--draft ngram: the drafter is reported" [ "$(js "$tmp/cn" 'd["specdec"]["drafter"] is not None')" = True ]
stop_server
check "SIGTERM with a drafter: exit 0" [ "$stop_rc" -eq 0 ]

finish serve_curl
