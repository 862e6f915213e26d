/* Integer dot products for matmul: 4/8-bit weights times int16-quantized activations
 * (kernel choice: quants.h; cost: docs/design-notes.md, "CPU kernels").
 *
 * Numerics, the contract of every kernel (scalar, AVX2 below, AVX-512 in
 * vecdot_i16_avx512.c): per weight row, activation row and block b, the 32 integer products
 * q * xq are summed exactly (int32) in two halves: lo = elements 0..7 and 16..23, hi = 8..15
 * and 24..31 (the AVX2 kernel's integer lanes reduce onto exactly these halves). Each half
 * is converted to float and accumulated with one FMA: acc_lo = fma(lo, d_b * xscale_b,
 * acc_lo), same for hi; Q4_1 adds msum = fma(m_b, xsum_b, msum). The result is
 * (acc_lo + acc_hi) + msum. Each (weight row, activation row) pair owns its accumulators and
 * sees this exact sequence whatever tile it is computed in (batch invariance).
 *
 * Activation layout: for Q4_0/Q4_1 the AVX2 kernel reads each quantized block as four
 * quarters (x0, x2, .., x14), (x16, x18, .., x30), (x1, x3, .., x15), (x17, x19, .., x31),
 * each stored twice (64 values per block): the even and odd elements match the nibbles of
 * 16-bit weight lanes, so no byte unpacking is needed, and one plain load feeds the two
 * weight rows held in the two 128-bit lanes of a register. Q8_0 and the scalar path use
 * the natural order. */
#include <math.h>

#include "core/check.h"
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
 * natural order (32 values) or (dup) the Q4 kernel order of the header comment with each
 * quarter written twice, once per 128-bit lane (64 values). */
static void quantize_block_i16(const float *xb, int dup, int16_t *q, float *scale, float *sum)
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
    if (dup) {
        __m256i lo = evens_odds(p[0]), hi = evens_odds(p[1]); /* quarters (0 | 2), (1 | 3) */
        _mm256_storeu_si256((__m256i *)q, _mm256_permute2x128_si256(lo, lo, 0x00));
        _mm256_storeu_si256((__m256i *)(q + 16), _mm256_permute2x128_si256(hi, hi, 0x00));
        _mm256_storeu_si256((__m256i *)(q + 32), _mm256_permute2x128_si256(lo, lo, 0x11));
        _mm256_storeu_si256((__m256i *)(q + 48), _mm256_permute2x128_si256(hi, hi, 0x11));
        return;
    }
    _mm256_storeu_si256((__m256i *)q, p[0]);
    _mm256_storeu_si256((__m256i *)(q + 16), p[1]);
}
#else
static void quantize_block_i16(const float *xb, int dup, int16_t *q, float *scale, float *sum)
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

/* The AVX2 Q4 kernel reads activations in its duplicated order. */
static int act_dup(sd_dtype_t type) { return I16_AVX2 && (type == SD_DTYPE_Q4_0 || type == SD_DTYPE_Q4_1); }

int64_t sd_act_i16_len(sd_dtype_t type, int64_t n) { return act_dup(type) ? 2 * n : n; }

void sd_quantize_act_i16(sd_dtype_t type, const float *x, int64_t n, int16_t *q, float *scale,
                         float *sum)
{
    int dup = act_dup(type);
    for (int64_t b = 0; b < n / SD_QK; b++)
        quantize_block_i16(x + b * SD_QK, dup, q + (b << dup) * SD_QK, scale + b, sum + b);
}

#if I16_AVX2
#include <immintrin.h>

#include "kernels/cpu/vecdot_i16_tile.h"

/* TW weight rows per tile; up to XG activation rows per pass over the weights. */
enum { TW = SD_I16_TILE_W, XG = SD_I16_TILE_X };

/* Block b of the tile's TW rows as int16 lanes, decoded once for all activation rows.
 * Q4: v[4h + k] holds rows h (low 128-bit lane) and h + 2 (high lane), k-th quarter of the
 * activation order (in a 16-bit lane j of a row's 16 bytes the four nibbles are elements
 * 2j, 16+2j, 2j+1, 17+2j, so shifts give that order without byte shuffles). Q8_0: v[2r + h]
 * is row r, elements 16h .. 16h + 15. */
KERNEL void decode_block(sd_dtype_t type, const char *const rows[TW], int64_t b, __m256i v[8])
{
    if (type == SD_DTYPE_Q8_0) {
        UNROLL
        for (int r = 0; r < TW; r++) {
            const int8_t *qs = ((const sd_block_q8_0 *)rows[r] + b)->qs;
            v[2 * r] = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)qs));
            v[2 * r + 1] = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(qs + 16)));
        }
        return;
    }
    size_t off = (size_t)b * block_bytes(type) + (type == SD_DTYPE_Q4_0 ? 2 : 4);
    const __m256i mask = _mm256_set1_epi16(0x000F);
    UNROLL
    for (int h = 0; h < 2; h++) {
        __m256i raw = _mm256_loadu2_m128i((const __m128i *)(rows[h + 2] + off), (const __m128i *)(rows[h] + off));
        __m256i *u = v + 4 * h;
        u[0] = _mm256_and_si256(raw, mask);
        u[1] = _mm256_and_si256(_mm256_srli_epi16(raw, 4), mask);
        u[2] = _mm256_and_si256(_mm256_srli_epi16(raw, 8), mask);
        u[3] = _mm256_srli_epi16(raw, 12);
        if (type == SD_DTYPE_Q4_0)
            UNROLL
            for (int k = 0; k < 4; k++) u[k] = _mm256_sub_epi16(u[k], _mm256_set1_epi16(8));
    }
}

/* The f16 scales of block b of the TW rows in the lane order of the sums: d, and for
 * Q4_1 m (zero otherwise). */
KERNEL void decode_scales(sd_dtype_t type, const char *const rows[TW], int64_t b, __m256 *d, __m256 *m)
{
    size_t off = (size_t)b * block_bytes(type);
    if (type == SD_DTYPE_Q4_1) {
        __m128i dm = _mm_setr_epi32((int)load_u32(rows[0] + off), (int)load_u32(rows[1] + off),
                                    (int)load_u32(rows[2] + off), (int)load_u32(rows[3] + off));
        __m256 f = _mm256_cvtph_ps(dm); /* d0 m0 d1 m1 | d2 m2 d3 m3 */
        *d = _mm256_moveldup_ps(f);
        *m = _mm256_movehdup_ps(f);
        return;
    }
    *m = _mm256_setzero_ps();
    short h0 = (short)load_u16(rows[0] + off), h1 = (short)load_u16(rows[1] + off);
    short h2 = (short)load_u16(rows[2] + off), h3 = (short)load_u16(rows[3] + off);
    if (type == SD_DTYPE_Q8_0)
        *d = _mm256_cvtph_ps(_mm_setr_epi16(h0, h1, h2, h3, h0, h1, h2, h3));
    else
        *d = _mm256_cvtph_ps(_mm_setr_epi16(h0, h0, h1, h1, h2, h2, h3, h3));
}

/* (a0 + a1, a2 + a3, b0 + b1, b2 + b3 | same for lanes 4..7): vphaddd's result with two
 * shuffles and an add, which keeps the reduction off the multiply pipes. */
KERNEL __m256i hadd_pairs(__m256i a, __m256i b)
{
    __m256 fa = _mm256_castsi256_ps(a), fb = _mm256_castsi256_ps(b);
    __m256i even = _mm256_castps_si256(_mm256_shuffle_ps(fa, fb, _MM_SHUFFLE(2, 0, 2, 0)));
    __m256i odd = _mm256_castps_si256(_mm256_shuffle_ps(fa, fb, _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm256_add_epi32(even, odd);
}

/* Integer stage of one block against one activation row (xq: its quantized block): the
 * exact int32 half sums of the TW rows. Q4 lanes: (row 0 lo, row 0 hi, row 1 lo, row 1 hi |
 * row 2 lo, row 2 hi, row 3 lo, row 3 hi); Q8_0: (rows 0..3 lo | rows 0..3 hi). */
KERNEL __m256i block_sums(sd_dtype_t type, const __m256i v[8], const int16_t *xq, int single)
{
    const __m256i *x = (const __m256i *)xq;
    if (type == SD_DTYPE_Q8_0) {
        __m256i x0 = _mm256_loadu_si256(x), x1 = _mm256_loadu_si256(x + 1), p[TW];
        UNROLL
        for (int r = 0; r < TW; r++)
            p[r] = _mm256_add_epi32(_mm256_madd_epi16(v[2 * r], x0), _mm256_madd_epi16(v[2 * r + 1], x1));
        if (single) /* fewer uops when few rows compete for the multiply pipes */
            return _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]));
        return hadd_pairs(hadd_pairs(p[0], p[1]), hadd_pairs(p[2], p[3]));
    }
    __m256i p[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
    UNROLL
    for (int k = 0; k < 4; k++) {
        __m256i xk = _mm256_loadu_si256(x + k);
        __asm__("" : "+x"(xk)); /* one load for both multiply-adds (GCC would fold it into each) */
        p[0] = _mm256_add_epi32(p[0], _mm256_madd_epi16(v[k], xk));
        p[1] = _mm256_add_epi32(p[1], _mm256_madd_epi16(v[4 + k], xk));
    }
    return hadd_pairs(p[0], p[1]);
}

/* y[r] = (acc lo + acc hi) + msum for the nw rows of a tile, lanes as the sums. */
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

/* Accumulators of one activation row: lanes as the sums, one per (weight row, half). */
typedef struct {
    __m256 acc, msum;
} xacc_t;

/* One tile of TW weight rows against nx <= XG activation rows (activation row c at
 * q + c * ldq, scale/sum + c * nb). Each block is decoded once, into registers, and fed to
 * every activation row; per (weight row, activation row) lane the accumulators see the
 * sequence of the header comment. nx = 1 and 2 are instantiated with constants
 * (accumulators in registers); otherwise they live in st[] (L1): one load and store per
 * block and row, cheaper than the spills of register tiles of more rows. */
KERNEL void tile_i16(sd_dtype_t type, const char *const rows[TW], size_t row_bytes, int nw,
                     const int16_t *q, size_t ldq, const float *scale, const float *sum, int nx,
                     int64_t n, float *y, size_t ldy)
{
    int64_t nb = n / SD_QK;
    size_t xblock = ldq / (size_t)nb; /* int16 per block of an activation row */
    xacc_t st[XG];
    for (int c = 0; c < nx; c++) st[c].acc = st[c].msum = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        prefetch_tile_part(rows[0], TW, row_bytes, block_bytes(type), b);
        __m256i v[8];
        __m256 d, m;
        decode_block(type, rows, b, v);
        decode_scales(type, rows, b, &d, &m);
        _Pragma("GCC unroll 2") /* a constant nx <= 2 unrolls fully: registers */
        for (int c = 0; c < nx; c++) {
            size_t xb = (size_t)c * (size_t)nb + (size_t)b;
            __m256i s = block_sums(type, v, q + (size_t)c * ldq + (size_t)b * xblock, nx <= 2);
            __m256 ds = _mm256_mul_ps(d, _mm256_set1_ps(scale[xb]));
            st[c].acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), ds, st[c].acc);
            if (type == SD_DTYPE_Q4_1) st[c].msum = _mm256_fmadd_ps(m, _mm256_set1_ps(sum[xb]), st[c].msum);
        }
    }
    for (int c = 0; c < nx; c++) store_rows(type, st[c].acc, st[c].msum, nw, y + (size_t)c * ldy);
}

/* Every tile of the weight range against every activation row, XG activation rows per
 * pass over the weights. */
KERNEL void rows_i16(sd_dtype_t type, const char *w, size_t row_bytes, int64_t nw, const int16_t *q,
                     size_t ldq, const float *scale, const float *sum, int nx, int64_t n, float *y,
                     size_t ldy)
{
    int64_t nb = n / SD_QK;
    for (int c0 = 0; c0 < nx; c0 += XG) {
        int ng = nx - c0 < XG ? nx - c0 : XG;
        const int16_t *qc = q + (size_t)c0 * ldq;
        const float *sc = scale + (size_t)c0 * (size_t)nb, *su = sum + (size_t)c0 * (size_t)nb;
        for (int64_t r0 = 0; r0 < nw; r0 += TW) {
            int tw = nw - r0 < TW ? (int)(nw - r0) : TW;
            const char *rows[TW]; /* rows past tw repeat the last one (computed, never stored) */
            for (int r = 0; r < TW; r++) rows[r] = w + (size_t)(r0 + (r < tw ? r : tw - 1)) * row_bytes;
            float *yc = y + (size_t)c0 * ldy + (size_t)r0;
            if (ng == 1)
                tile_i16(type, rows, row_bytes, tw, qc, ldq, sc, su, 1, n, yc, ldy);
            else if (ng == 2)
                tile_i16(type, rows, row_bytes, tw, qc, ldq, sc, su, 2, n, yc, ldy);
            else
                tile_i16(type, rows, row_bytes, tw, qc, ldq, sc, su, ng, n, yc, ldy);
        }
    }
}

static void rows_i16_kernel(sd_dtype_t type, const void *w, size_t row_bytes, int64_t nw,
                            const int16_t *q, const float *scale, const float *sum, int nx,
                            int64_t n, float *y, size_t ldy)
{
    size_t ldq = (size_t)sd_act_i16_len(type, n);
    switch (type) {
    case SD_DTYPE_Q8_0: rows_i16(SD_DTYPE_Q8_0, w, row_bytes, nw, q, ldq, scale, sum, nx, n, y, ldy); break;
    case SD_DTYPE_Q4_0: rows_i16(SD_DTYPE_Q4_0, w, row_bytes, nw, q, ldq, scale, sum, nx, n, y, ldy); break;
    case SD_DTYPE_Q4_1: rows_i16(SD_DTYPE_Q4_1, w, row_bytes, nw, q, ldq, scale, sum, nx, n, y, ldy); break;
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

static void rows_i16_kernel(sd_dtype_t type, const void *w, size_t row_bytes, int64_t nw,
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

/* ---- kernel choice ------------------------------------------------------------------ */

/* The AVX-512 kernel exists in x86-64 builds with the AVX2 one (its own translation unit,
 * compiled with the AVX-512 flags) and runs only where the CPU has every extension it uses. */
#if I16_AVX2 && defined(__x86_64__) && defined(__GNUC__)
#define I16_AVX512 1
#else
#define I16_AVX512 0
#endif

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static sd_i16_isa_t chosen_isa;
static pthread_once_t isa_once = PTHREAD_ONCE_INIT;

static int cpu_has_avx512(void)
{
#if I16_AVX512
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512vnni");
#else
    return 0;
#endif
}

/* The best kernel available, unless SPECDEC_CPU_ISA=avx2 asks for the AVX2 one. */
static void choose_isa(void)
{
    const char *env = getenv("SPECDEC_CPU_ISA");
    int force_avx2 = env && strcmp(env, "avx2") == 0;
    chosen_isa = !I16_AVX2 ? SD_I16_ISA_SCALAR
                 : sd_i16_isa_available(SD_I16_ISA_AVX512) && !force_avx2 ? SD_I16_ISA_AVX512
                                                                          : SD_I16_ISA_AVX2;
}

int sd_i16_isa_available(sd_i16_isa_t isa)
{
    switch (isa) {
    case SD_I16_ISA_SCALAR: return !I16_AVX2; /* the activation order differs otherwise */
    case SD_I16_ISA_AVX2: return I16_AVX2;
    case SD_I16_ISA_AVX512: return cpu_has_avx512();
    }
    return 0;
}

sd_i16_isa_t sd_i16_isa(void)
{
    pthread_once(&isa_once, choose_isa);
    return chosen_isa;
}

const char *sd_i16_isa_name(sd_i16_isa_t isa)
{
    return isa == SD_I16_ISA_AVX512 ? "avx512" : isa == SD_I16_ISA_AVX2 ? "avx2" : "scalar";
}

int sd_i16_tile_rows(void) { return sd_i16_isa() == SD_I16_ISA_AVX512 ? 16 : SD_I16_TILE_W; }

/* Kernel `isa` (available) on the rows. */
static void run_kernel(sd_i16_isa_t isa, sd_dtype_t type, const void *w, size_t row_bytes, int64_t nw,
                       const int16_t *q, const float *scale, const float *sum, int nx, int64_t n,
                       float *y, size_t ldy)
{
#if I16_AVX512
    if (isa == SD_I16_ISA_AVX512) {
        sd_vec_dot_rows_i16_avx512(type, w, row_bytes, nw, q, scale, sum, nx, n, y, ldy);
        return;
    }
#endif
    rows_i16_kernel(type, w, row_bytes, nw, q, scale, sum, nx, n, y, ldy);
}

sd_status_t sd_vec_dot_rows_i16_isa(sd_i16_isa_t isa, sd_dtype_t type, const void *w, size_t row_bytes,
                                    int64_t nw, const int16_t *q, const float *scale, const float *sum,
                                    int nx, int64_t n, float *y, size_t ldy)
{
    if (!sd_i16_isa_available(isa))
        return sd_set_error(SD_ERR_INVALID_ARG, "int16 matmul kernel %d (%s) is not available in "
                            "this build on this CPU", (int)isa, sd_i16_isa_name(isa));
    run_kernel(isa, type, w, row_bytes, nw, q, scale, sum, nx, n, y, ldy);
    return SD_OK;
}

/* The chosen kernel, except that single-row Q8_0 calls stay on AVX2: there the AVX-512
 * kernel's 8-row decode costs more than it saves (5-20% slower, bench/matmul_rows); the
 * bits are the same either way. */
static sd_i16_isa_t isa_for_call(sd_dtype_t type, int nx)
{
    sd_i16_isa_t isa = sd_i16_isa();
    return isa == SD_I16_ISA_AVX512 && type == SD_DTYPE_Q8_0 && nx == 1 ? SD_I16_ISA_AVX2 : isa;
}

void sd_vec_dot_rows_i16(sd_dtype_t type, const void *w, size_t row_bytes, int64_t nw,
                         const int16_t *q, const float *scale, const float *sum, int nx,
                         int64_t n, float *y, size_t ldy)
{
    run_kernel(isa_for_call(type, nx), type, w, row_bytes, nw, q, scale, sum, nx, n, y, ldy);
}
