"""Plain data the package returns: generation results, statistics, per-step records."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from typing import List, Optional

from . import _lib


@dataclass(frozen=True)
class Stats:
    """Acceptance statistics of one generation (sd_gen_stats_t). One step is one target
    forward; ``accepted_hist[a]`` counts the steps that kept ``a`` drafts."""

    tokens_generated: int
    target_forwards: int
    draft_forwards: int
    drafted: int
    accepted: int
    steps: int
    acceptance_rate: float
    mean_accepted_len: float
    accepted_hist: List[int]
    draft_seconds: float
    verify_seconds: float
    other_seconds: float
    check_seconds: float  # of verify_seconds: the verifier's check

    @classmethod
    def _from_c(cls, s: _lib.GenStats) -> "Stats":
        return cls(s.tokens_generated, s.target_forwards, s.draft_forwards, s.drafted,
                   s.accepted, s.steps, s.acceptance_rate, s.mean_accepted_len,
                   list(s.accepted_hist), s.draft_seconds, s.verify_seconds, s.other_seconds,
                   s.check_seconds)


@dataclass(frozen=True)
class StepRecord:
    """One speculative step: one target forward that verified ``drafted`` and kept the first
    ``accepted`` of them, then the target's own ``next`` token. The same record comes from
    ``on_step`` callbacks, ``Result.steps`` and ``read_trace`` (which adds the run's
    ``prompt``, ``drafter``, ``k_max``, ``repeat`` and ``gen`` when the file has them)."""

    step: int
    pos: int
    k: int
    drafted: List[int]
    accepted: int
    next: int
    evidence: int
    draft_ms: float
    verify_ms: float
    request: int = 0
    gen: int = 0
    prompt: Optional[str] = None
    drafter: Optional[str] = None
    k_max: Optional[int] = None
    repeat: Optional[int] = None

    @property
    def tokens(self) -> int:
        """Tokens this step emitted (before any stop): the accepted drafts and one more."""
        return self.accepted + 1

    @classmethod
    def _from_c(cls, s: _lib.StepInfo) -> "StepRecord":
        drafted = s.drafted[:s.n_drafted] if s.n_drafted > 0 else []
        return cls(step=s.step, pos=s.pos, k=s.k, drafted=drafted, accepted=s.n_accepted,
                   next=s.next_token, evidence=s.evidence, draft_ms=1e3 * s.draft_seconds,
                   verify_ms=1e3 * s.verify_seconds, request=s.request)


@dataclass(frozen=True)
class Chunk:
    """A streamed piece: a kept token and the text it releases (possibly ""; token -1 for
    the last call that delivers text still held back)."""

    token: int
    text: str


@dataclass
class Result:
    """A finished generation. ``stop_reason`` is one of "max_tokens", "eos", "stop_token",
    "stop_string", "callback", "error", "cancelled", "context_full". ``steps`` holds every
    step's record when the generation was asked to keep them (``record_steps=True``)."""

    tokens: List[int]
    text: str
    stop_reason: str
    n_prompt: int
    prefill_seconds: float
    decode_seconds: float
    stats: Stats
    steps: Optional[List[StepRecord]] = field(default=None, repr=False)

    @classmethod
    def _take(cls, r: _lib.GenResult) -> "Result":
        """Copy r out and free its C buffers."""
        try:
            tokens = r.tokens[:r.n_tokens] if r.n_tokens else []
            text = ctypes.string_at(r.text, r.text_len).decode("utf-8", "replace") if r.text else ""
            reason = _lib.STOP_REASONS[r.stop_reason] if r.stop_reason < len(_lib.STOP_REASONS) \
                else str(r.stop_reason)
            return cls(tokens, text, reason, r.n_prompt, r.prefill_seconds, r.decode_seconds,
                       Stats._from_c(r.stats))
        finally:
            _lib.lib.sd_gen_result_free(ctypes.byref(r))


@dataclass(frozen=True)
class ModelInfo:
    """What sd_model_get_info reports."""

    arch: str
    name: str
    n_vocab: int
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_ctx: int
    bos: int
    eos: int
    device: str
