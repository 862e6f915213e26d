/* Philox4x32-10 counter-based RNG, bit-identical to cuRAND's Philox4_32_10:
 * sd_philox_init == curand_init(seed, subsequence, offset, &state) and
 * sd_philox_uniform == curand_uniform(&state) (a float in (0, 1]). */
#ifndef SPECDEC_VERIFY_PHILOX_H
#define SPECDEC_VERIFY_PHILOX_H

#include <stdint.h>

typedef struct sd_philox {
    uint32_t ctr[4];
    uint32_t key[2];
    uint32_t out[4];
    int idx; /* next word of out[] to return (4 = exhausted) */
} sd_philox_t;

void sd_philox_init(sd_philox_t *s, uint64_t seed, uint64_t subsequence, uint64_t offset);
uint32_t sd_philox_next(sd_philox_t *s);   /* == curand() */
float sd_philox_uniform(sd_philox_t *s);   /* == curand_uniform() */
/* One Philox4x32-10 block: counter, key -> 4 words (the specification's function). */
void sd_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* What a uniform is for; part of its key so purposes never share numbers. */
typedef enum sd_rng_purpose {
    SD_RNG_SAMPLE = 0,   /* target-only sampling of the token at a position */
    SD_RNG_ACCEPT = 1,   /* speculative acceptance test of the draft token at a position */
    SD_RNG_RESIDUAL = 2, /* residual / bonus sample after a rejection or full acceptance */
    SD_RNG_DRAFT = 3,    /* the drafter's own sampling at a position */
    SD_RNG_PURPOSE_COUNT
} sd_rng_purpose_t;

/* The uniform for (request seed, absolute position, purpose):
 * curand_init(seed, subsequence = position, offset = 4 * purpose) then curand_uniform.
 * Never depends on k, batching or timing. */
float sd_rng_uniform(uint64_t seed, uint64_t position, sd_rng_purpose_t purpose);

#endif
