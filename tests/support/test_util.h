/* Shared test helpers: temp paths and the default real model. */
#ifndef SPECDEC_TESTS_TEST_UTIL_H
#define SPECDEC_TESTS_TEST_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* A unique path under the test tmp dir ($SPECDEC_TEST_TMP or /tmp), e.g. for GGUF files. */
void sd_test_tmp_path(char *buf, size_t cap, const char *stem);
/* Path of the default real model (SmolLM2-135M-Instruct Q4_1): $SPECDEC_MODEL, else the
 * cache file that scripts/fetch-model.sh writes. NULL if it is not there. */
const char *sd_test_real_model(void);
/* x[n] = uniform in [-scale, scale) from a xorshift32 stream seeded by seed (the kernel
 * tests' inputs; the same seed gives the same numbers everywhere). */
void sd_test_fill_random(float *x, size_t n, uint32_t seed, float scale);
/* The paged KV layout (kernels/backend_impl.h) of slab[n_ctx, row]: a new [pool_blocks *
 * block_size, row] buffer whose row table[j / block_size] * block_size + j % block_size is
 * slab row j; every other row NaN (so reading one shows). */
float *sd_test_page_kv(const float *slab, int n_ctx, size_t row, const int32_t *table,
                       int block_size, int pool_blocks);
/* 1 in the sanitizer pass of scripts/test.sh (SPECDEC_TEST_SANITIZER_PASS=1): the longest
 * tests skip there (they ran in the release pass of the same script) to keep the default
 * suite inside its time budget. */
int sd_test_sanitizer_pass(void);
/* 1 when a CUDA test runs its long shapes: always on a GPU; in the CUDA host mode (kernels
 * on the CPU, thousands of times slower; host_mode = sd_cuda_host_mode()) only with
 * SPECDEC_TEST_LONG=1, which the `slow`-labelled runs of the host-mode build set. */
int sd_test_long_shapes(int host_mode);

#endif
