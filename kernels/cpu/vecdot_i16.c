/* Integer dot products for matmul: 4/8-bit weights times int16-quantized activations.
 *
 * Per weight block b and activation row r: the 32 products q * xq are summed pairwise
 * with madd (exact in int32), converted to float, and accumulated as
 * acc[r][b % 2] += that * (d_b * xscale_b); Q4_1 adds m_b * xsum_b into a scalar
 * accumulator msum[r][b % 2]. The order depends only on the block index, so a row's
 * result never depends on nr (batch invariance). */
#include <math.h>

#include "kernels/cpu/quants.h"

int sd_dot_i16_supported(sd_dtype_t type)
{
    return type == SD_DTYPE_Q4_0 || type == SD_DTYPE_Q4_1 || type == SD_DTYPE_Q8_0;
}

#if defined(__AVX2__)
#include <immintrin.h>

/* Horizontal max / sum of 8 floats in a fixed lane order. */
static inline float hmax8(__m256 v)
{
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

static inline float hsum8(__m256 v)
{
    __m128 m = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_add_ps(m, _mm_movehl_ps(m, m));
    m = _mm_add_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

/* One block of 32: scale = amax / 32767, q = round-half-even(x / scale). */
static void quantize_block_i16(const float *xb, int16_t *q, float *scale, float *sum)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 v[4], amax = _mm256_setzero_ps(), s = _mm256_setzero_ps();
    for (int k = 0; k < 4; k++) {
        v[k] = _mm256_loadu_ps(xb + 8 * k);
        amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v[k]));
        s = _mm256_add_ps(s, v[k]);
    }
    float m = hmax8(amax);
    *scale = m / 32767.0f;
    *sum = hsum8(s);
    __m256 id = _mm256_set1_ps(m > 0.0f ? 32767.0f / m : 0.0f);
    for (int k = 0; k < 4; k += 2) {
        __m256i a = _mm256_cvtps_epi32(_mm256_mul_ps(v[k], id)); /* MXCSR: nearest-even */
        __m256i b = _mm256_cvtps_epi32(_mm256_mul_ps(v[k + 1], id));
        __m256i p = _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0xD8);
        _mm256_storeu_si256((__m256i *)(q + 8 * k), p);
    }
}
#else
static void quantize_block_i16(const float *xb, int16_t *q, float *scale, float *sum)
{
    float amax = 0.0f, s = 0.0f;
    for (int j = 0; j < SD_QK; j++) {
        float a = fabsf(xb[j]);
        amax = a > amax ? a : amax;
        s += xb[j];
    }
    float id = amax > 0.0f ? 32767.0f / amax : 0.0f;
    *scale = amax / 32767.0f;
    *sum = s;
    for (int j = 0; j < SD_QK; j++) q[j] = (int16_t)rintf(xb[j] * id);
}
#endif

void sd_quantize_act_i16(const float *x, int64_t n, int16_t *q, float *scale, float *sum)
{
    for (int64_t b = 0; b < n / SD_QK; b++)
        quantize_block_i16(x + b * SD_QK, q + b * SD_QK, scale + b, sum + b);
}

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>

#define KERNEL static inline __attribute__((always_inline))
#define UNROLL _Pragma("GCC unroll 8")

/* 32 weights as two vectors of 16 int16 (elements 0..15, 16..31). */
KERNEL void weights_q4(const uint8_t *qs, int centered, __m256i w[2])
{
    __m128i raw = _mm_loadu_si128((const __m128i *)qs), mask = _mm_set1_epi8(0x0F);
    __m128i lo = _mm_and_si128(raw, mask), hi = _mm_and_si128(_mm_srli_epi16(raw, 4), mask);
    if (centered) {
        lo = _mm_sub_epi8(lo, _mm_set1_epi8(8));
        hi = _mm_sub_epi8(hi, _mm_set1_epi8(8));
        w[0] = _mm256_cvtepi8_epi16(lo);
        w[1] = _mm256_cvtepi8_epi16(hi);
    } else {
        w[0] = _mm256_cvtepu8_epi16(lo);
        w[1] = _mm256_cvtepu8_epi16(hi);
    }
}

KERNEL void weights_q8(const int8_t *qs, __m256i w[2])
{
    w[0] = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)qs));
    w[1] = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(qs + 16)));
}

KERNEL __m256 block_dot(const __m256i w[2], const int16_t *xq)
{
    __m256i p0 = _mm256_madd_epi16(w[0], _mm256_loadu_si256((const __m256i *)xq));
    __m256i p1 = _mm256_madd_epi16(w[1], _mm256_loadu_si256((const __m256i *)(xq + 16)));
    return _mm256_cvtepi32_ps(_mm256_add_epi32(p0, p1));
}

/* One kernel for the three formats; `type` and nr are constants after inlining. */
KERNEL void dot_i16(sd_dtype_t type, const void *w_row, const int16_t *q, const float *scale,
                    const float *sum, int nr, int64_t n, float *out)
{
    int64_t nb = n / SD_QK;
    __m256 acc[SD_DOT_MAX_ROWS][2];
    float msum[SD_DOT_MAX_ROWS][2];
    UNROLL
    for (int r = 0; r < nr; r++) {
        acc[r][0] = acc[r][1] = _mm256_setzero_ps();
        msum[r][0] = msum[r][1] = 0.0f;
    }
    for (int64_t b = 0; b < nb; b++) {
        __m256i w[2];
        float d, m = 0.0f;
        if (type == SD_DTYPE_Q8_0) {
            const sd_block_q8_0 *blk = (const sd_block_q8_0 *)w_row + b;
            d = _cvtsh_ss(blk->d);
            weights_q8(blk->qs, w);
        } else if (type == SD_DTYPE_Q4_0) {
            const sd_block_q4_0 *blk = (const sd_block_q4_0 *)w_row + b;
            d = _cvtsh_ss(blk->d);
            weights_q4(blk->qs, 1, w);
        } else {
            const sd_block_q4_1 *blk = (const sd_block_q4_1 *)w_row + b;
            d = _cvtsh_ss(blk->d);
            m = _cvtsh_ss(blk->m);
            weights_q4(blk->qs, 0, w);
        }
        UNROLL
        for (int r = 0; r < nr; r++) {
            size_t xb = (size_t)r * (size_t)nb + (size_t)b;
            __m256 s = block_dot(w, q + xb * SD_QK);
            acc[r][b & 1] = _mm256_fmadd_ps(s, _mm256_set1_ps(d * scale[xb]), acc[r][b & 1]);
            if (type == SD_DTYPE_Q4_1) msum[r][b & 1] += m * sum[xb];
        }
    }
    UNROLL
    for (int r = 0; r < nr; r++)
        out[r] = hsum8(_mm256_add_ps(acc[r][0], acc[r][1])) + (msum[r][0] + msum[r][1]);
}

#define DISPATCH(T)                                                                              \
    do {                                                                                         \
        switch (nr) {                                                                            \
        case 1: dot_i16(T, w_row, q, scale, sum, 1, n, out); break;                             \
        case 2: dot_i16(T, w_row, q, scale, sum, 2, n, out); break;                             \
        case 3: dot_i16(T, w_row, q, scale, sum, 3, n, out); break;                             \
        default: dot_i16(T, w_row, q, scale, sum, 4, n, out); break;                            \
        }                                                                                        \
    } while (0)

void sd_vec_dot_rows_i16(sd_dtype_t type, const void *w_row, const int16_t *q, const float *scale,
                         const float *sum, int nr, int64_t n, float *out)
{
    switch (type) {
    case SD_DTYPE_Q8_0: DISPATCH(SD_DTYPE_Q8_0); break;
    case SD_DTYPE_Q4_0: DISPATCH(SD_DTYPE_Q4_0); break;
    case SD_DTYPE_Q4_1: DISPATCH(SD_DTYPE_Q4_1); break;
    default: break; /* callers check sd_dot_i16_supported */
    }
}

#else /* portable scalar path, same accumulation scheme */

/* Weight j (0..31) of block b as an integer, and the block's d and m. */
static int weight_q(sd_dtype_t type, const void *w_row, int64_t b, int j, float *d, float *m)
{
    if (type == SD_DTYPE_Q8_0) {
        const sd_block_q8_0 *blk = (const sd_block_q8_0 *)w_row + b;
        *d = sd_f16_to_f32(blk->d);
        return blk->qs[j];
    }
    const uint8_t *qs = type == SD_DTYPE_Q4_0 ? ((const sd_block_q4_0 *)w_row + b)->qs
                                              : ((const sd_block_q4_1 *)w_row + b)->qs;
    int nib = j < 16 ? qs[j] & 0xF : qs[j - 16] >> 4;
    if (type == SD_DTYPE_Q4_0) {
        *d = sd_f16_to_f32(((const sd_block_q4_0 *)w_row + b)->d);
        return nib - 8;
    }
    *d = sd_f16_to_f32(((const sd_block_q4_1 *)w_row + b)->d);
    *m = sd_f16_to_f32(((const sd_block_q4_1 *)w_row + b)->m);
    return nib;
}

void sd_vec_dot_rows_i16(sd_dtype_t type, const void *w_row, const int16_t *q, const float *scale,
                         const float *sum, int nr, int64_t n, float *out)
{
    int64_t nb = n / SD_QK;
    for (int r = 0; r < nr; r++) {
        float acc[2] = {0.0f, 0.0f}, msum[2] = {0.0f, 0.0f};
        for (int64_t b = 0; b < nb; b++) {
            size_t xb = (size_t)r * (size_t)nb + (size_t)b;
            float d = 0.0f, m = 0.0f;
            int32_t s = 0;
            for (int j = 0; j < SD_QK; j++) s += weight_q(type, w_row, b, j, &d, &m) * q[xb * SD_QK + (size_t)j];
            acc[b & 1] += (float)s * (d * scale[xb]);
            msum[b & 1] += m * sum[xb];
        }
        out[r] = (acc[0] + acc[1]) + (msum[0] + msum[1]);
    }
}

#endif
