#!/usr/bin/env python3
"""Greedy decode speed of llama.cpp (llama-cpp-python) on the prompt set, target alone and with
speculative drafting, for comparison with `specdec bench` on the same GGUF files.

Modes (each prompt runs every mode, one subprocess each, so they see the same machine load):
  none     the target alone
  lookup   llama-cpp-python's LlamaPromptLookupDecoding (n-gram prompt lookup, k tokens)
  draft    a draft GGUF behind llama-cpp-python's LlamaDraftModel hook: a second Llama that
           greedily drafts k tokens, reusing its KV cache across steps (llama-cpp-python has
           no built-in draft-model drafter; this is the smallest one on its public hook)

Each prompt is rendered with the ChatML template Qwen2.5's GGUF template produces for one user
message (its default system line) and generates up to -n tokens (EOS honoured). Decode tok/s
= (generated - 1) / (time of the last token - time of the first), so prefill is excluded as
in `specdec bench`.

    python3 bench/llamacpp_spec.py -m TARGET.gguf [--draft DRAFT.gguf] [--k 4] [-n 64] [-t 2]
        [--prompts bench/prompts] [--category code] [--modes none,lookup,draft]

Prints one line per (prompt, mode) and a JSON summary (last line).
"""
import argparse
import json
import os
import subprocess
import sys
import time

SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

CHILD = r"""
import json, sys, time
import numpy as np
import llama_cpp
from llama_cpp import Llama
from llama_cpp.llama_speculative import LlamaDraftModel, LlamaPromptLookupDecoding
model, text, n, threads, mode, draft_path, k = sys.argv[1:8]
n, threads, k = int(n), int(threads), int(k)

class DraftLlama(LlamaDraftModel):
    def __init__(self, path):
        self.llm = Llama(model_path=path, n_threads=threads, n_threads_batch=threads, n_ctx=2048,
                         n_batch=512, verbose=False)
    def __call__(self, input_ids, **kwargs):
        ids = [int(t) for t in input_ids]
        have = list(self.llm.input_ids[: self.llm.n_tokens])
        keep = 0
        while keep < min(len(have), len(ids) - 1) and have[keep] == ids[keep]:
            keep += 1
        self.llm.n_tokens = keep
        self.llm._ctx.kv_cache_seq_rm(-1, keep, -1)
        self.llm.eval(ids[keep:])
        out = []
        for i in range(k):
            t = int(np.argmax(self.llm.scores[self.llm.n_tokens - 1]))
            out.append(t)
            if i + 1 < k:
                self.llm.eval([t])
        return np.array(out, dtype=np.intc)

draft = None
if mode == "lookup":
    draft = LlamaPromptLookupDecoding(max_ngram_size=3, num_pred_tokens=k)
elif mode == "draft":
    draft = DraftLlama(draft_path)
llm = Llama(model_path=model, n_threads=threads, n_threads_batch=threads, n_ctx=2048, n_batch=512,
            draft_model=draft, verbose=False)
toks = llm.tokenize(text.encode(), add_bos=False, special=True)
stamps, out = [], []
for tok in llm.generate(toks, temp=0.0, top_k=1, reset=True):
    stamps.append(time.perf_counter())
    if tok == llm.token_eos():
        break
    out.append(int(tok))
    if len(out) >= n:
        break
dec = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else 0.0
print(json.dumps({"tokens": len(out), "decode_tok_s": dec, "ids": out,
                  "version": llama_cpp.__version__}))
"""


def load_prompts(directory, category):
    prompts = []
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".txt"):
            continue
        with open(os.path.join(directory, name), encoding="utf-8") as f:
            head, _, body = f.read().partition("\n\n")
        cat = head.split(":", 1)[1].strip()
        if category in (None, cat):
            prompts.append((name[:-4], cat, body.strip("\n")))
    return prompts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("--draft")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("-n", type=int, default=64)
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--prompts", default="bench/prompts")
    ap.add_argument("--category", default="code")
    ap.add_argument("--modes", default="none,lookup,draft")
    a = ap.parse_args()
    modes = [m for m in a.modes.split(",") if m != "draft" or a.draft]
    results = []
    for name, cat, body in load_prompts(a.prompts, a.category):
        text = (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{body}<|im_end|>\n"
                "<|im_start|>assistant\n")
        ref = None
        for mode in modes:
            p = subprocess.run([sys.executable, "-c", CHILD, a.model, text, str(a.n), str(a.threads),
                                mode, a.draft or "", str(a.k)], capture_output=True, text=True)
            if p.returncode != 0:
                sys.exit(f"llamacpp_spec: {name} {mode}: " + (p.stderr.strip().splitlines() or ["failed"])[-1])
            r = json.loads(p.stdout.strip().splitlines()[-1])
            ref = r["ids"] if ref is None else ref
            r.update(prompt=name, category=cat, mode=mode, same_as_none=r["ids"] == ref)
            del r["ids"]
            results.append(r)
            print(f"{name:<16}{mode:<8}{r['tokens']:>5} tokens {r['decode_tok_s']:>7.2f} tok/s"
                  f"{'' if r['same_as_none'] else '  (output differs from the target alone)'}")
    summary = {}
    for mode in modes:
        rs = [r for r in results if r["mode"] == mode]
        tok = sum(r["tokens"] - 1 for r in rs)
        secs = sum((r["tokens"] - 1) / r["decode_tok_s"] for r in rs if r["decode_tok_s"] > 0)
        summary[mode] = tok / secs if secs else 0.0
    print(json.dumps({"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "model": a.model,
                      "draft": a.draft, "k": a.k, "n": a.n, "threads": a.threads,
                      "decode_tok_s": summary, "runs": results}))


if __name__ == "__main__":
    main()
