#!/usr/bin/env python3
"""Independent NumPy reference forward for llama / qwen2 GGUF models.

Shares no code with the C engine: GGUF parsing and dequantisation come from the PyPI
`gguf` package (gguf.GGUFReader, gguf.quants.dequantize), the maths is written out
here from the model definitions.

Precision: weights are dequantised once to float32 (the dequantised values of every
GGML type are float32 numbers, so this is exact up to the last rounding of d*q+m) and
cached; all activations and products are computed in float64 (each matrix is widened
to float64 inside the product). The reference is therefore ~1e-12 accurate and every
difference to the float32 C forward is the C side's own rounding.

Shapes: a GGUF tensor with ne = [n_in, n_out] comes back from gguf-py as an array of
shape (n_out, n_in) (dims reversed, row-major), so y = x @ W.T.

Usage as a script (sanity check, needs `tokenizers`):
    python3 forward_ref.py --model M.gguf --prompt "The capital of France is" -n 12
"""
import argparse
import math
import sys

import numpy as np
import gguf


def _field(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        if default is None:
            raise KeyError(f"GGUF metadata key '{key}' is missing")
        return default
    return f.contents()


class RefModel:
    """A llama/qwen2 model held as dequantised float32 weights; forward in float64."""

    def __init__(self, path):
        self.reader = gguf.GGUFReader(path)
        r = self.reader
        self.arch = _field(r, "general.architecture")
        if self.arch not in ("llama", "qwen2"):
            raise ValueError(f"unsupported architecture '{self.arch}'")
        a = self.arch
        self.n_layer = int(_field(r, f"{a}.block_count"))
        self.n_embd = int(_field(r, f"{a}.embedding_length"))
        self.n_head = int(_field(r, f"{a}.attention.head_count"))
        self.n_head_kv = int(_field(r, f"{a}.attention.head_count_kv", self.n_head))
        self.head_dim = int(_field(r, f"{a}.attention.key_length", self.n_embd // self.n_head))
        self.rot_dim = int(_field(r, f"{a}.rope.dimension_count", self.head_dim))
        self.rope_base = float(_field(r, f"{a}.rope.freq_base", 10000.0))
        self.eps = float(_field(r, f"{a}.attention.layer_norm_rms_epsilon"))
        self.neox = self.arch == "qwen2"
        self.tensors = {t.name: t for t in r.tensors}
        if "rope_freqs.weight" in self.tensors:
            raise ValueError("rope_freqs.weight (llama3 rope scaling) is not supported")
        self._cache = {}
        self.tok_embd = self.weight("token_embd.weight")       # [n_vocab, n_embd]
        self.n_vocab = self.tok_embd.shape[0]
        out_name = "output.weight" if "output.weight" in self.tensors else "token_embd.weight"
        self.output = self.weight(out_name)                    # [n_vocab, n_embd]
        self.output_norm = self.weight("output_norm.weight")   # [n_embd]
        self.layers = [self._layer(i) for i in range(self.n_layer)]

    def weight(self, name, optional=False):
        """Dequantised float32 array with gguf-py's reversed shape (rows = ne[1])."""
        if name in self._cache:
            return self._cache[name]
        t = self.tensors.get(name)
        if t is None:
            if optional:
                return None
            raise KeyError(f"tensor '{name}' is missing")
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
        shape = tuple(int(d) for d in reversed(t.shape))
        w = w.reshape(shape)
        self._cache[name] = w
        return w

    def _layer(self, i):
        p = f"blk.{i}."
        names = {"attn_norm": "attn_norm", "wq": "attn_q", "wk": "attn_k", "wv": "attn_v",
                 "wo": "attn_output", "ffn_norm": "ffn_norm", "w_gate": "ffn_gate",
                 "w_up": "ffn_up", "w_down": "ffn_down"}
        layer = {k: self.weight(p + v + ".weight") for k, v in names.items()}
        for k, v in (("bq", "attn_q"), ("bk", "attn_k"), ("bv", "attn_v")):
            layer[k] = self.weight(p + v + ".bias", optional=True)
        return layer

    # ---- building blocks (float64) -------------------------------------------------

    def rmsnorm(self, x, w):
        """x[n, d] * w[d] / rms(x)"""
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * w

    @staticmethod
    def linear(x, w, b=None):
        """x[n, in] @ w[out, in].T (+ b[out]) in float64"""
        y = x @ w.T.astype(np.float64)
        return y if b is None else y + b

    def rope(self, x, pos):
        """x[n, heads, head_dim]; rotates the first rot_dim dims of each head.
        llama (GGUF stores q/k permuted): pairs (2i, 2i+1); qwen2 NEOX: pairs (i, i+rot/2).
        theta_i = pos * base^(-2i/rot_dim)."""
        half = self.rot_dim // 2
        inv_freq = self.rope_base ** (-2.0 * np.arange(half, dtype=np.float64) / self.rot_dim)
        ang = pos[:, None].astype(np.float64) * inv_freq[None, :]     # [n, half]
        cos = np.cos(ang)[:, None, :]
        sin = np.sin(ang)[:, None, :]
        out = x.copy()
        if self.neox:
            a, b = x[..., :half], x[..., half:self.rot_dim]
            out[..., :half] = a * cos - b * sin
            out[..., half:self.rot_dim] = a * sin + b * cos
        else:
            a, b = x[..., 0:self.rot_dim:2], x[..., 1:self.rot_dim:2]
            out[..., 0:self.rot_dim:2] = a * cos - b * sin
            out[..., 1:self.rot_dim:2] = a * sin + b * cos
        return out

    def attention(self, L, h, pos):
        """h[n, n_embd] (normed) -> attention output [n, n_embd], causal, GQA."""
        n, hd = h.shape[0], self.head_dim
        q = self.linear(h, L["wq"], L["bq"]).reshape(n, self.n_head, hd)
        k = self.linear(h, L["wk"], L["bk"]).reshape(n, self.n_head_kv, hd)
        v = self.linear(h, L["wv"], L["bv"]).reshape(n, self.n_head_kv, hd)
        q, k = self.rope(q, pos), self.rope(k, pos)
        group = self.n_head // self.n_head_kv
        k = np.repeat(k, group, axis=1)                 # head h reads kv head h // group
        v = np.repeat(v, group, axis=1)
        s = np.einsum("qhd,khd->hqk", q, k) / math.sqrt(hd)   # [heads, n, n]
        s = np.where(np.tril(np.ones((n, n), dtype=bool))[None], s, -np.inf)
        s = np.exp(s - s.max(axis=-1, keepdims=True))
        s /= s.sum(axis=-1, keepdims=True)
        o = np.einsum("hqk,khd->qhd", s, v).reshape(n, self.n_head * hd)
        return self.linear(o, L["wo"])

    def mlp(self, L, h):
        """SwiGLU: down(silu(gate(h)) * up(h))"""
        g = self.linear(h, L["w_gate"])
        u = self.linear(h, L["w_up"])
        return self.linear(g / (1.0 + np.exp(-g)) * u, L["w_down"])

    # ---- forward ---------------------------------------------------------------------

    def logits_for(self, tokens):
        """tokens: n ids (positions 0..n-1) -> logits [n, n_vocab] float64;
        row i = next-token logits after tokens[0..i]."""
        tokens = np.asarray(tokens, dtype=np.int64)
        if tokens.ndim != 1 or tokens.size == 0:
            raise ValueError("tokens must be a non-empty 1-D list")
        if tokens.min() < 0 or tokens.max() >= self.n_vocab:
            raise ValueError(f"token id out of range [0, {self.n_vocab})")
        pos = np.arange(tokens.size)
        x = self.tok_embd[tokens].astype(np.float64)            # x[n, n_embd]
        for L in self.layers:
            x = x + self.attention(L, self.rmsnorm(x, L["attn_norm"]), pos)
            x = x + self.mlp(L, self.rmsnorm(x, L["ffn_norm"]))
        x = self.rmsnorm(x, self.output_norm)
        return self.linear(x, self.output)                       # [n, n_vocab]

    def greedy(self, tokens, n_new):
        """Greedy continuation (full recompute per token; fine for a sanity check)."""
        out = list(tokens)
        for _ in range(n_new):
            out.append(int(np.argmax(self.logits_for(out)[-1])))
        return out[len(tokens):]


def hf_tokenizer(reader):
    """HF `tokenizers` byte-level BPE built from the GGUF vocab/merges (gpt2 models),
    with the SmolLM2/Qwen-style digit splitting. Control tokens are special tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, AddedToken
    tokens = _field(reader, "tokenizer.ggml.tokens")
    types = _field(reader, "tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ", 1)) for m in _field(reader, "tokenizer.ggml.merges")]
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True) for t, ty in zip(tokens, types) if ty == 3])
    return tok


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompt", default="The capital of France is")
    ap.add_argument("-n", type=int, default=12)
    args = ap.parse_args(argv)
    m = RefModel(args.model)
    tok = hf_tokenizer(m.reader)
    ids = tok.encode(args.prompt).ids
    new = m.greedy(ids, args.n)
    print("prompt ids:", ids)
    print("greedy ids:", new)
    print(repr(args.prompt + tok.decode(new)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
