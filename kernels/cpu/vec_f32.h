/* Small f32 vector helpers for attention (internal to kernels/cpu), inlined into the
 * per-key loops. Each has one fixed operation order for a given n, so results depend only
 * on the operands (determinism, batch invariance). */
#ifndef SPECDEC_KERNELS_CPU_VEC_F32_H
#define SPECDEC_KERNELS_CPU_VEC_F32_H

#include <math.h>
#include <stdint.h>

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
