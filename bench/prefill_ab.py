"""Prefill A/B: two specdec binaries and llama.cpp's llama-bench, alternated, 1 thread, 512 tokens.

    prefill_ab.py SPECDEC_BEFORE SPECDEC_AFTER [REPEATS]

Models: the SmolLM2 files of bench/kquant_decode.py (~/.cache/specdec/bench-models) and the
Qwen2.5-Coder-1.5B Q4_K_M file; llama-bench as kquant_decode.py builds it. Prints each run
(tok/s, the process's user CPU time, 1-min load) and per model the medians and ratios."""
import json
import os
import re
import resource
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
M = os.path.expanduser("~/.cache/specdec/bench-models")
models = [(t, f"{M}/SmolLM2-135M-Instruct.{t}.gguf") for t in ["Q2_K", "Q3_K", "IQ4_XS", "Q4_K", "Q5_K", "Q6_K"]]
models.append(("Qwen-Q4_K_M", os.path.expanduser("~/.cache/specdec/Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf")))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import kquant_decode  # noqa: E402  (its prefill text: 452 words are 513 SmolLM2 tokens)

prompt = " ".join((kquant_decode.PREFILL_TEXT * 12).split(" ")[:452])
binaries = {"before": sys.argv[1], "after": sys.argv[2]}
llama = os.path.expanduser("~/.cache/specdec/llamacpp/build/bin/llama-bench")
reps = int(sys.argv[3]) if len(sys.argv) > 3 else 2
def run(cmd):
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run(cmd, capture_output=True, text=True)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return p, r1.ru_utime - r0.ru_utime
for name, path in models:
    res = {"before": [], "after": [], "llama.cpp": []}
    for rep in range(reps):
        for eng in ["before", "after", "llama.cpp"]:
            load = os.getloadavg()[0]
            if eng == "llama.cpp":
                p, cpu = run([llama, "-m", path, "-p", "512", "-n", "0", "-t", "1", "-r", "1", "-o", "json"])
                j = json.loads(p.stdout); tps = j[0]["avg_ts"]; ntok = 512
            else:
                p, cpu = run([binaries[eng], "run", "-m", path, "-p", prompt, "-n", "1", "--temp", "0", "--ignore-eos", "-t", "1"])
                m = re.search(r"prefill (\d+) tokens in ([\d.]+) s \(([\d.]+) tok/s\)", p.stderr); tps = float(m[3]); ntok = int(m[1])
            res[eng].append((tps, cpu, load, ntok))
            print(name, eng, rep, f"{tps:.1f} tok/s  ({ntok} tok, process user cpu {cpu:.2f} s, load {load:.2f})", flush=True)
    med = {e: sorted(x[0] for x in v)[len(v) // 2] if len(v) % 2 else sum(sorted(x[0] for x in v)[len(v)//2-1:len(v)//2+1]) / 2 for e, v in res.items()}
    print(f"SUMMARY {name}: before {med['before']:.1f} after {med['after']:.1f} llama.cpp {med['llama.cpp']:.1f} | before/llama {med['before']/med['llama.cpp']:.2f}x after/llama {med['after']/med['llama.cpp']:.2f}x after/before {med['after']/med['before']:.2f}x", flush=True)
