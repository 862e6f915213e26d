// Rank-order sums on the device: element i of P inputs accumulated in f32 in the order
// 0, 1, ..., P-1 and rounded once to the element type (round to nearest even): the same
// bits as the C reference, sd_comm_reduce_rank_order (comm/comm_impl.h, comm/comm_reduce.c).
#ifndef SPECDEC_COMM_CUDA_RANK_SUM_CUH
#define SPECDEC_COMM_CUDA_RANK_SUM_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "core/cudasim/kernel.cuh"
#include "intra_cuda.h"

extern "C" {
#include "core/check.h"
}

__device__ __forceinline__ float sd_to_f32(float x) { return x; }
__device__ __forceinline__ float sd_to_f32(__half x) { return __half2float(x); }
__device__ __forceinline__ float sd_to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T sd_from_f32(float x);
template <> __device__ __forceinline__ float sd_from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ __half sd_from_f32<__half>(float x)
{
    return __float2half_rn(x);
}
template <> __device__ __forceinline__ __nv_bfloat16 sd_from_f32<__nv_bfloat16>(float x)
{
    return __float2bfloat16_rn(x);
}

// sum over r = 0..nranks-1 of src(r)[i]; src(r) is rank r's array.
template <typename T, typename Src>
__device__ __forceinline__ T sd_rank_sum(Src src, int nranks, size_t i)
{
    float acc = sd_to_f32(src(0)[i]);
    for (int r = 1; r < nranks; r++) acc = __fadd_rn(acc, sd_to_f32(src(r)[i]));
    return sd_from_f32<T>(acc);
}

// Run kernel template K<T> for the element type dt: K is a functor whose templated
// operator() launches the kernel for T and returns the launch's status.
template <typename K> static inline sd_status_t sd_gpu_dispatch(sd_gpu_dtype_t dt, K launch)
{
    cudaError_t e;
    switch (dt) {
    case SD_GPU_F32: e = launch(float{}); break;
    case SD_GPU_F16: e = launch(__half{}); break;
    case SD_GPU_BF16: e = launch(__nv_bfloat16{}); break;
    default: return sd_set_error(SD_ERR_INVALID_ARG, "GPU reduction: unknown dtype %d", (int)dt);
    }
    if (e != cudaSuccess)
        return sd_set_error(SD_ERR_DEVICE, "GPU reduction: launch for dtype %d failed: %s", (int)dt,
                            cudaGetErrorString(e));
    return SD_OK;
}

// Grid-stride loop bounds of this thread.
__device__ __forceinline__ size_t sd_thread_first(void)
{
    return (size_t)blockIdx.x * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ size_t sd_grid_stride(void) { return (size_t)gridDim.x * blockDim.x; }

#endif
