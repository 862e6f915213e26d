/* Samplers: each filter on hand-computed cases, tie-breaking, degenerate logits, a
 * brute-force (full sort) reference on random logits, and draw frequencies (chi-square)
 * from Philox uniforms. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "verify/philox.h"
#include "verify/sampler.h"

static sd_sampler_params_t params(float t, int k, float top_p, float min_p)
{
    sd_sampler_params_t p = {.temperature = t, .top_k = k, .top_p = top_p, .min_p = min_p};
    return p;
}

/* probs[n] for logits[n] through a fresh scratch. */
static void probs_of(sd_sampler_params_t p, const float *logits, int n, float *probs)
{
    sd_sampler_scratch_t s;
    cr_assert_eq(sd_sampler_scratch_init(&s, n), SD_OK);
    sd_sampler_probs(&p, logits, n, &s, probs);
    sd_sampler_scratch_free(&s);
}

static void assert_probs(const float *got, const double *want, int n)
{
    for (int i = 0; i < n; i++)
        cr_assert(fabs(got[i] - want[i]) < 1e-6, "token %d: prob %.9f, want %.9f", i, got[i], want[i]);
}

/* logits whose softmax at T = 1 is exactly the given distribution (up to float rounding) */
static void logits_from_probs(const double *p, int n, float *logits)
{
    for (int i = 0; i < n; i++)
        logits[i] = p[i] > 0 ? (float)log(p[i]) : -INFINITY;
}

Test(verify_sampler, params_check_names_the_field, .timeout = 10)
{
    struct {
        sd_sampler_params_t p;
        const char *field;
    } bad[] = {
        {params(-0.1f, 0, 1, 0), "temperature"}, {params(NAN, 0, 1, 0), "temperature"},
        {params(1, -1, 1, 0), "top_k"},          {params(1, 0, 0, 0), "top_p"},
        {params(1, 0, 1.01f, 0), "top_p"},       {params(1, 0, NAN, 0), "top_p"},
        {params(1, 0, 1, -0.01f), "min_p"},      {params(1, 0, 1, 1.5f), "min_p"},
        {params(1, 0, 1, NAN), "min_p"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(sd_sampler_params_check(&bad[i].p), SD_ERR_INVALID_ARG, "case %zu", i);
        cr_assert(strstr(sd_last_error(), bad[i].field) != NULL, "case %zu: '%s' lacks '%s'", i,
                  sd_last_error(), bad[i].field);
    }
    cr_assert_eq(sd_sampler_params_check(NULL), SD_ERR_INVALID_ARG);
    sd_sampler_params_t ok[] = {params(0, 0, 1, 0), params(0.7f, 40, 0.9f, 0.05f),
                                params(2, 1, 1e-6f, 1)};
    for (size_t i = 0; i < 3; i++)
        cr_assert_eq(sd_sampler_params_check(&ok[i]), SD_OK, "ok case %zu: %s", i, sd_last_error());
}

Test(verify_sampler, greedy_lowest_index_wins_ties, .timeout = 10)
{
    float a[] = {1, 3, 3, 2};
    cr_assert_eq(sd_sample_greedy(a, 4), 1);
    float b[] = {NAN, 1, NAN, -INFINITY};
    cr_assert_eq(sd_sample_greedy(b, 4), 1, "NaN ranks as -inf");
    float c[] = {NAN, NAN, -INFINITY};
    cr_assert_eq(sd_sample_greedy(c, 3), 0, "nothing finite: token 0");
    float d[] = {5, INFINITY, 7, INFINITY};
    cr_assert_eq(sd_sample_greedy(d, 4), 1);
    cr_assert_eq(sd_sample_greedy(a, 0), -1);
    cr_assert_eq(sd_sample_greedy(NULL, 4), -1);
}

Test(verify_sampler, temperature_zero_is_one_hot, .timeout = 10)
{
    float logits[] = {0.5f, 2, -1, 2};
    float probs[4];
    probs_of(params(0, 0, 1, 0), logits, 4, probs);
    double want[] = {0, 1, 0, 0};
    assert_probs(probs, want, 4);
    sd_sampler_params_t p = params(0, 0, 1, 0);
    cr_assert_eq(sd_sample(&p, logits, 4, 0.999f, NULL, probs), 1);
}

Test(verify_sampler, softmax_with_temperature, .timeout = 10)
{
    float logits[] = {0, (float)M_LN2};
    float probs[3];
    probs_of(params(1, 0, 1, 0), logits, 2, probs);
    double want1[] = {1.0 / 3, 2.0 / 3};
    assert_probs(probs, want1, 2);
    probs_of(params(0.5f, 0, 1, 0), logits, 2, probs); /* weights 1 : 4 */
    double want2[] = {0.2, 0.8};
    assert_probs(probs, want2, 2);
    float big[] = {1000, 999, -1000};
    probs_of(params(1, 0, 1, 0), big, 3, probs);
    double e = exp(-1.0);
    double want3[] = {1 / (1 + e), e / (1 + e), 0};
    assert_probs(probs, want3, 3);
}

Test(verify_sampler, top_k_keeps_the_k_largest, .timeout = 10)
{
    float logits[] = {1, 2, 3, 0};
    float probs[4];
    probs_of(params(1, 2, 1, 0), logits, 4, probs);
    double e = exp(-1.0);
    double want[] = {0, e / (1 + e), 1 / (1 + e), 0};
    assert_probs(probs, want, 4);
    float flat[] = {4, 4, 4, 4, 4};
    float p5[5];
    probs_of(params(1, 2, 1, 0), flat, 5, p5);
    double want_flat[] = {0.5, 0.5, 0, 0, 0};
    assert_probs(p5, want_flat, 5);
    probs_of(params(1, 9, 1, 0), logits, 4, probs); /* k >= n: off */
    double s = exp(-3.0) + exp(-2.0) + exp(-1.0) + 1;
    double want_all[] = {exp(-2.0) / s, exp(-1.0) / s, 1 / s, exp(-3.0) / s};
    assert_probs(probs, want_all, 4);
}

Test(verify_sampler, top_p_keeps_the_smallest_prefix, .timeout = 10)
{
    double dist[] = {0.3, 0.5, 0.2};
    float logits[3], probs[3];
    logits_from_probs(dist, 3, logits);
    probs_of(params(1, 0, 0.7f, 0), logits, 3, probs);
    double want07[] = {0.375, 0.625, 0};
    assert_probs(probs, want07, 3);
    probs_of(params(1, 0, 0.45f, 0), logits, 3, probs);
    double want045[] = {0, 1, 0};
    assert_probs(probs, want045, 3);
    probs_of(params(1, 0, 0.81f, 0), logits, 3, probs);
    assert_probs(probs, dist, 3);
    probs_of(params(1, 0, 1e-6f, 0), logits, 3, probs); /* tiny: the argmax alone */
    assert_probs(probs, want045, 3);
}

Test(verify_sampler, top_p_ties_go_to_lower_index, .timeout = 10)
{
    float flat[] = {0, 0, 0, 0};
    float probs[4];
    probs_of(params(1, 0, 0.3f, 0), flat, 4, probs);
    double want[] = {0.5, 0.5, 0, 0};
    assert_probs(probs, want, 4);
}

Test(verify_sampler, min_p_relative_to_the_max, .timeout = 10)
{
    double dist[] = {0.2, 0.5, 0.3};
    float logits[3], probs[3];
    logits_from_probs(dist, 3, logits);
    probs_of(params(1, 0, 1, 0.5f), logits, 3, probs); /* threshold 0.25 */
    double want[] = {0, 0.625, 0.375};
    assert_probs(probs, want, 3);
    probs_of(params(1, 0, 1, 0.61f), logits, 3, probs); /* 0.3 / 0.5 = 0.6 < 0.61 */
    double want_one[] = {0, 1, 0};
    assert_probs(probs, want_one, 3);
    probs_of(params(1, 0, 1, 1.0f), logits, 3, probs); /* min_p = 1: the maximum only */
    assert_probs(probs, want_one, 3);
    float ties[] = {2, 1, 2, 2}; /* p >= min_p * p_max keeps every token equal to the max */
    float p4[4];
    double want_ties[] = {1.0 / 3, 0, 1.0 / 3, 1.0 / 3};
    probs_of(params(1, 0, 1, 1.0f), ties, 4, p4);
    assert_probs(p4, want_ties, 4);
    probs_of(params(1, 3, 0.99f, 1.0f), ties, 4, p4); /* the same through the ranked path */
    assert_probs(p4, want_ties, 4);
}

Test(verify_sampler, filters_apply_in_order_k_then_p_then_min_p, .timeout = 10)
{
    /* top-k 3 keeps {1, 3, 4} = .4 .25 .2 (mass .85); top-p .7 over that mass keeps
     * {1, 3} (.4706 < .7 <= .7647); min-p .6 keeps both (.25 / .4 = .625). */
    double dist[] = {0.05, 0.4, 0.1, 0.25, 0.2};
    float logits[5], probs[5];
    logits_from_probs(dist, 5, logits);
    probs_of(params(1, 3, 0.7f, 0.6f), logits, 5, probs);
    double want[] = {0, 0.4 / 0.65, 0, 0.25 / 0.65, 0};
    assert_probs(probs, want, 5);
    probs_of(params(1, 3, 0.7f, 0.7f), logits, 5, probs); /* .625 < .7: token 1 only */
    double want_one[] = {0, 1, 0, 0, 0};
    assert_probs(probs, want_one, 5);
    probs_of(params(1, 3, 1, 0), logits, 5, probs); /* top-p over the top-k set */
    double want_k[] = {0, 0.4 / 0.85, 0, 0.25 / 0.85, 0.2 / 0.85};
    assert_probs(probs, want_k, 5);
}

Test(verify_sampler, degenerate_logits, .timeout = 10)
{
    float probs[4];
    float nan_inf[] = {NAN, 0, -INFINITY, 0};
    probs_of(params(1, 0, 0.99f, 0), nan_inf, 4, probs);
    double want_nan[] = {0, 0.5, 0, 0.5};
    assert_probs(probs, want_nan, 4);
    float none[] = {NAN, -INFINITY, NAN, -INFINITY};
    sd_sampler_params_t variants[] = {params(1, 0, 1, 0), params(1, 2, 1, 0), params(1, 0, 0.5f, 0),
                                      params(1, 0, 1, 0.1f)};
    double want_none[] = {1, 0, 0, 0};
    for (int v = 0; v < 4; v++) {
        probs_of(variants[v], none, 4, probs);
        assert_probs(probs, want_none, 4);
    }
    /* +inf logits share the mass; top-p 0.5 then keeps the lower index alone. */
    float pos_inf[] = {3, INFINITY, NAN, INFINITY};
    double want_inf[][4] = {{0, 0.5, 0, 0.5}, {0, 0.5, 0, 0.5}, {0, 1, 0, 0}, {0, 0.5, 0, 0.5}};
    for (int v = 0; v < 4; v++) {
        probs_of(variants[v], pos_inf, 4, probs);
        assert_probs(probs, want_inf[v], 4);
    }
}

Test(verify_sampler, from_probs_is_the_inverse_cdf, .timeout = 10)
{
    float probs[] = {0.25f, 0, 0.5f, 0.25f};
    cr_assert_eq(sd_sample_from_probs(probs, 4, 0x1p-33f), 0);
    cr_assert_eq(sd_sample_from_probs(probs, 4, 0.25f), 0);
    cr_assert_eq(sd_sample_from_probs(probs, 4, 0.2500001f), 2);
    cr_assert_eq(sd_sample_from_probs(probs, 4, 0.75f), 2);
    cr_assert_eq(sd_sample_from_probs(probs, 4, 0.7500001f), 3);
    cr_assert_eq(sd_sample_from_probs(probs, 4, 1.0f), 3);
    float tail_zero[] = {0.5f, 0.5f, 0, 0};
    cr_assert_eq(sd_sample_from_probs(tail_zero, 4, 1.0f), 1, "never a zero-probability token");
    cr_assert_eq(sd_sample_from_probs(tail_zero, 4, 2.0f), 1);
    cr_assert_eq(sd_sample_from_probs(tail_zero, 4, NAN), 1);
    float zero[] = {0, 0};
    cr_assert_eq(sd_sample_from_probs(zero, 2, 0.5f), 0);
    cr_assert_eq(sd_sample_from_probs(zero, 0, 0.5f), -1);
}

Test(verify_sampler, from_probs_unnormalised_and_rounding, .timeout = 10)
{
    /* 0.1f * 10 sums to slightly more than 1 in float; the walk is relative to the total. */
    float probs[12] = {0};
    for (int i = 0; i < 10; i++)
        probs[i] = 0.1f;
    cr_assert_eq(sd_sample_from_probs(probs, 12, 1.0f), 9);
    cr_assert_eq(sd_sample_from_probs(probs, 12, 0.05f), 0);
    float scaled[] = {2, 6}; /* mass 8: u <= .25 -> 0 */
    cr_assert_eq(sd_sample_from_probs(scaled, 2, 0.25f), 0);
    cr_assert_eq(sd_sample_from_probs(scaled, 2, 0.26f), 1);
}

/* Random logits with many ties (quantised to 1/8) for the reference comparisons. */
static void random_logits(sd_philox_t *rng, float *logits, int n, float scale)
{
    for (int i = 0; i < n; i++)
        logits[i] = floorf(sd_philox_uniform(rng) * scale * 8.0f) / 8.0f;
}

static const float *g_logits;
static int by_rank(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (g_logits[x] != g_logits[y])
        return g_logits[x] > g_logits[y] ? -1 : 1;
    return x < y ? -1 : 1;
}

/* Reference: full sort, then the header's definition step by step. */
static void reference_probs(sd_sampler_params_t p, const float *logits, int n, double *out)
{
    int32_t *order = malloc((size_t)n * sizeof *order);
    double *w = malloc((size_t)n * sizeof *w);
    cr_assert(order && w);
    for (int i = 0; i < n; i++)
        order[i] = i;
    g_logits = logits;
    qsort(order, (size_t)n, sizeof *order, by_rank);
    float m = logits[order[0]];
    for (int i = 0; i < n; i++)
        w[i] = expf((logits[i] - m) / p.temperature);
    int cnt = p.top_k > 0 && p.top_k < n ? p.top_k : n;
    double mass = 0, cum = 0; /* over the top-k in rank order, else in token order */
    for (int j = 0; j < cnt; j++)
        mass += w[cnt < n ? order[j] : j];
    int keep = 0;
    while (keep < cnt && (p.top_p >= 1 || keep == 0 || cum < p.top_p * mass))
        cum += w[order[keep++]];
    int kept_p = keep;
    keep = 1;
    while (keep < kept_p && w[order[keep]] >= p.min_p * w[order[0]])
        keep++;
    double sum = 0;
    for (int j = 0; j < keep; j++)
        sum += w[order[j]];
    for (int i = 0; i < n; i++)
        out[i] = 0;
    for (int j = 0; j < keep; j++)
        out[order[j]] = w[order[j]] / sum;
    free(order);
    free(w);
}

Test(verify_sampler, matches_full_sort_reference, .timeout = 60)
{
    enum { N = 3000 };
    static float logits[N], probs[N];
    static double want[N];
    sd_sampler_params_t cases[] = {
        params(1, 0, 1, 0),      params(0.7f, 40, 1, 0),   params(1.3f, 0, 0.9f, 0),
        params(1, 0, 1, 0.05f),  params(0.8f, 50, 0.8f, 0.02f), params(1, 1, 1, 0),
        params(2, N - 1, 0.95f, 0), params(0.5f, 0, 0.5f, 0.1f), params(1, 7, 0.99f, 0.3f),
    };
    sd_philox_t rng;
    sd_philox_init(&rng, 11, 0, 0);
    sd_sampler_scratch_t s;
    cr_assert_eq(sd_sampler_scratch_init(&s, N), SD_OK);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int trial = 0; trial < 3; trial++) {
            random_logits(&rng, logits, N, trial == 0 ? 4.0f : 20.0f);
            sd_sampler_probs(&cases[c], logits, N, &s, probs);
            reference_probs(cases[c], logits, N, want);
            for (int i = 0; i < N; i++) {
                cr_assert_eq(probs[i] > 0, want[i] > 0, "case %zu trial %d token %d: kept %d vs %d",
                             c, trial, i, probs[i] > 0, want[i] > 0);
                cr_assert(fabs(probs[i] - want[i]) < 1e-6, "case %zu trial %d token %d", c, trial, i);
            }
        }
    sd_sampler_scratch_free(&s);
}

Test(verify_sampler, probs_sum_to_one_at_vocab_size, .timeout = 60)
{
    enum { V = 49152 };
    static float logits[V], probs[V];
    sd_philox_t rng;
    sd_philox_init(&rng, 3, 0, 0);
    for (int i = 0; i < V; i++)
        logits[i] = (sd_philox_uniform(&rng) - 0.5f) * 30.0f;
    sd_sampler_params_t cases[] = {params(1, 0, 1, 0), params(0.7f, 40, 0.9f, 0.05f),
                                   params(1.5f, 0, 0.95f, 0), params(1, 0, 1, 0.5f),
                                   params(3, 20000, 1, 0)};
    sd_sampler_scratch_t s;
    cr_assert_eq(sd_sampler_scratch_init(&s, V), SD_OK);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        sd_sampler_probs(&cases[c], logits, V, &s, probs);
        double sum = 0;
        for (int i = 0; i < V; i++) {
            cr_assert(probs[i] >= 0 && probs[i] <= 1);
            sum += probs[i];
        }
        cr_assert(fabs(sum - 1) < 1e-5, "case %zu: sum %.9f", c, sum);
    }
    sd_sampler_scratch_free(&s);
}

Test(verify_sampler, top_k_one_and_tiny_top_p_equal_greedy, .timeout = 30)
{
    enum { N = 500 };
    static float logits[N], probs[N];
    sd_philox_t rng;
    sd_philox_init(&rng, 5, 0, 0);
    sd_sampler_scratch_t s;
    cr_assert_eq(sd_sampler_scratch_init(&s, N), SD_OK);
    sd_sampler_params_t k1 = params(1.2f, 1, 1, 0), tiny_p = params(0.9f, 0, 1e-7f, 0);
    for (int trial = 0; trial < 50; trial++) {
        random_logits(&rng, logits, N, 2.0f); /* many ties at the top */
        int32_t g = sd_sample_greedy(logits, N);
        float u = sd_philox_uniform(&rng);
        cr_assert_eq(sd_sample(&k1, logits, N, u, &s, probs), g, "trial %d", trial);
        cr_assert(probs[g] == 1.0f);
        cr_assert_eq(sd_sample(&tiny_p, logits, N, u, &s, probs), g, "trial %d", trial);
    }
    sd_sampler_scratch_free(&s);
}

Test(verify_sampler, top_p_one_is_off, .timeout = 10)
{
    float logits[] = {0.1f, -2, 3, 0.7f, 3};
    float a[5], b[5];
    probs_of(params(0.9f, 0, 1, 0), logits, 5, a);
    probs_of(params(0.9f, 0, 1.0f, 0), logits, 5, b);
    cr_assert(memcmp(a, b, sizeof a) == 0, "top_p = 1 must change nothing");
    probs_of(params(0.9f, 0, 0.9999f, 0), logits, 5, b); /* every token is above 1e-4 */
    for (int i = 0; i < 5; i++)
        cr_assert(a[i] > 1e-4f && fabsf(a[i] - b[i]) < 1e-7f, "token %d", i);
}

Test(verify_sampler, scratch_too_small_falls_back_to_greedy, .timeout = 10)
{
    float logits[] = {0, 1, 2, 5, 3};
    float probs[5];
    sd_sampler_scratch_t s;
    cr_assert_eq(sd_sampler_scratch_init(&s, 3), SD_OK);
    sd_sampler_params_t p = params(1, 2, 1, 0);
    sd_sampler_probs(&p, logits, 5, &s, probs);
    double want[] = {0, 0, 0, 1, 0};
    assert_probs(probs, want, 5);
    cr_assert(strstr(sd_last_error(), "scratch") != NULL, "%s", sd_last_error());
    sd_sampler_scratch_free(&s);
    cr_assert_eq(sd_sampler_scratch_init(&s, 0), SD_ERR_INVALID_ARG);
    cr_assert(strstr(sd_last_error(), "n_vocab") != NULL);
}

/* Chi-square of draw counts against probs; critical value for p = 0.001 at dof <= 9. */
static void assert_frequencies(const float *probs, int n, uint64_t seed)
{
    enum { DRAWS = 40000 };
    int counts[16] = {0};
    cr_assert(n <= 16);
    for (int i = 0; i < DRAWS; i++) {
        int32_t t = sd_sample_from_probs(probs, n, sd_rng_uniform(seed, (uint64_t)i, SD_RNG_SAMPLE));
        cr_assert(t >= 0 && t < n && probs[t] > 0, "draw %d gave token %d", i, t);
        counts[t]++;
    }
    double chi2 = 0;
    int dof = -1;
    for (int t = 0; t < n; t++) {
        if (probs[t] <= 0)
            continue;
        double e = (double)probs[t] * DRAWS;
        chi2 += (counts[t] - e) * (counts[t] - e) / e;
        dof++;
    }
    cr_assert(dof <= 9);
    cr_assert(chi2 < 27.88, "chi-square %.2f with %d degrees of freedom", chi2, dof);
}

Test(verify_sampler, draw_frequencies_match_probs, .timeout = 60)
{
    double dist[] = {0.02, 0.3, 0.08, 0.15, 0.01, 0.25, 0.04, 0.15};
    float logits[8], probs[8];
    logits_from_probs(dist, 8, logits);
    sd_sampler_params_t cases[] = {params(1, 0, 1, 0), params(0.6f, 0, 1, 0), params(1, 4, 1, 0),
                                   params(1.4f, 0, 0.8f, 0.1f)};
    for (size_t c = 0; c < 4; c++) {
        probs_of(cases[c], logits, 8, probs);
        assert_frequencies(probs, 8, 1000 + c);
    }
    /* The same through sd_sample: its draw equals the inverse CDF of the probs it wrote. */
    sd_sampler_scratch_t s;
    cr_assert_eq(sd_sampler_scratch_init(&s, 8), SD_OK);
    for (uint64_t i = 0; i < 200; i++) {
        float u = sd_rng_uniform(9, i, SD_RNG_SAMPLE);
        int32_t t = sd_sample(&cases[3], logits, 8, u, &s, probs);
        cr_assert_eq(t, sd_sample_from_probs(probs, 8, u));
    }
    sd_sampler_scratch_free(&s);
}

Test(verify_sampler, deterministic_across_calls, .timeout = 10)
{
    float logits[64], a[64], b[64];
    sd_philox_t rng;
    sd_philox_init(&rng, 8, 0, 0);
    random_logits(&rng, logits, 64, 3.0f);
    probs_of(params(0.8f, 10, 0.9f, 0.05f), logits, 64, a);
    probs_of(params(0.8f, 10, 0.9f, 0.05f), logits, 64, b);
    cr_assert(memcmp(a, b, sizeof a) == 0);
}
