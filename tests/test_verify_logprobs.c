/* Log-probabilities of one row (verify/logprobs.h): against a double-precision log-softmax
 * on random rows of the sizes real vocabularies have, the order of the top tokens (ties to
 * the lower id, NaN last), degenerate rows (-inf, +inf, all equal), and independence from
 * the order of the vocabulary (the sum is exact). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "verify/logprobs.h"

/* A reproducible pseudo-random float in [lo, hi). */
static float uniform(uint64_t *state, float lo, float hi)
{
    *state = *state * 6364136223846793005ull + 1442695040888963407ull;
    return lo + (hi - lo) * (float)((*state >> 40) / 16777216.0);
}

/* ln softmax(logits)[t] in double with libm. */
static double reference(const float *logits, int n, int t)
{
    double m = -INFINITY, s = 0;
    for (int i = 0; i < n; i++) m = logits[i] > m ? logits[i] : m;
    for (int i = 0; i < n; i++) s += exp((double)logits[i] - m);
    return (double)logits[t] - m - log(s);
}

Test(verify_logprobs, matches_a_double_log_softmax, .timeout = 30)
{
    static const int sizes[] = {1, 2, 7, 320, 49152, 151936};
    uint64_t state = 7;
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        int n = sizes[si];
        float *logits = malloc((size_t)n * sizeof *logits);
        for (int i = 0; i < n; i++) logits[i] = uniform(&state, -30.0f, 25.0f);
        for (int trial = 0; trial < 8; trial++) {
            int t = (int)(uniform(&state, 0, 1) * n) % n;
            int32_t top[SD_MAX_TOP_LOGPROBS];
            float top_lp[SD_MAX_TOP_LOGPROBS], lp = 0;
            int count = sd_logprobs_row(logits, n, t, 5, &lp, top, top_lp);
            cr_assert_eq(count, n < 5 ? n : 5);
            double want = reference(logits, n, t);
            cr_assert(fabs(lp - want) <= 1e-6 + 1e-6 * fabs(want), "n %d token %d: %.9g, want %.9g",
                      n, t, lp, want);
            for (int j = 0; j < count; j++)
                cr_assert(fabs(top_lp[j] - reference(logits, n, top[j])) < 1e-5);
        }
        free(logits);
    }
}

Test(verify_logprobs, top_tokens_rank_by_logit_then_id, .timeout = 10)
{
    const float logits[] = {1.0f, 3.0f, NAN, 3.0f, -INFINITY, 2.0f, 3.0f};
    int32_t top[SD_MAX_TOP_LOGPROBS];
    float top_lp[SD_MAX_TOP_LOGPROBS], lp;
    int count = sd_logprobs_row(logits, 7, 0, SD_MAX_TOP_LOGPROBS, &lp, top, top_lp);
    cr_assert_eq(count, 7, "n_top above the vocabulary gives the whole vocabulary");
    static const int32_t want[] = {1, 3, 6, 5, 0, 2, 4}; /* NaN ranks as -inf, before id 4 */
    cr_assert_arr_eq(top, want, sizeof want);
    cr_expect_eq(top_lp[0], top_lp[1], "equal logits, equal log-probabilities");
    cr_expect(top_lp[0] > top_lp[3] && top_lp[3] > top_lp[4]);
    cr_expect(isinf(top_lp[5]) && top_lp[5] < 0, "NaN has probability 0");
    cr_expect(isinf(top_lp[6]) && top_lp[6] < 0, "-inf has probability 0");
    double sum = 0;
    for (int j = 0; j < count; j++) sum += exp(top_lp[j]);
    cr_expect(fabs(sum - 1) < 1e-6, "probabilities sum to %.9f", sum);
    cr_expect_eq(lp, top_lp[4], "token 0's own log-probability");
    cr_assert_eq(sd_logprobs_row(logits, 7, 1, 0, &lp, NULL, NULL), 0, "n_top 0: no top list");
    cr_expect_eq(lp, top_lp[0]);
}

Test(verify_logprobs, degenerate_rows, .timeout = 10)
{
    float lp;
    int32_t top[2];
    float top_lp[2];
    const float flat[4] = {-INFINITY, -INFINITY, NAN, -INFINITY};
    sd_logprobs_row(flat, 4, 2, 2, &lp, top, top_lp);
    cr_expect_float_eq(lp, (float)-log(4.0), 1e-7, "no finite logit: every token alike");
    cr_expect_eq(top[0], 0);
    const float inf[3] = {1.0f, INFINITY, 5.0f};
    sd_logprobs_row(inf, 3, 1, 2, &lp, top, top_lp);
    cr_expect_eq(lp, 0.0f, "+inf takes all the mass");
    cr_expect(isinf(top_lp[1]) && top_lp[1] < 0, "finite logits beside +inf: -inf");
    const float one[1] = {-3.0f};
    sd_logprobs_row(one, 1, 0, 1, &lp, top, top_lp);
    cr_expect_eq(lp, 0.0f);
    const float far[2] = {0.0f, -200.0f}; /* e^-200 underflows a float weight */
    sd_logprobs_row(far, 2, 1, 0, &lp, NULL, NULL);
    cr_expect_float_eq(lp, -200.0f, 1e-4, "a token far below the maximum keeps its value");
}

/* The exact sum makes the result a function of the row as a multiset: any order of the
 * vocabulary gives the same bits for the same token. */
Test(verify_logprobs, same_bits_in_any_vocabulary_order, .timeout = 30)
{
    enum { N = 4096 };
    static float logits[N], shuffled[N];
    static int where[N];
    uint64_t state = 99;
    for (int i = 0; i < N; i++) logits[i] = uniform(&state, -20.0f, 20.0f), where[i] = i;
    for (int i = N - 1; i > 0; i--) {
        int j = (int)(uniform(&state, 0, 1) * (i + 1)) % (i + 1), t = where[i];
        where[i] = where[j], where[j] = t;
    }
    for (int i = 0; i < N; i++) shuffled[where[i]] = logits[i];
    for (int t = 0; t < N; t += 97) {
        float a, b;
        sd_logprobs_row(logits, N, t, 0, &a, NULL, NULL);
        sd_logprobs_row(shuffled, N, where[t], 0, &b, NULL, NULL);
        cr_assert_eq(memcmp(&a, &b, sizeof a), 0, "token %d: %.9g vs %.9g", t, a, b);
    }
}
