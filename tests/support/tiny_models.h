/* Tiny synthetic models for the lossless-sampling tests (engine tests only: linked with
 * sd_test_tiny): a random-weight GGUF of SD_TINY_VOCAB tokens written and loaded, and the
 * exact target-only joint distribution of the first three tokens it generates. */
#ifndef SPECDEC_TESTS_TINY_MODELS_H
#define SPECDEC_TESTS_TINY_MODELS_H

#include <stdint.h>

#include "specdec/specdec.h"

#define SD_TINY_VOCAB 16
#define SD_TINY_CELLS (SD_TINY_VOCAB * SD_TINY_VOCAB * SD_TINY_VOCAB)

/* A 1-layer model of SD_TINY_VOCAB tokens, weights from seed and scale, n_ctx 64. */
sd_model_t *sd_tiny_model(uint64_t seed, float scale, int n_threads);
/* joint[SD_TINY_CELLS]: P(first three tokens = a, b, d) at cell (a * V + b) * V + d, for
 * target-only sampling with c's sampler settings after prompt[n] (n <= 8). */
void sd_tiny_joint(sd_model_t *m, const sd_gen_config_t *c, const int32_t *prompt, int n,
                   double *joint);

#endif
