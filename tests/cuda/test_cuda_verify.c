/* GPU sampling and speculative verification (verify/cuda_verify.h) against the CPU
 * (sd_sampler_probs, sd_sample, sd_spec_verify), bit for bit: random, tied and degenerate
 * logits (-inf, NaN, +inf, +-0, huge), vocabularies 16 / 1000 / 49152, every sampler
 * setting, k = 0..8, q NULL and not, seeds and positions (some above 2^32).
 *   - the shared arithmetic of verify/sampler_math.h (no device needed);
 *   - argument errors: the same codes and messages as the CPU (host emulation: no device);
 *   - the kernels' algorithm run by the host emulation vs the CPU (no device);
 *   - the kernels on device 0 vs the CPU (skipped without a GPU). */
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend_impl.h"
#include "kernels/cuda.h"
#include "support/test_util.h"
#include "verify/cuda_verify.h"
#include "verify/philox.h"
#include "verify/sampler.h"
#include "verify/sampler_math.h"
#include "verify/speculative.h"

static void built_or_skip(void)
{
    if (!sd_cuda_built())
        cr_skip_test("built without CUDA");
}

static sd_backend_t *device_backend_or_skip(void)
{
    built_or_skip();
    int n = 0;
    sd_status_t s = sd_cuda_device_count(&n);
    cr_assert_eq(s, SD_OK, "device count: %s: %s", sd_status_string(s), sd_last_error());
    if (n == 0)
        cr_skip_test("no CUDA device on this machine");
    sd_backend_t *be = NULL;
    s = sd_backend_cuda_create(0, 0.0, &be);
    cr_assert_eq(s, SD_OK, "backend: %s: %s", sd_status_string(s), sd_last_error());
    return be;
}

static sd_sampler_params_t sp(float t, int k, float top_p, float min_p)
{
    sd_sampler_params_t p = {.temperature = t, .top_k = k, .top_p = top_p, .min_p = min_p};
    return p;
}

static uint32_t bits_of(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

/* ---- the shared arithmetic --------------------------------------------------------------- */

/* Distance in ulps between two non-negative floats. */
static uint32_t ulps(float a, float b)
{
    uint32_t x = bits_of(a), y = bits_of(b);
    return x > y ? x - y : y - x;
}

Test(cuda_verify, exp_is_correctly_rounded_almost_always, .timeout = 60)
{
    cr_assert(sd_exp_nonpos(0.0f) == 1.0f && sd_exp_nonpos(-0.0f) == 1.0f);
    cr_assert(sd_exp_nonpos(-INFINITY) == 0.0f && sd_exp_nonpos(NAN) == 0.0f);
    cr_assert(sd_exp_nonpos(-104.0f) == 0.0f && sd_exp_nonpos(-200.0f) == 0.0f);
    cr_assert(sd_exp_nonpos(-103.0f) > 0.0f, "e^-103 is a subnormal float");
    sd_philox_t rng;
    sd_philox_init(&rng, 77, 0, 0);
    int off = 0;
    enum { N = 400000 };
    for (int i = 0; i < N; i++) {
        float u = sd_philox_uniform(&rng);
        float d = i % 2 ? -u * 104.0f : -u * u * 4.0f; /* dense near 0 too */
        float got = sd_exp_nonpos(d), want = (float)exp((double)d);
        cr_assert(ulps(got, want) <= 1, "e^%a: %a, want %a", (double)d, (double)got, (double)want);
        off += got != want;
    }
    cr_assert(off < N / 1000, "%d of %d results not correctly rounded", off, N);
}

Test(cuda_verify, softmax_weight_edges, .timeout = 10)
{
    cr_assert(sd_softmax_weight(3.0f, 3.0f, 0.7f) == 1.0f);
    cr_assert(sd_softmax_weight(-0.0f, 0.0f, 1.0f) == 1.0f, "-0 and +0 are one key");
    cr_assert(sd_softmax_weight(NAN, 1.0f, 1.0f) == 0.0f);
    cr_assert(sd_softmax_weight(-INFINITY, 1.0f, 1.0f) == 0.0f);
    cr_assert(sd_softmax_weight(5.0f, INFINITY, 1.0f) == 0.0f);
    cr_assert(sd_softmax_weight(INFINITY, INFINITY, 1.0f) == 1.0f);
    cr_assert(sd_softmax_weight(-FLT_MAX, FLT_MAX, 1.0f) == 0.0f, "-inf difference");
    float w = sd_softmax_weight(0.0f, (float)M_LN2, 1.0f);
    cr_assert(w == 0.5f, "e^-ln2 = %a", (double)w);
}

Test(cuda_verify, rank_ord_is_the_float_order, .timeout = 10)
{
    const float x[] = {-INFINITY, -FLT_MAX, -1.0f, -FLT_MIN, -0x1p-149f, 0.0f,
                       0x1p-149f, FLT_MIN,  1.0f,  FLT_MAX,  INFINITY};
    for (size_t i = 1; i < sizeof x / sizeof x[0]; i++)
        cr_assert_lt(sd_rank_ord(x[i - 1]), sd_rank_ord(x[i]), "%a < %a", (double)x[i - 1], (double)x[i]);
    cr_assert_eq(sd_rank_ord(-0.0f), sd_rank_ord(0.0f));
    cr_assert_eq(sd_rank_ord(NAN), sd_rank_ord(-INFINITY));
    cr_assert_eq(sd_rank_ord(-NAN), sd_rank_ord(-INFINITY));
    /* R: higher key first, then lower index */
    cr_assert_gt(sd_rank_of(2.0f, 5, 10), sd_rank_of(1.0f, 0, 10));
    cr_assert_gt(sd_rank_of(2.0f, 3, 10), sd_rank_of(2.0f, 4, 10));
}

static double xsum_of(const float *x, int n)
{
    sd_xsum_t s;
    sd_xsum_zero(&s);
    for (int i = 0; i < n; i++)
        sd_xsum_add(&s, x[i]);
    return sd_xsum_value(&s);
}

Test(cuda_verify, xsum_rounds_the_exact_sum_once, .timeout = 10)
{
    float tie[] = {1.0f, 0x1p-53f};
    cr_assert(xsum_of(tie, 2) == 1.0, "a tie rounds to even");
    float above[] = {1.0f, 0x1p-53f, 0x1p-149f};
    cr_assert(xsum_of(above, 3) == 1.0 + 0x1p-52, "a bit far below breaks the tie");
    float odd[] = {1.0f + 0x1p-23f, 0x1p-53f};
    cr_assert(xsum_of(odd, 2) == 1.0 + 0x1p-23 + 0x1p-52 * 0.5 + 0x1p-53, "%a", xsum_of(odd, 2));
    float big[] = {FLT_MAX, FLT_MAX, INFINITY};
    cr_assert(xsum_of(big, 3) == 3.0 * (double)FLT_MAX, "+inf adds FLT_MAX");
    float tiny[] = {0x1p-149f, 0x1p-149f, 0x1p-149f};
    cr_assert(xsum_of(tiny, 3) == 3 * 0x1p-149);
    float nothing[] = {0.0f, -0.0f, -1.0f, NAN, -INFINITY};
    cr_assert(xsum_of(nothing, 5) == 0.0);
    cr_assert(xsum_of(nothing, 0) == 0.0);
}

Test(cuda_verify, xsum_is_exact_in_any_order, .timeout = 30)
{
    enum { N = 3000 };
    static float x[N];
    sd_philox_t rng;
    sd_philox_init(&rng, 5, 0, 0);
    /* multiples of 2^-10 below 2^14: the double sum is exact, so it is the reference */
    double exact = 0.0;
    for (int i = 0; i < N; i++) {
        x[i] = (float)(sd_philox_next(&rng) >> 8) * 0x1p-10f;
        exact += x[i];
    }
    cr_assert(xsum_of(x, N) == exact, "%a vs %a", xsum_of(x, N), exact);
    /* any exponents: forward, backward, strided partials merged in any order agree */
    for (int i = 0; i < N; i++) {
        uint32_t r = sd_philox_next(&rng);
        x[i] = ldexpf((float)(r >> 8) + 1.0f, (int)(r % 200) - 170);
    }
    double fwd = xsum_of(x, N);
    sd_xsum_t back, merged, part[7];
    sd_xsum_zero(&back);
    sd_xsum_zero(&merged);
    for (int i = N - 1; i >= 0; i--)
        sd_xsum_add(&back, x[i]);
    for (int t = 0; t < 7; t++) {
        sd_xsum_zero(&part[t]);
        for (int i = t; i < N; i += 7)
            sd_xsum_add(&part[t], x[i]);
    }
    for (int t = 6; t >= 0; t--)
        sd_xsum_merge(&merged, &part[t]);
    cr_assert(sd_xsum_value(&back) == fwd && sd_xsum_value(&merged) == fwd);
    long double approx = 0.0L; /* and it is the right number */
    for (int i = 0; i < N; i++)
        approx += x[i];
    cr_assert(fabsl(approx - fwd) <= 1e-15L * fabsl(approx), "%La vs %a", approx, fwd);
}

/* ---- argument errors: the CPU's codes and messages ----------------------------------------- */

#define SV 16

/* The CPU call's and the CUDA call's status and message agree. */
#define ASSERT_SAME_ERROR(cpu_call, cuda_call, what)                                              \
    do {                                                                                          \
        sd_status_t cs_ = (cpu_call);                                                             \
        char cm_[512];                                                                            \
        snprintf(cm_, sizeof cm_, "%s", sd_last_error());                                         \
        sd_status_t gs_ = (cuda_call);                                                            \
        cr_assert_eq(cs_, SD_ERR_INVALID_ARG, "%s: cpu %s", what, sd_status_string(cs_));         \
        cr_assert_eq(gs_, cs_, "%s: cuda %s", what, sd_status_string(gs_));                       \
        cr_assert_str_eq(sd_last_error(), cm_, "%s", what);                                       \
    } while (0)

Test(cuda_verify, bad_arguments_match_the_cpu, .timeout = 30)
{
    built_or_skip();
    sd_cuda_verify_t *v = NULL;
    cr_assert_eq(sd_cuda_verify_create(SD_CUDA_VERIFY_HOST, SV, 4, &v), SD_OK, "%s", sd_last_error());
    sd_spec_scratch_t s;
    cr_assert_eq(sd_spec_scratch_init(&s, SV), SD_OK);
    float logits[5 * SV] = {0}, q[4 * SV] = {0};
    q[4] = 1.0f; /* q row 1 is all 0: d_1 cannot have been drawn from it */
    int32_t d[2] = {4, 4}, d16[2] = {4, 16}, dneg[2] = {4, -2};
    sd_sampler_params_t t1 = sp(1, 0, 1, 0), bad_t = sp(NAN, 0, 1, 0), bad_p = sp(1, 0, 0, 0);
    sd_spec_result_t rc = {-7, -7}, rg = {-7, -7};
    ASSERT_SAME_ERROR(sd_spec_verify(&bad_t, 1, 0, d, q, 2, logits, SV, &s, &rc),
                      sd_cuda_spec_verify(v, NULL, &bad_t, 1, 0, d, q, 2, logits, SV, &rg), "temperature");
    ASSERT_SAME_ERROR(sd_spec_verify(&bad_p, 1, 0, d, q, 2, logits, SV, &s, &rc),
                      sd_cuda_spec_verify(v, NULL, &bad_p, 1, 0, d, q, 2, logits, SV, &rg), "top_p");
    ASSERT_SAME_ERROR(sd_spec_verify(NULL, 1, 0, d, q, 2, logits, SV, &s, &rc),
                      sd_cuda_spec_verify(v, NULL, NULL, 1, 0, d, q, 2, logits, SV, &rg), "params NULL");
    ASSERT_SAME_ERROR(sd_spec_verify(&t1, 1, 0, d, q, -1, logits, SV, &s, &rc),
                      sd_cuda_spec_verify(v, NULL, &t1, 1, 0, d, q, -1, logits, SV, &rg), "k -1");
    ASSERT_SAME_ERROR(sd_spec_verify(&t1, 1, 0, NULL, q, 2, logits, SV, &s, &rc),
                      sd_cuda_spec_verify(v, NULL, &t1, 1, 0, NULL, q, 2, logits, SV, &rg), "draft NULL");
    ASSERT_SAME_ERROR(sd_spec_verify(&t1, 1, 0, d, q, 2, NULL, SV, &s, &rc),
                      sd_cuda_spec_verify(v, NULL, &t1, 1, 0, d, q, 2, NULL, SV, &rg), "logits NULL");
    ASSERT_SAME_ERROR(sd_spec_verify(&t1, 1, 0, d, q, 2, logits, SV, NULL, &rc),
                      sd_cuda_spec_verify(NULL, NULL, &t1, 1, 0, d, q, 2, logits, SV, &rg), "scratch NULL");
    ASSERT_SAME_ERROR(sd_spec_verify(&t1, 1, 0, d, q, 2, logits, SV, &s, NULL),
                      sd_cuda_spec_verify(v, NULL, &t1, 1, 0, d, q, 2, logits, SV, NULL), "out NULL");
    ASSERT_SAME_ERROR(sd_spec_verify(&t1, 1, 0, d, q, 2, logits, SV + 1, &s, &rc),
                      sd_cuda_spec_verify(v, NULL, &t1, 1, 0, d, q, 2, logits, SV + 1, &rg), "n_vocab 17");
    ASSERT_SAME_ERROR(sd_spec_verify(&t1, 1, 0, d, q, 2, logits, 0, &s, &rc),
                      sd_cuda_spec_verify(v, NULL, &t1, 1, 0, d, q, 2, logits, 0, &rg), "n_vocab 0");
    ASSERT_SAME_ERROR(sd_spec_verify(&t1, 1, 0, d16, q, 2, logits, SV, &s, &rc),
                      sd_cuda_spec_verify(v, NULL, &t1, 1, 0, d16, q, 2, logits, SV, &rg), "token 16");
    ASSERT_SAME_ERROR(sd_spec_verify(&t1, 1, 0, dneg, q, 2, logits, SV, &s, &rc),
                      sd_cuda_spec_verify(v, NULL, &t1, 1, 0, dneg, q, 2, logits, SV, &rg), "token -2");
    ASSERT_SAME_ERROR(sd_spec_verify(&t1, 1, 0, d, q, 2, logits, SV, &s, &rc),
                      sd_cuda_spec_verify(v, NULL, &t1, 1, 0, d, q, 2, logits, SV, &rg), "q = 0");
    cr_assert(strstr(sd_last_error(), "index 1") != NULL, "%s", sd_last_error());
    cr_assert(rc.n_accepted == -7 && rg.n_accepted == -7 && rg.next_token == -7, "out written on an error");
    /* greedy ignores q on both sides */
    sd_sampler_params_t g = sp(0, 0, 1, 0);
    cr_assert_eq(sd_cuda_spec_verify(v, NULL, &g, 1, 0, d, q, 2, logits, SV, &rg), SD_OK, "%s", sd_last_error());
    /* CUDA-only limits */
    int32_t d5[5] = {0};
    cr_assert_eq(sd_cuda_spec_verify(v, NULL, &t1, 1, 0, d5, NULL, 5, logits, SV, &rg), SD_ERR_INVALID_ARG);
    cr_assert(strstr(sd_last_error(), "k 5 must be <= 4") != NULL, "%s", sd_last_error());
    int32_t tok = -7;
    cr_assert_eq(sd_cuda_sample(v, NULL, &bad_t, 1, 0, logits, SV, &tok), SD_ERR_INVALID_ARG);
    cr_assert(strstr(sd_last_error(), "temperature") != NULL);
    cr_assert_eq(sd_cuda_sample(v, NULL, &t1, 1, 0, logits, SV + 1, &tok), SD_ERR_INVALID_ARG);
    cr_assert(strstr(sd_last_error(), "n_vocab 17") != NULL, "%s", sd_last_error());
    cr_assert_eq(sd_cuda_sample(v, NULL, &t1, 1, 0, NULL, SV, &tok), SD_ERR_INVALID_ARG);
    cr_assert_eq(sd_cuda_sample(NULL, NULL, &t1, 1, 0, logits, SV, &tok), SD_ERR_INVALID_ARG);
    cr_assert_eq(tok, -7);
    float probs[SV];
    cr_assert_eq(sd_cuda_probs(v, NULL, &t1, logits, 0, probs), SD_ERR_INVALID_ARG);
    cr_assert(strstr(sd_last_error(), "n_vocab 0") != NULL, "%s", sd_last_error());
    cr_assert_eq(sd_cuda_probs(v, NULL, &t1, logits, SV, NULL), SD_ERR_INVALID_ARG);
    sd_cuda_verify_free(v);
    sd_spec_scratch_free(&s);
}

Test(cuda_verify, create_checks_its_arguments, .timeout = 30)
{
    built_or_skip();
    sd_cuda_verify_t *v = (sd_cuda_verify_t *)&v; /* not NULL: must be cleared */
    cr_assert_eq(sd_cuda_verify_create(SD_CUDA_VERIFY_HOST, 0, 4, &v), SD_ERR_INVALID_ARG);
    cr_assert(v == NULL && strstr(sd_last_error(), "n_vocab 0") != NULL, "%s", sd_last_error());
    cr_assert_eq(sd_cuda_verify_create(SD_CUDA_VERIFY_HOST, 8, SD_CUDA_VERIFY_MAX_K + 1, &v),
                 SD_ERR_INVALID_ARG);
    cr_assert(strstr(sd_last_error(), "k_max 65") != NULL, "%s", sd_last_error());
    cr_assert_eq(sd_cuda_verify_create(SD_CUDA_VERIFY_HOST, 8, -1, &v), SD_ERR_INVALID_ARG);
    cr_assert_eq(sd_cuda_verify_create(SD_CUDA_VERIFY_HOST, 8, 1, NULL), SD_ERR_INVALID_ARG);
    int count = 0;
    cr_assert_eq(sd_cuda_device_count(&count), SD_OK, "%s", sd_last_error());
    cr_assert_eq(sd_cuda_verify_create(count, 8, 1, &v), SD_ERR_INVALID_ARG);
    cr_assert(strstr(sd_last_error(), "does not exist") != NULL, "%s", sd_last_error());
    cr_assert_eq(sd_cuda_verify_create(-2, 8, 1, &v), SD_ERR_INVALID_ARG);
    cr_assert_eq(sd_cuda_verify_create(SD_CUDA_VERIFY_HOST, 8, 0, &v), SD_OK, "%s", sd_last_error());
    sd_cuda_verify_free(v);
    sd_cuda_verify_free(NULL);
}

/* ---- bit-exact against the CPU ---------------------------------------------------------- */

enum { K_MAX = 8 };

/* The sampler settings; top_k -1 stands for n - 1. */
static const sd_sampler_params_t SETTINGS[] = {
    {0.0f, 0, 1.0f, 0.0f},     {1.0f, 0, 1.0f, 0.0f},      {0.7f, 0, 1.0f, 0.0f},
    {1.3f, 5, 1.0f, 0.0f},     {0.8f, 40, 1.0f, 0.0f},     {1.0f, 0, 0.9f, 0.0f},
    {0.7f, 0, 0.5f, 0.0f},     {1.0f, 50, 0.8f, 0.0f},     {1.0f, 0, 1.0f, 0.05f},
    {0.8f, 40, 0.9f, 0.02f},   {1.0f, -1, 0.95f, 0.0f},    {2.0f, 0, 0.99f, 0.3f},
    {1.0f, 0, 1e-6f, 0.0f},    {1e-3f, 0, 1.0f, 0.0f},     {1.0f, 1, 1.0f, 0.0f},
    {1.0f, 0, 1.0f, 1.0f},     {1e-40f, 0, 1.0f, 0.0f},    {1e30f, 3, 0.5f, 0.0f},
};
#define N_SETTINGS ((int)(sizeof SETTINGS / sizeof SETTINGS[0]))
#define N_KINDS 8

/* Logits of kind `kind` (0 smooth, 1 ties, 2 -inf/NaN/+-0 sprinkled, 3 some +inf, 4 nothing
 * finite, 5 peaked, 6 near +-FLT_MAX, 7 flat: top-p lands exactly on its target). */
static void make_logits(sd_philox_t *rng, int kind, float *x, int n)
{
    for (int i = 0; i < n; i++) {
        float u = sd_philox_uniform(rng), v = sd_philox_uniform(rng);
        switch (kind) {
        case 0: x[i] = (u - 0.5f) * 20.0f; break;
        case 1: x[i] = floorf(u * 32.0f) / 8.0f; break;
        case 2:
            x[i] = v < 0.1f ? -INFINITY : v < 0.15f ? NAN : v < 0.2f ? (v < 0.175f ? -0.0f : 0.0f)
                                                                      : (u - 0.7f) * 10.0f;
            break;
        case 3: x[i] = v < 3.0f / (float)n ? INFINITY : v < 0.1f ? NAN : (u - 0.5f) * 8.0f; break;
        case 4: x[i] = v < 0.5f ? NAN : -INFINITY; break;
        case 5: x[i] = (u - 0.5f) * 4.0f + (v < 2.0f / (float)n ? 15.0f : 0.0f); break;
        case 6: x[i] = v < 0.5f ? FLT_MAX * (u - 0.5f) : (v < 0.7f ? -FLT_MAX : u); break;
        default: x[i] = v < 0.5f ? -0.0f : 0.0f; break;
        }
    }
}

/* Where the kernels run: the host emulation (be == NULL; buffers are host memory) or a
 * device through its backend (buffers are device memory). */
typedef struct target {
    sd_backend_t *be;
    sd_cuda_verify_t *v;
    float *logits, *q, *probs; /* [(K_MAX + 1) n], [K_MAX n], [n] */
} target_t;

static void target_init(target_t *t, sd_backend_t *be, int n)
{
    t->be = be;
    int device = be != NULL ? 0 : SD_CUDA_VERIFY_HOST;
    cr_assert_eq(sd_cuda_verify_create(device, n, K_MAX, &t->v), SD_OK, "%s", sd_last_error());
    size_t lb = sizeof(float) * (K_MAX + 1) * (size_t)n, qb = sizeof(float) * K_MAX * (size_t)n;
    size_t pb = sizeof(float) * (size_t)n;
    t->logits = be ? be->ops->alloc(be, lb) : malloc(lb);
    t->q = be ? be->ops->alloc(be, qb) : malloc(qb);
    t->probs = be ? be->ops->alloc(be, pb) : malloc(pb);
    cr_assert(t->logits && t->q && t->probs, "alloc: %s", sd_last_error());
}

static void target_free(target_t *t)
{
    if (t->be) {
        t->be->ops->release(t->be, t->logits);
        t->be->ops->release(t->be, t->q);
        t->be->ops->release(t->be, t->probs);
        sd_backend_destroy(t->be);
    } else {
        free(t->logits);
        free(t->q);
        free(t->probs);
    }
    sd_cuda_verify_free(t->v);
}

static void put(target_t *t, float *dst, const float *src, size_t count)
{
    if (t->be == NULL) {
        memcpy(dst, src, count * sizeof(float));
        return;
    }
    t->be->ops->upload(t->be, dst, src, count * sizeof(float));
    sd_status_t s = t->be->ops->sync(t->be);
    cr_assert_eq(s, SD_OK, "upload: %s", sd_last_error());
}

static void get(target_t *t, float *dst, const float *src, size_t count)
{
    if (t->be == NULL) {
        memcpy(dst, src, count * sizeof(float));
        return;
    }
    t->be->ops->download(t->be, dst, src, count * sizeof(float));
    sd_status_t s = t->be->ops->sync(t->be);
    cr_assert_eq(s, SD_OK, "download: %s", sd_last_error());
}

/* Host-side inputs and CPU scratch for vocabulary n. */
typedef struct inputs {
    int n;
    float *logits, *q, *probs, *probs_cpu; /* [(K_MAX + 1) n], [K_MAX n], [n], [n] */
    sd_spec_scratch_t spec;
} inputs_t;

static void inputs_init(inputs_t *in, int n)
{
    in->n = n;
    in->logits = malloc(sizeof(float) * (K_MAX + 1) * (size_t)n);
    in->q = malloc(sizeof(float) * K_MAX * (size_t)n);
    in->probs = malloc(sizeof(float) * (size_t)n);
    in->probs_cpu = malloc(sizeof(float) * (size_t)n);
    cr_assert(in->logits && in->q && in->probs && in->probs_cpu);
    cr_assert_eq(sd_spec_scratch_init(&in->spec, n), SD_OK);
}

static void inputs_free(inputs_t *in)
{
    free(in->logits);
    free(in->q);
    free(in->probs);
    free(in->probs_cpu);
    sd_spec_scratch_free(&in->spec);
}

/* What the verification of a case did. */
typedef struct coverage {
    int errors, bonus, partial, none, residual, greedy;
} coverage_t;

/* One case c of a run (everything derived from c and salt): settings, logits kind, k, q or
 * not, draft tokens; then the CPU and the target must agree on probs (row 0), sd_sample
 * (row 0) and the verification result or error. */
static void run_case(target_t *t, inputs_t *in, int c, uint64_t salt, int k_cap, coverage_t *cov)
{
    int n = in->n;
    sd_sampler_params_t p = SETTINGS[c % N_SETTINGS];
    if (p.top_k < 0)
        p.top_k = n - 1;
    int kind = (c + c / N_SETTINGS) % N_KINDS;
    int k = (c * 7 + c / 5) % (k_cap + 1);
    int with_q = (c / 2) % 2;
    int draft_style = (c / 3) % 3; /* 0: the verify draw itself, 1: random, 2: another draw */
    uint64_t seed = salt * 1000003u + (uint64_t)c, pos0 = (c % 4 == 3) ? (1ull << 33) + (uint64_t)c : (uint64_t)(c * 13);
    sd_philox_t rng;
    sd_philox_init(&rng, salt, (uint64_t)c, 0);
    make_logits(&rng, kind, in->logits, (k + 1) * n);
    int32_t draft[K_MAX];
    sd_sampler_params_t qp = p.temperature > 0.0f ? p : sp(1.0f, 0, 1.0f, 0.0f);
    for (int i = 0; i < k; i++) {
        const float *row = in->logits + (size_t)i * n;
        uint64_t pos = pos0 + (uint64_t)i;
        if (with_q) { /* q: the sampler on perturbed logits; d drawn from it */
            float *qrow = in->q + (size_t)i * n;
            for (int j = 0; j < n; j++)
                in->probs[j] = row[j] + (sd_philox_uniform(&rng) - 0.5f) * 2.0f;
            sd_sampler_probs(&qp, in->probs, n, &in->spec.sampler, qrow);
            draft[i] = sd_sample_from_probs(qrow, n, sd_rng_uniform(seed, pos, SD_RNG_DRAFT));
        } else if (draft_style == 1) {
            draft[i] = (int32_t)(sd_philox_next(&rng) % (uint32_t)n);
        } else {
            sd_rng_purpose_t pu = draft_style == 0 ? SD_RNG_SAMPLE : SD_RNG_DRAFT;
            draft[i] = sd_sample(&p, row, n, sd_rng_uniform(seed, pos, pu), &in->spec.sampler, in->probs);
        }
    }
    if (with_q && k > 0 && c % 10 == 1) /* a draft token its q could not have drawn */
        in->q[(size_t)(k / 2) * n + draft[k / 2]] = c % 20 == 1 ? 0.0f : NAN;

    put(t, t->logits, in->logits, (size_t)(k + 1) * n);
    if (with_q && k > 0)
        put(t, t->q, in->q, (size_t)k * n);
    const float *q_cpu = with_q ? in->q : NULL, *q_dev = with_q ? t->q : NULL;
    char what[160];
    snprintf(what, sizeof what, "n %d case %d (T %g top-k %d top-p %g min-p %g, kind %d, k %d, q %d)", n, c,
             (double)p.temperature, p.top_k, (double)p.top_p, (double)p.min_p, kind, k, with_q);

    /* the distribution of row 0, bit for bit */
    sd_sampler_probs(&p, in->logits, n, &in->spec.sampler, in->probs_cpu);
    sd_status_t s = sd_cuda_probs(t->v, NULL, &p, t->logits, n, t->probs);
    cr_assert_eq(s, SD_OK, "%s: probs: %s", what, sd_last_error());
    get(t, in->probs, t->probs, (size_t)n);
    for (int j = 0; j < n; j++)
        cr_assert_eq(bits_of(in->probs[j]), bits_of(in->probs_cpu[j]), "%s: probs[%d] %a, cpu %a", what, j,
                     (double)in->probs[j], (double)in->probs_cpu[j]);

    /* target-only sampling at pos0 */
    int32_t want_tok = sd_sample(&p, in->logits, n, sd_rng_uniform(seed, pos0, SD_RNG_SAMPLE),
                                 &in->spec.sampler, in->probs_cpu);
    int32_t got_tok = -1;
    s = sd_cuda_sample(t->v, NULL, &p, seed, pos0, t->logits, n, &got_tok);
    cr_assert_eq(s, SD_OK, "%s: sample: %s", what, sd_last_error());
    cr_assert_eq(got_tok, want_tok, "%s: sampled %d, cpu %d", what, got_tok, want_tok);

    /* verification */
    sd_spec_result_t want = {-7, -7}, got = {-7, -7};
    sd_status_t ws = sd_spec_verify(&p, seed, pos0, draft, q_cpu, k, in->logits, n, &in->spec, &want);
    char want_msg[512];
    snprintf(want_msg, sizeof want_msg, "%s", ws == SD_OK ? "" : sd_last_error());
    s = sd_cuda_spec_verify(t->v, NULL, &p, seed, pos0, draft, q_dev, k, t->logits, n, &got);
    cr_assert_eq(s, ws, "%s: verify status %s, cpu %s (%s)", what, sd_status_string(s), sd_status_string(ws),
                 sd_last_error());
    if (ws != SD_OK) {
        cr_assert_str_eq(sd_last_error(), want_msg, "%s", what);
        cr_assert(got.n_accepted == -7, "%s: out written on an error", what);
        cov->errors++;
        return;
    }
    cr_assert(got.n_accepted == want.n_accepted && got.next_token == want.next_token,
              "%s: accepted %d next %d, cpu accepted %d next %d", what, got.n_accepted, got.next_token,
              want.n_accepted, want.next_token);
    if (!(p.temperature > 0.0f))
        cov->greedy++;
    else if (k > 0 && want.n_accepted == k)
        cov->bonus++;
    else if (k > 0) {
        cov->partial += want.n_accepted > 0;
        cov->none += want.n_accepted == 0;
        cov->residual += with_q;
    }
}

/* Cases [0, n_cases) for vocabulary n with drafts of at most k_cap tokens. */
static coverage_t run_cases(sd_backend_t *be, int n, int n_cases, int k_cap, uint64_t salt)
{
    target_t t;
    inputs_t in;
    coverage_t cov = {0};
    target_init(&t, be, n);
    inputs_init(&in, n);
    for (int c = 0; c < n_cases; c++)
        run_case(&t, &in, c, salt, k_cap, &cov);
    inputs_free(&in);
    target_free(&t);
    return cov;
}

/* Every path was taken: errors, greedy, full acceptance (bonus), rejection after some and
 * after no accepted tokens, the residual draw. */
static void assert_coverage(coverage_t c)
{
    cr_assert(c.errors > 0 && c.greedy > 0 && c.bonus > 0 && c.partial > 0 && c.none > 0 && c.residual > 0,
              "coverage: %d errors, %d greedy, %d bonus, %d partial, %d none, %d residual", c.errors, c.greedy,
              c.bonus, c.partial, c.none, c.residual);
}

Test(cuda_verify, emulation_matches_cpu_vocab_16, .timeout = 300)
{
    built_or_skip();
    assert_coverage(run_cases(NULL, 16, 4 * N_SETTINGS * N_KINDS, K_MAX, 1));
}

Test(cuda_verify, emulation_matches_cpu_vocab_1000, .timeout = 600)
{
    built_or_skip();
    assert_coverage(run_cases(NULL, 1000, N_SETTINGS * N_KINDS, K_MAX, 2));
}

Test(cuda_verify, emulation_matches_cpu_vocab_49152, .timeout = 600)
{
    built_or_skip();
    run_cases(NULL, 49152, 2 * N_SETTINGS, 1, 3);
}

/* Cases on the device: `full` on a GPU and under `slow`, `host` in the CUDA host mode's
 * default run (kernels on the CPU), each enough for every path of assert_coverage. */
static int device_cases(int full, int host)
{
    return sd_test_long_shapes(sd_cuda_host_mode()) ? full : host;
}

Test(cuda_verify, device_matches_cpu_vocab_16, .timeout = 300)
{
    sd_backend_t *be = device_backend_or_skip();
    assert_coverage(run_cases(be, 16, device_cases(8, 1) * N_SETTINGS * N_KINDS, K_MAX, 11));
}

Test(cuda_verify, device_matches_cpu_vocab_1000, .timeout = 300)
{
    sd_backend_t *be = device_backend_or_skip();
    assert_coverage(run_cases(be, 1000, device_cases(4 * N_KINDS, 4) * N_SETTINGS, K_MAX, 12));
}

Test(cuda_verify, device_matches_cpu_vocab_49152, .timeout = 600)
{
    sd_backend_t *be = device_backend_or_skip();
    run_cases(be, 49152, device_cases(N_SETTINGS * N_KINDS, N_SETTINGS), device_cases(K_MAX, 2), 13);
}
