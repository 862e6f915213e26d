/* K-quant and IQ4 row codecs: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS. Dequantization
 * is GGML-exact (each product rounded before the subtraction, as GGML and gguf-py); the
 * quantizers are simple min/max fits (not GGML's iterative search), enough for tests and
 * tools. */
#include <math.h>
#include <string.h>

#include "kernels/cpu/quants.h"

void sd_dequant_q4_k(const sd_block_q4_k *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        float d = sd_f16_to_f32(b[i].d), dmin = sd_f16_to_f32(b[i].dmin);
        const uint8_t *q = b[i].qs;
        for (int c = 0; c < 4; c++, q += 32, y += 64) {
            uint8_t sc0, m0, sc1, m1;
            sd_q4_k_scale_min(2 * c, b[i].scales, &sc0, &m0);
            sd_q4_k_scale_min(2 * c + 1, b[i].scales, &sc1, &m1);
            float d0 = d * (float)sc0, dm0 = dmin * (float)m0;
            float d1 = d * (float)sc1, dm1 = dmin * (float)m1;
            for (int l = 0; l < 32; l++) y[l] = d0 * (float)(q[l] & 0xF) - dm0;
            for (int l = 0; l < 32; l++) y[32 + l] = d1 * (float)(q[l] >> 4) - dm1;
        }
    }
}

void sd_dequant_q5_k(const sd_block_q5_k *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        float d = sd_f16_to_f32(b[i].d), dmin = sd_f16_to_f32(b[i].dmin);
        for (int j = 0; j < 8; j++, y += 32) {
            uint8_t sc, m;
            sd_q4_k_scale_min(j, b[i].scales, &sc, &m);
            float dj = d * (float)sc, mj = dmin * (float)m;
            const uint8_t *q = b[i].qs + 32 * (j / 2);
            for (int l = 0; l < 32; l++) {
                int v = ((q[l] >> (4 * (j % 2))) & 0xF) | (((b[i].qh[l] >> j) & 1) << 4);
                y[l] = dj * (float)v - mj;
            }
        }
    }
}

void sd_dequant_q2_k(const sd_block_q2_k *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        float d = sd_f16_to_f32(b[i].d), dmin = sd_f16_to_f32(b[i].dmin);
        for (int e = 0; e < SD_QK_K; e++) {
            int h = e / 128, j = (e % 128) / 32, l = e % 32, sc = b[i].scales[e / 16];
            float dl = d * (float)(sc & 0xF), ml = dmin * (float)(sc >> 4);
            y[e] = dl * (float)((b[i].qs[32 * h + l] >> (2 * j)) & 3) - ml;
        }
        y += SD_QK_K;
    }
}

void sd_dequant_q3_k(const sd_block_q3_k *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        float d = sd_f16_to_f32(b[i].d);
        for (int e = 0; e < SD_QK_K; e++) {
            int h = e / 128, j = (e % 128) / 32, l = e % 32;
            int low = (b[i].qs[32 * h + l] >> (2 * j)) & 3, high = (b[i].hmask[l] >> (4 * h + j)) & 1;
            float dl = d * (float)(sd_q3_k_scale(e / 16, b[i].scales) - 32);
            y[e] = dl * (float)(low - (high ? 0 : 4));
        }
        y += SD_QK_K;
    }
}

const int8_t sd_iq4_values[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                  1,    13,   25,  38,  53,  69,  89,  113};

void sd_dequant_iq4_nl(const sd_block_iq4_nl *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, y += SD_QK) {
        float d = sd_f16_to_f32(b[i].d);
        for (int j = 0; j < SD_QK / 2; j++) {
            y[j] = d * (float)sd_iq4_values[b[i].qs[j] & 0xF];
            y[j + SD_QK / 2] = d * (float)sd_iq4_values[b[i].qs[j] >> 4];
        }
    }
}

void sd_dequant_iq4_xs(const sd_block_iq4_xs *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        float d = sd_f16_to_f32(b[i].d);
        for (int j = 0; j < 8; j++, y += 32) {
            float dl = d * (float)(sd_iq4_xs_scale(j, &b[i]) - 32);
            const uint8_t *q = b[i].qs + 16 * j;
            for (int l = 0; l < 16; l++) {
                y[l] = dl * (float)sd_iq4_values[q[l] & 0xF];
                y[l + 16] = dl * (float)sd_iq4_values[q[l] >> 4];
            }
        }
    }
}

void sd_dequant_q6_k(const sd_block_q6_k *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        float d = sd_f16_to_f32(b[i].d);
        const uint8_t *ql = b[i].ql, *qh = b[i].qh;
        const int8_t *sc = b[i].scales;
        for (int h = 0; h < 2; h++, ql += 64, qh += 32, sc += 8, y += 128) {
            for (int l = 0; l < 32; l++) {
                int is = l / 16;
                int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l] = d * (float)sc[is] * (float)q1;
                y[l + 32] = d * (float)sc[is + 2] * (float)q2;
                y[l + 64] = d * (float)sc[is + 4] * (float)q3;
                y[l + 96] = d * (float)sc[is + 6] * (float)q4;
            }
        }
    }
}

static int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* ---- Q4_K ---------------------------------------------------------------------------- */

static void pack_q4_k_scales(const int ls[8], const int lm[8], uint8_t s[SD_K_SCALE_SIZE])
{
    memset(s, 0, SD_K_SCALE_SIZE);
    for (int j = 0; j < 8; j++) {
        if (j < 4) {
            s[j] = (uint8_t)ls[j];
            s[j + 4] = (uint8_t)lm[j];
        } else {
            s[j + 4] = (uint8_t)((ls[j] & 0xF) | ((lm[j] & 0xF) << 4));
            s[j - 4] |= (uint8_t)((ls[j] >> 4) << 6);
            s[j] |= (uint8_t)((lm[j] >> 4) << 6);
        }
    }
}

/* Min-fit of x[256] in nsub sub-blocks: w = d * ls * q - dmin * lm, q in 0..qmax, M = dmin * lm
 * >= 0 covering min(x, 0), the scales ls and mins lm in 0..smax (the largest maps to smax).
 * Writes the f16 d and dmin, ls[nsub], lm[nsub] and q[256]. */
static void fit_min_k(const float *x, int nsub, int qmax, int smax, uint16_t *d16, uint16_t *dmin16,
                      int *ls, int *lm, uint8_t q[SD_QK_K])
{
    int len = SD_QK_K / nsub;
    float scale[16], minv[16], max_scale = 0.0f, max_min = 0.0f;
    for (int j = 0; j < nsub; j++) {
        float mn = 0.0f, mx = x[len * j];
        for (int l = 0; l < len; l++) {
            mn = fminf(mn, x[len * j + l]);
            mx = fmaxf(mx, x[len * j + l]);
        }
        scale[j] = (mx - mn) / (float)qmax;
        minv[j] = -mn;
        max_scale = fmaxf(max_scale, scale[j]);
        max_min = fmaxf(max_min, minv[j]);
    }
    *d16 = sd_f32_to_f16(max_scale / (float)smax);
    *dmin16 = sd_f32_to_f16(max_min / (float)smax);
    float d = sd_f16_to_f32(*d16), dmin = sd_f16_to_f32(*dmin16);
    for (int j = 0; j < nsub; j++) {
        /* round the scale up so the sub-block's range still fits 0..qmax */
        ls[j] = d > 0.0f ? clampi((int)ceilf(scale[j] / d), 0, smax) : 0;
        lm[j] = dmin > 0.0f ? clampi((int)roundf(minv[j] / dmin), 0, smax) : 0;
        float dj = d * (float)ls[j], mj = dmin * (float)lm[j];
        float id = dj > 0.0f ? 1.0f / dj : 0.0f;
        for (int l = 0; l < len; l++)
            q[len * j + l] = (uint8_t)clampi((int)roundf((x[len * j + l] + mj) * id), 0, qmax);
    }
}

/* x[256] -> one block: per sub-block of 32, w = D*q - M with M >= 0 covering min(x, 0). */
static void quant_q4_k_block(const float *x, sd_block_q4_k *b)
{
    int ls[8], lm[8];
    uint8_t q[SD_QK_K];
    fit_min_k(x, 8, 15, 63, &b->d, &b->dmin, ls, lm, q);
    pack_q4_k_scales(ls, lm, b->scales);
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) b->qs[32 * c + l] = (uint8_t)(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
}

void sd_quant_q4_k(const float *x, sd_block_q4_k *b, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) quant_q4_k_block(x + i * SD_QK_K, b + i);
}

/* ---- Q6_K ---------------------------------------------------------------------------- */

static void pack_q6_k(const uint8_t L[SD_QK_K], sd_block_q6_k *b)
{
    for (int h = 0; h < 2; h++) {
        const uint8_t *Lh = L + 128 * h;
        uint8_t *ql = b->ql + 64 * h, *qh = b->qh + 32 * h;
        for (int l = 0; l < 32; l++) {
            ql[l] = (uint8_t)((Lh[l] & 0xF) | ((Lh[l + 64] & 0xF) << 4));
            ql[l + 32] = (uint8_t)((Lh[l + 32] & 0xF) | ((Lh[l + 96] & 0xF) << 4));
            qh[l] = (uint8_t)((Lh[l] >> 4) | ((Lh[l + 32] >> 4) << 2) | ((Lh[l + 64] >> 4) << 4) |
                              ((Lh[l + 96] >> 4) << 6));
        }
    }
}

/* x[256] -> one block: per sub-block of 16, the value of largest magnitude maps to -32. */
static void quant_q6_k_block(const float *x, sd_block_q6_k *b)
{
    float scale[16], max_scale = 0.0f, amax_scale = 0.0f;
    for (int j = 0; j < 16; j++) {
        float amax = 0.0f, max = 0.0f;
        for (int l = 0; l < 16; l++) {
            if (fabsf(x[16 * j + l]) > amax) {
                amax = fabsf(x[16 * j + l]);
                max = x[16 * j + l];
            }
        }
        scale[j] = max / -32.0f;
        if (fabsf(scale[j]) > amax_scale) {
            amax_scale = fabsf(scale[j]);
            max_scale = scale[j];
        }
    }
    b->d = sd_f32_to_f16(max_scale / -128.0f);
    float d = sd_f16_to_f32(b->d);
    uint8_t L[SD_QK_K];
    for (int j = 0; j < 16; j++) {
        int sc = d != 0.0f ? clampi((int)roundf(scale[j] / d), -128, 127) : 0;
        b->scales[j] = (int8_t)sc;
        float dj = d * (float)sc, id = dj != 0.0f ? 1.0f / dj : 0.0f;
        for (int l = 0; l < 16; l++)
            L[16 * j + l] = (uint8_t)(clampi((int)roundf(x[16 * j + l] * id), -32, 31) + 32);
    }
    pack_q6_k(L, b);
}

void sd_quant_q6_k(const float *x, sd_block_q6_k *b, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) quant_q6_k_block(x + i * SD_QK_K, b + i);
}

/* ---- Q5_K ---------------------------------------------------------------------------- */

/* As Q4_K with 32 levels per sub-block. */
static void quant_q5_k_block(const float *x, sd_block_q5_k *b)
{
    int ls[8], lm[8];
    uint8_t q[SD_QK_K];
    fit_min_k(x, 8, 31, 63, &b->d, &b->dmin, ls, lm, q);
    pack_q4_k_scales(ls, lm, b->scales);
    memset(b->qh, 0, sizeof b->qh);
    memset(b->qs, 0, sizeof b->qs);
    for (int e = 0; e < SD_QK_K; e++) {
        int j = e / 32, l = e % 32;
        b->qs[32 * (j / 2) + l] |= (uint8_t)((q[e] & 0xF) << (4 * (j % 2)));
        b->qh[l] |= (uint8_t)((q[e] >> 4) << j);
    }
}

void sd_quant_q5_k(const float *x, sd_block_q5_k *b, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) quant_q5_k_block(x + i * SD_QK_K, b + i);
}

/* ---- Q2_K ---------------------------------------------------------------------------- */

/* x[256] -> one block: per 16, w = D*q - M (q 0..3), 4-bit scales and mins. */
static void quant_q2_k_block(const float *x, sd_block_q2_k *b)
{
    int ls[16], lm[16];
    uint8_t q[SD_QK_K];
    fit_min_k(x, 16, 3, 15, &b->d, &b->dmin, ls, lm, q);
    memset(b->qs, 0, sizeof b->qs);
    for (int j = 0; j < 16; j++) b->scales[j] = (uint8_t)(ls[j] | (lm[j] << 4));
    for (int e = 0; e < SD_QK_K; e++) b->qs[32 * (e / 128) + e % 32] |= (uint8_t)(q[e] << (2 * ((e % 128) / 32)));
}

void sd_quant_q2_k(const float *x, sd_block_q2_k *b, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) quant_q2_k_block(x + i * SD_QK_K, b + i);
}

/* ---- Q3_K ---------------------------------------------------------------------------- */

/* x[256] -> one block: per 16, the value of largest magnitude maps to -4 (q in -4..3); the
 * 6-bit scales are steps of d = (scale of largest magnitude) / -32. */
static void quant_q3_k_block(const float *x, sd_block_q3_k *b)
{
    float scale[16], max_scale = 0.0f, amax_scale = 0.0f;
    for (int j = 0; j < 16; j++) {
        float amax = 0.0f, max = 0.0f;
        for (int l = 0; l < 16; l++)
            if (fabsf(x[16 * j + l]) > amax) amax = fabsf(x[16 * j + l]), max = x[16 * j + l];
        scale[j] = max / -4.0f;
        if (fabsf(scale[j]) > amax_scale) amax_scale = fabsf(scale[j]), max_scale = scale[j];
    }
    b->d = sd_f32_to_f16(max_scale / -32.0f);
    float d = sd_f16_to_f32(b->d);
    memset(b->hmask, 0, sizeof b->hmask);
    memset(b->qs, 0, sizeof b->qs);
    memset(b->scales, 0, sizeof b->scales);
    for (int j = 0; j < 16; j++) {
        int ls = d != 0.0f ? clampi((int)roundf(scale[j] / d), -32, 31) : 0;
        int u = ls + 32; /* stored 6 bits, as sd_q3_k_scale reads them */
        b->scales[j % 8] |= (uint8_t)((u & 0xF) << (4 * (j / 8)));
        b->scales[8 + j % 4] |= (uint8_t)((u >> 4) << (2 * (j / 4)));
        float dj = d * (float)ls, id = dj != 0.0f ? 1.0f / dj : 0.0f;
        for (int l = 0; l < 16; l++) {
            int e = 16 * j + l, h = e / 128, k = (e % 128) / 32;
            int q = clampi((int)roundf(x[e] * id), -4, 3) + 4; /* 0..7: high bit set means q >= 0 */
            b->qs[32 * h + e % 32] |= (uint8_t)((q & 3) << (2 * k));
            b->hmask[e % 32] |= (uint8_t)((q >> 2) << (4 * h + k));
        }
    }
}

void sd_quant_q3_k(const float *x, sd_block_q3_k *b, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) quant_q3_k_block(x + i * SD_QK_K, b + i);
}

/* ---- IQ4_NL / IQ4_XS ------------------------------------------------------------------ */

/* Index of the IQ4 value nearest v (the lower one on ties). */
static int iq4_index(float v)
{
    int best = 0;
    for (int k = 1; k < 16; k++)
        if (fabsf(v - (float)sd_iq4_values[k]) < fabsf(v - (float)sd_iq4_values[best])) best = k;
    return best;
}

/* The 32 values of x as IQ4 indices for step d; returns the squared error. */
static float iq4_indices(const float *x, float d, uint8_t idx[32])
{
    float id = d != 0.0f ? 1.0f / d : 0.0f, err = 0.0f;
    for (int l = 0; l < 32; l++) {
        idx[l] = (uint8_t)iq4_index(x[l] * id);
        float e = x[l] - d * (float)sd_iq4_values[idx[l]];
        err += e * e;
    }
    return err;
}

static float max_by_magnitude32(const float *x)
{
    float amax = 0.0f, max = 0.0f;
    for (int l = 0; l < 32; l++)
        if (fabsf(x[l]) > amax) amax = fabsf(x[l]), max = x[l];
    return max;
}

/* Step of a group of 32 for the IQ4 values (asymmetric: -127 .. 113): the extreme value
 * mapped to -127 or to 113, whichever leaves the smaller squared error. */
static float iq4_step(const float *x)
{
    float max = max_by_magnitude32(x), d1 = max / -127.0f, d2 = max / 113.0f;
    uint8_t idx[32];
    return iq4_indices(x, d1, idx) <= iq4_indices(x, d2, idx) ? d1 : d2;
}

static void pack_iq4(const uint8_t idx[32], uint8_t qs[16])
{
    for (int l = 0; l < 16; l++) qs[l] = (uint8_t)(idx[l] | (idx[l + 16] << 4));
}

void sd_quant_iq4_nl(const float *x, sd_block_iq4_nl *b, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, x += SD_QK) {
        uint8_t idx[32];
        iq4_indices(x, iq4_step(x), idx);
        /* least-squares step for the chosen values */
        double sxv = 0.0, svv = 0.0;
        for (int l = 0; l < 32; l++) {
            sxv += (double)x[l] * sd_iq4_values[idx[l]];
            svv += (double)sd_iq4_values[idx[l]] * sd_iq4_values[idx[l]];
        }
        b[i].d = sd_f32_to_f16(svv > 0.0 ? (float)(sxv / svv) : 0.0f);
        pack_iq4(idx, b[i].qs);
    }
}

/* x[256] -> one block: per 32 a signed step (iq4_step), 6-bit scales in steps of
 * d = (step of largest magnitude) / -32. */
static void quant_iq4_xs_block(const float *x, sd_block_iq4_xs *b)
{
    float scale[8], max_scale = 0.0f, amax_scale = 0.0f;
    for (int j = 0; j < 8; j++) {
        scale[j] = iq4_step(x + 32 * j);
        if (fabsf(scale[j]) > amax_scale) amax_scale = fabsf(scale[j]), max_scale = scale[j];
    }
    b->d = sd_f32_to_f16(max_scale / -32.0f);
    float d = sd_f16_to_f32(b->d);
    b->scales_h = 0;
    memset(b->scales_l, 0, sizeof b->scales_l);
    for (int j = 0; j < 8; j++) {
        int ls = d != 0.0f ? clampi((int)roundf(scale[j] / d), -32, 31) : 0;
        int u = ls + 32;
        b->scales_l[j / 2] |= (uint8_t)((u & 0xF) << (4 * (j % 2)));
        b->scales_h |= (uint16_t)((u >> 4) << (2 * j));
        uint8_t idx[32];
        iq4_indices(x + 32 * j, d * (float)ls, idx);
        pack_iq4(idx, b->qs + 16 * j);
    }
}

void sd_quant_iq4_xs(const float *x, sd_block_iq4_xs *b, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) quant_iq4_xs_block(x + i * SD_QK_K, b + i);
}
