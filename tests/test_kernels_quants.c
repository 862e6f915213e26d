/* Tensor-type codecs: names, row sizes, F16/BF16 conversion, GGML block layouts
 * (known answers built by hand from the layout), quantize round trips, vec_dot. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/dtype.h"
#include "support/test_util.h"

static uint32_t fbits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float bitsf(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Deterministic pseudo-random floats in [-scale, scale) (xorshift). */
/* ---- names and sizes -------------------------------------------------------------------- */

Test(kernels_dtype, names_follow_ggml_ids)
{
    cr_assert_str_eq(sd_dtype_name(0), "F32");
    cr_assert_str_eq(sd_dtype_name(3), "Q4_1");
    cr_assert_str_eq(sd_dtype_name(13), "Q5_K");
    cr_assert_str_eq(sd_dtype_name(17), "IQ2_XS");
    cr_assert_str_eq(sd_dtype_name(28), "F64");
    cr_assert_str_eq(sd_dtype_name(30), "BF16");
    cr_assert_str_eq(sd_dtype_name(35), "TQ2_0");
    cr_assert_str_eq(sd_dtype_name(39), "MXFP4");
    /* ids GGML retired or never used */
    cr_assert_null(sd_dtype_name(4));
    cr_assert_null(sd_dtype_name(5));
    cr_assert_null(sd_dtype_name(31));
    cr_assert_null(sd_dtype_name(1000));
    cr_assert_null(sd_dtype_name(UINT32_MAX));
}

Test(kernels_dtype, supported_set)
{
    const uint32_t yes[] = {0, 1, 2, 3, 6, 7, 8, 10, 11, 12, 13, 14, 20, 23, 30};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        cr_assert(sd_dtype_supported(yes[i]), "type %u should be supported", yes[i]);
    const uint32_t no[] = {4, 5, 9, 15, 16, 17, 18, 19, 21, 22, 24, 28, 29, 34, 39, 500};
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        cr_assert(!sd_dtype_supported(no[i]), "type %u should not be supported", no[i]);
}

Test(kernels_dtype, block_sizes)
{
    cr_assert_eq(sd_dtype_block_elems(SD_DTYPE_F16), 1);
    cr_assert_eq(sd_dtype_block_elems(SD_DTYPE_Q4_1), 32);
    cr_assert_eq(sd_dtype_block_elems(SD_DTYPE_Q6_K), 256);
    cr_assert_eq(sd_dtype_block_elems((sd_dtype_t)16), 0);
    cr_assert_eq(sd_dtype_block_bytes(SD_DTYPE_F32), 4);
    cr_assert_eq(sd_dtype_block_bytes(SD_DTYPE_BF16), 2);
    cr_assert_eq(sd_dtype_block_bytes(SD_DTYPE_Q4_0), 18);
    cr_assert_eq(sd_dtype_block_bytes(SD_DTYPE_Q4_1), 20);
    cr_assert_eq(sd_dtype_block_elems(SD_DTYPE_Q5_0), 32);
    cr_assert_eq(sd_dtype_block_bytes(SD_DTYPE_Q5_0), 22);
    cr_assert_eq(sd_dtype_block_bytes(SD_DTYPE_Q8_0), 34);
    cr_assert_eq(sd_dtype_block_bytes(SD_DTYPE_Q4_K), 144);
    cr_assert_eq(sd_dtype_block_bytes(SD_DTYPE_Q6_K), 210);
    cr_assert_eq(sd_dtype_block_bytes((sd_dtype_t)16), 0);
    cr_assert_eq(sd_dtype_block_elems(SD_DTYPE_IQ4_NL), 32);
    cr_assert_eq(sd_dtype_block_elems(SD_DTYPE_IQ4_XS), 256);
    cr_assert_eq(sd_dtype_block_bytes(SD_DTYPE_Q5_1), 24);
    cr_assert_eq(sd_dtype_block_bytes(SD_DTYPE_Q2_K), 84);
    cr_assert_eq(sd_dtype_block_bytes(SD_DTYPE_Q3_K), 110);
    cr_assert_eq(sd_dtype_block_bytes(SD_DTYPE_Q5_K), 176);
    cr_assert_eq(sd_dtype_block_bytes(SD_DTYPE_IQ4_NL), 18);
    cr_assert_eq(sd_dtype_block_bytes(SD_DTYPE_IQ4_XS), 136);
}

Test(kernels_dtype, row_bytes_and_errors)
{
    size_t b = 0;
    cr_assert_eq(sd_dtype_row_bytes(SD_DTYPE_Q4_1, 576, &b), SD_OK);
    cr_assert_eq(b, 18 * 20);
    cr_assert_eq(sd_dtype_row_bytes(SD_DTYPE_Q8_0, 576, &b), SD_OK);
    cr_assert_eq(b, 18 * 34);
    cr_assert_eq(sd_dtype_row_bytes(SD_DTYPE_Q6_K, 1536, &b), SD_OK);
    cr_assert_eq(b, 6 * 210);
    cr_assert_eq(sd_dtype_row_bytes(SD_DTYPE_F16, 7, &b), SD_OK);
    cr_assert_eq(b, 14);

    cr_assert_eq(sd_dtype_row_bytes(SD_DTYPE_Q8_0, 100, &b), SD_ERR_BAD_MODEL);
    cr_assert(strstr(sd_last_error(), "100") && strstr(sd_last_error(), "Q8_0"), "message: %s",
              sd_last_error());
    cr_assert_eq(sd_dtype_row_bytes(SD_DTYPE_Q4_K, 288, &b), SD_ERR_BAD_MODEL);
    cr_assert(strstr(sd_last_error(), "288"), "message: %s", sd_last_error());
    cr_assert_eq(sd_dtype_row_bytes((sd_dtype_t)16, 256, &b), SD_ERR_UNSUPPORTED_TYPE);
    cr_assert(strstr(sd_last_error(), "IQ2_XXS"), "message: %s", sd_last_error());
    cr_assert_eq(sd_dtype_row_bytes((sd_dtype_t)77, 256, &b), SD_ERR_UNSUPPORTED_TYPE);
    cr_assert(strstr(sd_last_error(), "77"), "message: %s", sd_last_error());
}

/* ---- F16 / BF16 ---------------------------------------------------------------------------- */

Test(kernels_dtype, f16_encode_edge_cases)
{
    cr_assert_eq(sd_f32_to_f16(1.0f), 0x3c00);
    cr_assert_eq(sd_f32_to_f16(-2.0f), 0xc000);
    cr_assert_eq(sd_f32_to_f16(0.0f), 0x0000);
    cr_assert_eq(sd_f32_to_f16(-0.0f), 0x8000);
    cr_assert_eq(sd_f32_to_f16(INFINITY), 0x7c00);
    cr_assert_eq(sd_f32_to_f16(-INFINITY), 0xfc00);
    uint16_t nan = sd_f32_to_f16(NAN);
    cr_assert((nan & 0x7c00) == 0x7c00 && (nan & 0x3ff) != 0, "nan encodes as 0x%04x", nan);
    cr_assert_eq(sd_f32_to_f16(65504.0f), 0x7bff);    /* largest finite */
    cr_assert_eq(sd_f32_to_f16(65519.996f), 0x7bff);  /* just below the halfway point */
    cr_assert_eq(sd_f32_to_f16(65520.0f), 0x7c00);    /* tie, odd mantissa rounds up: inf */
    cr_assert_eq(sd_f32_to_f16(1e10f), 0x7c00);
    /* ties to even between 1 and 1 + 2^-10 */
    cr_assert_eq(sd_f32_to_f16(1.0f + 0x1p-11f), 0x3c00);
    cr_assert_eq(sd_f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02);
    cr_assert_eq(sd_f32_to_f16(1.0f + 0x1p-11f + 0x1p-20f), 0x3c01);
    /* subnormals: unit 2^-24 */
    cr_assert_eq(sd_f32_to_f16(0x1p-24f), 0x0001);
    cr_assert_eq(sd_f32_to_f16(0x1p-25f), 0x0000);        /* tie with 0: even */
    cr_assert_eq(sd_f32_to_f16(0x1.8p-24f), 0x0002);      /* tie 1.5 -> 2 */
    cr_assert_eq(sd_f32_to_f16(0x1.000002p-25f), 0x0001); /* just above half */
    cr_assert_eq(sd_f32_to_f16(-0x1p-24f), 0x8001);
    cr_assert_eq(sd_f32_to_f16(0x1p-14f), 0x0400);        /* smallest normal */
    cr_assert_eq(sd_f32_to_f16(0x1.ff8p-15f), 0x03ff);    /* largest subnormal */
    cr_assert_eq(sd_f32_to_f16(0x1.ffcp-15f), 0x0400);    /* + half a unit, odd: rounds up */
    cr_assert_eq(sd_f32_to_f16(1e-30f), 0x0000);
}

Test(kernels_dtype, f16_decode_edge_cases)
{
    cr_assert_eq(fbits(sd_f16_to_f32(0x3c00)), fbits(1.0f));
    cr_assert_eq(fbits(sd_f16_to_f32(0x8000)), fbits(-0.0f));
    cr_assert_eq(sd_f16_to_f32(0x0001), 0x1p-24f);
    cr_assert_eq(sd_f16_to_f32(0x03ff), 0x1.ff8p-15f);
    cr_assert_eq(sd_f16_to_f32(0x3555), 0.333251953125f);
    cr_assert_eq(sd_f16_to_f32(0x7bff), 65504.0f);
    cr_assert(isinf(sd_f16_to_f32(0x7c00)) && sd_f16_to_f32(0x7c00) > 0);
    cr_assert(isinf(sd_f16_to_f32(0xfc00)) && sd_f16_to_f32(0xfc00) < 0);
    cr_assert(isnan(sd_f16_to_f32(0x7e00)));
    cr_assert(isnan(sd_f16_to_f32(0x7c01)));
    /* every finite half survives f16 -> f32 -> f16 */
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) == 0x7c00) continue;
        cr_assert_eq(sd_f32_to_f16(sd_f16_to_f32((uint16_t)h)), h, "half 0x%04x", h);
    }
}

Test(kernels_dtype, bf16_edge_cases)
{
    cr_assert_eq(sd_f32_to_bf16(1.0f), 0x3f80);
    cr_assert_eq(sd_f32_to_bf16(bitsf(0x3f808000)), 0x3f80); /* tie, even stays */
    cr_assert_eq(sd_f32_to_bf16(bitsf(0x3f818000)), 0x3f82); /* tie, odd rounds up */
    cr_assert_eq(sd_f32_to_bf16(bitsf(0x3f808001)), 0x3f81);
    cr_assert_eq(sd_f32_to_bf16(INFINITY), 0x7f80);
    cr_assert_eq(sd_f32_to_bf16(-INFINITY), 0xff80);
    cr_assert_eq(sd_f32_to_bf16(bitsf(0x7f7fffff)), 0x7f80); /* FLT_MAX rounds to inf */
    cr_assert_eq(sd_f32_to_bf16(bitsf(0x00000001)), 0x0000); /* subnormal rounds to 0 */
    cr_assert_eq(sd_f32_to_bf16(bitsf(0x00018000)), 0x0002); /* subnormal tie, odd -> up */
    uint16_t nan = sd_f32_to_bf16(bitsf(0x7f800001));      /* signalling nan stays nan */
    cr_assert((nan & 0x7f80) == 0x7f80 && (nan & 0x7f) != 0, "nan encodes as 0x%04x", nan);
    cr_assert_eq(sd_bf16_to_f32(0x3f80), 1.0f);
    cr_assert_eq(fbits(sd_bf16_to_f32(0xc0a0)), 0xc0a00000u);
    cr_assert(isnan(sd_bf16_to_f32(0x7fc0)));
}

/* ---- known-answer blocks, packed by hand from GGML's layouts ------------------------------- */

static void put_f16(uint8_t *p, uint16_t h)
{
    p[0] = (uint8_t)(h & 0xff);
    p[1] = (uint8_t)(h >> 8);
}

Test(kernels_layout, q8_0_block)
{
    uint8_t blk[34];
    put_f16(blk, 0x3800); /* d = 0.5 */
    for (int j = 0; j < 32; j++) blk[2 + j] = (uint8_t)(int8_t)(j - 16);
    float y[32];
    sd_dequantize_row(SD_DTYPE_Q8_0, blk, y, 32);
    for (int j = 0; j < 32; j++) cr_assert_eq(y[j], (float)(j - 16) * 0.5f, "element %d", j);
}

Test(kernels_layout, q4_0_block)
{
    uint8_t blk[18];
    put_f16(blk, 0x4000); /* d = 2 */
    for (int j = 0; j < 16; j++) blk[2 + j] = (uint8_t)(j | ((15 - j) << 4));
    float y[32];
    sd_dequantize_row(SD_DTYPE_Q4_0, blk, y, 32);
    for (int j = 0; j < 16; j++) {
        cr_assert_eq(y[j], (float)(j - 8) * 2.0f, "element %d", j);
        cr_assert_eq(y[16 + j], (float)(15 - j - 8) * 2.0f, "element %d", 16 + j);
    }
}

Test(kernels_layout, q4_1_block)
{
    uint8_t blk[20];
    put_f16(blk, 0x3400);     /* d = 0.25 */
    put_f16(blk + 2, 0xbc00); /* m = -1 */
    for (int j = 0; j < 16; j++) blk[4 + j] = (uint8_t)(((j * 3) & 15) | (((j * 5 + 1) & 15) << 4));
    float y[32];
    sd_dequantize_row(SD_DTYPE_Q4_1, blk, y, 32);
    for (int j = 0; j < 16; j++) {
        cr_assert_eq(y[j], (float)((j * 3) & 15) * 0.25f - 1.0f, "element %d", j);
        cr_assert_eq(y[16 + j], (float)((j * 5 + 1) & 15) * 0.25f - 1.0f, "element %d", 16 + j);
    }
}

/* Q5_0: d (f16), qh (u32 little-endian: bit j = 5th bit of element j), 16 nibble bytes
 * (element j low nibble of byte j, element j+16 high nibble); w = d * (q - 16). */
Test(kernels_layout, q5_0_block)
{
    uint8_t blk[22];
    put_f16(blk, 0x3800); /* d = 0.5 */
    int q[32];
    uint32_t qh = 0;
    for (int j = 0; j < 32; j++) {
        q[j] = (j * 7 + 3) % 32; /* every value 0..31 once, both halves use the 5th bit */
        qh |= (uint32_t)(q[j] >> 4) << j;
    }
    for (int b = 0; b < 4; b++) blk[2 + b] = (uint8_t)(qh >> (8 * b));
    for (int j = 0; j < 16; j++) blk[6 + j] = (uint8_t)((q[j] & 15) | ((q[j + 16] & 15) << 4));
    float y[32], x[32];
    sd_dequantize_row(SD_DTYPE_Q5_0, blk, y, 32);
    for (int j = 0; j < 32; j++) cr_assert_eq(y[j], (float)(q[j] - 16) * 0.5f, "element %d", j);
    /* the SIMD dot decodes the same values: one-hot activations pick single weights */
    for (int j = 0; j < 32; j++) {
        memset(x, 0, sizeof x);
        x[j] = 1.0f;
        cr_assert_eq(sd_vec_dot(SD_DTYPE_Q5_0, blk, x, 32), y[j], "element %d", j);
    }
}

Test(kernels_codec, q5_0_matches_ggml_reference_quantizer)
{
    float x[32];
    for (int j = 0; j < 32; j++) x[j] = (float)(j - 20) * 0.25f; /* -5 .. 2.75 */
    uint8_t b[22];
    sd_quantize_row(SD_DTYPE_Q5_0, x, b, 32);
    /* max by magnitude is -5 -> d = -5 / -16, q = trunc(x / d + 16.5) clamped to 31 */
    cr_assert_eq(b[0] | b[1] << 8, sd_f32_to_f16(5.0f / 16.0f));
    float id = 1.0f / (5.0f / 16.0f);
    uint32_t qh = (uint32_t)b[2] | (uint32_t)b[3] << 8 | (uint32_t)b[4] << 16 | (uint32_t)b[5] << 24;
    for (int j = 0; j < 32; j++) {
        int want = (int)(x[j] * id + 16.5f);
        want = want > 31 ? 31 : want;
        int nib = j < 16 ? b[6 + j] & 15 : b[6 + j - 16] >> 4;
        cr_assert_eq(nib | (int)((qh >> j) & 1) << 4, want, "element %d", j);
    }
}

/* Q4_K: d, dmin (f16); 12 scale bytes: byte j (j<4) = sc[j] | hi2(sc[j+4]) << 6,
 * byte 4+j = m[j] | hi2(m[j+4]) << 6, byte 8+j = lo4(sc[j+4]) | lo4(m[j+4]) << 4;
 * 128 qs bytes: chunk c of 32 bytes, low nibble = sub-block 2c, high nibble = 2c+1. */
Test(kernels_layout, q4_k_block)
{
    uint8_t blk[144] = {0};
    put_f16(blk, 0x3c00);     /* d = 1 */
    put_f16(blk + 2, 0x3800); /* dmin = 0.5 */
    int sc[8], mn[8];
    for (int j = 0; j < 8; j++) {
        sc[j] = 8 * j + 1;  /* 1 .. 57: uses the high bits for j >= 4 */
        mn[j] = 63 - 8 * j; /* 63 .. 7 */
    }
    uint8_t *s = blk + 4;
    for (int j = 0; j < 4; j++) {
        s[j] = (uint8_t)(sc[j] | ((sc[j + 4] >> 4) << 6));
        s[4 + j] = (uint8_t)(mn[j] | ((mn[j + 4] >> 4) << 6));
        s[8 + j] = (uint8_t)((sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4));
    }
    uint8_t *qs = blk + 16;
    for (int j = 0; j < 8; j++)
        for (int l = 0; l < 32; l++) qs[32 * (j / 2) + l] |= (uint8_t)(((l * 7 + j) & 15) << (4 * (j % 2)));
    float y[256];
    sd_dequantize_row(SD_DTYPE_Q4_K, blk, y, 256);
    for (int j = 0; j < 8; j++)
        for (int l = 0; l < 32; l++) {
            float want = (float)sc[j] * (float)((l * 7 + j) & 15) - 0.5f * (float)mn[j];
            cr_assert_eq(y[32 * j + l], want, "sub-block %d element %d: %g != %g", j, l,
                         y[32 * j + l], want);
        }
}

/* Q6_K: ql[128], qh[64], scales int8[16], d f16. Element e: half h = e / 128, l = e % 128,
 * group g = l / 32, i = l % 32; low 4 bits in ql[64h + 32(g&1) + i] (low nibble for g < 2,
 * high nibble for g >= 2); high 2 bits in qh[32h + i] bits 2g..2g+1; scale scales[e / 16];
 * w = d * scale * (q - 32). */
Test(kernels_layout, q6_k_block)
{
    uint8_t blk[210] = {0};
    uint8_t *ql = blk, *qh = blk + 128;
    int8_t *scales = (int8_t *)(blk + 192);
    put_f16(blk + 208, 0x3800); /* d = 0.5 */
    for (int k = 0; k < 16; k++) scales[k] = (int8_t)((k % 2 ? -1 : 1) * (k + 1));
    for (int e = 0; e < 256; e++) {
        int q = (e * 5 + 3) & 63, h = e / 128, l = e % 128, g = l / 32, i = l % 32;
        ql[64 * h + 32 * (g & 1) + i] |= (uint8_t)((q & 15) << (g >= 2 ? 4 : 0));
        qh[32 * h + i] |= (uint8_t)((q >> 4) << (2 * g));
    }
    float y[256];
    sd_dequantize_row(SD_DTYPE_Q6_K, blk, y, 256);
    for (int e = 0; e < 256; e++) {
        float want = 0.5f * (float)scales[e / 16] * (float)(((e * 5 + 3) & 63) - 32);
        cr_assert_eq(y[e], want, "element %d: %g != %g", e, y[e], want);
    }
}

/* ---- per-type round trips and dot products ----------------------------------------------- */

typedef struct {
    sd_dtype_t type;
} type_param_t;

static type_param_t all_types[] = {{SD_DTYPE_F32},  {SD_DTYPE_F16},    {SD_DTYPE_BF16},  {SD_DTYPE_Q8_0},
                                   {SD_DTYPE_Q4_0}, {SD_DTYPE_Q4_1},   {SD_DTYPE_Q5_0},  {SD_DTYPE_Q5_1},
                                   {SD_DTYPE_Q2_K}, {SD_DTYPE_Q3_K},   {SD_DTYPE_Q4_K},  {SD_DTYPE_Q5_K},
                                   {SD_DTYPE_Q6_K}, {SD_DTYPE_IQ4_NL}, {SD_DTYPE_IQ4_XS}};

ParameterizedTestParameters(kernels_codec, round_trip)
{
    return cr_make_param_array(type_param_t, all_types, sizeof all_types / sizeof all_types[0]);
}

static float absmax(const float *x, int n)
{
    float m = 0.0f;
    for (int i = 0; i < n; i++) m = fmaxf(m, fabsf(x[i]));
    return m;
}

static float span(const float *x, int n)
{
    float lo = x[0], hi = x[0];
    for (int i = 0; i < n; i++) {
        lo = fminf(lo, x[i]);
        hi = fmaxf(hi, x[i]);
    }
    return hi - lo;
}

/* Largest error the format's quantizer may make on element i of x (a bound derived from
 * the step size of the block holding it, plus f16 rounding of the block scales). */
static float error_bound(sd_dtype_t type, const float *x, int i)
{
    const float *b32 = x + i / 32 * 32, *b256 = x + i / 256 * 256, *b16 = x + i / 16 * 16;
    switch (type) {
    case SD_DTYPE_F32: return 0.0f;
    case SD_DTYPE_F16: return fabsf(x[i]) * 0x1p-11f;
    case SD_DTYPE_BF16: return fabsf(x[i]) * 0x1p-8f;
    case SD_DTYPE_Q8_0: return absmax(b32, 32) / 127.0f * 0.57f;
    case SD_DTYPE_Q4_0: return absmax(b32, 32) / 8.0f * 1.01f; /* +max clamps to 15 */
    case SD_DTYPE_Q4_1: return span(b32, 32) / 15.0f * 0.52f + absmax(b32, 32) * 0x1p-10f;
    case SD_DTYPE_Q5_0: return absmax(b32, 32) / 16.0f * 1.01f; /* +max clamps to 31 */
    case SD_DTYPE_Q5_1: return span(b32, 32) / 31.0f * 0.52f + absmax(b32, 32) * 0x1p-10f;
    /* the IQ4 values' largest gap is 24 steps of d ~ absmax / 120 (the extreme maps to -127
     * or 113), values of the other sign reach only 113 of 127 steps; the least-squares step
     * (IQ4_NL) and the 6-bit scales (IQ4_XS: d / 2 of 32 steps) widen that a little */
    case SD_DTYPE_IQ4_NL: return absmax(b32, 32) * 0.15f;
    case SD_DTYPE_IQ4_XS: return absmax(b32, 32) * 0.125f + absmax(b256, 256) / 64.0f;
    /* half a step of the sub-block, with the step and min rounded to the 4/6-bit grid */
    case SD_DTYPE_Q2_K: return span(b16, 16) / 6.0f + absmax(b256, 256) / 10.0f;
    case SD_DTYPE_Q3_K: return absmax(b16, 16) / 4.0f * 1.01f + absmax(b256, 256) / 64.0f;
    case SD_DTYPE_Q4_K: return span(b32, 32) / 15.0f + absmax(b256, 256) / 63.0f;
    case SD_DTYPE_Q5_K: return span(b32, 32) / 31.0f + absmax(b256, 256) / 63.0f;
    case SD_DTYPE_Q6_K: return absmax(b16, 16) / 32.0f * 1.01f + absmax(b256, 256) / 128.0f;
    }
    return 0.0f;
}

ParameterizedTest(type_param_t *p, kernels_codec, round_trip, .timeout = 30)
{
    enum { N = 1024 };
    float x[N], y[N];
    /* blocks of very different magnitude, so per-block scaling matters */
    sd_test_fill_random(x, N, 7, 1.0f);
    for (int i = 0; i < N; i++) x[i] *= (float)(1 + (i / 256) * 20);
    size_t rb;
    cr_assert_eq(sd_dtype_row_bytes(p->type, N, &rb), SD_OK);
    uint8_t *q = malloc(rb);
    sd_quantize_row(p->type, x, q, N);
    sd_dequantize_row(p->type, q, y, N);
    double err2 = 0.0, x2 = 0.0;
    for (int i = 0; i < N; i++) {
        float bound = error_bound(p->type, x, i);
        cr_assert(fabsf(y[i] - x[i]) <= bound, "%s element %d: %g -> %g (bound %g)",
                  sd_dtype_name(p->type), i, x[i], y[i], bound);
        err2 += (double)(y[i] - x[i]) * (y[i] - x[i]);
        x2 += (double)x[i] * x[i];
    }
    /* the 4-bit formats keep the rms error under 10% of the signal, Q2_K/Q3_K under 30% */
    double max_rms = p->type == SD_DTYPE_Q2_K || p->type == SD_DTYPE_Q3_K ? 0.3 : 0.1;
    cr_assert(sqrt(err2 / x2) < max_rms, "%s relative rms error %g", sd_dtype_name(p->type),
              sqrt(err2 / x2));
    free(q);
}

Test(kernels_codec, q8_0_matches_ggml_reference_quantizer)
{
    /* amax 31.75 -> d = 31.75 / 127 = 0.25 (f16 0x3400), id = 4, q = roundf(x * 4) */
    float x[32] = {0};
    x[0] = 31.75f;
    x[1] = -12.5f;  /* -50 */
    x[2] = 0.125f;  /* 0.5 rounds away from zero: 1 */
    x[3] = -0.125f; /* -1 */
    x[4] = 0.1f;    /* 0.4 -> 0 */
    uint8_t blk[34];
    sd_quantize_row(SD_DTYPE_Q8_0, x, blk, 32);
    cr_assert_eq(blk[0] | blk[1] << 8, 0x3400);
    int8_t *qs = (int8_t *)(blk + 2);
    cr_assert_eq(qs[0], 127);
    cr_assert_eq(qs[1], -50);
    cr_assert_eq(qs[2], 1);
    cr_assert_eq(qs[3], -1);
    cr_assert_eq(qs[4], 0);
}

Test(kernels_codec, q4_0_and_q4_1_match_ggml_reference_quantizers)
{
    float x[32];
    for (int j = 0; j < 32; j++) x[j] = (float)(j - 12) * 0.5f; /* -6 .. 9.5 */
    uint8_t b0[18], b1[20];
    sd_quantize_row(SD_DTYPE_Q4_0, x, b0, 32);
    /* Q4_0: max by magnitude is 9.5 -> d = 9.5 / -8, q = trunc(x / d + 8.5) clamped to 15 */
    cr_assert_eq(b0[0] | b0[1] << 8, sd_f32_to_f16(9.5f / -8.0f));
    float id0 = 1.0f / (9.5f / -8.0f);
    for (int j = 0; j < 16; j++) {
        int lo = (int)(x[j] * id0 + 8.5f), hi = (int)(x[j + 16] * id0 + 8.5f);
        lo = lo > 15 ? 15 : lo;
        hi = hi > 15 ? 15 : hi;
        cr_assert_eq(b0[2 + j], lo | hi << 4, "Q4_0 byte %d", j);
    }
    sd_quantize_row(SD_DTYPE_Q4_1, x, b1, 32);
    /* Q4_1: d = (max - min) / 15 = 1.03333, m = min = -6, q = trunc((x - min) / d + 0.5) */
    cr_assert_eq(b1[0] | b1[1] << 8, sd_f32_to_f16(15.5f / 15.0f));
    cr_assert_eq(b1[2] | b1[3] << 8, sd_f32_to_f16(-6.0f));
    float id1 = 1.0f / (15.5f / 15.0f);
    for (int j = 0; j < 16; j++) {
        int lo = (int)((x[j] + 6.0f) * id1 + 0.5f), hi = (int)((x[j + 16] + 6.0f) * id1 + 0.5f);
        cr_assert_eq(b1[4 + j], lo | hi << 4, "Q4_1 byte %d", j);
    }
}

/* vec_dot == dot(dequantize(row), x) accumulated in double, for several lengths. */
typedef struct {
    sd_dtype_t type;
    int n;
} dot_param_t;

static dot_param_t dot_params[] = {
    {SD_DTYPE_F32, 1},     {SD_DTYPE_F32, 37},    {SD_DTYPE_F32, 576},   {SD_DTYPE_F32, 1001},
    {SD_DTYPE_F16, 7},     {SD_DTYPE_F16, 64},    {SD_DTYPE_F16, 1537},  {SD_DTYPE_BF16, 33},
    {SD_DTYPE_BF16, 576},  {SD_DTYPE_Q8_0, 32},   {SD_DTYPE_Q8_0, 576},  {SD_DTYPE_Q8_0, 1536},
    {SD_DTYPE_Q4_0, 32},   {SD_DTYPE_Q4_0, 96},   {SD_DTYPE_Q4_0, 2048}, {SD_DTYPE_Q4_1, 32},
    {SD_DTYPE_Q4_1, 576},  {SD_DTYPE_Q4_1, 1536}, {SD_DTYPE_Q5_0, 32},   {SD_DTYPE_Q5_0, 96},
    {SD_DTYPE_Q5_0, 896},  {SD_DTYPE_Q4_K, 256},  {SD_DTYPE_Q4_K, 768},
    {SD_DTYPE_Q4_K, 2816}, {SD_DTYPE_Q6_K, 256},  {SD_DTYPE_Q6_K, 1536}, {SD_DTYPE_Q6_K, 2816},
    {SD_DTYPE_Q5_1, 32},   {SD_DTYPE_Q5_1, 576},  {SD_DTYPE_IQ4_NL, 32}, {SD_DTYPE_IQ4_NL, 896},
    {SD_DTYPE_Q2_K, 256},  {SD_DTYPE_Q2_K, 1536}, {SD_DTYPE_Q3_K, 256},  {SD_DTYPE_Q3_K, 1536},
    {SD_DTYPE_Q5_K, 256},  {SD_DTYPE_Q5_K, 1536}, {SD_DTYPE_IQ4_XS, 256}, {SD_DTYPE_IQ4_XS, 2816},
};

ParameterizedTestParameters(kernels_codec, vec_dot_matches_dequantized_dot)
{
    return cr_make_param_array(dot_param_t, dot_params, sizeof dot_params / sizeof dot_params[0]);
}

ParameterizedTest(dot_param_t *p, kernels_codec, vec_dot_matches_dequantized_dot, .timeout = 30)
{
    int n = p->n;
    float *w = malloc(sizeof(float) * (size_t)n), *x = malloc(sizeof(float) * (size_t)n);
    float *wd = malloc(sizeof(float) * (size_t)n);
    size_t rb;
    cr_assert_eq(sd_dtype_row_bytes(p->type, n, &rb), SD_OK);
    uint8_t *q = malloc(rb);
    for (uint32_t seed = 1; seed <= 3; seed++) {
        sd_test_fill_random(w, n, seed, 0.5f);
        sd_test_fill_random(x, n, seed + 100, 2.0f);
        sd_quantize_row(p->type, w, q, n);
        sd_dequantize_row(p->type, q, wd, n);
        double ref = 0.0, mag = 0.0;
        for (int i = 0; i < n; i++) {
            ref += (double)wd[i] * (double)x[i];
            mag += fabs((double)wd[i] * (double)x[i]);
        }
        float got = sd_vec_dot(p->type, q, x, n);
        /* f32 accumulation: a few ulps of the magnitude sum */
        double tol = 1e-6 * mag + 1e-30;
        cr_assert(fabs(got - ref) <= tol, "%s n=%d seed %u: %.9g vs %.9g (tol %g)",
                  sd_dtype_name(p->type), n, seed, got, ref, tol);
        /* same inputs, same bits */
        float again = sd_vec_dot(p->type, q, x, n);
        cr_assert_eq(fbits(again), fbits(got));
    }
    free(w);
    free(x);
    free(wd);
    free(q);
}
