"""ctypes mirror of include/specdec/specdec.h and the loaded libspecdec.so.

Internal: the public API is in the other modules. Every struct here must match the C
header field for field; tests/test_abi.py compares them with the C compiler's layout.
"""

from __future__ import annotations

import ctypes
import os
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    c_char_p,
    c_double,
    c_float,
    c_int,
    c_int32,
    c_int64,
    c_size_t,
    c_uint64,
    c_void_p,
)
from pathlib import Path

SD_OK = 0
SD_DRAFTER_NONE = 0

SD_TOKENIZE_ADD_BOS = 1 << 0
SD_TOKENIZE_PARSE_SPECIAL = 1 << 1

SD_SPEC_MAX_K = 16
SD_HIST_MAX_BOUNDS = 20

TREE_SAMPLES = ("top", "q")  # sd_tree_sample_t, in order
STOP_REASONS = ("none", "max_tokens", "eos", "stop_token", "stop_string", "callback", "error",
                "cancelled", "context_full")

status_t = c_int  # sd_status_t


class ModelParams(Structure):
    _fields_ = [("path", c_char_p), ("n_threads", c_int), ("n_ctx", c_int), ("comm", c_void_p),
                ("device", c_char_p)]


class ModelInfo(Structure):
    _fields_ = [("arch", c_char_p), ("name", c_char_p), ("n_vocab", c_int), ("n_layer", c_int),
                ("n_embd", c_int), ("n_head", c_int), ("n_head_kv", c_int), ("n_ff", c_int),
                ("n_ctx", c_int), ("bos", c_int32), ("eos", c_int32), ("device", c_char_p)]


class ChatMessage(Structure):
    _fields_ = [("role", c_char_p), ("content", c_char_p)]


class GenConfig(Structure):
    _fields_ = [("max_tokens", c_int), ("temperature", c_float), ("top_k", c_int),
                ("top_p", c_float), ("min_p", c_float), ("seed", c_uint64),
                ("stop_strings", POINTER(c_char_p)), ("n_stop_strings", c_size_t),
                ("stop_tokens", POINTER(c_int32)), ("n_stop_tokens", c_size_t),
                ("ignore_eos", c_int), ("logprobs", c_int), ("top_logprobs", c_int),
                ("logprobs_callback", c_void_p)]


class GenStats(Structure):
    _fields_ = [("tokens_generated", c_uint64), ("target_forwards", c_uint64),
                ("draft_forwards", c_uint64), ("drafted", c_uint64), ("accepted", c_uint64),
                ("steps", c_uint64), ("acceptance_rate", c_double),
                ("mean_accepted_len", c_double), ("accepted_hist", c_uint64 * (SD_SPEC_MAX_K + 1)),
                ("draft_seconds", c_double), ("verify_seconds", c_double),
                ("other_seconds", c_double), ("check_seconds", c_double)]


class GenResult(Structure):
    _fields_ = [("tokens", POINTER(c_int32)), ("n_tokens", c_size_t), ("text", c_void_p),
                ("text_len", c_size_t), ("stop_reason", c_int), ("n_prompt", c_size_t),
                ("n_cached", c_size_t), ("prefill_seconds", c_double), ("decode_seconds", c_double), ("stats", GenStats),
                ("logprobs", POINTER(c_float)), ("n_top", c_int), ("top_tokens", POINTER(c_int32)),
                ("top_logprobs", POINTER(c_float))]


class DraftQuery(Structure):
    _fields_ = [("context", POINTER(c_int32)), ("n_context", c_size_t), ("k", c_int),
                ("temperature", c_float), ("seed", c_uint64)]


class DraftProposal(Structure):
    _fields_ = [("tokens", POINTER(c_int32)), ("capacity", c_int), ("n", c_int),
                ("evidence", c_int), ("parent", POINTER(c_int32)), ("is_tree", c_int)]


class DraftOutcome(Structure):
    _fields_ = [("n_accepted", c_int), ("next_token", c_int32),
                ("accepted", POINTER(c_int32)), ("from_tree", c_int)]


CREATE_FN = CFUNCTYPE(status_t, c_void_p, POINTER(c_void_p))
BEGIN_FN = CFUNCTYPE(status_t, c_void_p, POINTER(c_int32), c_size_t)
PROPOSE_FN = CFUNCTYPE(status_t, c_void_p, POINTER(DraftQuery), POINTER(DraftProposal))
ACCEPT_FN = CFUNCTYPE(status_t, c_void_p, POINTER(DraftOutcome))
ROLLBACK_FN = CFUNCTYPE(status_t, c_void_p, c_size_t)
DESTROY_FN = CFUNCTYPE(None, c_void_p)


class CallbackDrafter(Structure):
    _fields_ = [("user", c_void_p), ("create", CREATE_FN), ("begin", BEGIN_FN),
                ("propose", PROPOSE_FN), ("accept", ACCEPT_FN), ("rollback", ROLLBACK_FN),
                ("destroy", DESTROY_FN)]


class StepInfo(Structure):
    _fields_ = [("request", c_uint64), ("step", c_uint64), ("pos", c_int64), ("k", c_int),
                ("n_drafted", c_int), ("drafted", POINTER(c_int32)), ("n_accepted", c_int),
                ("next_token", c_int32), ("evidence", c_int), ("draft_seconds", c_double),
                ("verify_seconds", c_double)]


STEP_FN = CFUNCTYPE(None, c_void_p, POINTER(StepInfo))
TOKEN_FN = CFUNCTYPE(c_int, c_void_p, c_int32, c_void_p, c_size_t)


class SpecConfig(Structure):
    _fields_ = [("drafter", c_int), ("draft_model", c_void_p), ("ngram_min", c_int),
                ("ngram_max", c_int), ("layerskip_layers", c_int), ("k", c_int),
                ("adaptive", c_int), ("min_confidence", c_float), ("draft_ranks", c_int),
                ("callback", POINTER(CallbackDrafter)), ("on_step", STEP_FN),
                ("on_step_user", c_void_p), ("tree_levels", c_int),
                ("tree_width", c_int * SD_SPEC_MAX_K), ("tree_budget", c_int),
                ("tree_sample", c_int)]


class EngineParams(Structure):
    _fields_ = [("model", c_void_p), ("spec", SpecConfig), ("max_active", c_int),
                ("max_queued", c_int), ("max_batch_rows", c_int), ("load_aware_drafts", c_int),
                ("max_kv_positions", c_size_t), ("prefix_cache", c_int)]


class Histogram(Structure):
    _fields_ = [("n_bounds", c_int), ("bounds", c_double * SD_HIST_MAX_BOUNDS),
                ("counts", c_uint64 * (SD_HIST_MAX_BOUNDS + 1)), ("sum", c_double),
                ("count", c_uint64)]


class EngineMetrics(Structure):
    _fields_ = [("submitted", c_uint64), ("rejected_busy", c_uint64),
                ("rejected_invalid", c_uint64), ("finished", c_uint64 * len(STOP_REASONS)),
                ("prompt_tokens", c_uint64), ("generated_tokens", c_uint64), ("steps", c_uint64),
                ("batch_rows", c_uint64), ("drafted", c_uint64), ("accepted", c_uint64),
                ("draft_forwards", c_uint64), ("draft_rows", c_uint64), ("queued", c_int),
                ("active", c_int), ("kv_positions_used", c_size_t), ("kv_positions_cap", c_size_t),
                ("kv_bytes_used", c_size_t), ("cached_prompt_tokens", c_uint64),
                ("kv_blocks_used", c_int), ("kv_blocks_cached", c_int), ("kv_blocks_free", c_int),
                ("kv_block_evictions", c_uint64), ("step_seconds", Histogram),
                ("ttft_seconds", Histogram), ("queue_seconds", Histogram),
                ("acceptance_rate", Histogram), ("accepted_len", Histogram)]


# The structs the ABI test checks, by their C names.
STRUCTS = {
    "sd_model_params_t": ModelParams, "sd_model_info_t": ModelInfo,
    "sd_chat_message_t": ChatMessage, "sd_gen_config_t": GenConfig, "sd_gen_stats_t": GenStats,
    "sd_gen_result_t": GenResult, "sd_draft_query_t": DraftQuery,
    "sd_draft_proposal_t": DraftProposal, "sd_draft_outcome_t": DraftOutcome,
    "sd_callback_drafter_t": CallbackDrafter, "sd_step_info_t": StepInfo,
    "sd_spec_config_t": SpecConfig, "sd_engine_params_t": EngineParams,
    "sd_histogram_t": Histogram, "sd_engine_metrics_t": EngineMetrics,
}

P = c_void_p  # opaque handles: sd_model_t *, sd_engine_t *, sd_request_t *

# name: (restype, argtypes)
_PROTOTYPES = {
    "sd_status_string": (c_char_p, [status_t]),
    "sd_last_error": (c_char_p, []),
    "sd_model_params_default": (None, [POINTER(ModelParams)]),
    "sd_model_load": (status_t, [POINTER(ModelParams), POINTER(P)]),
    "sd_model_free": (None, [P]),
    "sd_model_get_info": (status_t, [P, POINTER(ModelInfo)]),
    "sd_tokenize": (status_t, [P, c_char_p, c_size_t, c_int, POINTER(c_int32), c_size_t,
                               POINTER(c_size_t)]),
    "sd_detokenize": (status_t, [P, POINTER(c_int32), c_size_t, c_void_p, c_size_t,
                                 POINTER(c_size_t)]),
    "sd_chat_apply": (status_t, [P, POINTER(ChatMessage), c_size_t, c_int, c_void_p, c_size_t,
                                 POINTER(c_size_t)]),
    "sd_gen_config_default": (None, [POINTER(GenConfig)]),
    "sd_gen_result_free": (None, [POINTER(GenResult)]),
    "sd_spec_config_default": (None, [POINTER(SpecConfig)]),
    "sd_spec_parse_drafter": (status_t, [c_char_p, POINTER(SpecConfig), POINTER(c_char_p)]),
    "sd_spec_parse_tree": (status_t, [c_char_p, POINTER(SpecConfig)]),
    "sd_spec_drafter_text": (status_t, [POINTER(SpecConfig), P, c_void_p, c_size_t]),
    "sd_generate_speculative": (status_t, [P, POINTER(c_int32), c_size_t, POINTER(GenConfig),
                                           POINTER(SpecConfig), TOKEN_FN, c_void_p,
                                           POINTER(GenResult)]),
    "sd_engine_params_default": (None, [POINTER(EngineParams)]),
    "sd_engine_create": (status_t, [POINTER(EngineParams), POINTER(P)]),
    "sd_engine_shutdown": (None, [P, c_double]),
    "sd_engine_free": (None, [P]),
    "sd_engine_submit": (status_t, [P, POINTER(c_int32), c_size_t, POINTER(GenConfig), TOKEN_FN,
                                    c_void_p, POINTER(P)]),
    "sd_request_cancel": (None, [P]),
    "sd_request_wait": (status_t, [P, c_double, POINTER(GenResult)]),
    "sd_request_done": (c_int, [P]),
    "sd_request_free": (None, [P]),
    "sd_engine_get_metrics": (status_t, [P, POINTER(EngineMetrics)]),
}


def library_path() -> Path:
    """Where libspecdec.so is taken from: $SPECDEC_LIB, else the copy installed with the
    package (next to this file)."""
    env = os.environ.get("SPECDEC_LIB")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent / "libspecdec.so"


def _load() -> ctypes.CDLL:
    path = library_path()
    if not path.is_file():
        raise ImportError(
            f"specdec: no C library at {path}: install the package with `pip install ./python` "
            "(it builds libspecdec.so) or set SPECDEC_LIB to a built build/lib/libspecdec.so")
    lib = ctypes.CDLL(str(path))
    for name, (restype, argtypes) in _PROTOTYPES.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    return lib


lib = _load()


def _status_codes() -> dict[str, int]:
    """Status names to values, from sd_status_string (so new codes need no edit here)."""
    codes: dict[str, int] = {}
    for value in range(256):
        name = lib.sd_status_string(value).decode()
        if name == "SD_ERR_UNKNOWN_STATUS" or name in codes:
            break
        codes[name] = value
    return codes


STATUS = _status_codes()
SD_ERR_BUFFER_TOO_SMALL = STATUS["SD_ERR_BUFFER_TOO_SMALL"]
SD_ERR_INTERNAL = STATUS["SD_ERR_INTERNAL"]
SD_ERR_BUSY = STATUS["SD_ERR_BUSY"]
