/* Tensor type table (GGML ids), row sizes and IEEE half / bfloat16 conversion. */
#include <string.h>

#if defined(__F16C__)
#include <immintrin.h>
#endif

#include "core/check.h"
#include "kernels/cpu/quants.h"
#include "kernels/dtype.h"

/* Every id GGML has defined (gguf-py 0.19.0 GGMLQuantizationType); gaps are ids it retired. */
static const char *const dtype_names[] = {
    [0] = "F32",      [1] = "F16",      [2] = "Q4_0",    [3] = "Q4_1",    [6] = "Q5_0",
    [7] = "Q5_1",     [8] = "Q8_0",     [9] = "Q8_1",    [10] = "Q2_K",   [11] = "Q3_K",
    [12] = "Q4_K",    [13] = "Q5_K",    [14] = "Q6_K",   [15] = "Q8_K",   [16] = "IQ2_XXS",
    [17] = "IQ2_XS",  [18] = "IQ3_XXS", [19] = "IQ1_S",  [20] = "IQ4_NL", [21] = "IQ3_S",
    [22] = "IQ2_S",   [23] = "IQ4_XS",  [24] = "I8",     [25] = "I16",    [26] = "I32",
    [27] = "I64",     [28] = "F64",     [29] = "IQ1_M",  [30] = "BF16",   [34] = "TQ1_0",
    [35] = "TQ2_0",   [39] = "MXFP4",   [40] = "NVFP4",  [41] = "Q1_0",
};

const char *sd_dtype_name(uint32_t type_id)
{
    if (type_id >= sizeof dtype_names / sizeof dtype_names[0]) return NULL;
    return dtype_names[type_id];
}

int sd_dtype_supported(uint32_t type_id)
{
    switch (type_id) {
    case SD_DTYPE_F32:
    case SD_DTYPE_F16:
    case SD_DTYPE_Q4_0:
    case SD_DTYPE_Q4_1:
    case SD_DTYPE_Q5_0:
    case SD_DTYPE_Q5_1:
    case SD_DTYPE_Q8_0:
    case SD_DTYPE_Q2_K:
    case SD_DTYPE_Q3_K:
    case SD_DTYPE_Q4_K:
    case SD_DTYPE_Q5_K:
    case SD_DTYPE_Q6_K:
    case SD_DTYPE_IQ4_NL:
    case SD_DTYPE_IQ4_XS:
    case SD_DTYPE_BF16:
        return 1;
    default:
        return 0;
    }
}

int64_t sd_dtype_block_elems(sd_dtype_t type)
{
    switch (type) {
    case SD_DTYPE_F32:
    case SD_DTYPE_F16:
    case SD_DTYPE_BF16:
        return 1;
    case SD_DTYPE_Q4_0:
    case SD_DTYPE_Q4_1:
    case SD_DTYPE_Q5_0:
    case SD_DTYPE_Q5_1:
    case SD_DTYPE_Q8_0:
    case SD_DTYPE_IQ4_NL:
        return SD_QK;
    case SD_DTYPE_Q2_K:
    case SD_DTYPE_Q3_K:
    case SD_DTYPE_Q4_K:
    case SD_DTYPE_Q5_K:
    case SD_DTYPE_Q6_K:
    case SD_DTYPE_IQ4_XS:
        return SD_QK_K;
    }
    return 0;
}

size_t sd_dtype_block_bytes(sd_dtype_t type)
{
    switch (type) {
    case SD_DTYPE_F32: return sizeof(float);
    case SD_DTYPE_F16:
    case SD_DTYPE_BF16: return sizeof(uint16_t);
    case SD_DTYPE_Q4_0: return sizeof(sd_block_q4_0);
    case SD_DTYPE_Q4_1: return sizeof(sd_block_q4_1);
    case SD_DTYPE_Q5_0: return sizeof(sd_block_q5_0);
    case SD_DTYPE_Q5_1: return sizeof(sd_block_q5_1);
    case SD_DTYPE_Q8_0: return sizeof(sd_block_q8_0);
    case SD_DTYPE_IQ4_NL: return sizeof(sd_block_iq4_nl);
    case SD_DTYPE_Q2_K: return sizeof(sd_block_q2_k);
    case SD_DTYPE_Q3_K: return sizeof(sd_block_q3_k);
    case SD_DTYPE_Q4_K: return sizeof(sd_block_q4_k);
    case SD_DTYPE_Q5_K: return sizeof(sd_block_q5_k);
    case SD_DTYPE_Q6_K: return sizeof(sd_block_q6_k);
    case SD_DTYPE_IQ4_XS: return sizeof(sd_block_iq4_xs);
    }
    return 0;
}

sd_status_t sd_dtype_row_bytes(sd_dtype_t type, int64_t n, size_t *out)
{
    if (!sd_dtype_supported((uint32_t)type)) {
        const char *name = sd_dtype_name((uint32_t)type);
        return sd_set_error(SD_ERR_UNSUPPORTED_TYPE, "tensor type %s (id %u) is not supported",
                            name ? name : "unknown", (unsigned)type);
    }
    int64_t blk = sd_dtype_block_elems(type);
    if (n < 0 || n % blk != 0)
        return sd_set_error(SD_ERR_BAD_MODEL,
                            "row of %lld elements is not a multiple of the %s block size %lld",
                            (long long)n, sd_dtype_name((uint32_t)type), (long long)blk);
    *out = (size_t)(n / blk) * sd_dtype_block_bytes(type);
    return SD_OK;
}

/* ---- IEEE half ------------------------------------------------------------ */

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

#if defined(__F16C__)

float sd_f16_to_f32(uint16_t h) { return _cvtsh_ss(h); }

uint16_t sd_f32_to_f16(float f) { return (uint16_t)_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT); }

#else

float sd_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    if (exp == 0x1f && mant) return bits_f32(sign | 0x7fc00000u | (mant << 13)); /* quiet nan */
    if (exp == 0x1f) return bits_f32(sign | 0x7f800000u);                         /* inf */
    if (exp != 0) return bits_f32(sign | ((exp + 112) << 23) | (mant << 13));
    /* zero or subnormal: mant * 2^-24, exact in f32 */
    float v = (float)mant * bits_f32(0x33800000u);
    return bits_f32(sign | f32_bits(v));
}

uint16_t sd_f32_to_f16(float f)
{
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00 | ((a >> 13) & 0x3ff)); /* quiet nan */
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00);             /* rounds to inf */
    if (a < 0x38800000u) {
        /* result is subnormal (or zero): scale by 2^24 and round to nearest even */
        if (a < 0x33000000u) return sign; /* below half the smallest subnormal */
        uint32_t mant = (a & 0x7fffff) | 0x800000;
        int shift = 126 - (int)(a >> 23); /* 14 .. 24 */
        uint32_t q = mant >> shift, rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1))) q++;
        return (uint16_t)(sign | q);
    }
    uint32_t r = a - 0x38000000u; /* rebias exponent 127 -> 15 */
    uint32_t q = r >> 13, rem = r & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (q & 1))) q++;
    return (uint16_t)(sign | q);
}

#endif

/* ---- bfloat16 ------------------------------------------------------------- */

float sd_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

uint16_t sd_f32_to_bf16(float f)
{
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet nan */
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}
