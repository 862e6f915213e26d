/* sd_philox against real cuRAND: the host generator (curandCreateGeneratorHost, no GPU
 * needed) for CURAND_RNG_PSEUDO_PHILOX4_32_10 must produce bit-identical uint32 and
 * uniform float output.
 *
 * How the host generator orders its output (found empirically with cuRAND 10 / CUDA 13
 * by searching which (subsequence, offset) produced each output word, then confirmed
 * over 10^6 outputs): it emulates 65536 device threads, thread t running
 * curand_init(seed, t, 0) and drawing curand4() blocks. Output word i is
 *     t = (i / 4) % 65536,  round = i / (4 * 65536),  word = i % 4
 *     == curand_init(seed, subsequence = t, offset = 4 * round + word), then curand().
 * So each run of 4 consecutive words is one Philox block; consecutive blocks step through
 * subsequences, and only after 65536 blocks does the counter's low word advance.
 * curandSetGeneratorOffset(g, o) makes word i the word o + i of that same layout, and
 * successive curandGenerate calls continue it (even from a count not divisible by 4).
 * Orderings PSEUDO_BEST, PSEUDO_DEFAULT and PSEUDO_LEGACY give this same layout on the
 * host generator; PSEUDO_SEEDED and PSEUDO_DYNAMIC are rejected (CURAND_STATUS_TYPE_ERROR). */
#include <criterion/criterion.h>
#include <curand.h>
#include <stdlib.h>

#include "verify/philox.h"

#define HOST_THREADS 65536ull

/* The device-API (subsequence, offset) that cuRAND's host generator uses for word i. */
static void host_word_position(uint64_t i, uint64_t *subsequence, uint64_t *offset)
{
    *subsequence = (i / 4) % HOST_THREADS;
    *offset = 4 * (i / (4 * HOST_THREADS)) + i % 4;
}

static curandGenerator_t make_generator(uint64_t seed, uint64_t offset)
{
    curandGenerator_t g;
    curandStatus_t st = curandCreateGeneratorHost(&g, CURAND_RNG_PSEUDO_PHILOX4_32_10);
    if (st != CURAND_STATUS_SUCCESS)
        cr_skip_test("curandCreateGeneratorHost(PHILOX4_32_10) failed with status %d", (int)st);
    cr_assert_eq(curandSetPseudoRandomGeneratorSeed(g, seed), CURAND_STATUS_SUCCESS);
    cr_assert_eq(curandSetGeneratorOffset(g, offset), CURAND_STATUS_SUCCESS);
    return g;
}

/* Words at indices [first, first + n) and a spread of later ones: n consecutive words
 * cross block and subsequence boundaries; the whole run crosses the 65536-block round. */
static void check_u32(uint64_t seed, uint64_t goff, size_t n)
{
    curandGenerator_t g = make_generator(seed, goff);
    uint32_t *buf = malloc(n * sizeof *buf);
    cr_assert_not_null(buf);
    cr_assert_eq(curandGenerate(g, buf, n), CURAND_STATUS_SUCCESS);
    for (size_t i = 0; i < n; i++) {
        uint64_t sub, off;
        host_word_position(goff + i, &sub, &off);
        sd_philox_t s;
        sd_philox_init(&s, seed, sub, off);
        uint32_t want = sd_philox_next(&s);
        cr_assert_eq(buf[i], want, "seed %llu offset %llu word %zu: cuRAND 0x%08x, sd 0x%08x",
                     (unsigned long long)seed, (unsigned long long)goff, i, buf[i], want);
    }
    free(buf);
    curandDestroyGenerator(g);
}

static void check_uniform(uint64_t seed, uint64_t goff, size_t n)
{
    curandGenerator_t g = make_generator(seed, goff);
    float *buf = malloc(n * sizeof *buf);
    cr_assert_not_null(buf);
    cr_assert_eq(curandGenerateUniform(g, buf, n), CURAND_STATUS_SUCCESS);
    for (size_t i = 0; i < n; i++) {
        uint64_t sub, off;
        host_word_position(goff + i, &sub, &off);
        sd_philox_t s;
        sd_philox_init(&s, seed, sub, off);
        float want = sd_philox_uniform(&s);
        cr_assert(buf[i] == want, "seed %llu offset %llu uniform %zu: cuRAND %a, sd %a",
                  (unsigned long long)seed, (unsigned long long)goff, i, buf[i], want);
    }
    free(buf);
    curandDestroyGenerator(g);
}

/* 300000 words span 1.14 rounds of the 65536 emulated threads. */
#define N_WORDS 300000

Test(verify_philox_curand, u32_seed_1234, .timeout = 120) { check_u32(1234, 0, N_WORDS); }
Test(verify_philox_curand, u32_seed_64bit_offset, .timeout = 120)
{
    check_u32(0xfeedfacecafebeefull, 1000003, N_WORDS);
}
Test(verify_philox_curand, u32_huge_offset, .timeout = 60)
{
    /* an offset past 2^32 blocks: the counter's second word is in play */
    check_u32(7, (1ull << 50) + 3, 20000);
}
Test(verify_philox_curand, uniform_seed_1234, .timeout = 120) { check_uniform(1234, 0, N_WORDS); }
Test(verify_philox_curand, uniform_seed_0_offset, .timeout = 120)
{
    check_uniform(0, 262147, N_WORDS);
}

Test(verify_philox_curand, successive_calls_continue_the_sequence, .timeout = 60)
{
    curandGenerator_t g = make_generator(42, 0);
    uint32_t a[37], b[64];
    cr_assert_eq(curandGenerate(g, a, 37), CURAND_STATUS_SUCCESS);
    cr_assert_eq(curandGenerate(g, b, 64), CURAND_STATUS_SUCCESS);
    for (uint64_t i = 0; i < 64; i++) {
        uint64_t sub, off;
        host_word_position(37 + i, &sub, &off);
        sd_philox_t s;
        sd_philox_init(&s, 42, sub, off);
        cr_assert_eq(b[i], sd_philox_next(&s), "second call word %llu", (unsigned long long)i);
    }
    curandDestroyGenerator(g);
}

Test(verify_philox_curand, orderings_share_the_layout, .timeout = 60)
{
    const curandOrdering_t orders[] = {CURAND_ORDERING_PSEUDO_BEST, CURAND_ORDERING_PSEUDO_DEFAULT,
                                       CURAND_ORDERING_PSEUDO_LEGACY};
    for (size_t k = 0; k < 3; k++) {
        curandGenerator_t g = make_generator(9, 0);
        cr_assert_eq(curandSetGeneratorOrdering(g, orders[k]), CURAND_STATUS_SUCCESS);
        uint32_t buf[16];
        cr_assert_eq(curandGenerate(g, buf, 16), CURAND_STATUS_SUCCESS);
        for (uint64_t i = 0; i < 16; i++) {
            sd_philox_t s;
            sd_philox_init(&s, 9, i / 4, i % 4);
            cr_assert_eq(buf[i], sd_philox_next(&s), "ordering %d word %llu", (int)orders[k],
                         (unsigned long long)i);
        }
        curandDestroyGenerator(g);
    }
}

Test(verify_philox_curand, rng_uniform_is_a_curand_word, .timeout = 60)
{
    /* sd_rng_uniform(seed, position, purpose) is curand_init(seed, position, 4 * purpose):
     * the host generator's word 4 * position + 4 * 65536 * purpose (for position < 65536). */
    const uint64_t seed = 31337;
    const size_t n = 4 * HOST_THREADS * SD_RNG_PURPOSE_COUNT;
    curandGenerator_t g = make_generator(seed, 0);
    float *buf = malloc(n * sizeof *buf);
    cr_assert_not_null(buf);
    cr_assert_eq(curandGenerateUniform(g, buf, n), CURAND_STATUS_SUCCESS);
    for (uint64_t pos = 0; pos < HOST_THREADS; pos += 97)
        for (int p = 0; p < SD_RNG_PURPOSE_COUNT; p++) {
            float want = buf[4 * pos + 4 * HOST_THREADS * (uint64_t)p];
            cr_assert(sd_rng_uniform(seed, pos, (sd_rng_purpose_t)p) == want,
                      "position %llu purpose %d", (unsigned long long)pos, p);
        }
    free(buf);
    curandDestroyGenerator(g);
}
