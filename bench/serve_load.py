#!/usr/bin/env python3
"""Load benchmark for an OpenAI-compatible server (`specdec serve`, llama.cpp's llama-server).

N concurrent clients (threads, http.client) send streaming chat requests built from the prompt
files of bench/prompts, one user message each, with fixed seeds (request i: prompt i mod P,
seed SEED + i), at each concurrency level in turn. Per level it reports requests/s, generated
tokens/s, time to first token, inter-token latency and per-request decode time per token.
Python standard library only. See bench/README.md ("Serving load") for the definitions.

  serve_load.py --url http://127.0.0.1:8080 [--concurrency 1,4,16,64] [--json F] [--md F]
  serve_load.py --server-cmd "specdec serve -m M --port 0" ...   (started and stopped here)
"""
import argparse
import datetime
import http.client
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.parse

SERVING_LINE = re.compile(r"serving \S+ on (http://[\w.:\[\]-]+)")


def load_prompts(directory, categories):
    """[(name, category, text)] of the prompt files whose category is in categories."""
    prompts = []
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".txt"):
            continue
        with open(os.path.join(directory, name), encoding="utf-8") as f:
            head, _, body = f.read().partition("\n\n")
        category = head.removeprefix("category:").strip()
        if category in categories:
            prompts.append((name, category, body.strip()))
    if not prompts:
        sys.exit(f"serve_load: no prompt in {directory} has a category in {sorted(categories)}")
    return prompts


class Endpoint:
    """Host, port and path prefix of the server's /v1 API."""

    def __init__(self, url):
        u = urllib.parse.urlsplit(url)
        if u.scheme != "http" or not u.hostname:
            sys.exit(f"serve_load: --url must be http://HOST:PORT, not '{url}'")
        self.url, self.host, self.port = url, u.hostname, u.port or 80

    def connect(self, timeout):
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def get_json(self, path, timeout=5):
        """(status, parsed body or None) of GET path."""
        conn = self.connect(timeout)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            try:
                return resp.status, json.loads(body)
            except ValueError:
                return resp.status, None
        finally:
            conn.close()


class Server:
    """An optional server process: started from a command line, stopped with SIGTERM."""

    def __init__(self, cmd, url, log_path, timeout):
        self.log = open(log_path, "w") if log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(shlex.split(cmd), stdout=self.log,
                                     stderr=subprocess.PIPE, text=True)
        self.url = url
        self.announced = threading.Event()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        self._wait_ready(timeout)

    def _read_stderr(self):
        for line in self.proc.stderr:
            if self.log is not subprocess.DEVNULL:
                self.log.write(line)
                self.log.flush()
            m = SERVING_LINE.search(line)
            if m and not self.announced.is_set():
                self.url = self.url or m.group(1)
                self.announced.set()

    def _wait_ready(self, timeout):
        """Until /health answers 200 (at the announced URL when none was given)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"serve_load: the server exited with {self.proc.returncode} while starting")
            if self.url:
                try:
                    if Endpoint(self.url).get_json("/health", timeout=2)[0] == 200:
                        return
                except OSError:
                    pass
            time.sleep(0.2)
        self.stop()
        sys.exit(f"serve_load: the server was not ready within {timeout} s")

    def stop(self):
        """SIGTERM, then the exit status (SIGKILL after 60 s)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def request_body(model, endpoint, prompt, args, seed):
    body = {"model": model, "max_tokens": args.max_tokens, "temperature": args.temperature,
            "seed": seed, "stream": True, "stream_options": {"include_usage": True}}
    body.update(args.extra)
    if endpoint == "chat":
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    return json.dumps(body)


def chunk_text(obj):
    """Text of one stream chunk: chat delta content or completion text ('' for none)."""
    text = ""
    for choice in obj.get("choices") or []:
        text += (choice.get("delta") or {}).get("content") or choice.get("text") or ""
    return text


def stream_one(ep, body, path, timeout):
    """Send one streaming request; the client-side timeline and the usage counts."""
    r = {"ok": False, "error": None, "chunk_times": [], "usage": None}
    conn = ep.connect(timeout)
    t0 = time.perf_counter()
    try:
        conn.request("POST", path, body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            r["error"] = f"HTTP {resp.status}: {resp.read()[:200].decode(errors='replace')}"
            return r
        done = False
        while not done:
            line = resp.readline()
            if not line:
                break
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                done = True
                break
            obj = json.loads(data)
            if obj.get("usage"):
                r["usage"] = obj["usage"]
            if chunk_text(obj):
                r["chunk_times"].append(time.perf_counter() - t0)
        r["ok"] = done  # an answer may be empty (EOS first): ok, but no TTFT
        if not done:
            r["error"] = "stream ended without data: [DONE]"
    except (OSError, ValueError, http.client.HTTPException) as e:
        r["error"] = f"{type(e).__name__}: {e}"
    finally:
        r["seconds"] = time.perf_counter() - t0
        conn.close()
    return r


def percentile(values, p):
    """Nearest-rank percentile (p in 0..100); None for no values."""
    if not values:
        return None
    s = sorted(values)
    return s[max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))]


def cpu_jiffies(pid=None):
    """Busy jiffies of the whole machine (pid None) or of one process (all its threads)."""
    try:
        if pid is None:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:]]
            return sum(v) - v[3] - v[4]  # minus idle and iowait
        with open(f"/proc/{pid}/stat") as f:
            v = f.read().rsplit(")", 1)[1].split()
        return int(v[11]) + int(v[12])  # utime + stime
    except (OSError, IndexError, ValueError):
        return None


def run_level(ep, model, prompts, args, concurrency, server_pid):
    """One concurrency level: results of every request plus the level's wall time."""
    n_requests = args.requests or max(8, 2 * concurrency)
    deadline = time.monotonic() + args.duration if args.duration else None
    path = "/v1/chat/completions" if args.endpoint == "chat" else "/v1/completions"
    lock, next_index, results = threading.Lock(), [0], []

    def client():
        while True:
            with lock:
                i = next_index[0]
                if (deadline is None and i >= n_requests) or \
                        (deadline is not None and time.monotonic() >= deadline):
                    return
                next_index[0] += 1
            name, category, text = prompts[i % len(prompts)]
            body = request_body(model, args.endpoint, text, args, args.seed + i)
            r = stream_one(ep, body, path, args.timeout)
            r.update(index=i, prompt=name)
            with lock:
                results.append(r)

    busy0, srv0, own0 = cpu_jiffies(), cpu_jiffies(server_pid), cpu_jiffies(os.getpid())
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    busy1, srv1, own1 = cpu_jiffies(), cpu_jiffies(server_pid), cpu_jiffies(os.getpid())
    other = None
    if None not in (busy0, busy1, srv0, srv1, own0, own1):
        hz = os.sysconf("SC_CLK_TCK")
        other = ((busy1 - busy0) - (srv1 - srv0) - (own1 - own0)) / hz / seconds
    return summarize(concurrency, sorted(results, key=lambda r: r["index"]), seconds,
                     load_before, other)


def summarize(concurrency, results, seconds, load_before, other_cpus):
    ok = [r for r in results if r["ok"]]
    ttft = [r["chunk_times"][0] for r in ok if r["chunk_times"]]
    itl = [b - a for r in ok for a, b in zip(r["chunk_times"], r["chunk_times"][1:])]
    tokens, from_usage, tpot = 0, True, []
    for r in ok:
        n = (r["usage"] or {}).get("completion_tokens")
        if n is None:
            n, from_usage = len(r["chunk_times"]), False
        tokens += n
        if n > 1 and len(r["chunk_times"]) > 1:
            tpot.append((r["chunk_times"][-1] - r["chunk_times"][0]) / (n - 1))
    ms = lambda v: None if v is None else round(v * 1000, 2)
    return {
        "concurrency": concurrency, "requests": len(results), "ok": len(ok),
        "errors": len(results) - len(ok),
        "first_errors": [r["error"] for r in results if not r["ok"]][:3],
        "seconds": round(seconds, 3),
        "requests_per_s": round(len(ok) / seconds, 3),
        "generated_tokens": tokens, "tokens_from": "usage" if from_usage else "chunks",
        "tokens_per_s": round(tokens / seconds, 2),
        "chunks": sum(len(r["chunk_times"]) for r in ok),
        "ttft_ms_p50": ms(percentile(ttft, 50)), "ttft_ms_p99": ms(percentile(ttft, 99)),
        "itl_ms_p50": ms(percentile(itl, 50)), "itl_ms_p99": ms(percentile(itl, 99)),
        "tpot_ms_p50": ms(percentile(tpot, 50)),
        "e2e_s_p50": round(percentile([r["seconds"] for r in ok], 50) or 0, 3),
        "loadavg_before": round(load_before, 2),
        "other_cpus": None if other_cpus is None else round(other_cpus, 2),
        "per_request": [{"index": r["index"], "prompt": r["prompt"],
                         "tokens": (r["usage"] or {}).get("completion_tokens"),
                         "chunks": len(r["chunk_times"]),
                         "ttft_ms": ms(r["chunk_times"][0]) if r["chunk_times"] else None,
                         "seconds": round(r["seconds"], 3), "error": r["error"]}
                        for r in results],
    }


def markdown(report):
    cols = [("concurrency", "conc"), ("ok", "ok"), ("errors", "err"), ("seconds", "s"),
            ("requests_per_s", "req/s"), ("tokens_per_s", "tok/s"),
            ("ttft_ms_p50", "TTFT p50 ms"), ("ttft_ms_p99", "TTFT p99 ms"),
            ("itl_ms_p50", "ITL p50 ms"), ("itl_ms_p99", "ITL p99 ms"),
            ("tpot_ms_p50", "TPOT p50 ms"), ("other_cpus", "other CPUs")]
    lines = [f"**{report['label']}** ({report['model']}, {report['config']['endpoint']}, "
             f"max_tokens {report['config']['max_tokens']}, "
             f"temperature {report['config']['temperature']})", "",
             "| " + " | ".join(h for _, h in cols) + " |",
             "|" + "---|" * len(cols)]
    for lv in report["levels"]:
        lines.append("| " + " | ".join("-" if lv[k] is None else str(lv[k]) for k, _ in cols)
                     + " |")
    return "\n".join(lines) + "\n"


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="server base URL, http://HOST:PORT (with --server-cmd: "
                    "default the one its 'specdec: serving' line announces)")
    ap.add_argument("--server-cmd", help="start this server command, stop it with SIGTERM at the end")
    ap.add_argument("--server-log", help="write the started server's stdout/stderr here")
    ap.add_argument("--startup-timeout", type=float, default=300)
    ap.add_argument("--model", help="the request's model field (default: the first of /v1/models)")
    ap.add_argument("--label", help="name of this configuration in the table (default: the model)")
    ap.add_argument("--concurrency", default="1,4,16,64", help="levels, comma-separated")
    ap.add_argument("--requests", type=int, default=0,
                    help="requests per level (default max(8, 2 x concurrency))")
    ap.add_argument("--duration", type=float, default=0,
                    help="seconds per level instead of a request count (in-flight ones finish)")
    ap.add_argument("--prompts", default=os.path.join(os.path.dirname(__file__), "prompts"))
    ap.add_argument("--categories", default="code,chat")
    ap.add_argument("--endpoint", choices=["chat", "completions"], default="chat")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=1000, help="request i gets seed SEED + i")
    ap.add_argument("--extra-json", default="{}",
                    help="fields merged into every request, e.g. '{\"cache_prompt\": false}'")
    ap.add_argument("--timeout", type=float, default=600, help="per-request socket timeout, s")
    ap.add_argument("--no-warmup", action="store_true", help="skip the untimed 8-token request")
    ap.add_argument("--json", help="write the report here")
    ap.add_argument("--md", help="write the Markdown table here (default: stdout)")
    args = ap.parse_args()
    if not args.url and not args.server_cmd:
        ap.error("give --url or --server-cmd")
    try:
        args.extra = json.loads(args.extra_json)
        assert isinstance(args.extra, dict)
    except (ValueError, AssertionError):
        ap.error(f"--extra-json must be a JSON object, not '{args.extra_json}'")
    try:
        args.levels = [int(c) for c in args.concurrency.split(",")]
    except ValueError:
        ap.error(f"--concurrency must be integers separated by commas, not '{args.concurrency}'")
    if min(args.levels) < 1 or args.max_tokens < 1 or args.requests < 0 or args.duration < 0:
        ap.error("concurrency and --max-tokens must be >= 1, --requests and --duration >= 0")
    return args


def main():
    args = parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop a started server too
    prompts = load_prompts(args.prompts, set(args.categories.split(",")))
    server = None
    if args.server_cmd:
        server = Server(args.server_cmd, args.url, args.server_log, args.startup_timeout)
        args.url = server.url
    ep = Endpoint(args.url)
    report = None
    try:
        model = args.model or ep.get_json("/v1/models")[1]["data"][0]["id"]
        report = {
            "label": args.label or model, "model": model,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "device": {"cpu": cpu_name(), "cores": os.cpu_count()},
            "command": " ".join(shlex.quote(a) for a in sys.argv),
            "server": {"url": args.url, "command": args.server_cmd},
            "config": {"endpoint": args.endpoint, "max_tokens": args.max_tokens,
                       "temperature": args.temperature, "seed": args.seed, "extra": args.extra,
                       "requests": args.requests, "duration": args.duration,
                       "prompts": [p[0] for p in prompts]},
            "levels": [],
        }
        pid = server.proc.pid if server else None
        if not args.no_warmup:
            warm = argparse.Namespace(**{**vars(args), "max_tokens": 8})
            stream_one(ep, request_body(model, args.endpoint, prompts[0][2], warm, args.seed),
                       "/v1/chat/completions" if args.endpoint == "chat" else "/v1/completions",
                       args.timeout)
        for c in args.levels:
            lv = run_level(ep, model, prompts, args, c, pid)
            report["levels"].append(lv)
            print(f"serve_load: concurrency {c}: {lv['ok']}/{lv['requests']} ok, "
                  f"{lv['requests_per_s']} req/s, {lv['tokens_per_s']} tok/s, "
                  f"TTFT p50 {lv['ttft_ms_p50']} ms", file=sys.stderr)
    finally:
        if server:
            rc = server.stop()
            print(f"serve_load: server exited with {rc}", file=sys.stderr)
            if report:
                report["server"]["exit_status"] = rc
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    table = markdown(report)
    if args.md:
        with open(args.md, "w") as f:
            f.write(table)
    else:
        sys.stdout.write(table)
    return 1 if any(lv["errors"] for lv in report["levels"]) else 0


if __name__ == "__main__":
    sys.exit(main())
