/* The comm/cuda kernels (comm/cuda/intra_cuda.h) against their C reference,
 * sd_comm_reduce_rank_order, bit for bit: the rank-order sum after an allgather, and the CUDA
 * IPC allreduce with its ranks as threads of one process sharing device 0 (one-shot and
 * two-shot; three ranks, so the order of the additions shows in the bits). CUDA C++ for
 * the runtime calls; built where the comm kernels are (nvcc with NCCL, or the CUDA host
 * mode). test_comm_cuda_intra.c runs the allreduce behind a communicator, ranks as
 * processes, on a GPU. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>

extern "C" {
#include "comm/comm.h"
#include "comm/cuda/intra_cuda.h"
#include "kernels/cuda.h"
/* comm/comm_impl.h, which C++ cannot include (<stdatomic.h>) */
void sd_comm_reduce_rank_order(void *dst, uint8_t *const *src, int p, size_t n, sd_comm_dtype_t dt);
}

enum { RANKS = 3 };
static const size_t SLOT = (size_t)1 << 20;

#define CUDA_OK(call)                                                                            \
    do {                                                                                         \
        cudaError_t e_ = (call);                                                                 \
        cr_assert_eq(e_, cudaSuccess, "%s: %s", #call, cudaGetErrorString(e_));                  \
    } while (0)

static void need_device(void)
{
    int n = 0;
    if (sd_cuda_device_count(&n) != SD_OK || n == 0) cr_skip_test("no CUDA device on this machine");
    CUDA_OK(cudaSetDevice(0));
}

/* count finite values of dt from a xorshift stream: f32 in [-4, 4), f16 and bf16 as bit
 * patterns of moderate exponents. */
static void fill(uint8_t *p, size_t count, sd_comm_dtype_t dt, uint32_t seed)
{
    uint32_t s = seed * 2654435761u + 1;
    for (size_t i = 0; i < count; i++) {
        s ^= s << 13, s ^= s >> 17, s ^= s << 5;
        if (dt == SD_COMM_F32) {
            float v = (float)(s >> 8) * 0x1p-21f - 4.0f;
            memcpy(p + 4 * i, &v, 4);
            continue;
        }
        uint16_t sign = (uint16_t)(s & 0x8000u), bits;
        if (dt == SD_COMM_F16)
            bits = (uint16_t)(sign | ((10 + (s >> 16) % 10) << 10) | ((s >> 4) & 0x3ffu));
        else
            bits = (uint16_t)(sign | ((120 + (s >> 16) % 10) << 7) | ((s >> 4) & 0x7fu));
        memcpy(p + 2 * i, &bits, 2);
    }
}

/* rows[r] = rank r's data for (dt, count, seed); want = their rank-order sum. */
static void make_case(sd_comm_dtype_t dt, size_t count, uint32_t seed, uint8_t *rows[RANKS], uint8_t *want)
{
    size_t es = sd_comm_dtype_size(dt);
    for (int r = 0; r < RANKS; r++) {
        rows[r] = (uint8_t *)malloc(count * es);
        cr_assert_not_null(rows[r]);
        fill(rows[r], count, dt, seed * 31u + (uint32_t)r);
    }
    sd_comm_reduce_rank_order(want, rows, RANKS, count, dt);
}

static const size_t counts[] = {1, 777, 70001, 140001}; /* f32 from 70001 and f16/bf16 at 140001: two-shot */

Test(comm_cuda_kernels, gather_sum_is_the_rank_order_sum, .timeout = 120)
{
    need_device();
    for (int dt = SD_COMM_F32; dt <= SD_COMM_BF16; dt++)
        for (size_t k = 0; k < sizeof counts / sizeof counts[0]; k++) {
            size_t count = counts[k], es = sd_comm_dtype_size((sd_comm_dtype_t)dt);
            uint8_t *rows[RANKS], *want = (uint8_t *)malloc(count * es), *got = (uint8_t *)malloc(count * es);
            make_case((sd_comm_dtype_t)dt, count, 100 + (uint32_t)k, rows, want);
            uint8_t *gathered = NULL, *out = NULL;
            CUDA_OK(cudaMalloc(&gathered, RANKS * count * es));
            CUDA_OK(cudaMalloc(&out, count * es));
            for (int r = 0; r < RANKS; r++)
                CUDA_OK(cudaMemcpy(gathered + r * count * es, rows[r], count * es, cudaMemcpyHostToDevice));
            sd_status_t st = sd_gpu_sum_gathered(gathered, out, count, RANKS, (sd_gpu_dtype_t)dt, NULL);
            cr_assert_eq(st, SD_OK, "%s", sd_last_error());
            CUDA_OK(cudaStreamSynchronize(0));
            CUDA_OK(cudaMemcpy(got, out, count * es, cudaMemcpyDeviceToHost));
            cr_assert(memcmp(got, want, count * es) == 0, "%s, %zu elements: not the rank-order sum",
                      sd_comm_dtype_name((sd_comm_dtype_t)dt), count);
            cudaFree(gathered);
            cudaFree(out);
            for (int r = 0; r < RANKS; r++) free(rows[r]);
            free(want), free(got);
        }
}

/* One rank of an IPC allreduce: its data in, the reduced buffer out. */
typedef struct rank_job {
    sd_ipc_args_t args; /* region, nranks, dtype, seq, slot, budget and words set; buf here */
    size_t count;
    const uint8_t *in;
    uint8_t *out;
    sd_status_t launched;
    cudaError_t done;
} rank_job_t;

static void *rank_main(void *arg)
{
    rank_job_t *j = (rank_job_t *)arg;
    size_t bytes = j->count * sd_comm_dtype_size((sd_comm_dtype_t)j->args.dtype);
    cudaStream_t s = NULL;
    j->done = cudaSetDevice(0);
    if (j->done == cudaSuccess) j->done = cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    if (j->done == cudaSuccess) j->done = cudaMalloc(&j->args.buf, bytes);
    if (j->done == cudaSuccess) j->done = cudaMemcpy(j->args.buf, j->in, bytes, cudaMemcpyHostToDevice);
    if (j->done != cudaSuccess) return NULL;
    sd_ipc_plan(&j->args, j->count, sd_comm_dtype_size((sd_comm_dtype_t)j->args.dtype), SD_IPC_MAX_BLOCKS);
    j->launched = sd_ipc_allreduce_launch(&j->args, s);
    j->done = cudaStreamSynchronize(s);
    if (j->done == cudaSuccess) j->done = cudaMemcpy(j->out, j->args.buf, bytes, cudaMemcpyDeviceToHost);
    cudaFree(j->args.buf);
    cudaStreamDestroy(s);
    return NULL;
}

Test(comm_cuda_kernels, ipc_allreduce_is_the_rank_order_sum_on_every_rank, .timeout = 300)
{
    need_device();
    char *regions[RANKS];
    for (int r = 0; r < RANKS; r++) {
        CUDA_OK(cudaMalloc(&regions[r], sd_ipc_region_bytes(SLOT)));
        CUDA_OK(cudaMemset(regions[r], 0, sd_ipc_region_bytes(SLOT)));
    }
    uint64_t *words = NULL, *words_dev = NULL; /* [0]: the abort word, [1]: the error word */
    CUDA_OK(cudaHostAlloc(&words, 2 * sizeof(uint64_t), cudaHostAllocMapped));
    CUDA_OK(cudaHostGetDevicePointer((void **)&words_dev, words, 0));
    words[0] = words[1] = 0;
    uint64_t seq = 0;
    int shots[2] = {0, 0}; /* one-shot, two-shot launches */
    for (int dt = SD_COMM_F32; dt <= SD_COMM_BF16; dt++)
        for (size_t k = 0; k < sizeof counts / sizeof counts[0]; k++) {
            size_t count = counts[k], es = sd_comm_dtype_size((sd_comm_dtype_t)dt);
            uint8_t *rows[RANKS], *want = (uint8_t *)malloc(count * es);
            make_case((sd_comm_dtype_t)dt, count, 200 + (uint32_t)k, rows, want);
            rank_job_t jobs[RANKS];
            pthread_t th[RANKS];
            seq++;
            for (int r = 0; r < RANKS; r++) {
                memset(&jobs[r], 0, sizeof jobs[r]);
                sd_ipc_args_t *a = &jobs[r].args;
                memcpy(a->region, regions, sizeof regions);
                a->rank = r, a->nranks = RANKS, a->dtype = (sd_gpu_dtype_t)dt, a->seq = seq;
                a->slot_bytes = SLOT, a->budget_ns = 30ull * 1000000000ull;
                a->abort_word = (const volatile int *)&words_dev[0];
                a->error_word = (volatile uint64_t *)&words_dev[1];
                jobs[r].count = count, jobs[r].in = rows[r], jobs[r].out = (uint8_t *)malloc(count * es);
                pthread_create(&th[r], NULL, rank_main, &jobs[r]);
            }
            for (int r = 0; r < RANKS; r++) pthread_join(th[r], NULL);
            for (int r = 0; r < RANKS; r++) {
                cr_assert_eq(jobs[r].launched, SD_OK, "rank %d: %s", r, sd_last_error());
                cr_assert_eq(jobs[r].done, cudaSuccess, "rank %d: %s", r, cudaGetErrorString(jobs[r].done));
                cr_assert(memcmp(jobs[r].out, want, count * es) == 0,
                          "%s, %zu elements (%s): rank %d holds not the rank-order sum",
                          sd_comm_dtype_name((sd_comm_dtype_t)dt), count,
                          jobs[r].args.two_shot ? "two-shot" : "one-shot", r);
                free(jobs[r].out);
                free(rows[r]);
            }
            shots[jobs[0].args.two_shot != 0]++;
            cr_assert_eq(words[1], 0u, "error word %#llx", (unsigned long long)words[1]);
            free(want);
        }
    cr_assert(shots[0] > 0 && shots[1] > 0, "%d one-shot, %d two-shot launches", shots[0], shots[1]);
    cudaFreeHost(words);
    for (int r = 0; r < RANKS; r++) cudaFree(regions[r]);
}
