/* Integer dot products for matmul: K-quant, IQ4, Q5_0 and Q5_1 weights times int8-quantized
 * activations (API: quants.h; cost and accuracy: docs/design-notes.md, "CPU kernels").
 *
 * Numerics, the contract of every kernel (scalar below, AVX2 in vecdot_q8_tile.h, AVX-512 in
 * vecdot_q8_avx512.c). Each weight block b (the type's block: 256 or 32 elements) is
 * w_e = dw_b * W_e + dmw_b * M_e with integers W_e, M_e (int_block below gives them per type:
 * W holds the sub-block scales and offsets, M the min terms of Q2_K, Q4_K, Q5_K and Q5_1) and
 * the activation block is x_e = dx_b * q_e. Per (weight row, activation row):
 *     s_b = sum_e W_e q_e,  m_b = sum_e M_e q_e        exact int32 (bounds below)
 *     acc = fma((float)s_b, dw_b * dx_b, acc)
 *     acc = fma((float)m_b, dmw_b * dx_b, acc)          (types with a min term only)
 * in block order from acc = 0, and the result is acc. The integer sums are exact in any
 * grouping, so the kernels may group them as they like; the float operations are the same
 * ones in the same order for every kernel, tile and batch.
 *
 * Bounds (|q| <= 127, any weight bytes): |s_b| <= 2^27 (Q6_K: 128 * 32 * 127 * 256; IQ4_XS
 * the same order), |m_b| <= 2^21; SIMD intermediates: maddubs pairs <= 63 * 127 * 2 < 2^15
 * (weights as unsigned 0..63; IQ4 values by the sign trick, 127 * 127 * 2), madd with
 * scales <= 2^23 per lane. No sum saturates or wraps. */
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "core/check.h"
#include "kernels/cpu/quants.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define Q8_AVX2 1 /* the AVX2 kernel and quantizer (vecdot_q8_tile.h) are compiled */
#include "kernels/cpu/vecdot_q8_tile.h"
#else
#define Q8_AVX2 0
#endif

int sd_dot_q8_supported(sd_dtype_t type)
{
    switch (type) {
    case SD_DTYPE_Q5_0:
    case SD_DTYPE_Q5_1:
    case SD_DTYPE_IQ4_NL:
    case SD_DTYPE_Q2_K:
    case SD_DTYPE_Q3_K:
    case SD_DTYPE_Q4_K:
    case SD_DTYPE_Q5_K:
    case SD_DTYPE_Q6_K:
    case SD_DTYPE_IQ4_XS: return 1;
    default: return 0;
    }
}

int64_t sd_act_q8_block(sd_dtype_t type) { return sd_dtype_block_elems(type); }

/* ---- activations (the AVX2 build's quantizer, q8_quantize_act, gives the same bits) ------ */

#if !Q8_AVX2
static int8_t round_q8(float v)
{
    float r = rintf(v); /* nearest even, as cvtps2dq */
    return r == r ? (int8_t)(r > 127.0f ? 127 : r < -127.0f ? -127 : (int)r) : (int8_t)-127;
}

static void quantize_act_scalar(int64_t blk, const float *x, int64_t n, int8_t *q, float *d, int16_t *bsum)
{
    for (int64_t b = 0; b < n / blk; b++) {
        const float *xb = x + b * blk;
        float amax = 0.0f;
        for (int64_t e = 0; e < blk; e++) amax = fmaxf(amax, fabsf(xb[e]));
        float id = amax > 0.0f ? 127.0f / amax : 0.0f;
        d[b] = amax / 127.0f;
        for (int64_t e = 0; e < blk; e++) q[b * blk + e] = round_q8(xb[e] * id);
    }
    for (int64_t g = 0; g < n / 16; g++) {
        int s = 0;
        for (int e = 0; e < 16; e++) s += q[16 * g + e];
        bsum[g] = (int16_t)s;
    }
}
#endif

/* ---- the scalar kernel: the contract as written ------------------------------------------ */

/* 1 for the types with a min term (M != 0). */
static int has_min(sd_dtype_t type)
{
    return type == SD_DTYPE_Q2_K || type == SD_DTYPE_Q4_K || type == SD_DTYPE_Q5_K || type == SD_DTYPE_Q5_1;
}

static int q5_bit(const uint8_t qh[4], int j) { return (qh[j / 8] >> (j % 8)) & 1; }

/* Block b of a weight row: W[e], M[e] (0 without a min term), dw and dmw as the header comment. */
static void int_block(sd_dtype_t type, const char *row, int64_t b, int16_t *W, int16_t *M, float *dw, float *dmw)
{
    *dw = *dmw = 0.0f;
    switch (type) {
    case SD_DTYPE_Q5_0: {
        const sd_block_q5_0 *x = (const sd_block_q5_0 *)row + b;
        *dw = sd_f16_to_f32(x->d);
        for (int e = 0; e < 32; e++)
            W[e] = (int16_t)((((x->qs[e % 16] >> (4 * (e / 16))) & 0xF) | (q5_bit(x->qh, e) << 4)) - 16);
        return;
    }
    case SD_DTYPE_Q5_1: {
        const sd_block_q5_1 *x = (const sd_block_q5_1 *)row + b;
        *dw = sd_f16_to_f32(x->d), *dmw = sd_f16_to_f32(x->m);
        for (int e = 0; e < 32; e++) {
            W[e] = (int16_t)(((x->qs[e % 16] >> (4 * (e / 16))) & 0xF) | (q5_bit(x->qh, e) << 4));
            M[e] = 1;
        }
        return;
    }
    case SD_DTYPE_IQ4_NL: {
        const sd_block_iq4_nl *x = (const sd_block_iq4_nl *)row + b;
        *dw = sd_f16_to_f32(x->d);
        for (int e = 0; e < 32; e++) W[e] = sd_iq4_values[(x->qs[e % 16] >> (4 * (e / 16))) & 0xF];
        return;
    }
    case SD_DTYPE_Q2_K: {
        const sd_block_q2_k *x = (const sd_block_q2_k *)row + b;
        *dw = sd_f16_to_f32(x->d), *dmw = -sd_f16_to_f32(x->dmin);
        for (int e = 0; e < 256; e++) {
            int sc = x->scales[e / 16], q = (x->qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
            W[e] = (int16_t)((sc & 0xF) * q);
            M[e] = (int16_t)(sc >> 4);
        }
        return;
    }
    case SD_DTYPE_Q3_K: {
        const sd_block_q3_k *x = (const sd_block_q3_k *)row + b;
        *dw = sd_f16_to_f32(x->d);
        for (int e = 0; e < 256; e++) {
            int h = e / 128, j = (e % 128) / 32, l = e % 32;
            int q = ((x->qs[32 * h + l] >> (2 * j)) & 3) - (((x->hmask[l] >> (4 * h + j)) & 1) ? 0 : 4);
            W[e] = (int16_t)((sd_q3_k_scale(e / 16, x->scales) - 32) * q);
        }
        return;
    }
    case SD_DTYPE_Q4_K:
    case SD_DTYPE_Q5_K: {
        int q5 = type == SD_DTYPE_Q5_K;
        const sd_block_q4_k *x4 = (const sd_block_q4_k *)row + b;
        const sd_block_q5_k *x5 = (const sd_block_q5_k *)row + b;
        const uint8_t *scales = q5 ? x5->scales : x4->scales, *qs = q5 ? x5->qs : x4->qs;
        *dw = sd_f16_to_f32(q5 ? x5->d : x4->d), *dmw = -sd_f16_to_f32(q5 ? x5->dmin : x4->dmin);
        for (int e = 0; e < 256; e++) {
            int j = e / 32, l = e % 32;
            uint8_t sc, mn;
            sd_q4_k_scale_min(j, scales, &sc, &mn);
            int q = (qs[32 * (j / 2) + l] >> (4 * (j % 2))) & 0xF;
            if (q5) q |= ((x5->qh[l] >> j) & 1) << 4;
            W[e] = (int16_t)(sc * q);
            M[e] = mn;
        }
        return;
    }
    case SD_DTYPE_Q6_K: {
        const sd_block_q6_k *x = (const sd_block_q6_k *)row + b;
        *dw = sd_f16_to_f32(x->d);
        for (int e = 0; e < 256; e++) {
            int h = e / 128, g = (e % 128) / 32, l = e % 32;
            int lo = (x->ql[64 * h + 32 * (g & 1) + l] >> (4 * (g / 2))) & 0xF;
            int hi = (x->qh[32 * h + l] >> (2 * g)) & 3;
            W[e] = (int16_t)(x->scales[e / 16] * ((lo | (hi << 4)) - 32));
        }
        return;
    }
    case SD_DTYPE_IQ4_XS: {
        const sd_block_iq4_xs *x = (const sd_block_iq4_xs *)row + b;
        *dw = sd_f16_to_f32(x->d);
        for (int e = 0; e < 256; e++) {
            int j = e / 32, l = e % 32;
            W[e] = (int16_t)((sd_iq4_xs_scale(j, x) - 32) * sd_iq4_values[(x->qs[16 * j + l % 16] >> (4 * (l / 16))) & 0xF]);
        }
        return;
    }
    default: return;
    }
}

static float dot_row_scalar(sd_dtype_t type, const char *row, const int8_t *q, const float *d, int64_t n)
{
    int64_t blk = sd_act_q8_block(type);
    float acc = 0.0f;
    int16_t W[SD_QK_K], M[SD_QK_K] = {0};
    for (int64_t b = 0; b < n / blk; b++) {
        float dw, dmw;
        int_block(type, row, b, W, M, &dw, &dmw);
        int32_t s = 0, m = 0;
        for (int64_t e = 0; e < blk; e++) {
            s += W[e] * q[b * blk + e];
            m += M[e] * q[b * blk + e];
        }
        acc = fmaf((float)s, dw * d[b], acc);
        if (has_min(type)) acc = fmaf((float)m, dmw * d[b], acc);
    }
    return acc;
}

static void rows_q8_scalar(sd_dtype_t type, const void *w, size_t row_bytes, int64_t nw, const int8_t *q,
                           const float *d, int nx, int64_t n, float *y, size_t ldy)
{
    int64_t nb = n / sd_act_q8_block(type);
    for (int c = 0; c < nx; c++)
        for (int64_t r = 0; r < nw; r++)
            y[(size_t)c * ldy + (size_t)r] = dot_row_scalar(type, (const char *)w + (size_t)r * row_bytes,
                                                            q + (size_t)c * (size_t)n, d + (size_t)c * (size_t)nb, n);
}

/* ---- the AVX2 kernel ---------------------------------------------------------------------- */

#if Q8_AVX2
/* The AVX2 wide kernel (32-element types, prefill): A2W = 8 weight rows are decoded once per
 * chunk of A2B blocks into a transposed buffer (group of 4 elements x weight row), then every
 * activation row runs against it with its 4 bytes broadcast: lane r is weight row r's exact
 * integer sum, no horizontal sums. Q5_0/Q5_1 (0..31) take maddubs directly and sum 4 groups in
 * int16 (at most 8 * 31 * 128 < 2^15); IQ4_NL (signed, |v| <= 127) takes abs / sign per group. */
enum { A2W = 8, A2B = 32, A2X = 4, A2_MIN_ROWS = 16 };

typedef struct {
    uint32_t u[A2B][8][A2W]; /* block, group of 4 elements, weight row: the 4 weights */
    float dw[A2B][A2W], dmw[A2B][A2W];
} a2_tile_t;

KERNEL void a2_decode(sd_dtype_t type, const char *const rows[A2W], int64_t b0, int nb, a2_tile_t *t)
{
    const size_t bb = sd_dtype_block_bytes(type);
    for (int b = 0; b < nb; b++)
        for (int r = 0; r < A2W; r++) {
            const char *blk = rows[r] + (size_t)(b0 + b) * bb;
            uint32_t a[8];
            _mm256_storeu_si256((__m256i *)a, small_decode(type, blk));
            for (int g = 0; g < 8; g++) t->u[b][g][r] = a[g];
        }
    for (int b = 0; b < nb; b++) {
        __m256 dw = gather_f16(rows, (size_t)(b0 + b) * bb + q8_d_offset(type));
        _mm256_storeu_ps(t->dw[b], dw);
        if (q8_has_min(type)) _mm256_storeu_ps(t->dmw[b], gather_f16(rows, (size_t)(b0 + b) * bb + q8_dmin_offset(type)));
    }
}

/* NX activation rows (row x: q + x n, d + x nb_all, bsum + x n / 16, acc[x]) against nb
 * decoded blocks; the float stage is q8_tile's. */
KERNEL void a2_run(sd_dtype_t type, const a2_tile_t *t, int nb, const int8_t *q, const float *d,
                   const int16_t *bsum, int64_t n, int64_t nb_all, int NX, __m256 *acc)
{
    const __m256i ones = _mm256_set1_epi16(1);
    for (int b = 0; b < nb; b++) {
        __m256i s[A2X];
        UNROLL
        for (int x = 0; x < NX; x++) s[x] = _mm256_setzero_si256();
        UNROLL
        for (int h = 0; h < 2; h++) { /* groups 4h .. 4h + 3 */
            __m256i p[A2X];
            UNROLL
            for (int g = 4 * h; g < 4 * h + 4; g++) {
                __m256i wv = _mm256_loadu_si256((const __m256i *)t->u[b][g]);
                __m256i wa = type == SD_DTYPE_IQ4_NL ? _mm256_abs_epi8(wv) : wv;
                UNROLL
                for (int x = 0; x < NX; x++) {
                    __m256i xv = _mm256_set1_epi32((int)load_u32(q + (size_t)x * (size_t)n + 32 * b + 4 * g));
                    if (type == SD_DTYPE_IQ4_NL) {
                        s[x] = _mm256_add_epi32(s[x], _mm256_madd_epi16(_mm256_maddubs_epi16(wa, _mm256_sign_epi8(xv, wv)), ones));
                    } else {
                        __m256i pg = _mm256_maddubs_epi16(wa, xv);
                        p[x] = g == 4 * h ? pg : _mm256_add_epi16(p[x], pg);
                    }
                }
            }
            if (type != SD_DTYPE_IQ4_NL) {
                UNROLL
                for (int x = 0; x < NX; x++) s[x] = _mm256_add_epi32(s[x], _mm256_madd_epi16(p[x], ones));
            }
        }
        __m256 dw = _mm256_loadu_ps(t->dw[b]), dmw = q8_has_min(type) ? _mm256_loadu_ps(t->dmw[b]) : _mm256_setzero_ps();
        UNROLL
        for (int x = 0; x < NX; x++) {
            const int16_t *bs = bsum + (size_t)x * (size_t)(n / 16) + 2 * b;
            int xsum = bs[0] + bs[1];
            __m256i sv = s[x];
            if (small_offset(type)) sv = _mm256_sub_epi32(sv, _mm256_set1_epi32(small_offset(type) * xsum));
            __m256 dx = _mm256_set1_ps(d[(size_t)x * (size_t)nb_all + (size_t)b]);
            acc[x] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sv), _mm256_mul_ps(dw, dx), acc[x]);
            if (q8_has_min(type))
                acc[x] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_set1_epi32(xsum)), _mm256_mul_ps(dmw, dx), acc[x]);
        }
    }
}

/* Every 8-row tile of the weight range against every activation row (64 at a time). */
KERNEL void a2_rows_type(sd_dtype_t type, const char *w, size_t row_bytes, int64_t nw, const int8_t *q,
                         const float *d, const int16_t *bsum, int nx, int64_t n, float *y, size_t ldy)
{
    enum { AX = 64 };
    const int64_t nb_all = n / SD_QK;
    a2_tile_t t;
    __m256 acc[AX];
    for (int64_t r0 = 0; r0 < nw; r0 += A2W) {
        int tw = nw - r0 < A2W ? (int)(nw - r0) : A2W;
        const char *rows[A2W];
        for (int r = 0; r < A2W; r++) rows[r] = w + (size_t)(r0 + (r < tw ? r : tw - 1)) * row_bytes;
        for (int x0 = 0; x0 < nx; x0 += AX) {
            int nxg = nx - x0 < AX ? nx - x0 : AX;
            for (int x = 0; x < nxg; x++) acc[x] = _mm256_setzero_ps();
            for (int64_t b0 = 0; b0 < nb_all; b0 += A2B) {
                int nb = nb_all - b0 < A2B ? (int)(nb_all - b0) : A2B;
                a2_decode(type, rows, b0, nb, &t);
                for (int x = 0; x < nxg; x += A2X) {
                    size_t xo = (size_t)(x0 + x);
                    const int8_t *qx = q + xo * (size_t)n + (size_t)(b0 * SD_QK);
                    const float *dx = d + xo * (size_t)nb_all + (size_t)b0;
                    const int16_t *bx = bsum + xo * (size_t)(n / 16) + (size_t)(b0 * SD_QK / 16);
                    switch (nxg - x) {
                    case 1: a2_run(type, &t, nb, qx, dx, bx, n, nb_all, 1, acc + x); break;
                    case 2: a2_run(type, &t, nb, qx, dx, bx, n, nb_all, 2, acc + x); break;
                    case 3: a2_run(type, &t, nb, qx, dx, bx, n, nb_all, 3, acc + x); break;
                    default: a2_run(type, &t, nb, qx, dx, bx, n, nb_all, 4, acc + x); break;
                    }
                }
            }
            for (int x = 0; x < nxg; x++) {
                float a[A2W];
                _mm256_storeu_ps(a, acc[x]);
                memcpy(y + (size_t)(x0 + x) * ldy + (size_t)r0, a, sizeof(float) * (size_t)tw);
            }
        }
    }
}

void sd_vec_dot_rows_q8_avx2(sd_dtype_t type, const void *w, size_t row_bytes, int64_t nw,
                             const int8_t *q, const float *d, const int16_t *bsum, int nx,
                             int64_t n, float *y, size_t ldy)
{
    if (nx >= A2_MIN_ROWS) {
        switch (type) {
        case SD_DTYPE_Q5_0: a2_rows_type(SD_DTYPE_Q5_0, w, row_bytes, nw, q, d, bsum, nx, n, y, ldy); return;
        case SD_DTYPE_Q5_1: a2_rows_type(SD_DTYPE_Q5_1, w, row_bytes, nw, q, d, bsum, nx, n, y, ldy); return;
        case SD_DTYPE_IQ4_NL: a2_rows_type(SD_DTYPE_IQ4_NL, w, row_bytes, nw, q, d, bsum, nx, n, y, ldy); return;
        default: break;
        }
    }
    q8_rows(type, w, row_bytes, nw, q, d, bsum, nx, n, y, ldy);
}
#endif

void sd_quantize_act_q8(sd_dtype_t type, const float *x, int64_t n, int8_t *q, float *d,
                        int16_t *bsum)
{
#if Q8_AVX2
    q8_quantize_act(sd_act_q8_block(type), x, n, q, d, bsum);
#else
    quantize_act_scalar(sd_act_q8_block(type), x, n, q, d, bsum);
#endif
}

/* ---- kernel choice ------------------------------------------------------------------------ */

int sd_q8_isa_available(sd_i16_isa_t isa)
{
    switch (isa) {
    case SD_I16_ISA_SCALAR: return 1;
    case SD_I16_ISA_AVX2: return Q8_AVX2;
    case SD_I16_ISA_AVX512: return Q8_AVX2 && sd_i16_isa_available(SD_I16_ISA_AVX512);
    }
    return 0;
}

static void run_q8(sd_i16_isa_t isa, sd_dtype_t type, const void *w, size_t row_bytes, int64_t nw,
                   const int8_t *q, const float *d, const int16_t *bsum, int nx, int64_t n, float *y,
                   size_t ldy)
{
#if Q8_AVX2
    if (isa == SD_I16_ISA_AVX512) {
        sd_vec_dot_rows_q8_avx512(type, w, row_bytes, nw, q, d, bsum, nx, n, y, ldy);
        return;
    }
    if (isa == SD_I16_ISA_AVX2) {
        sd_vec_dot_rows_q8_avx2(type, w, row_bytes, nw, q, d, bsum, nx, n, y, ldy);
        return;
    }
#endif
    rows_q8_scalar(type, w, row_bytes, nw, q, d, nx, n, y, ldy);
}

sd_status_t sd_vec_dot_rows_q8_isa(sd_i16_isa_t isa, sd_dtype_t type, const void *w, size_t row_bytes,
                                   int64_t nw, const int8_t *q, const float *d, const int16_t *bsum,
                                   int nx, int64_t n, float *y, size_t ldy)
{
    if (!sd_q8_isa_available(isa))
        return sd_set_error(SD_ERR_INVALID_ARG, "int8 matmul kernel %d (%s) is not available in this build on "
                            "this CPU", (int)isa, sd_i16_isa_name(isa));
    run_q8(isa, type, w, row_bytes, nw, q, d, bsum, nx, n, y, ldy);
    return SD_OK;
}

void sd_vec_dot_rows_q8(sd_dtype_t type, const void *w, size_t row_bytes, int64_t nw,
                        const int8_t *q, const float *d, const int16_t *bsum, int nx, int64_t n,
                        float *y, size_t ldy)
{
    run_q8(Q8_AVX2 ? sd_i16_isa() : SD_I16_ISA_SCALAR, type, w, row_bytes, nw, q, d, bsum, nx, n, y, ldy);
}
