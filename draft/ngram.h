/* N-gram prompt-lookup drafter: finds the longest suffix of the context (n_max down to
 * n_min tokens) that occurred earlier in it and proposes the tokens that followed its most
 * recent earlier occurrence (at most k, and never past the end of the context).
 * Deterministic (has_q = 0); ignores the sampler settings and seed. */
#ifndef SPECDEC_DRAFT_NGRAM_H
#define SPECDEC_DRAFT_NGRAM_H

#include <stddef.h>
#include <stdint.h>

#include "draft/registry.h"

#define SD_NGRAM_N_LIMIT 32 /* the longest n-gram n_max may ask for */

typedef struct sd_ngram_params {
    int n_min; /* shortest suffix tried, >= 1 (default 1) */
    int n_max; /* longest suffix, tried first: n_min .. SD_NGRAM_N_LIMIT (default 3) */
} sd_ngram_params_t;

void sd_ngram_params_default(sd_ngram_params_t *p);

/* SD_ERR_INVALID_ARG naming the field for bad params. */
sd_status_t sd_drafter_ngram_new(const sd_ngram_params_t *p, sd_drafter_t **out);

/* Its registry row's functions (draft/registry.h): "ngram" (n-grams 1..3), "ngram:N"
 * (1..N, N in [1, SD_NGRAM_N_LIMIT]). */
sd_status_t sd_drafter_ngram_parse(const char *text, const char *arg, sd_spec_config_t *spec,
                                   const char **model_path);
sd_status_t sd_drafter_ngram_check(const sd_spec_config_t *spec);
sd_status_t sd_drafter_ngram_make(sd_model_t *target, const sd_spec_config_t *spec,
                                  sd_drafter_t **out);
int sd_drafter_ngram_hash_words(const sd_spec_config_t *spec, int32_t words[SD_DRAFTER_HASH_WORDS]);
sd_status_t sd_drafter_ngram_text(const sd_spec_config_t *spec, const sd_model_t *target,
                                  char *buf, size_t cap);

#endif
