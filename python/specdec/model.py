"""Models: loading, tokens and text, chat templates, and generation (whole or streamed)."""

from __future__ import annotations

import ctypes
import os
import queue
import threading
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from . import _lib
from ._handle import Owner
from ._lib import lib
from .drafter import DrafterSource, Speculation
from .errors import check
from .types import Chunk, ModelInfo, Result, StepRecord

Prompt = Union[str, Sequence[int]]
Message = Union[Tuple[str, str], Dict[str, str]]


def gen_config(max_tokens: Optional[int] = None, temperature: Optional[float] = None,
               top_k: Optional[int] = None, top_p: Optional[float] = None,
               min_p: Optional[float] = None, seed: Optional[int] = None,
               stop: Sequence[str] = (), stop_tokens: Sequence[int] = (),
               ignore_eos: bool = False) -> Tuple[_lib.GenConfig, List[Any]]:
    """An sd_gen_config_t: the library's defaults (128 tokens, temperature 0.8, top-k 40,
    top-p 0.95, min-p 0.05, seed 0) with the arguments given; the list keeps the stop
    strings' buffers alive."""
    c = _lib.GenConfig()
    lib.sd_gen_config_default(ctypes.byref(c))
    for name, value in (("max_tokens", max_tokens), ("temperature", temperature),
                        ("top_k", top_k), ("top_p", top_p), ("min_p", min_p), ("seed", seed)):
        if value is not None:
            setattr(c, name, value)
    keep: List[Any] = []
    if stop:
        arr = (ctypes.c_char_p * len(stop))(*(s.encode() for s in stop))
        c.stop_strings, c.n_stop_strings = ctypes.cast(arr, ctypes.POINTER(ctypes.c_char_p)), len(stop)
        keep.append(arr)
    if stop_tokens:
        toks = (ctypes.c_int32 * len(stop_tokens))(*stop_tokens)
        c.stop_tokens, c.n_stop_tokens = toks, len(stop_tokens)
        keep.append(toks)
    c.ignore_eos = 1 if ignore_eos else 0
    return c, keep


def token_array(tokens: Sequence[int]) -> Any:
    return (ctypes.c_int32 * len(tokens))(*tokens)


def token_callback(on_token: Optional[Callable[[int, str], Any]],
                   errors: List[BaseException]) -> Any:
    """A C token callback calling on_token(token, text); a true return (or an exception,
    kept in errors) stops the generation."""
    if on_token is None:
        return ctypes.cast(None, _lib.TOKEN_FN)

    def call(user: Any, token: int, text: Any, n: int) -> int:
        try:
            piece = ctypes.string_at(text, n).decode("utf-8", "replace") if n else ""
            return 1 if on_token(token, piece) else 0
        except BaseException as e:  # noqa: BLE001 - raised once the generation returns
            errors.append(e)
            return 1

    return _lib.TOKEN_FN(call)


class Model(Owner):
    """A GGUF model (llama or qwen2 architecture) loaded by the C library.

    ``n_threads`` 0 uses every core; ``n_ctx`` 0 is min(the model's context, 4096);
    ``device`` is "cpu", "cuda", "cuda:N" or "auto" (None: SPECDEC_DEVICE, else auto).
    Use as a context manager, or call ``close()``; the weights are read-only and shared by
    concurrent generations (each thread may generate at once)."""

    def __init__(self, path: Union[str, "os.PathLike[str]"], *, n_threads: int = 0,
                 n_ctx: int = 0, device: Optional[str] = None) -> None:
        p = _lib.ModelParams()
        lib.sd_model_params_default(ctypes.byref(p))
        p.path = os.fsencode(path)
        p.n_threads, p.n_ctx = n_threads, n_ctx
        p.device = device.encode() if device else None
        self._handle = ctypes.c_void_p()
        self.path = os.fspath(path)
        self.n_threads = n_threads
        self._drafts: Dict[str, "Model"] = {}
        check(lib.sd_model_load(ctypes.byref(p), ctypes.byref(self._handle)), f"load {self.path}")

    def close(self) -> None:
        """Free the model (and draft models it loaded for drafter='model:PATH')."""
        for d in self._drafts.values():
            d.close()
        self._drafts.clear()
        if self._handle:
            lib.sd_model_free(self._handle)
            self._handle = ctypes.c_void_p()


    def _draft(self, path: str) -> "Model":
        """A draft model named by a drafter text, loaded once."""
        if path not in self._drafts:
            self._drafts[path] = Model(path, n_threads=self.n_threads)
        return self._drafts[path]

    @property
    def info(self) -> ModelInfo:
        i = _lib.ModelInfo()
        check(lib.sd_model_get_info(self._handle, ctypes.byref(i)), "model info")
        return ModelInfo(i.arch.decode(), (i.name or b"").decode(), i.n_vocab, i.n_layer, i.n_embd,
                         i.n_head, i.n_head_kv, i.n_ff, i.n_ctx, i.bos, i.eos, i.device.decode())

    # ---- tokens and text ----------------------------------------------------------------

    def tokenize(self, text: str, *, add_bos: bool = True, parse_special: bool = False) -> List[int]:
        """Token ids of text. Special-token markup such as "<|im_start|>" becomes its token
        only with parse_special (text from users is data)."""
        raw = text.encode()
        flags = (_lib.SD_TOKENIZE_ADD_BOS if add_bos else 0) | \
                (_lib.SD_TOKENIZE_PARSE_SPECIAL if parse_special else 0)
        n = ctypes.c_size_t()
        cap = len(raw) + 8
        while True:
            out = (ctypes.c_int32 * cap)()
            st = lib.sd_tokenize(self._handle, raw, len(raw), flags, out, cap, ctypes.byref(n))
            if st != _lib.SD_ERR_BUFFER_TOO_SMALL:
                check(st, "tokenize")
                return out[:n.value]
            cap = n.value

    def detokenize_bytes(self, tokens: Sequence[int]) -> bytes:
        """The bytes tokens stand for (may end inside a UTF-8 sequence)."""
        arr = token_array(tokens)
        n = ctypes.c_size_t()
        st = lib.sd_detokenize(self._handle, arr, len(tokens), None, 0, ctypes.byref(n))
        if st not in (0, _lib.SD_ERR_BUFFER_TOO_SMALL):
            check(st, "detokenize")
        buf = ctypes.create_string_buffer(n.value + 1)
        check(lib.sd_detokenize(self._handle, arr, len(tokens), buf, n.value + 1, ctypes.byref(n)),
              "detokenize")
        return buf.raw[:n.value]

    def detokenize(self, tokens: Sequence[int]) -> str:
        """The text of tokens (an incomplete trailing UTF-8 sequence becomes U+FFFD)."""
        return self.detokenize_bytes(tokens).decode("utf-8", "replace")

    def chat(self, messages: Sequence[Message], *, add_generation_prompt: bool = True) -> str:
        """messages — ("user", "hi") pairs or {"role": ..., "content": ...} dicts — rendered
        with the model's chat template (generate it with parse_special=True)."""
        pairs = [(m["role"], m["content"]) if isinstance(m, dict) else m for m in messages]
        arr = (_lib.ChatMessage * len(pairs))(*(_lib.ChatMessage(r.encode(), c.encode())
                                                for r, c in pairs))
        n = ctypes.c_size_t()
        st = lib.sd_chat_apply(self._handle, arr, len(pairs), int(add_generation_prompt), None, 0,
                               ctypes.byref(n))
        if st not in (0, _lib.SD_ERR_BUFFER_TOO_SMALL):
            check(st, "chat template")
        buf = ctypes.create_string_buffer(n.value + 1)
        check(lib.sd_chat_apply(self._handle, arr, len(pairs), int(add_generation_prompt), buf,
                                n.value + 1, ctypes.byref(n)), "chat template")
        return buf.raw[:n.value].decode("utf-8", "replace")

    def prompt_tokens(self, prompt: Prompt, parse_special: bool = False) -> List[int]:
        """A prompt as token ids: text is tokenized (with BOS), ids are taken as they are."""
        return self.tokenize(prompt, parse_special=parse_special) if isinstance(prompt, str) \
            else [int(t) for t in prompt]

    # ---- generation ---------------------------------------------------------------------

    def generate(self, prompt: Prompt, *, max_tokens: Optional[int] = None,
                 temperature: Optional[float] = None, top_k: Optional[int] = None,
                 top_p: Optional[float] = None, min_p: Optional[float] = None,
                 seed: Optional[int] = None, stop: Sequence[str] = (),
                 stop_tokens: Sequence[int] = (), ignore_eos: bool = False,
                 parse_special: bool = False, drafter: DrafterSource = None,
                 draft_model: Optional["Model"] = None, k: int = 4, adaptive: bool = True,
                 min_confidence: float = 0.3,
                 on_token: Optional[Callable[[int, str], Any]] = None,
                 on_step: Optional[Callable[[StepRecord], None]] = None,
                 record_steps: bool = False, tree: Optional[str] = None,
                 tree_sample: str = "top") -> Result:
        """Generate from prompt (text, or token ids) and return the Result.

        Sampling: the library's defaults unless given (``temperature=0`` is greedy; a seed
        reproduces a run bit for bit). Speculation: ``drafter`` is None (target-only), a
        built-in drafter's text ("ngram", "ngram:4", "layerskip:12", "model:PATH",
        "xvocab:PATH"; or "model"/"xvocab" with ``draft_model``), or a Python ``Drafter``
        (class, factory or instance); ``k`` is the draft length (the maximum when
        ``adaptive``). Greedy output is the target's whatever the drafter. ``on_token(token,
        text)`` sees every kept token (a true return stops); ``on_step(record)`` every step;
        ``record_steps`` keeps the records in ``Result.steps``; ``tree`` ("4x2x2x1",
        "dynamic:16") drafts token trees (model, layer-skip, xvocab and n-gram drafters);
        when sampling, ``tree_sample="q"`` draws a static tree's children from the drafter's
        distribution (SpecInfer) instead of its top guesses ("top"). Raises SpecdecError (with
        ``.result`` holding what was made when generation had started) or DrafterError."""
        cfg, keep = gen_config(max_tokens, temperature, top_k, top_p, min_p, seed, stop,
                               stop_tokens, ignore_eos)
        spec = Speculation(self, drafter, draft_model, k, adaptive, min_confidence, on_step,
                           record_steps, tree=tree, tree_sample=tree_sample)
        ids = self.prompt_tokens(prompt, parse_special)
        arr = token_array(ids)
        cb = token_callback(on_token, spec.errors)
        res = _lib.GenResult()
        st = lib.sd_generate_speculative(self._handle, arr, len(ids), ctypes.byref(cfg),
                                         ctypes.byref(spec.c), cb, None, ctypes.byref(res))
        result = Result._take(res)  # (freeing the C result leaves sd_last_error as it is)
        result.steps = spec.steps
        spec.raise_for(st, "generate", result)
        assert keep is not None  # the stop strings lived through the call
        return result

    def stream(self, prompt: Prompt, **kwargs: Any) -> "Stream":
        """The same generation as ``generate(prompt, **kwargs)``, as an iterator of Chunk
        (token, text) while it runs; ``Stream.result`` is the Result once it is exhausted.
        Leaving the loop early (or ``close()``) stops the generation."""
        return Stream(self, prompt, kwargs)


class Stream:
    """An iterator over a generation running on a worker thread (Model.stream); the worker
    runs at most AHEAD tokens ahead of the consumer."""

    _END = object()
    AHEAD = 16

    def __init__(self, model: Model, prompt: Prompt, kwargs: Dict[str, Any]) -> None:
        if "on_token" in kwargs:
            raise TypeError("stream() delivers the tokens itself; on_token is not taken")
        self.result: Optional[Result] = None
        self._error: Optional[BaseException] = None
        self._queue: "queue.Queue[Any]" = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(model, prompt, kwargs),
                                        name="specdec-stream", daemon=True)
        self._thread.start()

    def _run(self, model: Model, prompt: Prompt, kwargs: Dict[str, Any]) -> None:
        try:
            self.result = model.generate(prompt, on_token=self._on_token, **kwargs)
        except BaseException as e:  # noqa: BLE001 - raised in the consumer
            self._error = e
        finally:
            self._queue.put(self._END)

    def _on_token(self, token: int, text: str) -> bool:
        while self._queue.qsize() >= self.AHEAD:
            if self._stop.wait(0.005):
                return True
        if self._stop.is_set():
            return True
        self._queue.put(Chunk(token, text))
        return False

    def __iter__(self) -> Iterator[Chunk]:
        return self

    def __next__(self) -> Chunk:
        item = self._queue.get()
        if item is self._END:
            self._queue.put(self._END)  # later calls end too
            self._thread.join()
            if self._error is not None:
                e, self._error = self._error, None
                raise e
            raise StopIteration
        return item

    def close(self) -> None:
        """Stop the generation (SD_STOP_CALLBACK at its next token) and wait for it."""
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_thread", None) is not None and self._thread.is_alive():
            self._stop.set()
