#!/usr/bin/env python3
"""Compare drafters on the bench prompts and print a table.

Target-only decoding, the built-in chain drafters (layer-skip; a draft model with the
target's vocabulary, --draft-model; one with another vocabulary, --xvocab), n-gram prompt
lookup, token trees (n-gram and layer-skip with --tree SHAPE, layer-skip with a dynamic
tree of the same node budget), and a toy drafter written here in Python, each greedy on every prompt of
bench/prompts (rendered with the model's chat template). Every speculative output is
checked against target-only output (greedy: it must be the same tokens). Per drafter:
decode tokens/s, speedup over target-only, acceptance rate, tokens per target forward.

    SPECDEC_LIB=build/lib/libspecdec.so PYTHONPATH=python \\
        python3 python/examples/compare_drafters.py -n 64 --trace steps.jsonl

Timings depend on the machine and its load; acceptance and tokens per step do not.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import specdec

ROOT = Path(__file__).resolve().parents[2]


class PyLookup(specdec.Drafter):
    """Toy prompt lookup in Python: the tokens that followed the latest earlier occurrence
    of the context's last n tokens (n = 3, 2, 1), reported as evidence class n."""

    def propose(self, context: List[int], k: int) -> specdec.Proposal:
        for n in (3, 2, 1):
            if len(context) <= n:
                continue
            tail = context[-n:]
            for j in range(len(context) - n - 1, -1, -1):
                if context[j:j + n] == tail:
                    return specdec.Proposal(context[j + n:j + n + k], evidence=n)
        return specdec.Proposal([], 0)


def tree_nodes(shape: str) -> int:
    """Nodes of a static shape "WxWx...": w1 + w1*w2 + ..."""
    total, level = 0, 1
    for w in shape.split("x"):
        level *= int(w)
        total += level
    return total


def read_prompts(folder: Path, limit: int) -> List[Tuple[str, str]]:
    """(name, text) of folder/*.txt, whose first line is "category: NAME" and second blank."""
    prompts = []
    for path in sorted(folder.glob("*.txt"))[:limit or None]:
        head, _, body = path.read_text(encoding="utf-8").partition("\n\n")
        if not head.startswith("category:"):
            raise SystemExit(f"{path}: expected a first line 'category: NAME'")
        prompts.append((path.stem, body.strip()))
    return prompts


def main(argv: Sequence[str]) -> int:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "specdec"
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", default=str(cache / "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--prompts", default=str(ROOT / "bench" / "prompts"))
    ap.add_argument("--limit", type=int, default=0, help="use the first N prompts (0: all)")
    ap.add_argument("-n", "--max-tokens", type=int, default=64)
    ap.add_argument("-t", "--threads", type=int, default=0)
    ap.add_argument("--k", type=int, default=4, help="draft length (the adaptive maximum)")
    ap.add_argument("--draft-model", help="a draft model with the target's vocabulary")
    ap.add_argument("--xvocab", help="a draft model with another vocabulary")
    ap.add_argument("--trace", help="write every step of every run here (JSON lines)")
    ap.add_argument("--json", help="write the table here as JSON")

    ap.add_argument("--tree", default="2x2x1",
                    help="static token-tree shape of the tree rows (dynamic rows: the same "
                         "node budget); 'none' drops the tree rows")
    args = ap.parse_args(argv)

    # (label, drafter, tree shape or None for a chain)
    drafters: List[Tuple[str, specdec.drafter.DrafterSource, Optional[str]]] = [
        ("target-only", None, None), ("ngram", "ngram", None), ("layerskip", "layerskip", None),
        ("python lookup", PyLookup, None)]
    if args.tree != "none":
        budget = tree_nodes(args.tree)
        drafters += [("ngram tree", "ngram", args.tree),
                     ("layerskip tree", "layerskip", args.tree),
                     (f"ls dynamic:{budget}", "layerskip", f"dynamic:{budget}")]
    if args.draft_model:
        drafters.append(("model", f"model:{args.draft_model}", None))
    if args.xvocab:
        drafters.append(("xvocab", f"xvocab:{args.xvocab}", None))

    prompts = read_prompts(Path(args.prompts), args.limit)
    trace = open(args.trace, "w", encoding="utf-8") if args.trace else None
    rows: Dict[str, Dict[str, float]] = {}
    with specdec.Model(args.model, n_threads=args.threads) as model:
        reference: Dict[str, List[int]] = {}
        for label, drafter, tree in drafters:
            tokens = seconds = drafted = accepted = steps = 0
            exact = True
            for name, text in prompts:
                prompt = model.chat([("user", text)])
                t0 = time.perf_counter()
                r = model.generate(prompt, parse_special=True, max_tokens=args.max_tokens,
                                   temperature=0, drafter=drafter, k=args.k,
                                   record_steps=trace is not None, tree=tree)
                elapsed = time.perf_counter() - t0
                if drafter is None:
                    reference[name] = r.tokens
                else:
                    exact &= r.tokens == reference[name]
                tokens += len(r.tokens)
                seconds += r.decode_seconds or elapsed
                drafted += r.stats.drafted
                accepted += r.stats.accepted
                steps += r.stats.steps
                for s in r.steps or []:
                    trace.write(json.dumps(dict(vars(s), prompt=name, drafter=label)) + "\n")
            rows[label] = {"tok_s": tokens / seconds if seconds else 0.0,
                           "acceptance": accepted / drafted if drafted else 0.0,
                           "tokens_per_step": tokens / steps if steps else 0.0,
                           "exact": exact}
            print(f"{label}: done", file=sys.stderr)
    if trace:
        trace.close()

    base = rows["target-only"]["tok_s"]
    print(f"{len(prompts)} prompts, {args.max_tokens} tokens each, greedy, k {args.k}, tree {args.tree}, "
          f"model {Path(args.model).name}")
    print(f"{'drafter':<18}{'tok/s':>8}{'speedup':>9}{'accept':>8}{'tok/step':>10}  exact")
    for label, row in rows.items():
        exact = "-" if label == "target-only" else ("yes" if row["exact"] else "NO")
        print(f"{label:<18}{row['tok_s']:>8.1f}{row['tok_s'] / base if base else 0:>8.2f}x"
              f"{row['acceptance']:>8.2f}{row['tokens_per_step']:>10.2f}  {exact}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0 if all(r["exact"] for r in rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
