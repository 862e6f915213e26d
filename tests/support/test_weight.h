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
/* The extra error of the CPU's integer matmuls, which quantize activations: Q4_0/Q4_1/Q8_0
 * per block of 32 to int16 (step max|x|/32767): at most sum |d*q_i| * max|x_block| / 65534
 * (d*q_i = w_i - m for Q4_1); the int8 path (sd_dot_q8_supported: K-quants, IQ4, Q5_0,
 * Q5_1) per block of the type's size to int8 (step max|x|/127): at most sum |w_i| *
 * max|x_block| / 254. Row r against x; 0 for the f32-path types. */
double sd_test_act_bound(const sd_test_weight_t *tw, int64_t r, const float *x);

#endif
