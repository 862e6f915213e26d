/* Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC11) with
 * cuRAND's curandStatePhilox4_32_10_t semantics, transcribed from curand_kernel.h and
 * curand_philox4x32_x.h (CUDA 13): the same counter increments, carries and word order.
 * The block function and counter arithmetic are the header-inline core of philox.h. */
#include "verify/philox.h"

void sd_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4])
{
    sd_philox_block_inline(ctr, key, out);
}

/* Philox_State_Incr(state): add 1 to the 128-bit counter. */
static void ctr_inc(uint32_t c[4])
{
    for (int i = 0; i < 4; i++)
        if (++c[i])
            return;
}

void sd_philox_init(sd_philox_t *s, uint64_t seed, uint64_t subsequence, uint64_t offset)
{
    s->key[0] = (uint32_t)seed;
    s->key[1] = (uint32_t)(seed >> 32);
    for (int i = 0; i < 4; i++)
        s->ctr[i] = 0;
    sd_philox_ctr_add_hi_inline(s->ctr, subsequence); /* skipahead_sequence */
    sd_philox_ctr_add_inline(s->ctr, offset / 4);     /* skipahead: whole blocks, then the word */
    s->idx = (int)(offset % 4);
    sd_philox4x32_10(s->ctr, s->key, s->out);
}

uint32_t sd_philox_next(sd_philox_t *s)
{
    if (s->idx >= 4) {
        ctr_inc(s->ctr);
        sd_philox4x32_10(s->ctr, s->key, s->out);
        s->idx = 0;
    }
    return s->out[s->idx++];
}

float sd_philox_uniform(sd_philox_t *s) { return sd_philox_u32_to_uniform(sd_philox_next(s)); }

float sd_rng_uniform(uint64_t seed, uint64_t position, sd_rng_purpose_t purpose)
{
    return sd_rng_uniform_inline(seed, position, purpose);
}
