/* OpenAI response bodies, stream chunks and error bodies (see openai.h). */
#include <cjson/cJSON.h>
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
    };
    return (unsigned)reason < sizeof names / sizeof names[0] ? names[reason] : "none";
}

static const char *finish_reason(sd_stop_reason_t reason)
{
    return reason == SD_STOP_MAX_TOKENS ? "length" : "stop";
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

static void add_usage(cJSON *root, const sd_gen_result_t *res, int *ok)
{
    cJSON *u = add(root, "usage", cJSON_CreateObject(), ok);
    add(u, "prompt_tokens", cJSON_CreateNumber((double)res->n_prompt), ok);
    add(u, "completion_tokens", cJSON_CreateNumber((double)res->n_tokens), ok);
    add(u, "total_tokens", cJSON_CreateNumber((double)(res->n_prompt + res->n_tokens)), ok);
}

/* The "specdec" extension: drafter, k, seed and this request's acceptance statistics. */
static void add_specdec(cJSON *root, const oai_reply_t *r, const sd_gen_result_t *res, int *ok)
{
    const sd_gen_stats_t *st = &res->stats;
    cJSON *x = add(root, "specdec", cJSON_CreateObject(), ok);
    add(x, "drafter", r->drafter ? utf8_string(r->drafter, strlen(r->drafter)) : cJSON_CreateNull(),
        ok);
    add(x, "k", cJSON_CreateNumber(r->k), ok);
    add(x, "seed", cJSON_CreateNumber((double)r->seed), ok);
    add(x, "steps", cJSON_CreateNumber((double)st->steps), ok);
    add(x, "drafted", cJSON_CreateNumber((double)st->drafted), ok);
    add(x, "accepted", cJSON_CreateNumber((double)st->accepted), ok);
    add(x, "acceptance_rate", cJSON_CreateNumber(st->acceptance_rate), ok);
    add(x, "mean_accepted_len", cJSON_CreateNumber(st->mean_accepted_len), ok);
    add(x, "stop_reason", cJSON_CreateString(oai_stop_reason_name(res->stop_reason)), ok);
}

/* One choice: chat {"index", "message"|"delta", "finish_reason"}, completions {"index",
 * "text", "logprobs", "finish_reason"}. text NULL: no content (chat's final delta is {}). */
static void add_choice(cJSON *choices, const oai_reply_t *r, int chunk, const char *text,
                       size_t len, int role, const char *finish, int *ok)
{
    cJSON *c = add(choices, NULL, cJSON_CreateObject(), ok);
    add(c, "index", cJSON_CreateNumber(0), ok);
    if (r->endpoint == OAI_CHAT) {
        cJSON *msg = add(c, chunk ? "delta" : "message", cJSON_CreateObject(), ok);
        if (role) add(msg, "role", cJSON_CreateString("assistant"), ok);
        if (text) add(msg, "content", utf8_string(text, len), ok);
    } else {
        add(c, "text", utf8_string(text ? text : "", text ? len : 0), ok);
        add(c, "logprobs", cJSON_CreateNull(), ok);
    }
    add(c, "finish_reason", finish ? cJSON_CreateString(finish) : cJSON_CreateNull(), ok);
}

char *oai_response_json(const oai_reply_t *r, const sd_gen_result_t *res)
{
    int ok = 1;
    cJSON *root = reply_base(r, 0, &ok);
    cJSON *choices = add(root, "choices", cJSON_CreateArray(), &ok);
    add_choice(choices, r, 0, res->text ? res->text : "", res->text ? res->text_len : 0, 1,
               finish_reason(res->stop_reason), &ok);
    add_usage(root, res, &ok);
    add_specdec(root, r, res, &ok);
    return finish(root, ok);
}

char *oai_chunk_json(const oai_reply_t *r, const char *text, size_t len, int role)
{
    int ok = 1;
    cJSON *root = reply_base(r, 1, &ok);
    cJSON *choices = add(root, "choices", cJSON_CreateArray(), &ok);
    add_choice(choices, r, 1, text, len, role, NULL, &ok);
    return finish(root, ok);
}

char *oai_final_chunk_json(const oai_reply_t *r, sd_stop_reason_t reason)
{
    int ok = 1;
    cJSON *root = reply_base(r, 1, &ok);
    cJSON *choices = add(root, "choices", cJSON_CreateArray(), &ok);
    add_choice(choices, r, 1, NULL, 0, 0, finish_reason(reason), &ok);
    return finish(root, ok);
}

char *oai_usage_chunk_json(const oai_reply_t *r, const sd_gen_result_t *res)
{
    int ok = 1;
    cJSON *root = reply_base(r, 1, &ok);
    add(root, "choices", cJSON_CreateArray(), &ok);
    add_usage(root, res, &ok);
    add_specdec(root, r, res, &ok);
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
