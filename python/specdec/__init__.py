"""specdec: speculative decoding for llama-family GGUF models, from Python.

A thin, typed layer over the C library's public API (include/specdec/specdec.h, loaded from
libspecdec.so): load a model, tokenize and detokenize, apply its chat template, generate
(whole or streamed) with any built-in drafter or one written in Python, serve many requests
through the batching engine, and read per-step traces::

    import specdec
    with specdec.Model("SmolLM2-135M-Instruct.Q4_1.gguf") as m:
        r = m.generate(m.chat([("user", "Name three colours.")]), parse_special=True,
                       max_tokens=64, temperature=0, drafter="ngram", record_steps=True)
        print(r.text, r.stats.acceptance_rate, [s.accepted for s in r.steps])

Greedy speculative output equals target-only output token for token, whatever the drafter.
docs/python.md has the guide.
"""

from ._lib import library_path
from .drafter import Drafter, Proposal
from .engine import Engine, EngineMetrics, Request
from .errors import DrafterError, SpecdecError
from .model import Model, Stream
from .trace import TraceSummary, read_trace, summarize
from .types import Chunk, ModelInfo, Result, Stats, StepRecord

__version__ = "0.1.0"

__all__ = [
    "Chunk", "Drafter", "DrafterError", "Engine", "EngineMetrics", "Model", "ModelInfo",
    "Proposal", "Request", "Result", "SpecdecError", "Stats", "StepRecord", "Stream",
    "TraceSummary", "library_path", "read_trace", "summarize",
]
