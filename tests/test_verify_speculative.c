/* Speculative verification: greedy prefix matching on handcrafted logits, argument errors,
 * uniforms keyed by position (not by k), and losslessness — over 40,000 seeds the first
 * three tokens generated speculatively (a deliberately different draft distribution, k = 1..3)
 * follow the exact target-only joint distribution (chi-square goodness of fit, p > 0.001),
 * while planted bugs (the rejection residual replaced by p or by q) are rejected with
 * p < 1e-6, so the test has the power to catch them; and over 400,000 seeds each draft
 * token is accepted with probability min(1, p/q) (a per-token binomial test that sees a
 * 2% acceptance bias, which the whole-sequence test does not). */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "verify/philox.h"
#include "verify/sampler.h"
#include "support/chi2.h"
#include "verify/speculative.h"

/* ---- chi-square survival function -------------------------------------------------- */

/* Closed forms: df 2m -> exp(-x/2) sum_{j<m} (x/2)^j / j!; df 1 -> erfc(sqrt(x/2)). */
static double chi2_sf_even(double x, int df)
{
    double h = x / 2.0, term = 1.0, sum = 0.0;
    for (int j = 0; j < df / 2; j++) {
        sum += term;
        term *= h / (j + 1);
    }
    return exp(-h) * sum;
}

Test(verify_speculative, chi2_sf_matches_closed_forms, .timeout = 10)
{
    const int dfs[] = {2, 4, 10, 40, 100};
    const double xs[] = {0.3, 1.0, 5.0, 18.3, 60.0, 124.3, 200.0, 400.0};
    for (size_t i = 0; i < sizeof dfs / sizeof dfs[0]; i++)
        for (size_t j = 0; j < sizeof xs / sizeof xs[0]; j++) {
            double got = sd_test_chi2_sf(xs[j], dfs[i]), want = chi2_sf_even(xs[j], dfs[i]);
            cr_assert(fabs(got - want) <= 1e-9 * want + 1e-300, "df %d x %g: %.12g, want %.12g",
                      dfs[i], xs[j], got, want);
        }
    for (double x = 0.01; x < 80.0; x *= 1.7) {
        double want = erfc(sqrt(x / 2.0));
        cr_assert(fabs(sd_test_chi2_sf(x, 1) - want) <= 1e-9 * want, "df 1 x %g", x);
    }
    cr_assert(fabs(sd_test_chi2_sf(29.588298, 10) - 0.001) < 1e-8); /* the textbook table value */
}

/* ---- a tiny sequential "language": logits = f(previous token, position) -------------- */

#define V 16
#define N_GEN 3      /* tokens compared per sample */
#define K_MAX 4
#define N_POS (N_GEN + K_MAX)
#define PROMPT_TOKEN 5
#define N_SEEDS 40000
#define N_CELLS (V * V * V)

typedef struct world {
    float target[N_POS][V][V]; /* [position][previous token][vocab] logits */
    float draft[N_POS][V][V];  /* the drafter's logits: flatter, peaked elsewhere */
} world_t;

static const world_t *world(void)
{
    static world_t w;
    static int built;
    if (built)
        return &w;
    for (int pos = 0; pos < N_POS; pos++)
        for (int prev = 0; prev < V; prev++)
            for (int j = 0; j < V; j++) {
                uint64_t cell = ((uint64_t)pos * V + prev) * V + j;
                float t = 4.0f * sd_rng_uniform(12345, cell, SD_RNG_SAMPLE) - 2.0f;
                float noise = sd_rng_uniform(777, cell, SD_RNG_DRAFT) - 0.5f;
                w.target[pos][prev][j] = t;
                w.draft[pos][prev][j] =
                    0.3f * t + 1.5f * noise + (j == (prev + 3 * pos) % V ? 2.5f : 0.0f);
            }
    built = 1;
    return &w;
}

typedef sd_status_t (*verify_fn)(const sd_sampler_params_t *, uint64_t, uint64_t, const int32_t *,
                                 const float *, int, const float *, int, sd_spec_scratch_t *,
                                 sd_spec_result_t *);

/* The harness's drafter: d_i ~ q_i with its own uniforms, or q's argmax (deterministic). */
typedef enum { DRAFT_SAMPLED, DRAFT_ARGMAX } draft_mode_t;

typedef struct harness {
    sd_sampler_params_t params;
    int k;
    draft_mode_t mode;
    verify_fn verify;
    sd_spec_scratch_t spec;
    sd_sampler_scratch_t sampler;
} harness_t;

static void harness_init(harness_t *h, sd_sampler_params_t params, int k, draft_mode_t mode,
                         verify_fn verify)
{
    h->params = params;
    h->k = k;
    h->mode = mode;
    h->verify = verify;
    cr_assert_eq(sd_spec_scratch_init(&h->spec, V), SD_OK);
    cr_assert_eq(sd_sampler_scratch_init(&h->sampler, V), SD_OK);
}

static void harness_free(harness_t *h)
{
    sd_spec_scratch_free(&h->spec);
    sd_sampler_scratch_free(&h->sampler);
}

/* Drafts k tokens after `prev` at positions pos0..: d[k], q[k, V]; then the target rows
 * logits[k + 1, V] for the verifier. */
static void draft_step(harness_t *h, uint64_t seed, int pos0, int32_t prev, int32_t *d, float *q,
                       float *logits)
{
    const world_t *w = world();
    int32_t ctx = prev;
    for (int i = 0; i < h->k; i++) {
        float *qi = q + i * V;
        sd_sampler_probs(&h->params, w->draft[pos0 + i][ctx], V, &h->sampler, qi);
        d[i] = h->mode == DRAFT_ARGMAX
                   ? sd_sample_greedy(w->draft[pos0 + i][ctx], V)
                   : sd_sample_from_probs(qi, V, sd_rng_uniform(seed, pos0 + i, SD_RNG_DRAFT));
        memcpy(logits + i * V, w->target[pos0 + i][ctx], sizeof(float) * V);
        ctx = d[i];
    }
    memcpy(logits + h->k * V, w->target[pos0 + h->k][ctx], sizeof(float) * V);
}

/* The first N_GEN tokens generated speculatively. */
static void spec_generate(harness_t *h, uint64_t seed, int32_t *out)
{
    int n = 0;
    int32_t prev = PROMPT_TOKEN;
    while (n < N_GEN) {
        int32_t d[K_MAX];
        float q[K_MAX * V], logits[(K_MAX + 1) * V];
        draft_step(h, seed, n, prev, d, q, logits);
        sd_spec_result_t r;
        const float *qa = h->mode == DRAFT_ARGMAX ? NULL : q;
        cr_assert_eq(h->verify(&h->params, seed, (uint64_t)n, d, qa, h->k, logits, V, &h->spec, &r),
                     SD_OK, "%s", sd_last_error());
        cr_assert(r.n_accepted >= 0 && r.n_accepted <= h->k);
        for (int i = 0; i <= r.n_accepted && n < N_GEN; i++)
            out[n++] = prev = i < r.n_accepted ? d[i] : r.next_token;
    }
}

/* Target-only sampling of the first N_GEN tokens. */
static void target_generate(harness_t *h, uint64_t seed, int32_t *out)
{
    float probs[V];
    int32_t prev = PROMPT_TOKEN;
    for (int pos = 0; pos < N_GEN; pos++) {
        float u = sd_rng_uniform(seed, (uint64_t)pos, SD_RNG_SAMPLE);
        out[pos] = prev = sd_sample(&h->params, world()->target[pos][prev], V, u, &h->sampler, probs);
    }
}

/* Exact target-only probability of every 3-token sequence: expect[V * V * V]. */
static void exact_joint(harness_t *h, double *expect)
{
    const world_t *w = world();
    float p0[V], p1[V], p2[V];
    sd_sampler_probs(&h->params, w->target[0][PROMPT_TOKEN], V, &h->sampler, p0);
    for (int a = 0; a < V; a++) {
        sd_sampler_probs(&h->params, w->target[1][a], V, &h->sampler, p1);
        for (int b = 0; b < V; b++) {
            sd_sampler_probs(&h->params, w->target[2][b], V, &h->sampler, p2);
            for (int c = 0; c < V; c++)
                expect[(a * V + b) * V + c] = (double)p0[a] * p1[b] * p2[c];
        }
    }
}

static int cell_of(const int32_t *t) { return (t[0] * V + t[1]) * V + t[2]; }

/* p-value of the speculative (or, with spec == 0, target-only) samples over N_SEEDS. */
static double lossless_pvalue(harness_t *h, int spec, int *df, double *stat)
{
    static long counts[N_CELLS];
    static double expect[N_CELLS];
    memset(counts, 0, sizeof counts);
    exact_joint(h, expect);
    for (uint64_t seed = 1; seed <= N_SEEDS; seed++) {
        int32_t t[N_GEN];
        if (spec)
            spec_generate(h, seed, t);
        else
            target_generate(h, seed, t);
        counts[cell_of(t)]++;
    }
    return sd_test_chi2_gof(counts, expect, N_CELLS, N_SEEDS, df, stat);
}

/* ---- a test-local verifier, identical to the library's but for one planted bug ------- */

typedef enum { BUG_NONE, BUG_RESIDUAL_FROM_P, BUG_RESIDUAL_FROM_Q, BUG_ACCEPT_BIAS } bug_t;

static int32_t ref_rejected_token(bug_t bug, const float *p, const float *q, float u)
{
    float r[V];
    double mass = 0.0;
    for (int j = 0; j < V; j++) {
        r[j] = p[j] > q[j] ? p[j] - q[j] : 0.0f;
        mass += r[j];
    }
    if (bug == BUG_RESIDUAL_FROM_P)
        return sd_sample_from_probs(p, V, u); /* planted: forgets to subtract q */
    if (bug == BUG_RESIDUAL_FROM_Q)
        return sd_sample_from_probs(q, V, u); /* planted: resamples the drafter */
    return sd_sample_from_probs(mass > 0.0 ? r : p, V, u);
}

static sd_status_t ref_verify(bug_t bug, const sd_sampler_params_t *params, uint64_t seed,
                              uint64_t pos0, const int32_t *d, const float *q, int k,
                              const float *logits, sd_spec_scratch_t *s, sd_spec_result_t *out)
{
    float p[V];
    for (int i = 0; i < k; i++) {
        sd_sampler_probs(params, logits + i * V, V, &s->sampler, p);
        float u = sd_rng_uniform(seed, pos0 + i, SD_RNG_ACCEPT);
        double bias = bug == BUG_ACCEPT_BIAS ? 1.02 : 1.0; /* planted: accepts 2% too often */
        if ((double)u * q[i * V + d[i]] <= bias * p[d[i]])
            continue;
        out->n_accepted = i;
        out->next_token =
            ref_rejected_token(bug, p, q + i * V, sd_rng_uniform(seed, pos0 + i, SD_RNG_RESIDUAL));
        return SD_OK;
    }
    sd_sampler_probs(params, logits + k * V, V, &s->sampler, p);
    out->n_accepted = k;
    out->next_token = sd_sample_from_probs(p, V, sd_rng_uniform(seed, pos0 + k, SD_RNG_SAMPLE));
    return SD_OK;
}

#define REF_VARIANT(name, bug)                                                                   \
    static sd_status_t name(const sd_sampler_params_t *params, uint64_t seed, uint64_t pos0,     \
                            const int32_t *d, const float *q, int k, const float *logits, int n, \
                            sd_spec_scratch_t *s, sd_spec_result_t *out)                         \
    {                                                                                            \
        cr_assert_eq(n, V);                                                                      \
        return ref_verify(bug, params, seed, pos0, d, q, k, logits, s, out);                     \
    }
REF_VARIANT(ref_correct, BUG_NONE)
REF_VARIANT(ref_residual_from_p, BUG_RESIDUAL_FROM_P)
REF_VARIANT(ref_residual_from_q, BUG_RESIDUAL_FROM_Q)
REF_VARIANT(ref_accept_bias, BUG_ACCEPT_BIAS)

/* ---- lossless sampling ------------------------------------------------------------- */

typedef struct lossless_case { /* no pointers: Criterion hands it to a new process */
    sd_sampler_params_t params;
    int k;
    char label[32];
} lossless_case_t;

static sd_sampler_params_t sp(float t, int top_k, float top_p, float min_p)
{
    sd_sampler_params_t p = {.temperature = t, .top_k = top_k, .top_p = top_p, .min_p = min_p};
    return p;
}

ParameterizedTestParameters(verify_speculative, lossless)
{
    static lossless_case_t cases[15];
    const struct {
        sd_sampler_params_t p;
        const char *label;
    } cfg[] = {
        {{1.0f, 0, 1.0f, 0.0f}, "T=1"},
        {{1.0f, 0, 0.8f, 0.0f}, "T=1 top-p=0.8"},
        {{0.7f, 0, 1.0f, 0.0f}, "T=0.7"},
        {{0.7f, 0, 1.0f, 0.1f}, "T=0.7 min-p=0.1"},
        {{1.0f, 6, 0.9f, 0.0f}, "T=1 top-k=6 top-p=0.9"},
    };
    int n = 0;
    for (int c = 0; c < 5; c++)
        for (int k = 1; k <= N_GEN; k++) { /* k >= N_GEN: the first N_GEN tokens are k = N_GEN's */
            cases[n] = (lossless_case_t){.params = cfg[c].p, .k = k};
            snprintf(cases[n++].label, sizeof cases[0].label, "%s", cfg[c].label);
        }
    return cr_make_param_array(lossless_case_t, cases, n);
}

ParameterizedTest(lossless_case_t *c, verify_speculative, lossless, .timeout = 120)
{
    harness_t h;
    harness_init(&h, c->params, c->k, DRAFT_SAMPLED, sd_spec_verify);
    int df;
    double stat, p = lossless_pvalue(&h, 1, &df, &stat);
    fprintf(stderr, "lossless %-22s k=%d: chi-square %.1f, df %d, p = %.4f\n", c->label, c->k,
            stat, df, p);
    cr_assert(p > 1e-3, "%s k=%d: speculative samples differ from target sampling, p = %g",
              c->label, c->k, p);
    harness_free(&h);
}

Test(verify_speculative, harness_accepts_target_only_sampling, .timeout = 60)
{
    harness_t h;
    harness_init(&h, sp(1.0f, 0, 0.8f, 0.0f), 2, DRAFT_SAMPLED, sd_spec_verify);
    int df;
    double stat, p = lossless_pvalue(&h, 0, &df, &stat);
    fprintf(stderr, "target-only sampling vs exact joint: chi-square %.1f, df %d, p = %.4f\n",
            stat, df, p);
    cr_assert(p > 1e-3, "p = %g", p);
    harness_free(&h);
}

/* The test-local verifier is the library's algorithm: same tokens for every seed. */
Test(verify_speculative, reference_verifier_equals_library, .timeout = 60)
{
    harness_t lib, ref;
    harness_init(&lib, sp(0.7f, 0, 0.8f, 0.0f), 3, DRAFT_SAMPLED, sd_spec_verify);
    harness_init(&ref, sp(0.7f, 0, 0.8f, 0.0f), 3, DRAFT_SAMPLED, ref_correct);
    for (uint64_t seed = 1; seed <= 5000; seed++) {
        int32_t a[N_GEN], b[N_GEN];
        spec_generate(&lib, seed, a);
        spec_generate(&ref, seed, b);
        cr_assert_arr_eq(a, b, sizeof a, "seed %llu", (unsigned long long)seed);
    }
    harness_free(&lib);
    harness_free(&ref);
}

/* Planted bugs: the same harness must reject them, so the lossless test has power. */
Test(verify_speculative, planted_bugs_are_detected, .timeout = 120)
{
    const struct {
        verify_fn fn;
        const char *name;
    } bugs[] = {{ref_residual_from_p, "residual from p"}, {ref_residual_from_q, "residual from q"}};
    const sd_sampler_params_t cfg[] = {sp(1.0f, 0, 1.0f, 0.0f), sp(0.7f, 0, 1.0f, 0.0f)};
    for (int b = 0; b < 2; b++)
        for (int c = 0; c < 2; c++) {
            harness_t h;
            harness_init(&h, cfg[c], 3, DRAFT_SAMPLED, bugs[b].fn);
            int df;
            double stat, p = lossless_pvalue(&h, 1, &df, &stat);
            fprintf(stderr, "planted bug '%s' T=%.1f k=3: chi-square %.1f, df %d, p = %.3g\n",
                    bugs[b].name, (double)cfg[c].temperature, stat, df, p);
            cr_assert(p < 1e-6, "planted bug '%s' went unnoticed: p = %g", bugs[b].name, p);
            harness_free(&h);
        }
}

/* ---- the acceptance probability, token by token ------------------------------------------ */

#define N_ACCEPT_SEEDS 400000

/* One k = 1 step per seed after the prompt token: the draft d ~ q, accepted or not. A draft
 * token d must be accepted with probability exactly min(1, p(d) / q(d)): per token, the
 * accepted count is binomial; the p-value of the summed squared z-scores (chi-square, one
 * degree of freedom per token accepted with probability strictly between 0 and 1). Tokens
 * with probability 0 or 1 must be rejected or accepted every time (*exact_ok). */
static double acceptance_pvalue(harness_t *h, int *df, double *stat, int *exact_ok)
{
    const world_t *w = world();
    float p[V], q[V];
    sd_sampler_probs(&h->params, w->target[0][PROMPT_TOKEN], V, &h->sampler, p);
    sd_sampler_probs(&h->params, w->draft[0][PROMPT_TOKEN], V, &h->sampler, q);
    long drafted[V] = {0}, accepted[V] = {0};
    for (uint64_t seed = 1; seed <= N_ACCEPT_SEEDS; seed++) {
        int32_t d[1];
        float qq[V], logits[2 * V];
        draft_step(h, seed, 0, PROMPT_TOKEN, d, qq, logits);
        sd_spec_result_t r;
        cr_assert_eq(h->verify(&h->params, seed, 0, d, qq, 1, logits, V, &h->spec, &r), SD_OK);
        drafted[d[0]]++;
        accepted[d[0]] += r.n_accepted;
    }
    *df = 0, *stat = 0.0, *exact_ok = 1;
    for (int t = 0; t < V; t++) {
        if (drafted[t] == 0) continue;
        double a = fmin(1.0, (double)p[t] / q[t]), n = (double)drafted[t];
        if (a <= 0.0 || a >= 1.0) {
            *exact_ok &= accepted[t] == (a <= 0.0 ? 0 : drafted[t]);
            continue;
        }
        double z = ((double)accepted[t] - n * a) / sqrt(n * a * (1.0 - a));
        *stat += z * z;
        ++*df;
    }
    return sd_test_chi2_sf(*stat, *df);
}

/* The library accepts each draft token with probability min(1, p/q) exactly (p > 1e-3),
 * and the test has the power to see a 2% acceptance bias (p < 1e-6), which the chi-square
 * over whole sequences above does not. */
Test(verify_speculative, acceptance_probability_is_exact, .timeout = 120)
{
    const sd_sampler_params_t cfg[] = {sp(1.0f, 0, 1.0f, 0.0f), sp(0.7f, 0, 1.0f, 0.1f)};
    const struct {
        verify_fn fn;
        const char *name;
        int biased;
    } verifiers[] = {{sd_spec_verify, "library", 0}, {ref_accept_bias, "2% acceptance bias", 1}};
    for (int c = 0; c < 2; c++)
        for (int v = 0; v < 2; v++) {
            harness_t h;
            harness_init(&h, cfg[c], 1, DRAFT_SAMPLED, verifiers[v].fn);
            int df, exact_ok;
            double stat, p = acceptance_pvalue(&h, &df, &stat, &exact_ok);
            fprintf(stderr, "acceptance %-18s T=%.1f: chi-square %.1f, df %d, p = %.3g\n",
                    verifiers[v].name, (double)cfg[c].temperature, stat, df, p);
            cr_assert_geq(df, 2, "T=%.1f: only %d tokens with 0 < min(1, p/q) < 1",
                          (double)cfg[c].temperature, df);
            if (verifiers[v].biased) {
                cr_assert(p < 1e-6, "%s went unnoticed: p = %g", verifiers[v].name, p);
            } else {
                cr_assert(exact_ok, "T=%.1f: a token of acceptance 0 or 1 was not",
                          (double)cfg[c].temperature);
                cr_assert(p > 1e-3, "T=%.1f: acceptance differs from min(1, p/q): p = %g",
                          (double)cfg[c].temperature, p);
            }
            harness_free(&h);
        }
}

/* A deterministic drafter (q one-hot, passed as NULL) gives exactly the target-only tokens. */
Test(verify_speculative, deterministic_drafts_reproduce_target_sampling, .timeout = 60)
{
    const sd_sampler_params_t cfg[] = {sp(1.0f, 0, 1.0f, 0.0f), sp(0.7f, 5, 0.9f, 0.05f)};
    for (int c = 0; c < 2; c++)
        for (int k = 1; k <= K_MAX; k++) {
            harness_t spec, target;
            harness_init(&spec, cfg[c], k, DRAFT_ARGMAX, sd_spec_verify);
            harness_init(&target, cfg[c], k, DRAFT_ARGMAX, sd_spec_verify);
            for (uint64_t seed = 1; seed <= 3000; seed++) {
                int32_t a[N_GEN], b[N_GEN];
                spec_generate(&spec, seed, a);
                target_generate(&target, seed, b);
                cr_assert_arr_eq(a, b, sizeof a, "config %d k %d seed %llu", c, k,
                                 (unsigned long long)seed);
            }
            harness_free(&spec);
            harness_free(&target);
        }
}

/* Same seed, same tokens; another seed, (mostly) other tokens. Positions past N_GEN never
 * change the first N_GEN tokens: k = N_GEN and k = N_GEN + 1 agree, as every uniform is
 * keyed by position. */
Test(verify_speculative, same_seed_same_tokens_other_seed_other_tokens, .timeout = 30)
{
    harness_t h, longer;
    harness_init(&h, sp(1.0f, 0, 1.0f, 0.0f), N_GEN, DRAFT_SAMPLED, sd_spec_verify);
    harness_init(&longer, sp(1.0f, 0, 1.0f, 0.0f), N_GEN + 1, DRAFT_SAMPLED, sd_spec_verify);
    int differ = 0;
    for (uint64_t seed = 1; seed <= 200; seed++) {
        int32_t a[N_GEN], b[N_GEN], c[N_GEN], l[N_GEN];
        spec_generate(&h, seed, a);
        spec_generate(&h, seed, b);
        spec_generate(&h, seed + 1000, c);
        spec_generate(&longer, seed, l);
        cr_assert_arr_eq(a, b, sizeof a, "seed %llu", (unsigned long long)seed);
        cr_assert_arr_eq(a, l, sizeof a, "seed %llu: k = %d", (unsigned long long)seed, N_GEN + 1);
        differ += memcmp(a, c, sizeof a) != 0;
    }
    cr_assert_gt(differ, 150, "only %d of 200 seed pairs gave different tokens", differ);
    harness_free(&h);
    harness_free(&longer);
}

/* ---- handcrafted cases ------------------------------------------------------------- */

/* logits[rows, V]: row r peaks (logit 5, others 0) at peaks[r]. */
static void peaked_rows(const int32_t *peaks, int rows, float *logits)
{
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < V; j++)
            logits[r * V + j] = j == peaks[r] ? 5.0f : 0.0f;
}

Test(verify_speculative, greedy_accepts_the_matching_prefix, .timeout = 10)
{
    const int32_t argmax[5] = {3, 1, 4, 1, 5};
    float logits[5 * V];
    peaked_rows(argmax, 5, logits);
    sd_spec_scratch_t s;
    cr_assert_eq(sd_spec_scratch_init(&s, V), SD_OK);
    sd_sampler_params_t greedy = sp(0.0f, 0, 1.0f, 0.0f);
    const struct {
        int32_t d[4];
        int k, n_accepted;
        int32_t next;
    } cases[] = {
        {{3, 1, 4, 1}, 4, 4, 5}, /* all accepted: bonus = argmax of row 4 */
        {{3, 1, 2, 1}, 4, 2, 4}, /* first mismatch at 2: the target's token there */
        {{0, 1, 4, 1}, 4, 0, 3},
        {{3, 1, 4, 9}, 4, 3, 1},
        {{3, 1, 0, 0}, 2, 2, 4}, /* k = 2: row 2 is the bonus row */
        {{0, 0, 0, 0}, 0, 0, 3}, /* k = 0: plain greedy decoding */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sd_spec_result_t r;
        float q[4 * V] = {0}; /* ignored when greedy, even though q(d) = 0 */
        cr_assert_eq(sd_spec_verify(&greedy, 1, 10, cases[i].d, q, cases[i].k, logits, V, &s, &r),
                     SD_OK, "%s", sd_last_error());
        cr_assert_eq(r.n_accepted, cases[i].n_accepted, "case %zu", i);
        cr_assert_eq(r.next_token, cases[i].next, "case %zu", i);
    }
    /* ties: the lower index is the argmax */
    float tie[2 * V] = {0};
    tie[7] = tie[9] = 1.0f;
    int32_t d9 = 9, d7 = 7;
    sd_spec_result_t r;
    cr_assert_eq(sd_spec_verify(&greedy, 1, 0, &d9, NULL, 1, tie, V, &s, &r), SD_OK);
    cr_assert(r.n_accepted == 0 && r.next_token == 7);
    cr_assert_eq(sd_spec_verify(&greedy, 1, 0, &d7, NULL, 1, tie, V, &s, &r), SD_OK);
    cr_assert(r.n_accepted == 1 && r.next_token == 0);
    sd_spec_scratch_free(&s);
}

Test(verify_speculative, bad_arguments_name_the_value, .timeout = 10)
{
    sd_spec_scratch_t s;
    cr_assert_eq(sd_spec_scratch_init(&s, V), SD_OK);
    float logits[3 * V] = {0}, q[2 * V] = {0};
    q[4] = 1.0f;
    int32_t d[2] = {4, 4};
    sd_sampler_params_t t1 = sp(1.0f, 0, 1.0f, 0.0f), bad_t = sp(NAN, 0, 1.0f, 0.0f);
    sd_spec_result_t r = {.n_accepted = -7, .next_token = -7};
    const struct {
        sd_status_t st;
        const char *needle;
    } got[] = {
        {sd_spec_verify(&bad_t, 1, 0, d, q, 2, logits, V, &s, &r), "temperature"},
        {sd_spec_verify(NULL, 1, 0, d, q, 2, logits, V, &s, &r), "NULL"},
        {sd_spec_verify(&t1, 1, 0, d, q, -1, logits, V, &s, &r), "k -1"},
        {sd_spec_verify(&t1, 1, 0, NULL, q, 2, logits, V, &s, &r), "non-NULL"},
        {sd_spec_verify(&t1, 1, 0, d, q, 2, NULL, V, &s, &r), "non-NULL"},
        {sd_spec_verify(&t1, 1, 0, d, q, 2, logits, V, NULL, &r), "non-NULL"},
        {sd_spec_verify(&t1, 1, 0, d, q, 2, logits, V + 1, &s, &r), "n_vocab 17"},
        {sd_spec_verify(&t1, 1, 0, d, q, 2, logits, 0, &s, &r), "n_vocab 0"},
        {sd_spec_verify(&t1, 1, 0, (int32_t[]){4, 16}, q, 2, logits, V, &s, &r), "token 16"},
        {sd_spec_verify(&t1, 1, 0, (int32_t[]){4, -2}, q, 2, logits, V, &s, &r), "token -2"},
        {sd_spec_verify(&t1, 1, 0, d, q, 2, logits, V, &s, &r), "q = 0"}, /* q row 1 is 0 */
    };
    for (size_t i = 0; i < sizeof got / sizeof got[0]; i++)
        cr_assert_eq(got[i].st, SD_ERR_INVALID_ARG, "case %zu", i);
    cr_assert(r.n_accepted == -7 && r.next_token == -7, "out written on an error");
    /* each message names the value: re-run each failing call to read its own message */
    cr_assert_eq(sd_spec_verify(&t1, 1, 0, d, q, 2, logits, V + 1, &s, &r), SD_ERR_INVALID_ARG);
    cr_assert(strstr(sd_last_error(), got[6].needle), "%s", sd_last_error());
    cr_assert_eq(sd_spec_verify(&t1, 1, 0, (int32_t[]){4, 16}, q, 2, logits, V, &s, &r),
                 SD_ERR_INVALID_ARG);
    cr_assert(strstr(sd_last_error(), got[8].needle), "%s", sd_last_error());
    cr_assert_eq(sd_spec_verify(&t1, 1, 0, d, q, 2, logits, V, &s, &r), SD_ERR_INVALID_ARG);
    cr_assert(strstr(sd_last_error(), "index 1"), "%s", sd_last_error());
    cr_assert_eq(sd_spec_scratch_init(&s, 0), SD_ERR_INVALID_ARG);
    sd_spec_scratch_free(&s);
    sd_spec_scratch_free(NULL);
}

/* The residual at a position and the bonus token depend on (seed, position), not on k:
 * rows where d_0 is always accepted (q(d_0) <= p(d_0)) and d_1 always rejected (p(d_1) = 0). */
Test(verify_speculative, uniforms_depend_on_position_not_k, .timeout = 30)
{
    const world_t *w = world();
    sd_sampler_params_t t1 = sp(1.0f, 0, 1.0f, 0.0f);
    sd_spec_scratch_t s;
    cr_assert_eq(sd_spec_scratch_init(&s, V), SD_OK);
    float logits[(K_MAX + 1) * V], q[K_MAX * V];
    for (int i = 0; i <= K_MAX; i++)
        memcpy(logits + i * V, w->target[i][i], sizeof(float) * V);
    logits[1 * V + 9] = -INFINITY; /* p_1(9) = 0 */
    for (int j = 0; j < K_MAX * V; j++)
        q[j] = 1.0f / V;
    int32_t d[K_MAX] = {sd_sample_greedy(logits, V), 9, 2, 3}; /* p_0(argmax) > 1/16 */
    int seen[V] = {0};
    for (uint64_t seed = 1; seed <= 500; seed++) {
        sd_spec_result_t r1, rk, r0;
        cr_assert_eq(sd_spec_verify(&t1, seed, 40, d, q, 1, logits, V, &s, &r1), SD_OK);
        cr_assert_eq(r1.n_accepted, 1);
        /* the bonus at position 41 is target-only sampling there (a k = 0 step) */
        cr_assert_eq(sd_spec_verify(&t1, seed, 41, d, q, 0, logits + V, V, &s, &r0), SD_OK);
        cr_assert_eq(r1.next_token, r0.next_token, "seed %llu", (unsigned long long)seed);
        int32_t residual = -1;
        for (int k = 2; k <= K_MAX; k++) {
            cr_assert_eq(sd_spec_verify(&t1, seed, 40, d, q, k, logits, V, &s, &rk), SD_OK);
            cr_assert_eq(rk.n_accepted, 1);
            cr_assert_neq(rk.next_token, 9);
            cr_assert(residual < 0 || rk.next_token == residual, "seed %llu k %d", (unsigned long long)seed, k);
            residual = rk.next_token;
        }
        seen[residual] = 1;
    }
    int distinct = 0;
    for (int j = 0; j < V; j++)
        distinct += seen[j];
    cr_assert_gt(distinct, 4, "residual draws took only %d values", distinct);
    sd_spec_scratch_free(&s);
}

/* q with more mass than p everywhere (not a distribution, but rounding can come close):
 * the residual max(0, p - q) is all zero, and the rejected position draws from p. */
Test(verify_speculative, empty_residual_draws_from_p, .timeout = 30)
{
    sd_sampler_params_t t1 = sp(1.0f, 0, 1.0f, 0.0f);
    sd_spec_scratch_t s;
    cr_assert_eq(sd_spec_scratch_init(&s, V), SD_OK);
    const float *row = world()->target[0][0];
    float logits[2 * V], p[V], q[V];
    memcpy(logits, row, sizeof(float) * V);
    memcpy(logits + V, row, sizeof(float) * V);
    sd_sampler_probs(&t1, row, V, &s.sampler, p);
    for (int j = 0; j < V; j++)
        q[j] = p[j] * 1.25f;
    int32_t d = sd_sample_greedy(row, V);
    int rejected = 0;
    for (uint64_t seed = 1; seed <= 400; seed++) {
        sd_spec_result_t r;
        cr_assert_eq(sd_spec_verify(&t1, seed, 3, &d, q, 1, logits, V, &s, &r), SD_OK);
        if (r.n_accepted == 1)
            continue;
        rejected++;
        float u = sd_rng_uniform(seed, 3, SD_RNG_RESIDUAL);
        cr_assert_eq(r.next_token, sd_sample_from_probs(p, V, u), "seed %llu", (unsigned long long)seed);
    }
    cr_assert_gt(rejected, 40, "only %d rejections at acceptance rate 0.8", rejected);
    sd_spec_scratch_free(&s);
}
