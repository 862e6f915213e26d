// The second half of the NCCL backend's deterministic allreduce: after ncclAllGather has
// put every rank's buffer in `gathered` [nranks][count], sum it in rank order.
#include "rank_sum.cuh"

enum { GATHER_SUM_THREADS = 256, GATHER_SUM_MAX_BLOCKS = 1024 };

// out[count] = sum over r of gathered[r][count], one element per thread per stride.
template <typename T>
__global__ void gather_sum_kernel(const T *__restrict__ gathered, T *__restrict__ out,
                                  size_t count, int nranks)
{
    auto rank_row = [&](int r) { return gathered + (size_t)r * count; };
    for (size_t i = sd_thread_first(); i < count; i += sd_grid_stride())
        out[i] = sd_rank_sum<T>(rank_row, nranks, i);
}

extern "C" sd_status_t sd_gpu_sum_gathered(const void *gathered, void *out, size_t count,
                                           int nranks, sd_gpu_dtype_t dt, void *stream)
{
    if (count == 0) return SD_OK;
    size_t want = (count + GATHER_SUM_THREADS - 1) / GATHER_SUM_THREADS;
    int blocks = want < GATHER_SUM_MAX_BLOCKS ? (int)want : GATHER_SUM_MAX_BLOCKS;
    return sd_gpu_dispatch(dt, [&](auto tag) {
        using T = decltype(tag);
        return SD_LAUNCH(gather_sum_kernel<T>, blocks, GATHER_SUM_THREADS, 0, (cudaStream_t)stream,
                         (const T *)gathered, (T *)out, count, nranks);
    });
}
