/* Dot products of one encoded weight row with 1..SD_DOT_MAX_ROWS f32 activation rows,
 * dequantizing block by block inside the loop.
 *
 * Fixed summation order: each activation row r owns four 8-lane accumulators; the k-th
 * group of 8 weights in a row (k = 0, 1, 2, ...) is multiplied into accumulator k % 4 with
 * one FMA, and the four are reduced ((a0 + a1) + (a2 + a3)) then lane by lane at the end.
 * Decoding a block is shared by the rows, but every row sees exactly the operation
 * sequence it would see alone, so out[r] never depends on nr (batch invariance).
 * Without AVX2 a scalar path with the same per-row independence is used. */
#include "kernels/cpu/quants.h"

#define UNROLL _Pragma("GCC unroll 8")

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#include <string.h>

/* The kernels take nr as a compile-time constant (see DISPATCH_ROWS); force inlining so the
 * row loops unroll and the accumulators stay in registers. */
#define KERNEL static inline __attribute__((always_inline))

typedef struct {
    __m256 a[SD_DOT_MAX_ROWS][4];
} accs_t;

KERNEL void accs_zero(accs_t *acc, int nr)
{
    UNROLL
    for (int r = 0; r < nr; r++)
        UNROLL
        for (int k = 0; k < 4; k++) acc->a[r][k] = _mm256_setzero_ps();
}

static inline float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

KERNEL void accs_store(const accs_t *acc, int nr, float *out)
{
    UNROLL
    for (int r = 0; r < nr; r++) {
        __m256 s = _mm256_add_ps(_mm256_add_ps(acc->a[r][0], acc->a[r][1]),
                                 _mm256_add_ps(acc->a[r][2], acc->a[r][3]));
        out[r] = hsum8(s);
    }
}

/* The 4 weight groups w[0..3] (32 consecutive weights at element offset off) into every row. */
KERNEL void accs_fma4(accs_t *acc, const __m256 w[4], const float *x, size_t ldx, int nr,
                             int64_t off)
{
    UNROLL
    for (int r = 0; r < nr; r++) {
        const float *xr = x + (size_t)r * ldx + off;
        UNROLL
        for (int k = 0; k < 4; k++)
            acc->a[r][k] = _mm256_fmadd_ps(w[k], _mm256_loadu_ps(xr + 8 * k), acc->a[r][k]);
    }
}

static inline __m256 u8_to_ps(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v)); }
static inline __m256 i8_to_ps(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)); }

/* 32 signed bytes (q0: elements 0..15, q1: 16..31) times d as 4 x 8 floats. */
static inline void i8x32_times(__m128i q0, __m128i q1, __m256 d, __m256 w[4])
{
    w[0] = _mm256_mul_ps(i8_to_ps(q0), d);
    w[1] = _mm256_mul_ps(i8_to_ps(_mm_srli_si128(q0, 8)), d);
    w[2] = _mm256_mul_ps(i8_to_ps(q1), d);
    w[3] = _mm256_mul_ps(i8_to_ps(_mm_srli_si128(q1, 8)), d);
}

/* 16 bytes of nibbles -> 32 values 0..15 as 4 x 8 floats (low nibbles first). */
static inline void nibbles_to_ps(const uint8_t *qs, __m256 q[4])
{
    __m128i raw = _mm_loadu_si128((const __m128i *)qs), mask = _mm_set1_epi8(0x0F);
    __m128i lo = _mm_and_si128(raw, mask), hi = _mm_and_si128(_mm_srli_epi16(raw, 4), mask);
    q[0] = u8_to_ps(lo);
    q[1] = u8_to_ps(_mm_srli_si128(lo, 8));
    q[2] = u8_to_ps(hi);
    q[3] = u8_to_ps(_mm_srli_si128(hi, 8));
}

static inline float f16s(uint16_t h) { return _cvtsh_ss(h); }

KERNEL void dot_q4_1(const sd_block_q4_1 *b, const float *x, size_t ldx, int nr,
                            int64_t nb, float *out)
{
    accs_t acc;
    accs_zero(&acc, nr);
    for (int64_t i = 0; i < nb; i++) {
        __m256 d = _mm256_set1_ps(f16s(b[i].d)), m = _mm256_set1_ps(f16s(b[i].m)), w[4];
        nibbles_to_ps(b[i].qs, w);
        UNROLL
        for (int k = 0; k < 4; k++) w[k] = _mm256_fmadd_ps(w[k], d, m);
        accs_fma4(&acc, w, x, ldx, nr, i * SD_QK);
    }
    accs_store(&acc, nr, out);
}

KERNEL void dot_q4_0(const sd_block_q4_0 *b, const float *x, size_t ldx, int nr,
                            int64_t nb, float *out)
{
    accs_t acc;
    accs_zero(&acc, nr);
    __m256 eight = _mm256_set1_ps(8.0f);
    for (int64_t i = 0; i < nb; i++) {
        __m256 d = _mm256_set1_ps(f16s(b[i].d)), w[4];
        nibbles_to_ps(b[i].qs, w);
        UNROLL
        for (int k = 0; k < 4; k++) w[k] = _mm256_mul_ps(_mm256_sub_ps(w[k], eight), d);
        accs_fma4(&acc, w, x, ldx, nr, i * SD_QK);
    }
    accs_store(&acc, nr, out);
}

/* Q5_0: nibbles | (qh bit << 4), minus 16, as signed bytes; 32 bits of qh spread to 32
 * bytes (byte j = 0xFF where bit j is set). */
KERNEL void dot_q5_0(const sd_block_q5_0 *b, const float *x, size_t ldx, int nr,
                            int64_t nb, float *out)
{
    accs_t acc;
    accs_zero(&acc, nr);
    const __m256i spread = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202,
                                             0x0101010101010101, 0x0000000000000000);
    const __m256i bit = _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe), ones = _mm256_set1_epi64x(-1);
    for (int64_t i = 0; i < nb; i++) {
        uint32_t qh;
        memcpy(&qh, b[i].qh, sizeof qh);
        __m256i hb = _mm256_shuffle_epi8(_mm256_set1_epi32((int)qh), spread);
        hb = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_or_si256(hb, bit), ones), _mm256_set1_epi8(0x10));
        __m128i raw = _mm_loadu_si128((const __m128i *)b[i].qs), mask = _mm_set1_epi8(0x0F);
        __m256i nib = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(raw, 4), mask), _mm_and_si128(raw, mask));
        __m256i q = _mm256_sub_epi8(_mm256_or_si256(nib, hb), _mm256_set1_epi8(16));
        __m128i q0 = _mm256_castsi256_si128(q), q1 = _mm256_extracti128_si256(q, 1);
        __m256 d = _mm256_set1_ps(f16s(b[i].d)), w[4];
        i8x32_times(q0, q1, d, w);
        accs_fma4(&acc, w, x, ldx, nr, i * SD_QK);
    }
    accs_store(&acc, nr, out);
}

KERNEL void dot_q8_0(const sd_block_q8_0 *b, const float *x, size_t ldx, int nr,
                            int64_t nb, float *out)
{
    accs_t acc;
    accs_zero(&acc, nr);
    for (int64_t i = 0; i < nb; i++) {
        __m256 d = _mm256_set1_ps(f16s(b[i].d)), w[4];
        __m128i q0 = _mm_loadu_si128((const __m128i *)b[i].qs);
        __m128i q1 = _mm_loadu_si128((const __m128i *)(b[i].qs + 16));
        i8x32_times(q0, q1, d, w);
        accs_fma4(&acc, w, x, ldx, nr, i * SD_QK);
    }
    accs_store(&acc, nr, out);
}

KERNEL void dot_q4_k(const sd_block_q4_k *b, const float *x, size_t ldx, int nr,
                            int64_t nb, float *out)
{
    accs_t acc;
    accs_zero(&acc, nr);
    for (int64_t i = 0; i < nb; i++) {
        float d = f16s(b[i].d), dmin = f16s(b[i].dmin);
        UNROLL
        for (int j = 0; j < 8; j++) {
            uint8_t sc, mn;
            sd_q4_k_scale_min(j, b[i].scales, &sc, &mn);
            __m256 dj = _mm256_set1_ps(d * (float)sc), mj = _mm256_set1_ps(-(dmin * (float)mn));
            __m128i raw = _mm_loadu_si128((const __m128i *)(b[i].qs + 32 * (j / 2)));
            __m128i raw2 = _mm_loadu_si128((const __m128i *)(b[i].qs + 32 * (j / 2) + 16));
            if (j & 1) {
                raw = _mm_srli_epi16(raw, 4);
                raw2 = _mm_srli_epi16(raw2, 4);
            }
            __m128i mask = _mm_set1_epi8(0x0F);
            raw = _mm_and_si128(raw, mask);
            raw2 = _mm_and_si128(raw2, mask);
            __m256 w[4] = {u8_to_ps(raw), u8_to_ps(_mm_srli_si128(raw, 8)), u8_to_ps(raw2),
                           u8_to_ps(_mm_srli_si128(raw2, 8))};
            UNROLL
            for (int k = 0; k < 4; k++) w[k] = _mm256_fmadd_ps(w[k], dj, mj);
            accs_fma4(&acc, w, x, ldx, nr, i * SD_QK_K + 32 * j);
        }
    }
    accs_store(&acc, nr, out);
}

/* Q6_K: 32 six-bit values (group g of a 128-element half) as signed bytes -32..31. */
static inline __m256i q6_group(const uint8_t *ql, const uint8_t *qh, int g)
{
    __m256i mask = _mm256_set1_epi8(0x0F), three = _mm256_set1_epi8(3);
    __m256i lo = _mm256_loadu_si256((const __m256i *)(ql + 32 * (g & 1)));
    if (g >= 2) lo = _mm256_srli_epi16(lo, 4);
    lo = _mm256_and_si256(lo, mask);
    __m256i hi = _mm256_loadu_si256((const __m256i *)qh);
    hi = _mm256_and_si256(_mm256_srli_epi16(hi, 2 * g), three);
    __m256i q = _mm256_or_si256(lo, _mm256_slli_epi16(hi, 4));
    return _mm256_sub_epi8(q, _mm256_set1_epi8(32));
}

KERNEL void dot_q6_k(const sd_block_q6_k *b, const float *x, size_t ldx, int nr,
                            int64_t nb, float *out)
{
    accs_t acc;
    accs_zero(&acc, nr);
    for (int64_t i = 0; i < nb; i++) {
        float d = f16s(b[i].d);
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = b[i].ql + 64 * h, *qh = b[i].qh + 32 * h;
            const int8_t *sc = b[i].scales + 8 * h;
            UNROLL
            for (int g = 0; g < 4; g++) {
                __m256i q = q6_group(ql, qh, g);
                __m128i q0 = _mm256_castsi256_si128(q), q1 = _mm256_extracti128_si256(q, 1);
                __m256 s0 = _mm256_set1_ps(d * (float)sc[2 * g]);
                __m256 s1 = _mm256_set1_ps(d * (float)sc[2 * g + 1]);
                __m256 w[4] = {_mm256_mul_ps(i8_to_ps(q0), s0),
                               _mm256_mul_ps(i8_to_ps(_mm_srli_si128(q0, 8)), s0),
                               _mm256_mul_ps(i8_to_ps(q1), s1),
                               _mm256_mul_ps(i8_to_ps(_mm_srli_si128(q1, 8)), s1)};
                accs_fma4(&acc, w, x, ldx, nr, i * SD_QK_K + 128 * h + 32 * g);
            }
        }
    }
    accs_store(&acc, nr, out);
}

/* Types without a kernel of their own here (their matmul takes the int8 path): each block
 * dequantized to the stack, then its groups of 32 through the accumulators as above. */
KERNEL void dot_dequant(sd_dtype_t type, const void *wr, const float *x, size_t ldx, int nr,
                        int64_t n, float *out)
{
    accs_t acc;
    accs_zero(&acc, nr);
    int64_t blk = sd_dtype_block_elems(type);
    size_t bytes = sd_dtype_block_bytes(type);
    float w[SD_QK_K];
    for (int64_t i = 0; i < n; i += blk) {
        sd_dequantize_row(type, (const char *)wr + (size_t)(i / blk) * bytes, w, blk);
        for (int64_t g = 0; g < blk; g += 32) {
            __m256 wv[4];
            UNROLL
            for (int k = 0; k < 4; k++) wv[k] = _mm256_loadu_ps(w + g + 8 * k);
            accs_fma4(&acc, wv, x, ldx, nr, i + g);
        }
    }
    accs_store(&acc, nr, out);
}

/* F32 / F16 / BF16: groups of 32 through the accumulators, then a scalar tail (n % 32)
 * added in element order. */
static inline void load_f16x32(const uint16_t *p, __m256 w[4])
{
    UNROLL
    for (int k = 0; k < 4; k++) w[k] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 8 * k)));
}

static inline void load_bf16x32(const uint16_t *p, __m256 w[4])
{
    UNROLL
    for (int k = 0; k < 4; k++) {
        __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(p + 8 * k)));
        w[k] = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
    }
}

KERNEL void dot_float(sd_dtype_t type, const void *wr, const float *x, size_t ldx, int nr,
                             int64_t n, float *out)
{
    accs_t acc;
    accs_zero(&acc, nr);
    int64_t n32 = n - n % 32;
    for (int64_t i = 0; i < n32; i += 32) {
        __m256 w[4];
        if (type == SD_DTYPE_F32)
            UNROLL
            for (int k = 0; k < 4; k++) w[k] = _mm256_loadu_ps((const float *)wr + i + 8 * k);
        else if (type == SD_DTYPE_F16)
            load_f16x32((const uint16_t *)wr + i, w);
        else
            load_bf16x32((const uint16_t *)wr + i, w);
        accs_fma4(&acc, w, x, ldx, nr, i);
    }
    accs_store(&acc, nr, out);
    UNROLL
    for (int r = 0; r < nr; r++) {
        const float *xr = x + (size_t)r * ldx;
        for (int64_t i = n32; i < n; i++) {
            float w = type == SD_DTYPE_F32   ? ((const float *)wr)[i]
                      : type == SD_DTYPE_F16 ? sd_f16_to_f32(((const uint16_t *)wr)[i])
                                             : sd_bf16_to_f32(((const uint16_t *)wr)[i]);
            out[r] += w * xr[i];
        }
    }
}

/* Instantiate each kernel with a constant row count so the compiler unrolls the row loop. */
#define DISPATCH_ROWS(call)                                                                      \
    do {                                                                                         \
        switch (nr) {                                                                            \
        case 1: { enum { NR = 1 }; call; } break;                                               \
        case 2: { enum { NR = 2 }; call; } break;                                               \
        case 3: { enum { NR = 3 }; call; } break;                                               \
        default: { enum { NR = 4 }; call; } break;                                              \
        }                                                                                        \
    } while (0)

void sd_vec_dot_rows(sd_dtype_t type, const void *w_row, const float *x, size_t ldx, int nr,
                     int64_t n, float *out)
{
    switch (type) {
    case SD_DTYPE_Q4_1: DISPATCH_ROWS(dot_q4_1(w_row, x, ldx, NR, n / SD_QK, out)); break;
    case SD_DTYPE_Q4_0: DISPATCH_ROWS(dot_q4_0(w_row, x, ldx, NR, n / SD_QK, out)); break;
    case SD_DTYPE_Q5_0: DISPATCH_ROWS(dot_q5_0(w_row, x, ldx, NR, n / SD_QK, out)); break;
    case SD_DTYPE_Q8_0: DISPATCH_ROWS(dot_q8_0(w_row, x, ldx, NR, n / SD_QK, out)); break;
    case SD_DTYPE_Q4_K: DISPATCH_ROWS(dot_q4_k(w_row, x, ldx, NR, n / SD_QK_K, out)); break;
    case SD_DTYPE_Q6_K: DISPATCH_ROWS(dot_q6_k(w_row, x, ldx, NR, n / SD_QK_K, out)); break;
    case SD_DTYPE_F32:
    case SD_DTYPE_F16:
    case SD_DTYPE_BF16: DISPATCH_ROWS(dot_float(type, w_row, x, ldx, NR, n, out)); break;
    case SD_DTYPE_Q5_1:
    case SD_DTYPE_IQ4_NL:
    case SD_DTYPE_Q2_K:
    case SD_DTYPE_Q3_K:
    case SD_DTYPE_Q5_K:
    case SD_DTYPE_IQ4_XS: DISPATCH_ROWS(dot_dequant(type, w_row, x, ldx, NR, n, out)); break;
    }
}

#else /* portable scalar path */

#define SCALAR_GROUP 256 /* largest block; dequantized on the stack, never the whole row */

void sd_vec_dot_rows(sd_dtype_t type, const void *w_row, const float *x, size_t ldx, int nr,
                     int64_t n, float *out)
{
    int64_t blk = sd_dtype_block_elems(type);
    int64_t step = blk == 1 ? SCALAR_GROUP : blk;
    size_t bytes = sd_dtype_block_bytes(type) * (size_t)(step / blk);
    float w[SCALAR_GROUP];
    for (int r = 0; r < nr; r++) out[r] = 0.0f;
    for (int64_t i = 0; i < n; i += step) {
        int64_t len = n - i < step ? n - i : step;
        sd_dequantize_row(type, (const char *)w_row + (size_t)(i / step) * bytes, w, len);
        UNROLL
        for (int r = 0; r < nr; r++) {
            const float *xr = x + (size_t)r * ldx + i;
            float s = 0.0f;
            for (int64_t j = 0; j < len; j++) s += w[j] * xr[j];
            out[r] += s;
        }
    }
}

#endif

float sd_vec_dot(sd_dtype_t type, const void *w_row, const float *x, int64_t n)
{
    float out;
    sd_vec_dot_rows(type, w_row, x, (size_t)n, 1, n, &out);
    return out;
}
