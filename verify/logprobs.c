/* Log-softmax of one row (verify/logprobs.h). With m the largest rank key (NaN as -inf):
 * S = the exact sum of sd_softmax_weight(l_j, m, 1) = e^(l_j - m) (the samplers' weights,
 * sd_xsum: order-free) rounded once to double, and
 *   ln p(t) = -ln S                       when l_t == m,
 *           = ((double)l_t - m) - ln S    otherwise (-inf for l_t = -inf or NaN),
 * rounded once to float. ln is the C library's log in double; every step is a function of
 * the row's bits alone, so the same row gives the same bits in any batch or step. */
#include "verify/logprobs.h"

#include <math.h>

#include "verify/sampler_math.h"

static float logprob_of(float logit, float m, double ln_sum)
{
    float key = sd_rank_key(logit);
    if (key == m) return (float)-ln_sum;
    if (key == -INFINITY) return -INFINITY;
    return (float)(((double)key - (double)m) - ln_sum);
}

/* Insert token i (rank r) into the n best so far (ranks[count], sorted descending). */
static void keep_best(uint64_t *ranks, int32_t *ids, int *count, int n, uint64_t r, int32_t i)
{
    if (*count == n && r <= ranks[n - 1]) return;
    int j = *count < n ? (*count)++ : n - 1;
    for (; j > 0 && ranks[j - 1] < r; j--) {
        ranks[j] = ranks[j - 1];
        ids[j] = ids[j - 1];
    }
    ranks[j] = r;
    ids[j] = i;
}

int sd_logprobs_row(const float *logits, int n_vocab, int32_t token, int n_top,
                     float *logprob, int32_t *top_tokens, float *top_logprobs)
{
    float m = -INFINITY;
    for (int i = 0; i < n_vocab; i++) {
        float k = sd_rank_key(logits[i]);
        m = k > m ? k : m;
    }
    sd_xsum_t sum;
    sd_xsum_zero(&sum);
    uint64_t ranks[SD_MAX_TOP_LOGPROBS];
    int count = 0, keep = n_top < SD_MAX_TOP_LOGPROBS ? n_top : SD_MAX_TOP_LOGPROBS;
    for (int i = 0; i < n_vocab; i++) {
        /* every key equals m when m is -inf: each weighs 1, ln p = -ln n_vocab */
        sd_xsum_add(&sum, sd_softmax_weight(logits[i], m, 1.0f));
        if (keep > 0) keep_best(ranks, top_tokens, &count, keep, sd_rank_of(logits[i], i, n_vocab), i);
    }
    double ln_sum = log(sd_xsum_value(&sum));
    *logprob = logprob_of(logits[token], m, ln_sum);
    for (int j = 0; j < count; j++) top_logprobs[j] = logprob_of(logits[top_tokens[j]], m, ln_sum);
    return count;
}
