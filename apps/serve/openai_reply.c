/* OpenAI response bodies, stream chunks and error bodies (see openai.h). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/unicode.h"
#include "openai.h"

void oai_error_from_status(sd_status_t s, const char *detail, oai_error_t *e)
{
    const char *name = sd_status_string(s);
    switch (s) {
    case SD_ERR_BUSY:
        oai_error_set(e, 429, "requests", NULL, "rate_limit_exceeded",
                      "the server is at its request limit, try again later (%s: %s)", name,
                      detail);
        return;
    case SD_ERR_CONTEXT_FULL:
        oai_error_set(e, 400, "invalid_request_error", NULL, "context_length_exceeded", "%s: %s",
                      name, detail);
        return;
    case SD_ERR_INVALID_ARG:
    case SD_ERR_BATCH_TOO_LARGE:
    case SD_ERR_NO_TOKENIZER:
        oai_error_set(e, 400, "invalid_request_error", NULL, NULL, "%s: %s", name, detail);
        return;
    default:
        oai_error_set(e, 500, "server_error", NULL, NULL, "%s: %s", name, detail);
    }
}

/* ---- responses -------------------------------------------------------------------------- */

const char *oai_stop_reason_name(sd_stop_reason_t reason)
{
    static const char *const names[] = {
        [SD_STOP_NONE] = "none",       [SD_STOP_MAX_TOKENS] = "length",
        [SD_STOP_EOS] = "eos",         [SD_STOP_TOKEN] = "stop_token",
        [SD_STOP_STRING] = "stop",     [SD_STOP_CALLBACK] = "callback",
        [SD_STOP_ERROR] = "error",     [SD_STOP_CANCELLED] = "cancelled",
        [SD_STOP_CONTEXT_FULL] = "context_full",
    };
    return (unsigned)reason < sizeof names / sizeof names[0] ? names[reason] : "none";
}

static const char *finish_reason(sd_stop_reason_t reason)
{
    return reason == SD_STOP_MAX_TOKENS || reason == SD_STOP_CONTEXT_FULL ? "length" : "stop";
}

/* Attach item to parent under name (arrays: name NULL); on any failure *ok = 0. */
static cJSON *add(cJSON *parent, const char *name, cJSON *item, int *ok)
{
    int added = item && parent &&
                (name ? cJSON_AddItemToObject(parent, name, item) : cJSON_AddItemToArray(parent, item));
    if (!added) {
        cJSON_Delete(item);
        *ok = 0;
        return NULL;
    }
    return item;
}

/* A JSON string of text[len] made valid UTF-8: undecodable bytes (and NUL) become U+FFFD.
 * Every string from outside (generated text, messages, the model id and drafter name, which
 * come from file names) goes through it: JSON text must be UTF-8. */
static cJSON *utf8_string(const char *text, size_t len)
{
    char *clean = malloc(3 * len + 1), *o = clean;
    if (!clean) return NULL;
    size_t adv;
    for (size_t i = 0; i < len; i += adv) {
        uint32_t cp = sd_utf8_decode((const uint8_t *)text + i, len - i, &adv);
        int keep = cp != 0 && cp < SD_UTF8_INVALID;
        memcpy(o, keep ? text + i : "\xEF\xBF\xBD", keep ? adv : 3);
        o += keep ? adv : 3;
    }
    *o = '\0';
    cJSON *s = cJSON_CreateString(clean);
    free(clean);
    return s;
}

/* An integer as exact JSON text: cJSON prints numbers with 15 significant digits when that
 * is within a relative epsilon, which rounds integers near 2^53 (seeds) to a neighbour. */
static cJSON *exact_integer(uint64_t x)
{
    char text[24];
    snprintf(text, sizeof text, "%llu", (unsigned long long)x);
    return cJSON_CreateRaw(text);
}

static char *finish(cJSON *root, int ok)
{
    char *text = ok && root ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    return text;
}

/* {"id", "object", "created", "model"} of every response and chunk. */
static cJSON *reply_base(const oai_reply_t *r, int chunk, int *ok)
{
    static const char *const objects[2][2] = {{"chat.completion", "text_completion"},
                                              {"chat.completion.chunk", "text_completion"}};
    cJSON *root = cJSON_CreateObject();
    if (!root) *ok = 0;
    add(root, "id", cJSON_CreateString(r->id), ok);
    add(root, "object", cJSON_CreateString(objects[chunk][r->endpoint]), ok);
    add(root, "created", cJSON_CreateNumber((double)r->created), ok);
    add(root, "model", utf8_string(r->model_id, strlen(r->model_id)), ok); /* a file name */
    return root;
}

static void add_usage(cJSON *root, const sd_gen_result_t *res, int n, int *ok)
{
    size_t completion = 0;
    for (int i = 0; i < n; i++) completion += res[i].n_tokens;
    cJSON *u = add(root, "usage", cJSON_CreateObject(), ok);
    add(u, "prompt_tokens", cJSON_CreateNumber((double)res[0].n_prompt), ok);
    add(u, "completion_tokens", cJSON_CreateNumber((double)completion), ok);
    add(u, "total_tokens", cJSON_CreateNumber((double)(res[0].n_prompt + completion)), ok);
    cJSON *details = add(u, "prompt_tokens_details", cJSON_CreateObject(), ok);
    add(details, "cached_tokens", cJSON_CreateNumber((double)res[0].n_cached), ok);
}

/* The "specdec" extension: drafter, k, seed and the acceptance statistics over all choices;
 * with n > 1 also each choice's seed and stop reason. */
static void add_specdec(cJSON *root, const oai_reply_t *r, const sd_gen_result_t *res, int n,
                        int *ok)
{
    uint64_t steps = 0, drafted = 0, accepted = 0;
    for (int i = 0; i < n; i++) {
        steps += res[i].stats.steps;
        drafted += res[i].stats.drafted;
        accepted += res[i].stats.accepted;
    }
    cJSON *x = add(root, "specdec", cJSON_CreateObject(), ok);
    add(x, "drafter", r->drafter ? utf8_string(r->drafter, strlen(r->drafter)) : cJSON_CreateNull(),
        ok);
    add(x, "k", cJSON_CreateNumber(r->k), ok);
    add(x, "seed", exact_integer(r->seed), ok);
    add(x, "steps", cJSON_CreateNumber((double)steps), ok);
    add(x, "drafted", cJSON_CreateNumber((double)drafted), ok);
    add(x, "accepted", cJSON_CreateNumber((double)accepted), ok);
    add(x, "acceptance_rate", cJSON_CreateNumber(n == 1 ? res[0].stats.acceptance_rate
                                                 : drafted ? (double)accepted / drafted : 0.0), ok);
    add(x, "mean_accepted_len",
        cJSON_CreateNumber(n == 1 ? res[0].stats.mean_accepted_len
                           : steps ? (double)(accepted + steps) / steps : 0.0), ok);
    add(x, "stop_reason", cJSON_CreateString(oai_stop_reason_name(res[0].stop_reason)), ok);
    if (n == 1) return;
    cJSON *seeds = add(x, "seeds", cJSON_CreateArray(), ok);
    cJSON *reasons = add(x, "stop_reasons", cJSON_CreateArray(), ok);
    for (int i = 0; i < n; i++) {
        add(seeds, NULL, exact_integer(sd_choice_seed(r->seed, i)), ok);
        add(reasons, NULL, cJSON_CreateString(oai_stop_reason_name(res[i].stop_reason)), ok);
    }
}

/* ---- log-probabilities ------------------------------------------------------------------ */

/* A log-probability as JSON: -inf (and anything below -9999) is -9999.0, as vLLM writes it. */
static cJSON *logprob_number(float lp)
{
    return cJSON_CreateNumber(lp > -9999.0f ? (double)lp : -9999.0);
}

/* The bytes of token t (malloc'd, *len of them; "" without a model or on failure). */
static char *token_bytes(const sd_model_t *m, int32_t t, size_t *len)
{
    size_t cap = 64;
    *len = 0;
    for (int attempt = 0; m != NULL && attempt < 2; attempt++) {
        char *buf = malloc(cap + 1);
        if (!buf) return NULL;
        sd_status_t st = sd_detokenize(m, &t, 1, buf, cap, len);
        if (st == SD_OK) return buf;
        free(buf);
        if (st != SD_ERR_BUFFER_TOO_SMALL) break;
        cap = *len;
    }
    *len = 0;
    return calloc(1, 1);
}

/* A token's text as OpenAI names it: the text itself when its bytes are UTF-8 (without NUL),
 * else "bytes:" and \xHH for each byte ("bytes:\xe2\x80"), so distinct byte strings stay
 * distinct keys. */
static cJSON *token_string(const char *b, size_t len)
{
    size_t adv;
    int valid = 1;
    for (size_t i = 0; i < len && valid; i += adv) {
        uint32_t cp = sd_utf8_decode((const uint8_t *)b + i, len - i, &adv);
        valid = cp != 0 && cp < SD_UTF8_INVALID;
    }
    if (valid) return utf8_string(b, len);
    char *text = malloc(6 + 4 * len + 1);
    if (!text) return NULL;
    size_t n = (size_t)sprintf(text, "bytes:");
    for (size_t i = 0; i < len; i++) n += (size_t)sprintf(text + n, "\\x%02x", (unsigned char)b[i]);
    cJSON *str = cJSON_CreateString(text);
    free(text);
    return str;
}

/* {"token": text, "logprob": x, "bytes": [...]} of token t; with top, also its
 * "top_logprobs": [...] of n_top alternatives. */
static cJSON *chat_token(const sd_model_t *m, int32_t t, float lp, int n_top, const int32_t *top,
                         const float *top_lp, int *ok)
{
    size_t len = 0;
    char *b = token_bytes(m, t, &len);
    cJSON *o = cJSON_CreateObject();
    if (!o || !b) *ok = 0;
    add(o, "token", b ? token_string(b, len) : NULL, ok);
    add(o, "logprob", logprob_number(lp), ok);
    cJSON *bytes = add(o, "bytes", cJSON_CreateArray(), ok);
    for (size_t i = 0; b && i < len; i++)
        add(bytes, NULL, cJSON_CreateNumber((unsigned char)b[i]), ok);
    free(b);
    if (n_top < 0) return o; /* an alternative itself */
    cJSON *alts = add(o, "top_logprobs", cJSON_CreateArray(), ok);
    for (int j = 0; j < n_top; j++) add(alts, NULL, chat_token(m, top[j], top_lp[j], -1, NULL, NULL, ok), ok);
    return o;
}

/* Chat: {"content": [chat_token...], "refusal": null}. */
static cJSON *chat_logprobs(const oai_reply_t *r, const oai_logprobs_t *lp, int *ok)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) *ok = 0;
    cJSON *content = add(o, "content", cJSON_CreateArray(), ok);
    size_t k = (size_t)lp->n_top;
    for (size_t i = 0; i < lp->n; i++)
        add(content, NULL, chat_token(r->model, lp->tokens[i], lp->logprobs[i], lp->n_top,
                                      k ? lp->top_tokens + i * k : NULL,
                                      k ? lp->top_logprobs + i * k : NULL, ok), ok);
    add(o, "refusal", cJSON_CreateNull(), ok);
    return o;
}

/* 1 when s[0..n) is the start of a UTF-8 sequence that more bytes may complete. */
static int incomplete_utf8(const unsigned char *s, size_t n)
{
    size_t need = s[0] >= 0xC2 && s[0] <= 0xDF ? 2 : s[0] >= 0xE0 && s[0] <= 0xEF ? 3
                : s[0] >= 0xF0 && s[0] <= 0xF4 ? 4 : 0;
    if (need <= n) return 0;
    for (size_t i = 1; i < n; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    return 1;
}

/* The text_offset of a token of bytes b[len]: the index of the character its first byte
 * belongs to; then o moves past its bytes. */
static size_t text_offset_push(oai_text_offset_t *o, const char *b, size_t len)
{
    size_t at = o->chars, n = (size_t)o->n_pending + len;
    unsigned char *s = malloc(n ? n : 1);
    if (!s) return at;
    memcpy(s, o->pending, (size_t)o->n_pending);
    memcpy(s + o->n_pending, b, len);
    size_t i = 0, adv;
    while (i < n) {
        if (sd_utf8_decode(s + i, n - i, &adv) < SD_UTF8_INVALID) i += adv;
        else if (incomplete_utf8(s + i, n - i)) break;
        else i++;
        o->chars++;
    }
    o->n_pending = (int)(n - i);
    memcpy(o->pending, s + i, n - i);
    free(s);
    return at;
}

/* Completions: {"tokens", "token_logprobs", "top_logprobs": [{text: x}] (the n_top
 * alternatives and the chosen token), "text_offset"}. */
static cJSON *completion_logprobs(const oai_reply_t *r, const oai_logprobs_t *lp, int *ok)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) *ok = 0;
    cJSON *tokens = add(o, "tokens", cJSON_CreateArray(), ok);
    cJSON *lps = add(o, "token_logprobs", cJSON_CreateArray(), ok);
    cJSON *tops = add(o, "top_logprobs", cJSON_CreateArray(), ok);
    cJSON *offsets = add(o, "text_offset", cJSON_CreateArray(), ok);
    size_t k = (size_t)lp->n_top;
    for (size_t i = 0; i < lp->n; i++) {
        size_t len = 0;
        char *b = token_bytes(r->model, lp->tokens[i], &len);
        if (!b) *ok = 0;
        add(tokens, NULL, b ? token_string(b, len) : NULL, ok);
        add(lps, NULL, logprob_number(lp->logprobs[i]), ok);
        size_t at = lp->offset && b ? text_offset_push(lp->offset, b, len) : 0;
        add(offsets, NULL, cJSON_CreateNumber((double)at), ok);
        free(b);
        cJSON *top = add(tops, NULL, cJSON_CreateObject(), ok);
        int chosen_listed = 0;
        for (size_t j = 0; j <= k; j++) {
            int32_t t = j < k ? lp->top_tokens[i * k + j] : lp->tokens[i];
            if (j == k && chosen_listed) break;
            chosen_listed |= t == lp->tokens[i];
            char *tb = token_bytes(r->model, t, &len);
            cJSON *key = tb ? token_string(tb, len) : NULL;
            if (!key) *ok = 0;
            if (key && top) add(top, key->valuestring,
                                logprob_number(j < k ? lp->top_logprobs[i * k + j] : lp->logprobs[i]), ok);
            cJSON_Delete(key);
            free(tb);
        }
    }
    return o;
}

static cJSON *logprobs_json(const oai_reply_t *r, const oai_logprobs_t *lp, int *ok)
{
    if (!lp) return cJSON_CreateNull();
    return r->endpoint == OAI_CHAT ? chat_logprobs(r, lp, ok) : completion_logprobs(r, lp, ok);
}

/* ---- choices ------------------------------------------------------------------------------ */

/* One choice: chat {"index", "message"|"delta", "logprobs", "finish_reason"}, completions
 * {"index", "text", "logprobs", "finish_reason"}. text NULL: no content (chat's final delta
 * is {}). Chat chunks carry "logprobs" only when the request asked for them. */
static void add_choice(cJSON *choices, const oai_reply_t *r, int index, int chunk,
                       const char *text, size_t len, int role, const char *finish,
                       const oai_logprobs_t *lp, int *ok)
{
    cJSON *c = add(choices, NULL, cJSON_CreateObject(), ok);
    add(c, "index", cJSON_CreateNumber(index), ok);
    if (r->endpoint == OAI_CHAT) {
        cJSON *msg = add(c, chunk ? "delta" : "message", cJSON_CreateObject(), ok);
        if (role) add(msg, "role", cJSON_CreateString("assistant"), ok);
        if (text) add(msg, "content", utf8_string(text, len), ok);
        if (!chunk || r->logprobs) add(c, "logprobs", logprobs_json(r, lp, ok), ok);
    } else {
        add(c, "text", utf8_string(text ? text : "", text ? len : 0), ok);
        add(c, "logprobs", logprobs_json(r, lp, ok), ok);
    }
    add(c, "finish_reason", finish ? cJSON_CreateString(finish) : cJSON_CreateNull(), ok);
}

/* A result's log-probabilities (a fresh text_offset for completions into *offset). */
static oai_logprobs_t result_logprobs(const sd_gen_result_t *res, oai_text_offset_t *offset)
{
    *offset = (oai_text_offset_t){0};
    return (oai_logprobs_t){res->n_tokens, res->tokens, res->logprobs, res->n_top,
                            res->top_tokens, res->top_logprobs, offset};
}

char *oai_response_json(const oai_reply_t *r, const sd_gen_result_t *res, int n)
{
    int ok = 1;
    cJSON *root = reply_base(r, 0, &ok);
    cJSON *choices = add(root, "choices", cJSON_CreateArray(), &ok);
    for (int i = 0; i < n; i++) {
        oai_text_offset_t offset;
        oai_logprobs_t lp = result_logprobs(&res[i], &offset);
        int has_lp = r->logprobs && (res[i].logprobs != NULL || res[i].n_tokens == 0);
        add_choice(choices, r, i, 0, res[i].text ? res[i].text : "",
                   res[i].text ? res[i].text_len : 0, 1, finish_reason(res[i].stop_reason),
                   has_lp ? &lp : NULL, &ok);
    }
    add_usage(root, res, n, &ok);
    add_specdec(root, r, res, n, &ok);
    return finish(root, ok);
}

char *oai_chunk_json(const oai_reply_t *r, int index, const char *text, size_t len, int role,
                     const oai_logprobs_t *lp)
{
    int ok = 1;
    cJSON *root = reply_base(r, 1, &ok);
    cJSON *choices = add(root, "choices", cJSON_CreateArray(), &ok);
    add_choice(choices, r, index, 1, text, len, role, NULL, lp, &ok);
    return finish(root, ok);
}

char *oai_final_chunk_json(const oai_reply_t *r, int index, sd_stop_reason_t reason,
                           const oai_logprobs_t *lp)
{
    int ok = 1;
    cJSON *root = reply_base(r, 1, &ok);
    cJSON *choices = add(root, "choices", cJSON_CreateArray(), &ok);
    add_choice(choices, r, index, 1, NULL, 0, 0, finish_reason(reason), lp, &ok);
    return finish(root, ok);
}

char *oai_usage_chunk_json(const oai_reply_t *r, const sd_gen_result_t *res, int n)
{
    int ok = 1;
    cJSON *root = reply_base(r, 1, &ok);
    add(root, "choices", cJSON_CreateArray(), &ok);
    add_usage(root, res, n, &ok);
    add_specdec(root, r, res, n, &ok);
    return finish(root, ok);
}

char *oai_error_json(const oai_error_t *err)
{
    int ok = 1;
    cJSON *root = cJSON_CreateObject();
    cJSON *e = add(root, "error", cJSON_CreateObject(), &ok);
    add(e, "message", utf8_string(err->message, strlen(err->message)), &ok);
    add(e, "type", cJSON_CreateString(err->type ? err->type : "server_error"), &ok);
    add(e, "param", err->param ? cJSON_CreateString(err->param) : cJSON_CreateNull(), &ok);
    add(e, "code", err->code ? cJSON_CreateString(err->code) : cJSON_CreateNull(), &ok);
    return finish(root, ok);
}

char *oai_models_json(const char *model_id, long long created)
{
    int ok = 1;
    cJSON *root = cJSON_CreateObject();
    if (!root) ok = 0;
    add(root, "object", cJSON_CreateString("list"), &ok);
    cJSON *data = add(root, "data", cJSON_CreateArray(), &ok);
    cJSON *m = add(data, NULL, cJSON_CreateObject(), &ok);
    add(m, "id", utf8_string(model_id, strlen(model_id)), &ok);
    add(m, "object", cJSON_CreateString("model"), &ok);
    add(m, "created", cJSON_CreateNumber((double)created), &ok);
    add(m, "owned_by", cJSON_CreateString("specdec"), &ok);
    return finish(root, ok);
}

cJSON *oai_json_text(const char *text, size_t len)
{
    return utf8_string(text, len);
}
