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
    SD_RNG_TREE_SIBLING = 4, /* a token tree's acceptance test of sibling j >= 1 at a position:
                                purpose SD_RNG_TREE_SIBLING + j - 1 (sibling 0: SD_RNG_ACCEPT) */
    SD_RNG_PURPOSE_COUNT
} sd_rng_purpose_t;
/* A sampled draft tree's draw i >= 1 at a position (draw 0: SD_RNG_DRAFT): purpose
 * SD_RNG_DRAFT_TREE + i - 1, past the siblings' purposes (i < 64 * 64). */
#define SD_RNG_DRAFT_TREE (SD_RNG_TREE_SIBLING + 64)

/* The uniform for (request seed, absolute position, purpose):
 * curand_init(seed, subsequence = position, offset = 4 * purpose) then curand_uniform.
 * Never depends on k, batching or timing. */
float sd_rng_uniform(uint64_t seed, uint64_t position, sd_rng_purpose_t purpose);

/* ---- header-inline core ------------------------------------------------------------
 * The same computation for code that cannot link sd_verify: the CUDA verify kernels and
 * their host emulation (verify/cuda/verify.cu) use it on the device and the host in place
 * of cuRAND's curand_init + curand_uniform; philox.c is built on it, so there is one
 * implementation. */

#if defined(__CUDACC__) || defined(SPECDEC_CUDA_SIM)
#define SD_PHILOX_HD __host__ __device__
#else
#define SD_PHILOX_HD
#endif

#define SD_PHILOX_M0 0xD2511F53u
#define SD_PHILOX_M1 0xCD9E8D57u
#define SD_PHILOX_W0 0x9E3779B9u
#define SD_PHILOX_W1 0xBB67AE85u
#define SD_CURAND_2POW32_INV 2.3283064e-10f /* == 0x1p-32f exactly */

SD_PHILOX_HD static inline void sd_philox_round_inline(uint32_t c[4], const uint32_t k[2])
{
    uint64_t p0 = (uint64_t)SD_PHILOX_M0 * c[0];
    uint64_t p1 = (uint64_t)SD_PHILOX_M1 * c[2];
    uint32_t r0 = (uint32_t)(p1 >> 32) ^ c[1] ^ k[0];
    uint32_t r2 = (uint32_t)(p0 >> 32) ^ c[3] ^ k[1];
    c[0] = r0;
    c[1] = (uint32_t)p1;
    c[2] = r2;
    c[3] = (uint32_t)p0;
}

/* One Philox4x32-10 block: counter, key -> 4 words. */
SD_PHILOX_HD static inline void sd_philox_block_inline(const uint32_t ctr[4], const uint32_t key[2],
                                          uint32_t out[4])
{
    uint32_t c[4] = {ctr[0], ctr[1], ctr[2], ctr[3]};
    uint32_t k[2] = {key[0], key[1]};
    for (int r = 0; r < 10; r++) {
        if (r > 0) {
            k[0] += SD_PHILOX_W0;
            k[1] += SD_PHILOX_W1;
        }
        sd_philox_round_inline(c, k);
    }
    for (int i = 0; i < 4; i++)
        out[i] = c[i];
}

/* Philox_State_Incr(state, n): add n to the 128-bit counter. Kept exactly as cuRAND
 * writes it, including its carry test on ctr[1] (which drops the carry in the
 * unreachable-in-practice case n >= 2^64 - 2^32 with a low-word wrap). */
SD_PHILOX_HD static inline void sd_philox_ctr_add_inline(uint32_t c[4], uint64_t n)
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
SD_PHILOX_HD static inline void sd_philox_ctr_add_hi_inline(uint32_t c[4], uint64_t n)
{
    uint32_t nlo = (uint32_t)n;
    uint32_t nhi = (uint32_t)(n >> 32);
    c[2] += nlo;
    if (c[2] < nlo)
        nhi++;
    c[3] += nhi;
}

/* _curand_uniform: the product is exact (a power of two), so a fused multiply-add
 * (nvcc's default) rounds identically to this multiply then add. */
SD_PHILOX_HD static inline float sd_philox_u32_to_uniform(uint32_t x)
{
    return (float)x * SD_CURAND_2POW32_INV + (SD_CURAND_2POW32_INV / 2.0f);
}

/* sd_rng_uniform, inline. */
SD_PHILOX_HD static inline float sd_rng_uniform_inline(uint64_t seed, uint64_t position,
                                          sd_rng_purpose_t purpose)
{
    /* curand_init(seed, position, 4 * purpose): counter {purpose, 0, position}, word 0. */
    uint32_t ctr[4] = {0, 0, 0, 0};
    uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    uint32_t out[4];
    sd_philox_ctr_add_hi_inline(ctr, position);
    sd_philox_ctr_add_inline(ctr, (uint64_t)purpose);
    sd_philox_block_inline(ctr, key, out);
    return sd_philox_u32_to_uniform(out[0]);
}

#endif
