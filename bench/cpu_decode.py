#!/usr/bin/env python3
"""CPU prefill/decode benchmark: specdec vs llama.cpp (llama-cpp-python) on the same GGUF.

Runs each engine in its own subprocess (so peak RSS is per engine), greedy, a fixed prompt,
N generated tokens with EOS ignored, T threads; repeats R times, alternating the engines,
and reports the median. specdec's RSS is measured before the first llama.cpp child runs.

    python3 bench/cpu_decode.py --specdec build/bin/specdec [--model M] [-n 128] [-t 2] [-r 3]

Prints a table and one JSON object (last line) for bench/results/.
"""
import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time

PROMPT = ("Speculative decoding speeds up language model inference: a small draft model "
          "proposes several tokens and the large target model checks them all in a single "
          "forward pass. Explain in simple terms why this works and when it helps the most.")


def default_model():
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(cache, "specdec", "SmolLM2-135M-Instruct.Q4_1.gguf")


def run_specdec(binary, model, n, threads):
    cmd = [binary, "run", "-m", model, "-p", PROMPT, "-n", str(n), "--temp", "0",
           "--ignore-eos", "-t", str(threads)]
    p = subprocess.run(cmd, capture_output=True, text=True, check=True)
    m = re.search(r"prefill (\d+) tokens in ([\d.]+) s \(([\d.]+) tok/s\); decode (\d+) tokens "
                  r"in ([\d.]+) s \(([\d.]+) tok/s\)", p.stderr)
    if not m:
        sys.exit("specdec printed no statistics line:\n" + p.stderr)
    return {"prefill_tokens": int(m[1]), "prefill_tok_s": float(m[3]),
            "decode_tokens": int(m[4]), "decode_tok_s": float(m[6]), "cmd": " ".join(cmd)}


LLAMA_CHILD = r"""
import json, sys, time, resource
import numpy as np
from llama_cpp import Llama
model, prompt, n, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
llm = Llama(model_path=model, n_threads=threads, n_threads_batch=threads, n_ctx=1024,
            n_batch=512, verbose=False)
toks = llm.tokenize(prompt.encode(), add_bos=False)
t0 = time.perf_counter(); llm.eval(toks); t1 = time.perf_counter()
tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
t2 = time.perf_counter()
for _ in range(n - 1):
    llm.eval([tok]); tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
t3 = time.perf_counter()
import llama_cpp
print(json.dumps({"prefill_tokens": len(toks), "prefill_tok_s": len(toks) / (t1 - t0),
                  "decode_tokens": n - 1, "decode_tok_s": (n - 1) / (t3 - t2),
                  "version": llama_cpp.__version__,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}))
"""


def run_llama_cpp(model, n, threads):
    p = subprocess.run([sys.executable, "-c", LLAMA_CHILD, model, PROMPT, str(n), str(threads)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        return {"error": p.stderr.strip().splitlines()[-1] if p.stderr.strip() else "failed"}
    return json.loads(p.stdout.strip().splitlines()[-1])


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def median_of(runs, key):
    return statistics.median(r[key] for r in runs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--specdec", default="build/bin/specdec")
    ap.add_argument("--model", default=default_model())
    ap.add_argument("-n", type=int, default=128)
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-r", "--repeats", type=int, default=3)
    ap.add_argument("--no-llama-cpp", action="store_true")
    a = ap.parse_args()

    # Alternate the engines run by run, so a change in machine load hits both alike.
    sd_runs, lc = [], []
    for _ in range(a.repeats):
        sd_runs.append(run_specdec(a.specdec, a.model, a.n, a.threads))
        if len(sd_runs) == 1:  # before any llama.cpp child: the max is specdec's own
            sd_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
        if not a.no_llama_cpp:
            lc.append(run_llama_cpp(a.model, a.n, a.threads))
    result = {"date": time.strftime("%Y-%m-%d"), "machine": cpu_model(),
              "cpus": os.cpu_count(), "threads": a.threads, "model": os.path.basename(a.model),
              "n": a.n, "specdec": {"prefill_tok_s": median_of(sd_runs, "prefill_tok_s"),
                                    "decode_tok_s": median_of(sd_runs, "decode_tok_s"),
                                    "peak_rss_mb": sd_rss, "cmd": sd_runs[0]["cmd"]}}
    if lc:
        if "error" in lc[0]:
            result["llama_cpp"] = lc[0]
        else:
            result["llama_cpp"] = {"version": lc[0]["version"],
                                   "prefill_tok_s": median_of(lc, "prefill_tok_s"),
                                   "decode_tok_s": median_of(lc, "decode_tok_s"),
                                   "peak_rss_mb": max(r["rss_mb"] for r in lc)}
            result["decode_ratio"] = result["specdec"]["decode_tok_s"] / result["llama_cpp"]["decode_tok_s"]
    print(f"{'engine':<12}{'prefill tok/s':>15}{'decode tok/s':>15}{'peak RSS MB':>13}")
    for name in ("specdec", "llama_cpp"):
        r = result.get(name)
        if r and "error" not in r:
            print(f"{name:<12}{r['prefill_tok_s']:>15.1f}{r['decode_tok_s']:>15.1f}{r['peak_rss_mb']:>13.1f}")
    if "decode_ratio" in result:
        print(f"decode ratio specdec / llama.cpp: {result['decode_ratio']:.2f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
