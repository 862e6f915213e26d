/* Shared by the GPU comm tests (tests/cuda/test_comm_nccl.c, test_comm_cuda_intra.c):
 * the skip check, a rank's nccl communicator, and the allreduce check against the C
 * reference.
 *
 * Ranks are forked processes (tests/support/ranks.h). CUDA must not be initialised in a
 * process that forks ranks afterwards, so even the device count comes from a child. One
 * GPU holds every rank: each rank gets its own NCCL_HOSTID, so NCCL takes the ranks for
 * separate hosts (no "Duplicate GPU detected") and connects them over loopback sockets,
 * and the CUDA IPC buffers of processes sharing a device map fine. */
#ifndef SPECDEC_TESTS_CUDA_GPU_RANKS_H
#define SPECDEC_TESTS_CUDA_GPU_RANKS_H

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "comm/comm_impl.h"
#include "comm/cuda/intra_cuda.h"
#include "kernels/cuda.h"
#include "support/ranks.h"

/* What a rank reports to the parent: a failure message, or one hash per result. */
typedef struct gpu_result {
    int failed;
    char msg[400];
    double seconds;
    uint64_t hash[64];
} gpu_result_t;

/* Record a failure in the rank's result and return 1 (the rank's exit code). */
#define GPU_FAIL(res, ...)                                                                       \
    do {                                                                                         \
        snprintf((res)->msg, sizeof(res)->msg, __VA_ARGS__);                                     \
        (res)->failed = 1;                                                                       \
        return 1;                                                                                \
    } while (0)

/* Which GPU comm the ranks open (set by a test before it forks them): 0 nccl, 1 the
 * cuda_ipc backend (a CPU intra world + the IPC kernels), which the CUDA host mode runs. */
static int gpu_via_cuda_ipc;

static inline int gpu_count_rank(int rank, int size, const char *job, void *arg, void *out,
                                 size_t cap)
{
    int n = 0;
    if (gpu_via_cuda_ipc && sd_cuda_device_count(&n) != SD_OK) n = 0;
    *(int *)out = gpu_via_cuda_ipc ? n : sd_comm_nccl_device_count();
    return 0;
}

/* Skip the running test unless its backend is built and a CUDA device (or the host mode's)
 * is present. */
static inline void gpu_skip_unless_available(void)
{
    if (gpu_via_cuda_ipc && !sd_comm_cuda_ipc_built())
        cr_skip_test("built without the CUDA comm kernels (no nvcc with NCCL, no host mode)");
    if (!gpu_via_cuda_ipc && !sd_comm_nccl_built()) cr_skip_test("built without NCCL (no toolkit, or the CUDA host mode, which does not emulate it)");
    sd_test_ranks_t r;
    int ok = sd_test_run_ranks(1, gpu_count_rank, NULL, sizeof(int), 60, &r);
    int n = ok ? *(int *)sd_test_rank_out(&r, 0) : 0;
    sd_test_ranks_free(&r);
    if (n <= 0) cr_skip_test("no CUDA device on this machine");
}

/* This rank's nccl communicator, bootstrapped over the CPU intra backend. */
static inline sd_status_t gpu_open(int rank, int size, const char *job, sd_comm_t **out)
{
    char host[80];
    snprintf(host, sizeof host, "specdec-test-%s-%d", job, rank);
    setenv("NCCL_HOSTID", host, 1);
    setenv("NCCL_SOCKET_IFNAME", "lo", 0);
    setenv("NCCL_IB_DISABLE", "1", 0);
    sd_comm_t *boot = NULL;
    *out = NULL;
    SD_CHECK(sd_comm_intra_new(rank, size, job, &boot));
    sd_status_t st = sd_comm_nccl_new(boot, out);
    sd_comm_free(boot);
    return st;
}

static inline uint64_t gpu_mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* buf[n] of rank `rank`'s input: finite values, random signs, exponents over 2^-5..2^5,
 * full mantissas (written as bits: no conversion code), so sums round and the order of
 * the additions shows in the result bits. */
static inline void gpu_fill(void *buf, size_t n, sd_comm_dtype_t dt, int rank, uint64_t salt)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t h = gpu_mix(salt ^ ((uint64_t)rank << 48) ^ i);
        uint32_t sign = (uint32_t)(h >> 63), e = (uint32_t)(h >> 40) % 11;
        if (dt == SD_COMM_F32) {
            uint32_t bits = sign << 31 | (122 + e) << 23 | (uint32_t)(h & 0x7fffff);
            memcpy((uint32_t *)buf + i, &bits, 4);
        } else if (dt == SD_COMM_F16) {
            ((uint16_t *)buf)[i] = (uint16_t)(sign << 15 | (10 + e) << 10 | (h & 0x3ff));
        } else {
            ((uint16_t *)buf)[i] = (uint16_t)(sign << 15 | (122 + e) << 7 | (h & 0x7f));
        }
    }
}

static inline uint64_t gpu_hash(const void *p, size_t bytes)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < bytes; i++) h = (h ^ ((const unsigned char *)p)[i]) * 1099511628211ull;
    return h;
}

/* One allreduce of n elements on c, checked bit for bit against the C reference
 * (sd_comm_reduce_rank_order, the CPU backends' reduction) over every rank's input,
 * regenerated here. *hash gets the result's hash, for the parent to compare across
 * ranks. Returns 0, or 1 with res->msg set. */
static inline int gpu_check_allreduce(sd_comm_t *c, sd_comm_dtype_t dt, size_t n, uint64_t salt,
                                      uint64_t *hash, gpu_result_t *res)
{
    size_t es = sd_comm_dtype_size(dt), bytes = n * es;
    uint8_t *in = malloc((size_t)c->size * bytes), *got = malloc(bytes), *want = malloc(bytes);
    uint8_t *src[16];
    if (in == NULL || got == NULL || want == NULL || c->size > 16)
        GPU_FAIL(res, "no memory for %d x %zu bytes", c->size, bytes);
    for (int r = 0; r < c->size; r++) {
        src[r] = in + (size_t)r * bytes;
        gpu_fill(src[r], n, dt, r, salt);
    }
    memcpy(got, src[c->rank], bytes);
    sd_status_t st = sd_comm_allreduce_sum(c, got, n, dt);
    if (st != SD_OK)
        GPU_FAIL(res, "allreduce %s n=%zu: %s: %s", sd_comm_dtype_name(dt), n,
                 sd_status_string(st), sd_last_error());
    sd_comm_reduce_rank_order(want, src, c->size, n, dt);
    for (size_t i = 0; i < n; i++)
        if (memcmp(got + i * es, want + i * es, es) != 0)
            GPU_FAIL(res, "allreduce %s n=%zu: element %zu differs from the rank-order sum",
                     sd_comm_dtype_name(dt), n, i);
    *hash = gpu_hash(got, bytes);
    free(in);
    free(got);
    free(want);
    return 0;
}

/* Every rank exited 0 and reported the same hashes[0..k). */
static inline void gpu_assert_ranks_agree(const sd_test_ranks_t *r, int k)
{
    for (int q = 0; q < r->size; q++) {
        const gpu_result_t *g = sd_test_rank_out(r, q);
        cr_assert(!g->failed, "rank %d: %s", q, g->msg);
        cr_assert_eq(r->codes[q], 0, "rank %d exit code %d", q, r->codes[q]);
    }
    const gpu_result_t *g0 = sd_test_rank_out(r, 0);
    for (int q = 1; q < r->size; q++)
        for (int i = 0; i < k; i++)
            cr_assert_eq(((const gpu_result_t *)sd_test_rank_out(r, q))->hash[i], g0->hash[i],
                         "result %d differs between rank 0 and rank %d", i, q);
}

/* Skip without a GPU; run fn on `size` ranks (killed after timeout_s); check every rank
 * succeeded and reported the same first k hashes. Returns rank 0's result. */
static inline gpu_result_t gpu_run_ranks(int size, sd_test_rank_fn fn, int k, int timeout_s)
{
    gpu_skip_unless_available();
    sd_test_ranks_t r;
    sd_test_run_ranks(size, fn, NULL, sizeof(gpu_result_t), timeout_s, &r);
    gpu_assert_ranks_agree(&r, k);
    gpu_result_t g0 = *(const gpu_result_t *)sd_test_rank_out(&r, 0);
    sd_test_ranks_free(&r);
    return g0;
}

/* A stalled peer, rank side: rank 1 sleeps past the timeout instead of joining the next
 * allreduce; rank 0's allreduce must return SD_ERR_COMM_TIMEOUT with a message naming
 * `must_name` (kept in res->msg, the time in res->seconds), and freeing the failed
 * communicator must not hang either. */
static inline int gpu_stall_rank1(sd_comm_t *c, int timeout_ms, const char *must_name,
                                  gpu_result_t *res)
{
    if (c->rank == 1) {
        sleep((unsigned)(timeout_ms / 1000 + 6));
        return 0;
    }
    static float v[4096];
    double t0 = sd_now();
    sd_status_t st = sd_comm_allreduce_sum(c, v, 4096, SD_COMM_F32);
    res->seconds = sd_now() - t0;
    snprintf(res->msg, sizeof res->msg, "%s", sd_last_error());
    if (st != SD_ERR_COMM_TIMEOUT)
        GPU_FAIL(res, "allreduce with a stalled peer returned %s: %s", sd_status_string(st),
                 sd_last_error());
    if (strstr(res->msg, must_name) == NULL)
        GPU_FAIL(res, "the timeout does not say '%s': %s", must_name, sd_last_error());
    sd_comm_free(c);
    return 0;
}

/* A stalled peer, parent side: SD_ERR_COMM_TIMEOUT came within [timeout - 0.5 s,
 * timeout + 2 s]. */
static inline void gpu_assert_timed_out(const gpu_result_t *g0, int timeout_ms)
{
    cr_assert(g0->seconds >= timeout_ms * 1e-3 - 0.5 && g0->seconds <= timeout_ms * 1e-3 + 2.0,
              "timed out after %.2f s (timeout %d ms): %s", g0->seconds, timeout_ms, g0->msg);
    cr_log_info("stalled peer: SD_ERR_COMM_TIMEOUT after %.2f s: %s", g0->seconds, g0->msg);
}

#endif
