/* Philox4x32-10: the specification's known answers and cuRAND's state semantics
 * (curand_init / curand / curand_uniform). Bit-identity with real cuRAND output is
 * checked in test_verify_philox_curand.c. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <math.h>
#include <string.h>

#include "verify/philox.h"

/* Known-answer vectors for philox4x32 with 10 rounds from Random123's
 * examples/kat_vectors (D. E. Shaw Research), lines "philox4x32 10 ctr[4] key[2] out[4]". */
typedef struct kat {
    uint32_t ctr[4];
    uint32_t key[2];
    uint32_t out[4];
} kat_t;

static kat_t kats[] = {
    {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
    {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
     {0xffffffff, 0xffffffff},
     {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
    {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
     {0xa4093822, 0x299f31d0},
     {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
};

ParameterizedTestParameters(verify_philox, random123_kat)
{
    return cr_make_param_array(kat_t, kats, sizeof kats / sizeof kats[0]);
}

ParameterizedTest(kat_t *k, verify_philox, random123_kat, .timeout = 10)
{
    uint32_t out[4];
    sd_philox4x32_10(k->ctr, k->key, out);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(out[i], k->out[i], "word %d: got 0x%08x, want 0x%08x", i, out[i], k->out[i]);
}

/* The block at counter {lo, 0, sub lo, sub hi}, key = seed: what curand_init(seed, sub, 0)
 * returns in its first four curand() calls when lo = 0. */
static void block(uint64_t seed, uint64_t sub, uint32_t lo, uint32_t out[4])
{
    uint32_t ctr[4] = {lo, 0, (uint32_t)sub, (uint32_t)(sub >> 32)};
    uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    sd_philox4x32_10(ctr, key, out);
}

Test(verify_philox, words_come_in_counter_order, .timeout = 10)
{
    const uint64_t seed = 0x0123456789abcdefull;
    sd_philox_t s;
    sd_philox_init(&s, seed, 0, 0);
    for (uint32_t lo = 0; lo < 3; lo++) {
        uint32_t want[4];
        block(seed, 0, lo, want);
        for (int w = 0; w < 4; w++)
            cr_assert_eq(sd_philox_next(&s), want[w], "block %u word %d", lo, w);
    }
}

Test(verify_philox, offset_equals_that_many_next_calls, .timeout = 10)
{
    const uint64_t seeds[] = {0, 42, 0xfeedfacecafebeefull};
    const uint64_t subs[] = {0, 1, 7, 0x100000003ull};
    for (size_t a = 0; a < 3; a++)
        for (size_t b = 0; b < 4; b++)
            for (uint64_t off = 0; off < 37; off++) {
                sd_philox_t ref, s;
                sd_philox_init(&ref, seeds[a], subs[b], 0);
                for (uint64_t i = 0; i < off; i++)
                    sd_philox_next(&ref);
                sd_philox_init(&s, seeds[a], subs[b], off);
                for (int i = 0; i < 9; i++)
                    cr_assert_eq(sd_philox_next(&s), sd_philox_next(&ref),
                                 "seed %zu sub %zu offset %lu draw %d", a, b, (unsigned long)off, i);
            }
}

Test(verify_philox, subsequence_is_the_high_counter_half, .timeout = 10)
{
    /* curand_init(seed, sub, 0): counter {0, 0, sub lo, sub hi}; a subsequence is 2^66
     * words long, so it equals an offset of 4 * 2^64 * sub. */
    const uint64_t subs[] = {1, 2, 0xffffffffull, 0x100000000ull, 0xdeadbeef12345678ull};
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) {
        uint32_t want[4];
        block(99, subs[i], 0, want);
        sd_philox_t s;
        sd_philox_init(&s, 99, subs[i], 0);
        for (int w = 0; w < 4; w++)
            cr_assert_eq(sd_philox_next(&s), want[w], "sub 0x%llx word %d",
                         (unsigned long long)subs[i], w);
    }
    sd_philox_t a, b;
    sd_philox_init(&a, 99, 0, 0);
    sd_philox_init(&b, 99, 1, 0);
    cr_assert_neq(sd_philox_next(&a), sd_philox_next(&b));
}

Test(verify_philox, offset_carries_across_counter_words, .timeout = 10)
{
    /* offset 4 * 2^32 + 5: counter {1, 1, sub}, word 1 (the low word wraps into the next). */
    sd_philox_t s;
    sd_philox_init(&s, 5, 3, 4ull * 0x100000000ull + 5);
    uint32_t ctr[4] = {1, 1, 3, 0}, key[2] = {5, 0}, want[4];
    sd_philox4x32_10(ctr, key, want);
    cr_assert_eq(sd_philox_next(&s), want[1]);
    /* offset 4 * (2^62 - 1): counter {~0, 0x3fffffff}; the block after it carries into
     * word 1: {0, 0x40000000}. */
    sd_philox_init(&s, 5, 0, 0xfffffffffffffffcull);
    uint32_t c2[4] = {0xffffffffu, 0x3fffffffu, 0, 0};
    sd_philox4x32_10(c2, key, want);
    for (int w = 0; w < 4; w++)
        cr_assert_eq(sd_philox_next(&s), want[w], "word %d", w);
    uint32_t c3[4] = {0, 0x40000000u, 0, 0};
    sd_philox4x32_10(c3, key, want);
    cr_assert_eq(sd_philox_next(&s), want[0]);
}

Test(verify_philox, next_increments_the_full_128_bit_counter, .timeout = 10)
{
    sd_philox_t s;
    sd_philox_init(&s, 1, 0, 0);
    s.ctr[0] = s.ctr[1] = 0xffffffffu;
    s.idx = 4;
    uint32_t ctr[4] = {0, 0, 1, 0}, key[2] = {1, 0}, want[4];
    sd_philox4x32_10(ctr, key, want);
    cr_assert_eq(sd_philox_next(&s), want[0]);
    cr_assert_eq(s.ctr[2], 1u);
}

static float formula(uint32_t x)
{
    /* curand_uniform.h: x * CURAND_2POW32_INV + (CURAND_2POW32_INV / 2.0f), in float. */
    const float inv = 2.3283064e-10f;
    return (float)x * inv + inv / 2.0f;
}

Test(verify_philox, uniform_is_curands_formula_in_open_closed_unit, .timeout = 10)
{
    sd_philox_t a, b;
    sd_philox_init(&a, 7, 3, 1);
    sd_philox_init(&b, 7, 3, 1);
    for (int i = 0; i < 10000; i++) {
        uint32_t x = sd_philox_next(&a);
        float u = sd_philox_uniform(&b);
        cr_assert(u == formula(x), "draw %d: %a != %a", i, u, formula(x));
        cr_assert(u > 0.0f && u <= 1.0f, "draw %d: %a", i, u);
    }
}

Test(verify_philox, uniform_extremes, .timeout = 10)
{
    /* 2^-32 is exact in float, so the ends of the range are known. */
    cr_assert(formula(0) == 0x1p-33f);
    cr_assert(formula(1) == 0x1.8p-32f);
    cr_assert(formula(0xffffffffu) == 1.0f, "the largest word rounds to 1.0");
    cr_assert(formula(0x7fffffffu) == 0.5f);
}

Test(verify_philox, rng_uniform_is_init_then_uniform, .timeout = 10)
{
    const uint64_t seeds[] = {0, 1, 0x9e3779b97f4a7c15ull};
    const uint64_t positions[] = {0, 1, 17, 4095, 0x100000001ull};
    for (size_t a = 0; a < 3; a++)
        for (size_t b = 0; b < 5; b++)
            for (int p = 0; p < SD_RNG_PURPOSE_COUNT; p++) {
                sd_philox_t s;
                sd_philox_init(&s, seeds[a], positions[b], 4ull * (uint64_t)p);
                float want = sd_philox_uniform(&s);
                float got = sd_rng_uniform(seeds[a], positions[b], (sd_rng_purpose_t)p);
                cr_assert(got == want, "seed %zu position %zu purpose %d", a, b, p);
            }
}

Test(verify_philox, rng_uniform_distinct_and_stable, .timeout = 10)
{
    enum { NPOS = 256 };
    static float seen[NPOS * SD_RNG_PURPOSE_COUNT];
    int n = 0;
    for (uint64_t pos = 0; pos < NPOS; pos++)
        for (int p = 0; p < SD_RNG_PURPOSE_COUNT; p++) {
            float u = sd_rng_uniform(2024, pos, (sd_rng_purpose_t)p);
            cr_assert(u > 0.0f && u <= 1.0f);
            cr_assert(u == sd_rng_uniform(2024, pos, (sd_rng_purpose_t)p), "not stable");
            seen[n++] = u;
        }
    /* 1024 floats from a 2^24-level grid: a collision has probability ~3%; this seed has
     * none, and any collision here would mean keys overlap. */
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            cr_assert(seen[i] != seen[j], "uniform %d equals uniform %d", i, j);
    cr_assert(sd_rng_uniform(2024, 5, SD_RNG_SAMPLE) != sd_rng_uniform(2025, 5, SD_RNG_SAMPLE));
}

Test(verify_philox, rng_uniform_mean_and_spread, .timeout = 10)
{
    /* 40000 keyed uniforms: mean 1/2 (sd 0.0014) and variance 1/12. */
    double sum = 0, sq = 0;
    const int n = 40000;
    for (int i = 0; i < n; i++) {
        double u = sd_rng_uniform(77, (uint64_t)i / 4, (sd_rng_purpose_t)(i % 4));
        sum += u;
        sq += u * u;
    }
    double mean = sum / n, var = sq / n - mean * mean;
    cr_assert(fabs(mean - 0.5) < 0.01, "mean %f", mean);
    cr_assert(fabs(var - 1.0 / 12.0) < 0.005, "variance %f", var);
}
