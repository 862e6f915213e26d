/* A random weight matrix in any GGUF type, for kernel tests (links sd_kernels). */
#ifndef SPECDEC_TESTS_TEST_WEIGHT_H
#define SPECDEC_TESTS_TEST_WEIGHT_H

#include <stdint.h>

#include "kernels/backend.h"

typedef struct sd_test_weight {
    sd_weight_t w; /* host memory, owned */
    float *deq;    /* [rows, cols]: what w decodes to, owned */
} sd_test_weight_t;

/* Row r holds uniform values in [-0.5, 0.5) (seed + r) quantized to `type`. */
sd_test_weight_t sd_test_make_weight(sd_dtype_t type, int64_t rows, int64_t cols, uint32_t seed);
void sd_test_free_weight(sd_test_weight_t *t);
/* The CPU's Q4_0/Q4_1/Q8_0 matmuls quantize activations per block of 32 to int16 (step
 * max|x|/32767): the extra error of row r against x is at most sum |d*q_i| * max|x_block| /
 * 65534 (d*q_i = w_i - m for Q4_1). 0 for the other types (f32 activations). */
double sd_test_i16_bound(const sd_test_weight_t *tw, int64_t r, const float *x);

#endif
