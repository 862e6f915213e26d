#!/usr/bin/env python3
"""Multi-turn chat benchmark of a prefix cache (bench/README.md, "Prefix cache").

One server at a time (serve_load.Server: started, used, stopped), each given the same system
prompt (bench/prompts texts repeated to about --system-tokens tokens) and user turns:

  1. one client, an --turns-turn chat: time to first token (TTFT) of every turn, the history
     (system, user and assistant messages so far) sent again each turn;
  2. --clients C (e.g. 1,4,16): C clients at once, each its own --load-turns-turn chat with the
     same system prompt: generated tokens/s over the wall time, mean TTFT.

Greedy, ignore_eos, --max-tokens per turn, streamed. Python standard library only.

  prefix_chat.py --server NAME="CMD" [--server NAME="CMD" ...] --md F --json F
  (a llama-server command line must carry --port; specdec serve announces its own URL)
"""
import argparse
import datetime
import json
import os
import re
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_load  # noqa: E402  (Endpoint, Server, chunk_text)

USER_TURNS = [
    "Summarise the rules above in one sentence.",
    "Which rule matters most for a new employee, and why?",
    "Give an example of breaking rule 3.",
    "Rewrite rule 5 for a child.",
    "What would you add to the list?",
    "Which two rules could be merged?",
    "Name one rule that is hard to follow.",
    "Thank you. Say goodbye in five words.",
]


def system_prompt(words):
    """Numbered rules made of the bench/prompts texts, about `words` words long."""
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "prompts")
    texts = []
    for name in sorted(os.listdir(here)):
        with open(os.path.join(here, name), encoding="utf-8") as f:
            texts.append(f.read().partition("\n\n")[2].strip())
    out, n, i = [], 0, 0
    while n < words:
        rule = f"Rule {i + 1}: " + " ".join(texts[i % len(texts)].split())
        out.append(rule)
        n += len(rule.split())
        i += 1
    return "You are the office assistant. Follow these rules.\n" + "\n".join(out)


MODEL_IDS = {}


def model_id(url):
    """The first model /v1/models lists (the name requests must carry)."""
    if url not in MODEL_IDS:
        status, body = serve_load.Endpoint(url).get_json("/v1/models")
        MODEL_IDS[url] = body["data"][0]["id"] if status == 200 and body else "m"
    return MODEL_IDS[url]


def stream_chat(url, messages, max_tokens, timeout=1800):
    """(ttft seconds, text, usage dict, seconds) of one streamed greedy chat request."""
    ep = serve_load.Endpoint(url)
    body = json.dumps({"model": model_id(url), "messages": messages, "max_tokens": max_tokens,
                       "temperature": 0, "seed": 1, "ignore_eos": True, "stream": True,
                       "stream_options": {"include_usage": True}})
    conn = ep.connect(timeout)
    t0 = time.monotonic()
    ttft, text, usage = None, "", {}
    try:
        conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            sys.exit(f"prefix_chat: HTTP {resp.status}: {resp.read()[:300]!r}")
        for raw in resp:
            line = raw.decode("utf-8", "replace").strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            obj = json.loads(line[6:])
            piece = serve_load.chunk_text(obj)
            if piece and ttft is None:
                ttft = time.monotonic() - t0
            text += piece
            if obj.get("usage"):
                usage = obj["usage"]
    finally:
        conn.close()
    return ttft, text, usage, time.monotonic() - t0


def cached_of(usage):
    return (usage.get("prompt_tokens_details") or {}).get("cached_tokens")


def chat(url, system, user_turns, max_tokens, tag=""):
    """Per turn: (ttft, prompt_tokens, cached_tokens, completion_tokens)."""
    messages = [{"role": "system", "content": system}]
    rows = []
    for u in user_turns:
        messages.append({"role": "user", "content": u + tag})
        ttft, text, usage, _ = stream_chat(url, messages, max_tokens)
        messages.append({"role": "assistant", "content": text})
        rows.append((ttft, usage.get("prompt_tokens"), cached_of(usage),
                     usage.get("completion_tokens")))
    return rows


def load(url, system, clients, turns, max_tokens):
    """(generated tokens/s, mean TTFT, wall seconds) of `clients` concurrent chats."""
    results = [None] * clients

    def run(i):
        results[i] = chat(url, system, USER_TURNS[:turns], max_tokens, tag=f" (client {i})")

    t0 = time.monotonic()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    rows = [r for res in results for r in res]
    tokens = sum(r[3] or 0 for r in rows)
    return tokens / wall, sum(r[0] for r in rows) / len(rows), wall


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", action="append", required=True, metavar="NAME=CMD")
    ap.add_argument("--system-words", type=int, default=1100, help="~1,500 tokens")
    ap.add_argument("--turns", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--load-turns", type=int, default=2)
    ap.add_argument("--turns-of", action="append", default=[], metavar="NAME=N",
                    help="fewer chat turns for that server (a slow one)")
    ap.add_argument("--no-load-of", action="append", default=[], metavar="NAME",
                    help="skip that server's throughput runs")
    ap.add_argument("--md"), ap.add_argument("--json")
    ap.add_argument("--title", default="prefix cache")
    args = ap.parse_args()
    system = system_prompt(args.system_words)
    clients = [int(c) for c in args.clients.split(",") if c]
    report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "argv": sys.argv, "load_before": os.getloadavg(), "servers": {}}
    turns_of = {k: int(v) for k, _, v in (t.partition("=") for t in args.turns_of)}
    for spec in args.server:
        name, _, cmd = spec.partition("=")
        n_turns = turns_of.get(name, args.turns)
        m = re.search(r"--port\s+(\d+)", cmd)
        url = f"http://127.0.0.1:{m.group(1)}" if m and m.group(1) != "0" else None
        print(f"== {name}: {cmd}", file=sys.stderr, flush=True)
        srv = serve_load.Server(cmd, url, f"/tmp/prefix_chat_{name}.log", 600)
        try:
            turns = chat(srv.url, system, USER_TURNS[:n_turns], args.max_tokens)
            print(f"   turns: {turns}", file=sys.stderr, flush=True)
            loads = {}
            for c in clients if name not in args.no_load_of else []:
                loads[c] = load(srv.url, system, c, args.load_turns, args.max_tokens)
                print(f"   {c} clients: {loads[c]}", file=sys.stderr, flush=True)
        finally:
            srv.stop()
        report["servers"][name] = {"cmd": cmd, "turns": turns, "load": loads,
                                   "loadavg": os.getloadavg()}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    lines = [f"### {args.title}", "", f"{report['date']}; load average before "
             f"{' '.join(f'{x:.2f}' for x in report['load_before'])}", "",
             "TTFT per turn (s) [prompt tokens / cached]:", "",
             "| server | " + " | ".join(f"turn {i + 1}" for i in range(args.turns)) +
             f" | turn {args.turns} / turn 1 |", "|---" * (args.turns + 2) + "|"]
    for name, r in report["servers"].items():
        t = r["turns"]
        cells = [f"{x[0]:.2f} [{x[1]}/{x[2] if x[2] is not None else '-'}]" for x in t]
        cells += ["(not run)"] * (args.turns - len(t))
        ratio = f"{t[-1][0] / t[0][0]:.2f}" if len(t) == args.turns else "-"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {ratio} |")
    lines += ["", f"Throughput ({args.load_turns}-turn chats per client, {args.max_tokens} "
              "tokens a turn): generated tokens/s, mean TTFT (s), wall (s):", "",
              "| server | " + " | ".join(f"{c} clients" for c in clients) + " | load avg after |",
              "|---" * (len(clients) + 2) + "|"]
    for name, r in report["servers"].items():
        cells = [f"{r['load'][c][0]:.1f} tok/s, {r['load'][c][1]:.2f}, {r['load'][c][2]:.0f}"
                 if c in r["load"] else "(not run)" for c in clients]
        lines.append(f"| {name} | " + " | ".join(cells) +
                     f" | {' '.join(f'{x:.2f}' for x in r['loadavg'])} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.md:
        with open(args.md, "a") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
