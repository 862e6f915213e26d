/* The f32 helpers of attention and swiglu (kernels/cpu/vec_f32.h): the 8-lane exp and dot give
 * the scalar ones' bits, and the CPU attention and swiglu ops equal, bit for bit, the order
 * written at attn_row / swiglu_task recomputed here with the scalar helpers. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend_impl.h"
#include "kernels/cpu/vec_f32.h"
#include "support/test_util.h"

static sd_backend_t *make_backend(int n_threads)
{
    sd_backend_t *be = NULL;
    cr_assert_eq(sd_backend_cpu_create(n_threads, &be), SD_OK, "%s", sd_last_error());
    return be;
}

static uint32_t bits_of(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

/* Distance in ulps between two finite floats of the same sign. */
static int64_t ulps(float a, float b) { return llabs((int64_t)bits_of(a) - (int64_t)bits_of(b)); }

Test(kernels_attention, exp_is_within_2_ulp_of_expf_and_handles_the_edges)
{
    for (float x = -87.0f; x <= 88.0f; x += 0.0013f)
        cr_assert(ulps(sd_exp_f32(x), expf(x)) <= 2, "exp(%.9g) = %.9g, expf %.9g", x, sd_exp_f32(x), expf(x));
    cr_assert(sd_exp_f32(0.0f) == 1.0f && sd_exp_f32(-0.0f) == 1.0f);
    cr_assert(sd_exp_f32(-87.5f) == 0.0f && sd_exp_f32(-INFINITY) == 0.0f);
    cr_assert(sd_exp_f32(88.5f) == INFINITY && sd_exp_f32(INFINITY) == INFINITY);
    cr_assert(isnan(sd_exp_f32(NAN)));
}

#if defined(__AVX2__) && defined(__FMA__)
Test(kernels_attention, exp8_gives_the_scalar_bits)
{
    static const float edges[] = {0.0f, -0.0f, -87.0f, -87.00001f, 88.0f, 88.00001f, INFINITY,
                                  -INFINITY, NAN, -1e-30f, 1e-30f, 0.3465736f, -0.3465736f, 1e-45f};
    float x[8], e[8];
    uint32_t seed = 1;
    for (int it = 0; it < 200000; it++) {
        for (int l = 0; l < 8; l++) {
            seed = seed * 1664525u + 1013904223u;
            x[l] = it % 7 == 0 ? edges[(seed >> 8) % (sizeof edges / sizeof edges[0])]
                               : ((float)(seed >> 8) / 16777216.0f - 0.5f) * 200.0f;
        }
        _mm256_storeu_ps(e, sd_exp8_f32(_mm256_loadu_ps(x)));
        for (int l = 0; l < 8; l++) {
            float want = sd_exp_f32(x[l]);
            cr_assert(bits_of(e[l]) == bits_of(want) || (isnan(e[l]) && isnan(want)),
                      "exp8(%.9g) = %.9g, scalar %.9g", x[l], e[l], want);
        }
    }
}

Test(kernels_attention, dot8_gives_sd_dot_f32_bits)
{
    static const int lens[] = {1, 7, 8, 9, 16, 20, 24, 33, 64, 72, 128};
    float *a = malloc(sizeof(float) * 8 * 128), *b = malloc(sizeof(float) * 128), r[8];
    sd_test_fill_random(a, 8 * 128, 5, 3.0f);
    sd_test_fill_random(b, 128, 6, 2.0f);
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        int n = lens[li];
        const float *rows[8];
        for (int k = 0; k < 8; k++) rows[k] = a + (size_t)k * 128 + (size_t)(k % 3);
        _mm256_storeu_ps(r, sd_dot8_f32(rows, b, n - (n > 3 ? 2 : 0)));
        for (int k = 0; k < 8; k++) {
            float want = sd_dot_f32(rows[k], b, n - (n > 3 ? 2 : 0));
            cr_assert(bits_of(r[k]) == bits_of(want), "n %d key %d: %.9g vs %.9g", n, k, r[k], want);
        }
    }
    free(a);
    free(b);
}
#endif

/* attn_row's documented order (backend_cpu.c) with the scalar helpers: query qh against keys
 * 0 .. n_keys - 1 of kv head kvh. */
static void attn_order(const float *qh, const float *k, const float *v, int n_keys, int n_head_kv,
                       int kvh, int hd, float *out)
{
    float scale = 1.0f / sqrtf((float)hd), max = -INFINITY;
    float *s = malloc(sizeof(float) * (size_t)n_keys);
    for (int t = 0; t < n_keys; t++) {
        s[t] = sd_dot_f32(k + ((size_t)t * (size_t)n_head_kv + (size_t)kvh) * (size_t)hd, qh, hd) * scale;
        max = s[t] > max ? s[t] : max;
    }
    float lane[8] = {0}, tail = 0.0f;
    memset(out, 0, sizeof(float) * (size_t)hd);
    for (int t = 0; t < n_keys; t++) {
        float e = sd_exp_f32(s[t] - max);
        if (t < n_keys / 8 * 8) lane[t % 8] += e;
        else tail += e;
        const float *vt = v + ((size_t)t * (size_t)n_head_kv + (size_t)kvh) * (size_t)hd;
        for (int d = 0; d < hd; d++) out[d] = fmaf(e, vt[d], out[d]);
    }
    float sum = ((lane[0] + lane[4]) + (lane[2] + lane[6])) + ((lane[1] + lane[5]) + (lane[3] + lane[7]));
    sum += tail;
    float inv = 1.0f / sum;
    for (int d = 0; d < hd; d++) out[d] *= inv;
    free(s);
}

/* Every query row of a prefill equals the order above bit for bit: head dims with and without
 * the 64-column register passes and tails, key counts across the 2048-key score chunks, groups
 * of 2 and of 10 query heads per KV head, and a decode row alone equal to its prefill row. */
Test(kernels_attention, prefill_rows_follow_the_documented_order, .timeout = 120)
{
    static const int hds[] = {64, 128, 20, 72};
    static const int32_t positions[] = {0, 6, 7, 8, 15, 100, 2047, 2048, 2049, 4200};
    enum { N = sizeof positions / sizeof positions[0], N_CTX = 4201 };
    sd_backend_t *be = make_backend(2);
    for (size_t hi = 0; hi < 2 * sizeof hds / sizeof hds[0]; hi++) {
        int hd = hds[hi % 4], H = hi < 4 ? 4 : 10, HKV = hi < 4 ? 2 : 1;
        size_t row = (size_t)H * (size_t)hd, kvn = (size_t)N_CTX * HKV * (size_t)hd;
        float *q = malloc(sizeof(float) * N * row), *out = malloc(sizeof(float) * N * row);
        float *k = malloc(sizeof(float) * kvn), *v = malloc(sizeof(float) * kvn), *want = malloc(sizeof(float) * row);
        sd_test_fill_random(q, N * row, 7 + (uint32_t)hi, 2.0f);
        sd_test_fill_random(k, kvn, 8, 2.0f);
        sd_test_fill_random(v, kvn, 9, 1.0f);
        be->ops->attention(be, q, k, v, NULL, 0, positions, N, N_CTX, H, HKV, hd, out);
        be->ops->attention(be, q + 5 * row, k, v, NULL, 0, positions + 5, 1, N_CTX, H, HKV, hd, want);
        cr_assert(memcmp(out + 5 * row, want, sizeof(float) * row) == 0, "a decode row differs");
        for (int i = 0; i < N; i++)
            for (int h = 0; h < H; h++) {
                size_t off = (size_t)i * row + (size_t)h * (size_t)hd;
                attn_order(q + off, k, v, positions[i] + 1, HKV, h / (H / HKV), hd, want);
                cr_assert(memcmp(out + off, want, sizeof(float) * (size_t)hd) == 0,
                          "head_dim %d position %d head %d differs from the documented order", hd,
                          positions[i], h);
            }
        free(q);
        free(out);
        free(k);
        free(v);
        free(want);
    }
    sd_backend_destroy(be);
}

Test(kernels_attention, swiglu_gives_the_scalar_bits)
{
    size_t len = 16384 + 13; /* a whole task, then one with an 8-lane part and a tail */
    float *g = malloc(sizeof(float) * len), *u = malloc(sizeof(float) * len), *o = malloc(sizeof(float) * len);
    sd_test_fill_random(g, len, 10, 100.0f);
    sd_test_fill_random(u, len, 11, 2.0f);
    g[3] = NAN;
    g[4] = -INFINITY;
    g[5] = 0.0f;
    sd_backend_t *be = make_backend(1);
    be->ops->swiglu(be, g, u, len, o);
    for (size_t i = 0; i < len; i++) {
        float want = g[i] / (1.0f + sd_exp_f32(-g[i])) * u[i];
        cr_assert(bits_of(o[i]) == bits_of(want) || (isnan(o[i]) && isnan(want)), "element %zu: %.9g vs %.9g",
                  i, o[i], want);
    }
    sd_backend_destroy(be);
    free(g);
    free(u);
    free(o);
}
