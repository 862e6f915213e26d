"""The serving engine: requests submitted from any thread, stepped together by one
scheduler thread in batched forwards (continuous batching). A request's tokens are those
``Model.generate`` gives with the same settings, whatever else runs beside it."""

from __future__ import annotations

import atexit
import ctypes
import queue
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

from . import _lib
from ._handle import Owner
from ._lib import lib
from .drafter import DrafterSource, Speculation
from .errors import SpecdecError, check
from .model import Model, Prompt, gen_config, token_array, token_callback
from .types import Chunk, Result, StepRecord

_live_engines: "weakref.WeakSet[Engine]" = weakref.WeakSet()


@atexit.register
def _close_engines() -> None:
    """Stop every engine's scheduler before the interpreter goes (it calls into Python)."""
    for e in list(_live_engines):
        e.close()


@dataclass(frozen=True)
class EngineMetrics:
    """A snapshot of sd_engine_metrics_t's counters (histograms left out)."""

    submitted: int
    rejected_busy: int
    rejected_invalid: int
    finished: Dict[str, int]
    prompt_tokens: int
    generated_tokens: int
    steps: int
    batch_rows: int
    drafted: int
    accepted: int
    draft_forwards: int
    draft_rows: int
    queued: int
    active: int


class Request(Owner):
    """A submitted generation (Engine.submit). ``wait()`` returns its Result; iterating it
    (when submitted with ``stream=True``) yields Chunk while it runs."""

    def __init__(self, engine: "Engine", stream: bool,
                 on_token: Optional[Callable[[int, str], Any]]) -> None:
        self._engine = engine
        self._handle = ctypes.c_void_p()
        self._errors: List[BaseException] = []
        self._queue: Optional["queue.Queue[Chunk]"] = queue.Queue() if stream else None
        self._user = on_token
        self._result: Optional[Result] = None
        self._status = 0
        self._message = ""
        self._fn = token_callback(self._on_token if (stream or on_token) else None, self._errors)

    def _on_token(self, token: int, text: str) -> bool:
        if self._queue is not None:
            self._queue.put(Chunk(token, text))
        return bool(self._user(token, text)) if self._user is not None else False

    def wait(self, timeout: Optional[float] = None) -> Result:
        """The Result once the request has finished; TimeoutError after ``timeout`` seconds
        (None: no limit). SpecdecError for a request that failed (``.result`` keeps what it
        made; a cancelled one raises with status SD_ERR_CANCELLED), DrafterError when a
        Python drafter raised."""
        if self._result is None:
            res = _lib.GenResult()
            st = lib.sd_request_wait(self._handle, -1.0 if timeout is None else timeout,
                                     ctypes.byref(res))
            if st == _lib.SD_ERR_BUSY:
                lib.sd_gen_result_free(ctypes.byref(res))
                raise TimeoutError(f"request still running after {timeout} s")
            self._status = st
            self._message = (lib.sd_last_error() or b"").decode("utf-8", "replace") if st else ""
            self._result = Result._take(res)
        if self._errors:
            raise SpecdecError("SD_STOP_CALLBACK", "on_token raised", self._result) \
                from self._errors[0]
        if self._status:
            self._engine._spec.raise_for(0, "request", self._result)  # a drafter's exception
            name = lib.sd_status_string(self._status).decode()
            raise SpecdecError(name, f"request: {self._message}", self._result)
        return self._result

    def __iter__(self) -> Iterator[Chunk]:
        """The chunks as they come, until the request has finished."""
        if self._queue is None:
            raise TypeError("submit(..., stream=True) to iterate a request")
        while True:
            try:
                yield self._queue.get(timeout=0.05)
            except queue.Empty:
                if self.done:  # every callback has run: what is queued is the rest
                    while not self._queue.empty():
                        yield self._queue.get_nowait()
                    return

    def cancel(self) -> None:
        """Ask the scheduler to stop it (within a step; it keeps what it made)."""
        if self._handle:
            lib.sd_request_cancel(self._handle)

    @property
    def done(self) -> bool:
        return self._result is not None or bool(lib.sd_request_done(self._handle))

    def close(self) -> None:
        """Release the handle (a running request is cancelled)."""
        if self._handle:
            if not self.done:  # the scheduler may still call its token callback
                self._engine._orphans.append(self._fn)
            lib.sd_request_free(self._handle)
            self._handle = ctypes.c_void_p()


class Engine(Owner):
    """sd_engine_*: one scheduler thread steps every active request together.

    The speculation arguments are ``Model.generate``'s and apply to every request (a Python
    drafter is a class or factory here: each request gets its own instance; ``on_step``
    records carry the request's number, 1, 2, ... in admission order). Use as a context
    manager, or ``close()``: the scheduler calls into Python, so it must stop before the
    interpreter does (engines still open at exit are closed then)."""

    def __init__(self, model: Model, *, drafter: DrafterSource = None,
                 draft_model: Optional[Model] = None, k: int = 4, adaptive: bool = True,
                 min_confidence: float = 0.3,
                 on_step: Optional[Callable[[StepRecord], None]] = None, max_active: int = 16,
                 max_queued: int = 64, max_batch_rows: int = 256,
                 load_aware_drafts: bool = True, max_kv_positions: int = 0) -> None:
        self.model = model
        self._spec = Speculation(model, drafter, draft_model, k, adaptive, min_confidence,
                                 on_step, engine=True)
        p = _lib.EngineParams()
        lib.sd_engine_params_default(ctypes.byref(p))
        p.model = model._handle.value
        p.spec = self._spec.c
        p.max_active, p.max_queued, p.max_batch_rows = max_active, max_queued, max_batch_rows
        p.load_aware_drafts = 1 if load_aware_drafts else 0
        p.max_kv_positions = max_kv_positions
        self._handle = ctypes.c_void_p()
        self._orphans: List[Any] = []  # token callbacks of requests released while running
        check(lib.sd_engine_create(ctypes.byref(p), ctypes.byref(self._handle)), "engine")
        _live_engines.add(self)

    def submit(self, prompt: Prompt, *, max_tokens: Optional[int] = None,
               temperature: Optional[float] = None, top_k: Optional[int] = None,
               top_p: Optional[float] = None, min_p: Optional[float] = None,
               seed: Optional[int] = None, stop: Sequence[str] = (),
               stop_tokens: Sequence[int] = (), ignore_eos: bool = False,
               parse_special: bool = False, stream: bool = False,
               on_token: Optional[Callable[[int, str], Any]] = None) -> Request:
        """Queue a generation (settings as Model.generate); SpecdecError when it is refused
        (SD_ERR_BUSY: the queue is full or the engine shuts down). ``on_token`` runs on the
        scheduler thread and must not block."""
        cfg, keep = gen_config(max_tokens, temperature, top_k, top_p, min_p, seed, stop,
                               stop_tokens, ignore_eos)
        ids = self.model.prompt_tokens(prompt, parse_special)
        r = Request(self, stream, on_token)
        check(lib.sd_engine_submit(self._handle, token_array(ids), len(ids), ctypes.byref(cfg),
                                   r._fn, None, ctypes.byref(r._handle)), "submit")
        assert keep is not None  # the library copied the stop strings
        return r

    def metrics(self) -> EngineMetrics:
        m = _lib.EngineMetrics()
        check(lib.sd_engine_get_metrics(self._handle, ctypes.byref(m)), "metrics")
        finished = {name: m.finished[i] for i, name in enumerate(_lib.STOP_REASONS)}
        return EngineMetrics(m.submitted, m.rejected_busy, m.rejected_invalid, finished,
                             m.prompt_tokens, m.generated_tokens, m.steps, m.batch_rows,
                             m.drafted, m.accepted, m.draft_forwards, m.draft_rows, m.queued,
                             m.active)

    def shutdown(self, grace: float = 0.0) -> None:
        """Refuse new requests, let the others run up to ``grace`` seconds, cancel the rest."""
        if self._handle:
            lib.sd_engine_shutdown(self._handle, grace)

    def close(self) -> None:
        """Shut down (no grace) and free the engine; its requests can still be waited for."""
        if self._handle:
            lib.sd_engine_free(self._handle)
            self._handle = ctypes.c_void_p()
            _live_engines.discard(self)



__all__ = ["Engine", "Request", "EngineMetrics"]
