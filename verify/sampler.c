/* Samplers: greedy, temperature, top-k, top-p, min-p.
 *
 * The distribution (the canonical definition the CUDA kernels in verify/cuda/verify.cu
 * reproduce bit for bit; the arithmetic is verify/sampler_math.h):
 *   - rank: logit descending (NaN counts as -inf, -0 == +0), then index ascending — a
 *     total order, so every selection is deterministic. g = the top-ranked token (the
 *     argmax with the lowest index), m = its logit.
 *   - T <= 0, or every logit -inf/NaN: a one-hot at g.
 *   - weight w_i = sd_softmax_weight: 1 exactly when logit_i == m, else e^((logit - m) / T)
 *     in float; if some logits are +inf they get weight 1 and every finite logit 0.
 *   - candidates C: the top_k best-ranked tokens when 0 < top_k < n, else all.
 *   - top-p (top_p < 1): with target = top_p * S(C), keep the shortest rank-order prefix
 *     P of C with S(P) >= target. S(X) is the exact sum of the weights of X rounded once to
 *     double (sd_xsum_value), so S of a prefix only grows along the rank order.
 *   - min-p: drop tokens of P with w < min_p (w_max = 1), never g.
 *   - probs_i = (float)(w_i / S(F)) over the final set F, 0 elsewhere.
 * Only the exact sums, the once-rounded comparisons and ranks decide anything, so any
 * algorithm that finds the same prefix gives the same bits. Here:
 *   - top-k: a size-k heap over the vocabulary, O(V log k), heap-sorted (best first);
 *     top-p then walks the sorted k.
 *   - top-p alone: O(V) radix walk over the rank key bits, 8 bits a level: exact masses
 *     per bucket find the bucket the cut falls in; the last level holds one logit value,
 *     whose tokens are in rank order by index.
 * sd_sample_from_probs walks token order with exact running sums (in parts, then chunks). */
#include "verify/sampler.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "verify/sampler_math.h"

sd_status_t sd_sampler_params_check(const sd_sampler_params_t *p)
{
    return sd_sampler_params_validate(p);
}

/* Token a ranks above token b: higher logit, then lower index. */
static inline bool ranks_above(const float *logits, int32_t a, int32_t b)
{
    float ka = sd_rank_key(logits[a]), kb = sd_rank_key(logits[b]);
    return ka > kb || (ka == kb && a < b);
}

int32_t sd_sample_greedy(const float *logits, int n_vocab)
{
    if (logits == NULL || n_vocab <= 0)
        return -1;
    int32_t best = 0;
    float best_key = -INFINITY;
    for (int32_t i = 0; i < n_vocab; i++) {
        float k = sd_rank_key(logits[i]);
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
    float worst = sd_rank_key(logits[idx[0]]);
    for (int32_t i = k; i < n; i++) {
        /* a later index needs a strictly higher logit to outrank the worst kept */
        if (sd_rank_key(logits[i]) > worst) {
            idx[0] = i;
            sift_down(logits, idx, k, 0, false);
            worst = sd_rank_key(logits[idx[0]]);
        }
    }
    for (int end = k - 1; end > 0; end--) { /* heap sort: worst to the back */
        int32_t t = idx[0];
        idx[0] = idx[end];
        idx[end] = t;
        sift_down(logits, idx, end, 0, false);
    }
}

static void one_hot(float *probs, int n, int32_t token)
{
    memset(probs, 0, (size_t)n * sizeof *probs);
    probs[token] = 1.0f;
}

/* Walks in chunks: one sd_xsum_value per chunk until the chunk the target falls in. */
#define CUM_CHUNK 64

/* Length of the shortest prefix of list[0..cnt) whose exact weight reaches target
 * (cnt when none does). w indexed by token. */
static int prefix_reaching(const float *w, const int32_t *list, int cnt, double target)
{
    sd_xsum_t cum;
    sd_xsum_zero(&cum);
    for (int start = 0; start < cnt; start += CUM_CHUNK) {
        int end = start + CUM_CHUNK < cnt ? start + CUM_CHUNK : cnt;
        sd_xsum_t next = cum;
        for (int j = start; j < end; j++)
            sd_xsum_add(&next, w[list[j]]);
        if (sd_xsum_value(&next) >= target)
            for (int j = start; j < end; j++) {
                sd_xsum_add(&cum, w[list[j]]);
                if (sd_xsum_value(&cum) >= target)
                    return j + 1;
            }
        cum = next;
    }
    return cnt;
}

/* min-p over list[0..cnt) (never g), then renormalise those weights in place. */
static void finish_list(float min_p, int32_t g, float *probs, const int32_t *list, int cnt)
{
    sd_xsum_t sum;
    sd_xsum_zero(&sum);
    for (int j = 0; j < cnt; j++) {
        int32_t t = list[j];
        if (t != g && !sd_min_p_keeps(min_p, probs[t]))
            probs[t] = 0.0f;
        sd_xsum_add(&sum, probs[t]);
    }
    double s = sd_xsum_value(&sum); /* >= 1: g is kept with weight 1 */
    for (int j = 0; j < cnt; j++)
        probs[list[j]] = sd_normalised_prob(probs[list[j]], s);
}

/* min-p over every token (never g), then renormalise. */
static void finish_all(float min_p, int32_t g, int n, float *probs)
{
    sd_xsum_t sum;
    sd_xsum_zero(&sum);
    for (int32_t i = 0; i < n; i++) {
        if (i != g && !sd_min_p_keeps(min_p, probs[i]))
            probs[i] = 0.0f;
        sd_xsum_add(&sum, probs[i]);
    }
    double s = sd_xsum_value(&sum);
    for (int i = 0; i < n; i++)
        probs[i] = sd_normalised_prob(probs[i], s);
}

/* top-k (then top-p over the top-k mass): only k weights are computed. */
static void probs_top_k(const sd_sampler_params_t *p, const float *logits, int n, int32_t g,
                        int32_t *idx, float *probs)
{
    int k = p->top_k;
    select_top_k(logits, n, k, idx); /* idx[0] == g */
    memset(probs, 0, (size_t)n * sizeof *probs);
    float m = sd_rank_key(logits[g]);
    sd_xsum_t total;
    sd_xsum_zero(&total);
    for (int j = 0; j < k; j++) {
        probs[idx[j]] = sd_softmax_weight(logits[idx[j]], m, p->temperature);
        sd_xsum_add(&total, probs[idx[j]]);
    }
    int cnt = k;
    if (p->top_p < 1.0f) {
        double target = sd_math_dmul((double)p->top_p, sd_xsum_value(&total));
        cnt = prefix_reaching(probs, idx, k, target);
        for (int j = cnt; j < k; j++)
            probs[idx[j]] = 0.0f;
    }
    finish_list(p->min_p, g, probs, idx, cnt);
}

/* Radix levels over the 32 bits of sd_rank_ord, most significant byte first. */
#define RADIX_LEVELS 4
#define RADIX_BUCKETS 256

static inline uint32_t radix_bucket(float logit, int level)
{
    return (sd_rank_ord(logit) >> (24 - 8 * level)) & (RADIX_BUCKETS - 1);
}

/* The bucket (from the top) where above + the masses of the buckets down to it first
 * reach target; `above` becomes the mass of the buckets strictly above it. */
static uint32_t cut_bucket(const sd_xsum_t mass[RADIX_BUCKETS], sd_xsum_t *above, double target)
{
    uint32_t b = RADIX_BUCKETS - 1;
    for (;; b--) {
        sd_xsum_t next = *above;
        sd_xsum_merge(&next, &mass[b]);
        if (b == 0 || sd_xsum_value(&next) >= target)
            return b;
        *above = next;
    }
}

/* top-p alone, O(V). Level 0 buckets every token by the top byte of its rank key; the
 * cut bucket's tokens (in idx, index order) are bucketed by the next byte, and so on;
 * tokens in buckets below a cut bucket are dropped, above it kept. After four levels the
 * candidates share one logit value, so index order is rank order: walk it. */
static void probs_top_p(const sd_sampler_params_t *p, const float *logits, int n, int32_t g,
                        int32_t *idx, float *probs)
{
    float m = sd_rank_key(logits[g]);
    sd_xsum_t mass[RADIX_BUCKETS], total, above;
    sd_xsum_zero(&total);
    for (int b = 0; b < RADIX_BUCKETS; b++)
        sd_xsum_zero(&mass[b]);
    for (int i = 0; i < n; i++) {
        probs[i] = sd_softmax_weight(logits[i], m, p->temperature);
        sd_xsum_add(&mass[radix_bucket(logits[i], 0)], probs[i]);
    }
    for (int b = 0; b < RADIX_BUCKETS; b++)
        sd_xsum_merge(&total, &mass[b]);
    double target = sd_math_dmul((double)p->top_p, sd_xsum_value(&total));
    sd_xsum_zero(&above); /* the exact mass of every token ranked above the candidates */
    uint32_t cut = cut_bucket(mass, &above, target);
    int h = 0; /* idx[0..h): candidates, in index order */
    for (int32_t i = 0; i < n; i++) {
        uint32_t b = radix_bucket(logits[i], 0);
        if (b == cut)
            idx[h++] = i;
        else if (b < cut)
            probs[i] = 0.0f;
    }
    for (int level = 1; level < RADIX_LEVELS; level++) {
        for (int b = 0; b < RADIX_BUCKETS; b++)
            sd_xsum_zero(&mass[b]);
        for (int j = 0; j < h; j++)
            sd_xsum_add(&mass[radix_bucket(logits[idx[j]], level)], probs[idx[j]]);
        cut = cut_bucket(mass, &above, target);
        int kept = 0;
        for (int j = 0; j < h; j++) {
            uint32_t b = radix_bucket(logits[idx[j]], level);
            if (b == cut)
                idx[kept++] = idx[j];
            else if (b < cut)
                probs[idx[j]] = 0.0f;
        }
        h = kept;
    }
    int j = 0; /* one logit value left: the first prefix reaching target ends the kept set */
    while (j < h) {
        sd_xsum_add(&above, probs[idx[j++]]);
        if (sd_xsum_value(&above) >= target)
            break;
    }
    for (; j < h; j++)
        probs[idx[j]] = 0.0f;
    finish_all(p->min_p, g, n, probs);
}

/* No ranking needed: weights, then min-p and renormalisation. */
static void probs_plain(const sd_sampler_params_t *p, const float *logits, int n, int32_t g,
                        float *probs)
{
    float m = sd_rank_key(logits[g]);
    for (int i = 0; i < n; i++)
        probs[i] = sd_softmax_weight(logits[i], m, p->temperature);
    finish_all(p->min_p, g, n, probs);
}

void sd_sampler_probs(const sd_sampler_params_t *p, const float *logits, int n_vocab,
                      sd_sampler_scratch_t *scratch, float *probs)
{
    if (p == NULL || logits == NULL || probs == NULL || n_vocab <= 0)
        return;
    int32_t g = sd_sample_greedy(logits, n_vocab);
    if (!(p->temperature > 0.0f) || sd_rank_key(logits[g]) == -INFINITY) {
        one_hot(probs, n_vocab, g);
        return;
    }
    bool top_k = p->top_k > 0 && p->top_k < n_vocab;
    bool top_p = p->top_p < 1.0f;
    if (!top_k && !top_p) {
        probs_plain(p, logits, n_vocab, g, probs);
        return;
    }
    if (scratch == NULL || scratch->idx == NULL || scratch->n_vocab < n_vocab) {
        /* No room to rank: report it and fall back to a valid distribution (greedy). */
        sd_set_error(SD_ERR_INVALID_ARG, "sampler scratch holds %d tokens, n_vocab is %d",
                     scratch ? scratch->n_vocab : 0, n_vocab);
        one_hot(probs, n_vocab, g);
        return;
    }
    if (top_k)
        probs_top_k(p, logits, n_vocab, g, scratch->idx, probs);
    else
        probs_top_p(p, logits, n_vocab, g, scratch->idx, probs);
}

/* The first token in [start, end) with probs > 0 at which the exact running mass, *cum
 * plus the tokens from start, reaches target; -1 if none. Advances *cum. */
static int32_t first_reaching(const float *probs, int start, int end, sd_xsum_t *cum, double target)
{
    for (int from = start; from < end; from += CUM_CHUNK) {
        int to = from + CUM_CHUNK < end ? from + CUM_CHUNK : end;
        sd_xsum_t next = *cum;
        for (int i = from; i < to; i++)
            sd_xsum_add(&next, probs[i]);
        if (sd_xsum_value(&next) >= target)
            for (int32_t i = from; i < to; i++) {
                if (!(probs[i] > 0.0f))
                    continue;
                sd_xsum_add(cum, probs[i]);
                if (sd_xsum_value(cum) >= target)
                    return i;
            }
        *cum = next;
    }
    return -1;
}

/* Token order is cut into CDF_PARTS parts, summed in one pass; the walk then converts
 * one running sum per part, per 64 tokens of the part the target falls in, then per token. */
#define CDF_PARTS 64

/* The first token i with probs[i] > 0 whose exact running mass (over tokens 0..i) reaches
 * u * the exact total; the last token with probs > 0 if none does (u > 1, NaN); 0 if no
 * token has probs > 0. Values that are not > 0 count as 0. */
int32_t sd_sample_from_probs(const float *probs, int n_vocab, float u)
{
    if (probs == NULL || n_vocab <= 0)
        return -1;
    int part = (n_vocab + CDF_PARTS - 1) / CDF_PARTS; /* tokens per part */
    sd_xsum_t mass[CDF_PARTS], total, cum;
    sd_xsum_zero(&total);
    for (int c = 0; c < CDF_PARTS; c++) {
        sd_xsum_zero(&mass[c]);
        int end = (c + 1) * part < n_vocab ? (c + 1) * part : n_vocab;
        for (int i = c * part; i < end; i++)
            sd_xsum_add(&mass[c], probs[i]);
        sd_xsum_merge(&total, &mass[c]);
    }
    double target = sd_math_dmul((double)u, sd_xsum_value(&total));
    sd_xsum_zero(&cum);
    for (int c = 0; c < CDF_PARTS && c * part < n_vocab; c++) {
        sd_xsum_t next = cum;
        sd_xsum_merge(&next, &mass[c]);
        if (sd_xsum_value(&next) >= target) {
            int end = (c + 1) * part < n_vocab ? (c + 1) * part : n_vocab;
            int32_t i = first_reaching(probs, c * part, end, &cum, target);
            if (i >= 0)
                return i;
        }
        cum = next;
    }
    for (int32_t i = n_vocab - 1; i >= 0; i--)
        if (probs[i] > 0.0f)
            return i;
    return 0;
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
