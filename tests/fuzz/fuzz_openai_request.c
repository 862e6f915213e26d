/* Fuzz target: the OpenAI request parser (apps/serve/openai.c, oai_parse_request) on a
 * synthetic model (ChatML template, byte-level BPE, context 256), and the error body that
 * answers a refusal (openai_reply.c, oai_error_json).
 *
 * Input: byte 0's low bit picks the endpoint (0 chat, 1 completions); the rest is the body.
 * Properties:
 *   - SD_OK gives a request the engine can run: a prompt of 1 .. n_ctx - 1 in-vocabulary
 *     tokens, 1 <= max_tokens <= n_ctx - prompt, temperature in [0, 2], top_p in (0, 1],
 *     min_p in [0, 1], top_k >= 0, at most 4 non-empty UTF-8 stop strings; parsing again
 *     gives the same request (no hidden state: seeds, stops and prompt are the body's);
 *   - SD_ERR_INVALID_ARG is a 400 invalid_request_error naming a field of the request or a
 *     path inside one (or none for malformed JSON) — a NUL refusal names the path of the
 *     NUL, under any key, and the body holds one —, any other status a 500 server_error;
 *   - the error body is JSON that parses back to the same message, type, param and code;
 *   - a chat's control tokens come from the template only (as many <|im_start|> as
 *     messages + 1 for the generation prompt, no <|endoftext|>). */
#include <cjson/cJSON.h>

#include "apps/serve/openai.h"
#include "core/unicode.h"
#include "fuzz/fuzz.h"
#include "fuzz/fuzz_model.h"
#include "model/model.h"
#include "tokenizer/tokenizer_impl.h"

static oai_model_t served;
static int32_t im_start = -1, im_end = -1, eot = -1;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    setenv("SPECDEC_LOG", "error", 1);
    sd_synth_spec_t s;
    sd_synth_spec_default(&s); /* ChatML template, byte-level BPE */
    s.n_ctx = 256;
    sd_model_t *m = fuzz_synth_model(&s);
    sd_model_info_t info;
    sd_model_get_info(m, &info);
    served = (oai_model_t){.model = m, .id = "synth", .n_ctx = info.n_ctx, .n_vocab = info.n_vocab};
    int32_t ids[3];
    size_t k = 0;
    if (sd_tokenize(m, "<|im_start|><|im_end|><|endoftext|>", 35, SD_TOKENIZE_PARSE_SPECIAL, ids, 3,
                    &k) != SD_OK || k != 3)
        abort();
    im_start = ids[0], im_end = ids[1], eot = ids[2];
    return 0;
}

static const char *const fields[] = {
    "model", "messages", "prompt", "max_tokens", "max_completion_tokens", "temperature",
    "top_p", "top_k", "min_p", "seed", "stop", "stream", "stream_options", "ignore_eos", "n",
    "best_of", "logprobs", "top_logprobs", "echo", "suffix", "tools", "functions",
    "tool_choice", "function_call", "logit_bias", "response_format", "presence_penalty",
    "frequency_penalty"};

/* A field of the request, or a path inside one ("messages[0].content"). */
static int known_field(const char *param)
{
    size_t top = strcspn(param, "[.");
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        if (strlen(fields[i]) == top && !strncmp(param, fields[i], top)) return 1;
    return 0;
}

static int utf8_ok(const char *s)
{
    size_t n = strlen(s), adv;
    for (size_t i = 0; i < n; i += adv)
        if (sd_utf8_decode((const uint8_t *)s + i, n - i, &adv) >= SD_UTF8_INVALID) return 0;
    return 1;
}

/* 1 when body[len] holds a NUL character: a raw NUL byte or the escape \u0000. */
static int has_nul(const char *body, size_t len)
{
    if (memchr(body, '\0', len)) return 1;
    for (size_t i = 0; i + 6 <= len; i++)
        if (!memcmp(body + i, "\\u0000", 6)) return 1;
    return 0;
}

static void check_error(sd_status_t s, const oai_error_t *e, const char *body, size_t len)
{
    FUZZ_CHECK(e->message[0] != '\0', "%s without a message", sd_status_string(s));
    if (s == SD_ERR_INVALID_ARG) {
        FUZZ_CHECK(e->http_status == 400 && e->type && !strcmp(e->type, "invalid_request_error"),
                   "a refusal answered %d %s", e->http_status, e->type ? e->type : "(null)");
        if (e->param && e->param == e->param_text) /* a NUL, named where it is, in any key */
            FUZZ_CHECK(strstr(e->message, "holds a NUL character") && has_nul(body, len),
                       "a NUL refusal '%s'", e->message);
        else
            FUZZ_CHECK(e->param == NULL || known_field(e->param), "param '%s'", e->param);
    } else {
        FUZZ_CHECK(e->http_status == 500 && e->type && !strcmp(e->type, "server_error"),
                   "%s answered %d", sd_status_string(s), e->http_status);
    }
    char *json = oai_error_json(e);
    FUZZ_CHECK(json != NULL, "oai_error_json failed");
    cJSON *root = cJSON_Parse(json);
    FUZZ_CHECK(root != NULL, "the error body is not JSON: %s", json);
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(root, "error");
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(err, "message");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(err, "type");
    const cJSON *param = cJSON_GetObjectItemCaseSensitive(err, "param");
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(err, "code");
    FUZZ_CHECK(cJSON_IsString(msg) && cJSON_IsString(type) && !strcmp(type->valuestring, e->type),
               "error body fields: %s", json);
    /* the message went through the UTF-8 cleaning: the same text when it was valid UTF-8 */
    FUZZ_CHECK(!utf8_ok(e->message) || !strcmp(msg->valuestring, e->message),
               "the error body's message '%s' is not '%s'", msg->valuestring, e->message);
    FUZZ_CHECK(e->param ? cJSON_IsString(param) && !strcmp(param->valuestring, e->param)
                        : cJSON_IsNull(param), "param in the body: %s", json);
    FUZZ_CHECK(e->code ? cJSON_IsString(code) && !strcmp(code->valuestring, e->code)
                       : cJSON_IsNull(code), "code in the body: %s", json);
    cJSON_Delete(root);
    free(json);
}

static void check_request(oai_endpoint_t ep, const oai_request_t *r, const char *body, size_t len)
{
    const sd_gen_config_t *g = &r->gen;
    FUZZ_CHECK(r->n_prompt >= 1 && r->n_prompt < (size_t)served.n_ctx, "prompt of %zu tokens",
               r->n_prompt);
    for (size_t i = 0; i < r->n_prompt; i++)
        FUZZ_CHECK(r->prompt[i] >= 0 && r->prompt[i] < served.n_vocab, "prompt[%zu] = %d", i,
                   r->prompt[i]);
    FUZZ_CHECK(g->max_tokens >= 1 && (size_t)g->max_tokens + r->n_prompt <= (size_t)served.n_ctx,
               "max_tokens %d with a prompt of %zu", g->max_tokens, r->n_prompt);
    FUZZ_CHECK(g->temperature >= 0 && g->temperature <= 2, "temperature %g", (double)g->temperature);
    FUZZ_CHECK(g->top_p > 0 && g->top_p <= 1, "top_p %g", (double)g->top_p);
    FUZZ_CHECK(g->min_p >= 0 && g->min_p <= 1, "min_p %g", (double)g->min_p);
    FUZZ_CHECK(g->top_k >= 0, "top_k %d", g->top_k);
    FUZZ_CHECK(g->n_stop_strings <= OAI_MAX_STOP, "%zu stop strings", g->n_stop_strings);
    for (size_t i = 0; i < g->n_stop_strings; i++)
        FUZZ_CHECK(g->stop_strings[i][0] && utf8_ok(g->stop_strings[i]), "stop string %zu", i);
    if (ep == OAI_CHAT) {
        size_t starts = 0, ends = 0, eots = 0;
        for (size_t i = 0; i < r->n_prompt; i++)
            starts += r->prompt[i] == im_start, ends += r->prompt[i] == im_end,
                eots += r->prompt[i] == eot;
        FUZZ_CHECK(starts == ends + 1 && eots == 0,
                   "chat prompt: %zu <|im_start|>, %zu <|im_end|>, %zu <|endoftext|>: message "
                   "text became control tokens", starts, ends, eots);
    }
    oai_request_t again;
    oai_error_t e;
    FUZZ_CHECK(oai_parse_request(&served, ep, body, len, &again, &e) == SD_OK, "second parse: %s",
               e.message);
    FUZZ_CHECK(again.n_prompt == r->n_prompt &&
                   memcmp(again.prompt, r->prompt, r->n_prompt * sizeof *r->prompt) == 0 &&
                   again.gen.max_tokens == g->max_tokens && again.gen.seed == g->seed &&
                   again.has_seed == r->has_seed && again.stream == r->stream &&
                   again.gen.n_stop_strings == g->n_stop_strings,
               "parsing the same body twice gave different requests");
    oai_request_free(&again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) return 0;
    oai_endpoint_t ep = data[0] & 1 ? OAI_COMPLETIONS : OAI_CHAT;
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    oai_request_t r;
    oai_error_t e;
    sd_status_t s = oai_parse_request(&served, ep, body, len, &r, &e);
    if (s == SD_OK) check_request(ep, &r, body, len);
    else check_error(s, &e, body, len);
    oai_request_free(&r);
    return 0;
}
