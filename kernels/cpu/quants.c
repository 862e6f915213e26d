/* Row codecs: GGML-exact dequantization and GGML's reference quantizers for the
 * 32-element formats (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1). K-quants and the IQ4
 * formats live in quants_k.c. */
#include <math.h>
#include <string.h>

#include "kernels/cpu/quants.h"

/* ---- dequantize: y = d * q (+ m), products rounded before the add as GGML and gguf-py ---- */

static void dequant_q8_0(const sd_block_q8_0 *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        float d = sd_f16_to_f32(b[i].d);
        for (int j = 0; j < SD_QK; j++) y[i * SD_QK + j] = (float)b[i].qs[j] * d;
    }
}

static void dequant_q4_0(const sd_block_q4_0 *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        float d = sd_f16_to_f32(b[i].d);
        float *yb = y + i * SD_QK;
        for (int j = 0; j < SD_QK / 2; j++) {
            yb[j] = (float)((b[i].qs[j] & 0xF) - 8) * d;
            yb[j + SD_QK / 2] = (float)((b[i].qs[j] >> 4) - 8) * d;
        }
    }
}

static void dequant_q4_1(const sd_block_q4_1 *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        float d = sd_f16_to_f32(b[i].d), m = sd_f16_to_f32(b[i].m);
        float *yb = y + i * SD_QK;
        for (int j = 0; j < SD_QK / 2; j++) {
            yb[j] = (float)(b[i].qs[j] & 0xF) * d + m;
            yb[j + SD_QK / 2] = (float)(b[i].qs[j] >> 4) * d + m;
        }
    }
}

/* The 32 five-bit values 0..31 of a Q5_0 / Q5_1 block (element order). */
static void q5_values(const uint8_t qh_bytes[4], const uint8_t qs[SD_QK / 2], uint8_t q[SD_QK])
{
    uint32_t qh;
    memcpy(&qh, qh_bytes, sizeof qh);
    for (int j = 0; j < SD_QK / 2; j++) {
        q[j] = (uint8_t)((qs[j] & 0xF) | (((qh >> j) & 1u) << 4));
        q[j + SD_QK / 2] = (uint8_t)((qs[j] >> 4) | (((qh >> (j + 16)) & 1u) << 4));
    }
}

static void dequant_q5_0(const sd_block_q5_0 *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        float d = sd_f16_to_f32(b[i].d);
        uint8_t q[SD_QK];
        q5_values(b[i].qh, b[i].qs, q);
        for (int j = 0; j < SD_QK; j++) y[i * SD_QK + j] = (float)(q[j] - 16) * d;
    }
}

static void dequant_q5_1(const sd_block_q5_1 *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        float d = sd_f16_to_f32(b[i].d), m = sd_f16_to_f32(b[i].m);
        uint8_t q[SD_QK];
        q5_values(b[i].qh, b[i].qs, q);
        for (int j = 0; j < SD_QK; j++) y[i * SD_QK + j] = (float)q[j] * d + m;
    }
}

void sd_dequantize_row(sd_dtype_t type, const void *src, float *dst, int64_t n)
{
    switch (type) {
    case SD_DTYPE_F32:
        memcpy(dst, src, (size_t)n * sizeof(float));
        break;
    case SD_DTYPE_F16:
        for (int64_t i = 0; i < n; i++) dst[i] = sd_f16_to_f32(((const uint16_t *)src)[i]);
        break;
    case SD_DTYPE_BF16:
        for (int64_t i = 0; i < n; i++) dst[i] = sd_bf16_to_f32(((const uint16_t *)src)[i]);
        break;
    case SD_DTYPE_Q8_0: dequant_q8_0(src, dst, n / SD_QK); break;
    case SD_DTYPE_Q4_0: dequant_q4_0(src, dst, n / SD_QK); break;
    case SD_DTYPE_Q4_1: dequant_q4_1(src, dst, n / SD_QK); break;
    case SD_DTYPE_Q5_0: dequant_q5_0(src, dst, n / SD_QK); break;
    case SD_DTYPE_Q5_1: dequant_q5_1(src, dst, n / SD_QK); break;
    case SD_DTYPE_IQ4_NL: sd_dequant_iq4_nl(src, dst, n / SD_QK); break;
    case SD_DTYPE_Q2_K: sd_dequant_q2_k(src, dst, n / SD_QK_K); break;
    case SD_DTYPE_Q3_K: sd_dequant_q3_k(src, dst, n / SD_QK_K); break;
    case SD_DTYPE_Q4_K: sd_dequant_q4_k(src, dst, n / SD_QK_K); break;
    case SD_DTYPE_Q5_K: sd_dequant_q5_k(src, dst, n / SD_QK_K); break;
    case SD_DTYPE_Q6_K: sd_dequant_q6_k(src, dst, n / SD_QK_K); break;
    case SD_DTYPE_IQ4_XS: sd_dequant_iq4_xs(src, dst, n / SD_QK_K); break;
    }
}

/* ---- quantize: GGML's quantize_row_*_ref ------------------------------------------------- */

static void quant_q8_0(const float *x, sd_block_q8_0 *b, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        const float *xb = x + i * SD_QK;
        float amax = 0.0f;
        for (int j = 0; j < SD_QK; j++) amax = fmaxf(amax, fabsf(xb[j]));
        float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        b[i].d = sd_f32_to_f16(d);
        for (int j = 0; j < SD_QK; j++) b[i].qs[j] = (int8_t)roundf(xb[j] * id);
    }
}

static uint8_t nibble(float v)
{
    int q = (int)(int8_t)v; /* truncation, as GGML's (int8_t) cast */
    return (uint8_t)(q > 15 ? 15 : q);
}

/* The element of a 32-block with the largest magnitude (the first one on ties), signed. */
static float max_by_magnitude(const float *xb)
{
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < SD_QK; j++) {
        if (amax < fabsf(xb[j])) {
            amax = fabsf(xb[j]);
            max = xb[j];
        }
    }
    return max;
}

static void quant_q4_0(const float *x, sd_block_q4_0 *b, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        const float *xb = x + i * SD_QK;
        float max = max_by_magnitude(xb);
        float d = max / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        b[i].d = sd_f32_to_f16(d);
        for (int j = 0; j < SD_QK / 2; j++) {
            uint8_t lo = nibble(xb[j] * id + 8.5f), hi = nibble(xb[j + SD_QK / 2] * id + 8.5f);
            b[i].qs[j] = (uint8_t)(lo | (hi << 4));
        }
    }
}

/* Smallest and largest element of a 32-block. */
static void min_max32(const float *xb, float *min, float *max)
{
    *min = INFINITY, *max = -INFINITY;
    for (int j = 0; j < SD_QK; j++) {
        if (xb[j] < *min) *min = xb[j];
        if (xb[j] > *max) *max = xb[j];
    }
}

static void quant_q4_1(const float *x, sd_block_q4_1 *b, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        const float *xb = x + i * SD_QK;
        float min, max;
        min_max32(xb, &min, &max);
        float d = (max - min) / 15.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        b[i].d = sd_f32_to_f16(d);
        b[i].m = sd_f32_to_f16(min);
        for (int j = 0; j < SD_QK / 2; j++) {
            uint8_t lo = nibble((xb[j] - min) * id + 0.5f);
            uint8_t hi = nibble((xb[j + SD_QK / 2] - min) * id + 0.5f);
            b[i].qs[j] = (uint8_t)(lo | (hi << 4));
        }
    }
}

/* Q5_0: as Q4_0 with 32 levels, d = max / -16, q = trunc(x / d + 16.5) clamped to 31. */
static void quant_q5_0(const float *x, sd_block_q5_0 *b, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        const float *xb = x + i * SD_QK;
        float max = max_by_magnitude(xb);
        float d = max / -16.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        b[i].d = sd_f32_to_f16(d);
        uint32_t qh = 0;
        for (int j = 0; j < SD_QK / 2; j++) {
            int lo = (int)(int8_t)(xb[j] * id + 16.5f), hi = (int)(int8_t)(xb[j + SD_QK / 2] * id + 16.5f);
            lo = lo > 31 ? 31 : lo;
            hi = hi > 31 ? 31 : hi;
            b[i].qs[j] = (uint8_t)((lo & 0xF) | ((hi & 0xF) << 4));
            qh |= (uint32_t)(lo >> 4) << j | (uint32_t)(hi >> 4) << (j + 16);
        }
        memcpy(b[i].qh, &qh, sizeof qh);
    }
}

/* Q5_1: as Q4_1 with 32 levels, d = (max - min) / 31, q = trunc((x - min) / d + 0.5). */
static void quant_q5_1(const float *x, sd_block_q5_1 *b, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        const float *xb = x + i * SD_QK;
        float min, max;
        min_max32(xb, &min, &max);
        float d = (max - min) / 31.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        b[i].d = sd_f32_to_f16(d);
        b[i].m = sd_f32_to_f16(min);
        uint32_t qh = 0;
        for (int j = 0; j < SD_QK / 2; j++) {
            int lo = (int)(uint8_t)((xb[j] - min) * id + 0.5f);
            int hi = (int)(uint8_t)((xb[j + SD_QK / 2] - min) * id + 0.5f);
            lo = lo > 31 ? 31 : lo;
            hi = hi > 31 ? 31 : hi;
            b[i].qs[j] = (uint8_t)((lo & 0xF) | ((hi & 0xF) << 4));
            qh |= (uint32_t)(lo >> 4) << j | (uint32_t)(hi >> 4) << (j + 16);
        }
        memcpy(b[i].qh, &qh, sizeof qh);
    }
}

void sd_quantize_row(sd_dtype_t type, const float *src, void *dst, int64_t n)
{
    switch (type) {
    case SD_DTYPE_F32:
        memcpy(dst, src, (size_t)n * sizeof(float));
        break;
    case SD_DTYPE_F16:
        for (int64_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = sd_f32_to_f16(src[i]);
        break;
    case SD_DTYPE_BF16:
        for (int64_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = sd_f32_to_bf16(src[i]);
        break;
    case SD_DTYPE_Q8_0: quant_q8_0(src, dst, n / SD_QK); break;
    case SD_DTYPE_Q4_0: quant_q4_0(src, dst, n / SD_QK); break;
    case SD_DTYPE_Q4_1: quant_q4_1(src, dst, n / SD_QK); break;
    case SD_DTYPE_Q5_0: quant_q5_0(src, dst, n / SD_QK); break;
    case SD_DTYPE_Q5_1: quant_q5_1(src, dst, n / SD_QK); break;
    case SD_DTYPE_IQ4_NL: sd_quant_iq4_nl(src, dst, n / SD_QK); break;
    case SD_DTYPE_Q2_K: sd_quant_q2_k(src, dst, n / SD_QK_K); break;
    case SD_DTYPE_Q3_K: sd_quant_q3_k(src, dst, n / SD_QK_K); break;
    case SD_DTYPE_Q4_K: sd_quant_q4_k(src, dst, n / SD_QK_K); break;
    case SD_DTYPE_Q5_K: sd_quant_q5_k(src, dst, n / SD_QK_K); break;
    case SD_DTYPE_Q6_K: sd_quant_q6_k(src, dst, n / SD_QK_K); break;
    case SD_DTYPE_IQ4_XS: sd_quant_iq4_xs(src, dst, n / SD_QK_K); break;
    }
}
