/* The nccl backend on a GPU, ranks as processes (several on one GPU: tests/cuda/gpu_ranks.h).
 * Skips cleanly without CUDA+NCCL or without a device. Buffers are host memory here
 * (the tests see no CUDA API): the backend stages them through its device scratch, so
 * every NCCL call and kernel still runs on device memory. */
#include "gpu_ranks.h"

/* Element counts: one element, odd sizes; and f32 past one gather piece (32 MiB / 4). */
static const size_t k_counts[] = {1, 7, 1000, 300001};
#define N_COUNTS (int)(sizeof k_counts / sizeof k_counts[0])
#define BIG_F32 (((size_t)32 << 20) / 4 + 5)

#define OPEN_OR_FAIL(c)                                                                          \
    sd_comm_t *c = NULL;                                                                         \
    do {                                                                                         \
        sd_status_t st_ = gpu_open(rank, size, job, &c);                                         \
        if (st_ != SD_OK)                                                                        \
            GPU_FAIL(res, "open: %s: %s", sd_status_string(st_), sd_last_error());               \
    } while (0)

#define CHECK_OK(what, call)                                                                     \
    do {                                                                                         \
        sd_status_t st_ = (call);                                                                \
        if (st_ != SD_OK)                                                                        \
            GPU_FAIL(res, "%s: %s: %s", what, sd_status_string(st_), sd_last_error());           \
    } while (0)

/* The default allreduce (allgather + rank-order sum): f32/f16/bf16 over k_counts, plus
 * one f32 allreduce spanning two gather pieces. */
static int allreduce_rank(int rank, int size, const char *job, void *arg, void *out, size_t cap)
{
    gpu_result_t *res = out;
    OPEN_OR_FAIL(c);
    int k = 0;
    for (int dt = SD_COMM_F32; dt <= SD_COMM_BF16; dt++)
        for (int i = 0; i < N_COUNTS; i++, k++)
            if (gpu_check_allreduce(c, dt, k_counts[i], 100 + k, &res->hash[k], res)) return 1;
    if (gpu_check_allreduce(c, SD_COMM_F32, BIG_F32, 7, &res->hash[k], res)) return 1;
    sd_comm_free(c);
    return 0;
}

/* 3 ranks, so the order of the additions shows in the bits. */
Test(comm_nccl, allreduce_is_bit_identical_and_equals_the_reference, .timeout = 300)
{
    gpu_run_ranks(3, allreduce_rank, 3 * N_COUNTS + 1, 240);
}

/* SPECDEC_NCCL_FAST_ALLREDUCE=1: plain ncclAllReduce. Integer-valued inputs sum exactly
 * in any order, so the result is still exact. */
static int fast_allreduce_rank(int rank, int size, const char *job, void *arg, void *out,
                               size_t cap)
{
    gpu_result_t *res = out;
    setenv("SPECDEC_NCCL_FAST_ALLREDUCE", "1", 1);
    OPEN_OR_FAIL(c);
    enum { N = 4099 };
    static float x[N];
    for (int i = 0; i < N; i++) x[i] = (float)((i * 7 + rank * 13) % 101);
    CHECK_OK("allreduce", sd_comm_allreduce_sum(c, x, N, SD_COMM_F32));
    for (int i = 0; i < N; i++) {
        float want = 0;
        for (int q = 0; q < size; q++) want += (float)((i * 7 + q * 13) % 101);
        if (x[i] != want) GPU_FAIL(res, "x[%d] = %g, want %g", i, x[i], want);
    }
    sd_comm_free(c);
    return 0;
}

Test(comm_nccl, fast_allreduce_sums_exact_values, .timeout = 120)
{
    gpu_run_ranks(2, fast_allreduce_rank, 0, 100);
}

/* Broadcast from every root, allgather in rank order, barrier. */
static int other_ops_rank(int rank, int size, const char *job, void *arg, void *out, size_t cap)
{
    gpu_result_t *res = out;
    OPEN_OR_FAIL(c);
    enum { B = 1001 };
    unsigned char buf[B], all[3 * B];
    for (int root = 0; root < size; root++) {
        for (int i = 0; i < B; i++) buf[i] = (unsigned char)(rank == root ? i * 3 + root : 0xee);
        CHECK_OK("broadcast", sd_comm_broadcast(c, buf, B, root));
        for (int i = 0; i < B; i++)
            if (buf[i] != (unsigned char)(i * 3 + root))
                GPU_FAIL(res, "broadcast from %d: byte %d = %d", root, i, buf[i]);
    }
    for (int i = 0; i < B; i++) buf[i] = (unsigned char)(i + 17 * rank);
    CHECK_OK("allgather", sd_comm_allgather(c, buf, B, all));
    for (int q = 0; q < size; q++)
        for (int i = 0; i < B; i++)
            if (all[q * B + i] != (unsigned char)(i + 17 * q))
                GPU_FAIL(res, "allgather: rank %d's byte %d = %d", q, i, all[q * B + i]);
    CHECK_OK("barrier", sd_comm_barrier(c));
    sd_comm_free(c);
    return 0;
}

Test(comm_nccl, broadcast_allgather_barrier, .timeout = 120)
{
    gpu_run_ranks(3, other_ops_rank, 0, 100);
}

/* split_first(2) of 3 ranks: ranks 0 and 1 get a 2-rank nccl communicator that sums
 * only their values; rank 2 gets NULL; the parent still works afterwards. */
static int split_rank(int rank, int size, const char *job, void *arg, void *out, size_t cap)
{
    gpu_result_t *res = out;
    OPEN_OR_FAIL(c);
    sd_comm_t *sub = NULL;
    CHECK_OK("split", sd_comm_split_first(c, 2, &sub));
    if ((sub != NULL) != (rank < 2)) GPU_FAIL(res, "rank %d: sub is %p", rank, (void *)sub);
    if (sub) {
        float v[3] = {1.0f + (float)rank, 10.0f * (float)(rank + 1), -5.0f};
        CHECK_OK("allreduce on the split", sd_comm_allreduce_sum(sub, v, 3, SD_COMM_F32));
        if (v[0] != 3.0f || v[1] != 30.0f || v[2] != -10.0f || sd_comm_size(sub) != 2)
            GPU_FAIL(res, "allreduce on the split gave %g %g %g", v[0], v[1], v[2]);
        sd_comm_free(sub);
    }
    CHECK_OK("barrier after the split", sd_comm_barrier(c));
    sd_comm_free(c);
    return 0;
}

Test(comm_nccl, split_first_makes_a_working_subgroup, .timeout = 120)
{
    gpu_run_ranks(3, split_rank, 0, 100);
}

#define STALL_TIMEOUT_MS 5000

/* Rank 1 never joins the allreduce: rank 0 gets SD_ERR_COMM_TIMEOUT (NCCL communicator
 * aborted) within the timeout + 2 s instead of hanging. */
static int stalled_peer_rank(int rank, int size, const char *job, void *arg, void *out,
                             size_t cap)
{
    gpu_result_t *res = out;
    OPEN_OR_FAIL(c);
    return gpu_stall_rank1(c, STALL_TIMEOUT_MS, "allreduce", res);
}

Test(comm_nccl, stalled_peer_times_out_instead_of_hanging, .timeout = 120)
{
    setenv("SPECDEC_COMM_TIMEOUT_MS", "5000", 1);
    gpu_result_t g0 = gpu_run_ranks(2, stalled_peer_rank, 0, 60);
    gpu_assert_timed_out(&g0, STALL_TIMEOUT_MS);
}
