/* What one generation has made and how it is delivered: the kept tokens, their text with
 * stop strings applied, the stop reason, and the token callback's stream (the contract of
 * sd_token_callback in specdec.h: the texts of all calls join to the result's text). */
#ifndef SPECDEC_ENGINE_GEN_OUTPUT_H
#define SPECDEC_ENGINE_GEN_OUTPUT_H

#include <stddef.h>
#include <stdint.h>

#include "model/model.h"

typedef struct sd_gen_output {
    const sd_gen_config_t *cfg;   /* stops, ignore_eos; not owned */
    const sd_tokenizer_t *tok;    /* end-of-generation tokens; NULL: none, and no text */
    sd_text_stream_t *stream;     /* NULL without a tokenizer */
    sd_token_callback callback;   /* may be NULL */
    void *user;
    int32_t *tokens;              /* [cap_tokens] kept tokens */
    size_t n_tokens, cap_tokens;
    int logprobs, n_top;          /* cfg->logprobs, cfg->top_logprobs (0 without logprobs) */
    float *lps;                   /* [cap_tokens] their log-probabilities, or NULL */
    int32_t *top_tokens;          /* [cap_tokens * n_top] alternatives, or NULL */
    float *top_lps;               /* [cap_tokens * n_top] */
    char *text;                   /* [text_cap] their text, text_len bytes, NUL-terminated */
    size_t text_len, text_cap;
    size_t released;              /* text[0 .. released) has gone to the callback */
    int matched;                  /* a stop string matched: the text ends before it */
    sd_stop_reason_t reason;
} sd_gen_output_t;

/* Empty output for a generation of at most max_tokens tokens of model m under cfg (both
 * must outlive it). SD_ERR_OUT_OF_MEMORY naming the buffer. */
sd_status_t sd_gen_output_init(sd_gen_output_t *o, const sd_model_t *m, const sd_gen_config_t *cfg,
                               sd_token_callback callback, void *user, size_t max_tokens);
void sd_gen_output_free(sd_gen_output_t *o);

/* Keep `token` (or stop before it: end of generation, a stop token), decode its text, match
 * stop strings and release what can no longer start one to the callback. lp: the token's
 * log-probabilities when cfg->logprobs (kept with it, and given to cfg->logprobs_callback
 * before the token callback), else NULL. end: why no token may follow this one
 * (SD_STOP_MAX_TOKENS, SD_STOP_CONTEXT_FULL), SD_STOP_NONE while more may. *stop = 1 with
 * o->reason set when generation ends. */
sd_status_t sd_gen_output_emit(sd_gen_output_t *o, int32_t token, const sd_token_logprobs_t *lp,
                               sd_stop_reason_t end, int *stop);

/* Generation ended on its own (not on a stop string or max_tokens): held text goes out in
 * one last callback with token -1. */
sd_status_t sd_gen_output_finish(sd_gen_output_t *o);

/* Move tokens, text, log-probabilities and stop reason into out (which then owns them). */
void sd_gen_output_take(sd_gen_output_t *o, sd_gen_result_t *out);

#endif
