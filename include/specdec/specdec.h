/* specdec — speculative-decoding inference runtime. Public C API.
 *
 * Every fallible call returns sd_status_t; sd_last_error() (thread-local) holds a
 * message naming the value that was wrong. No CUDA types appear here. Design and
 * rationale: docs/design-notes.md. */
#ifndef SPECDEC_SPECDEC_H
#define SPECDEC_SPECDEC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- status ------------------------------------------------------------- */

typedef enum sd_status {
    SD_OK = 0,
    SD_ERR_INVALID_ARG,      /* a parameter out of range or NULL */
    SD_ERR_OUT_OF_MEMORY,
    SD_ERR_IO,               /* open/read/mmap/write failed */
    SD_ERR_BAD_MODEL,        /* corrupt or inconsistent GGUF file */
    SD_ERR_UNSUPPORTED_ARCH, /* general.architecture not llama/qwen2 */
    SD_ERR_UNSUPPORTED_TYPE, /* tensor type this build cannot compute with */
    SD_ERR_NO_TOKENIZER,     /* the model file carries no tokenizer */
    SD_ERR_BUFFER_TOO_SMALL, /* caller's buffer too small; the needed size is reported */
    SD_ERR_CONTEXT_FULL,     /* prompt (+ generation) longer than the context */
    SD_ERR_VOCAB_MISMATCH,
    SD_ERR_TP_PLAN,
    SD_ERR_BATCH_TOO_LARGE,
    SD_ERR_COMM_TIMEOUT,
    SD_ERR_RANK_DIVERGENCE,
    SD_ERR_NOT_BUILT,        /* feature not compiled into this build */
    SD_ERR_DEVICE,           /* CUDA / cuBLAS / cuRAND / NCCL failure */
    SD_ERR_CANCELLED,
    SD_ERR_INTERNAL,
    SD_ERR_PEER_LOST,        /* a rank of the communicator died or left mid-collective */
    SD_ERR_BUSY,             /* the serving engine's queue is full or it is shutting down;
                                sd_request_wait: the request still runs at the timeout */
    SD_STATUS_COUNT
} sd_status_t;

/* Stable name of a status code, e.g. "SD_ERR_BAD_MODEL". Never NULL. */
const char *sd_status_string(sd_status_t status);
/* Detail of the last error on this thread ("" when none). Valid until the next
 * failing call on the same thread. */
const char *sd_last_error(void);

/* ---- communicators (tensor parallelism) --------------------------------------------- */

/* A group of ranks that run collectives together. Opaque; see comm/comm.h. */
typedef struct sd_comm sd_comm_t;

/* The world communicator of this process. Ranks come from `specdec launch`
 * (SPECDEC_RANK, SPECDEC_WORLD_SIZE, SPECDEC_JOB_ID), from mpirun (OMPI_COMM_WORLD_*),
 * or a single rank when neither is set. The backend is chosen in one place
 * (ENABLE_INTRA_NODE_COMM=1 -> intra; SPECDEC_COMM=<name> overrides; else mpi where built
 * and launched by mpirun, else intra). Collective: every rank calls it. */
sd_status_t sd_comm_init(sd_comm_t **world);
/* The first n ranks of `parent` as a new communicator (collective over parent). Ranks
 * >= n get *out = NULL and SD_OK. SD_ERR_INVALID_ARG for n outside [1, size]. */
sd_status_t sd_comm_split_first(sd_comm_t *parent, int n, sd_comm_t **out);
int sd_comm_rank(const sd_comm_t *comm); /* 0 for NULL (a single rank) */
int sd_comm_size(const sd_comm_t *comm); /* 1 for NULL */
const char *sd_comm_backend(const sd_comm_t *comm); /* "single", "intra", "mpi", "nccl" */
void sd_comm_free(sd_comm_t *comm);

/* ---- model -------------------------------------------------------------- */

typedef struct sd_model sd_model_t;

typedef struct sd_model_params {
    const char *path; /* GGUF file */
    int n_threads;    /* CPU threads; 0 = number of online cores */
    int n_ctx;        /* KV-cache length; 0 = min(model context, 4096) */
    sd_comm_t *comm;  /* tensor-parallel group the model is split over (every rank of it
                         loads its shard); NULL = the whole model on this rank. Not owned. */
    const char *device; /* "cpu", "cuda" (device 0), "cuda:N", or "auto"; NULL = the
                           SPECDEC_DEVICE environment variable, else "auto": CUDA device 0
                           when one is present and the model is not split over ranks, else
                           the CPU. An unknown name, a missing device or a build without
                           CUDA is an error naming it, never a silent CPU fallback. */
} sd_model_params_t;

void sd_model_params_default(sd_model_params_t *params);
/* *out is NULL on failure: SD_ERR_IO, SD_ERR_BAD_MODEL, SD_ERR_UNSUPPORTED_ARCH /
 * _TYPE, SD_ERR_TP_PLAN, SD_ERR_DEVICE, SD_ERR_OUT_OF_MEMORY, naming the value. */
sd_status_t sd_model_load(const sd_model_params_t *params, sd_model_t **out);
void sd_model_free(sd_model_t *model);

typedef struct sd_model_info {
    const char *arch; /* "llama" | "qwen2" */
    const char *name; /* general.name, "" when absent */
    int n_vocab, n_layer, n_embd, n_head, n_head_kv, n_ff, n_ctx;
    int32_t bos, eos; /* -1 when absent */
    const char *device; /* the backend computing the model: "cpu" or "cuda" */
} sd_model_info_t;

sd_status_t sd_model_get_info(const sd_model_t *model, sd_model_info_t *out);

/* ---- tokenizer ---------------------------------------------------------- */

enum {
    SD_TOKENIZE_ADD_BOS = 1 << 0,       /* prepend BOS if the model asks for it */
    SD_TOKENIZE_PARSE_SPECIAL = 1 << 1, /* "<|im_start|>" in text becomes its control token */
};

/* Encode text[len] into tokens[cap]. *n_tokens gets the count; when cap is too
 * small returns SD_ERR_BUFFER_TOO_SMALL with *n_tokens = the count needed. */
sd_status_t sd_tokenize(const sd_model_t *model, const char *text, size_t len, int flags,
                        int32_t *tokens, size_t cap, size_t *n_tokens);
/* Bytes of tokens[n] concatenated (may end inside a UTF-8 sequence). Same
 * SD_ERR_BUFFER_TOO_SMALL convention with *len = bytes needed. */
sd_status_t sd_detokenize(const sd_model_t *model, const int32_t *tokens, size_t n, char *buf,
                          size_t cap, size_t *len);

/* Streaming decode: push tokens one at a time, get only complete UTF-8 text back;
 * an incomplete trailing sequence is held until the next push or the flush. */
typedef struct sd_text_stream sd_text_stream_t;
sd_status_t sd_text_stream_new(const sd_model_t *model, sd_text_stream_t **out);
sd_status_t sd_text_stream_push(sd_text_stream_t *s, int32_t token, char *buf, size_t cap,
                                size_t *len);
sd_status_t sd_text_stream_flush(sd_text_stream_t *s, char *buf, size_t cap, size_t *len);
void sd_text_stream_free(sd_text_stream_t *s);

/* ---- chat template ------------------------------------------------------ */

typedef struct sd_chat_message {
    const char *role; /* "system" | "user" | "assistant" */
    const char *content;
} sd_chat_message_t;

/* Render messages with the model's chat template (recognised from
 * tokenizer.chat_template; ChatML and Llama-2/3 styles). Output NUL-terminated;
 * SD_ERR_BUFFER_TOO_SMALL convention with *len = bytes needed (without NUL). */
sd_status_t sd_chat_apply(const sd_model_t *model, const sd_chat_message_t *messages, size_t n,
                          int add_generation_prompt, char *buf, size_t cap, size_t *len);

/* Render messages with the chat template and tokenize the text, the way to turn untrusted
 * messages into a prompt: only the template's own markup becomes special tokens; a role or
 * content that spells "<|im_end|>" stays plain text, so a message cannot close its turn or
 * forge another. The text is split at the markup's special tokens and each piece between
 * them is tokenized as sd_tokenize would (so ids equal HF's for messages without special
 * text). flags: SD_TOKENIZE_ADD_BOS adds the BOS the model asks for unless the template
 * wrote one; SD_TOKENIZE_PARSE_SPECIAL trusts the messages: special tokens inside them are
 * parsed too (sd_tokenize of sd_chat_apply's text). SD_ERR_BUFFER_TOO_SMALL with
 * *n_tokens = the count needed when cap is too small. */
sd_status_t sd_chat_tokenize(const sd_model_t *model, const sd_chat_message_t *messages, size_t n,
                             int add_generation_prompt, int flags, int32_t *tokens, size_t cap,
                             size_t *n_tokens);

/* ---- generation --------------------------------------------------------- */

/* The most alternatives a generation reports per token (sd_gen_config_t.top_logprobs). */
#define SD_MAX_TOP_LOGPROBS 20

/* Log-probabilities of one generated token: ln p(token) under the target's raw distribution
 * at its position (log-softmax of the target's logits, temperature 1, no top-k/top-p/min-p;
 * docs/design-notes.md, "Log-probabilities"), and the n_top most likely tokens there, most
 * likely first (ties: lower id first). -INFINITY where p is 0. */
typedef struct sd_token_logprobs {
    int32_t token;
    float logprob;
    int n_top;
    const int32_t *top_tokens; /* [n_top] */
    const float *top_logprobs; /* [n_top] */
} sd_token_logprobs_t;

/* Called with the token callback's user for each kept token, just before that token's
 * token callback; lp is valid during the call only. Runs where the token callback runs. */
typedef void (*sd_logprobs_callback)(void *user, const sd_token_logprobs_t *lp);

typedef struct sd_gen_config {
    int max_tokens;     /* > 0 */
    float temperature;  /* 0 = greedy */
    int top_k;          /* 0 = off */
    float top_p;        /* 1 = off */
    float min_p;        /* 0 = off */
    uint64_t seed;
    const char *const *stop_strings; /* generation ends before the first match */
    size_t n_stop_strings;
    const int32_t *stop_tokens;      /* in addition to the model's end-of-generation tokens */
    size_t n_stop_tokens;
    int ignore_eos;                  /* 1: do not stop at EOS */
    int logprobs;                    /* 1: each kept token's log-probability in out->logprobs
                                        (and to logprobs_callback); 0 (default): none */
    int top_logprobs;                /* 0..SD_MAX_TOP_LOGPROBS alternatives per token (needs
                                        logprobs = 1): out->top_tokens / out->top_logprobs */
    sd_logprobs_callback logprobs_callback; /* may be NULL; see sd_logprobs_callback */
} sd_gen_config_t;

void sd_gen_config_default(sd_gen_config_t *config);

typedef enum sd_stop_reason {
    SD_STOP_NONE = 0,
    SD_STOP_MAX_TOKENS,
    SD_STOP_EOS,
    SD_STOP_TOKEN,
    SD_STOP_STRING,
    SD_STOP_CALLBACK,
    SD_STOP_ERROR, /* a failure after generation started; the result keeps what was made */
    SD_STOP_CANCELLED, /* sd_request_cancel (or engine shutdown) ended it; what was made is kept */
    SD_STOP_CONTEXT_FULL, /* the context (n_ctx) filled before max_tokens was reached */
    SD_STOP_REASON_COUNT
} sd_stop_reason_t;

/* Stable text of a stop reason, e.g. "max tokens", "context full". Never NULL. */
const char *sd_stop_reason_string(sd_stop_reason_t reason);

/* Called for each generated token with the text it completes (possibly empty
 * while a UTF-8 sequence or a possible stop string is pending). Return non-zero
 * to stop generation. When generation ends on EOS, a stop token or a callback stop
 * while text is still held back, one last call with token = -1 delivers it (its
 * return value is ignored): the texts of all calls always join to result->text. Under
 * tensor parallelism every rank must give the same answers: a stop on one rank only ends
 * the generation on every rank at that step with SD_ERR_RANK_DIVERGENCE (the per-step
 * check, SPECDEC_CHECK_CONSISTENCY). */
typedef int (*sd_token_callback)(void *user, int32_t token, const char *text, size_t text_len);

/* Statistics of one generation (speculative or not). */
#define SD_SPEC_MAX_K 16
typedef struct sd_gen_stats {
    uint64_t tokens_generated;
    uint64_t target_forwards;   /* target forward passes after the prompt (decode/verify) */
    uint64_t draft_forwards;    /* drafter model passes (0 for n-gram) */
    uint64_t drafted;           /* draft tokens proposed */
    uint64_t accepted;          /* draft tokens accepted */
    uint64_t steps;             /* speculative steps (= target_forwards) */
    double acceptance_rate;     /* accepted / drafted (0 when nothing drafted) */
    double mean_accepted_len;   /* tokens emitted per step: (accepted + steps) / steps */
    uint64_t accepted_hist[SD_SPEC_MAX_K + 1]; /* steps by number of accepted draft tokens */
    double draft_seconds, verify_seconds, other_seconds;
    double check_seconds; /* of verify_seconds: the verifier's check (argmax / sampling) */
} sd_gen_stats_t;

typedef struct sd_gen_result {
    int32_t *tokens;   /* generated tokens, owned */
    size_t n_tokens;
    char *text;        /* generated text, NUL-terminated, stop string removed, owned */
    size_t text_len;
    sd_stop_reason_t stop_reason;
    size_t n_prompt;
    size_t n_cached;   /* of n_prompt: positions served by the serving engine's prefix cache */
    double prefill_seconds, decode_seconds;
    sd_gen_stats_t stats;
    /* with config->logprobs (else NULL and 0); owned, the same values for every drafter */
    float *logprobs;       /* [n_tokens] ln p of each token (sd_token_logprobs_t) */
    int n_top;             /* config->top_logprobs */
    int32_t *top_tokens;   /* [n_tokens * n_top] token i's alternatives at [i * n_top ..] */
    float *top_logprobs;   /* [n_tokens * n_top] their log-probabilities */
} sd_gen_result_t;

/* Generate from prompt[n_prompt] (token ids), deterministic for a given seed. A failure
 * before generation starts (bad config or prompt) leaves *out zeroed; one during it returns
 * its status with *out holding every token and all text made so far (SD_STOP_ERROR).
 * Release *out with sd_gen_result_free in every case (safe on a zeroed result). */
sd_status_t sd_generate(sd_model_t *model, const int32_t *prompt, size_t n_prompt,
                        const sd_gen_config_t *config, sd_token_callback callback, void *user,
                        sd_gen_result_t *out);
void sd_gen_result_free(sd_gen_result_t *result);

/* ---- speculative decoding ------------------------------------------------ */

typedef enum sd_drafter_kind {
    SD_DRAFTER_NONE = 0,  /* target-only decoding */
    SD_DRAFTER_MODEL,     /* a separate draft model (same vocabulary as the target) */
    SD_DRAFTER_NGRAM,     /* prompt lookup: continue the longest recent n-gram match */
    SD_DRAFTER_LAYERSKIP, /* self-speculative: the target's first L layers + its head */
    SD_DRAFTER_XVOCAB,    /* a draft model with another tokenizer, proposing through text */
    SD_DRAFTER_CALLBACK,  /* the caller's drafter (sd_callback_drafter_t) */
} sd_drafter_kind_t;

/* ---- a drafter written by the caller (SD_DRAFTER_CALLBACK) ---- */

/* What a proposal continues: context[n_context] is the prompt and every token kept so far;
 * the first proposed token stands at position n_context. */
typedef struct sd_draft_query {
    const int32_t *context;
    size_t n_context;
    int k;             /* propose at most k tokens */
    float temperature; /* the request's (0: greedy); proposals are verified as guesses */
    uint64_t seed;     /* the request's seed */
} sd_draft_query_t;

/* Where a proposal goes, zeroed by the library before each call: the drafter writes
 * tokens[0 .. n), n <= capacity, and may set evidence (a class 0..7 with its own adaptive
 * draft length). When the generation drafts token trees (sd_spec_config_t.tree_*), parent
 * is [capacity] (else NULL) and the drafter may propose a tree: parent[i] in [-1, i) (-1:
 * below the last context token), depth <= query k, and is_tree = 1 (is_tree 0: a chain).
 * Library-owned: later versions may add fields. */
typedef struct sd_draft_proposal {
    int32_t *tokens;
    int capacity;
    int n;
    int evidence;
    int32_t *parent;
    int is_tree;
} sd_draft_proposal_t;

/* What the target kept of the last proposal: accepted[n_accepted] (a chain's first
 * n_accepted tokens, or a tree's path; from_tree = 1 for a tree), then next_token. */
typedef struct sd_draft_outcome {
    int n_accepted;
    int32_t next_token;
    const int32_t *accepted;
    int from_tree;
} sd_draft_outcome_t;

/* A drafter as callbacks (docs/design-notes.md, "A drafter of the caller's own"): propose is
 * required, the rest optional; create makes each generation's state (NULL: state = user),
 * destroy frees it; a non-SD_OK return ends the generation with that status. Under tensor
 * parallelism only rank 0's are called. */
typedef struct sd_callback_drafter {
    void *user;
    sd_status_t (*create)(void *user, void **state);
    sd_status_t (*begin)(void *state, const int32_t *prompt, size_t n_prompt);
    sd_status_t (*propose)(void *state, const sd_draft_query_t *query, sd_draft_proposal_t *out);
    sd_status_t (*accept)(void *state, const sd_draft_outcome_t *outcome);
    sd_status_t (*rollback)(void *state, size_t n_context); /* the context was cut to n */
    void (*destroy)(void *state);
} sd_callback_drafter_t;

/* ---- per-step observation (sd_spec_config_t.on_step) ---- */

/* One step of a generation: one target forward verifying n_drafted drafts. */
typedef struct sd_step_info {
    uint64_t request;        /* the serving engine's request number (1, 2, ... in admission
                                order, alike on every rank); 0 outside the engine */
    uint64_t step;           /* 0, 1, ... within the generation */
    int64_t pos;             /* context length before the step: the first draft's position */
    int k;                   /* draft length asked of the drafter (0: a plain decode step) */
    int n_drafted;           /* drafts verified (after the adaptive and load cuts) */
    const int32_t *drafted;  /* [n_drafted], valid during the call */
    int n_accepted;          /* drafts kept */
    int32_t next_token;      /* the target's own token after them */
    int evidence;            /* the proposal's evidence class (0 when the drafter has none) */
    double draft_seconds;    /* proposing this step's drafts */
    double verify_seconds;   /* the verify forward (in a batch: the shared one) and the check */
} sd_step_info_t;
/* Called after every step's verification, on the generating thread (the engine's
 * scheduler), on every rank; it must not block or call back into the library. */
typedef void (*sd_step_callback)(void *user, const sd_step_info_t *step);

/* Sampled token trees (--tree-sample): TOP, the drafter's top guesses, verified against the
 * target's own draw; Q, each node's children drawn independently from the drafter's
 * distribution q, verified by recursive rejection sampling (docs/design-notes.md, "Token
 * trees": TOP accepted more in bench/results/2026-12-07-cpu-trees-2.md, so it is the default). */
typedef enum sd_tree_sample { SD_TREE_SAMPLE_TOP = 0, SD_TREE_SAMPLE_Q = 1 } sd_tree_sample_t;

typedef struct sd_spec_config {
    sd_drafter_kind_t drafter;
    sd_model_t *draft_model; /* SD_DRAFTER_MODEL: SD_ERR_VOCAB_MISMATCH if its vocabulary
                                differs; SD_DRAFTER_XVOCAB: any vocabulary (both models need
                                a tokenizer), drafts translated through text */
    int ngram_min, ngram_max; /* SD_DRAFTER_NGRAM: n-gram lengths tried (default 1..3) */
    int layerskip_layers;     /* SD_DRAFTER_LAYERSKIP: L, 1 <= L < n_layer; 0 (default): the
                                 target's n_layer / 2, resolved when the drafter is built */
    int k;                    /* draft length (the maximum when adaptive), 1..SD_SPEC_MAX_K */
    int adaptive;             /* 1 (default): adapt k to recent acceptance and stop a draft
                                 early when the drafter's top probability is low
                                 (docs/design-notes.md, "Adaptive draft length") */
    float min_confidence;     /* adaptive early-stop threshold (default 0.3) */
    int draft_ranks;          /* SD_DRAFTER_MODEL under TP: the draft model is loaded on the
                                 target group's first draft_ranks ranks (its own comm, or none
                                 for 1); the others pass draft_model = NULL and receive the
                                 drafts by broadcast. 0 (default): every rank holds it. */
    const sd_callback_drafter_t *callback; /* SD_DRAFTER_CALLBACK: not owned; must outlive
                                              every generation (and engine) using it */
    sd_step_callback on_step; /* NULL (default), or called after every step (any drafter,
                                 NONE included) with on_step_user */
    void *on_step_user;
    /* Token trees (docs/design-notes.md, "Token trees"; set by sd_spec_parse_tree): with
     * tree_levels > 0 the drafter proposes tree_width[d] candidates below every node of
     * depth d (static); with tree_budget > 0 a dynamic tree of up to that many nodes grown
     * from the most probable ones, depth <= k. Both 0 (default): a chain of k. Used by the
     * model, layer-skip, n-gram and callback drafters in sd_generate*; the serving engine
     * drafts chains. */
    int tree_levels;
    int tree_width[SD_SPEC_MAX_K];
    int tree_budget;
    sd_tree_sample_t tree_sample; /* how sampled (temperature > 0) static trees of the model
                                     and layer-skip drafters are drawn (default TOP) */
} sd_spec_config_t;

#define SD_SPEC_TREE_MAX_NODES 64

void sd_spec_config_default(sd_spec_config_t *config);

/* A --draft text into spec: "ngram" (n-grams 1..3), "ngram:N" (1..N, N in [1, 32]),
 * "layerskip" (layerskip_layers 0: L = n_layer / 2), "layerskip:L", "model:PATH",
 * "xvocab:PATH" (a draft model with another tokenizer), "callback" (spec->callback is then
 * the caller's to set), and any other text = PATH of a draft model. Sets spec->drafter and
 * that drafter's fields (the rest is kept) and *model_path (NULL unless a draft model, then
 * a pointer into text: the caller loads it into spec->draft_model; model_path may be NULL).
 * SD_ERR_INVALID_ARG naming the text and listing the drafters, spec unchanged. */
sd_status_t sd_spec_parse_drafter(const char *text, sd_spec_config_t *spec, const char **model_path);
/* A --tree text into spec: "WxWx..." (a static shape, e.g. "4x2x2x1": 1 to SD_SPEC_MAX_K
 * levels of widths >= 1, at most SD_SPEC_TREE_MAX_NODES nodes in all), "dynamic:N" (N in
 * [1, SD_SPEC_TREE_MAX_NODES]) or "chain". SD_ERR_INVALID_ARG naming the text and the bad
 * value, spec unchanged. */
sd_status_t sd_spec_parse_tree(const char *text, sd_spec_config_t *spec);
/* Nodes of spec's static tree shape (w1 + w1*w2 + ...), its budget when dynamic, 0 for a
 * chain (or more than SD_SPEC_TREE_MAX_NODES: the count, saturated at INT_MAX / 2). */
int sd_spec_tree_nodes(const sd_spec_config_t *spec);
/* The --draft word of a kind ("ngram", "layerskip", "model"), "none" for SD_DRAFTER_NONE,
 * NULL for a value that is no kind. */
const char *sd_drafter_kind_name(sd_drafter_kind_t kind);
/* Every drafter's --draft forms, for help texts ("ngram[:N] | layerskip[:L] | ..."), into
 * buf[cap] (cap >= 1; truncated to fit). */
void sd_spec_drafter_usage(char *buf, size_t cap);
/* The --draft text giving spec's drafter into buf[cap] (truncated to fit): "ngram:4",
 * "layerskip:15"; a draft model is "model" (its file is not in the spec). With a target,
 * what the target decides is resolved ("layerskip" -> "layerskip:15") and a drafter that
 * cannot run on it is SD_ERR_INVALID_ARG naming the values; target may be NULL.
 * SD_ERR_INVALID_ARG for SD_DRAFTER_NONE. */
sd_status_t sd_spec_drafter_text(const sd_spec_config_t *spec, const sd_model_t *target,
                                 char *buf, size_t cap);

/* sd_generate with a drafter: the output is token for token what sd_generate gives for
 * greedy configs, and distributed exactly as sd_generate's sampling otherwise (same seed
 * semantics: a token's randomness depends on (seed, position) only). spec == NULL or
 * drafter NONE is plain sd_generate. Statistics land in out->stats. */
sd_status_t sd_generate_speculative(sd_model_t *model, const int32_t *prompt, size_t n_prompt,
                                    const sd_gen_config_t *config, const sd_spec_config_t *spec,
                                    sd_token_callback callback, void *user, sd_gen_result_t *out);

/* ---- serving engine: thread-safe submission, continuous batching -------------------- */

/* One scheduler thread steps every active request together, one batched target forward
 * per step (docs/design-notes.md, "Serving"). A request yields the same tokens as
 * sd_generate_speculative with the same model, config and spec, whatever else is in the
 * batch and in whatever order requests arrive. Every sd_engine_* and sd_request_* call may
 * be made from any thread, concurrently; the token callback runs on the scheduler thread. */
typedef struct sd_engine sd_engine_t;
typedef struct sd_request sd_request_t;

typedef struct sd_engine_params {
    sd_model_t *model;      /* the target; not owned, must outlive the engine */
    sd_spec_config_t spec;  /* the drafter every request uses (drafter NONE: target-only);
                               a draft model in spec.draft_model is not owned either */
    int max_active;         /* requests stepping together (default 16) */
    int max_queued;         /* requests waiting for a slot; one more is SD_ERR_BUSY (default 64) */
    int max_batch_rows;     /* rows of one batched forward (default 256), spec.k + 1 (1
                               without a drafter) .. 65536: a request's step that does not
                               fit waits, never shortened; prompts prefill in what is left */
    int load_aware_drafts;  /* 1 (default): cut drafts to what they pay at the batch's load,
                               never changing the tokens (docs/design-notes.md, "Serving");
                               0: every request drafts as if alone */
    size_t max_kv_positions; /* KV-cache positions all active requests may hold together (a
                                request holds prompt + max_tokens, capped by the context);
                                0 = max_active * the model's n_ctx. A request waits in the
                                queue until its positions fit. */
    int prefix_cache;       /* 1 (default): KV blocks of ended and running requests are kept
                               under max_kv_positions and reused by requests whose prompt
                               starts the same (docs/design-notes.md, "Paged KV cache and
                               prefix cache"); the pool of max_kv_positions positions is
                               allocated at sd_engine_create. 0: every prompt is prefilled
                               whole, each request's cache allocated at admission */
} sd_engine_params_t;

void sd_engine_params_default(sd_engine_params_t *params);
/* Starts the scheduler thread (collective under TP, see sd_engine_wait_stopped).
 * SD_ERR_INVALID_ARG naming a bad field (max_active outside 1..4096, max_queued < 0, ...);
 * the spec is checked like sd_generate_speculative's (SD_ERR_VOCAB_MISMATCH, ...). */
sd_status_t sd_engine_create(const sd_engine_params_t *params, sd_engine_t **out);
/* Stop admitting (sd_engine_submit answers SD_ERR_BUSY from now on), let queued and active
 * requests run for up to grace_seconds, then cancel what is left (SD_STOP_CANCELLED);
 * returns once no request is queued or active. Idempotent. */
void sd_engine_shutdown(sd_engine_t *engine, double grace_seconds);
/* sd_engine_shutdown(engine, 0), stop the scheduler thread, free the engine. Request
 * handles not yet freed stay valid (their results are final) until sd_request_free.
 * Ranks > 0 of a tensor-parallel engine: waits for rank 0 to stop first (see below). */
void sd_engine_free(sd_engine_t *engine);
/* Tensor parallelism: a model split over a comm (sd_model_params_t.comm) is served by one
 * engine per rank, created on every rank with the same parameters; rank 0 takes the
 * requests (sd_engine_submit elsewhere is SD_ERR_INVALID_ARG) and every rank runs the same
 * steps (docs/design-notes.md, "Serving"). On ranks > 0 this call blocks until rank 0 frees
 * its engine (SD_OK) or the group fails (its status: SD_ERR_COMM_TIMEOUT, SD_ERR_PEER_LOST,
 * ...), which also ends every request and later submit with that status.
 * SD_ERR_INVALID_ARG on rank 0 or without TP. */
sd_status_t sd_engine_wait_stopped(sd_engine_t *engine);

/* Queue a generation of prompt[n_prompt] (copied, like every string of config). The
 * request is validated here, before it is queued: a bad config or prompt, a prompt that
 * leaves no room in the context, or a request that could never fit max_kv_positions is
 * refused with its status and message (nothing queued). SD_ERR_BUSY when max_queued
 * requests already wait or the engine is shutting down. callback (may be NULL) is called
 * on the scheduler thread with sd_generate's contract (texts join to the result's text);
 * a non-zero return stops the request (SD_STOP_CALLBACK). It must not block. */
sd_status_t sd_engine_submit(sd_engine_t *engine, const int32_t *prompt, size_t n_prompt,
                             const sd_gen_config_t *config, sd_token_callback callback,
                             void *user, sd_request_t **out);
/* n choices of one request: the most sd_engine_submit_choices takes. */
#define SD_MAX_CHOICES 128
/* The seed of choice i (0 <= i < SD_MAX_CHOICES) of a request seeded `seed`: seed itself for
 * i = 0 (so n = 1 is unchanged), else splitmix64(seed + i * 0x9E3779B97F4A7C15) >> 11, a
 * value below 2^53 (exact as a JSON number): submitting it alone reproduces that choice. */
uint64_t sd_choice_seed(uint64_t seed, int i);
/* n generations of one prompt, choice i being exactly sd_engine_submit with config->seed
 * replaced by sd_choice_seed(config->seed, i) and user users[i] (users NULL: every user
 * NULL). Queued together, all or none (SD_ERR_BUSY when the queue cannot take n more), and
 * admitted in order, so they step in the same batches as far as slots allow. out[n] gets
 * the handles (each freed with sd_request_free). SD_ERR_INVALID_ARG for n outside
 * [1, SD_MAX_CHOICES] or above max_active + max_queued (could never be queued). */
sd_status_t sd_engine_submit_choices(sd_engine_t *engine, const int32_t *prompt, size_t n_prompt,
                                     const sd_gen_config_t *config, int n,
                                     sd_token_callback callback, void *const *users,
                                     sd_request_t **out);
/* Ask the scheduler to stop the request; it ends within one step with SD_STOP_CANCELLED
 * keeping the tokens made so far, its KV cache freed. No effect once finished. */
void sd_request_cancel(sd_request_t *request);
/* Wait until the request has finished, at most timeout_seconds (< 0: no limit). Still
 * running at the timeout: SD_ERR_BUSY, *out zeroed. Otherwise the request's final status
 * (SD_OK; SD_ERR_CANCELLED for a cancelled request; or the failure that ended it) with
 * *out holding its result, moved out on the first such call (later calls give a zeroed
 * result). Release *out with sd_gen_result_free. */
sd_status_t sd_request_wait(sd_request_t *request, double timeout_seconds,
                            sd_gen_result_t *out);
/* 1 once the request has finished (its result is ready for sd_request_wait). */
int sd_request_done(const sd_request_t *request);
/* Release the handle: a request still queued or running is cancelled and freed by the
 * scheduler once it lets go (this call never blocks). NULL: nothing. */
void sd_request_free(sd_request_t *request);

/* A histogram with fixed upper bounds: counts[i] = observations <= bounds[i] and above
 * bounds[i - 1] (not cumulative); counts[n_bounds] = those above the last bound. */
#define SD_HIST_MAX_BOUNDS 20
typedef struct sd_histogram {
    int n_bounds;
    double bounds[SD_HIST_MAX_BOUNDS];
    uint64_t counts[SD_HIST_MAX_BOUNDS + 1];
    double sum;
    uint64_t count;
} sd_histogram_t;

/* A snapshot of the engine's counters (all since sd_engine_create). */
typedef struct sd_engine_metrics {
    uint64_t submitted;          /* requests accepted by sd_engine_submit */
    uint64_t rejected_busy;      /* submits answered SD_ERR_BUSY */
    uint64_t rejected_invalid;   /* submits refused as invalid */
    uint64_t finished[SD_STOP_REASON_COUNT]; /* finished requests by stop reason */
    uint64_t prompt_tokens;      /* of finished and active requests, counted at admission */
    uint64_t generated_tokens;
    uint64_t steps;              /* batched forwards */
    uint64_t batch_rows;         /* rows over all batched forwards */
    uint64_t drafted, accepted;  /* draft tokens over all requests */
    uint64_t draft_forwards;     /* batched forwards of a drafter's model (draft model or
                                    layer-skip): every request's draft round in one */
    uint64_t draft_rows;         /* rows over those forwards */
    int queued, active;          /* now; active: admitted (being set up or stepping) */
    size_t kv_positions_used;    /* now: positions the active requests hold */
    size_t kv_positions_cap;     /* max_kv_positions as resolved */
    size_t kv_bytes_used;        /* now: bytes of their target (and draft) KV caches */
    uint64_t cached_prompt_tokens; /* prompt positions served by the prefix cache */
    int kv_blocks_used;          /* now: target KV blocks held by active requests */
    int kv_blocks_cached;        /* now: unreferenced blocks kept for their prefix */
    int kv_blocks_free;          /* now: blocks holding nothing */
    uint64_t kv_block_evictions; /* cached blocks evicted to make room */
    sd_histogram_t step_seconds;    /* wall time of one scheduler step (plan, forward, verify) */
    sd_histogram_t ttft_seconds;    /* submit to first token */
    sd_histogram_t queue_seconds;   /* submit to admission */
    sd_histogram_t acceptance_rate; /* per finished request that drafted */
    sd_histogram_t accepted_len;    /* draft tokens accepted per request step */
} sd_engine_metrics_t;

sd_status_t sd_engine_get_metrics(sd_engine_t *engine, sd_engine_metrics_t *out);

#ifdef __cplusplus
}
#endif
#endif
