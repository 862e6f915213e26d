/* A generation's output: tokens, text, stop strings and the callback's stream
 * (engine/gen_output.h; the stop rules are sd_generate's, docs/design-notes.md). */
#include "engine/gen_output.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "engine/generate_text.h"

/* Room for cap tokens (and their log-probabilities when asked). */
static sd_status_t grow_tokens(sd_gen_output_t *o, size_t cap)
{
    size_t k = (size_t)o->n_top;
    int32_t *t = realloc(o->tokens, cap * sizeof *t);
    SD_ALLOC_CHECK(t, cap * sizeof *t, "generated tokens");
    o->tokens = t;
    if (o->logprobs) {
        float *l = realloc(o->lps, cap * sizeof *l);
        SD_ALLOC_CHECK(l, cap * sizeof *l, "log-probabilities");
        o->lps = l;
    }
    if (k) {
        int32_t *tt = realloc(o->top_tokens, cap * k * sizeof *tt);
        SD_ALLOC_CHECK(tt, cap * k * sizeof *tt, "top log-probability tokens");
        o->top_tokens = tt;
        float *tl = realloc(o->top_lps, cap * k * sizeof *tl);
        SD_ALLOC_CHECK(tl, cap * k * sizeof *tl, "top log-probabilities");
        o->top_lps = tl;
    }
    o->cap_tokens = cap;
    return SD_OK;
}

sd_status_t sd_gen_output_init(sd_gen_output_t *o, const sd_model_t *m, const sd_gen_config_t *cfg,
                               sd_token_callback callback, void *user, size_t max_tokens)
{
    *o = (sd_gen_output_t){.cfg = cfg, .tok = m->tokenizer, .callback = callback, .user = user,
                           .logprobs = cfg->logprobs != 0};
    o->n_top = o->logprobs ? cfg->top_logprobs : 0;
    o->cap_tokens = max_tokens < 256 ? max_tokens : 256;
    SD_CHECK(grow_tokens(o, o->cap_tokens));
    o->text_cap = 256;
    o->text = malloc(o->text_cap);
    SD_ALLOC_CHECK(o->text, o->text_cap, "generated text");
    o->text[0] = '\0';
    if (m->tokenizer != NULL) SD_CHECK(sd_text_stream_new(m, &o->stream));
    return SD_OK;
}

void sd_gen_output_free(sd_gen_output_t *o)
{
    sd_text_stream_free(o->stream);
    free(o->tokens);
    free(o->text);
    free(o->lps);
    free(o->top_tokens);
    free(o->top_lps);
    o->stream = NULL;
    o->tokens = NULL;
    o->text = NULL;
    o->lps = o->top_lps = NULL;
    o->top_tokens = NULL;
}

static sd_status_t push_token(sd_gen_output_t *o, int32_t token, const sd_token_logprobs_t *lp)
{
    if (o->n_tokens == o->cap_tokens) SD_CHECK(grow_tokens(o, o->cap_tokens * 2));
    size_t i = o->n_tokens++, k = (size_t)o->n_top;
    o->tokens[i] = token;
    if (!o->logprobs) return SD_OK;
    if (lp == NULL || lp->token != token || lp->n_top != o->n_top)
        return sd_set_error(SD_ERR_INTERNAL, "token %d kept without its log-probabilities",
                            (int)token);
    o->lps[i] = lp->logprob;
    if (k) memcpy(o->top_tokens + i * k, lp->top_tokens, k * sizeof *o->top_tokens);
    if (k) memcpy(o->top_lps + i * k, lp->top_logprobs, k * sizeof *o->top_lps);
    return SD_OK;
}

/* Append bytes to the text, keeping it NUL-terminated. */
static sd_status_t append_text(sd_gen_output_t *o, const char *bytes, size_t n)
{
    if (o->text_len + n + 1 > o->text_cap) {
        size_t cap = o->text_cap * 2;
        while (cap < o->text_len + n + 1) cap *= 2;
        char *grown = realloc(o->text, cap);
        SD_ALLOC_CHECK(grown, cap, "generated text");
        o->text = grown;
        o->text_cap = cap;
    }
    memcpy(o->text + o->text_len, bytes, n);
    o->text_len += n;
    o->text[o->text_len] = '\0';
    return SD_OK;
}

/* Truncate the text at the first stop-string match in its unreleased part (no earlier
 * match is possible: released text was never the start of a stop string). */
static void match_stop(sd_gen_output_t *o)
{
    const sd_gen_config_t *c = o->cfg;
    size_t at = sd_stop_find(c->stop_strings, c->n_stop_strings, o->text, o->released,
                             o->text_len);
    if (at == SIZE_MAX) return;
    o->text_len = at;
    o->text[at] = '\0';
    o->matched = 1;
}

/* Decode a kept token into the text and find a stop-string match it completes. */
static sd_status_t add_token_text(sd_gen_output_t *o, int32_t token)
{
    if (o->stream == NULL) return SD_OK;
    const char *piece;
    size_t len;
    SD_CHECK(sd_text_stream_next(o->stream, token, &piece, &len));
    SD_CHECK(append_text(o, piece, len));
    match_stop(o);
    return SD_OK;
}

/* Generation ends: bytes the stream still holds join the text (raw), which may complete
 * a stop string. */
static sd_status_t flush_text(sd_gen_output_t *o)
{
    if (o->stream == NULL || o->matched) return SD_OK;
    const char *rest;
    size_t len;
    sd_text_stream_take_rest(o->stream, &rest, &len);
    SD_CHECK(append_text(o, rest, len));
    match_stop(o);
    return SD_OK;
}

/* Release text up to `upto` to the callback with `token`; the callback's answer. */
static int release(sd_gen_output_t *o, int32_t token, size_t upto)
{
    size_t from = o->released;
    o->released = upto;
    if (o->callback == NULL) return 0;
    return o->callback(o->user, token, o->text + from, upto - from);
}

/* Everything that can no longer be part of a stop string. */
static size_t releasable(const sd_gen_output_t *o)
{
    if (o->matched) return o->text_len;
    const sd_gen_config_t *c = o->cfg;
    return sd_stop_hold(c->stop_strings, c->n_stop_strings, o->text, o->released, o->text_len);
}

static int is_stop_token(const sd_gen_output_t *o, int32_t token)
{
    for (size_t i = 0; i < o->cfg->n_stop_tokens; i++)
        if (o->cfg->stop_tokens[i] == token) return 1;
    return 0;
}

sd_status_t sd_gen_output_emit(sd_gen_output_t *o, int32_t token, const sd_token_logprobs_t *lp,
                               sd_stop_reason_t end, int *stop)
{
    int last = end != SD_STOP_NONE;
    *stop = 1;
    if (!o->cfg->ignore_eos && o->tok != NULL && sd_tokenizer_is_eog(o->tok, token)) {
        o->reason = SD_STOP_EOS;
        return SD_OK;
    }
    if (is_stop_token(o, token)) {
        o->reason = SD_STOP_TOKEN;
        return SD_OK;
    }
    SD_CHECK(push_token(o, token, lp));
    if (o->logprobs && o->cfg->logprobs_callback) o->cfg->logprobs_callback(o->user, lp);
    SD_CHECK(add_token_text(o, token));
    if (last) SD_CHECK(flush_text(o));
    int answer = release(o, token, last ? o->text_len : releasable(o));
    if (o->matched) o->reason = SD_STOP_STRING;
    else if (answer != 0) o->reason = SD_STOP_CALLBACK;
    else if (last) o->reason = end;
    else *stop = 0;
    return SD_OK;
}

sd_status_t sd_gen_output_finish(sd_gen_output_t *o)
{
    SD_CHECK(flush_text(o));
    if (o->text_len > o->released) (void)release(o, -1, o->text_len);
    if (o->matched) o->reason = SD_STOP_STRING;
    return SD_OK;
}

void sd_gen_output_take(sd_gen_output_t *o, sd_gen_result_t *out)
{
    out->tokens = o->tokens;
    out->n_tokens = o->n_tokens;
    out->text = o->text;
    out->text_len = o->text_len;
    out->stop_reason = o->reason;
    out->logprobs = o->lps;
    out->n_top = o->n_top;
    out->top_tokens = o->top_tokens;
    out->top_logprobs = o->top_lps;
    o->tokens = NULL;
    o->text = NULL;
    o->lps = o->top_lps = NULL;
    o->top_tokens = NULL;
}

const char *sd_stop_reason_string(sd_stop_reason_t reason)
{
    static const char *const names[SD_STOP_REASON_COUNT] = {
        [SD_STOP_NONE] = "none",          [SD_STOP_MAX_TOKENS] = "max tokens",
        [SD_STOP_EOS] = "end of text",    [SD_STOP_TOKEN] = "stop token",
        [SD_STOP_STRING] = "stop string", [SD_STOP_CALLBACK] = "callback",
        [SD_STOP_ERROR] = "error",        [SD_STOP_CANCELLED] = "cancelled",
        [SD_STOP_CONTEXT_FULL] = "context full",
    };
    return (unsigned)reason < SD_STOP_REASON_COUNT && names[reason] ? names[reason] : "unknown";
}
