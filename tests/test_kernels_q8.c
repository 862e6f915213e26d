/* The int8 matmul kernels (kernels/cpu/vecdot_q8*.c) of every instruction set against the
 * numerics contract of vecdot_q8.c's header comment, computed here from this file's own
 * decode of the GGML layouts: per (weight row, activation row) and block the exact integer
 * sums s = sum W q and m = sum M q, then acc = fma((float)s, dw * dx, acc) and, for types
 * with a min, acc = fma((float)m, dmw * dx, acc). The decode is tied to the dequantizers
 * (checked against gguf-py by reference_codecs): every weight it yields must recompose, in
 * the dequantizer's float order, to sd_dequantize_row's value. Weights are quantized floats
 * and random bytes (every scale and high-bit pattern), activations random and saturated
 * (+-127 everywhere), so any int16 saturation or int32 overflow in a kernel shows. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/quants.h"
#include "support/test_util.h"

static const sd_dtype_t types[] = {SD_DTYPE_Q5_0, SD_DTYPE_Q5_1, SD_DTYPE_IQ4_NL, SD_DTYPE_Q2_K, SD_DTYPE_Q3_K,
                                   SD_DTYPE_Q4_K, SD_DTYPE_Q5_K, SD_DTYPE_Q6_K, SD_DTYPE_IQ4_XS};
static const int nws[] = {1, 3, 7, 8, 9, 17, 40};
static const int nxs[] = {1, 2, 3, 4, 5, 8, 9, 16, 17, 32, 70}; /* 16 (K-quants 32) on: the wide kernels (AVX2: 32-element types) */
enum { MAX_NW = 40, MAX_NX = 70, MAX_COLS = 1536, PAD = 3 };

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

static uint32_t xs32(uint32_t *s)
{
    *s ^= *s << 13, *s ^= *s >> 17, *s ^= *s << 5;
    return *s;
}

static int is_small(sd_dtype_t t) { return sd_dtype_block_elems(t) == 32; }

/* ---- this file's decode of the layouts ------------------------------------------------------ */

/* Element e of block b: sub-block scale S, value Q, min MN (0 without), the block's d and dmin. */
typedef struct {
    int S, Q, MN;
    float d, dmin;
} elem_t;

static float h2f(const uint8_t *p) { return sd_f16_to_f32((uint16_t)(p[0] | p[1] << 8)); }

static elem_t decode(sd_dtype_t t, const uint8_t *blk, int e)
{
    elem_t r = {1, 0, 0, 0.0f, 0.0f};
    switch (t) {
    case SD_DTYPE_Q5_0:
    case SD_DTYPE_Q5_1: {
        int o = t == SD_DTYPE_Q5_0 ? 2 : 4; /* qh, then 16 bytes of nibbles */
        r.d = h2f(blk);
        r.dmin = t == SD_DTYPE_Q5_1 ? h2f(blk + 2) : 0.0f;
        r.Q = ((blk[o + 4 + e % 16] >> (4 * (e / 16))) & 15) | (((blk[o + e / 8] >> (e % 8)) & 1) << 4);
        if (t == SD_DTYPE_Q5_0) r.Q -= 16;
        return r;
    }
    case SD_DTYPE_IQ4_NL:
        r.d = h2f(blk);
        r.Q = sd_iq4_values[(blk[2 + e % 16] >> (4 * (e / 16))) & 15];
        return r;
    case SD_DTYPE_Q2_K: { /* scales[16] qs[64] d dmin */
        int sc = blk[e / 16];
        r.d = h2f(blk + 80), r.dmin = h2f(blk + 82);
        r.S = sc & 15, r.MN = sc >> 4;
        r.Q = (blk[16 + 32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
        return r;
    }
    case SD_DTYPE_Q3_K: { /* hmask[32] qs[64] scales[12] d */
        int k = e / 16, h = e / 128, j = (e % 128) / 32, l = e % 32;
        const uint8_t *s = blk + 96;
        r.d = h2f(blk + 108);
        r.S = ((((s[k % 8] >> (4 * (k / 8))) & 15) | (((s[8 + k % 4] >> (2 * (k / 4))) & 3) << 4))) - 32;
        r.Q = ((blk[32 + 32 * h + l] >> (2 * j)) & 3) - (((blk[l] >> (4 * h + j)) & 1) ? 0 : 4);
        return r;
    }
    case SD_DTYPE_Q4_K:
    case SD_DTYPE_Q5_K: { /* d dmin scales[12] (qh[32]) qs[128] */
        int j = e / 32, l = e % 32, q5 = t == SD_DTYPE_Q5_K;
        const uint8_t *s = blk + 4, *qs = blk + (q5 ? 48 : 16);
        r.d = h2f(blk), r.dmin = h2f(blk + 2);
        r.S = j < 4 ? s[j] & 63 : (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
        r.MN = j < 4 ? s[j + 4] & 63 : (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
        r.Q = (qs[32 * (j / 2) + l] >> (4 * (j % 2))) & 15;
        if (q5) r.Q |= ((blk[16 + l] >> j) & 1) << 4;
        return r;
    }
    case SD_DTYPE_Q6_K: { /* ql[128] qh[64] scales[16] d */
        int h = e / 128, g = (e % 128) / 32, l = e % 32;
        r.d = h2f(blk + 208);
        r.S = (int8_t)blk[192 + e / 16];
        r.Q = (((blk[64 * h + 32 * (g & 1) + l] >> (4 * (g / 2))) & 15) | (((blk[128 + 32 * h + l] >> (2 * g)) & 3) << 4)) - 32;
        return r;
    }
    default: { /* IQ4_XS: d scales_h(2) scales_l[4] qs[128] */
        int j = e / 32, l = e % 32, sh = blk[2] | blk[3] << 8;
        r.d = h2f(blk);
        r.S = (((blk[4 + j / 2] >> (4 * (j % 2))) & 15) | (((sh >> (2 * j)) & 3) << 4)) - 32;
        r.Q = sd_iq4_values[(blk[8 + 16 * j + l % 16] >> (4 * (l / 16))) & 15];
        return r;
    }
    }
}

/* The dequantizer's value of an element, in its float order. */
static float recompose(sd_dtype_t t, elem_t r)
{
    switch (t) {
    case SD_DTYPE_Q5_0:
    case SD_DTYPE_IQ4_NL: return (float)r.Q * r.d;
    case SD_DTYPE_Q5_1: return (float)r.Q * r.d + r.dmin;
    case SD_DTYPE_Q2_K:
    case SD_DTYPE_Q4_K:
    case SD_DTYPE_Q5_K: return r.d * (float)r.S * (float)r.Q - r.dmin * (float)r.MN;
    default: return r.d * (float)r.S * (float)r.Q;
    }
}

static int has_min(sd_dtype_t t)
{
    return t == SD_DTYPE_Q2_K || t == SD_DTYPE_Q4_K || t == SD_DTYPE_Q5_K || t == SD_DTYPE_Q5_1;
}

/* ---- inputs ------------------------------------------------------------------------------ */

typedef struct {
    sd_dtype_t type;
    int64_t rows, cols;
    size_t row_bytes;
    uint8_t *data;
} wt_t;

/* rows x cols weights: random floats quantized (raw = 0) or random bytes with finite f16
 * fields of either sign (raw = 1). Checks the decode against the dequantizer. */
static wt_t make_weight(sd_dtype_t type, int64_t rows, int64_t cols, int raw, uint32_t seed)
{
    wt_t w = {type, rows, cols, 0, NULL};
    cr_assert_eq(sd_dtype_row_bytes(type, cols, &w.row_bytes), SD_OK);
    w.data = malloc(w.row_bytes * (size_t)rows);
    float *x = malloc(sizeof(float) * (size_t)cols), *y = malloc(sizeof(float) * (size_t)cols);
    cr_assert(w.data && x && y);
    size_t bb = sd_dtype_block_bytes(type);
    int64_t blk = sd_dtype_block_elems(type);
    for (int64_t r = 0; r < rows; r++) {
        uint8_t *row = w.data + (size_t)r * w.row_bytes;
        if (raw) {
            for (size_t i = 0; i < w.row_bytes; i++) row[i] = (uint8_t)xs32(&seed);
            /* finite f16 fields: clear the top exponent bit of each */
            for (int64_t b = 0; b < cols / blk; b++) {
                uint8_t *p = row + (size_t)b * bb;
                int offs[2] = {0, has_min(type) ? 2 : -1};
                if (type == SD_DTYPE_Q2_K) offs[0] = 80, offs[1] = 82;
                if (type == SD_DTYPE_Q3_K) offs[0] = 108;
                if (type == SD_DTYPE_Q6_K) offs[0] = 208;
                for (int f = 0; f < 2; f++)
                    if (offs[f] >= 0) p[offs[f] + 1] &= 0xBF; /* exponent < 16: |v| < 2 */
            }
        } else {
            sd_test_fill_random(x, (size_t)cols, seed + (uint32_t)r, 0.5f);
            for (int64_t i = 0; i < cols; i++) x[i] *= (float)(1 + (i / 256) % 3); /* uneven blocks */
            sd_quantize_row(type, x, row, cols);
        }
        sd_dequantize_row(type, row, y, cols);
        for (int64_t i = 0; i < cols; i++) {
            float v = recompose(type, decode(type, row + (size_t)(i / blk) * bb, (int)(i % blk)));
            cr_assert(memcmp(&v, &y[i], sizeof v) == 0, "%s row %lld element %lld: test decode %g, dequantizer %g",
                      sd_dtype_name(type), (long long)r, (long long)i, v, y[i]);
        }
    }
    free(x);
    free(y);
    return w;
}

typedef struct {
    int nx;
    int64_t n;
    int8_t *q;
    float *d;
    int16_t *bsum;
} act_t;

/* nx rows: random values (one all-zero block, one block of +-1 only: q = +-127) or (sat) every
 * value +-1 with random signs. */
static act_t make_act(sd_dtype_t type, int nx, int64_t n, int sat, uint32_t seed)
{
    act_t a = {nx, n, NULL, NULL, NULL};
    int64_t blk = sd_act_q8_block(type);
    float *x = malloc(sizeof(float) * (size_t)(nx * n));
    a.q = malloc((size_t)(nx * n));
    a.d = malloc(sizeof(float) * (size_t)(nx * n / blk));
    a.bsum = malloc(sizeof(int16_t) * (size_t)(nx * n / 16));
    cr_assert(x && a.q && a.d && a.bsum);
    sd_test_fill_random(x, (size_t)(nx * n), seed, 3.0f);
    for (int64_t i = 0; i < nx * n; i++) {
        int64_t e = i % n;
        if (sat || (e >= blk && e < 2 * blk)) x[i] = (xs32(&seed) & 1) ? 1.0f : -1.0f;
        else if (e >= 2 * blk && e < 3 * blk) x[i] = 0.0f;
    }
    for (int c = 0; c < nx; c++)
        sd_quantize_act_q8(type, x + c * n, n, a.q + c * n, a.d + c * n / blk, a.bsum + c * n / 16);
    free(x);
    return a;
}

static void free_act(act_t *a)
{
    free(a->q);
    free(a->d);
    free(a->bsum);
}

/* The contract for one (weight row, activation row c). */
static float dot_contract(const wt_t *w, const uint8_t *row, const act_t *a, int c)
{
    int64_t blk = sd_dtype_block_elems(w->type), nb = a->n / blk;
    size_t bb = sd_dtype_block_bytes(w->type);
    const int8_t *q = a->q + c * a->n;
    float acc = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
        int32_t s = 0, m = 0;
        elem_t r = {0};
        for (int e = 0; e < blk; e++) {
            r = decode(w->type, row + (size_t)b * bb, e);
            s += r.S * r.Q * q[b * blk + e];
            m += (w->type == SD_DTYPE_Q5_1 ? 1 : r.MN) * q[b * blk + e];
        }
        float dx = a->d[c * nb + b];
        acc = fmaf((float)s, r.d * dx, acc);
        if (has_min(w->type)) acc = fmaf((float)m, (w->type == SD_DTYPE_Q5_1 ? r.dmin : -r.dmin) * dx, acc);
    }
    return acc;
}

/* y[nx, nw + PAD] from kernel `isa` for weight rows r0.. and activation rows c0..; the PAD
 * columns keep their NaN fill. */
static float *run_isa(sd_i16_isa_t isa, const wt_t *w, int64_t r0, int nw, const act_t *a, int c0, int nx)
{
    size_t ldy = (size_t)nw + PAD;
    float *y = malloc(sizeof(float) * ldy * (size_t)nx);
    cr_assert(y);
    for (size_t i = 0; i < ldy * (size_t)nx; i++) y[i] = NAN;
    int64_t nb = a->n / sd_act_q8_block(w->type);
    sd_status_t st = sd_vec_dot_rows_q8_isa(isa, w->type, w->data + (size_t)r0 * w->row_bytes, w->row_bytes, nw,
                                            a->q + c0 * a->n, a->d + c0 * nb, a->bsum + c0 * a->n / 16, nx, a->n, y,
                                            ldy);
    cr_assert_eq(st, SD_OK);
    for (int c = 0; c < nx; c++)
        for (int p = 0; p < PAD; p++)
            cr_assert(isnan(y[(size_t)c * ldy + (size_t)nw + (size_t)p]), "a kernel wrote past row %d", nw);
    return y;
}

/* Kernel `isa` against the contract on every shape, for quantized and random-byte weights and
 * random and saturated activations. */
static void check_isa(sd_i16_isa_t isa)
{
    if (!sd_q8_isa_available(isa)) cr_skip_test("the %s int8 kernel is not available here", sd_i16_isa_name(isa));
    for (size_t ti = 0; ti < N_OF(types); ti++) {
        sd_dtype_t type = types[ti];
        const int small_cols[] = {32, 96, 576, 1536}, k_cols[] = {256, 768, 1536};
        const int *colss = is_small(type) ? small_cols : k_cols;
        int ncols = is_small(type) ? 4 : 3;
        for (int ci = 0; ci < ncols; ci++)
            for (int variant = 0; variant < 3; variant++) { /* quantized / raw bytes / saturated x */
                int cols = colss[ci];
                wt_t w = make_weight(type, MAX_NW, cols, variant == 1, 100u + (uint32_t)cols);
                act_t a = make_act(type, MAX_NX, cols, variant == 2, 7u + (uint32_t)cols);
                static float ref[MAX_NX][MAX_NW];
                for (int c = 0; c < MAX_NX; c++)
                    for (int r = 0; r < MAX_NW; r++) ref[c][r] = dot_contract(&w, w.data + (size_t)r * w.row_bytes, &a, c);
                for (size_t wi = 0; wi < N_OF(nws); wi++)
                    for (size_t xi = 0; xi < N_OF(nxs); xi++) {
                        int nw = nws[wi], nx = nxs[xi];
                        float *y = run_isa(isa, &w, 0, nw, &a, 0, nx);
                        for (int c = 0; c < nx; c++)
                            cr_assert(memcmp(y + (size_t)c * (size_t)(nw + PAD), ref[c], sizeof(float) * (size_t)nw) == 0,
                                      "%s %s %dx%d (variant %d), nx %d: activation row %d differs from the contract",
                                      sd_i16_isa_name(isa), sd_dtype_name(type), nw, cols, variant, nx, c);
                        free(y);
                    }
                free_act(&a);
                free(w.data);
            }
    }
}

Test(kernels_q8, scalar_kernel_follows_the_contract, .timeout = 300) { check_isa(SD_I16_ISA_SCALAR); }
Test(kernels_q8, avx2_kernel_follows_the_contract, .timeout = 300) { check_isa(SD_I16_ISA_AVX2); }
Test(kernels_q8, avx512_kernel_follows_the_contract, .timeout = 300) { check_isa(SD_I16_ISA_AVX512); }

/* Batch invariance of the chosen kernel: 70 activation rows split into calls of many sizes
 * (those of verification and prefill) and 21 weight rows taken from every offset 0..9 give
 * the bits of the single full call. */
Test(kernels_q8, rows_independent_of_batch_and_tiling, .timeout = 300)
{
    enum { NW = 21 };
    for (size_t ti = 0; ti < N_OF(types); ti++) {
        sd_dtype_t type = types[ti];
        int cols = is_small(type) ? 96 : 512;
        wt_t w = make_weight(type, NW, cols, 0, 5);
        act_t a = make_act(type, MAX_NX, cols, 0, 9);
        sd_i16_isa_t isa = sd_i16_isa();
        size_t ldf = NW + PAD;
        float *full = run_isa(isa, &w, 0, NW, &a, 0, MAX_NX);
        static const int sizes[] = {1, 2, 3, 4, 5, 8, 9, 15, 16, 17, 31, 32, 35, 64, MAX_NX};
        for (size_t si = 0; si < N_OF(sizes); si++)
            for (int c0 = 0, size = sizes[si]; c0 < MAX_NX; c0 += size) {
                int nx = MAX_NX - c0 < size ? MAX_NX - c0 : size;
                for (int r0 = 0; r0 < 10; r0++) {
                    int nw = NW - r0;
                    float *y = run_isa(isa, &w, r0, nw, &a, c0, nx);
                    for (int c = 0; c < nx; c++)
                        cr_assert(memcmp(y + (size_t)c * (size_t)(nw + PAD), full + (size_t)(c0 + c) * ldf + r0,
                                         sizeof(float) * (size_t)nw) == 0,
                                  "%s: activation row %d in a call of %d rows, weight rows from %d, differs from the "
                                  "full call",
                                  sd_dtype_name(type), c0 + c, nx, r0);
                    free(y);
                }
            }
        free(full);
        free_act(&a);
        free(w.data);
    }
}

/* ---- the activation quantizer ------------------------------------------------------------ */

Test(kernels_q8, activation_quantizer)
{
    float x[512];
    int8_t q[512];
    float d[16];
    int16_t bsum[32];
    /* block 0: max 2.54 -> d = 0.02, q = x / d rounded to nearest even; block 1 all zero */
    for (int i = 0; i < 256; i++) x[i] = 0.0f;
    x[0] = 2.54f, x[1] = -2.54f, x[2] = 0.01f, x[3] = 0.03f, x[4] = -0.05f, x[5] = 1.0f;
    for (int i = 256; i < 512; i++) x[i] = 0.0f;
    sd_quantize_act_q8(SD_DTYPE_Q4_K, x, 512, q, d, bsum);
    cr_assert_eq(d[0], 2.54f / 127.0f);
    cr_assert_eq(d[1], 0.0f);
    float id = 127.0f / 2.54f;
    for (int i = 0; i < 6; i++) cr_assert_eq(q[i], (int8_t)rintf(x[i] * id), "element %d: %d", i, q[i]);
    cr_assert_eq(q[0], 127);
    cr_assert_eq(q[1], -127);
    for (int i = 256; i < 512; i++) cr_assert_eq(q[i], 0);
    for (int g = 0; g < 32; g++) {
        int s = 0;
        for (int e = 0; e < 16; e++) s += q[16 * g + e];
        cr_assert_eq(bsum[g], s, "sum of 16 #%d", g);
    }
    /* a 32-element type scales each 32 on its own; a NaN gives -127 */
    for (int i = 0; i < 64; i++) x[i] = (float)(i % 32) * (i < 32 ? 1.0f : 0.5f);
    x[40] = NAN;
    sd_quantize_act_q8(SD_DTYPE_Q5_0, x, 64, q, d, bsum);
    cr_assert_eq(d[0], 31.0f / 127.0f);
    cr_assert_eq(q[31], 127);
    cr_assert_eq(q[40], -127);
}

/* Random blocks with exact ties (x * 127 / max = k + 0.5), infinities' neighbours, NaN and
 * zero blocks: every q, d and sum of 16 as the rule computes them here. */
Test(kernels_q8, activation_quantizer_follows_the_rule)
{
    enum { N = 4096 };
    static float x[N];
    static int8_t q[N];
    static float d[N / 32];
    static int16_t bsum[N / 16];
    uint32_t seed = 99;
    for (int i = 0; i < N; i++) {
        uint32_t r = xs32(&seed);
        x[i] = (float)((int)(r % 2001) - 1000) / 37.0f * (float)(1 + (i / 256) % 5);
        if (r % 17 == 0) x[i] = ((float)((int)(r % 255) - 127) + 0.5f) / 127.0f * 1000.0f / 37.0f; /* near ties */
    }
    for (int i = 0; i < 256; i++) x[i] = i == 7 ? 1000.0f / 37.0f : 0.0f; /* max only */
    for (int i = 512; i < 544; i++) x[i] = 0.0f;
    x[600] = NAN;
    for (int t = 0; t < 2; t++) {
        sd_dtype_t type = t ? SD_DTYPE_Q5_1 : SD_DTYPE_Q6_K;
        int blk = t ? 32 : 256;
        sd_quantize_act_q8(type, x, N, q, d, bsum);
        for (int b = 0; b < N / blk; b++) {
            float amax = 0.0f;
            for (int e = 0; e < blk; e++) amax = fmaxf(amax, fabsf(x[b * blk + e]));
            float id = amax > 0.0f ? 127.0f / amax : 0.0f;
            cr_assert_eq(d[b], amax / 127.0f, "%s block %d scale", sd_dtype_name(type), b);
            for (int e = 0; e < blk; e++) {
                float r = rintf(x[b * blk + e] * id);
                int want = r != r ? -127 : (int)r;
                cr_assert_eq(q[b * blk + e], want, "%s element %d: %d, want %d", sd_dtype_name(type), b * blk + e,
                             q[b * blk + e], want);
            }
        }
        for (int g = 0; g < N / 16; g++) {
            int s = 0;
            for (int e = 0; e < 16; e++) s += q[16 * g + e];
            cr_assert_eq(bsum[g], s, "%s sum of 16 #%d", sd_dtype_name(type), g);
        }
    }
}

Test(kernels_q8, unavailable_kernel_is_refused)
{
    if (sd_q8_isa_available(SD_I16_ISA_AVX512)) cr_skip_test("every int8 kernel runs here");
    int8_t q[32] = {0};
    float d = 0.0f, y = 0.0f;
    int16_t bs[2] = {0};
    uint8_t w[22] = {0};
    cr_assert_eq(sd_vec_dot_rows_q8_isa(SD_I16_ISA_AVX512, SD_DTYPE_Q5_0, w, 22, 1, q, &d, bs, 1, 32, &y, 1),
                 SD_ERR_INVALID_ARG);
}
