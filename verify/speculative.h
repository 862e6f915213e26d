/* Speculative verification: keep the longest prefix of k draft tokens the target agrees
 * with, plus one token of the target's own — greedy (exact) or by lossless rejection
 * sampling (the emitted tokens are distributed exactly as target-only sampling with the
 * same sampler settings).
 *
 * Positions: the draft tokens d[0..k) stand at absolute positions pos0 .. pos0+k-1;
 * row i of the target's logits is the distribution of the token at position pos0 + i
 * (so row k is the bonus position). Every uniform is sd_rng_uniform(seed, position,
 * purpose): a token's randomness depends only on the request seed, its position and
 * what the number is for — never on k, batching or timing.
 *
 * Sampling (temperature > 0), p_i = sd_sampler_probs(params, logits row i):
 *   - with the drafter's distributions q (rows of [k, n_vocab], the drafter's own
 *     distribution after the same sampler settings, d_i drawn from q_i): accept d_i iff
 *     u * q_i(d_i) <= p_i(d_i), u = uniform(pos0+i, SD_RNG_ACCEPT) in (0, 1] — i.e. with
 *     probability min(1, p/q). At the first rejection, the token at pos0+i is drawn from
 *     norm(max(0, p_i - q_i)) with uniform(pos0+i, SD_RNG_RESIDUAL) (from p_i itself in
 *     the one case the residual has no mass: p_i == q_i up to rounding, where a rejection
 *     has probability 0 anyway).
 *   - with q == NULL the proposals are deterministic (q_i = one-hot at d_i: the n-gram
 *     drafter, a model drafting greedily). Then the target's own token is drawn,
 *     x_i = inverse-CDF of p_i at uniform(pos0+i, SD_RNG_SAMPLE), and d_i is accepted iff
 *     x_i == d_i; else x_i is emitted. This is the same rejection rule with a particular
 *     coupling — P(accept) = p_i(d_i) = min(1, p/q), and a rejected step emits p_i
 *     conditioned on x != d_i = norm(max(0, p_i - one_hot(d_i))) — so it is lossless, and
 *     moreover emits exactly the tokens target-only sampling emits for the same seed.
 *   - all k accepted: the bonus token is drawn from p_k with uniform(pos0+k,
 *     SD_RNG_SAMPLE) — the number target-only sampling uses at that position. So k = 0
 *     is target-only sampling, and a drafter that samples q == p with SD_RNG_SAMPLE
 *     uniforms reproduces target-only sampling token for token.
 * Greedy (temperature <= 0): accept d_i while d_i == argmax(row i) (sd_sample_greedy);
 * the next token is the argmax of the first mismatching row (or of row k). q is ignored.
 */
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

sd_status_t sd_spec_scratch_init(sd_spec_scratch_t *s, int n_vocab);
void sd_spec_scratch_free(sd_spec_scratch_t *s);

typedef struct sd_spec_result {
    int n_accepted;     /* draft tokens kept, 0..k */
    int32_t next_token; /* the target's token after them: the correction, or the bonus when
                           n_accepted == k. The step emits d[0..n_accepted) + next_token. */
} sd_spec_result_t;

/* Verify draft[k] (k >= 0) against p_logits[k + 1, n_vocab]. q is [k, n_vocab] (the
 * drafter's distributions) or NULL (deterministic proposals); ignored when greedy.
 * SD_ERR_INVALID_ARG naming the value for: NULL pointers, bad sampler params, k < 0,
 * n_vocab <= 0 or larger than the scratch, a draft token outside [0, n_vocab), a draft
 * token with q_i(d_i) not > 0 (it cannot have been drawn from q_i). *out is written only
 * on SD_OK. */
sd_status_t sd_spec_verify(const sd_sampler_params_t *params, uint64_t seed, uint64_t pos0,
                           const int32_t *draft, const float *q, int k, const float *p_logits,
                           int n_vocab, sd_spec_scratch_t *scratch, sd_spec_result_t *out);

#endif
