/* The OpenAI wire format: a request body (JSON) becomes prompt tokens and a generation
 * config; results become response bodies, stream chunks and error bodies (JSON text). No
 * HTTP here: the caller maps oai_error_t.http_status onto its response. */
#ifndef SPECDEC_APPS_SERVE_OPENAI_H
#define SPECDEC_APPS_SERVE_OPENAI_H

#include <stddef.h>
#include <stdint.h>

#include "specdec/specdec.h"

typedef enum oai_endpoint {
    OAI_CHAT,        /* POST /v1/chat/completions: messages, the chat template applied */
    OAI_COMPLETIONS, /* POST /v1/completions: a prompt string (or token ids) */
} oai_endpoint_t;

/* An error as OpenAI writes it: {"error":{"message","type","param","code"}}. */
typedef struct oai_error {
    int http_status;   /* 400, 404, 405, 413, 429, 500, 503 */
    const char *type;  /* "invalid_request_error", "server_error", "requests" (429) */
    const char *param; /* the request field at fault, or NULL (may point at param_text) */
    const char *code;  /* "model_not_found", "context_length_exceeded", ... or NULL */
    char message[512]; /* names the value that was wrong */
    char param_text[80]; /* a param built for this error ("messages[0].content") */
} oai_error_t;

/* What the parser needs to know about the served model. */
typedef struct oai_model {
    sd_model_t *model; /* tokenizer and chat template */
    const char *id;    /* the "model" a request must name */
    int n_ctx;         /* KV-cache length: prompt + max_tokens must fit */
    int n_vocab;       /* token ids of a prompt array are checked against it */
    int parse_special; /* --special: "<|im_end|>" in client text becomes the control token
                        * (trusted clients); 0: only the chat template's markup does */
} oai_model_t;

#define OAI_MAX_STOP 4
#define OAI_MAX_N SD_MAX_CHOICES    /* "n": choices per request */
#define OAI_MAX_COMPLETION_LOGPROBS 5 /* completions "logprobs": N, OpenAI's legacy maximum */

/* A parsed request. gen.stop_strings points into stop[]; free with oai_request_free. */
typedef struct oai_request {
    oai_endpoint_t endpoint;
    int32_t *prompt; /* [n_prompt] token ids */
    size_t n_prompt;
    sd_gen_config_t gen; /* gen.logprobs / gen.top_logprobs: what the request asked for */
    char *stop[OAI_MAX_STOP];
    int n;             /* "n": choices, 1..OAI_MAX_N */
    int has_seed;      /* 0: no "seed" given; the caller picks gen.seed and reports it */
    int stream;        /* "stream": true */
    int include_usage; /* "stream_options": {"include_usage": true} */
} oai_request_t;

/* Parse body[len] for `endpoint`. SD_OK with *out filled, or SD_ERR_INVALID_ARG with *err
 * holding the 400 (a bad field, wrong type, unsupported option, unknown model, prompt too
 * long for the context); other statuses (out of memory, tokenizer failures) fill *err as
 * a 500. *out needs oai_request_free in every case. */
sd_status_t oai_parse_request(const oai_model_t *model, oai_endpoint_t endpoint,
                              const char *body, size_t len, oai_request_t *out,
                              oai_error_t *err);
void oai_request_free(oai_request_t *request);

struct cJSON;
/* body[len] as a JSON object into *root (cJSON_Delete it), or SD_ERR_INVALID_ARG with *err
 * a 400: malformed JSON (naming the byte offset), not an object, or a string holding
 * U+0000 (naming its path: cJSON would cut the string there). */
sd_status_t oai_parse_json(const char *body, size_t len, struct cJSON **root, oai_error_t *err);

/* Fill *err with an error of the given status, type and code (param and code may be NULL). */
void oai_error_set(oai_error_t *err, int http_status, const char *type, const char *param,
                   const char *code, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
/* The error for a failed sd_engine_submit (status and sd_last_error()'s detail):
 * SD_ERR_BUSY -> 429, SD_ERR_CONTEXT_FULL -> 400 context_length_exceeded, other input
 * problems -> 400, failures of the server itself -> 500. */
void oai_error_from_status(sd_status_t status, const char *detail, oai_error_t *err);

/* Names: "length" (max tokens), "eos", "stop" (a stop string), "stop_token", "callback",
 * "cancelled", "error", "none". */
const char *oai_stop_reason_name(sd_stop_reason_t reason);

/* Everything a response names besides the result itself. */
typedef struct oai_reply {
    oai_endpoint_t endpoint;
    char id[40];          /* "chatcmpl-N" | "cmpl-N" */
    long long created;    /* unix seconds */
    const char *model_id;
    const char *drafter;  /* NULL: target-only */
    int k;                /* draft length (the maximum when adaptive); 0 without a drafter */
    uint64_t seed;        /* the seed used (the request's or the server's); choice i's is
                             sd_choice_seed(seed, i) */
    int logprobs;         /* the request asked for log-probabilities */
    const sd_model_t *model; /* token texts of the log-probabilities (needed with logprobs) */
} oai_reply_t;

/* The running character offset of a completion's tokens (completions' text_offset): the
 * characters of the tokens' text so far, counted as the JSON text has them (a UTF-8
 * sequence or an undecodable byte is one), and the bytes of a character still incomplete. */
typedef struct oai_text_offset {
    size_t chars;
    unsigned char pending[4];
    int n_pending;
} oai_text_offset_t;

/* Log-probabilities of consecutive generated tokens (sd_gen_result_t's layout), for a
 * response or a stream chunk. */
typedef struct oai_logprobs {
    size_t n;
    const int32_t *tokens;       /* [n] */
    const float *logprobs;       /* [n] */
    int n_top;
    const int32_t *top_tokens;   /* [n * n_top] */
    const float *top_logprobs;   /* [n * n_top] */
    oai_text_offset_t *offset;   /* completions: advanced over these tokens (NULL for chat) */
} oai_logprobs_t;

/* JSON text, malloc'd (free()), NULL when out of memory. Text is made valid UTF-8 (a byte
 * that cannot be decoded becomes U+FFFD) before it goes into a JSON string. Log-probabilities
 * below -9999 (and -inf) are written as -9999.0, as vLLM does. */
/* The non-streaming body of results[n] (choice i = results[i]): chat.completion or
 * text_completion, with each choice's logprobs when reply->logprobs, usage (the prompt
 * counted once, completion tokens over all choices) and the specdec object. */
char *oai_response_json(const oai_reply_t *reply, const sd_gen_result_t *results, int n);
/* A stream chunk of choice `index` carrying text[len] (chat: delta.content; completions:
 * text) and the log-probabilities of its tokens (lp; NULL: none, "logprobs": null). For
 * chat, role = 1 gives the opening chunk, delta {"role":"assistant","content":""}. */
char *oai_chunk_json(const oai_reply_t *reply, int index, const char *text, size_t len, int role,
                     const oai_logprobs_t *lp);
/* The last chunk of choice `index`: empty delta (chat) or text "" (completions),
 * finish_reason, and the log-probabilities of tokens that released no text (lp, or NULL). */
char *oai_final_chunk_json(const oai_reply_t *reply, int index, sd_stop_reason_t reason,
                           const oai_logprobs_t *lp);
/* The stream_options.include_usage chunk of results[n]: "choices": [], usage, specdec. */
char *oai_usage_chunk_json(const oai_reply_t *reply, const sd_gen_result_t *results, int n);
/* {"error":{...}} */
char *oai_error_json(const oai_error_t *err);
/* A JSON string of text[len] made valid UTF-8 (undecodable bytes and NUL become U+FFFD);
 * NULL when out of memory. */
struct cJSON *oai_json_text(const char *text, size_t len);
/* GET /v1/models: {"object":"list","data":[{"id","object":"model","created","owned_by"}]}. */
char *oai_models_json(const char *model_id, long long created);

#endif
