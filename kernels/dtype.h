/* Tensor element types (ids are GGML's, as stored in GGUF) and per-type row codecs. */
#ifndef SPECDEC_KERNELS_DTYPE_H
#define SPECDEC_KERNELS_DTYPE_H

#include <stddef.h>
#include <stdint.h>

#include "specdec/specdec.h"

typedef enum sd_dtype {
    SD_DTYPE_F32 = 0,
    SD_DTYPE_F16 = 1,
    SD_DTYPE_Q4_0 = 2,
    SD_DTYPE_Q4_1 = 3,
    SD_DTYPE_Q5_0 = 6,
    SD_DTYPE_Q5_1 = 7,
    SD_DTYPE_Q8_0 = 8,
    SD_DTYPE_Q2_K = 10,
    SD_DTYPE_Q3_K = 11,
    SD_DTYPE_Q4_K = 12,
    SD_DTYPE_Q5_K = 13,
    SD_DTYPE_Q6_K = 14,
    SD_DTYPE_IQ4_NL = 20,
    SD_DTYPE_IQ4_XS = 23,
    SD_DTYPE_BF16 = 30,
} sd_dtype_t;

/* Name of any GGML type id ("Q5_K", "IQ2_XS", ...), or NULL for an id GGML never defined. */
const char *sd_dtype_name(uint32_t type_id);
/* 1 if this build computes with the type (the enum above). */
int sd_dtype_supported(uint32_t type_id);
/* Elements per block (1 for F32/F16/BF16, 32 for Q*_0/1 and IQ4_NL, 256 for K-quants and
 * IQ4_XS); 0 if unsupported. */
int64_t sd_dtype_block_elems(sd_dtype_t type);
/* Bytes per block; 0 if unsupported. */
size_t sd_dtype_block_bytes(sd_dtype_t type);
/* Bytes of a row of n elements. SD_ERR_BAD_MODEL if n is not a multiple of the block
 * size (message names type and n), SD_ERR_UNSUPPORTED_TYPE for an unsupported type. */
sd_status_t sd_dtype_row_bytes(sd_dtype_t type, int64_t n, size_t *out);

/* src row of n elements (n a multiple of the block size) -> n floats. */
void sd_dequantize_row(sd_dtype_t type, const void *src, float *dst, int64_t n);
/* n floats -> encoded row (round to nearest, as GGML's reference quantizers). */
void sd_quantize_row(sd_dtype_t type, const float *src, void *dst, int64_t n);
/* dot(dequantize(w_row), x) over n elements, dequantizing inside the loop.
 * Fixed summation order: the result depends only on w_row, x and n. */
float sd_vec_dot(sd_dtype_t type, const void *w_row, const float *x, int64_t n);

/* IEEE half / bfloat16 conversion (round to nearest even). */
float sd_f16_to_f32(uint16_t h);
uint16_t sd_f32_to_f16(float f);
float sd_bf16_to_f32(uint16_t h);
uint16_t sd_f32_to_bf16(float f);

#endif
