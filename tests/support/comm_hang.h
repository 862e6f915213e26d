/* The allreduce hang regression shared by tests/test_comm_intra.c (2,000 steps) and
 * tests/slow/test_comm_hang_slow.c (100,000 steps): header-only, as it needs sd_comm,
 * which the support library does not link.
 *
 * Every step allreduces a message whose size comes from a PRNG fed with the previous
 * step's result (so sizes wander across the one-shot/two-shot threshold and the per-slot
 * chunking, in an order no one chose), with random per-rank jitter (usleep) so ranks
 * enter collectives in every interleaving, and checks the result against the rank-order
 * reference every step. A protocol race shows up as a wrong sum or a timeout. */
#ifndef SPECDEC_TESTS_COMM_HANG_H
#define SPECDEC_TESTS_COMM_HANG_H

#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "comm/comm.h"
#include "core/clock.h"
#include "core/hash.h"
#include "support/ranks.h"

#define SD_HANG_MAX_ELEMS ((size_t)1 << 18)

typedef struct sd_hang_args {
    int steps;
    uint64_t seed;
} sd_hang_args_t;

typedef struct sd_hang_out {
    int steps_done;
    uint64_t last_hash;
    double seconds;
    char msg[512];
} sd_hang_out_t;

static inline uint64_t sd_hang_mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static inline uint64_t sd_hang_fnv(const void *p, size_t n) { return sd_fnv1a64(SD_FNV64_INIT, p, n); }

/* rank's element i of step `salt`: a float in +-[2^-8, 2^8) with a random mantissa */
static inline float sd_hang_value(uint64_t salt, int rank, size_t i)
{
    uint64_t h = sd_hang_mix(salt * 1000003ull + (uint64_t)rank * 0x100000001b3ull + i);
    float m = (float)((h >> 40) & 0xffffff) / 16777216.0f * 2.0f - 1.0f;
    return ldexpf(m, (int)((h >> 8) & 15) - 8);
}

static int sd_hang_rank(int rank, int size, const char *job, void *arg, void *outp, size_t cap)
{
    const sd_hang_args_t *a = arg;
    sd_hang_out_t *out = outp;
    sd_comm_t *c = NULL;
    if (sd_comm_intra_new(rank, size, job, &c) != SD_OK) {
        snprintf(out->msg, sizeof out->msg, "intra_new: %s", sd_last_error());
        return 2;
    }
    float *buf = malloc(SD_HANG_MAX_ELEMS * sizeof *buf);
    float *ref = malloc(SD_HANG_MAX_ELEMS * sizeof *ref);
    uint64_t prev = a->seed, jitter = sd_hang_mix(a->seed + 7919u * (uint64_t)(rank + 1));
    double t0 = sd_now();
    int code = 0;
    for (int step = 0; step < a->steps && code == 0; step++) {
        uint64_t h = sd_hang_mix(prev ^ (uint64_t)step);
        size_t n = 1 + (size_t)(sd_hang_mix(h) % ((size_t)1 << (h % 19))); /* 1 .. 2^18 */
        uint64_t salt = h ^ 0x5bd1e995u;
        for (size_t i = 0; i < n; i++) {
            buf[i] = sd_hang_value(salt, rank, i);
            float acc = sd_hang_value(salt, 0, i);
            for (int q = 1; q < size; q++) acc += sd_hang_value(salt, q, i);
            ref[i] = acc;
        }
        jitter = sd_hang_mix(jitter);
        if (jitter % 8 == 0) usleep((useconds_t)((jitter >> 8) % 300));
        if (sd_comm_allreduce_sum(c, buf, n, SD_COMM_F32) != SD_OK) {
            snprintf(out->msg, sizeof out->msg, "step %d (%zu floats): %s", step, n, sd_last_error());
            code = 3;
        } else if (memcmp(buf, ref, n * sizeof *buf) != 0) {
            snprintf(out->msg, sizeof out->msg, "step %d (%zu floats): result differs from the "
                     "rank-order reference", step, n);
            code = 4;
        }
        prev = sd_hang_fnv(buf, n * sizeof *buf);
        out->steps_done = step + 1;
    }
    out->last_hash = prev;
    out->seconds = sd_now() - t0;
    free(buf);
    free(ref);
    sd_comm_free(c);
    return code;
}

/* Run it on `size` forked ranks (killed after harness_s) and assert: every rank ran every
 * step with the reference result, all ended on the same bits, nothing left in /dev/shm. */
static void sd_hang_check(int size, int steps, uint64_t seed, int harness_s)
{
    sd_hang_args_t a = {.steps = steps, .seed = seed};
    sd_test_ranks_t r;
    int ok = sd_test_run_ranks(size, sd_hang_rank, &a, sizeof(sd_hang_out_t), harness_s, &r);
    const sd_hang_out_t *o0 = sd_test_rank_out(&r, 0);
    for (int q = 0; q < size; q++) {
        const sd_hang_out_t *o = sd_test_rank_out(&r, q);
        cr_expect_eq(r.codes[q], 0, "rank %d exited %d after %d steps: %s", q, r.codes[q],
                     o->steps_done, o->msg);
        cr_expect_eq(o->steps_done, steps, "rank %d ran %d of %d steps", q, o->steps_done, steps);
        cr_expect_eq(o->last_hash, o0->last_hash, "rank %d ended with a different result", q);
    }
    cr_assert(ok);
    cr_assert(sd_test_no_shm_left(r.job), "/dev/shm/specdec-%s* left behind", r.job);
    cr_log_info("hang regression: %d ranks, %d steps in %.2f s (seed %llu)", size, steps,
                o0->seconds, (unsigned long long)seed);
    sd_test_ranks_free(&r);
}

#endif
