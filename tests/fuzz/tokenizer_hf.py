#!/usr/bin/env python3
"""The fuzz corpus of the tokenizer (tests/fuzz/tokenizer/) against HF `tokenizers`.

Every corpus input whose mode is 0 (SmolLM2) or 1 (the synthetic qwen2 byte-level BPE) —
its text, or for bytes that are not UTF-8 the text they decode to with U+FFFD (HF takes str;
the C round trip of the raw bytes is fuzz_tokenizer's) — is tokenized by the C tokenizer (sd_ref_dump) and by the reference tokenizer that
tests/reference/tokenizer_ref.py builds from the same GGUF file; the ids must be equal, with
special tokens parsed when the input's bit 2 says so. Exit 0 when all agree, 1 on any
mismatch, 77 (CTest skip, with the reason) without the model file or the Python packages.

usage: tokenizer_hf.py --dump PATH/TO/sd_ref_dump CORPUS_DIR [--model FILE.gguf]
"""
import argparse
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
import tokenizer_ref as ref  # noqa: E402


def corpus(directory):
    """(name, mode, special, text) for every input of modes 0 and 1. HF takes str: an input
    that is not UTF-8 is checked as the text its bytes decode to with U+FFFD replacing what
    cannot be decoded (its own bytes are fuzz_tokenizer's round trip)."""
    out, repaired = [], 0
    for name in sorted(os.listdir(directory)):
        data = open(os.path.join(directory, name), "rb").read()
        if not data or data[0] & 3 > 1:
            continue
        try:
            text = data[1:].decode("utf-8")
        except UnicodeDecodeError:
            text = data[1:].decode("utf-8", "replace")
            repaired += 1
        out.append((name, data[0] & 3, bool(data[0] & 4), text))
    return out, repaired


def check(tok, dump, model, items):
    failures = 0
    for special in (False, True):
        group = [it for it in items if it[2] == special]
        if not group:
            continue
        tok.encode_special_tokens = not special
        results = ref.run_c(dump, model, [it[3] for it in group], special)
        for (name, _, _, text), (ids, _) in zip(group, results):
            want = tok.encode(text, add_special_tokens=False).ids
            if ids != want:
                failures += 1
                print(f"MISMATCH {name} ({'special' if special else 'plain'}) for {text[:80]!r}\n"
                      f"  reference: {want[:40]}\n  specdec:   {ids[:40]}")
    return failures


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dump", required=True)
    ap.add_argument("--model", default=ref.default_model())
    ap.add_argument("corpus")
    args = ap.parse_args()
    if not os.path.exists(args.model):
        print(f"skip: tokenizer_hf: {args.model} not found (scripts/fetch-model.sh)")
        return 77
    try:
        import gguf  # noqa: F401
        import tokenizers  # noqa: F401
    except ImportError as e:
        print(f"skip: tokenizer_hf: {e} (scripts/install-deps.sh installs it)")
        return 77
    items, repaired = corpus(args.corpus)
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        synth = os.path.join(tmp, "qwen2.gguf")
        subprocess.run([args.dump, "synth", synth, "qwen2", "f32"], check=True,
                       capture_output=True)
        for mode, model in ((0, args.model), (1, synth)):
            group = [it for it in items if it[1] == mode]
            failures += check(ref.reference_tokenizer(model), args.dump, model, group)
    n0 = sum(1 for it in items if it[1] == 0)
    if failures:
        print(f"tokenizer_hf: {failures} of {len(items)} inputs differ from HF tokenizers")
        return 1
    print(f"tokenizer_hf: {len(items)} corpus inputs ({n0} SmolLM2, {len(items) - n0} synthetic "
          f"qwen2; {repaired} not UTF-8, checked with U+FFFD for what does not decode) tokenize "
          f"exactly as HF tokenizers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
