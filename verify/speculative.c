/* Speculative verification: greedy prefix match and lossless rejection sampling (the rules
 * and the uniforms each decision uses: docs/design-notes.md, "Verification"). Target rows are
 * turned into distributions one at a time, only up to the first rejection. The
 * arithmetic of each decision (u * q(d) <= p(d) in double, the residual p - q in float)
 * is the one verify/cuda/verify.cu repeats, so the GPU reaches the same result. */
#include "verify/speculative.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>

#include "core/check.h"
#include "verify/philox.h"
#include "verify/sampler_math.h"

sd_status_t sd_spec_scratch_init(sd_spec_scratch_t *s, int n_vocab)
{
    if (s == NULL || n_vocab <= 0)
        return sd_set_error(SD_ERR_INVALID_ARG, "speculative scratch: n_vocab %d must be > 0",
                            n_vocab);
    s->n_vocab = 0;
    s->p = malloc((size_t)n_vocab * sizeof *s->p);
    s->residual = malloc((size_t)n_vocab * sizeof *s->residual);
    sd_status_t st = sd_sampler_scratch_init(&s->sampler, n_vocab);
    if (st != SD_OK || s->p == NULL || s->residual == NULL) {
        if (st == SD_OK)
            sd_sampler_scratch_free(&s->sampler);
        free(s->p);
        free(s->residual);
        s->p = s->residual = NULL;
        return sd_set_error(SD_ERR_OUT_OF_MEMORY,
                            "out of memory allocating speculative scratch for %d tokens", n_vocab);
    }
    s->n_vocab = n_vocab;
    return SD_OK;
}

void sd_spec_scratch_free(sd_spec_scratch_t *s)
{
    if (s == NULL)
        return;
    sd_sampler_scratch_free(&s->sampler);
    free(s->p);
    free(s->residual);
    s->p = s->residual = NULL;
    s->n_vocab = 0;
}

static sd_status_t check_args(const sd_sampler_params_t *params, const int32_t *draft, int k,
                              const float *p_logits, int n_vocab, const sd_spec_scratch_t *scratch,
                              const sd_spec_result_t *out)
{
    return sd_spec_validate_args(params, draft, k, p_logits, n_vocab,
                                 scratch != NULL ? scratch->n_vocab : -1, out);
}

/* Every d_i must have been drawable from q_i: q[k, n_vocab], 0 < q_i(d_i) (finite). */
static sd_status_t check_q(const int32_t *draft, const float *q, int k, int n_vocab)
{
    for (int i = 0; i < k; i++)
        SD_CHECK(sd_spec_validate_q(draft[i], i, q[(size_t)i * n_vocab + draft[i]]));
    return SD_OK;
}

static sd_spec_result_t result(int n_accepted, int32_t next_token)
{
    sd_spec_result_t r = {.n_accepted = n_accepted, .next_token = next_token};
    return r;
}

/* Greedy: the longest prefix equal to the target's argmax, then the argmax after it. */
static sd_spec_result_t verify_greedy(const int32_t *draft, int k, const float *p_logits, int n_vocab)
{
    for (int i = 0; i < k; i++) {
        int32_t best = sd_sample_greedy(p_logits + (size_t)i * n_vocab, n_vocab);
        if (best != draft[i])
            return result(i, best);
    }
    return result(k, sd_sample_greedy(p_logits + (size_t)k * n_vocab, n_vocab));
}

/* The target's own draw at row i / position pos (the number target-only sampling uses). */
static int32_t target_draw(const sd_sampler_params_t *params, uint64_t seed, uint64_t pos,
                           const float *row, int n_vocab, sd_spec_scratch_t *s)
{
    sd_sampler_probs(params, row, n_vocab, &s->sampler, s->p);
    return sd_sample_from_probs(s->p, n_vocab, sd_rng_uniform(seed, pos, SD_RNG_SAMPLE));
}

/* Deterministic proposals (q one-hot at d_i): accept while the target's draw equals d_i. */
static sd_spec_result_t verify_one_hot(const sd_sampler_params_t *params, uint64_t seed,
                                       uint64_t pos0, const int32_t *draft, int k,
                                       const float *p_logits, int n_vocab, sd_spec_scratch_t *s)
{
    for (int i = 0; i < k; i++) {
        int32_t x = target_draw(params, seed, pos0 + (uint64_t)i, p_logits + (size_t)i * n_vocab,
                                n_vocab, s);
        if (x != draft[i])
            return result(i, x);
    }
    return result(k, target_draw(params, seed, pos0 + (uint64_t)k, p_logits + (size_t)k * n_vocab,
                                 n_vocab, s));
}

/* Token at a rejected position: a draw from norm(max(0, p - q)) (from p when that is all
 * zero). p[n_vocab], q[n_vocab]. */
static int32_t residual_draw(const float *p, const float *q, int n_vocab, float u, float *residual)
{
    bool any = false;
    for (int j = 0; j < n_vocab; j++) {
        float r = sd_math_fsub(p[j], q[j]);
        residual[j] = r > 0.0f ? r : 0.0f;
        any = any || residual[j] > 0.0f;
    }
    return sd_sample_from_probs(any ? residual : p, n_vocab, u);
}

/* Rejection sampling against the drafter's distributions q[k, n_vocab]. */
static sd_spec_result_t verify_rejection(const sd_sampler_params_t *params, uint64_t seed,
                                         uint64_t pos0, const int32_t *draft, const float *q, int k,
                                         const float *p_logits, int n_vocab, sd_spec_scratch_t *s)
{
    for (int i = 0; i < k; i++) {
        const float *q_row = q + (size_t)i * n_vocab; /* [n_vocab] */
        float qd = q_row[draft[i]];
        uint64_t pos = pos0 + (uint64_t)i;
        sd_sampler_probs(params, p_logits + (size_t)i * n_vocab, n_vocab, &s->sampler, s->p);
        float u = sd_rng_uniform(seed, pos, SD_RNG_ACCEPT);
        if (sd_math_dmul((double)u, (double)qd) <= (double)s->p[draft[i]])
            continue;
        float ur = sd_rng_uniform(seed, pos, SD_RNG_RESIDUAL);
        return result(i, residual_draw(s->p, q_row, n_vocab, ur, s->residual));
    }
    return result(k, target_draw(params, seed, pos0 + (uint64_t)k, p_logits + (size_t)k * n_vocab,
                                 n_vocab, s));
}

sd_status_t sd_spec_verify(const sd_sampler_params_t *params, uint64_t seed, uint64_t pos0,
                           const int32_t *draft, const float *q, int k, const float *p_logits,
                           int n_vocab, sd_spec_scratch_t *scratch, sd_spec_result_t *out)
{
    SD_CHECK(check_args(params, draft, k, p_logits, n_vocab, scratch, out));
    if (!(params->temperature > 0.0f)) {
        *out = verify_greedy(draft, k, p_logits, n_vocab);
        return SD_OK;
    }
    if (q == NULL) {
        *out = verify_one_hot(params, seed, pos0, draft, k, p_logits, n_vocab, scratch);
        return SD_OK;
    }
    SD_CHECK(check_q(draft, q, k, n_vocab));
    *out = verify_rejection(params, seed, pos0, draft, q, k, p_logits, n_vocab, scratch);
    return SD_OK;
}
