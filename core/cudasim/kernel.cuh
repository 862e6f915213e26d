// What specdec's .cu files use beyond plain CUDA C++, defined for nvcc and for the CUDA host
// mode alike (core/cudasim/sim.h): one launch form instead of <<<...>>>, dynamic shared
// memory, system-scope flags and the global timer.
#ifndef SPECDEC_CORE_CUDASIM_KERNEL_CUH
#define SPECDEC_CORE_CUDASIM_KERNEL_CUH

#include <cuda_runtime.h>
#include <stdint.h>

#include <utility>

#ifdef SPECDEC_CUDA_SIM
#include <time.h>

#define SD_CUDA_HOST_MODE 1
#define SD_DYNAMIC_SHARED(type, name) type *name = (type *)sd_sim::dynamic_shared()

template <class... P, class... A>
static inline cudaError_t sd_launch_raw(const char *name, void (*kernel)(P...), dim3 grid, dim3 block,
                                        size_t shmem, cudaStream_t stream, A &&...args)
{
    return sd_sim_launch(name, kernel, grid, block, shmem, stream, std::forward<A>(args)...);
}

static inline uint64_t sd_load_acquire_system(uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void sd_store_release_system(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline uint64_t sd_globaltimer_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}
#else
#include <cuda/atomic>

#define SD_CUDA_HOST_MODE 0
#define SD_DYNAMIC_SHARED(type, name) extern __shared__ type name[]

template <class... P, class... A>
static inline cudaError_t sd_launch_raw(const char *, void (*kernel)(P...), dim3 grid, dim3 block,
                                        size_t shmem, cudaStream_t stream, A &&...args)
{
    cudaLaunchConfig_t config = {};
    config.gridDim = grid;
    config.blockDim = block;
    config.dynamicSmemBytes = shmem;
    config.stream = stream;
    return cudaLaunchKernelEx(&config, kernel, std::forward<A>(args)...);
}

__device__ __forceinline__ uint64_t sd_load_acquire_system(uint64_t *p)
{
    return cuda::atomic_ref<uint64_t, cuda::thread_scope_system>(*p).load(cuda::memory_order_acquire);
}
__device__ __forceinline__ void sd_store_release_system(uint64_t *p, uint64_t v)
{
    cuda::atomic_ref<uint64_t, cuda::thread_scope_system>(*p).store(v, cuda::memory_order_release);
}
__device__ __forceinline__ uint64_t sd_globaltimer_ns(void)
{
    uint64_t t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}
#endif

// The launch's own status (the geometry, the shared memory, the stream), which it does not
// leave behind for cudaGetLastError: an error another module left there is not ours.
template <class... P, class... A>
static inline cudaError_t sd_launch(const char *name, void (*kernel)(P...), dim3 grid, dim3 block,
                                    size_t shmem, cudaStream_t stream, A &&...args)
{
    cudaError_t e = sd_launch_raw(name, kernel, grid, block, shmem, stream, std::forward<A>(args)...);
    if (e != cudaSuccess) (void)cudaGetLastError();
    return e;
}

// kernel<<<grid, block, shmem, stream>>>(args...) returning the launch's cudaError_t.
#define SD_LAUNCH(kernel, grid, block, shmem, stream, ...)                                       \
    sd_launch(#kernel, kernel, grid, block, shmem, stream, __VA_ARGS__)

#endif
