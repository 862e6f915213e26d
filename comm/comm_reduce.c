/* The rank-order reduction every CPU backend uses (intra, mpi), so they give the same
 * bits: each element is ((x0 + x1) + x2) + ... in f32, rounded once to the dtype. */
#include <string.h>

#include "comm/comm_impl.h"

#define REDUCE_BLOCK 512

static inline float f32_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline float f16_to_f32(uint16_t h)
{
    uint32_t w = (uint32_t)h << 16, sign = w & 0x80000000u, two_w = w + w;
    float normal = f32_from_bits((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
    float denormal = f32_from_bits((two_w >> 17) | (126u << 23)) - 0.5f;
    return f32_from_bits(sign | (two_w < (1u << 27) ? f32_bits(denormal) : f32_bits(normal)));
}

/* round to nearest even, NaN stays NaN, overflow to inf */
static inline uint16_t f32_to_f16(float f)
{
    float base = (__builtin_fabsf(f) * 0x1.0p+112f) * 0x1.0p-110f;
    uint32_t w = f32_bits(f), shl1_w = w + w, sign = w & 0x80000000u;
    uint32_t bias = shl1_w & 0xFF000000u;
    if (bias < 0x71000000u) bias = 0x71000000u;
    base = f32_from_bits((bias >> 1) + 0x07800000u) + base;
    uint32_t bits = f32_bits(base);
    uint32_t nonsign = ((bits >> 13) & 0x7C00u) + (bits & 0x0FFFu);
    return (uint16_t)((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

static inline float bf16_to_f32(uint16_t h) { return f32_from_bits((uint32_t)h << 16); }

static inline uint16_t f32_to_bf16(float f)
{
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* acc[m] = src[m] (first) or acc[m] += src[m], widened to f32 */
static void accumulate(float *acc, const void *src, size_t m, sd_comm_dtype_t dt, int first)
{
    if (dt == SD_COMM_F32) {
        const float *s = src;
        if (first)
            memcpy(acc, s, m * sizeof *s);
        else
            for (size_t i = 0; i < m; i++) acc[i] += s[i];
        return;
    }
    const uint16_t *s = src;
    for (size_t i = 0; i < m; i++) {
        float v = dt == SD_COMM_F16 ? f16_to_f32(s[i]) : bf16_to_f32(s[i]);
        acc[i] = first ? v : acc[i] + v;
    }
}

static void store(void *dst, const float *acc, size_t m, sd_comm_dtype_t dt)
{
    if (dt == SD_COMM_F32) {
        memcpy(dst, acc, m * sizeof *acc);
        return;
    }
    uint16_t *d = dst;
    for (size_t i = 0; i < m; i++) d[i] = dt == SD_COMM_F16 ? f32_to_f16(acc[i]) : f32_to_bf16(acc[i]);
}

/* dst may be one of the sources: each block is read completely before it is written. */
void sd_comm_reduce_rank_order(void *dst, uint8_t *const *src, int p, size_t n, sd_comm_dtype_t dt)
{
    size_t es = sd_comm_dtype_size(dt);
    float acc[REDUCE_BLOCK];
    for (size_t i = 0; i < n; i += REDUCE_BLOCK) {
        size_t m = n - i < REDUCE_BLOCK ? n - i : REDUCE_BLOCK;
        for (int q = 0; q < p; q++) accumulate(acc, src[q] + i * es, m, dt, q == 0);
        store((uint8_t *)dst + i * es, acc, m, dt);
    }
}

