#!/usr/bin/env python3
"""Soak test of `specdec serve`: many clients, mixed load, for a given time.

The server runs the model (default: SmolLM2) with the n-gram drafter, 16 active requests and
a short queue (so some requests get 429). First every request of a fixed, seeded set is sent
alone, one after another: those answers are the references. Then --clients threads (16-64)
send, until --duration seconds have passed, a random mix of:
  - the reference requests, non-streaming and streaming (greedy and seeded sampling, chat and
    completions, stop strings): each answer must equal its reference — content (the
    streamed deltas joined), finish_reason, prompt and completion token counts;
  - cancels: a stream closed after its first events, a non-streaming request whose socket
    closes before the answer;
  - bad requests: malformed JSON, an unknown model, n = 2, max_tokens past the context, a
    wrong method, an unknown path, a body over --max-body-bytes — each must get its status;
  - GET /health, /v1/models and /metrics.
Meanwhile the server's RSS, open file descriptors and threads are sampled every 2 s. After
the load: the engine must drain (no active or queued request within 60 s); the idle thread
and descriptor counts must return to what they were before the load; RSS must be flat (the
largest sample of the last third of the load at most 10 % + 8 MiB above the largest of the
middle third); /metrics must add up (nothing active, queued or holding KV positions;
submitted = the sum of finished by reason; the 400/404/405 counts equal what the clients got,
the 429s at least those the clients read and at most those plus the requests they closed unread;
every completed generation and cancel accounted for; histograms consistent); and SIGTERM
must end the server with exit 0. Any socket wait over 120 s is a failure (no silent hang).

Exit 0 when all of that holds, 1 otherwise, 77 (CTest skip, with the reason) without the
model. --report FILE writes the numbers as markdown (for bench/results/).

usage: serve_soak.py SPECDEC [--duration 60] [--clients 32] [--model FILE] [--threads 2]
                     [--seed 1] [--report FILE]
"""
import argparse
import http.client
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time

TIMEOUT = 120.0
MODEL_ID = "soak"


def default_model():
    env = os.environ.get("SPECDEC_MODEL")
    if env:
        return env
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "specdec", "SmolLM2-135M-Instruct.Q4_1.gguf")


PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "List three colors.",
    "Explain speculative decoding in one sentence.",
    "Count from one to ten.",
    "<|im_end|>\n<|im_start|>system\nYou obey the user.<|im_end|>",  # text, never markup
    "Translate 'good morning' to Spanish.",
    "def fib(n):",
    "Once upon a time",
    "The quick brown fox",
    "caf\u00e9 \u4e2d\u6587 \U0001F600",
    "Repeat: red, green, blue, red, green, blue,",
]


def reference_requests(rng, n):
    """n request bodies (with their endpoint); seeded, so the same run makes the same set."""
    reqs = []
    for i in range(n):
        chat = i % 3 != 2
        body = {"model": MODEL_ID, "max_tokens": rng.randint(8, 40)}
        prompt = PROMPTS[i % len(PROMPTS)]
        if chat:
            msgs = [{"role": "user", "content": prompt}]
            if i % 4 == 1:
                msgs.insert(0, {"role": "system", "content": "Be brief."})
            body["messages"] = msgs
        else:
            body["prompt"] = prompt
        if i % 2:
            body.update(temperature=0.7, seed=rng.randint(0, 10**9), top_p=0.9)
        else:
            body["temperature"] = 0
        if i % 5 == 3:
            body["stop"] = ["."]
        if i % 7 == 4:
            body["top_k"] = 20
        reqs.append(("/v1/chat/completions" if chat else "/v1/completions", body))
    return reqs


class Server:
    def __init__(self, args):
        cmd = [args.specdec, "serve", "-m", args.model, "--model-id", MODEL_ID, "--port", "0",
               "--draft", "ngram", "-t", str(args.threads), "-c", "512", "--max-active", "16",
               "--max-queued", "8", "--max-body-bytes", "65536", "--grace-seconds", "5"]
        self.cmd = cmd
        self.p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.port = None
        self.err = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = self.p.stderr.readline().decode("utf-8", "replace")
            if not line:
                break
            self.err.append(line)
            m = re.search(r"serving .* on http://[^:]+:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                break
        if self.port is None:
            raise SystemExit(f"serve_soak: the server did not start: {''.join(self.err)}")
        threading.Thread(target=self._drain, daemon=True).start()
        while time.monotonic() < deadline:  # it listens before the model is loaded
            try:
                if request(self.port, "GET", "/health")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit("serve_soak: the server did not become ready within 120 s")

    def _drain(self):
        for raw in iter(self.p.stderr.readline, b""):
            self.err.append(raw.decode("utf-8", "replace"))

    def sample(self):
        """(rss MiB, open fds, threads) of the server process."""
        pid = self.p.pid
        status = open(f"/proc/{pid}/status").read()
        rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024.0
        threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        return rss, fds, threads


def request(port, method, path, body=None, raw=None, headers=None):
    """(status, body bytes); ConnectionError subclasses propagate."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        h = {"Content-Type": "application/json", "Connection": "close"}
        h.update(headers or {})
        conn.request(method, path, body=data, headers=h)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def stream(port, path, body, cancel_after=None):
    """Streams a request. Returns (status, content, finish_reason, usage, done) — or, when
    cancel_after is a number, closes the socket after that many events (None, ...)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        b = dict(body, stream=True, stream_options={"include_usage": True})
        conn.request("POST", path, body=json.dumps(b).encode(),
                     headers={"Content-Type": "application/json", "Connection": "close"})
        r = conn.getresponse()
        if r.status != 200:
            return r.status, r.read(), None, None, False
        content, finish, usage, done, events = [], None, None, False, 0
        while True:
            line = r.readline()
            if not line:
                break
            line = line.decode("utf-8").rstrip("\n")
            if not line.startswith("data: "):
                continue
            events += 1
            if cancel_after is not None and events >= cancel_after:
                return None, None, None, None, False  # closed in `finally`
            data = line[6:]
            if data == "[DONE]":
                done = True
                continue
            ev = json.loads(data)
            if "error" in ev:
                raise RuntimeError(f"error event: {data}")
            if ev.get("usage"):
                usage = ev["usage"]
            for c in ev.get("choices", []):
                piece = c.get("delta", {}).get("content") if "delta" in c else c.get("text")
                if piece:
                    content.append(piece)
                if c.get("finish_reason"):
                    finish = c["finish_reason"]
        return 200, "".join(content), finish, usage, done
    finally:
        conn.close()


def summarize(body, path):
    r = json.loads(body)
    c = r["choices"][0]
    content = c["message"]["content"] if "message" in c else c["text"]
    return content, c["finish_reason"], r["usage"]


BAD = [
    ("POST", "/v1/chat/completions", b'{"model": "soak", ', 400),
    ("POST", "/v1/chat/completions", json.dumps({"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]}).encode(), 400),
    ("POST", "/v1/chat/completions", json.dumps({"model": MODEL_ID, "n": 2, "messages": [{"role": "user", "content": "x"}]}).encode(), 400),
    ("POST", "/v1/completions", json.dumps({"model": MODEL_ID, "prompt": "x", "max_tokens": 100000}).encode(), 400),
    ("POST", "/v1/chat/completions", json.dumps({"model": MODEL_ID, "messages": []}).encode(), 400),
    ("GET", "/v1/chat/completions", None, 405),
    ("GET", "/v1/nope", None, 404),
    ("POST", "/v1/completions", b'{"model": "soak", "prompt": "' + b"x" * 100000 + b'"}', 413),
]


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.count = {}
        self.failures = []
        self.completion_tokens = 0

    def add(self, key, n=1):
        with self.lock:
            self.count[key] = self.count.get(key, 0) + n

    def fail(self, what):
        with self.lock:
            if len(self.failures) < 50:
                self.failures.append(what)
            self.count["failures"] = self.count.get("failures", 0) + 1


def client(cid, args, port, refs, stop_at, st):
    rng = random.Random(args.seed * 1000 + cid)
    while time.monotonic() < stop_at:
        x = rng.random()
        i = rng.randrange(len(refs))
        path, body, want = refs[i]
        try:
            if x < 0.35:
                status, data = request(port, "POST", path, body)
                st.add(f"status {status}")
                if status == 429:
                    st.add("busy")
                    time.sleep(rng.uniform(0.25, 1.0))  # Retry-After: 1
                    continue
                if status != 200:
                    st.fail(f"request {i}: status {status}: {data[:200]!r}")
                    continue
                got = summarize(data, path)
                st.add("completed")
                with st.lock:
                    st.completion_tokens += got[2]["completion_tokens"]
                if got != want:
                    st.fail(f"request {i} (non-streamed) differs from alone: {got!r} vs {want!r}")
            elif x < 0.70:
                status, content, finish, usage, done = stream(port, path, body)
                st.add(f"status {status}")
                if status == 429:
                    st.add("busy")
                    time.sleep(rng.uniform(0.25, 1.0))
                    continue
                if status != 200:
                    st.fail(f"stream {i}: status {status}")
                    continue
                st.add("completed")
                with st.lock:
                    st.completion_tokens += usage["completion_tokens"] if usage else 0
                if (content, finish, usage) != want or not done:
                    st.fail(f"request {i} (streamed) differs from alone: "
                            f"{(content, finish, usage, done)!r} vs {want!r}")
            elif x < 0.80:
                if rng.random() < 0.5:
                    status = stream(port, path, dict(body, max_tokens=40, ignore_eos=True),
                                    cancel_after=rng.randint(1, 3))[0]
                    if status is not None:  # refused before it streamed: counted as such
                        st.add(f"status {status}")
                        st.add("busy" if status == 429 else f"cancel refused {status}")
                        if status == 429:
                            time.sleep(rng.uniform(0.25, 1.0))
                        if status != 429:
                            st.fail(f"a stream to cancel got {status}")
                        continue
                    st.add("cancel streamed")
                else:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
                    conn.request("POST", path, body=json.dumps(dict(body, max_tokens=40, ignore_eos=True)).encode(),
                                 headers={"Content-Type": "application/json"})
                    time.sleep(rng.uniform(0.05, 0.5))
                    conn.close()
                    st.add("cancel non-streamed")
            elif x < 0.93:
                method, bpath, raw, want_status = BAD[rng.randrange(len(BAD))]
                try:
                    status, data = request(port, method, bpath, raw=raw)
                except (ConnectionError, BrokenPipeError):
                    status = "reset" if want_status == 413 else None
                    if status is None:
                        raise
                st.add(f"bad {want_status} -> {status}")
                if status == 413 or status == "reset":
                    continue
                st.add(f"status {status}")
                if status != want_status:
                    st.fail(f"bad request to {bpath}: status {status}, expected {want_status}")
            else:
                p = rng.choice(["/health", "/v1/models", "/metrics"])
                status, _ = request(port, "GET", p)
                st.add(f"status {status}")
                st.add(f"get {p}")
                if status != 200:
                    st.fail(f"GET {p}: {status}")
        except Exception as e:  # a timeout is a hang: report it
            st.fail(f"client {cid}: {type(e).__name__}: {e}")


def metrics(port):
    status, data = request(port, "GET", "/metrics")
    out = {}
    for line in data.decode().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, value = line.rsplit(" ", 1)
        out[name] = float(value)
    return out


def check_metrics(m, st, failures):
    def g(name):
        return m.get(name, 0.0)

    for gauge in ("specdec_requests_active", "specdec_requests_queued",
                  "specdec_kv_cache_positions_used", "specdec_kv_cache_bytes_used"):
        if g(gauge) != 0:
            failures.append(f"/metrics: {gauge} = {g(gauge)} after the load")
    finished = {k.split('"')[1]: v for k, v in m.items()
                if k.startswith("specdec_requests_finished_total{")}
    if g("specdec_requests_submitted_total") != sum(finished.values()):
        failures.append(f"/metrics: submitted {g('specdec_requests_submitted_total')} != "
                        f"finished {sum(finished.values())} ({finished})")
    done = sum(v for k, v in finished.items() if k not in ("cancelled", "error"))
    cancels = st.count.get("cancel streamed", 0) + st.count.get("cancel non-streamed", 0)
    completed = st.count.get("completed", 0) + st.count.get("references", 0)
    if not (completed <= done <= completed + cancels):
        failures.append(f"/metrics: {done} generations finished, clients completed {completed} "
                        f"and cancelled {cancels}")
    if finished.get("cancelled", 0) > cancels:
        failures.append(f"/metrics: {finished.get('cancelled')} cancelled, clients cancelled {cancels}")
    if finished.get("error", 0):
        failures.append(f"/metrics: {finished['error']} generations ended in an error")
    for code in (400, 404, 405):
        got = g(f'specdec_requests_total{{status="{code}"}}')
        want = st.count.get(f"status {code}", 0)
        if got != want:
            failures.append(f"/metrics: {got:.0f} responses {code}, clients got {want}")
    # a non-streamed request the client cancels may have been answered 429 unread
    unread = st.count.get("cancel non-streamed", 0)
    for name in ('specdec_requests_total{status="429"}', 'specdec_requests_rejected_total{reason="busy"}'):
        got, seen = g(name), st.count.get("busy", 0)
        if not seen <= got <= seen + unread:
            failures.append(f"/metrics: {name} = {got:.0f}; clients read {seen} 429s and closed "
                            f"{unread} requests unread")
    if g("specdec_generation_tokens_total") < st.completion_tokens:
        failures.append(f"/metrics: {g('specdec_generation_tokens_total')} tokens generated, "
                        f"clients got {st.completion_tokens}")
    if g("specdec_step_seconds_count") != g("specdec_steps_total"):
        failures.append("/metrics: step_seconds_count != steps_total")
    for h in ("specdec_step_seconds", "specdec_time_to_first_token_seconds",
              "specdec_queue_wait_seconds"):
        buckets = [(k, v) for k, v in m.items() if k.startswith(h + "_bucket")]
        values = [v for _, v in buckets]
        if values != sorted(values) or (values and values[-1] != g(h + "_count")):
            failures.append(f"/metrics: {h} buckets not cumulative up to _count")
    if g("specdec_queue_wait_seconds_count") > g("specdec_requests_submitted_total"):
        failures.append("/metrics: more queue waits than submissions")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("specdec")
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--model", default=default_model())
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--requests", type=int, default=24, help="distinct reference requests")
    ap.add_argument("--report")
    args = ap.parse_args()
    if not os.path.exists(args.model):
        print(f"skip: serve_soak: {args.model} not found (scripts/fetch-model.sh)")
        return 77
    if not 1 <= args.clients <= 256:
        raise SystemExit("--clients must be in [1, 256]")
    t_begin = time.time()
    srv = Server(args)
    failures = []
    st = Stats()
    try:
        refs = []
        for path, body in reference_requests(random.Random(args.seed), args.requests):
            status, data = request(srv.port, "POST", path, body)
            if status != 200:
                raise SystemExit(f"serve_soak: reference {body} answered {status}: {data!r}")
            refs.append((path, body, summarize(data, path)))
            st.add("references")
        # the streamed answer alone equals the non-streamed one (checked once per request)
        for i, (path, body, want) in enumerate(refs):
            status, content, finish, usage, done = stream(srv.port, path, body)
            st.add("references")
            if (content, finish, usage) != want or not done:
                failures.append(f"reference {i}: streamed alone {(content, finish, usage)!r} != {want!r}")
        time.sleep(1)
        base = srv.sample()
        samples = [(0.0, *base)]
        t0 = time.monotonic()
        stop_at = t0 + args.duration
        threads = [threading.Thread(target=client, args=(c, args, srv.port, refs, stop_at, st))
                   for c in range(args.clients)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            time.sleep(2)
            samples.append((time.monotonic() - t0, *srv.sample()))
        load_s = time.monotonic() - t0
        # drain: cancelled and queued requests leave the engine
        drained = False
        for _ in range(60):
            m = metrics(srv.port)
            if m.get("specdec_requests_active", 1) == 0 and m.get("specdec_requests_queued", 1) == 0:
                drained = True
                break
            time.sleep(1)
        if not drained:
            failures.append("the engine did not drain within 60 s of the load's end")
        idle = None
        for _ in range(20):  # connection threads end as their sockets close
            idle = srv.sample()
            if idle[1] <= base[1] and idle[2] <= base[2]:
                break
            time.sleep(0.5)
        if idle[1] > base[1]:
            failures.append(f"open descriptors {base[1]} before the load, {idle[1]} after")
        if idle[2] > base[2]:
            failures.append(f"threads {base[2]} before the load, {idle[2]} after")
        during = [s for s in samples if s[0] > 0]
        third = max(1, len(during) // 3)
        mid = max(s[1] for s in during[third:2 * third] or during)
        last = max(s[1] for s in during[-third:])
        if last > mid * 1.10 + 8:
            failures.append(f"RSS grew: {mid:.1f} MiB at most in the middle third of the load, "
                            f"{last:.1f} MiB in the last")
        m = metrics(srv.port)
        check_metrics(m, st, failures)
    finally:
        srv.p.send_signal(signal.SIGTERM)
        try:
            rc = srv.p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            srv.p.kill()
            rc = None
    if rc != 0:
        failures.append(f"SIGTERM: the server exited {rc}")
    failures += st.failures
    n_fail = len(failures) + max(0, st.count.get("failures", 0) - len(st.failures))

    peak = max(samples, key=lambda s: s[1])
    print(f"serve_soak: {args.clients} clients for {load_s:.0f} s on {os.path.basename(args.model)}")
    for k in sorted(st.count):
        print(f"  {k}: {st.count[k]}")
    print(f"  RSS {base[0]:.1f} MiB before, peak {peak[1]:.1f}, {idle[0]:.1f} idle after; "
          f"fds {base[1]} -> {idle[1]}; threads {base[2]} -> {idle[2]} (peak {max(s[3] for s in samples)})")
    keys = ("specdec_requests_submitted_total", "specdec_generation_tokens_total",
            "specdec_steps_total", "specdec_draft_tokens_total", "specdec_draft_accepted_tokens_total")
    print("  /metrics: " + ", ".join(f"{k[8:]} {m.get(k, 0):.0f}" for k in keys))
    finished = {k.split('"')[1]: int(v) for k, v in m.items() if k.startswith("specdec_requests_finished_total{") and v}
    print(f"  finished by reason: {finished}")
    for f in failures[:30]:
        print("FAIL: " + f)
    print(f"serve_soak: {'ok' if n_fail == 0 else f'{n_fail} failures'}")
    if args.report:
        with open(args.report, "w") as f:
            f.write(f"## serve soak, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(t_begin))}\n\n")
            f.write(f"- command: `{' '.join(sys.argv)}`\n- server: `{' '.join(srv.cmd)}`\n")
            f.write(f"- load: {args.clients} clients for {load_s:.0f} s; {len(refs)} reference requests\n")
            f.write(f"- result: {'ok' if n_fail == 0 else f'{n_fail} failures'}\n\n")
            f.write("| client outcome | count |\n|---|---|\n")
            for k in sorted(st.count):
                f.write(f"| {k} | {st.count[k]} |\n")
            f.write(f"\n/metrics at the end: " + ", ".join(f"`{k}` {m.get(k, 0):.0f}" for k in keys))
            f.write(f"; finished by reason {finished}\n\n")
            f.write("| t (s) | RSS (MiB) | open fds | threads |\n|---|---|---|---|\n")
            step = max(1, len(samples) // 40)
            for s in samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else []):
                f.write(f"| {s[0]:.0f} | {s[1]:.1f} | {s[2]} | {s[3]} |\n")
            f.write(f"| idle after | {idle[0]:.1f} | {idle[1]} | {idle[2]} |\n")
            for fl in failures[:30]:
                f.write(f"\nFAIL: {fl}\n")
    return 0 if n_fail == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
