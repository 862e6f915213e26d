/* Samplers: greedy, temperature, top-k, top-p, min-p.
 *
 * Ranking: tokens are ranked by logit (NaN counts as -inf), then by lower index — a total
 * order, so every selection is deterministic. The softmax weight of a token is
 * w = exp((logit - max) / T) in float (1 exactly for the maximum; 0 for -inf/NaN), which
 * is monotone in the logit, so ranking by logit is ranking by probability.
 *   - top-k: a size-k heap over the vocabulary, O(V log k), then heap-sorted (best first).
 *   - top-p after top-k: a walk down the sorted k.
 *   - top-p alone: O(V) — a histogram of mass over the float bits of the weights finds the
 *     one narrow weight range where the mass crosses top_p; only its tokens are ranked.
 *   - min-p: keep w >= min_p * w_max (w_max = 1).
 * Sums are taken in double in a fixed order. Degenerate logits: if every logit is -inf or
 * NaN the distribution is a one-hot at token 0 (what greedy returns); if some are +inf,
 * those share the mass equally and every finite logit gets 0. */
#include "verify/sampler.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "engine/check.h"

sd_status_t sd_sampler_params_check(const sd_sampler_params_t *p)
{
    if (p == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG, "sampler params are NULL");
    if (isnan(p->temperature) || p->temperature < 0.0f)
        return sd_set_error(SD_ERR_INVALID_ARG, "temperature %g must be >= 0 (0 = greedy)",
                            (double)p->temperature);
    if (p->top_k < 0)
        return sd_set_error(SD_ERR_INVALID_ARG, "top_k %d must be >= 0 (0 = off)", p->top_k);
    if (isnan(p->top_p) || p->top_p <= 0.0f || p->top_p > 1.0f)
        return sd_set_error(SD_ERR_INVALID_ARG, "top_p %g must be in (0, 1] (1 = off)",
                            (double)p->top_p);
    if (isnan(p->min_p) || p->min_p < 0.0f || p->min_p > 1.0f)
        return sd_set_error(SD_ERR_INVALID_ARG, "min_p %g must be in [0, 1] (0 = off)",
                            (double)p->min_p);
    return SD_OK;
}

static inline float rank_key(float logit) { return isnan(logit) ? -INFINITY : logit; }

/* Token a ranks above token b: higher logit, then lower index. */
static inline bool ranks_above(const float *logits, int32_t a, int32_t b)
{
    float ka = rank_key(logits[a]), kb = rank_key(logits[b]);
    return ka > kb || (ka == kb && a < b);
}

int32_t sd_sample_greedy(const float *logits, int n_vocab)
{
    if (logits == NULL || n_vocab <= 0)
        return -1;
    int32_t best = 0;
    float best_key = -INFINITY;
    for (int32_t i = 0; i < n_vocab; i++) {
        float k = rank_key(logits[i]);
        if (k > best_key) { /* strictly: the lower index keeps a tie */
            best_key = k;
            best = i;
        }
    }
    return best;
}

sd_status_t sd_sampler_scratch_init(sd_sampler_scratch_t *s, int n_vocab)
{
    if (s == NULL || n_vocab <= 0)
        return sd_set_error(SD_ERR_INVALID_ARG, "sampler scratch: n_vocab %d must be > 0", n_vocab);
    s->n_vocab = n_vocab;
    s->idx = malloc((size_t)n_vocab * sizeof *s->idx);
    s->val = malloc((size_t)n_vocab * sizeof *s->val);
    if (s->idx == NULL || s->val == NULL) {
        sd_sampler_scratch_free(s);
        return sd_set_error(SD_ERR_OUT_OF_MEMORY, "out of memory allocating sampler scratch for %d tokens",
                            n_vocab);
    }
    return SD_OK;
}

void sd_sampler_scratch_free(sd_sampler_scratch_t *s)
{
    if (s == NULL)
        return;
    free(s->idx);
    free(s->val);
    s->idx = NULL;
    s->val = NULL;
    s->n_vocab = 0;
}

/* heap[0..n): the root outranks its children when best_on_top, else is outranked by them. */
static void sift_down(const float *logits, int32_t *heap, int n, int i, bool best_on_top)
{
    for (;;) {
        int c = 2 * i + 1;
        if (c >= n)
            return;
        if (c + 1 < n && ranks_above(logits, heap[c + 1], heap[c]) == best_on_top)
            c++;
        if (ranks_above(logits, heap[c], heap[i]) != best_on_top)
            return;
        int32_t t = heap[c];
        heap[c] = heap[i];
        heap[i] = t;
        i = c;
    }
}

static void heapify(const float *logits, int32_t *heap, int n, bool best_on_top)
{
    for (int i = n / 2 - 1; i >= 0; i--)
        sift_down(logits, heap, n, i, best_on_top);
}

/* idx[0..k): the k best tokens, best first. 0 < k < n. */
static void select_top_k(const float *logits, int n, int k, int32_t *idx)
{
    for (int32_t i = 0; i < k; i++)
        idx[i] = i;
    heapify(logits, idx, k, false); /* root = worst kept */
    float worst = rank_key(logits[idx[0]]);
    for (int32_t i = k; i < n; i++) {
        /* a later index needs a strictly higher logit to outrank the worst kept */
        if (rank_key(logits[i]) > worst) {
            idx[0] = i;
            sift_down(logits, idx, k, 0, false);
            worst = rank_key(logits[idx[0]]);
        }
    }
    for (int end = k - 1; end > 0; end--) { /* heap sort: worst to the back */
        int32_t t = idx[0];
        idx[0] = idx[end];
        idx[end] = t;
        sift_down(logits, idx, end, 0, false);
    }
}

/* Softmax weight relative to the maximum key m. */
static inline float weight(float logit, float m, float temperature)
{
    float key = rank_key(logit);
    if (key == m)
        return 1.0f;
    float d = (key - m) / temperature; /* -inf (or NaN from inf - inf) gives 0 */
    return d > -INFINITY ? expf(d) : 0.0f;
}

static float max_key(const float *logits, int n)
{
    return rank_key(logits[sd_sample_greedy(logits, n)]);
}

static void one_hot(float *probs, int n, int32_t token)
{
    memset(probs, 0, (size_t)n * sizeof *probs);
    probs[token] = 1.0f;
}

/* list[0..cnt): kept tokens, best first, weights in probs[]. Applies min-p, zeroes the
 * dropped tail, renormalises the rest. */
static void finish_sorted(float min_p, float *probs, const int32_t *list, int cnt)
{
    int keep = 1;
    bool off = !(min_p > 0.0f);
    float threshold = min_p * probs[list[0]];
    while (keep < cnt && (off || probs[list[keep]] >= threshold))
        keep++;
    double sum = 0.0;
    for (int j = 0; j < keep; j++)
        sum += probs[list[j]];
    for (int j = 0; j < keep; j++)
        probs[list[j]] = (float)(probs[list[j]] / sum);
    for (int j = keep; j < cnt; j++)
        probs[list[j]] = 0.0f;
}

/* top-k (then top-p over the top-k mass): only k weights are computed. */
static void probs_top_k(const sd_sampler_params_t *p, const float *logits, int n, int32_t *idx,
                        float *probs)
{
    int k = p->top_k;
    select_top_k(logits, n, k, idx);
    memset(probs, 0, (size_t)n * sizeof *probs);
    float m = rank_key(logits[idx[0]]);
    double total = 0.0;
    for (int j = 0; j < k; j++) {
        probs[idx[j]] = weight(logits[idx[j]], m, p->temperature);
        total += probs[idx[j]];
    }
    int cnt = k;
    if (p->top_p < 1.0f) {
        double target = (double)p->top_p * total, cum = 0.0;
        for (cnt = 0; cnt < k;) {
            cum += probs[idx[cnt++]];
            if (cum >= target)
                break;
        }
        for (int j = cnt; j < k; j++)
            probs[idx[j]] = 0.0f;
    }
    finish_sorted(p->min_p, probs, idx, cnt);
}

/* Weights of every token: probs[n]. */
static void all_weights(const float *logits, int n, float m, float temperature, float *probs)
{
    for (int i = 0; i < n; i++)
        probs[i] = weight(logits[i], m, temperature);
}

/* min-p against w_max = 1 (the maximum is always kept), then renormalise in token order. */
static void finish_unsorted(float min_p, const float *logits, int n, float *probs)
{
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        if (min_p > 0.0f && probs[i] < min_p)
            probs[i] = 0.0f;
        sum += probs[i];
    }
    if (!(sum > 0.0)) { /* min_p > 1 dropped even the maximum */
        one_hot(probs, n, sd_sample_greedy(logits, n));
        return;
    }
    for (int i = 0; i < n; i++)
        probs[i] = (float)(probs[i] / sum);
}

/* The bits of a float in [0, 1] grow with its value: the exponent and top 4 mantissa bits
 * cut the weights into ranges 2^(1/16) wide, ranked like the weights themselves. */
#define WEIGHT_BUCKET_SHIFT 19
#define WEIGHT_BUCKETS ((0x3f800000u >> WEIGHT_BUCKET_SHIFT) + 1) /* 1.0f's bucket + 1 */

static inline uint32_t weight_bucket(float w)
{
    uint32_t bits;
    memcpy(&bits, &w, sizeof bits);
    return bits >> WEIGHT_BUCKET_SHIFT;
}

/* top-p alone, O(V): a histogram of mass per weight bucket finds the bucket where the
 * cumulative mass (from the top) reaches top_p; only that bucket's tokens are ranked
 * (max-heap, popped until the mass is reached). Kept mass is summed bucket by bucket. */
static void probs_top_p(const sd_sampler_params_t *p, const float *logits, int n, float m,
                        int32_t *idx, float *probs)
{
    double mass[WEIGHT_BUCKETS] = {0};
    double total = 0.0;
    for (int i = 0; i < n; i++) {
        probs[i] = weight(logits[i], m, p->temperature);
        mass[weight_bucket(probs[i])] += probs[i];
        total += probs[i];
    }
    double target = (double)p->top_p * total, cum = 0.0;
    uint32_t cut = WEIGHT_BUCKETS - 1;
    while (cut > 0 && cum + mass[cut] < target)
        cum += mass[cut--];
    int h = 0; /* idx[0..h): the cut bucket's tokens; lower buckets are dropped */
    for (int32_t i = 0; i < n; i++) {
        uint32_t b = weight_bucket(probs[i]);
        if (b == cut)
            idx[h++] = i;
        else if (b < cut)
            probs[i] = 0.0f;
    }
    heapify(logits, idx, h, true);
    while (h > 0) {
        int32_t best = idx[0];
        idx[0] = idx[--h];
        sift_down(logits, idx, h, 0, true);
        cum += probs[best];
        if (cum >= target)
            break;
    }
    for (int j = 0; j < h; j++) /* the bucket's tokens ranked below the cut */
        probs[idx[j]] = 0.0f;
    finish_unsorted(p->min_p, logits, n, probs);
}

/* No ranking needed: weights, then min-p and renormalisation. */
static void probs_plain(const sd_sampler_params_t *p, const float *logits, int n, float m,
                        float *probs)
{
    all_weights(logits, n, m, p->temperature, probs);
    finish_unsorted(p->min_p, logits, n, probs);
}

void sd_sampler_probs(const sd_sampler_params_t *p, const float *logits, int n_vocab,
                      sd_sampler_scratch_t *scratch, float *probs)
{
    if (p == NULL || logits == NULL || probs == NULL || n_vocab <= 0)
        return;
    float m = max_key(logits, n_vocab);
    if (!(p->temperature > 0.0f) || m == -INFINITY) {
        one_hot(probs, n_vocab, sd_sample_greedy(logits, n_vocab));
        return;
    }
    bool top_k = p->top_k > 0 && p->top_k < n_vocab;
    bool top_p = p->top_p < 1.0f;
    if (!top_k && !top_p) {
        probs_plain(p, logits, n_vocab, m, probs);
        return;
    }
    if (scratch == NULL || scratch->idx == NULL || scratch->n_vocab < n_vocab) {
        /* No room to rank: report it and fall back to a valid distribution (greedy). */
        sd_set_error(SD_ERR_INVALID_ARG, "sampler scratch holds %d tokens, n_vocab is %d",
                     scratch ? scratch->n_vocab : 0, n_vocab);
        one_hot(probs, n_vocab, sd_sample_greedy(logits, n_vocab));
        return;
    }
    if (top_k)
        probs_top_k(p, logits, n_vocab, scratch->idx, probs);
    else
        probs_top_p(p, logits, n_vocab, m, scratch->idx, probs);
}

int32_t sd_sample_from_probs(const float *probs, int n_vocab, float u)
{
    if (probs == NULL || n_vocab <= 0)
        return -1;
    double total = 0.0;
    for (int i = 0; i < n_vocab; i++)
        total += probs[i] > 0.0f ? probs[i] : 0.0f;
    double target = (double)u * total, cum = 0.0;
    int32_t last = 0;
    for (int32_t i = 0; i < n_vocab; i++) {
        if (!(probs[i] > 0.0f))
            continue;
        cum += probs[i];
        last = i;
        if (cum >= target)
            return i;
    }
    return last; /* rounding left cum short of target, u > 1 or NaN; 0 if nothing > 0 */
}

int32_t sd_sample(const sd_sampler_params_t *p, const float *logits, int n_vocab, float u,
                  sd_sampler_scratch_t *scratch, float *probs_buf)
{
    if (p == NULL || logits == NULL || probs_buf == NULL || n_vocab <= 0)
        return -1;
    sd_sampler_probs(p, logits, n_vocab, scratch, probs_buf);
    if (!(p->temperature > 0.0f))
        return sd_sample_greedy(logits, n_vocab);
    return sd_sample_from_probs(probs_buf, n_vocab, u);
}
