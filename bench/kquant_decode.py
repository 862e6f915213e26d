#!/usr/bin/env python3
"""Decode and prefill speed of specdec vs llama.cpp on every weight type, one command.

    python3 bench/kquant_decode.py [--types Q4_0,Q4_K,...] [--threads 1,2] [-n 128]
        [--prefill 512] [-r 3] [--qwen] [--out bench/results] [--short]

What it does, in order:
1. llama.cpp: builds `llama-bench` from the sources inside the llama-cpp-python 0.3.36 sdist
   (`pip download --no-binary :all: --no-deps llama-cpp-python==0.3.36`, vendor/llama.cpp,
   Release, native CPU flags, no CUDA) into $CACHE/llamacpp unless it is there already.
2. specdec: builds `specdec` and `requant` (RelWithDebInfo, -DSPECDEC_BENCH=ON) in
   build-bench/ unless --specdec-build DIR names a build that has them.
3. Models: SmolLM2-135M-Instruct (the cached Q4_1 file, scripts/fetch-model.sh) re-encoded by
   the project's GGUF writer (bench/requant.c) in every --types entry, same weights each time;
   rows of 576 take llama-quantize's fallback for the K-quants and IQ4_XS (requant.c). With
   --qwen also Qwen2.5-Coder-1.5B-Instruct Q4_K_M as downloaded (scripts/fetch-qwen.sh).
4. For each repeat, model and thread count, both engines in alternating order (which one goes
   first flips every time), each in its own process:
   - decode: llama-bench -p 0 -n N (tg N: N tokens after an empty context) and
     `specdec run -p <short prompt> -n N --ignore-eos --temp 0` (its decode tok/s line);
   - prefill: llama-bench -p P -n 0 and `specdec run -p <text of exactly P tokens> -n 1`
     (its prefill tok/s line);
   peak RSS of every process from wait4(). The median over repeats is reported.
5. Writes <out>/<date>-cpu-kquants.{json,md}: device, date, command, versions, every
   measurement, and per (model, threads) specdec / llama.cpp ratios.

--short: one type (Q4_K unless --types), 1 thread, -n 16, --prefill 64, 1 repeat: a check
that everything runs end to end, not a measurement.
"""
import argparse
import datetime
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tarfile
import threading

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
from cpu_decode import cpu_model  # noqa: E402
CACHE = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "specdec")
LLAMA_VERSION = "0.3.36"
ALL_TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS"]
SHORT_PROMPT = "Speculative decoding speeds up language model inference:"
PREFILL_TEXT = (
    "Speculative decoding speeds up language model inference: a small draft model proposes "
    "several tokens and the large target model checks them all in a single forward pass. "
    "When the draft agrees with the target, several tokens are produced for the price of one "
    "target step; when it does not, the target's own token is kept and nothing is lost. "
    "The technique works best on text that is easy to predict, such as code that repeats "
    "identifiers, summaries that reuse phrases of their source, or answers that follow a "
    "fixed template. It helps least on creative writing, where every token is a surprise. ")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def run(cmd, **kw):
    log("+ " + " ".join(shlex.quote(str(c)) for c in cmd))
    return subprocess.run(cmd, check=True, **kw)


# ---- builds -----------------------------------------------------------------------------------

def build_llama_cpp(jobs):
    """-> path of llama-bench, built from the sdist's vendor/llama.cpp once."""
    base = os.path.join(CACHE, "llamacpp")
    binary = os.path.join(base, "build", "bin", "llama-bench")
    if os.path.exists(binary):
        return binary
    os.makedirs(base, exist_ok=True)
    sdist = os.path.join(base, f"llama_cpp_python-{LLAMA_VERSION}.tar.gz")
    if not os.path.exists(sdist):
        run([sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
             f"llama-cpp-python=={LLAMA_VERSION}", "-d", base])
    src = os.path.join(base, f"llama_cpp_python-{LLAMA_VERSION}", "vendor", "llama.cpp")
    if not os.path.isdir(src):
        with tarfile.open(sdist) as t:
            t.extractall(base)
    build = os.path.join(base, "build")
    run(["cmake", "-S", src, "-B", build, "-DCMAKE_BUILD_TYPE=Release", "-DGGML_CUDA=OFF",
         "-DGGML_NATIVE=ON", "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF",
         "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF"], stdout=subprocess.DEVNULL)
    run(["cmake", "--build", build, "--target", "llama-bench", "-j", str(jobs)],
        stdout=subprocess.DEVNULL)
    return binary


def build_specdec(build_dir, jobs):
    """-> (specdec, requant) binaries of a RelWithDebInfo SPECDEC_BENCH build."""
    specdec = os.path.join(build_dir, "bin", "specdec")
    requant = os.path.join(build_dir, "bin", "requant")
    if not (os.path.exists(specdec) and os.path.exists(requant)):
        run(["cmake", "-S", ROOT, "-B", build_dir, "-DCMAKE_BUILD_TYPE=RelWithDebInfo",
             "-DSPECDEC_BENCH=ON", "-DSPECDEC_TESTS=OFF"], stdout=subprocess.DEVNULL)
        run(["cmake", "--build", build_dir, "--target", "specdec_cli", "requant", "-j", str(jobs)],
            stdout=subprocess.DEVNULL)
    return specdec, requant


# ---- models -----------------------------------------------------------------------------------

def smollm2_models(requant, types, outdir):
    src = os.path.join(CACHE, "SmolLM2-135M-Instruct.Q4_1.gguf")
    if not os.path.exists(src):
        run(["bash", os.path.join(ROOT, "scripts", "fetch-model.sh")], stdout=subprocess.DEVNULL)
    os.makedirs(outdir, exist_ok=True)
    models = []
    for t in types:
        path = os.path.join(outdir, f"SmolLM2-135M-Instruct.{t}.gguf")
        if not os.path.exists(path):
            p = run([requant, src, path + ".part", t], capture_output=True, text=True)
            os.replace(path + ".part", path)
            log(p.stdout.strip().replace("\n", "; "))
        models.append({"name": f"SmolLM2-135M {t}", "path": path, "type": t})
    return models


def qwen_model():
    path = os.path.join(CACHE, "Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf")
    if not os.path.exists(path):
        run(["bash", os.path.join(ROOT, "scripts", "fetch-qwen.sh")], stdout=subprocess.DEVNULL)
    return {"name": "Qwen2.5-Coder-1.5B Q4_K_M", "path": path, "type": "Q4_K_M"}


# ---- one measurement per process ----------------------------------------------------------------

def timed(cmd):
    """Run cmd; -> (stdout, stderr, its peak RSS in MiB, from wait4)."""
    log("+ " + " ".join(shlex.quote(str(c)) for c in cmd))
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = [], []
    readers = [threading.Thread(target=lambda f=f, acc=acc: acc.append(f.read()))
               for f, acc in ((p.stdout, out), (p.stderr, err))]
    for r in readers:
        r.start()
    _, status, usage = os.wait4(p.pid, 0)
    for r in readers:
        r.join()
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise RuntimeError(f"{cmd[0]} exited {p.returncode}: {''.join(err).strip()[-800:]}")
    return "".join(out), "".join(err), usage.ru_maxrss / 1024.0


SPECDEC_STATS = re.compile(r"prefill (\d+) tokens in ([\d.]+) s \(([\d.]+) tok/s\); decode (\d+) tokens "
                           r"in ([\d.]+) s \(([\d.]+) tok/s\)")


def specdec_run(specdec, model, prompt, n, threads):
    cmd = [specdec, "run", "-m", model, "-p", prompt, "-n", str(n), "--temp", "0", "--ignore-eos",
           "-t", str(threads)]
    _, err, rss = timed(cmd)
    m = SPECDEC_STATS.search(err)
    if not m:
        raise RuntimeError("specdec printed no statistics line:\n" + err[-800:])
    return {"prefill_tokens": int(m[1]), "prefill_tok_s": float(m[3]), "decode_tokens": int(m[4]),
            "decode_tok_s": float(m[6]), "rss_mib": rss, "cmd": " ".join(shlex.quote(c) for c in cmd)}


def llama_bench(binary, model, p, n, threads):
    cmd = [binary, "-m", model, "-p", str(p), "-n", str(n), "-t", str(threads), "-r", "1", "-o", "json"]
    out, _, rss = timed(cmd)
    rows = json.loads(out)
    r = rows[0]
    return {"tok_s": r["avg_ts"], "n_prompt": r["n_prompt"], "n_gen": r["n_gen"], "rss_mib": rss,
            "build": f'{r.get("build_commit", "?")} ({r.get("build_number", "?")})',
            "cmd": " ".join(shlex.quote(c) for c in cmd)}


def prefill_prompt(specdec, model, target):
    """A prefix of PREFILL_TEXT (repeated) that specdec tokenizes to at most, and about, `target`
    tokens: word counts scaled by target / measured a few times, then trimmed to fit."""
    words = (PREFILL_TEXT * (target // 60 + 2)).split(" ")

    def tokens(nw):
        return specdec_run(specdec, model, " ".join(words[:nw]), 1, 2)["prefill_tokens"]

    nw = min(len(words), target * 3 // 4)
    got = tokens(nw)
    for _ in range(3):
        if got == target:
            break
        nw = min(len(words), max(1, nw * target // got))
        got = tokens(nw)
    while got > target and nw > 1:
        nw -= 1
        got = tokens(nw)
    return " ".join(words[:nw]), got


# ---- the run ------------------------------------------------------------------------------------

def git_commit():
    try:
        return subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def median(xs):
    return statistics.median(xs) if xs else None


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--types", help="comma list (default: all of " + ",".join(ALL_TYPES) + ")")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("-n", type=int, default=128, help="decode tokens")
    ap.add_argument("--prefill", type=int, default=512, help="prefill prompt tokens")
    ap.add_argument("-r", "--repeats", type=int, default=3)
    ap.add_argument("--qwen", action="store_true", help="also Qwen2.5-Coder-1.5B Q4_K_M (downloads it)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    ap.add_argument("--models-dir", default=os.path.join(CACHE, "bench-models"))
    ap.add_argument("--specdec-build", default=os.path.join(ROOT, "build-bench"))
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="build parallelism")
    ap.add_argument("--short", action="store_true", help="end-to-end check, not a measurement")
    args = ap.parse_args(argv)
    types = args.types.split(",") if args.types else (["Q4_K"] if args.short else ALL_TYPES)
    threads = [1] if args.short and args.threads == "1,2" else [int(t) for t in args.threads.split(",")]
    if args.short:
        args.n, args.prefill, args.repeats = min(args.n, 16), min(args.prefill, 64), 1

    llama = build_llama_cpp(args.jobs)
    specdec, requant = build_specdec(args.specdec_build, args.jobs)
    models = smollm2_models(requant, types, args.models_dir)
    if args.qwen:
        models.append(qwen_model())

    date = datetime.datetime.now(datetime.timezone.utc)
    load_before, commit = os.getloadavg(), git_commit()
    results = []
    order = 0
    prompts = {}  # one prefill text per tokenizer (every SmolLM2 type shares one)
    loads = []
    for m in models:
        family = m["name"].split(" ")[0]
        if family not in prompts:
            prompts[family] = prefill_prompt(specdec, m["path"], args.prefill)
        text, ptoks = prompts[family]
        log(f"{m['name']}: prefill prompt of {ptoks} tokens")
        for t in threads:
            runs = {"specdec": [], "llama.cpp": []}
            for rep in range(args.repeats):
                engines = ["specdec", "llama.cpp"] if order % 2 == 0 else ["llama.cpp", "specdec"]
                order += 1
                for e in engines:
                    loads.append(os.getloadavg()[0])
                    if e == "specdec":
                        d = specdec_run(specdec, m["path"], SHORT_PROMPT, args.n, t)
                        p = specdec_run(specdec, m["path"], text, 1, t)
                        runs[e].append({"decode_tok_s": d["decode_tok_s"], "prefill_tok_s": p["prefill_tok_s"],
                                        "prefill_tokens": p["prefill_tokens"],
                                        "rss_mib": max(d["rss_mib"], p["rss_mib"]),
                                        "cmds": [d["cmd"], p["cmd"]]})
                    else:
                        d = llama_bench(llama, m["path"], 0, args.n, t)
                        p = llama_bench(llama, m["path"], args.prefill, 0, t)
                        runs[e].append({"decode_tok_s": d["tok_s"], "prefill_tok_s": p["tok_s"],
                                        "prefill_tokens": p["n_prompt"], "rss_mib": max(d["rss_mib"], p["rss_mib"]),
                                        "build": d["build"], "cmds": [d["cmd"], p["cmd"]]})
            row = {"model": m["name"], "type": m["type"], "path": m["path"], "threads": t, "runs": runs}
            for e in runs:
                for k in ("decode_tok_s", "prefill_tok_s", "rss_mib"):
                    row[f"{e}_{k}"] = median([r[k] for r in runs[e]])
            row["decode_ratio"] = row["specdec_decode_tok_s"] / row["llama.cpp_decode_tok_s"]
            row["prefill_ratio"] = row["specdec_prefill_tok_s"] / row["llama.cpp_prefill_tok_s"]
            results.append(row)
            log(f"{m['name']} t={t}: decode {row['specdec_decode_tok_s']:.1f} vs {row['llama.cpp_decode_tok_s']:.1f} "
                f"({row['decode_ratio']:.2f}x), prefill {row['specdec_prefill_tok_s']:.1f} vs "
                f"{row['llama.cpp_prefill_tok_s']:.1f} ({row['prefill_ratio']:.2f}x)")

    report = {
        "device": {"kind": "cpu", "cpu": cpu_model(), "cores": os.cpu_count(),
                   "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                   "load1_during": {"min": min(loads), "median": median(loads), "max": max(loads)}},
        "date": date.isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in [sys.executable, os.path.relpath(__file__, ROOT)] + argv),
        "specdec_commit": commit,
        "llama_cpp": f"llama-cpp-python {LLAMA_VERSION} sdist vendor/llama.cpp, Release, GGML_NATIVE=ON, llama-bench",
        "config": {"decode_tokens": args.n, "prefill_tokens": args.prefill, "repeats": args.repeats,
                   "threads": threads, "short": args.short},
        "results": results,
    }
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, date.strftime("%Y-%m-%d") + "-cpu-kquants" + ("-short" if args.short else ""))
    with open(stem + ".json", "w") as f:
        json.dump(report, f, indent=1)
    with open(stem + ".md", "w") as f:
        f.write(markdown(report))
    print(markdown(report))
    log(f"wrote {stem}.json and {stem}.md")
    return 0


def markdown(rep):
    lines = [f"# specdec vs llama.cpp, decode and prefill per weight type ({rep['device']['cpu']})", "",
             f"- **Device**: {rep['device']['cpu']}, {rep['device']['cores']} cores, shared with other engineers; "
             f"1-min load average before {rep['device']['loadavg_before'][0]:.2f}, during (sampled before each "
             f"measurement) min {rep['device']['load1_during']['min']:.2f} / median "
             f"{rep['device']['load1_during']['median']:.2f} / max {rep['device']['load1_during']['max']:.2f}, "
             f"after {rep['device']['loadavg_after'][0]:.2f}",
             f"- **Date**: {rep['date']}",
             f"- **Command**: `{rep['command']}`",
             f"- **specdec**: commit {rep['specdec_commit']}; **llama.cpp**: {rep['llama_cpp']}",
             f"- **Settings**: decode {rep['config']['decode_tokens']} tokens (batch 1, greedy), prefill "
             f"{rep['config']['prefill_tokens']} tokens, median of {rep['config']['repeats']} alternated runs, "
             "peak RSS per process", "",
             "| model | threads | decode specdec | decode llama.cpp | ratio | prefill specdec | prefill llama.cpp "
             "| ratio | RSS specdec / llama.cpp (MiB) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rep["results"]:
        lines.append(f"| {r['model']} | {r['threads']} | {r['specdec_decode_tok_s']:.1f} | "
                     f"{r['llama.cpp_decode_tok_s']:.1f} | {r['decode_ratio']:.2f}x | {r['specdec_prefill_tok_s']:.1f} | "
                     f"{r['llama.cpp_prefill_tok_s']:.1f} | {r['prefill_ratio']:.2f}x | "
                     f"{r['specdec_rss_mib']:.0f} / {r['llama.cpp_rss_mib']:.0f} |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
