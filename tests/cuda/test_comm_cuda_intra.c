/* The CUDA IPC allreduce (comm/cuda/intra_cuda.h) behind an nccl communicator after
 * sd_comm_nccl_use_intra (suite comm_cuda_intra) and behind the cuda_ipc backend (suite
 * comm_cuda_ipc, which the CUDA host mode runs: regions shared between the rank processes),
 * ranks as processes sharing device 0 (tests/cuda/gpu_ranks.h). Skips cleanly without the
 * backend or a device. Results are checked bit for bit against the C reference
 * (sd_comm_reduce_rank_order) and across ranks; a stalled and a killed rank end the
 * survivors' allreduce with SD_ERR_COMM_TIMEOUT naming that rank, in bounded time. */
#include <signal.h>

#include "core/clock.h"
#include "gpu_ranks.h"

/* This rank's communicator with the IPC allreduce: nccl after sd_comm_nccl_use_intra, or
 * the cuda_ipc backend on device 0 (gpu_via_cuda_ipc). */
static sd_status_t open_ipc(int rank, int size, const char *job, sd_comm_t **c)
{
    if (gpu_via_cuda_ipc) {
        sd_comm_t *host = NULL;
        SD_CHECK(sd_comm_intra_new(rank, size, job, &host));
        return sd_comm_cuda_ipc_new(host, 0, c);
    }
    SD_CHECK(gpu_open(rank, size, job, c));
    return sd_comm_nccl_use_intra(*c);
}

/* Open this rank's communicator, or fail the rank. */
#define OPEN_INTRA_OR_FAIL(c)                                                                    \
    sd_comm_t *c = NULL;                                                                         \
    do {                                                                                         \
        sd_status_t st_ = open_ipc(rank, size, job, &c);                                         \
        if (st_ != SD_OK)                                                                        \
            GPU_FAIL(res, "open: %s: %s", sd_status_string(st_), sd_last_error());               \
    } while (0)

Test(comm_cuda_intra, only_an_nccl_communicator_takes_it, .timeout = 30)
{
    if (!sd_comm_nccl_built()) cr_skip_test("built without NCCL (no toolkit, or the CUDA host mode, which does not emulate it)");
    sd_comm_t *single = NULL;
    cr_assert_eq(sd_comm_single_new(&single), SD_OK, "%s", sd_last_error());
    cr_assert_eq(sd_comm_nccl_use_intra(single), SD_ERR_INVALID_ARG);
    cr_assert(strstr(sd_last_error(), "single") != NULL, "%s", sd_last_error());
    cr_assert_eq(sd_comm_nccl_use_intra(NULL), SD_ERR_INVALID_ARG);
    sd_comm_free(single);
}

/* Element counts for element size es: around the one-shot limit, an uneven two-shot
 * partition, and two slot-sized pieces. */
#define N_SIZES 6
static size_t size_at(int i, size_t es)
{
    size_t one = SD_IPC_ONE_SHOT_BYTES / es;
    const size_t counts[N_SIZES] = {1, 7, one, one + 1, 3 * one + 5, SD_IPC_SLOT_BYTES / es + 3};
    return counts[i];
}

static int sizes_rank(int rank, int size, const char *job, void *arg, void *out, size_t cap)
{
    gpu_result_t *res = out;
    OPEN_INTRA_OR_FAIL(c);
    int k = 0;
    for (int dt = SD_COMM_F32; dt <= SD_COMM_BF16; dt++)
        for (int i = 0; i < N_SIZES; i++, k++)
            if (gpu_check_allreduce(c, dt, size_at(i, sd_comm_dtype_size(dt)), 500 + k,
                                    &res->hash[k], res))
                return 1;
    sd_comm_free(c);
    return 0;
}

/* 3 ranks, so the order of the additions shows in the bits. */
Test(comm_cuda_intra, one_shot_and_two_shot_are_bit_identical, .timeout = 300)
{
    gpu_run_ranks(3, sizes_rank, 3 * N_SIZES, 240);
}

#define HANG_STEPS 2000

/* The hang regression: HANG_STEPS allreduces whose sizes come from the previous result
 * (so every rank picks the same size only while all results agree) and cross the
 * one-shot/two-shot limit about half the time (1 in 16 in the host mode), both flag sets in
 * turn, dtypes in turn, with random per-rank
 * delays so ranks enter the collectives out of step. Every result is checked. */
static int hang_rank(int rank, int size, const char *job, void *arg, void *out, size_t cap)
{
    gpu_result_t *res = out;
    OPEN_INTRA_OR_FAIL(c);
    uint64_t h = 0x5eed;
    double t0 = sd_now();
    for (int step = 0; step < HANG_STEPS; step++) {
        sd_comm_dtype_t dt = (sd_comm_dtype_t)(step % 3);
        size_t one = SD_IPC_ONE_SHOT_BYTES / sd_comm_dtype_size(dt), m = gpu_mix(h);
        /* the host mode runs a two-shot launch in ~0.2 s: there 1 step in 16 crosses */
        size_t n = !sd_cuda_host_mode() ? 1 + m % (2 * one)
                   : m % 16 == 0 ? one + 1 + (m >> 8) % one : 1 + (m >> 8) % 4096;
        uint64_t j = gpu_mix(h ^ (uint64_t)(rank + 1));
        if (j % 4 == 0) usleep((useconds_t)((j >> 8) % 300));
        if (gpu_check_allreduce(c, dt, n, h, &h, res)) {
            char at[32];
            snprintf(at, sizeof at, " (step %d)", step);
            strncat(res->msg, at, sizeof res->msg - strlen(res->msg) - 1);
            return 1;
        }
    }
    res->seconds = sd_now() - t0;
    res->hash[0] = h;
    sd_comm_free(c);
    return 0;
}

Test(comm_cuda_intra, two_thousand_data_dependent_steps_never_hang, .timeout = 600)
{
    setenv("SPECDEC_COMM_TIMEOUT_MS", "20000", 1);
    gpu_result_t g0 = gpu_run_ranks(2, hang_rank, 1, 540);
    cr_log_info("cuda intra: %d steps in %.1f s (%.2f ms/step)", HANG_STEPS, g0.seconds,
                g0.seconds * 1e3 / HANG_STEPS);
}

#define STALL_TIMEOUT_MS 6000

/* After one good allreduce rank 1 stalls: rank 0's kernel gives up at its device
 * deadline (or on the host's abort) and the call returns SD_ERR_COMM_TIMEOUT naming
 * rank 1 within the timeout + 2 s. */
static int stalled_peer_rank(int rank, int size, const char *job, void *arg, void *out,
                             size_t cap)
{
    gpu_result_t *res = out;
    OPEN_INTRA_OR_FAIL(c);
    if (gpu_check_allreduce(c, SD_COMM_F32, 1000, 1, &res->hash[0], res)) return 1;
    return gpu_stall_rank1(c, STALL_TIMEOUT_MS, "waiting for rank 1", res);
}

Test(comm_cuda_intra, stalled_peer_hits_the_device_deadline, .timeout = 120)
{
    setenv("SPECDEC_COMM_TIMEOUT_MS", "6000", 1);
    gpu_result_t g0 = gpu_run_ranks(2, stalled_peer_rank, 1, 60);
    gpu_assert_timed_out(&g0, STALL_TIMEOUT_MS);
}

/* ---- the same on the cuda_ipc backend (ENABLE_INTRA_NODE_COMM=1 for GPU models) ------ */

Test(comm_cuda_ipc, one_shot_and_two_shot_are_bit_identical, .timeout = 600)
{
    gpu_via_cuda_ipc = 1;
    gpu_run_ranks(3, sizes_rank, 3 * N_SIZES, 540);
}

Test(comm_cuda_ipc, two_thousand_data_dependent_steps_never_hang, .timeout = 900)
{
    gpu_via_cuda_ipc = 1;
    setenv("SPECDEC_COMM_TIMEOUT_MS", "60000", 1);
    gpu_result_t g0 = gpu_run_ranks(2, hang_rank, 1, 840);
    cr_log_info("cuda_ipc: %d steps in %.1f s (%.2f ms/step)", HANG_STEPS, g0.seconds,
                g0.seconds * 1e3 / HANG_STEPS);
}

Test(comm_cuda_ipc, stalled_peer_hits_the_device_deadline, .timeout = 120)
{
    gpu_via_cuda_ipc = 1;
    setenv("SPECDEC_COMM_TIMEOUT_MS", "6000", 1);
    gpu_result_t g0 = gpu_run_ranks(2, stalled_peer_rank, 1, 60);
    gpu_assert_timed_out(&g0, STALL_TIMEOUT_MS);
}

/* After one good allreduce rank 1 dies (SIGKILL): rank 0's next allreduce ends with
 * SD_ERR_COMM_TIMEOUT naming rank 1 within the timeout + 2 s, and freeing the failed
 * communicator returns (its region is left mapped, never freed under a peer). */
static int killed_peer_rank(int rank, int size, const char *job, void *arg, void *out,
                            size_t cap)
{
    gpu_result_t *res = out;
    OPEN_INTRA_OR_FAIL(c);
    if (gpu_check_allreduce(c, SD_COMM_F32, 1000, 1, &res->hash[0], res)) return 1;
    if (rank == 1) raise(SIGKILL);
    static float v[4096];
    double t0 = sd_now();
    sd_status_t st = sd_comm_allreduce_sum(c, v, 4096, SD_COMM_F32);
    res->seconds = sd_now() - t0;
    snprintf(res->msg, sizeof res->msg, "%s", sd_last_error());
    if (st != SD_ERR_COMM_TIMEOUT && st != SD_ERR_PEER_LOST)
        GPU_FAIL(res, "allreduce after a peer died returned %s: %s", sd_status_string(st),
                 sd_last_error());
    if (strstr(res->msg, "rank 1") == NULL)
        GPU_FAIL(res, "the failure does not name rank 1: %s", sd_last_error());
    sd_comm_free(c);
    return 0;
}

Test(comm_cuda_ipc, killed_peer_ends_the_allreduce_naming_it, .timeout = 120)
{
    gpu_via_cuda_ipc = 1;
    setenv("SPECDEC_COMM_TIMEOUT_MS", "6000", 1);
    gpu_skip_unless_available();
    sd_test_ranks_t r;
    sd_test_run_ranks(2, killed_peer_rank, NULL, sizeof(gpu_result_t), 60, &r);
    const gpu_result_t *g0 = sd_test_rank_out(&r, 0);
    cr_assert(!g0->failed && r.codes[0] == 0, "rank 0 (code %d): %s", r.codes[0], g0->msg);
    cr_assert_eq(r.codes[1], 128 + SIGKILL, "rank 1 ended with code %d", r.codes[1]);
    cr_assert(g0->seconds <= STALL_TIMEOUT_MS * 1e-3 + 2.0, "took %.2f s: %s", g0->seconds,
              g0->msg);
    cr_assert(sd_test_no_shm_left(r.job), "shared memory of job %s left in /dev/shm", r.job);
    sd_test_ranks_free(&r);
}
