/* The CUDA IPC allreduce (comm/cuda/intra_cuda.h) behind an nccl communicator after
 * sd_comm_nccl_use_intra, ranks as processes sharing device 0 (tests/cuda/gpu_ranks.h).
 * Skips cleanly without CUDA+NCCL or without a device. Results are checked bit for bit
 * against the C reference (sd_comm_reduce_rank_order) and across ranks. */
#include "core/clock.h"
#include "gpu_ranks.h"

/* Open this rank's nccl communicator with the IPC allreduce, or fail the rank. */
#define OPEN_INTRA_OR_FAIL(c)                                                                    \
    sd_comm_t *c = NULL;                                                                         \
    do {                                                                                         \
        sd_status_t st_ = gpu_open(rank, size, job, &c);                                         \
        if (st_ == SD_OK) st_ = sd_comm_nccl_use_intra(c);                                       \
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
 * one-shot/two-shot limit about half the time, dtypes in turn, with random per-rank
 * delays so ranks enter the collectives out of step. Every result is checked. */
static int hang_rank(int rank, int size, const char *job, void *arg, void *out, size_t cap)
{
    gpu_result_t *res = out;
    OPEN_INTRA_OR_FAIL(c);
    uint64_t h = 0x5eed;
    double t0 = sd_now();
    for (int step = 0; step < HANG_STEPS; step++) {
        sd_comm_dtype_t dt = (sd_comm_dtype_t)(step % 3);
        size_t n = 1 + gpu_mix(h) % (2 * SD_IPC_ONE_SHOT_BYTES / sd_comm_dtype_size(dt));
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
