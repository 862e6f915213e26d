/* Small f32 vector helpers for attention (internal to kernels/cpu), inlined into the
 * per-key loops. Each has one fixed operation order for a given n, so results depend only
 * on the operands (determinism, batch invariance). */
#ifndef SPECDEC_KERNELS_CPU_VEC_F32_H
#define SPECDEC_KERNELS_CPU_VEC_F32_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* exp(x) as a polynomial (Cephes' expf coefficients): x < SD_EXP_LO gives 0, x > SD_EXP_HI
 * +inf, NaN itself; within 2 ulp of expf. sd_exp8_f32 runs the same operations per lane, so
 * both give the same bits for every x. */
#define SD_EXP_LO (-87.0f)
#define SD_EXP_HI 88.0f
#define SD_EXP_ROUND 12582912.0f /* 1.5 * 2^23: x + it - it rounds x to an integer */
#define SD_EXP_POLY(fma_, p, r)                                                                 \
    do {                                                                                        \
        p = fma_(p, r, SD_EXP_C(1.3981999507e-3f));                                             \
        p = fma_(p, r, SD_EXP_C(8.3334519073e-3f));                                             \
        p = fma_(p, r, SD_EXP_C(4.1665795894e-2f));                                             \
        p = fma_(p, r, SD_EXP_C(1.6666665459e-1f));                                             \
        p = fma_(p, r, SD_EXP_C(5.0000001201e-1f));                                             \
        p = fma_(p, r, SD_EXP_C(1.0f));                                                         \
        p = fma_(p, r, SD_EXP_C(1.0f));                                                         \
    } while (0)

static inline float sd_exp_f32(float x)
{
    if (x != x) return x;
    if (x < SD_EXP_LO) return 0.0f;
    if (x > SD_EXP_HI) return INFINITY;
    float n = fmaf(x, 1.44269504f, SD_EXP_ROUND) - SD_EXP_ROUND; /* round(x / ln 2) */
    float r = fmaf(n, -0.693359375f, x);                           /* x - n ln 2, in two parts */
    r = fmaf(n, 2.12194440e-4f, r);
    float p = 1.9875691500e-4f;
#define SD_EXP_C(c) (c)
    SD_EXP_POLY(fmaf, p, r);
#undef SD_EXP_C
    int32_t bits = ((int32_t)n + 127) * (1 << 23); /* 2^n, n in [-126, 127] */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

/* sum a[i] * b[i]: lanes of 8 into two FMA accumulators (chunk k into k % 2), then
 * ((acc0 + acc1) reduced lane-wise) plus the scalar tail in index order. */
static inline float sd_dot_f32(const float *a, const float *b, int n)
{
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
    }
    if (i + 8 <= n) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
        i += 8;
    }
    __m256 v = _mm256_add_ps(acc0, acc1);
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    float r = _mm_cvtss_f32(s);
    for (; i < n; i++) r = fmaf(a[i], b[i], r);
    return r;
}

/* sd_exp_f32 of each lane, the same operations. */
static inline __m256 sd_exp8_f32(__m256 x)
{
    __m256 lo = _mm256_set1_ps(SD_EXP_LO), hi = _mm256_set1_ps(SD_EXP_HI);
    __m256 xc = _mm256_min_ps(_mm256_max_ps(x, lo), hi), round = _mm256_set1_ps(SD_EXP_ROUND);
    __m256 n = _mm256_sub_ps(_mm256_fmadd_ps(xc, _mm256_set1_ps(1.44269504f), round), round);
    __m256 r = _mm256_fmadd_ps(n, _mm256_set1_ps(-0.693359375f), xc);
    r = _mm256_fmadd_ps(n, _mm256_set1_ps(2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
#define SD_EXP_C(c) _mm256_set1_ps(c)
    SD_EXP_POLY(_mm256_fmadd_ps, p, r);
#undef SD_EXP_C
    __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    __m256 e = _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
    e = _mm256_blendv_ps(e, _mm256_setzero_ps(), _mm256_cmp_ps(x, lo, _CMP_LT_OQ));
    e = _mm256_blendv_ps(e, _mm256_set1_ps(INFINITY), _mm256_cmp_ps(x, hi, _CMP_GT_OQ));
    return _mm256_blendv_ps(e, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

/* The sums of the vectors v[0..8) reduced as sd_dot_f32 reduces its accumulator
 * ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)): lane k is v[k]'s sum. */
static inline __m256 sd_hsum8x8_f32(const __m256 v[8])
{
    __m256 w[4], z[2];
    for (int k = 0; k < 4; k++)
        w[k] = _mm256_add_ps(_mm256_permute2f128_ps(v[2 * k], v[2 * k + 1], 0x20),
                             _mm256_permute2f128_ps(v[2 * k], v[2 * k + 1], 0x31));
    for (int k = 0; k < 2; k++) /* lanes: v[4k] (l0+l4 + l2+l6, l1+l5 + l3+l7), v[4k+2] | v[4k+1], v[4k+3] */
        z[k] = _mm256_add_ps(_mm256_shuffle_ps(w[2 * k], w[2 * k + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm256_shuffle_ps(w[2 * k], w[2 * k + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    __m256 r = _mm256_add_ps(_mm256_shuffle_ps(z[0], z[1], _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm256_shuffle_ps(z[0], z[1], _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm256_permutevar8x32_ps(r, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)); /* r: 0 2 4 6 1 3 5 7 */
}

/* Lane k = sd_dot_f32(a[k], b, n), bit for bit. */
__attribute__((always_inline)) static inline __m256 sd_dot8_f32(const float *const a[8], const float *b, int n)
{
    __m256 v[8];
    int n16 = n / 16 * 16;
    for (int k = 0; k < 8; k++) {
        __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
        for (int i = 0; i < n16; i += 16) {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a[k] + i), _mm256_loadu_ps(b + i), acc0);
            acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a[k] + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
        }
        if (n16 + 8 <= n) acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a[k] + n16), _mm256_loadu_ps(b + n16), acc0);
        v[k] = _mm256_add_ps(acc0, acc1);
    }
    __m256 r = sd_hsum8x8_f32(v);
    for (int i = n / 8 * 8; i < n; i++)
        r = _mm256_fmadd_ps(_mm256_setr_ps(a[0][i], a[1][i], a[2][i], a[3][i], a[4][i], a[5][i], a[6][i], a[7][i]),
                            _mm256_set1_ps(b[i]), r);
    return r;
}

/* y[i] = fma(a, x[i], y[i]) for i < n. */
static inline void sd_axpy_f32(float *y, float a, const float *x, int n)
{
    __m256 va = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] = fmaf(a, x[i], y[i]);
}

#else

static inline float sd_dot_f32(const float *a, const float *b, int n)
{
    float r = 0.0f;
    for (int i = 0; i < n; i++) r = fmaf(a[i], b[i], r);
    return r;
}

static inline void sd_axpy_f32(float *y, float a, const float *x, int n)
{
    for (int i = 0; i < n; i++) y[i] = fmaf(a, x[i], y[i]);
}

#endif

#endif
