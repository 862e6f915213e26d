// The CUDA host mode's __half: storage and the conversions specdec uses, rounded as CUDA does.
#ifndef SPECDEC_CORE_CUDASIM_CUDA_FP16_H
#define SPECDEC_CORE_CUDASIM_CUDA_FP16_H

#include "core/cudasim/sim.h"

struct __half {
    unsigned short __x;
};

static inline __half __ushort_as_half(unsigned short x) { return __half{x}; }
static inline unsigned short __half_as_ushort(__half h) { return h.__x; }

// Exact.
static inline float __half2float(__half h)
{
    uint32_t sign = (uint32_t)(h.__x & 0x8000u) << 16, exp = (h.__x >> 10) & 0x1fu, mant = h.__x & 0x3ffu;
    if (exp == 0x1f) return __uint_as_float(sign | 0x7f800000u | (mant << 13)); // inf, nan (payload kept)
    if (exp != 0) return __uint_as_float(sign | ((exp + 112) << 23) | (mant << 13));
    float v = (float)mant * 0x1p-24f; // subnormal, exact
    return sign ? -v : v;
}

// Round to nearest even, overflow to inf, NaN to the canonical 0x7fff (as CUDA); the
// float arithmetic does the rounding (the algorithm of comm/comm_reduce.c's f32_to_f16).
static inline __half __float2half_rn(float f)
{
    uint32_t w = __float_as_uint(f), shl1_w = w + w, sign = w & 0x80000000u;
    if (shl1_w > 0xff000000u) return __half{0x7fffu};
    float base = (fabsf(f) * 0x1.0p+112f) * 0x1.0p-110f;
    uint32_t bias = shl1_w & 0xff000000u;
    if (bias < 0x71000000u) bias = 0x71000000u;
    base = __uint_as_float((bias >> 1) + 0x07800000u) + base;
    uint32_t bits = __float_as_uint(base);
    return __half{(unsigned short)((sign >> 16) | (((bits >> 13) & 0x7c00u) + (bits & 0x0fffu)))};
}

#endif
