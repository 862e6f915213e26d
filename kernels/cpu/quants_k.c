/* K-quant row codecs: Q4_K and Q6_K. Dequantization is GGML-exact; the quantizers are
 * simple min/max fits (not GGML's iterative search), enough for tests and tools. */
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

/* x[256] -> one block: per sub-block of 32, w = D*q - M with M >= 0 covering min(x, 0). */
static void quant_q4_k_block(const float *x, sd_block_q4_k *b)
{
    float scale[8], minv[8], max_scale = 0.0f, max_min = 0.0f;
    for (int j = 0; j < 8; j++) {
        float mn = 0.0f, mx = x[32 * j];
        for (int l = 0; l < 32; l++) {
            mn = fminf(mn, x[32 * j + l]);
            mx = fmaxf(mx, x[32 * j + l]);
        }
        scale[j] = (mx - mn) / 15.0f;
        minv[j] = -mn;
        max_scale = fmaxf(max_scale, scale[j]);
        max_min = fmaxf(max_min, minv[j]);
    }
    b->d = sd_f32_to_f16(max_scale / 63.0f);
    b->dmin = sd_f32_to_f16(max_min / 63.0f);
    float d = sd_f16_to_f32(b->d), dmin = sd_f16_to_f32(b->dmin);
    int ls[8], lm[8];
    for (int j = 0; j < 8; j++) {
        /* round the scale up so the sub-block's range still fits 0..15 */
        ls[j] = d > 0.0f ? clampi((int)ceilf(scale[j] / d), 0, 63) : 0;
        lm[j] = dmin > 0.0f ? clampi((int)roundf(minv[j] / dmin), 0, 63) : 0;
    }
    pack_q4_k_scales(ls, lm, b->scales);
    for (int c = 0; c < 4; c++) {
        uint8_t q[2][32];
        for (int s = 0; s < 2; s++) {
            int j = 2 * c + s;
            float dj = d * (float)ls[j], mj = dmin * (float)lm[j];
            float id = dj > 0.0f ? 1.0f / dj : 0.0f;
            for (int l = 0; l < 32; l++)
                q[s][l] = (uint8_t)clampi((int)roundf((x[32 * j + l] + mj) * id), 0, 15);
        }
        for (int l = 0; l < 32; l++) b->qs[32 * c + l] = (uint8_t)(q[0][l] | (q[1][l] << 4));
    }
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
