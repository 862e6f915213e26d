/* Integer dot products for matmul: 4/8-bit weights times int16-quantized activations.
 *
 * Per weight row, activation row and block b, the 32 integer products q * xq are summed
 * exactly (int32) in two halves: lo = elements 0..7 and 16..23, hi = 8..15 and 24..31
 * (the AVX2 kernel's integer lanes reduce onto exactly these halves). Each half is converted to float and
 * accumulated with one FMA: acc_lo = fma(lo, d_b * xscale_b, acc_lo), same for hi; Q4_1
 * adds msum = fma(m_b, xsum_b, msum). The result is (acc_lo + acc_hi) + msum. Each
 * (weight row, activation row) pair owns its accumulators and sees this exact sequence
 * whatever tile it is computed in, so results never depend on the batch (batch
 * invariance); the scalar fallback performs the same operations.
 *
 * Activation layout: for Q4_0/Q4_1 the AVX2 kernel reads each quantized block as
 * (x0, x2, .., x14, x16, x18, .., x30, x1, x3, .., x15, x17, .., x31): the even and odd
 * elements match the nibbles of 16-bit weight lanes, so no byte unpacking is needed. Q8_0
 * and the scalar path use the natural order. */
#include <math.h>

#include "kernels/cpu/quants.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define I16_AVX2 1 /* the AVX2 tile kernel (and its activation order) is compiled */
#else
#define I16_AVX2 0
#endif

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

/* 16 int16 (elements e0..e15) -> (e0, e2, .., e14 | e1, e3, .., e15). */
static inline __m256i evens_odds(__m256i v)
{
    const __m256i idx = _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15,
                                         0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15);
    return _mm256_permute4x64_epi64(_mm256_shuffle_epi8(v, idx), 0xD8);
}

/* One block of 32: scale = amax / 32767, q = round-half-even(x / scale), stored in the
 * natural order or (evens_first) the Q4 kernel order of the header comment. */
static void quantize_block_i16(const float *xb, int evens_first, int16_t *q, float *scale,
                               float *sum)
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
    __m256i p[2]; /* elements 0..15, 16..31 */
    for (int k = 0; k < 2; k++) {
        __m256i a = _mm256_cvtps_epi32(_mm256_mul_ps(v[2 * k], id)); /* MXCSR: nearest-even */
        __m256i b = _mm256_cvtps_epi32(_mm256_mul_ps(v[2 * k + 1], id));
        p[k] = _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0xD8);
    }
    if (evens_first && I16_AVX2) {
        __m256i lo = evens_odds(p[0]), hi = evens_odds(p[1]);
        p[0] = _mm256_permute2x128_si256(lo, hi, 0x20);
        p[1] = _mm256_permute2x128_si256(lo, hi, 0x31);
    }
    _mm256_storeu_si256((__m256i *)q, p[0]);
    _mm256_storeu_si256((__m256i *)(q + 16), p[1]);
}
#else
static void quantize_block_i16(const float *xb, int evens_first, int16_t *q, float *scale,
                               float *sum)
{
    /* the sum in the AVX2 order: 8 lane sums over k, then lanes (l, l+4), (0, 2), (1, 3) */
    float amax = 0.0f, lane[8] = {0.0f};
    for (int j = 0; j < SD_QK; j++) {
        float a = fabsf(xb[j]);
        amax = a > amax ? a : amax;
        lane[j % 8] += xb[j];
    }
    float m[4];
    for (int l = 0; l < 4; l++) m[l] = lane[l] + lane[l + 4];
    float id = amax > 0.0f ? 32767.0f / amax : 0.0f;
    *scale = amax / 32767.0f;
    *sum = (m[0] + m[2]) + (m[1] + m[3]);
    for (int j = 0; j < SD_QK; j++) q[j] = (int16_t)rintf(xb[j] * id);
}
#endif

void sd_quantize_act_i16(sd_dtype_t type, const float *x, int64_t n, int16_t *q, float *scale,
                         float *sum)
{
    int evens_first = type == SD_DTYPE_Q4_0 || type == SD_DTYPE_Q4_1;
    for (int64_t b = 0; b < n / SD_QK; b++)
        quantize_block_i16(x + b * SD_QK, evens_first, q + b * SD_QK, scale + b, sum + b);
}

#if I16_AVX2
#include <immintrin.h>
#include <string.h>

#define KERNEL static inline __attribute__((always_inline))
#define UNROLL _Pragma("GCC unroll 8")

enum { TW = SD_I16_TILE_W, TX = SD_I16_TILE_X };

static inline uint32_t load_u32(const void *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline uint16_t load_u16(const void *p)
{
    uint16_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Software prefetch PREFETCH_TILES tiles ahead: the TW rows of a tile are read as TW short
 * interleaved streams (a few cache lines each), which the hardware prefetcher does not
 * follow. A tile's rows are contiguous, so while block b of this tile is computed, the
 * bytes [b, b + 1) * TW * block size of the tile PREFETCH_TILES further are requested;
 * over the tile the whole region is covered. A prefetch never faults, so the address may
 * lie past the matrix; it is formed as an integer for that reason. */
#define PREFETCH_TILES 2

KERNEL void prefetch_tile_part(const char *tile, size_t tile_bytes, size_t block_bytes, int64_t b)
{
    uintptr_t p = (uintptr_t)tile + PREFETCH_TILES * tile_bytes + (size_t)b * TW * block_bytes;
    for (size_t off = 0; off < TW * block_bytes; off += 64) __builtin_prefetch((const void *)(p + off));
}

/* Integer stage of one block for Q8_0. s[c] lanes: (rows 0..3 lo half | rows 0..3 hi half). */
KERNEL void sums_q8(const char *const rows[TW], int64_t b, const int16_t *q, int64_t n, int nx,
                    __m256i s[TX])
{
    __m256i p[TW][TX];
    UNROLL
    for (int r = 0; r < TW; r++) {
        const int8_t *qs = ((const sd_block_q8_0 *)rows[r] + b)->qs;
        __m256i w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)qs));
        __m256i w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(qs + 16)));
        UNROLL
        for (int c = 0; c < nx; c++) {
            const int16_t *xq = q + (size_t)c * (size_t)n + (size_t)b * SD_QK;
            p[r][c] = _mm256_add_epi32(
                _mm256_madd_epi16(w0, _mm256_loadu_si256((const __m256i *)xq)),
                _mm256_madd_epi16(w1, _mm256_loadu_si256((const __m256i *)(xq + 16))));
        }
    }
    UNROLL
    for (int c = 0; c < nx; c++)
        s[c] = _mm256_hadd_epi32(_mm256_hadd_epi32(p[0][c], p[1][c]),
                                 _mm256_hadd_epi32(p[2][c], p[3][c]));
}

/* Integer stage of one block for Q4_0 / Q4_1, activations in evens-first order. Rows 0 and
 * 2 share one vector (one per 128-bit lane), rows 1 and 3 another; in a 16-bit lane k the
 * four nibbles are elements 2k, 16+2k, 2k+1, 17+2k. s[c] lanes: (row 0 lo, row 0 hi,
 * row 1 lo, row 1 hi | row 2 lo, row 2 hi, row 3 lo, row 3 hi). */
KERNEL void sums_q4(sd_dtype_t type, const char *const rows[TW], int64_t b, const int16_t *q,
                    int64_t n, int nx, __m256i s[TX])
{
    const __m256i mask = _mm256_set1_epi16(0x000F), eight = _mm256_set1_epi16(8);
    __m256i pair[2][TX];
    UNROLL
    for (int h = 0; h < 2; h++) {
        const uint8_t *lo = type == SD_DTYPE_Q4_0 ? ((const sd_block_q4_0 *)rows[h] + b)->qs
                                                  : ((const sd_block_q4_1 *)rows[h] + b)->qs;
        const uint8_t *hi = type == SD_DTYPE_Q4_0 ? ((const sd_block_q4_0 *)rows[h + 2] + b)->qs
                                                  : ((const sd_block_q4_1 *)rows[h + 2] + b)->qs;
        __m256i raw = _mm256_loadu2_m128i((const __m128i *)hi, (const __m128i *)lo), v[4];
        v[0] = _mm256_and_si256(raw, mask);                        /* x order 0..7   */
        v[1] = _mm256_and_si256(_mm256_srli_epi16(raw, 4), mask);  /* x order 8..15  */
        v[2] = _mm256_and_si256(_mm256_srli_epi16(raw, 8), mask);  /* x order 16..23 */
        v[3] = _mm256_srli_epi16(raw, 12);                         /* x order 24..31 */
        if (type == SD_DTYPE_Q4_0) {
            UNROLL
            for (int k = 0; k < 4; k++) v[k] = _mm256_sub_epi16(v[k], eight);
        }
        UNROLL
        for (int c = 0; c < nx; c++) {
            const int16_t *xq = q + (size_t)c * (size_t)n + (size_t)b * SD_QK;
            __m256i t[4];
            UNROLL
            for (int k = 0; k < 4; k++)
                t[k] = _mm256_madd_epi16(v[k], _mm256_broadcastsi128_si256(
                                                   _mm_loadu_si128((const __m128i *)(xq + 8 * k))));
            pair[h][c] = _mm256_add_epi32(_mm256_add_epi32(t[0], t[1]), _mm256_add_epi32(t[2], t[3]));
        }
    }
    UNROLL
    for (int c = 0; c < nx; c++) s[c] = _mm256_hadd_epi32(pair[0][c], pair[1][c]);
}

/* The f16 scales of block b of the TW rows, in the lane order of the sums: d (and for Q4_1
 * m, zero otherwise). */
KERNEL void block_scales(sd_dtype_t type, const char *const rows[TW], int64_t b, __m256 *d,
                         __m256 *m)
{
    if (type == SD_DTYPE_Q4_1) {
        __m128i dm = _mm_setr_epi32((int)load_u32((const sd_block_q4_1 *)rows[0] + b),
                                    (int)load_u32((const sd_block_q4_1 *)rows[1] + b),
                                    (int)load_u32((const sd_block_q4_1 *)rows[2] + b),
                                    (int)load_u32((const sd_block_q4_1 *)rows[3] + b));
        __m256 f = _mm256_cvtph_ps(dm); /* d0 m0 d1 m1 | d2 m2 d3 m3 */
        *d = _mm256_moveldup_ps(f);
        *m = _mm256_movehdup_ps(f);
        return;
    }
    *m = _mm256_setzero_ps();
    size_t off = (size_t)b * (type == SD_DTYPE_Q8_0 ? sizeof(sd_block_q8_0) : sizeof(sd_block_q4_0));
    short h0 = (short)load_u16(rows[0] + off), h1 = (short)load_u16(rows[1] + off);
    short h2 = (short)load_u16(rows[2] + off), h3 = (short)load_u16(rows[3] + off);
    if (type == SD_DTYPE_Q8_0)
        *d = _mm256_cvtph_ps(_mm_setr_epi16(h0, h1, h2, h3, h0, h1, h2, h3));
    else
        *d = _mm256_cvtph_ps(_mm_setr_epi16(h0, h0, h1, h1, h2, h2, h3, h3));
}

/* y[r] = (acc lo + acc hi) + msum for the nw rows of a tile, lanes as block_scales. */
KERNEL void store_rows(sd_dtype_t type, __m256 acc, __m256 msum, int nw, float *y)
{
    float a[8], ms[8];
    _mm256_storeu_ps(a, acc);
    _mm256_storeu_ps(ms, msum);
    for (int r = 0; r < nw; r++) {
        int lo = type == SD_DTYPE_Q8_0 ? r : 2 * r, hi = type == SD_DTYPE_Q8_0 ? r + TW : 2 * r + 1;
        y[r] = (a[lo] + a[hi]) + ms[lo];
    }
}

/* One tile: y[c * ldy + r] for r < nw (<= TW), c < nx; `type` and nx are constants after
 * inlining. Rows past nw repeat the last row (computed, never stored). */
KERNEL void tile_i16(sd_dtype_t type, const char *w, size_t row_bytes, int nw, const int16_t *q,
                     const float *scale, const float *sum, int nx, int64_t n, float *y,
                     size_t ldy)
{
    int64_t nb = n / SD_QK;
    const char *rows[TW];
    for (int r = 0; r < TW; r++) rows[r] = w + (size_t)(r < nw ? r : nw - 1) * row_bytes;
    __m256 acc[TX], msum[TX];
    UNROLL
    for (int c = 0; c < nx; c++) acc[c] = msum[c] = _mm256_setzero_ps();
    size_t bs = type == SD_DTYPE_Q8_0   ? sizeof(sd_block_q8_0)
                : type == SD_DTYPE_Q4_0 ? sizeof(sd_block_q4_0)
                                        : sizeof(sd_block_q4_1);
    for (int64_t b = 0; b < nb; b++) {
        prefetch_tile_part(w, TW * row_bytes, bs, b);
        __m256i s[TX];
        if (type == SD_DTYPE_Q8_0)
            sums_q8(rows, b, q, n, nx, s);
        else
            sums_q4(type, rows, b, q, n, nx, s);
        __m256 d, m;
        block_scales(type, rows, b, &d, &m);
        UNROLL
        for (int c = 0; c < nx; c++) {
            size_t xb = (size_t)c * (size_t)nb + (size_t)b;
            __m256 ds = _mm256_mul_ps(d, _mm256_set1_ps(scale[xb]));
            acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[c]), ds, acc[c]);
            if (type == SD_DTYPE_Q4_1) msum[c] = _mm256_fmadd_ps(m, _mm256_set1_ps(sum[xb]), msum[c]);
        }
    }
    UNROLL
    for (int c = 0; c < nx; c++) store_rows(type, acc[c], msum[c], nw, y + (size_t)c * ldy);
}

/* Every row of the range, tile by tile; `type` and nx are constants after inlining. */
KERNEL void rows_i16(sd_dtype_t type, const char *w, size_t row_bytes, int64_t nw,
                     const int16_t *q, const float *scale, const float *sum, int nx, int64_t n,
                     float *y, size_t ldy)
{
    for (int64_t r = 0; r < nw; r += TW)
        tile_i16(type, w + (size_t)r * row_bytes, row_bytes, nw - r < TW ? (int)(nw - r) : TW, q,
                 scale, sum, nx, n, y + r, ldy);
}

#define DISPATCH(T)                                                                    \
    do {                                                                               \
        if (nx == 1)                                                                   \
            rows_i16(T, w, row_bytes, nw, q, scale, sum, 1, n, y, ldy);                \
        else                                                                           \
            rows_i16(T, w, row_bytes, nw, q, scale, sum, 2, n, y, ldy);                \
    } while (0)

void sd_vec_dot_rows_i16(sd_dtype_t type, const void *w, size_t row_bytes, int64_t nw,
                         const int16_t *q, const float *scale, const float *sum, int nx,
                         int64_t n, float *y, size_t ldy)
{
    switch (type) {
    case SD_DTYPE_Q8_0: DISPATCH(SD_DTYPE_Q8_0); break;
    case SD_DTYPE_Q4_0: DISPATCH(SD_DTYPE_Q4_0); break;
    case SD_DTYPE_Q4_1: DISPATCH(SD_DTYPE_Q4_1); break;
    default: break; /* callers check sd_dot_i16_supported */
    }
}

#else /* portable scalar path, the same operations per (weight row, activation row) */

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

static float dot_row(sd_dtype_t type, const void *w_row, const int16_t *q, const float *scale,
                     const float *sum, int64_t n)
{
    float acc[2] = {0.0f, 0.0f}, msum = 0.0f;
    for (int64_t b = 0; b < n / SD_QK; b++) {
        float d = 0.0f, m = 0.0f;
        int32_t s[2] = {0, 0}; /* half 0: elements 0..7, 16..23; half 1: 8..15, 24..31 */
        for (int j = 0; j < SD_QK; j++)
            s[(j >> 3) & 1] += weight_q(type, w_row, b, j, &d, &m) * q[b * SD_QK + j];
        float ds = d * scale[b];
        acc[0] = fmaf((float)s[0], ds, acc[0]);
        acc[1] = fmaf((float)s[1], ds, acc[1]);
        if (type == SD_DTYPE_Q4_1) msum = fmaf(m, sum[b], msum);
    }
    return (acc[0] + acc[1]) + msum;
}

void sd_vec_dot_rows_i16(sd_dtype_t type, const void *w, size_t row_bytes, int64_t nw,
                         const int16_t *q, const float *scale, const float *sum, int nx,
                         int64_t n, float *y, size_t ldy)
{
    int64_t nb = n / SD_QK;
    for (int c = 0; c < nx; c++)
        for (int64_t r = 0; r < nw; r++)
            y[(size_t)c * ldy + (size_t)r] =
                dot_row(type, (const char *)w + (size_t)r * row_bytes, q + (size_t)c * (size_t)n,
                        scale + (size_t)c * (size_t)nb, sum + (size_t)c * (size_t)nb, n);
}

#endif
