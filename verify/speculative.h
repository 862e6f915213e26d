/* Speculative verification: keep the longest prefix of k draft tokens the target agrees
 * with, plus one token of the target's own — greedy, or lossless rejection sampling. The
 * rules and the uniform each decision uses: docs/design-notes.md, "Verification". */
#ifndef SPECDEC_VERIFY_SPECULATIVE_H
#define SPECDEC_VERIFY_SPECULATIVE_H

#include <stdint.h>

#include "specdec/specdec.h"
#include "verify/sampler.h"

/* Caller-owned scratch, one per request (or thread); no allocation per step. */
typedef struct sd_spec_scratch {
    int n_vocab;
    sd_sampler_scratch_t sampler;
    float *p;        /* [n_vocab] the target's filtered distribution at one position */
    float *residual; /* [n_vocab] max(0, p - q) at the rejected position */
} sd_spec_scratch_t;

/* SD_ERR_INVALID_ARG for n_vocab <= 0, SD_ERR_OUT_OF_MEMORY (nothing held). Free releases
 * the buffers (NULL: nothing). */
sd_status_t sd_spec_scratch_init(sd_spec_scratch_t *s, int n_vocab);
void sd_spec_scratch_free(sd_spec_scratch_t *s);

typedef struct sd_spec_result {
    int n_accepted;     /* draft tokens kept, 0..k */
    int32_t next_token; /* the target's token after them: the correction, or the bonus when
                           n_accepted == k. The step emits d[0..n_accepted) + next_token. */
} sd_spec_result_t;

/* Verify draft[k] (k >= 0; d_i at position pos0 + i) against p_logits[k + 1, n_vocab]
 * (row i: the token at pos0 + i). q is [k, n_vocab] (the drafter's distributions) or NULL
 * (deterministic proposals); ignored when greedy. SD_ERR_INVALID_ARG naming the value for:
 * NULL pointers, bad sampler params, k < 0, n_vocab <= 0 or larger than the scratch, a
 * draft token outside [0, n_vocab), a draft token with q_i(d_i) not > 0 (it cannot have
 * been drawn from q_i). *out is written only on SD_OK. */
sd_status_t sd_spec_verify(const sd_sampler_params_t *params, uint64_t seed, uint64_t pos0,
                           const int32_t *draft, const float *q, int k, const float *p_logits,
                           int n_vocab, sd_spec_scratch_t *scratch, sd_spec_result_t *out);

#endif
