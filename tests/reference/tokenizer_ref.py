#!/usr/bin/env python3
"""Independent tokenizer check: the C tokenizer (through sd_ref_dump) against HF `tokenizers`.

The reference tokenizer is built from the GGUF metadata alone (read with gguf.GGUFReader):
models.BPE(vocab, merges), the pre-tokenizer named by tokenizer.ggml.pre, a ByteLevel decoder
and the control/user-defined tokens as special added tokens. For SmolLM2 ("smollm") this is
Digits(individual_digits=True) + ByteLevel(add_prefix_space=False), as in its tokenizer.json.

Every corpus string must get exactly the reference ids, and decoding the C ids must give back
the input bytes. Exit 0 on success, 1 on any mismatch, 77 (CTest skip) without the model file.

usage: tokenizer_ref.py --dump PATH/TO/sd_ref_dump [--model FILE.gguf]
"""
import argparse
import os
import subprocess
import sys
import tempfile

QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

PYTHON_SNIPPET = '''def fib(n):
    """Return the n-th Fibonacci number."""
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


if __name__ == "__main__":
    print([fib(i) for i in range(10)])  # 0 1 1 2 3 5 8 ...
'''

C_SNIPPET = '''#include <stdio.h>

static int sum(const int *xs, size_t n)
{
\tint s = 0;
\tfor (size_t i = 0; i < n; i++) s += xs[i];
\treturn s;
}

int main(void) { int v[3] = {1, 2, 3}; printf("%d\\n", sum(v, 3)); return 0; }
'''

PROSE = ("The quick brown fox jumps over the lazy dog. Speculative decoding lets a small draft "
         "model propose several tokens that a larger target model verifies in one pass; the "
         "output is exactly what the target alone would have produced. ") * 6

CORPUS = [
    "",
    "Hello world",
    "Hello, world! How are you today?",
    " leading space",
    "trailing space ",
    "  two leading spaces and   three inside",
    "I'm sure you'll see they've done it; we'd said it's John's and we're fine.",
    "DON'T SHOUT, I'M HERE. YOU'LL SEE. IT'S 'QUOTED'.",
    "caf\u00e9 na\u00efve \u00fcber Stra\u00dfe se\u00f1or \u00e0 la cr\u00e8me br\u00fbl\u00e9e",
    "\u00c9cole \u00d6sterreich \u00c5ngstr\u00f6m \u0152uvre",
    "\u4eca\u65e5\u306f\u3044\u3044\u5929\u6c17\u3067\u3059\u306d\u3002\u6771\u4eac\u306b\u884c\u304d\u307e\u3059\u3002",
    "\u6211\u7231\u81ea\u7136\u8bed\u8a00\u5904\u7406\uff0c\u4f60\u5462\uff1f",
    "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8\uc785\ub2c8\ub2e4.",
    "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440! \u039a\u03b1\u03bb\u03b7\u03bc\u03ad\u03c1\u03b1 \u03ba\u03cc\u03c3\u03bc\u03b5.",
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645 \u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd",
    "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e \u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35",
    "emoji \U0001F600\U0001F680\u2764\ufe0f done",
    "family \U0001F468\u200D\U0001F469\u200D\U0001F467\u200D\U0001F466 and flag \U0001F1EB\U0001F1F7",
    "\U0001F44D\U0001F3FD thumbs, \U0001F9D1\u200D\U0001F4BB coder",
    "12345",
    "3.14159 and 2.71828",
    "Call 555-0123 or +1 (800) 123-4567 before 2024-12-31T23:59:59Z",
    "1,000,000 people; 0.5% of 42",
    "superscripts x\u00b2 + y\u00b3, fractions \u00bd \u00be, roman \u216b, fullwidth \uff11\uff12\uff13",
    "  \t\n\n   ",
    "line one\nline two\r\nline three\n\n\nafter blank lines",
    "tabs\tbetween\t\twords\t",
    "nbsp\u00a0here and ideographic\u3000space and\u2028line sep",
    "trailing newline\n",
    "\n\nleading newlines",
    "a" * 300,
    " " * 40 + "x",
    "!!!???...---***",
    "(parens) [brackets] {braces} <angles> \"quotes\" 'single' `back`",
    "email: someone@example.com, url: https://example.org/path?q=1&r=two#frag",
    '{"key": [1, 2, 3], "nested": {"a": null, "b": true}}',
    "# Title\n\n- item *one*\n- item **two**\n\n> quote\n\n```bash\nls -la\n```",
    "E = mc^2; \u2200x \u2208 \u211d: x\u00b2 \u2265 0; \u03c0 \u2248 3.14",
    PYTHON_SNIPPET,
    C_SNIPPET,
    "    indented four\n        indented eight\n\tindented tab",
    "<|im_start|>user\nnot parsed as special here<|im_end|>",
    "mixed\u00e9\u4e2d\u6587123abc\U0001F600!?",
    "Zero\u200bwidth\u200cjoiners\u200d and soft\u00adhyphen",
    PROSE,
]

SPECIAL_CORPUS = [
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>",
    "<|im_end|><|im_start|>",
    "text before<|im_end|>text after",
    "<|im_start partial <|im_start|",
    "<repo_name>specdec<file_sep>tokenizer/tokenizer.c<filename>x.py\n<gh_stars>100",
    "  <|im_start|>  spaces around  <|im_end|>  ",
]


def default_model():
    env = os.environ.get("SPECDEC_MODEL")
    if env:
        return env
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "specdec", "SmolLM2-135M-Instruct.Q4_1.gguf")


def field_str(r, key):
    f = r.fields.get(key)
    return None if f is None else bytes(f.parts[f.data[0]]).decode("utf-8")


def field_strs(r, key):
    f = r.fields[key]
    return [bytes(f.parts[i]).decode("utf-8") for i in f.data]


def reference_tokenizer(path):
    import gguf
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    r = gguf.GGUFReader(path)
    model = field_str(r, "tokenizer.ggml.model")
    if model != "gpt2":
        sys.exit(f"tokenizer_ref: only gpt2 (byte-level BPE) vocabularies are checked, not {model}")
    tokens = field_strs(r, "tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in field_strs(r, "tokenizer.ggml.merges")]
    tt = r.fields.get("tokenizer.ggml.token_type")
    types = [int(tt.parts[i][0]) for i in tt.data] if tt else [1] * len(tokens)
    vocab = {t: i for i, t in enumerate(tokens)}

    tok = Tokenizer(models.BPE(vocab, merges))
    pre = field_str(r, "tokenizer.ggml.pre") or "gpt2"
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in ("smollm", "starcoder"):
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), byte_level])
    elif pre == "qwen2":
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    specials = [t for t, ty in zip(tokens, types) if ty in (3, 4)]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    return tok


def run_dump(dump, command, model, corpus, special):
    """`sd_ref_dump COMMAND MODEL CORPUS [--special]` on the corpus bytes; its stdout lines
    (exits with its stderr when it fails)."""
    with tempfile.NamedTemporaryFile("wb", suffix=".corpus", delete=False) as f:
        f.write(corpus)
        path = f.name
    try:
        cmd = [dump, command, model, path] + (["--special"] if special else [])
        out = subprocess.run(cmd, capture_output=True, check=False)
    finally:
        os.unlink(path)
    if out.returncode != 0:
        sys.exit(f"{os.path.basename(sys.argv[0])}: {' '.join(cmd)} failed ({out.returncode}):\n"
                 f"{out.stderr.decode(errors='replace')}")
    return out.stdout.decode().splitlines()


def run_c(dump, model, texts, special):
    corpus = b"".join(b"%d\n" % len(t.encode("utf-8")) + t.encode("utf-8") + b"\n" for t in texts)
    lines = run_dump(dump, "tokenize", model, corpus, special)
    results = []
    for i in range(0, len(lines) - 1, 2):
        assert lines[i].startswith("ids:") and lines[i + 1].startswith("hex:"), lines[i:i + 2]
        results.append(([int(x) for x in lines[i][4:].split()], lines[i + 1][4:].strip()))
    if len(results) != len(texts):
        sys.exit(f"tokenizer_ref: sd_ref_dump gave {len(results)} records for {len(texts)} texts")
    return results


def check(tok, dump, model, texts, special):
    tok.encode_special_tokens = not special
    failures = 0
    for text, (ids, hexed) in zip(texts, run_c(dump, model, texts, special)):
        want = tok.encode(text, add_special_tokens=False).ids
        if ids != want:
            failures += 1
            print(f"MISMATCH ({'special' if special else 'plain'}) for {text!r}\n"
                  f"  reference: {want}\n  specdec:   {ids}")
        if bytes.fromhex(hexed) != text.encode("utf-8"):
            failures += 1
            print(f"ROUND TRIP FAILED for {text!r}: decoded {bytes.fromhex(hexed)!r}")
    return failures


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dump", required=True, help="path of the sd_ref_dump executable")
    ap.add_argument("--model", default=default_model())
    args = ap.parse_args()
    if not os.path.exists(args.model):
        print(f"tokenizer_ref: {args.model} not found; skipping")
        return 77
    tok = reference_tokenizer(args.model)
    failures = check(tok, args.dump, args.model, CORPUS, special=False)
    failures += check(tok, args.dump, args.model, SPECIAL_CORPUS, special=True)
    n = len(CORPUS) + len(SPECIAL_CORPUS)
    if failures:
        print(f"tokenizer_ref: {failures} failures over {n} strings")
        return 1
    print(f"tokenizer_ref: {n} strings ({len(CORPUS)} plain, {len(SPECIAL_CORPUS)} with special "
          f"tokens): ids equal the HF tokenizers reference and decoding round-trips")
    return 0


if __name__ == "__main__":
    sys.exit(main())
