"""Drafters written in Python, and the speculation settings every generation takes.

A drafter proposes the next tokens of a context; the target model verifies them all in one
forward and keeps the longest prefix it agrees with, so whatever a drafter proposes, greedy
output is exactly the target's and sampling stays lossless. Subclass ``Drafter`` and pass
the class (one instance is made per generation) as ``drafter=``::

    class Repeat(specdec.Drafter):
        def propose(self, context, k):
            return context[-k:]                       # guess: the last k tokens again

    model.generate("...", drafter=Repeat, k=4)

Under the hood this is the C library's callback drafter (SD_DRAFTER_CALLBACK,
include/specdec/specdec.h); the built-in drafters are named by text ("ngram", "ngram:4",
"layerskip:12", "model:PATH", "xvocab:PATH").
"""

from __future__ import annotations

import ctypes
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Union

from . import _lib
from ._lib import lib
from .errors import DrafterError, SpecdecError, check, error
from .types import StepRecord

if TYPE_CHECKING:
    from .model import Model


@dataclass(frozen=True)
class Proposal:
    """What ``Drafter.propose`` may return instead of a plain token list: the tokens and an
    evidence class (0..7) — the adaptive draft length keeps one acceptance estimate per
    class and cuts each proposal to what its class earns. With ``parents`` (one per token:
    -1 below the last context token, else an earlier token's index) the proposal is a token
    tree, for a generation that drafts trees (``tree=``); its depth is at most k."""

    tokens: Sequence[int]
    evidence: int = 0
    parents: Optional[Sequence[int]] = None


class Drafter:
    """Base class for drafters written in Python; override ``propose``.

    One instance serves one generation (pass the class, or any zero-argument factory, as
    ``drafter=``; an instance passed directly serves every generation of ``generate`` in
    turn, never an engine's concurrent requests). The library keeps the context and hands
    it to every ``propose``, so ``begin``, ``accept`` and ``rollback`` are only for drafters
    that keep state of their own. An exception in any of them ends the generation with
    ``DrafterError`` (its ``__cause__`` is the exception)."""

    def begin(self, prompt: List[int]) -> None:
        """A generation starts from these prompt tokens."""

    def propose(self, context: List[int], k: int) -> Union[Sequence[int], Proposal]:
        """Up to k tokens that continue ``context`` (the prompt and every token kept so far);
        fewer, or none, are fine."""
        raise NotImplementedError

    def accept(self, n_accepted: int, next_token: int) -> None:
        """The target kept the first n_accepted proposed tokens, then next_token."""

    def accept_path(self, tokens: List[int], next_token: int) -> None:
        """After a tree proposal: the target kept these tokens (a path of the tree), then
        next_token. By default ``accept(len(tokens), next_token)``."""
        self.accept(len(tokens), next_token)

    def rollback(self, n_context: int) -> None:
        """The context was cut to its first n_context tokens."""


DrafterSource = Union[None, str, Drafter, Callable[[], Drafter]]


class _CallbackBridge:
    """An sd_callback_drafter_t whose callbacks call Python drafters; one drafter per C
    state (create/destroy), exceptions kept in ``errors`` and reported as SD_ERR_INTERNAL."""

    def __init__(self, source: Any, errors: List[BaseException], shared_ok: bool) -> None:
        if hasattr(source, "propose") and not isinstance(source, type):
            if not shared_ok:
                raise TypeError("drafter: the serving engine makes one drafter per request; pass "
                                "a Drafter class or a factory, not an instance")
            self.factory: Optional[Callable[[], Any]] = None
            self.instance = source
        elif callable(source):
            self.factory = source
            self.instance = None
        else:
            raise TypeError(f"drafter: expected a drafter name, a Drafter class or factory, or "
                            f"a Drafter instance, got {source!r}")
        self.errors = errors
        self.states: Dict[int, Any] = {}
        self.next_id = 1
        self.lock = threading.Lock()
        self._fns = (_lib.CREATE_FN(self._create), _lib.BEGIN_FN(self._begin),
                     _lib.PROPOSE_FN(self._propose), _lib.ACCEPT_FN(self._accept),
                     _lib.ROLLBACK_FN(self._rollback), _lib.DESTROY_FN(self._destroy))
        self.table = _lib.CallbackDrafter(None, *self._fns)

    def _fail(self, e: BaseException) -> int:
        self.errors.append(e)
        return _lib.SD_ERR_INTERNAL

    def _create(self, user: Any, state_out: Any) -> int:
        try:
            drafter = self.factory() if self.factory is not None else self.instance
            if not hasattr(drafter, "propose"):
                raise TypeError(f"drafter factory returned {drafter!r}, which has no propose()")
            with self.lock:
                sid = self.next_id
                self.next_id += 1
                self.states[sid] = drafter
            state_out[0] = sid
            return 0
        except BaseException as e:  # noqa: BLE001 - reported through the C status
            return self._fail(e)

    def _call(self, state: Optional[int], method: str, *args: Any) -> int:
        try:
            fn = getattr(self.states[state or 0], method, None)
            if fn is not None:
                fn(*args)
            return 0
        except BaseException as e:  # noqa: BLE001
            return self._fail(e)

    def _begin(self, state: Optional[int], prompt: Any, n: int) -> int:
        return self._call(state, "begin", prompt[:n] if n else [])

    def _propose(self, state: Optional[int], query: Any, out: Any) -> int:
        try:
            q, o = query.contents, out.contents
            context = q.context[:q.n_context] if q.n_context else []
            got = self.states[state or 0].propose(context, q.k)
            tokens, evidence = (got.tokens, got.evidence) if isinstance(got, Proposal) else (got, 0)
            parents = got.parents if isinstance(got, Proposal) else None
            tokens = [int(t) for t in tokens]
            for i, t in enumerate(tokens[:o.capacity]):
                if not -2**31 <= t < 2**31:
                    raise ValueError(f"proposed token {t} is not a token id")
                o.tokens[i] = t
            if parents is not None:
                if not o.parent:
                    raise ValueError("proposed a tree (parents), but this generation drafts "
                                     "chains: pass tree= to generate")
                if len(parents) != len(tokens):
                    raise ValueError(f"{len(parents)} parents for {len(tokens)} tokens")
                for i, p in enumerate(parents[:o.capacity]):
                    o.parent[i] = max(-2**31, min(int(p), 2**31 - 1))  # checked by the library
                o.is_tree = 1
            o.n = len(tokens)  # more than capacity: the library refuses it, naming the count
            o.evidence = int(evidence)
            return 0
        except BaseException as e:  # noqa: BLE001
            return self._fail(e)

    def _accept(self, state: Optional[int], outcome: Any) -> int:
        o = outcome.contents
        if o.from_tree and hasattr(self.states.get(state or 0), "accept_path"):
            path = o.accepted[:o.n_accepted] if o.n_accepted else []
            return self._call(state, "accept_path", path, o.next_token)
        return self._call(state, "accept", o.n_accepted, o.next_token)

    def _rollback(self, state: Optional[int], n: int) -> int:
        return self._call(state, "rollback", n)

    def _destroy(self, state: Optional[int]) -> None:
        with self.lock:
            self.states.pop(state or 0, None)


class Speculation:
    """An sd_spec_config_t built from Python arguments, and everything it points to (kept
    alive as long as this object): a draft model, a Python drafter's callbacks, the step
    observer. Internal to Model.generate and Engine."""

    def __init__(self, target: "Model", drafter: DrafterSource = None,
                 draft_model: Optional["Model"] = None, k: int = 4, adaptive: bool = True,
                 min_confidence: float = 0.3,
                 on_step: Optional[Callable[[StepRecord], None]] = None,
                 record_steps: bool = False, engine: bool = False,
                 tree: Optional[str] = None, tree_sample: str = "top") -> None:
        self.c = _lib.SpecConfig()
        lib.sd_spec_config_default(ctypes.byref(self.c))
        self.errors: List[BaseException] = []
        self.steps: Optional[List[StepRecord]] = [] if record_steps else None
        self.draft_model = draft_model
        self.bridge: Optional[_CallbackBridge] = None
        if isinstance(drafter, str):
            self._parse(target, drafter)
        elif drafter is not None:
            self.bridge = _CallbackBridge(drafter, self.errors, shared_ok=not engine)
            self._parse(target, "callback")
            self.c.callback = ctypes.pointer(self.bridge.table)
        elif draft_model is not None:
            raise ValueError("draft_model needs drafter='model' or drafter='xvocab'")
        if tree is not None:
            check(lib.sd_spec_parse_tree(tree.encode(), ctypes.byref(self.c)), "tree")
        if tree_sample not in _lib.TREE_SAMPLES:
            raise ValueError(f"tree_sample must be one of {_lib.TREE_SAMPLES}, got {tree_sample!r}")
        self.c.tree_sample = _lib.TREE_SAMPLES.index(tree_sample)
        self.c.k = k
        self.c.adaptive = 1 if adaptive else 0
        self.c.min_confidence = min_confidence
        self.on_step = on_step
        if on_step is not None or record_steps:
            self._step_fn = _lib.STEP_FN(self._step)
            self.c.on_step = self._step_fn

    def _parse(self, target: "Model", text: str) -> None:
        """text into the spec; a draft model named by path is loaded (once per target)."""
        given = self.draft_model is not None and text in ("model", "xvocab")
        path = ctypes.c_char_p()
        check(lib.sd_spec_parse_drafter((f"{text}:given" if given else text).encode(),
                                        ctypes.byref(self.c), ctypes.byref(path)), "drafter")
        if given:
            self.c.draft_model = self.draft_model._handle.value
        elif path.value is not None:
            self.draft_model = target._draft(os.fsdecode(path.value))
            self.c.draft_model = self.draft_model._handle.value
        elif self.draft_model is not None:
            raise ValueError(f"draft_model given, but drafter '{text}' takes none")

    def _step(self, user: Any, info: Any) -> None:
        try:
            rec = StepRecord._from_c(info.contents)
            if self.steps is not None:
                self.steps.append(rec)
            if self.on_step is not None:
                self.on_step(rec)
        except BaseException as e:  # noqa: BLE001 - raised once the generation returns
            self.errors.append(e)

    def raise_for(self, status: int, what: str, result: Any = None) -> None:
        """After a generation: raise what went wrong (an exception of the Python code it
        called first, as DrafterError), if anything did."""
        if self.errors:
            e = self.errors[0]
            detail = (lib.sd_last_error() or b"").decode("utf-8", "replace")
            err = DrafterError(lib.sd_status_string(status).decode() if status else "SD_OK",
                               f"{what}: {type(e).__name__}: {e}" + (f" ({detail})" if status else ""),
                               result)
            raise err from e
        if status != 0:
            raise error(status, what, result)


__all__ = ["Drafter", "Proposal", "SpecdecError", "DrafterSource"]
