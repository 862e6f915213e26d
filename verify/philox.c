/* Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC11) with
 * cuRAND's curandStatePhilox4_32_10_t semantics, transcribed from curand_kernel.h and
 * curand_philox4x32_x.h (CUDA 13): the same counter increments, carries and word order. */
#include "verify/philox.h"

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u
#define CURAND_2POW32_INV 2.3283064e-10f /* == 0x1p-32f exactly */

static inline void philox_round(uint32_t c[4], const uint32_t k[2])
{
    uint64_t p0 = (uint64_t)PHILOX_M0 * c[0];
    uint64_t p1 = (uint64_t)PHILOX_M1 * c[2];
    uint32_t r0 = (uint32_t)(p1 >> 32) ^ c[1] ^ k[0];
    uint32_t r2 = (uint32_t)(p0 >> 32) ^ c[3] ^ k[1];
    c[0] = r0;
    c[1] = (uint32_t)p1;
    c[2] = r2;
    c[3] = (uint32_t)p0;
}

void sd_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4])
{
    uint32_t c[4] = {ctr[0], ctr[1], ctr[2], ctr[3]};
    uint32_t k[2] = {key[0], key[1]};
    for (int r = 0; r < 10; r++) {
        if (r > 0) {
            k[0] += PHILOX_W0;
            k[1] += PHILOX_W1;
        }
        philox_round(c, k);
    }
    for (int i = 0; i < 4; i++)
        out[i] = c[i];
}

/* Philox_State_Incr(state, n): add n to the 128-bit counter. Kept exactly as cuRAND
 * writes it, including its carry test on ctr[1] (which drops the carry in the
 * unreachable-in-practice case n >= 2^64 - 2^32 with a low-word wrap). */
static void ctr_add(uint32_t c[4], uint64_t n)
{
    uint32_t nlo = (uint32_t)n;
    uint32_t nhi = (uint32_t)(n >> 32);
    c[0] += nlo;
    if (c[0] < nlo)
        nhi++;
    c[1] += nhi;
    if (nhi <= c[1])
        return;
    if (++c[2])
        return;
    ++c[3];
}

/* Philox_State_Incr_hi: add n to the high 64 bits (the subsequence). */
static void ctr_add_hi(uint32_t c[4], uint64_t n)
{
    uint32_t nlo = (uint32_t)n;
    uint32_t nhi = (uint32_t)(n >> 32);
    c[2] += nlo;
    if (c[2] < nlo)
        nhi++;
    c[3] += nhi;
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
    ctr_add_hi(s->ctr, subsequence); /* skipahead_sequence */
    ctr_add(s->ctr, offset / 4);     /* skipahead: whole blocks, then the word */
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

/* _curand_uniform: the product is exact (a power of two), so a fused multiply-add
 * (nvcc's default) rounds identically to this multiply then add. */
static inline float u32_to_uniform(uint32_t x)
{
    return (float)x * CURAND_2POW32_INV + (CURAND_2POW32_INV / 2.0f);
}

float sd_philox_uniform(sd_philox_t *s) { return u32_to_uniform(sd_philox_next(s)); }

float sd_rng_uniform(uint64_t seed, uint64_t position, sd_rng_purpose_t purpose)
{
    /* curand_init(seed, position, 4 * purpose): counter {purpose, 0, position}, word 0. */
    uint32_t ctr[4] = {0, 0, 0, 0};
    uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    uint32_t out[4];
    ctr_add_hi(ctr, position);
    ctr_add(ctr, (uint64_t)purpose);
    sd_philox4x32_10(ctr, key, out);
    return u32_to_uniform(out[0]);
}
