// The CUDA host mode's __nv_bfloat16: storage and the conversions specdec uses, rounded as
// CUDA does.
#ifndef SPECDEC_CORE_CUDASIM_CUDA_BF16_H
#define SPECDEC_CORE_CUDASIM_CUDA_BF16_H

#include "core/cudasim/sim.h"

struct __nv_bfloat16 {
    unsigned short __x;
};

static inline float __bfloat162float(__nv_bfloat16 h) { return __uint_as_float((uint32_t)h.__x << 16); }

// Round to nearest even; NaN becomes the canonical 0x7fff.
static inline __nv_bfloat16 __float2bfloat16_rn(float f)
{
    uint32_t x = __float_as_uint(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return __nv_bfloat16{0x7fffu};
    x += 0x7fffu + ((x >> 16) & 1u);
    return __nv_bfloat16{(unsigned short)(x >> 16)};
}

#endif
