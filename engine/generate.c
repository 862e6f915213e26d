/* The generation loop — target-only and speculative are one loop: prefill the prompt, then
 * steps of "draft up to k tokens, verify them with one target forward, emit, roll back"
 * (engine/speculative.h describes a step). Without a drafter every step drafts nothing and
 * is one target-only decode step, so streaming, stops, max_tokens, seeds and statistics
 * behave identically with and without speculation.
 *
 * Defaults (sd_gen_config_default), llama.cpp-like: max_tokens 128, temperature 0.8,
 * top_k 40, top_p 0.95, min_p 0.05, seed 0, no stop strings or tokens, ignore_eos 0.
 *
 * Sampling: greedy when temperature <= 0; otherwise the token at absolute position p
 * (prompt tokens are positions 0 .. n_prompt-1) is drawn with the uniform
 * sd_rng_uniform(seed, p, SD_RNG_SAMPLE), so it depends only on (seed, p), never on
 * chunking, thread count or timing. sd_spec_verify keeps this for the target's own tokens
 * (a correction or bonus), so speculative output is distributed as target-only output,
 * and with a deterministic drafter (n-gram) is the same tokens.
 *
 * Stops, checked per token in this order (also for each token of an accepted draft
 * block; the rest of the block is discarded):
 *   - an end-of-generation token (unless ignore_eos) -> SD_STOP_EOS, and a token of
 *     config->stop_tokens -> SD_STOP_TOKEN: the token appears neither in tokens nor text;
 *   - the first occurrence of any stop string in the generated text (also across token
 *     boundaries) -> SD_STOP_STRING: text ends before the match, tokens keep every token
 *     generated (including those that spelled the match);
 *   - the callback returning non-zero -> SD_STOP_CALLBACK (the token it saw is kept);
 *   - max_tokens generated, or prompt + generated reaching the context length
 *     -> SD_STOP_MAX_TOKENS. Drafts are capped so a step never emits past either limit.
 *
 * Streaming: the callback gets every kept token with the text it releases. Text is held
 * while it ends inside an incomplete UTF-8 sequence or while its tail could be the start
 * of a stop string; it is released as soon as it cannot, and the last kept token's call
 * carries everything still held when generation reaches max_tokens. After an EOS, stop
 * token or callback stop, text still held (if any) comes in one final call with token -1,
 * whose return value is ignored. Text of a matched stop string is never delivered. The
 * callback texts concatenate to exactly out->text.
 *
 * Statistics (out->stats) for every generation: one step = one target forward. Times:
 * prefill_seconds covers the prompt and the drafter's begin; decode_seconds splits into
 * draft (propose + accept), verify (target forward + sd_spec_verify) and other (emitting,
 * text, rollback). A drafter whose propose fails with SD_ERR_CONTEXT_FULL (a draft model
 * with a shorter context than the target's) stops drafting; the rest is target-only.
 *
 * A model without a tokenizer still generates tokens; its text is "" (stop strings then
 * give SD_ERR_NO_TOKENIZER). All state lives in this call: concurrent calls on one model
 * share nothing but the read-only weights. */
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "comm/comm.h"
#include "core/check.h"
#include "core/hash.h"
#include "engine/gen.h"
#include "engine/generate_text.h"
#include "core/log.h"
#include "model/forward.h"
#include "model/model.h"
#include "engine/speculative.h"
#include "engine/verifier.h"
#include "verify/sampler.h"
#include "verify/speculative.h"

void sd_gen_config_default(sd_gen_config_t *config)
{
    if (config == NULL)
        return;
    memset(config, 0, sizeof *config);
    config->max_tokens = 128;
    config->temperature = 0.8f;
    config->top_k = 40;
    config->top_p = 0.95f;
    config->min_p = 0.05f;
}

void sd_gen_result_free(sd_gen_result_t *result)
{
    if (result == NULL)
        return;
    free(result->tokens);
    free(result->text);
    memset(result, 0, sizeof *result);
}

/* Per-call generation state. */
typedef struct gen {
    const sd_model_t *model;
    const sd_gen_config_t *cfg;
    sd_sampler_params_t sp;
    int n_vocab;
    int n_ctx;                      /* prompt + generated never exceed this */
    sd_seq_t seq;                   /* the target: holds the context but its last token */
    int seq_ready;
    sd_verifier_t ver;              /* host or kernel verification of each step */
    int ver_ready;
    sd_text_stream_t *stream;       /* NULL without a tokenizer */
    sd_token_callback callback;
    void *user;
    const int32_t *prompt;
    size_t n_prompt;
    int32_t *tokens;                /* [cap_tokens] generated */
    size_t n_tokens, cap_tokens;
    char *text;                     /* [text_cap] generated text, text_len valid bytes */
    size_t text_len, text_cap;
    size_t released;                /* text[0..released) has gone to the callback */
    int matched;                    /* a stop string matched; text ends before it */
    sd_stop_reason_t reason;
    /* speculation */
    sd_drafter_t *drafter;          /* NULL: target-only */
    sd_drafter_t *owned_drafter;    /* built here from the spec, freed here */
    int drafting;                   /* 0 once the drafter ran out of context */
    sd_spec_k_t kc;
    float min_confidence;
    int32_t *batch;                 /* [k_max + 1] the verify forward: last token, drafts */
    float *q;                       /* [k_max, n_vocab] drafter distributions, or NULL */
    const sd_gen_options_t *opts;
    sd_comm_t *comm;                /* the target's TP group, or NULL */
    int check_consistency;          /* compare every step's tokens across the ranks */
    uint64_t n_steps;
    sd_gen_stats_t stats;
    uint64_t draft_forwards0;       /* drafter passes before decoding */
    /* driving (engine/gen.h) */
    int batched;                    /* forwards run through sd_forward_batch */
    size_t prefilled;               /* prompt tokens forwarded (of n_prompt - 1) */
    int decoding;                   /* the prompt is prefilled and the drafter begun */
    int cancelled;                  /* sd_gen_cancel */
    double row_cost;                /* the planned step's batch row cost (0: alone) */
    /* a draft proposed in rounds before the step is planned (sd_gen_draft_begin) */
    int draft_ready;                /* plan_n / plan_has_q / plan_evidence hold it */
    long draft_k;                   /* tokens asked of the drafter */
    sd_draft_request_t dreq;
    sd_draft_out_t dout;
    double t_draft;                 /* when the rounds began */
    int planned;                    /* 0: nothing planned, 1: a prompt chunk, 2: a step */
    int plan_n;                     /* rows of the planned chunk, or drafts of the step */
    int plan_has_q, plan_evidence;  /* the planned step's draft distributions and class */
    size_t plan_len;                /* the planned step's context length */
    double t_start, t_decode, t_plan; /* first plan, end of prefill, the last step's draft end */
} gen_t;

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- validation -------------------------------------------------------------------- */

static sd_status_t check_config(const sd_model_t *m, const sd_gen_config_t *c)
{
    if (c->max_tokens <= 0)
        return sd_set_error(SD_ERR_INVALID_ARG, "config max_tokens = %d, must be > 0",
                            c->max_tokens);
    sd_sampler_params_t sp = {c->temperature, c->top_k, c->top_p, c->min_p};
    SD_CHECK(sd_sampler_params_check(&sp));
    if (c->n_stop_strings > 0 && c->stop_strings == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG, "config stop_strings is NULL with n_stop_strings = %zu",
                            c->n_stop_strings);
    for (size_t i = 0; i < c->n_stop_strings; i++)
        if (c->stop_strings[i] == NULL || c->stop_strings[i][0] == '\0')
            return sd_set_error(SD_ERR_INVALID_ARG, "config stop_strings[%zu] is %s", i,
                                c->stop_strings[i] == NULL ? "NULL" : "empty");
    if (c->n_stop_strings > 0 && m->tokenizer == NULL)
        return sd_set_error(SD_ERR_NO_TOKENIZER,
                            "config has %zu stop strings but the model has no tokenizer",
                            c->n_stop_strings);
    if (c->n_stop_tokens > 0 && c->stop_tokens == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG, "config stop_tokens is NULL with n_stop_tokens = %zu",
                            c->n_stop_tokens);
    for (size_t i = 0; i < c->n_stop_tokens; i++)
        if (c->stop_tokens[i] < 0 || c->stop_tokens[i] >= m->hp.n_vocab)
            return sd_set_error(SD_ERR_INVALID_ARG,
                                "config stop_tokens[%zu] = %d outside the vocabulary [0, %d)", i,
                                (int)c->stop_tokens[i], m->hp.n_vocab);
    return SD_OK;
}

static sd_status_t check_prompt(const sd_model_t *m, const int32_t *prompt, size_t n_prompt)
{
    if (n_prompt == 0 || prompt == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG, "prompt is empty (n_prompt = %zu%s)", n_prompt,
                            prompt == NULL ? ", prompt NULL" : "");
    if (n_prompt > (size_t)m->n_ctx - 1)
        return sd_set_error(SD_ERR_CONTEXT_FULL,
                            "prompt of %zu tokens leaves no room to generate in a context of %d",
                            n_prompt, m->n_ctx);
    for (size_t i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= m->hp.n_vocab)
            return sd_set_error(SD_ERR_INVALID_ARG, "prompt[%zu] = %d outside the vocabulary [0, %d)",
                                i, (int)prompt[i], m->hp.n_vocab);
    return SD_OK;
}

/* ---- agreement between ranks -------------------------------------------------------- */

/* The request as a hash: prompt, sampler settings, seed, stops and the spec. */
static uint64_t request_hash(const int32_t *prompt, size_t n_prompt, const sd_gen_config_t *c,
                             const sd_spec_config_t *s)
{
    uint64_t h = sd_fnv1a64(SD_FNV64_INIT, &n_prompt, sizeof n_prompt);
    h = sd_fnv1a64(h, prompt, n_prompt * sizeof *prompt);
    int32_t ints[] = {c->max_tokens, c->top_k, c->ignore_eos, (int32_t)c->n_stop_strings,
                      (int32_t)c->n_stop_tokens, (int32_t)s->drafter, s->k, s->adaptive};
    int32_t words[SD_DRAFTER_HASH_WORDS];
    float floats[] = {c->temperature, c->top_p, c->min_p, s->min_confidence};
    h = sd_fnv1a64(h, ints, sizeof ints);
    h = sd_fnv1a64(h, words, (size_t)sd_spec_hash_words(s, words) * sizeof *words);
    h = sd_fnv1a64(h, floats, sizeof floats);
    h = sd_fnv1a64(h, &c->seed, sizeof c->seed);
    for (size_t i = 0; i < c->n_stop_strings; i++)
        h = sd_fnv1a64(h, c->stop_strings[i], strlen(c->stop_strings[i]) + 1);
    return sd_fnv1a64(h, c->stop_tokens, c->n_stop_tokens * sizeof *c->stop_tokens);
}

/* Under TP, before any collective of the request: every rank learns whether any rank
 * refused it (the first refusal's status and message on all), and ranks given different
 * requests (prompt, settings, seed) get SD_ERR_RANK_DIVERGENCE instead of mismatched
 * collectives. A request that validated locally is hashed only then. */
static sd_status_t agree_on_request(sd_comm_t *comm, sd_status_t local, const int32_t *prompt,
                                    size_t n_prompt, const sd_gen_config_t *c,
                                    const sd_spec_config_t *s)
{
    int size = sd_comm_size(comm);
    if (size == 1) return local;
    SD_CHECK(sd_comm_agree(comm, local));
    uint64_t h = request_hash(prompt, n_prompt, c, s);
    uint64_t *all = malloc((size_t)size * sizeof *all);
    SD_ALLOC_CHECK(all, (size_t)size * sizeof *all, "request hashes");
    sd_status_t st = sd_comm_allgather(comm, &h, sizeof h, all);
    for (int r = 1; st == SD_OK && r < size; r++)
        if (all[r] != all[0])
            st = sd_set_error(SD_ERR_RANK_DIVERGENCE,
                              "rank %d was given a different request than rank 0 (prompt, "
                              "settings or seed; this rank: %zu prompt tokens, seed %llu)", r,
                              n_prompt, (unsigned long long)c->seed);
    free(all);
    return st;
}

/* ---- state ------------------------------------------------------------------------- */

/* SPECDEC_CHECK_CONSISTENCY: "0" turns the per-step rank agreement check off; anything
 * else (or unset) keeps it on. It costs one 8-byte allgather per step. */
static int consistency_check_enabled(void)
{
    const char *v = getenv("SPECDEC_CHECK_CONSISTENCY");
    return v == NULL || strcmp(v, "0") != 0;
}

/* Drafter, draft length and buffers for spec (NULL or drafter NONE: none). */
static sd_status_t spec_init(gen_t *g, sd_model_t *m, const sd_spec_config_t *spec)
{
    const sd_gen_options_t *o = g->opts;
    if (o != NULL && o->drafter != NULL) {
        g->drafter = o->drafter;
    } else {
        SD_CHECK(sd_spec_make_drafter(m, spec, &g->owned_drafter));
        g->drafter = g->owned_drafter;
    }
    int k_max = g->drafter != NULL ? spec->k : 0;
    g->drafting = g->drafter != NULL;
    sd_spec_k_init(&g->kc, k_max, g->drafter != NULL && spec->adaptive);
    g->min_confidence = g->kc.adaptive ? spec->min_confidence : 0.0f;
    g->batch = malloc((size_t)(k_max + 1) * sizeof *g->batch);
    SD_ALLOC_CHECK(g->batch, (size_t)(k_max + 1) * sizeof *g->batch, "verify batch");
    if (g->drafter != NULL && g->sp.temperature > 0.0f) {
        size_t bytes = (size_t)k_max * (size_t)g->n_vocab * sizeof *g->q;
        g->q = malloc(bytes);
        SD_ALLOC_CHECK(g->q, bytes, "draft distributions");
    }
    return SD_OK;
}

static sd_status_t gen_init(gen_t *g, sd_model_t *m, const sd_gen_config_t *c,
                            const sd_spec_config_t *spec, const int32_t *prompt, size_t n_prompt)
{
    g->model = m;
    g->cfg = c;
    g->sp = (sd_sampler_params_t){c->temperature, c->top_k, c->top_p, c->min_p};
    g->n_vocab = m->hp.n_vocab;
    g->prompt = prompt;
    g->n_prompt = n_prompt;
    g->comm = sd_comm_size(m->comm) > 1 ? m->comm : NULL;
    g->check_consistency = g->comm != NULL && consistency_check_enabled();
    SD_CHECK(spec_init(g, m, spec));
    g->n_ctx = (int)sd_gen_kv_positions_for(m, n_prompt, c) + 1; /* prompt + generated */
    int chunk = n_prompt - 1 < SD_PREFILL_CHUNK ? (int)n_prompt - 1 : SD_PREFILL_CHUNK;
    int rows = chunk > g->kc.k_max + 1 ? chunk : g->kc.k_max + 1;
    SD_CHECK(sd_seq_init(&g->seq, m, g->n_ctx - 1, rows));
    g->seq_ready = 1;
    SD_CHECK(sd_verifier_init(&g->ver, m, &g->seq, g->kc.k_max, g->q != NULL, g->batched));
    g->ver_ready = 1;
    size_t max_gen = (size_t)(g->n_ctx) - n_prompt;
    g->cap_tokens = max_gen < 256 ? max_gen : 256;
    g->tokens = malloc(g->cap_tokens * sizeof *g->tokens);
    SD_ALLOC_CHECK(g->tokens, g->cap_tokens * sizeof *g->tokens, "generated tokens");
    g->text_cap = 256;
    g->text = malloc(g->text_cap);
    SD_ALLOC_CHECK(g->text, g->text_cap, "generated text");
    g->text[0] = '\0';
    if (m->tokenizer != NULL)
        SD_CHECK(sd_text_stream_new(m, &g->stream));
    return SD_OK;
}

static void gen_release(gen_t *g)
{
    if (g->seq_ready)
        sd_seq_free(&g->seq);
    if (g->ver_ready)
        sd_verifier_free(&g->ver);
    sd_text_stream_free(g->stream);
    sd_drafter_free(g->owned_drafter);
    free(g->batch);
    free(g->q);
    free(g->tokens);
    free(g->text);
}

static sd_status_t push_token(gen_t *g, int32_t token)
{
    if (g->n_tokens == g->cap_tokens) {
        size_t cap = g->cap_tokens * 2;
        int32_t *grown = realloc(g->tokens, cap * sizeof *grown);
        SD_ALLOC_CHECK(grown, cap * sizeof *grown, "generated tokens");
        g->tokens = grown;
        g->cap_tokens = cap;
    }
    g->tokens[g->n_tokens++] = token;
    return SD_OK;
}

/* Append bytes to the text, keeping it NUL-terminated. */
static sd_status_t append_text(gen_t *g, const char *bytes, size_t n)
{
    if (g->text_len + n + 1 > g->text_cap) {
        size_t cap = g->text_cap * 2;
        while (cap < g->text_len + n + 1)
            cap *= 2;
        char *grown = realloc(g->text, cap);
        SD_ALLOC_CHECK(grown, cap, "generated text");
        g->text = grown;
        g->text_cap = cap;
    }
    memcpy(g->text + g->text_len, bytes, n);
    g->text_len += n;
    g->text[g->text_len] = '\0';
    return SD_OK;
}

/* ---- text and stops ---------------------------------------------------------------- */

/* Truncate the text at the first stop-string match in its unreleased part (no earlier
 * match is possible: released text was never the start of a stop string). */
static void match_stop(gen_t *g)
{
    const sd_gen_config_t *c = g->cfg;
    size_t at = sd_stop_find(c->stop_strings, c->n_stop_strings, g->text, g->released,
                             g->text_len);
    if (at == SIZE_MAX)
        return;
    g->text_len = at;
    g->text[at] = '\0';
    g->matched = 1;
}

/* Decode a kept token into the text and find a stop-string match it completes. */
static sd_status_t add_token_text(gen_t *g, int32_t token)
{
    if (g->stream == NULL)
        return SD_OK;
    const char *piece;
    size_t len;
    SD_CHECK(sd_text_stream_next(g->stream, token, &piece, &len));
    SD_CHECK(append_text(g, piece, len));
    match_stop(g);
    return SD_OK;
}

/* Generation ends: bytes the stream still holds join the text (raw), which may complete
 * a stop string. */
static sd_status_t flush_text(gen_t *g)
{
    if (g->stream == NULL || g->matched)
        return SD_OK;
    const char *rest;
    size_t len;
    sd_text_stream_take_rest(g->stream, &rest, &len);
    SD_CHECK(append_text(g, rest, len));
    match_stop(g);
    return SD_OK;
}

/* Release text up to `upto` to the callback with `token`; the callback's answer. */
static int release(gen_t *g, int32_t token, size_t upto)
{
    size_t from = g->released;
    g->released = upto;
    if (g->callback == NULL)
        return 0;
    return g->callback(g->user, token, g->text + from, upto - from);
}

/* Everything that can no longer be part of a stop string. */
static size_t releasable(const gen_t *g)
{
    if (g->matched)
        return g->text_len;
    const sd_gen_config_t *c = g->cfg;
    return sd_stop_hold(c->stop_strings, c->n_stop_strings, g->text, g->released, g->text_len);
}

static int is_stop_token(const gen_t *g, int32_t token)
{
    for (size_t i = 0; i < g->cfg->n_stop_tokens; i++)
        if (g->cfg->stop_tokens[i] == token)
            return 1;
    return 0;
}

/* ---- the loop ---------------------------------------------------------------------- */

/* The prompt is prefilled (prompt[0 .. n_prompt-1): the last prompt token is fed by the first
 * step, like every step feeds the token the previous one ended with): begin the drafter. */
static sd_status_t begin_decoding(gen_t *g)
{
    if (g->drafter != NULL) {
        SD_CHECK(sd_drafter_begin(g->drafter, g->prompt, (int)g->n_prompt));
        g->draft_forwards0 = sd_drafter_forwards(g->drafter);
    }
    g->decoding = 1;
    g->t_decode = now_seconds();
    return SD_OK;
}

/* Emit one token: returns 1 in *stop when generation ends with it (g->reason set). */
static sd_status_t emit(gen_t *g, int32_t token, int *stop)
{
    *stop = 1;
    if (!g->cfg->ignore_eos && g->model->tokenizer != NULL &&
        sd_tokenizer_is_eog(g->model->tokenizer, token)) {
        g->reason = SD_STOP_EOS;
        return SD_OK;
    }
    if (is_stop_token(g, token)) {
        g->reason = SD_STOP_TOKEN;
        return SD_OK;
    }
    SD_CHECK(push_token(g, token));
    SD_CHECK(add_token_text(g, token));
    int last = g->n_tokens == (size_t)g->cfg->max_tokens ||
               g->n_prompt + g->n_tokens >= (size_t)g->n_ctx;
    if (last)
        SD_CHECK(flush_text(g));
    int answer = release(g, token, last ? g->text_len : releasable(g));
    if (g->matched)
        g->reason = SD_STOP_STRING;
    else if (answer != 0)
        g->reason = SD_STOP_CALLBACK;
    else if (last)
        g->reason = SD_STOP_MAX_TOKENS;
    else
        *stop = 0;
    return SD_OK;
}

/* The draft length to ask the drafter for: the controller's k, or for a drafter that
 * proposes cheaply under adaptive k the longest (its proposal is cut to its evidence
 * class's k once it is known: cut_to_class). */
static long draft_request_len(gen_t *g)
{
    if (g->kc.adaptive && sd_drafter_proposes_cheaply(g->drafter))
        return g->kc.k_max;
    return sd_spec_k_next(&g->kc);
}

/* A cheap drafter's proposal o cut to the k its evidence class earns (0: a plain decode). */
static void cut_to_class(gen_t *g, sd_draft_out_t *o)
{
    if (o->n < 1 || !g->kc.adaptive || !sd_drafter_proposes_cheaply(g->drafter))
        return;
    int k = sd_spec_k_next_for(&g->kc, o->evidence);
    o->n = o->n < k ? o->n : k;
}

/* In a loaded batch (g->row_cost > 0) the k the class's estimate earns at that cost, for a
 * draft whose length does not decide the tokens (greedy, or deterministic proposals);
 * else no limit (engine/speculative.h, sd_spec_batch_row_cost). */
static int load_cap(const gen_t *g, int evidence, int has_q)
{
    if (g->row_cost <= 0.0 || (g->sp.temperature > 0.0f && has_q))
        return SD_SPEC_MAX_K;
    return sd_spec_k_at_cost(&g->kc, evidence, g->row_cost);
}

/* The draft length this step asks the drafter for (0: no drafting): the controller's, cut
 * to max_rows - 1, max_tokens and the context (a step emits at most k + 1 tokens and its
 * forward fills cache positions up to len + k - 1) and, for a drafter that works per
 * token, to what the load pays for. */
static long draft_len(gen_t *g, size_t len, int max_rows)
{
    if (!g->drafting)
        return 0;
    long room_tokens = (long)g->cfg->max_tokens - (long)g->n_tokens - 1;
    long room_ctx = (long)g->n_ctx - (long)len - 1;
    long k = draft_request_len(g);
    if (!sd_drafter_proposes_cheaply(g->drafter)) {
        long cap = load_cap(g, 0, g->sp.temperature > 0.0f); /* before the drafter works */
        k = k < cap ? k : cap;
    }
    k = k < max_rows - 1 ? k : max_rows - 1;
    k = k < room_tokens ? k : room_tokens;
    k = k < room_ctx ? k : room_ctx;
    return k < 1 ? 0 : k;
}

/* The proposal o (status st) of k asked tokens becomes the step's draft: a drafter out of
 * context stops drafting (the rest is target-only); the proposal is checked, then cut to
 * its evidence class's k and the load cap. */
static sd_status_t draft_conclude(gen_t *g, sd_status_t st, size_t len, long k,
                                  const sd_draft_out_t *o, int *n, int *has_q, int *evidence)
{
    *n = 0;
    *has_q = 0;
    *evidence = 0;
    if (st == SD_ERR_CONTEXT_FULL) {
        sd_log(SD_LOG_WARN, "drafter %s out of context at %zu tokens (%s); continuing without "
                            "drafts", sd_drafter_name(g->drafter), len, sd_last_error());
        sd_clear_error();
        g->drafting = 0;
        return SD_OK;
    }
    SD_CHECK(st);
    if (o->n < 0 || o->n > k || (o->has_q && g->q == NULL))
        return sd_set_error(SD_ERR_INTERNAL, "drafter %s proposed %d tokens (asked <= %ld)%s",
                            sd_drafter_name(g->drafter), o->n, k,
                            o->has_q && g->q == NULL ? " with distributions while greedy" : "");
    sd_draft_out_t cut = *o;
    cut_to_class(g, &cut);
    int cap = load_cap(g, cut.evidence, cut.has_q);
    *n = cut.n < cap ? cut.n : cap;
    *has_q = cut.has_q;
    *evidence = cut.evidence;
    return SD_OK;
}

/* The step's drafter request for k tokens at position len, into batch[1 ..] and q. */
static void draft_request(gen_t *g, size_t len, long k, sd_draft_request_t *req,
                          sd_draft_out_t *o)
{
    *req = (sd_draft_request_t){(int)k, &g->sp, g->cfg->seed, (int64_t)len, g->min_confidence};
    *o = (sd_draft_out_t){.tokens = g->batch + 1, .q = g->q, .n_vocab = g->n_vocab};
}

/* Propose the step's drafts into batch[1 .. 1 + *n) for positions len ..; *has_q when q
 * holds their distributions; *evidence is the proposal's evidence class (0 when nothing
 * was proposed or the drafter reports none). */
static sd_status_t draft(gen_t *g, size_t len, int max_rows, int *n, int *has_q, int *evidence)
{
    long k = draft_len(g, len, max_rows);
    *n = *has_q = *evidence = 0;
    if (k == 0)
        return SD_OK;
    sd_draft_request_t req;
    sd_draft_out_t o;
    draft_request(g, len, k, &req, &o);
    sd_status_t st = sd_drafter_propose(g->drafter, &req, &o);
    return draft_conclude(g, st, len, k, &o, n, has_q, evidence);
}

/* Emit the verified block d[0..a) + next; *stop when a token of it ended generation
 * (the rest of the block is dropped). */
static sd_status_t emit_block(gen_t *g, const sd_spec_result_t *r, int *stop)
{
    for (int i = 0; i < r->n_accepted; i++) {
        SD_CHECK(emit(g, g->batch[1 + i], stop));
        if (*stop)
            return SD_OK;
    }
    return emit(g, r->next_token, stop);
}

static sd_status_t call_hook(gen_t *g, int n, const sd_spec_result_t *r)
{
    if (g->opts == NULL || g->opts->hook == NULL)
        return SD_OK;
    sd_spec_step_view_t v = {&g->seq, g->drafting ? g->drafter : NULL, g->prompt, g->n_prompt,
                             g->tokens, g->n_tokens, n, r->n_accepted, r->next_token, g->kc.k};
    return g->opts->hook(g->opts->hook_user, &v);
}

/* Under TP every rank must accept the same tokens: compare a hash of this step's
 * outcome (position, drafts accepted, their tokens, the next token) across the ranks
 * (one 8-byte allgather). A disagreement is SD_ERR_RANK_DIVERGENCE naming the step on
 * every rank, instead of mismatched collectives later. */
static sd_status_t check_ranks_agree(gen_t *g, size_t len, const sd_spec_result_t *r)
{
    if (!g->check_consistency)
        return SD_OK;
    uint64_t w[3] = {len, (uint64_t)r->n_accepted, (uint64_t)(uint32_t)r->next_token};
    uint64_t h = sd_fnv1a64(SD_FNV64_INIT, w, sizeof w);
    for (int i = 0; i < r->n_accepted; i++) {
        uint64_t t = (uint64_t)(uint32_t)g->batch[1 + i];
        h = sd_fnv1a64(h, &t, sizeof t);
    }
    int size = sd_comm_size(g->comm);
    uint64_t *all = malloc((size_t)size * sizeof *all);
    SD_ALLOC_CHECK(all, (size_t)size * sizeof *all, "consistency hashes");
    sd_status_t st = sd_comm_allgather(g->comm, &h, sizeof h, all);
    int bad = -1;
    for (int rk = 1; st == SD_OK && rk < size && bad < 0; rk++)
        if (all[rk] != all[0]) bad = rk;
    if (bad >= 0)
        st = sd_set_error(SD_ERR_RANK_DIVERGENCE,
                          "ranks disagree on the tokens of step %llu (position %zu): rank 0 "
                          "hash %016llx, rank %d hash %016llx",
                          (unsigned long long)g->n_steps, len, (unsigned long long)all[0], bad,
                          (unsigned long long)all[bad]);
    free(all);
    return st;
}

/* Plan a step: the drafter proposes; the forward is [last token, drafts]. */
static sd_status_t step_plan(gen_t *g, int max_rows, sd_gen_plan_t *p)
{
    size_t len = g->n_prompt + g->n_tokens;
    g->batch[0] = g->n_tokens ? g->tokens[g->n_tokens - 1] : g->prompt[g->n_prompt - 1];
    double t0 = now_seconds();
    if (g->draft_ready) /* proposed in rounds */
        g->draft_ready = 0;
    else
        SD_CHECK(draft(g, len, max_rows, &g->plan_n, &g->plan_has_q, &g->plan_evidence));
    g->t_plan = now_seconds();
    g->stats.draft_seconds += g->t_plan - t0;
    g->plan_len = len;
    *p = (sd_gen_plan_t){&g->seq, g->batch, g->plan_n + 1, 1};
    return SD_OK;
}

/* After the step's forward: verify, emit, roll back, commit to the drafter. */
static sd_status_t step_advance(gen_t *g, int *stop)
{
    size_t len = g->plan_len;
    int n = g->plan_n, evidence = g->plan_evidence;
    sd_spec_result_t r;
    SD_CHECK(sd_verifier_run(&g->ver, &g->seq, &g->sp, g->cfg->seed, (uint64_t)len, g->batch + 1,
                             g->plan_has_q ? g->q : NULL, n, &r));
    g->stats.verify_seconds += now_seconds() - g->t_plan; /* the forward and the check */
    g->n_steps++;
    if (sd_comm_fault_corrupt_step(g->comm, g->n_steps))
        r.next_token = (r.next_token + 1) % g->n_vocab; /* test-only: SPECDEC_FAULT corrupt */
    SD_CHECK(check_ranks_agree(g, len, &r));
    sd_gen_stats_step(&g->stats, n, r.n_accepted);
    sd_spec_k_update_for(&g->kc, evidence, n, r.n_accepted);
    SD_CHECK(emit_block(g, &r, stop));
    if (*stop)
        return SD_OK;
    SD_CHECK(sd_kv_cache_truncate(&g->seq.kv, (int)len + r.n_accepted));
    if (g->drafting) {
        double t3 = now_seconds();
        SD_CHECK(sd_drafter_accept(g->drafter, r.n_accepted, r.next_token));
        g->stats.draft_seconds += now_seconds() - t3;
    }
    return call_hook(g, n, &r);
}

/* Held text after an EOS, stop token or callback stop goes out with token -1. */
static sd_status_t finish_text(gen_t *g)
{
    SD_CHECK(flush_text(g));
    if (g->text_len > g->released)
        (void)release(g, -1, g->text_len);
    if (g->matched)
        g->reason = SD_STOP_STRING;
    return SD_OK;
}

/* Generation ended (SD_OK): held text, timings, statistics. */
static sd_status_t finish_run(gen_t *g, sd_gen_result_t *out)
{
    if (g->reason != SD_STOP_STRING && g->reason != SD_STOP_MAX_TOKENS)
        SD_CHECK(finish_text(g));
    double t_end = now_seconds();
    out->prefill_seconds = g->t_decode - g->t_start;
    out->decode_seconds = t_end - g->t_decode;
    sd_gen_stats_t *s = &g->stats;
    s->draft_forwards = sd_drafter_forwards(g->drafter) - g->draft_forwards0;
    s->other_seconds = out->decode_seconds - s->draft_seconds - s->verify_seconds;
    if (s->other_seconds < 0.0)
        s->other_seconds = 0.0;
    sd_gen_stats_finish(s, g->n_tokens);
    return SD_OK;
}

static void hand_over(gen_t *g, sd_gen_result_t *out)
{
    out->tokens = g->tokens;
    out->n_tokens = g->n_tokens;
    out->text = g->text;
    out->text_len = g->text_len;
    out->stop_reason = g->reason;
    out->n_prompt = g->n_prompt;
    out->stats = g->stats;
    g->tokens = NULL;
    g->text = NULL;
}

/* ---- driving (engine/gen.h) ------------------------------------------------------- */

sd_status_t sd_gen_check(const char *caller, const sd_model_t *model, const int32_t *prompt,
                         size_t n_prompt, const sd_gen_config_t *config,
                         const sd_spec_config_t *spec, int drafter_given)
{
    if (model == NULL || config == NULL || spec == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG, "%s: %s is NULL", caller,
                            model == NULL ? "model" : config == NULL ? "config" : "spec");
    SD_CHECK(check_config(model, config));
    SD_CHECK(check_prompt(model, prompt, n_prompt));
    return sd_spec_check(spec, drafter_given);
}

sd_status_t sd_gen_new(sd_model_t *model, const int32_t *prompt, size_t n_prompt,
                       const sd_gen_config_t *config, const sd_spec_config_t *spec,
                       const sd_gen_options_t *opts, sd_token_callback callback, void *user,
                       int batched, sd_gen_t **out)
{
    *out = NULL;
    sd_spec_config_t none;
    if (spec == NULL) {
        sd_spec_config_default(&none);
        spec = &none;
    }
    sd_status_t st = sd_gen_check("sd_generate", model, prompt, n_prompt, config, spec,
                                  opts != NULL && opts->drafter != NULL);
    if (model == NULL || config == NULL) return st;
    SD_CHECK(agree_on_request(model->comm, st, prompt, n_prompt, config, spec));
    gen_t *g = calloc(1, sizeof *g);
    SD_ALLOC_CHECK(g, sizeof *g, "generation state");
    *g = (gen_t){.callback = callback, .user = user, .opts = opts, .batched = batched};
    st = gen_init(g, model, config, spec, prompt, n_prompt);
    st = sd_comm_agree(g->comm, st); /* e.g. one rank out of memory */
    if (st != SD_OK) {
        gen_release(g);
        free(g);
        return st;
    }
    *out = g;
    return SD_OK;
}

sd_status_t sd_gen_plan(sd_gen_t *g, int max_rows, double row_cost, sd_gen_plan_t *plan)
{
    if (max_rows < 1)
        return sd_set_error(SD_ERR_INVALID_ARG, "sd_gen_plan: max_rows = %d", max_rows);
    if (g->t_start == 0.0) g->t_start = now_seconds();
    size_t left = g->n_prompt - 1 - g->prefilled;
    if (!g->decoding && left == 0) SD_CHECK(begin_decoding(g));
    if (g->decoding) {
        g->planned = 2;
        g->row_cost = row_cost;
        return step_plan(g, max_rows, plan);
    }
    /* sd_forward computes in the sequence's own scratch; a batch in its own */
    size_t cap = g->batched ? (size_t)max_rows : (size_t)g->seq.max_tokens;
    cap = cap < (size_t)max_rows ? cap : (size_t)max_rows;
    g->plan_n = (int)(left < cap ? left : cap);
    g->planned = 1;
    *plan = (sd_gen_plan_t){&g->seq, g->prompt + g->prefilled, g->plan_n, 0};
    return SD_OK;
}

sd_status_t sd_gen_advance(sd_gen_t *g, int *done)
{
    *done = 0;
    int planned = g->planned;
    g->planned = 0;
    if (planned == 1) {
        g->prefilled += (size_t)g->plan_n;
        return SD_OK;
    }
    if (planned != 2)
        return sd_set_error(SD_ERR_INTERNAL, "sd_gen_advance without a planned forward");
    return step_advance(g, done);
}

/* ---- drafting in rounds ------------------------------------------------------------- */

int sd_gen_drafts_in_rounds(const sd_gen_t *g)
{
    return !sd_gen_prefilling(g) && g->drafting && !g->draft_ready &&
           sd_drafter_has_rounds(g->drafter);
}

/* The rounds ended (status st): the proposal becomes the step's draft. */
static sd_status_t draft_rounds_end(gen_t *g, sd_status_t st, sd_draft_forward_t *fwd)
{
    fwd->n = 0;
    size_t len = g->n_prompt + g->n_tokens;
    st = draft_conclude(g, st, len, g->draft_k, &g->dout, &g->plan_n, &g->plan_has_q,
                        &g->plan_evidence);
    g->draft_ready = st == SD_OK;
    g->stats.draft_seconds += now_seconds() - g->t_draft;
    return st;
}

sd_status_t sd_gen_draft_begin(sd_gen_t *g, int max_rows, double row_cost,
                               sd_draft_forward_t *fwd)
{
    fwd->n = 0;
    if (!g->decoding) SD_CHECK(begin_decoding(g));
    g->t_draft = now_seconds();
    g->row_cost = row_cost;
    size_t len = g->n_prompt + g->n_tokens;
    g->draft_k = draft_len(g, len, max_rows);
    g->dout = (sd_draft_out_t){0};
    if (g->draft_k == 0) return draft_rounds_end(g, SD_OK, fwd);
    draft_request(g, len, g->draft_k, &g->dreq, &g->dout);
    sd_status_t st = sd_drafter_propose_begin(g->drafter, &g->dreq, &g->dout, fwd);
    return st != SD_OK || fwd->n == 0 ? draft_rounds_end(g, st, fwd) : SD_OK;
}

sd_status_t sd_gen_draft_resume(sd_gen_t *g, sd_draft_forward_t *fwd)
{
    sd_status_t st = sd_drafter_propose_resume(g->drafter, fwd);
    return st != SD_OK || fwd->n == 0 ? draft_rounds_end(g, st, fwd) : SD_OK;
}

size_t sd_gen_n_tokens(const sd_gen_t *g) { return g->n_tokens; }

int sd_gen_prefilling(const sd_gen_t *g) { return !g->decoding && g->prefilled + 1 < g->n_prompt; }

int sd_gen_max_step_rows(const sd_gen_t *g) { return g->kc.k_max + 1; }

const sd_gen_stats_t *sd_gen_stats(const sd_gen_t *g) { return &g->stats; }

size_t sd_gen_kv_positions_for(const sd_model_t *m, size_t n_prompt, const sd_gen_config_t *c)
{
    size_t want = n_prompt + (size_t)c->max_tokens;
    return (want < (size_t)m->n_ctx ? want : (size_t)m->n_ctx) - 1;
}

size_t sd_gen_kv_bytes(const sd_gen_t *g)
{
    return sd_kv_cache_bytes(&g->seq.kv);
}

void sd_gen_cancel(sd_gen_t *g) { g->cancelled = 1; }

sd_status_t sd_gen_finish(sd_gen_t *g, sd_status_t st, sd_gen_result_t *out)
{
    memset(out, 0, sizeof *out);
    if (st == SD_OK) st = finish_run(g, out);
    if (st != SD_OK) {
        /* Generation had started: keep what was produced (text held back for a possible
         * stop string included), timings aside. */
        memset(out, 0, sizeof *out);
        g->reason = g->cancelled ? SD_STOP_CANCELLED : SD_STOP_ERROR;
        sd_gen_stats_finish(&g->stats, g->n_tokens);
    }
    hand_over(g, out);
    gen_release(g);
    free(g);
    return st;
}

sd_status_t sd_generate_ex(sd_model_t *model, const int32_t *prompt, size_t n_prompt,
                           const sd_gen_config_t *config, const sd_spec_config_t *spec,
                           const sd_gen_options_t *opts, sd_token_callback callback, void *user,
                           sd_gen_result_t *out)
{
    if (out == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG, "sd_generate: out is NULL");
    memset(out, 0, sizeof *out);
    sd_gen_t *g = NULL;
    SD_CHECK(sd_gen_new(model, prompt, n_prompt, config, spec, opts, callback, user, 0, &g));
    sd_status_t st = SD_OK;
    for (int done = 0; st == SD_OK && !done;) {
        sd_gen_plan_t p;
        st = sd_gen_plan(g, INT_MAX, 0.0, &p); /* alone: the sequence's own limits apply */
        if (st == SD_OK) st = sd_forward(p.seq, p.tokens, p.n, 0);
        if (st == SD_OK) st = sd_gen_advance(g, &done);
    }
    return sd_gen_finish(g, st, out);
}

sd_status_t sd_generate_speculative(sd_model_t *model, const int32_t *prompt, size_t n_prompt,
                                    const sd_gen_config_t *config, const sd_spec_config_t *spec,
                                    sd_token_callback callback, void *user, sd_gen_result_t *out)
{
    return sd_generate_ex(model, prompt, n_prompt, config, spec, NULL, callback, user, out);
}

sd_status_t sd_generate(sd_model_t *model, const int32_t *prompt, size_t n_prompt,
                        const sd_gen_config_t *config, sd_token_callback callback, void *user,
                        sd_gen_result_t *out)
{
    return sd_generate_ex(model, prompt, n_prompt, config, NULL, NULL, callback, user, out);
}
