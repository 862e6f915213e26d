/* Samplers: greedy, temperature, top-k, top-p, min-p — as a distribution (for
 * speculative verification) and as a draw from one uniform (inverse CDF). The definition:
 * verify/sampler.c; why it is bit-exact with the GPU: docs/design-notes.md, "Samplers". */
#ifndef SPECDEC_VERIFY_SAMPLER_H
#define SPECDEC_VERIFY_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

#include "specdec/specdec.h"

typedef struct sd_sampler_params {
    float temperature; /* <= 0: greedy */
    int top_k;         /* <= 0: off */
    float top_p;       /* >= 1: off */
    float min_p;       /* <= 0: off */
} sd_sampler_params_t;

/* SD_ERR_INVALID_ARG naming the field for NaN, temperature < 0, top_p <= 0 or > 1,
 * min_p < 0 or > 1, top_k < 0. */
sd_status_t sd_sampler_params_check(const sd_sampler_params_t *p);

/* Argmax; lowest index wins ties. */
int32_t sd_sample_greedy(const float *logits, int n_vocab);

/* Scratch for sd_sampler_probs: caller-owned, per thread/request. Init: SD_ERR_INVALID_ARG
 * for n_vocab <= 0, SD_ERR_OUT_OF_MEMORY (nothing held); free: NULL is a no-op. */
typedef struct sd_sampler_scratch {
    int n_vocab;
    int32_t *idx; /* [n_vocab] */
    float *val;   /* [n_vocab] */
} sd_sampler_scratch_t;
sd_status_t sd_sampler_scratch_init(sd_sampler_scratch_t *s, int n_vocab);
void sd_sampler_scratch_free(sd_sampler_scratch_t *s);

/* probs[n_vocab]: softmax(logits / T) restricted by top-k, then top-p, then min-p,
 * renormalised; 0 outside the kept set; ties rank by lower index. Greedy (T <= 0): the
 * one-hot at the argmax, also when top-k/top-p lack a scratch of n_vocab (error set). */
void sd_sampler_probs(const sd_sampler_params_t *p, const float *logits, int n_vocab,
                      sd_sampler_scratch_t *scratch, float *probs);
/* Inverse CDF over token order 0..n-1 with u in (0, 1]; always returns a token with
 * probs > 0. */
int32_t sd_sample_from_probs(const float *probs, int n_vocab, float u);
/* sd_sampler_probs + sd_sample_from_probs (greedy when T <= 0). */
int32_t sd_sample(const sd_sampler_params_t *p, const float *logits, int n_vocab, float u,
                  sd_sampler_scratch_t *scratch, float *probs_buf);

#endif
