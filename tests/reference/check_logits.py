#!/usr/bin/env python3
"""Compare the C forward's logits (via `sd_ref_dump logits`) with the NumPy reference.

Real model: SmolLM2 (--model, else $SPECDEC_MODEL, else
~/.cache/specdec/SmolLM2-135M-Instruct.Q4_1.gguf) on fixed prompts.
--synthetic DIR: small random models written by `sd_ref_dump synth` (llama and qwen2,
every weight type), so NEOX rope, q/k/v biases and every dequantiser are covered too.

Metric, per position i, with r = reference logits, c = C logits (both [n_vocab]):
    scale_i = max_j |r_j|                       (largest logit magnitude at i)
    err_i   = max_{t in top-K(r)} |c_t - r_t| / max(scale_i, 1e-6)      (K = --top, 20)
Taking the error relative to the row's largest magnitude rather than to each |r_t|
keeps it meaningful for logits near zero (a relative error per token blows up there)
while still being scale-free. Pass: err_i <= --tol (1e-3) at every position, all C logits
finite, and argmax(c) == argmax(r) -- unless the reference's top two are a near-tie
(r[argmax r] - r[argmax c] <= tol * scale_i), which is reported as a tie, not a failure.

Models whose matrices take the engine's int8 matmul path (K-quants, IQ4, Q5_0, Q5_1:
activations rounded to int8 per block, as llama.cpp's Q8_K / Q8_0) are held to --int8-tol
(0.05) instead: that rounding costs about 1-2e-2 of max|logit| on these random models, and
modelling it in the reference does not tighten the check (an activation that float32 and
float64 round to different int8 values perturbs the next layers as much as the rounding
itself). The kernels are checked bit for bit against the rounding's contract in
tests/test_kernels_q8.c.

Exit: 0 pass, 1 failure (with details), 77 nothing to check (real model absent and no
--synthetic), 2 usage / tool errors.
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from forward_ref import RefModel  # noqa: E402

SKIP = 77

# Token ids from the HF `tokenizers` byte-level BPE built from the SmolLM2 GGUF vocab and
# merges (forward_ref.hf_tokenizer: Digits(individual_digits) + ByteLevel(no prefix
# space), control tokens as specials); each decodes back to its text.
PROMPTS = [
    # 'The capital of France is'
    ("france", [504, 3575, 282, 4649, 314]),
    # '<|im_start|>user\nWhat is 12+30? Answer with a number.<|im_end|>\n<|im_start|>assistant\n'
    ("chatml", [1, 4093, 198, 1780, 314, 216, 33, 34, 27, 35, 32, 47, 19842, 351, 253, 1230,
                30, 2, 198, 1, 520, 9531, 198]),
    # 'def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) +'
    ("code", [1604, 3987, 46477, 24, 94, 727, 472, 585, 304, 2067, 216, 34, 42, 448, 1003,
              304, 472, 1003, 3987, 46477, 24, 94, 731, 216, 33, 25, 1232]),
    # 'In 1969, Neil Armstrong became the first person to walk on the Moon. Le café était
    #  très bon, and the crew said:'
    ("mixed", [788, 216, 33, 41, 38, 41, 28, 27639, 24955, 2163, 260, 808, 1055, 288, 4549,
               335, 260, 8872, 30, 2250, 37366, 216, 19380, 2889, 681, 42623, 14047, 28, 284,
               260, 8612, 1137, 42]),
]

SYNTH_CASES = [("qwen2", t) for t in ("f32", "f16", "q8_0", "q4_k", "q5_k", "iq4_nl")] + \
              [("llama", t) for t in ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0",
                                      "q5_1", "iq4_nl", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k",
                                      "iq4_xs")]
SYNTH_LENGTHS = (6, 17)


class ToolError(Exception):
    pass


def run_tool(args):
    try:
        p = subprocess.run(args, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ToolError(f"{args[0]}: {e}") from e
    if p.returncode != 0:
        raise ToolError(f"{' '.join(args[:4])} ... exited {p.returncode}: "
                        f"{p.stderr.strip()[-2000:]}")


def c_logits(dump, model, tokens, n_vocab, tmpdir):
    out = os.path.join(tmpdir, "logits.f32")
    run_tool([dump, "logits", model, out] + [str(t) for t in tokens])
    a = np.fromfile(out, dtype="<f4")
    if a.size != len(tokens) * n_vocab:
        raise ToolError(f"{out}: {a.size} floats, expected {len(tokens)} x {n_vocab}")
    return a.reshape(len(tokens), n_vocab).astype(np.float64)


def compare(ref, c, top, tol):
    """-> (max err, argmax agreements, ties, list of failure strings)"""
    fails, max_err, agree, ties = [], 0.0, 0, 0
    for i in range(ref.shape[0]):
        r, x = ref[i], c[i]
        if not np.all(np.isfinite(x)):
            fails.append(f"pos {i}: non-finite C logits")
            continue
        scale = max(float(np.max(np.abs(r))), 1e-6)
        idx = np.argsort(-r)[:top]
        d = np.abs(x[idx] - r[idx]) / scale
        err = float(d.max())
        max_err = max(max_err, err)
        if err > tol:
            t = int(idx[int(d.argmax())])
            fails.append(f"pos {i}: rel err {err:.3e} > {tol:g} at token {t} "
                         f"(ref {r[t]:.6f}, C {x[t]:.6f}, scale {scale:.4f})")
        ar, ac = int(np.argmax(r)), int(np.argmax(x))
        if ar == ac:
            agree += 1
        elif r[ar] - r[ac] <= tol * scale:
            ties += 1
        else:
            fails.append(f"pos {i}: argmax C {ac} (ref logit {r[ac]:.6f}) != ref {ar} "
                         f"(ref logit {r[ar]:.6f})")
    return max_err, agree, ties, fails


# GGML types whose matmul the engine computes on int8 activations (kernels/cpu/quants.h)
INT8_PATH = ("q5_0", "q5_1", "iq4_nl", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "iq4_xs")


def check_model(dump, ref_model, path, prompts, args, tmpdir, label, tol):
    """Run every prompt on one model; returns (rows, failures)."""
    rows, failures = [], []
    for name, toks in prompts:
        ref = ref_model.logits_for(toks)
        c = c_logits(dump, path, toks, ref_model.n_vocab, tmpdir)
        err, agree, ties, fails = compare(ref, c, args.top, tol)
        case = f"{label}/{name}"
        agreed = f"{agree}/{len(toks)}" + (f" +{ties} tie" if ties else "")
        rows.append((case, len(toks), err, agreed, "FAIL" if fails else "ok"))
        failures += [f"{case}: {f}" for f in fails]
    return rows, failures


def synthetic_prompts(n_vocab, seed):
    rng = np.random.default_rng(seed)
    return [(f"rand{n}", [int(t) for t in rng.integers(0, n_vocab, n)]) for n in SYNTH_LENGTHS]


def run_synthetic(dump, outdir, args, tmpdir):
    os.makedirs(outdir, exist_ok=True)
    rows, failures = [], []
    for k, (arch, wtype) in enumerate(SYNTH_CASES):
        if args.only and wtype not in args.only.split(","):
            continue
        path = os.path.join(outdir, f"ref_synth_{arch}_{wtype}.gguf")
        run_tool([dump, "synth", path, arch, wtype])
        ref_model = RefModel(path)
        prompts = synthetic_prompts(ref_model.n_vocab, 1234 + k)
        tol = args.int8_tol if wtype in INT8_PATH else args.tol
        r, f = check_model(dump, ref_model, path, prompts, args, tmpdir, f"{arch}-{wtype}", tol)
        rows += r
        failures += f
        os.remove(path)
    return rows, failures


def default_model():
    env = os.environ.get("SPECDEC_MODEL")
    if env:
        return env
    return os.path.expanduser("~/.cache/specdec/SmolLM2-135M-Instruct.Q4_1.gguf")


def print_table(rows):
    w = max([len("case")] + [len(r[0]) for r in rows])
    print(f"{'case':<{w}}  {'pos':>4}  {'max rel err':>11}  {'argmax agree':<14} result")
    for case, n, err, agree, res in rows:
        print(f"{case:<{w}}  {n:>4}  {err:>11.3e}  {agree:<14} {res}")


def main(argv):
    ap = argparse.ArgumentParser(description="C forward logits vs the NumPy reference")
    ap.add_argument("--dump", required=True, help="path of the sd_ref_dump tool")
    ap.add_argument("--model", help="real GGUF model (default: $SPECDEC_MODEL or the cache)")
    ap.add_argument("--synthetic", metavar="DIR", help="also check synthetic models written here")
    ap.add_argument("--top", type=int, default=20, help="reference top-K logits compared")
    ap.add_argument("--tol", type=float, default=1e-3, help="max relative error")
    ap.add_argument("--int8-tol", type=float, default=0.05,
                    help="max relative error of int8-path models against the exact reference")
    ap.add_argument("--only", help="synthetic cases of these weight types only (comma list)")
    args = ap.parse_args(argv)

    model = args.model or default_model()
    have_real = os.path.isfile(model)
    if not have_real and not args.synthetic:
        print(f"SKIP: model {model} not found (set --model or SPECDEC_MODEL)")
        return SKIP
    rows, failures = [], []
    try:
        with tempfile.TemporaryDirectory(prefix="sd_ref_") as tmpdir:
            if have_real:
                r, f = check_model(args.dump, RefModel(model), model, PROMPTS, args, tmpdir,
                                   "smollm2", args.tol)
                rows, failures = rows + r, failures + f
            else:
                print(f"note: real model {model} not found; synthetic models only")
            if args.synthetic:
                r, f = run_synthetic(args.dump, args.synthetic, args, tmpdir)
                rows, failures = rows + r, failures + f
    except ToolError as e:
        if rows:
            print_table(rows)
        print(f"ERROR: {e}")
        return 2
    print_table(rows)
    print(f"metric: top-{args.top} reference logits, |C - ref| / max|ref| per position, "
          f"tolerance {args.tol:g} ({args.int8_tol:g} for the int8-path types)")
    return verdict(failures)


def verdict(failures):
    """Print the failures (or PASSED); the exit status: 1 if any, else 0."""
    if failures:
        print(f"FAILED: {len(failures)} problem(s)")
        for f in failures:
            print("  " + f)
        return 1
    print("PASSED")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
