/* OpenAI request parsing and response building with cJSON (see openai.h and docs/serve.md).
 *
 * Parsing checks, in order: the body is a JSON object; "model" names the served model;
 * no field that would change the output unsupported here is in use (best_of, tools, ...);
 * the sampling fields, n, logprobs, stop strings and stream options have the right types
 * and ranges; the messages (chat template applied) or the prompt tokenize to a non-empty
 * prompt that, with max_tokens, fits the context. Unknown fields are ignored. */
#include "openai.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "core/unicode.h"
#include "json_text.h"

/* Seeds travel as JSON numbers (doubles): integers up to 2^53 are exact. */
#define OAI_MAX_SEED 9007199254740992.0

/* ---- errors --------------------------------------------------------------------------- */

static void error_setv(oai_error_t *e, int http_status, const char *type, const char *param,
                       const char *code, const char *fmt, va_list ap)
{
    e->http_status = http_status;
    e->type = type;
    e->param = param;
    e->code = code;
    vsnprintf(e->message, sizeof e->message, fmt, ap);
}

void oai_error_set(oai_error_t *e, int http_status, const char *type, const char *param,
                   const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    error_setv(e, http_status, type, param, code, fmt, ap);
    va_end(ap);
}

/* A 400 invalid_request_error about `param`; returns SD_ERR_INVALID_ARG. */
static sd_status_t bad_request(oai_error_t *e, const char *param, const char *code,
                               const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static sd_status_t bad_request(oai_error_t *e, const char *param, const char *code,
                               const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    error_setv(e, 400, "invalid_request_error", param, code, fmt, ap);
    va_end(ap);
    return sd_set_error(SD_ERR_INVALID_ARG, "%s", e->message);
}

/* A 500 server_error for a failed library call; returns its status. */
static sd_status_t server_failure(oai_error_t *e, const char *what, sd_status_t s)
{
    oai_error_set(e, 500, "server_error", NULL, NULL, "%s: %s: %s", what, sd_status_string(s),
                  sd_last_error());
    return s;
}

/* The JSON text of a value for messages, cut to fit: buf[cap]. */
static const char *value_text(const cJSON *v, char *buf, size_t cap)
{
    char *s = cJSON_PrintUnformatted(v);
    if (!s) return "(unprintable)";
    size_t n = strlen(s);
    if (n < cap) memcpy(buf, s, n + 1);
    else snprintf(buf, cap, "%.*s...", (int)(cap - 4), s);
    free(s);
    return buf;
}

/* ---- typed fields: absent or null keeps the default ----------------------------------- */

static const cJSON *field(const cJSON *root, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, name);
    return cJSON_IsNull(v) ? NULL : v;
}

static sd_status_t get_bool(const cJSON *root, const char *name, int *out, oai_error_t *e)
{
    const cJSON *v = field(root, name);
    if (!v) return SD_OK;
    char t[96];
    if (!cJSON_IsBool(v))
        return bad_request(e, name, NULL, "%s must be a boolean, got %s", name,
                           value_text(v, t, sizeof t));
    *out = cJSON_IsTrue(v);
    return SD_OK;
}

/* A number in [lo, hi] (lo excluded when lo_open). */
static sd_status_t get_number(const cJSON *root, const char *name, double lo, int lo_open,
                              double hi, float *out, oai_error_t *e)
{
    const cJSON *v = field(root, name);
    if (!v) return SD_OK;
    char t[96];
    if (!cJSON_IsNumber(v))
        return bad_request(e, name, NULL, "%s must be a number, got %s", name,
                           value_text(v, t, sizeof t));
    double x = v->valuedouble;
    if (x < lo || (lo_open && x == lo) || x > hi)
        return bad_request(e, name, NULL, "%s must be in %s%g, %g], got %s", name,
                           lo_open ? "(" : "[", lo, hi, value_text(v, t, sizeof t));
    *out = (float)x;
    return SD_OK;
}

/* An integer in [lo, hi] as a double (exact up to 2^53); *given = 1 when present. */
static sd_status_t get_integer(const cJSON *root, const char *name, double lo, double hi,
                               double *out, int *given, oai_error_t *e)
{
    const cJSON *v = field(root, name);
    if (!v) return SD_OK;
    char t[96];
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble))
        return bad_request(e, name, NULL, "%s must be an integer, got %s", name,
                           value_text(v, t, sizeof t));
    if (v->valuedouble < lo || v->valuedouble > hi)
        return bad_request(e, name, NULL, "%s must be in [%.0f, %.0f], got %s", name, lo, hi,
                           value_text(v, t, sizeof t));
    *out = v->valuedouble;
    if (given) *given = 1;
    return SD_OK;
}

/* ---- unsupported fields that would change the output ---------------------------------- */

typedef enum used_rule {
    USED_IF_TRUE,         /* true, or a non-zero number */
    USED_IF_NONZERO,      /* a non-zero number (or true) */
    USED_IF_ABOVE_ONE,    /* a number above 1 */
    USED_IF_NONEMPTY,     /* a non-empty string, array or object */
    USED_IF_NOT_NONE,     /* anything but "none" */
    USED_IF_NOT_TEXT_FMT, /* anything but {"type": "text"} */
} used_rule_t;

static const struct {
    const char *field;
    used_rule_t rule;
} unsupported_fields[] = {
    {"best_of", USED_IF_ABOVE_ONE},
    {"echo", USED_IF_TRUE},           {"suffix", USED_IF_NONEMPTY},
    {"tools", USED_IF_NONEMPTY},      {"functions", USED_IF_NONEMPTY},
    {"tool_choice", USED_IF_NOT_NONE}, {"function_call", USED_IF_NOT_NONE},
    {"logit_bias", USED_IF_NONEMPTY}, {"response_format", USED_IF_NOT_TEXT_FMT},
    {"presence_penalty", USED_IF_NONZERO}, {"frequency_penalty", USED_IF_NONZERO},
};

/* 1 when v (not null) asks for something this server does not do. */
static int field_in_use(const cJSON *v, used_rule_t rule)
{
    double x = cJSON_IsNumber(v) ? v->valuedouble : cJSON_IsTrue(v) ? 1 : NAN;
    switch (rule) {
    case USED_IF_TRUE:
    case USED_IF_NONZERO: return cJSON_IsFalse(v) ? 0 : isnan(x) || x != 0;
    case USED_IF_ABOVE_ONE: return isnan(x) || x > 1;
    case USED_IF_NONEMPTY:
        if (cJSON_IsString(v)) return v->valuestring[0] != '\0';
        return !(cJSON_IsArray(v) || cJSON_IsObject(v)) || cJSON_GetArraySize(v) > 0;
    case USED_IF_NOT_NONE: return !cJSON_IsString(v) || strcmp(v->valuestring, "none") != 0;
    case USED_IF_NOT_TEXT_FMT: {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(v, "type");
        return !cJSON_IsObject(v) || !cJSON_IsString(type) || strcmp(type->valuestring, "text");
    }
    }
    return 1;
}

static sd_status_t check_unsupported(const cJSON *root, oai_error_t *e)
{
    for (size_t i = 0; i < sizeof unsupported_fields / sizeof unsupported_fields[0]; i++) {
        const char *name = unsupported_fields[i].field;
        const cJSON *v = field(root, name);
        char t[96];
        if (v && field_in_use(v, unsupported_fields[i].rule))
            return bad_request(e, name, "unsupported_parameter",
                               "%s = %s is not supported by specdec serve", name,
                               value_text(v, t, sizeof t));
    }
    return SD_OK;
}

/* ---- model, sampling, stop, stream ---------------------------------------------------- */

static sd_status_t check_model(const oai_model_t *m, const cJSON *root, oai_error_t *e)
{
    const cJSON *v = field(root, "model");
    char t[96];
    if (!v) return bad_request(e, "model", NULL, "model is required (this server has '%s')", m->id);
    if (!cJSON_IsString(v))
        return bad_request(e, "model", NULL, "model must be a string, got %s",
                           value_text(v, t, sizeof t));
    if (strcmp(v->valuestring, m->id) != 0)
        return bad_request(e, "model", "model_not_found",
                           "the model %s does not exist; this server has '%s'",
                           value_text(v, t, sizeof t), m->id);
    return SD_OK;
}

/* temperature (default 1), top_p (1), top_k and min_p (llama.cpp extensions, off), seed,
 * ignore_eos (extension). */
static sd_status_t parse_sampling(const cJSON *root, oai_request_t *r, oai_error_t *e)
{
    sd_gen_config_t *g = &r->gen;
    double top_k = 0, seed = 0;
    SD_CHECK(get_number(root, "temperature", 0, 0, 2, &g->temperature, e));
    SD_CHECK(get_number(root, "top_p", 0, 1, 1, &g->top_p, e));
    SD_CHECK(get_number(root, "min_p", 0, 0, 1, &g->min_p, e));
    SD_CHECK(get_integer(root, "top_k", 0, INT_MAX, &top_k, NULL, e));
    SD_CHECK(get_integer(root, "seed", 0, OAI_MAX_SEED, &seed, &r->has_seed, e));
    SD_CHECK(get_bool(root, "ignore_eos", &g->ignore_eos, e));
    g->top_k = (int)top_k;
    g->seed = (uint64_t)seed;
    return SD_OK;
}

/* "n" (1..OAI_MAX_N); log-probabilities: chat "logprobs" (bool) and "top_logprobs"
 * (0..SD_MAX_TOP_LOGPROBS, with logprobs true), completions "logprobs": N
 * (0..OAI_MAX_COMPLETION_LOGPROBS alternatives). */
static sd_status_t parse_choices(const cJSON *root, oai_request_t *r, oai_error_t *e)
{
    double n = 1, top = 0;
    int given = 0;
    char t[96];
    SD_CHECK(get_integer(root, "n", 1, OAI_MAX_N, &n, NULL, e));
    r->n = (int)n;
    if (r->endpoint == OAI_COMPLETIONS) {
        const cJSON *v = field(root, "top_logprobs");
        if (v && !(cJSON_IsNumber(v) && v->valuedouble == 0))
            return bad_request(e, "top_logprobs", "unsupported_parameter",
                               "top_logprobs = %s is a chat parameter; completions take "
                               "\"logprobs\": N (0..%d)", value_text(v, t, sizeof t),
                               OAI_MAX_COMPLETION_LOGPROBS);
        SD_CHECK(get_integer(root, "logprobs", 0, OAI_MAX_COMPLETION_LOGPROBS, &top, &given, e));
        r->gen.logprobs = given;
        r->gen.top_logprobs = (int)top;
        return SD_OK;
    }
    SD_CHECK(get_bool(root, "logprobs", &r->gen.logprobs, e));
    SD_CHECK(get_integer(root, "top_logprobs", 0, SD_MAX_TOP_LOGPROBS, &top, &given, e));
    if (top > 0 && !r->gen.logprobs)
        return bad_request(e, "top_logprobs", NULL,
                           "top_logprobs = %.0f needs \"logprobs\": true", top);
    r->gen.top_logprobs = (int)top;
    return SD_OK;
}

static int valid_utf8(const char *s)
{
    size_t n = strlen(s), adv;
    for (size_t i = 0; i < n; i += adv)
        if (sd_utf8_decode((const uint8_t *)s + i, n - i, &adv) >= SD_UTF8_INVALID) return 0;
    return 1;
}

static sd_status_t add_stop(oai_request_t *r, const cJSON *v, oai_error_t *e)
{
    char t[96];
    if (!cJSON_IsString(v))
        return bad_request(e, "stop", NULL, "stop must be a string or an array of strings, got %s",
                           value_text(v, t, sizeof t));
    if (!v->valuestring[0] || !valid_utf8(v->valuestring))
        return bad_request(e, "stop", NULL, "stop strings must be non-empty UTF-8, got %s",
                           value_text(v, t, sizeof t));
    char *copy = strdup(v->valuestring);
    if (!copy) return server_failure(e, "stop", SD_ERR_OUT_OF_MEMORY);
    r->stop[r->gen.n_stop_strings++] = copy;
    return SD_OK;
}

/* "stop": a string or an array of up to OAI_MAX_STOP non-empty strings. */
static sd_status_t parse_stop(const cJSON *root, oai_request_t *r, oai_error_t *e)
{
    const cJSON *v = field(root, "stop");
    r->gen.stop_strings = (const char *const *)r->stop;
    if (!v) return SD_OK;
    if (!cJSON_IsArray(v)) return add_stop(r, v, e);
    if (cJSON_GetArraySize(v) > OAI_MAX_STOP)
        return bad_request(e, "stop", NULL, "stop has %d strings; at most %d are allowed",
                           cJSON_GetArraySize(v), OAI_MAX_STOP);
    const cJSON *s;
    cJSON_ArrayForEach(s, v) SD_CHECK(add_stop(r, s, e));
    return SD_OK;
}

static sd_status_t parse_stream(const cJSON *root, oai_request_t *r, oai_error_t *e)
{
    SD_CHECK(get_bool(root, "stream", &r->stream, e));
    const cJSON *opts = field(root, "stream_options");
    char t[96];
    if (!opts) return SD_OK;
    if (!cJSON_IsObject(opts))
        return bad_request(e, "stream_options", NULL, "stream_options must be an object, got %s",
                           value_text(opts, t, sizeof t));
    return get_bool(opts, "include_usage", &r->include_usage, e);
}

/* ---- prompt --------------------------------------------------------------------------- */

static sd_status_t tokenize(const oai_model_t *m, const char *text, size_t len, int flags,
                            oai_request_t *r, oai_error_t *e)
{
    size_t cap = len + 8, n = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        free(r->prompt);
        r->prompt = malloc(cap * sizeof *r->prompt);
        if (!r->prompt) return server_failure(e, "tokenize", SD_ERR_OUT_OF_MEMORY);
        sd_status_t s = sd_tokenize(m->model, text, len, flags, r->prompt, cap, &n);
        if (s == SD_OK) return r->n_prompt = n, SD_OK;
        if (s != SD_ERR_BUFFER_TOO_SMALL) return server_failure(e, "tokenize", s);
        cap = n;
    }
    return server_failure(e, "tokenize", SD_ERR_INTERNAL);
}

/* A message's content: a string, or an array of {"type": "text", "text": ...} parts joined
 * with newlines (malloc'd into *out). null content is "" for an assistant message. */
static sd_status_t message_content(const cJSON *msg, int index, int assistant, char **out,
                                   oai_error_t *e)
{
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(msg, "content");
    char t[96];
    if (cJSON_IsString(c) || (assistant && cJSON_IsNull(c))) {
        *out = strdup(cJSON_IsString(c) ? c->valuestring : "");
        return *out ? SD_OK : server_failure(e, "messages", SD_ERR_OUT_OF_MEMORY);
    }
    if (!cJSON_IsArray(c))
        return bad_request(e, "messages", NULL,
                           "messages[%d].content must be a string or an array of text parts, "
                           "got %s", index, c ? value_text(c, t, sizeof t) : "nothing");
    size_t len = 0;
    const cJSON *part;
    int j = 0;
    cJSON_ArrayForEach(part, c) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(part, "type");
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (!cJSON_IsString(type) || strcmp(type->valuestring, "text") || !cJSON_IsString(text))
            return bad_request(e, "messages", NULL,
                               "messages[%d].content[%d] must be {\"type\": \"text\", \"text\": "
                               "string}, got %s", index, j, value_text(part, t, sizeof t));
        len += strlen(text->valuestring) + 1;
        j++;
    }
    char *joined = calloc(len + 1, 1);
    if (!joined) return server_failure(e, "messages", SD_ERR_OUT_OF_MEMORY);
    cJSON_ArrayForEach(part, c) {
        if (joined[0]) strcat(joined, "\n");
        strcat(joined, cJSON_GetObjectItemCaseSensitive(part, "text")->valuestring);
    }
    *out = joined;
    return SD_OK;
}

/* messages[index] -> *msg (role: a static string; content: malloc'd into *owned). */
static sd_status_t parse_message(const cJSON *v, int index, sd_chat_message_t *msg, char **owned,
                                 oai_error_t *e)
{
    static const char *const roles[] = {"system", "user", "assistant"};
    const cJSON *role = cJSON_GetObjectItemCaseSensitive(v, "role");
    char t[96];
    if (!cJSON_IsObject(v))
        return bad_request(e, "messages", NULL, "messages[%d] must be an object, got %s", index,
                           value_text(v, t, sizeof t));
    msg->role = NULL;
    if (cJSON_IsString(role)) {
        for (size_t i = 0; i < 3; i++)
            if (!strcmp(role->valuestring, roles[i])) msg->role = roles[i];
        if (!strcmp(role->valuestring, "developer")) msg->role = roles[0];
    }
    if (!msg->role)
        return bad_request(e, "messages", NULL,
                           "messages[%d].role must be \"system\", \"user\" or \"assistant\", "
                           "got %s", index, role ? value_text(role, t, sizeof t) : "nothing");
    SD_CHECK(message_content(v, index, msg->role == roles[2], owned, e));
    msg->content = *owned;
    return SD_OK;
}

/* Render messages[n] with the chat template and tokenize: BOS, the template's markup as
 * special tokens, the messages as plain text (unless --special). */
static sd_status_t render_chat(const oai_model_t *m, const sd_chat_message_t *msgs, size_t n,
                               oai_request_t *r, oai_error_t *e)
{
    int flags = SD_TOKENIZE_ADD_BOS | (m->parse_special ? SD_TOKENIZE_PARSE_SPECIAL : 0);
    size_t cap = 256, got = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        free(r->prompt);
        r->prompt = malloc(cap * sizeof *r->prompt);
        if (!r->prompt) return server_failure(e, "chat template", SD_ERR_OUT_OF_MEMORY);
        sd_status_t s = sd_chat_tokenize(m->model, msgs, n, 1, flags, r->prompt, cap, &got);
        if (s == SD_OK) return r->n_prompt = got, SD_OK;
        if (s == SD_ERR_INVALID_ARG) /* the template refuses the messages (Llama-2's roles) */
            return bad_request(e, "messages", NULL, "%s", sd_last_error());
        if (s != SD_ERR_BUFFER_TOO_SMALL) return server_failure(e, "chat template", s);
        cap = got;
    }
    return server_failure(e, "chat template", SD_ERR_INTERNAL);
}

static sd_status_t parse_messages(const oai_model_t *m, const cJSON *root, oai_request_t *r,
                                  oai_error_t *e)
{
    const cJSON *v = field(root, "messages");
    char t[96];
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) == 0)
        return bad_request(e, "messages", NULL, "messages must be a non-empty array, got %s",
                           v ? value_text(v, t, sizeof t) : "nothing");
    int n = cJSON_GetArraySize(v);
    sd_chat_message_t *msgs = calloc((size_t)n, sizeof *msgs);
    char **owned = calloc((size_t)n, sizeof *owned);
    sd_status_t s = msgs && owned ? SD_OK : server_failure(e, "messages", SD_ERR_OUT_OF_MEMORY);
    for (int i = 0; i < n && s == SD_OK; i++)
        s = parse_message(cJSON_GetArrayItem(v, i), i, &msgs[i], &owned[i], e);
    if (s == SD_OK) s = render_chat(m, msgs, (size_t)n, r, e);
    for (int i = 0; owned && i < n; i++) free(owned[i]);
    free(owned);
    free(msgs);
    return s;
}

/* prompt: token ids [id, ...] checked against the vocabulary. */
static sd_status_t prompt_ids(const oai_model_t *m, const cJSON *v, oai_request_t *r,
                              oai_error_t *e)
{
    int n = cJSON_GetArraySize(v), i = 0;
    r->prompt = malloc((size_t)n * sizeof *r->prompt);
    if (!r->prompt) return server_failure(e, "prompt", SD_ERR_OUT_OF_MEMORY);
    const cJSON *id;
    char t[96];
    cJSON_ArrayForEach(id, v) {
        if (!cJSON_IsNumber(id) || id->valuedouble != floor(id->valuedouble) ||
            id->valuedouble < 0 || id->valuedouble >= m->n_vocab)
            return bad_request(e, "prompt", NULL,
                               "prompt[%d] must be a token id in [0, %d), got %s", i,
                               m->n_vocab, value_text(id, t, sizeof t));
        r->prompt[i++] = (int32_t)id->valuedouble;
    }
    r->n_prompt = (size_t)n;
    return SD_OK;
}

/* prompt: a string, an array of one string, or an array of token ids. */
static sd_status_t parse_prompt(const oai_model_t *m, const cJSON *root, oai_request_t *r,
                                oai_error_t *e)
{
    const cJSON *v = field(root, "prompt");
    char t[96];
    if (cJSON_IsArray(v) && cJSON_GetArraySize(v) > 0 && cJSON_IsNumber(v->child))
        return prompt_ids(m, v, r, e);
    if (cJSON_IsArray(v) && cJSON_GetArraySize(v) == 0)
        return bad_request(e, "prompt", NULL, "prompt is an empty array");
    if (cJSON_IsArray(v) && cJSON_GetArraySize(v) > 1)
        return bad_request(e, "prompt", NULL,
                           "prompt has %d entries; this server takes one prompt per request",
                           cJSON_GetArraySize(v));
    if (cJSON_IsArray(v)) v = v->child;
    if (!cJSON_IsString(v))
        return bad_request(e, "prompt", NULL,
                           "prompt must be a string or an array of token ids, got %s",
                           v ? value_text(v, t, sizeof t) : "nothing");
    int flags = SD_TOKENIZE_ADD_BOS | (m->parse_special ? SD_TOKENIZE_PARSE_SPECIAL : 0);
    return tokenize(m, v->valuestring, strlen(v->valuestring), flags, r, e);
}

/* ---- max_tokens and the context --------------------------------------------------------- */

static sd_status_t parse_max_tokens(const oai_model_t *m, const cJSON *root, oai_request_t *r,
                                    oai_error_t *e)
{
    const char *name = field(root, "max_completion_tokens") ? "max_completion_tokens"
                                                             : "max_tokens";
    const char *prompt_param = r->endpoint == OAI_CHAT ? "messages" : "prompt";
    double max = 0;
    int given = 0;
    if (r->n_prompt == 0)
        return bad_request(e, prompt_param, NULL, "the %s is empty (0 tokens)", prompt_param);
    SD_CHECK(get_integer(root, name, -INFINITY, INFINITY, &max, &given, e));
    if (given && max <= 0)
        return bad_request(e, name, NULL, "%s must be at least 1, got %.0f", name, max);
    if (r->n_prompt >= (size_t)m->n_ctx)
        return bad_request(e, prompt_param, "context_length_exceeded",
                           "the prompt is %zu tokens, which leaves no room in the context of %d "
                           "tokens", r->n_prompt, m->n_ctx);
    if (given && (double)r->n_prompt + max > m->n_ctx)
        return bad_request(e, name, "context_length_exceeded",
                           "the prompt (%zu tokens) + %s (%.0f) = %.0f tokens exceeds the context "
                           "of %d tokens", r->n_prompt, name, max, (double)r->n_prompt + max,
                           m->n_ctx);
    r->gen.max_tokens = given ? (int)max : m->n_ctx - (int)r->n_prompt;
    return SD_OK;
}

/* ---- the request ----------------------------------------------------------------------- */

/* cJSON records a failed parse's position in a global; keep concurrent parses apart. */
static pthread_mutex_t parse_lock = PTHREAD_MUTEX_INITIALIZER;

sd_status_t oai_parse_json(const char *body, size_t len, cJSON **root, oai_error_t *e)
{
    const char *end = NULL;
    pthread_mutex_lock(&parse_lock);
    *root = cJSON_ParseWithLengthOpts(body, len, &end, 0);
    pthread_mutex_unlock(&parse_lock);
    if (!*root) {
        size_t at = end && end >= body ? (size_t)(end - body) : 0;
        return bad_request(e, NULL, NULL, "malformed JSON at byte %zu of %zu", at, len);
    }
    size_t used = (size_t)(end - body);
    while (used < len && strchr(" \t\r\n", body[used]) && body[used]) used++;
    if (used < len)
        return bad_request(e, NULL, NULL, "malformed JSON: text after the value at byte %zu",
                           used);
    if (!cJSON_IsObject(*root))
        return bad_request(e, NULL, NULL, "the request body must be a JSON object");
    size_t at = 0;
    if (json_find_nul(body, len, e->param_text, sizeof e->param_text, &at)) {
        bad_request(e, NULL, NULL, "%s holds a NUL character (\\u0000) at character %zu; "
                    "text with NUL is refused, not cut there", e->param_text, at);
        e->param = e->param_text;
        return SD_ERR_INVALID_ARG;
    }
    return SD_OK;
}

static void gen_defaults(sd_gen_config_t *g)
{
    sd_gen_config_default(g);
    g->temperature = 1.0f; /* OpenAI's defaults: no top-k or min-p filter */
    g->top_k = 0;
    g->top_p = 1.0f;
    g->min_p = 0.0f;
}

static sd_status_t parse_fields(const oai_model_t *m, const cJSON *root, oai_request_t *r,
                                oai_error_t *e)
{
    SD_CHECK(check_model(m, root, e));
    SD_CHECK(check_unsupported(root, e));
    SD_CHECK(parse_sampling(root, r, e));
    SD_CHECK(parse_choices(root, r, e));
    SD_CHECK(parse_stop(root, r, e));
    SD_CHECK(parse_stream(root, r, e));
    if (r->endpoint == OAI_CHAT) SD_CHECK(parse_messages(m, root, r, e));
    else SD_CHECK(parse_prompt(m, root, r, e));
    return parse_max_tokens(m, root, r, e);
}

sd_status_t oai_parse_request(const oai_model_t *m, oai_endpoint_t endpoint, const char *body,
                              size_t len, oai_request_t *out, oai_error_t *e)
{
    memset(out, 0, sizeof *out);
    memset(e, 0, sizeof *e);
    out->endpoint = endpoint;
    out->n = 1;
    gen_defaults(&out->gen);
    out->gen.stop_strings = (const char *const *)out->stop;
    cJSON *root = NULL;
    sd_status_t s = oai_parse_json(body, len, &root, e);
    if (s == SD_OK) s = parse_fields(m, root, out, e);
    cJSON_Delete(root);
    return s;
}

void oai_request_free(oai_request_t *r)
{
    if (!r) return;
    free(r->prompt);
    for (size_t i = 0; i < OAI_MAX_STOP; i++) free(r->stop[i]);
    memset(r, 0, sizeof *r);
}
