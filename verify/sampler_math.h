/* The arithmetic the CPU sampler and verifier (verify/sampler.c, verify/speculative.c) and
 * the CUDA kernels (verify/cuda/verify.cu) share, so both give the same bits; header-inline,
 * so sd_cuda links nothing from sd_verify. Only correctly rounded basic operations, exact
 * sums, selections by rank: docs/design-notes.md, "Samplers". */
#ifndef SPECDEC_VERIFY_SAMPLER_MATH_H
#define SPECDEC_VERIFY_SAMPLER_MATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif
#include "core/check.h"
#include "verify/sampler.h"
#ifdef __cplusplus
}
#endif

#if defined(__CUDACC__) || defined(SPECDEC_CUDA_SIM)
#define SD_HOST_DEVICE __host__ __device__
#else
#define SD_HOST_DEVICE
#endif

/* ---- IEEE operations, rounded to nearest, never fused ------------------------------- */

SD_HOST_DEVICE static inline float sd_math_fsub(float a, float b)
{
#ifdef __CUDA_ARCH__
    return __fsub_rn(a, b);
#else
    return a - b;
#endif
}

SD_HOST_DEVICE static inline float sd_math_fdiv(float a, float b)
{
#ifdef __CUDA_ARCH__
    return __fdiv_rn(a, b);
#else
    return a / b;
#endif
}

SD_HOST_DEVICE static inline double sd_math_dmul(double a, double b)
{
#ifdef __CUDA_ARCH__
    return __dmul_rn(a, b);
#else
    return a * b;
#endif
}

SD_HOST_DEVICE static inline double sd_math_ddiv(double a, double b)
{
#ifdef __CUDA_ARCH__
    return __ddiv_rn(a, b);
#else
    return a / b;
#endif
}

SD_HOST_DEVICE static inline double sd_math_dfma(double a, double b, double c)
{
#ifdef __CUDA_ARCH__
    return __fma_rn(a, b, c);
#else
    return fma(a, b, c);
#endif
}

SD_HOST_DEVICE static inline float sd_math_d2f(double x)
{
#ifdef __CUDA_ARCH__
    return __double2float_rn(x);
#else
    return (float)x;
#endif
}

SD_HOST_DEVICE static inline double sd_math_u64_to_double(uint64_t x)
{
#ifdef __CUDA_ARCH__
    return __ull2double_rn(x);
#else
    return (double)x;
#endif
}

SD_HOST_DEVICE static inline uint32_t sd_float_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

/* 2^e as a double, e in [-1022, 1023]. */
SD_HOST_DEVICE static inline double sd_pow2(int e)
{
    uint64_t bits = (uint64_t)(e + 1023) << 52;
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

/* ---- rank: the total order every selection uses --------------------------------------- */

/* NaN ranks as -inf. */
SD_HOST_DEVICE static inline float sd_rank_key(float logit)
{
    return logit != logit ? -INFINITY : logit;
}

/* The rank key as an unsigned integer with the same order: ord(a) < ord(b) iff
 * key(a) < key(b), and ord(a) == ord(b) iff key(a) == key(b) (-0 and +0 share one ord). */
SD_HOST_DEVICE static inline uint32_t sd_rank_ord(float logit)
{
    float key = sd_rank_key(logit);
    uint32_t b = key == 0.0f ? 0u : sd_float_bits(key);
    uint32_t negative = 0u - (b >> 31); /* all ones for a negative key: flip every bit */
    return b ^ (negative | 0x80000000u);
}

/* Token i of n as one integer, unique, larger = ranked higher: ord, then lower index. */
SD_HOST_DEVICE static inline uint64_t sd_rank_of(float logit, int i, int n)
{
    return ((uint64_t)sd_rank_ord(logit) << 32) | (uint32_t)(n - 1 - i);
}

/* ---- softmax weight ---------------------------------------------------------------- */

/* e^d rounded to float for d <= 0, within 1 ulp of the correctly rounded value; 0 below
 * 2^-150 and for -inf and NaN. The algorithm: docs/design-notes.md, "Samplers". */
SD_HOST_DEVICE static inline float sd_exp_nonpos(float d)
{
    if (!(d > -104.0f)) /* e^-104 < 2^-150: rounds to 0; also -inf and NaN */
        return 0.0f;
    double x = (double)d;
    double k = rint(sd_math_dmul(x, 0x1.71547652b82fep+1)); /* 2 log2(e); k in [-301, 0] */
    double r = sd_math_dfma(-k, 0x1.62e42feep-2, x);         /* ln2/2, high part */
    r = sd_math_dfma(-k, 0x1.a39ef35793c76p-34, r);           /* ln2/2, low part */
    /* sum_{i<=8} r^i / i!, Estrin's scheme (short dependency chains) */
    double r2 = sd_math_dmul(r, r), r4 = sd_math_dmul(r2, r2);
    double a01 = sd_math_dfma(r, 1.0, 1.0);
    double a23 = sd_math_dfma(r, 0x1.5555555555555p-3, 0.5);                 /* 1/3!, 1/2! */
    double a45 = sd_math_dfma(r, 0x1.1111111111111p-7, 0x1.5555555555555p-5); /* 1/5!, 1/4! */
    double a67 = sd_math_dfma(r, 0x1.a01a01a01a01ap-13, 0x1.6c16c16c16c17p-10); /* 1/7!, 1/6! */
    double a03 = sd_math_dfma(a23, r2, a01);
    double a47 = sd_math_dfma(a67, r2, a45);
    double a48 = sd_math_dfma(0x1.a01a01a01a01ap-16, r4, a47); /* 1/8! */
    double p = sd_math_dfma(a48, r4, a03);
    uint32_t biased = (uint32_t)((int)k + 512); /* k + 512 = 2 (m + 256) + odd */
    double odd = (double)(biased & 1u);
    int m = (int)(biased >> 1) - 256; /* floor(k / 2), in [-151, 0] */
    /* 1 + odd (sqrt2 - 1): exactly 1 or the double nearest sqrt(2), without a branch */
    double root = sd_math_dfma(odd, 0x1.a827999fcef34p-2, 1.0);
    return sd_math_d2f(sd_math_dmul(sd_math_dmul(p, root), sd_pow2(m)));
}

/* Softmax weight of a logit relative to the maximum rank key m (T > 0): exactly 1 for a
 * key equal to m, else e^((key - m) / T); 0 for -inf/NaN logits below a finite m, and for
 * finite logits when m = +inf. */
SD_HOST_DEVICE static inline float sd_softmax_weight(float logit, float m, float temperature)
{
    float key = sd_rank_key(logit);
    if (key == m)
        return 1.0f;
    float d = sd_math_fdiv(sd_math_fsub(key, m), temperature);
    return d > -INFINITY ? sd_exp_nonpos(d) : 0.0f;
}

/* min-p keeps a weight (relative to w_max = 1) when it is off or w >= min_p. */
SD_HOST_DEVICE static inline int sd_min_p_keeps(float min_p, float w)
{
    return !(min_p > 0.0f) || w >= min_p;
}

/* ---- exact sums ---------------------------------------------------------------------- */

/* A sum of floats held exactly, whatever the order: value = 2^-149 * sum_j limb[j] *
 * 2^(32 j) (every float is a multiple of 2^-149 below 2^128). Exact for up to 2^31 adds
 * and merges together; values not > 0 (0, negatives, NaN) add nothing, +inf adds FLT_MAX. */
#define SD_XSUM_LIMBS 9
typedef struct sd_xsum {
    uint64_t limb[SD_XSUM_LIMBS];
} sd_xsum_t;

SD_HOST_DEVICE static inline void sd_xsum_zero(sd_xsum_t *s)
{
    for (int j = 0; j < SD_XSUM_LIMBS; j++)
        s->limb[j] = 0;
}

SD_HOST_DEVICE static inline void sd_xsum_add(sd_xsum_t *s, float x)
{
    if (!(x > 0.0f))
        return;
    uint32_t bits = sd_float_bits(x);
    if (bits > 0x7f7fffffu) /* +inf */
        bits = 0x7f7fffffu;
    uint32_t e = bits >> 23, m = bits & 0x7fffffu;
    if (e != 0)
        m |= 0x800000u; /* normal: x = m * 2^(e - 150) */
    else
        e = 1; /* subnormal: x = m * 2^-149 */
    uint32_t shift = e - 1;                           /* x = m * 2^shift * 2^-149, shift <= 253 */
    uint64_t v = (uint64_t)m << (shift & 31u);        /* < 2^55 */
    uint32_t j = shift >> 5;                          /* <= 7 */
    s->limb[j] += v & 0xffffffffu;
    s->limb[j + 1] += v >> 32;
}

SD_HOST_DEVICE static inline void sd_xsum_merge(sd_xsum_t *s, const sd_xsum_t *t)
{
    for (int j = 0; j < SD_XSUM_LIMBS; j++)
        s->limb[j] += t->limb[j];
}

SD_HOST_DEVICE static inline int sd_clz32(uint32_t x) /* x != 0 */
{
    int n = 0;
    while (!(x & 0x80000000u)) {
        x <<= 1;
        n++;
    }
    return n;
}

/* The exact sum rounded once to the nearest double (ties to even): monotone in the sum. */
SD_HOST_DEVICE static inline double sd_xsum_value(const sd_xsum_t *s)
{
    uint32_t w[SD_XSUM_LIMBS + 1]; /* the sum in 32-bit words, carries propagated */
    uint64_t carry = 0;
    for (int j = 0; j < SD_XSUM_LIMBS; j++) {
        uint64_t t = s->limb[j] + carry; /* limb < 2^63, carry < 2^32 */
        w[j] = (uint32_t)t;
        carry = t >> 32;
    }
    w[SD_XSUM_LIMBS] = (uint32_t)carry;
    int h = SD_XSUM_LIMBS;
    while (h >= 0 && w[h] == 0)
        h--;
    if (h < 0)
        return 0.0;
    /* top: the 64 bits from the leading one down; sticky: whether any bit below is set */
    int lz = sd_clz32(w[h]);
    uint32_t w1 = h >= 1 ? w[h - 1] : 0, w2 = h >= 2 ? w[h - 2] : 0;
    uint64_t top = ((uint64_t)w[h] << (32 + lz)) | ((uint64_t)w1 << lz) | ((uint64_t)w2 >> (32 - lz));
    uint32_t sticky = (uint32_t)((uint64_t)w2 & (((uint64_t)1 << (32 - lz)) - 1));
    for (int j = 0; j < h - 2; j++)
        sticky |= w[j];
    /* 64 >= 53 + 2 bits, so folding the sticky bit into bit 0 rounds correctly */
    double d = sd_math_u64_to_double(top | (sticky != 0));
    /* top's bit 0 is bit 32h - 32 - lz of the integer sum; the sum is scaled by 2^-149 */
    return sd_math_dmul(d, sd_pow2(32 * h - 181 - lz)); /* exponent in [-212, 107] */
}

/* A kept weight divided by the kept mass, rounded to float. */
SD_HOST_DEVICE static inline float sd_normalised_prob(float w, double sum)
{
    return sd_math_d2f(sd_math_ddiv((double)w, sum));
}

/* ---- argument checks shared by the CPU and CUDA entry points (host only) --------------- */

/* sd_sampler_params_check. */
static inline sd_status_t sd_sampler_params_validate(const sd_sampler_params_t *p)
{
    if (p == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG, "sampler params are NULL");
    if (isnan(p->temperature) || p->temperature < 0.0f)
        return sd_set_error(SD_ERR_INVALID_ARG, "temperature %g must be >= 0 (0 = greedy)",
                            (double)p->temperature);
    if (p->top_k < 0)
        return sd_set_error(SD_ERR_INVALID_ARG, "top_k %d must be >= 0 (0 = off)", p->top_k);
    if (isnan(p->top_p) || p->top_p <= 0.0f || p->top_p > 1.0f)
        return sd_set_error(SD_ERR_INVALID_ARG, "top_p %g must be in (0, 1] (1 = off)",
                            (double)p->top_p);
    if (isnan(p->min_p) || p->min_p < 0.0f || p->min_p > 1.0f)
        return sd_set_error(SD_ERR_INVALID_ARG, "min_p %g must be in [0, 1] (0 = off)",
                            (double)p->min_p);
    return SD_OK;
}

/* sd_spec_verify's argument checks; `scratch_n_vocab` < 0 means no scratch was given. */
static inline sd_status_t sd_spec_validate_args(const sd_sampler_params_t *params,
                                                const int32_t *draft, int k,
                                                const float *p_logits, int n_vocab,
                                                int scratch_n_vocab, const void *out)
{
    sd_status_t st = sd_sampler_params_validate(params);
    if (st != SD_OK)
        return st;
    if (k < 0)
        return sd_set_error(SD_ERR_INVALID_ARG, "speculative verify: k %d must be >= 0", k);
    if ((draft == NULL && k > 0) || p_logits == NULL || scratch_n_vocab < 0 || out == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG,
                            "speculative verify: draft, p_logits, scratch and out must be non-NULL");
    if (n_vocab <= 0 || n_vocab > scratch_n_vocab)
        return sd_set_error(SD_ERR_INVALID_ARG,
                            "speculative verify: n_vocab %d must be in [1, %d] (the scratch size)",
                            n_vocab, scratch_n_vocab);
    for (int i = 0; i < k; i++)
        if (draft[i] < 0 || draft[i] >= n_vocab)
            return sd_set_error(SD_ERR_INVALID_ARG,
                                "speculative verify: draft token %d at index %d is outside [0, %d)",
                                draft[i], i, n_vocab);
    return SD_OK;
}

/* A draft token must have been drawable from q: 0 < q_i(d_i) (finite). */
static inline sd_status_t sd_spec_validate_q(int32_t token, int index, float q_of_token)
{
    if (!(q_of_token > 0.0f) || isinf(q_of_token))
        return sd_set_error(SD_ERR_INVALID_ARG,
                            "speculative verify: draft token %d at index %d has q = %g; "
                            "a token drawn from q has 0 < q <= 1",
                            token, index, (double)q_of_token);
    return SD_OK;
}

#endif
