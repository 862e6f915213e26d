// The CUDA intra-node allreduce over IPC-mapped regions (contract: intra_cuda.h; protocol:
// docs/comm.md, "The CUDA IPC allreduce"); the host side (IPC setup, waits, errors) is in
// comm/backend_nccl.c.
#include "rank_sum.cuh"

// flags[parity][phase][block][from] of one region.
__device__ __forceinline__ uint64_t *ipc_flag(char *region, uint64_t seq, int phase, int from)
{
    size_t i = (((seq & 1) * SD_IPC_PHASES + phase) * SD_IPC_MAX_BLOCKS + blockIdx.x) *
                   SD_IPC_MAX_RANKS + from;
    return (uint64_t *)region + i;
}
// data (tmp = 0) or tmp (tmp = 1) slot of the launch's parity in one region.
template <typename T>
__device__ __forceinline__ T *ipc_slot(const sd_ipc_args_t &a, int rank, int tmp)
{
    return (T *)(a.region[rank] + SD_IPC_FLAGS_BYTES + ((a.seq & 1) * 2 + tmp) * a.slot_bytes);
}

// Spin until *flag >= a.seq. On the device deadline or the host's abort, write the error
// record (naming `peer` and `phase`) and return false.
__device__ bool wait_flag(const sd_ipc_args_t &a, uint64_t *flag, uint64_t deadline, int peer,
                          int phase)
{
    for (unsigned spin = 1;; spin++) {
        if (sd_load_acquire_system(flag) >= a.seq) return true;
        if (spin % 64 == 0) {
            int code = *a.abort_word ? SD_IPC_ERR_ABORTED
                       : sd_globaltimer_ns() > deadline ? SD_IPC_ERR_DEADLINE
                                                      : SD_IPC_ERR_NONE;
            if (code != SD_IPC_ERR_NONE) {
                *a.error_word = (uint64_t)code << 56 | (uint64_t)phase << 48 |
                                (uint64_t)peer << 32 | (a.seq & 0xffffffffu);
                __threadfence_system();
                return false;
            }
        }
        __nanosleep(100);
    }
}

// Block barrier across ranks for `phase`: after this block's writes, thread q announces
// to rank q and waits for rank q's announcement. True on every thread if all arrived.
__device__ bool block_barrier(const sd_ipc_args_t &a, int phase, uint64_t deadline)
{
    __syncthreads(); // the block's slot writes happen before the release below
    int ok = 1, q = threadIdx.x;
    if (q < a.nranks) {
        sd_store_release_system(ipc_flag(a.region[q], a.seq, phase, a.rank), a.seq);
        ok = wait_flag(a, ipc_flag(a.region[a.rank], a.seq, phase, q), deadline, q, phase);
    }
    return __syncthreads_and(ok) != 0;
}

// buf[count] = rank-order sum of every rank's buf: copy in, barrier, sum all slots.
template <typename T> __device__ void one_shot(const sd_ipc_args_t &a, uint64_t deadline)
{
    T *buf = (T *)a.buf, *mine = ipc_slot<T>(a, a.rank, 0);
    for (size_t i = sd_thread_first(); i < a.count; i += sd_grid_stride()) mine[i] = buf[i];
    if (!block_barrier(a, 0, deadline)) return;
    auto data = [&](int r) { return (const T *)ipc_slot<T>(a, r, 0); };
    for (size_t i = sd_thread_first(); i < a.count; i += sd_grid_stride())
        buf[i] = sd_rank_sum<T>(data, a.nranks, i);
}

// Two-shot: element p * part + j belongs to partition p. Rank r reduces partition r into
// its tmp[part] (reduce-scatter), then every rank reads partition p from rank p's tmp.
template <typename T> __device__ void two_shot(const sd_ipc_args_t &a, uint64_t deadline)
{
    T *buf = (T *)a.buf, *mine = ipc_slot<T>(a, a.rank, 0);
    size_t part = (a.count + a.nranks - 1) / a.nranks;
    for (size_t j = sd_thread_first(); j < part; j += sd_grid_stride())
        for (size_t i = j; i < a.count; i += part) mine[i] = buf[i];
    if (!block_barrier(a, 0, deadline)) return;
    T *my_tmp = ipc_slot<T>(a, a.rank, 1);
    auto data = [&](int r) { return (const T *)ipc_slot<T>(a, r, 0); };
    for (size_t j = sd_thread_first(); j < part; j += sd_grid_stride())
        if (a.rank * part + j < a.count)
            my_tmp[j] = sd_rank_sum<T>(data, a.nranks, a.rank * part + j);
    if (!block_barrier(a, 1, deadline)) return;
    for (size_t j = sd_thread_first(); j < part; j += sd_grid_stride())
        for (int p = 0; p < a.nranks && p * part + j < a.count; p++)
            buf[p * part + j] = ipc_slot<T>(a, p, 1)[j];
}

template <typename T> __global__ void __launch_bounds__(SD_IPC_THREADS) ipc_allreduce_kernel(
    sd_ipc_args_t a)
{
    if (a.seq_dev) a.seq = *a.seq_dev;
    if (*a.abort_word || *a.error_word) return; // a launch before gave up: so does this one
    uint64_t deadline = sd_globaltimer_ns() + a.budget_ns;
    if (a.two_shot)
        two_shot<T>(a, deadline);
    else
        one_shot<T>(a, deadline);
}

__global__ void ipc_bump_kernel(uint64_t *seq) { *seq += 1; }

extern "C" sd_status_t sd_ipc_bump_launch(uint64_t *seq_dev, void *stream)
{
    cudaError_t e = SD_LAUNCH(ipc_bump_kernel, 1, 1, 0, (cudaStream_t)stream, seq_dev);
    if (e != cudaSuccess)
        return sd_set_error(SD_ERR_DEVICE, "the IPC allreduce's launch counter: %s",
                            cudaGetErrorString(e));
    return SD_OK;
}

extern "C" void sd_ipc_plan(sd_ipc_args_t *a, size_t count, size_t esize, int max_blocks)
{
    a->count = count;
    a->two_shot = count * esize > SD_IPC_ONE_SHOT_BYTES && a->nranks > 1;
    size_t work = a->two_shot ? (count + a->nranks - 1) / a->nranks : count;
    size_t want = (work + SD_IPC_THREADS - 1) / SD_IPC_THREADS;
    int cap = max_blocks < SD_IPC_MAX_BLOCKS ? max_blocks : SD_IPC_MAX_BLOCKS;
    a->blocks = want == 0 ? 1 : want < (size_t)cap ? (int)want : cap;
}

extern "C" sd_status_t sd_ipc_allreduce_launch(const sd_ipc_args_t *a, void *stream)
{
    return sd_gpu_dispatch(a->dtype, [&](auto tag) {
        return SD_LAUNCH(ipc_allreduce_kernel<decltype(tag)>, a->blocks, SD_IPC_THREADS, 0,
                         (cudaStream_t)stream, *a);
    });
}
