// The CUDA host mode (-DSPECDEC_CUDA_SIM=ON): the kernel language and the runtime API that
// specdec's .cu files use, for the host C++ compiler. A launch runs every block of the grid
// (blocks on a few OS threads, the threads of a block as fibers that switch at barriers and
// warp operations, in the order SPECDEC_CUDA_SIM_SCHEDULE names); streams are synchronous.
// What it checks and what only a GPU can: docs/cuda.md, "The CUDA host mode".
#ifndef SPECDEC_CORE_CUDASIM_SIM_H
#define SPECDEC_CORE_CUDASIM_SIM_H

#ifndef __cplusplus
#error "core/cudasim/sim.h is C++ (the .cu files of the CUDA host mode)"
#endif

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <functional>
#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>

#define SPECDEC_CUDA_SIM 1
// Device code paths (intrinsics rather than host fallbacks) are the ones exercised.
#ifndef __CUDA_ARCH__
#define __CUDA_ARCH__ 900
#endif

// ---- qualifiers ------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
// One instance per OS thread, and a block's fibers all run on one OS thread.
#define __shared__ static thread_local

// ---- built-in variables ----------------------------------------------------------------
struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
};
// Set by the scheduler before it resumes a fiber (threadIdx) or runs a block (the others).
extern __thread uint3 threadIdx, blockIdx, blockDim, gridDim;
constexpr int warpSize = 32;

// ---- barriers and warp operations (core/cudasim/exec.cc) -------------------------------
namespace sd_sim {
enum warp_kind { SHFL_IDX, SHFL_UP, SHFL_DOWN, SHFL_XOR, BALLOT, SYNCWARP };
// Lane results of one warp operation over the lanes of `mask` (all must arrive).
uint64_t warp_op(warp_kind kind, unsigned mask, uint64_t value, int arg, int width);
// The block barrier; returns the count of threads that passed a non-zero pred.
int barrier(int pred);
void yield(void);                        // let the block's other fibers run (spin loops)
[[noreturn]] void trap(const char *why); // ends the launch with a sticky error
void *dynamic_shared(void);              // this block's dynamic shared memory

template <class T> static inline T warp_op_as(warp_kind kind, unsigned mask, T v, int arg, int width)
{
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffle of a word");
    uint64_t bits = 0;
    memcpy(&bits, &v, sizeof v);
    bits = warp_op(kind, mask, bits, arg, width);
    memcpy(&v, &bits, sizeof v);
    return v;
}
} // namespace sd_sim

static inline void __syncthreads(void) { sd_sim::barrier(1); }
static inline int __syncthreads_count(int p) { return sd_sim::barrier(p != 0); }
static inline int __syncthreads_and(int p) { return sd_sim::barrier(p != 0) == (int)(blockDim.x * blockDim.y * blockDim.z); }
static inline int __syncthreads_or(int p) { return sd_sim::barrier(p != 0) > 0; }
static inline void __syncwarp(unsigned mask = 0xffffffffu) { sd_sim::warp_op(sd_sim::SYNCWARP, mask, 0, 0, 32); }
static inline unsigned __ballot_sync(unsigned mask, int pred)
{
    return (unsigned)sd_sim::warp_op(sd_sim::BALLOT, mask, pred != 0, 0, 32);
}
static inline int __any_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) != 0; }
static inline int __all_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) == mask; }
template <class T> static inline T __shfl_sync(unsigned mask, T v, int src, int width = 32)
{
    return sd_sim::warp_op_as(sd_sim::SHFL_IDX, mask, v, src, width);
}
template <class T> static inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32)
{
    return sd_sim::warp_op_as(sd_sim::SHFL_UP, mask, v, (int)delta, width);
}
template <class T> static inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32)
{
    return sd_sim::warp_op_as(sd_sim::SHFL_DOWN, mask, v, (int)delta, width);
}
template <class T> static inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32)
{
    return sd_sim::warp_op_as(sd_sim::SHFL_XOR, mask, v, lane_mask, width);
}
static inline void __nanosleep(unsigned) { sd_sim::yield(); }
static inline void __trap(void) { sd_sim::trap("__trap()"); }

// ---- atomics and fences (blocks run on several OS threads: real atomics) ---------------
static inline void __threadfence_block(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
static inline void __threadfence(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
static inline void __threadfence_system(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
template <class T> static inline T atomicAdd(T *p, T v)
{
    if constexpr (std::is_integral<T>::value) {
        return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
    } else { // float, double: compare-and-swap on the bits
        T old, next;
        __atomic_load(p, &old, __ATOMIC_RELAXED);
        do {
            next = old + v;
        } while (!__atomic_compare_exchange(p, &old, &next, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
        return old;
    }
}
template <class T> static inline T atomicSub(T *p, T v) { return __atomic_fetch_sub(p, v, __ATOMIC_RELAXED); }
template <class T> static inline T atomicExch(T *p, T v) { return __atomic_exchange_n(p, v, __ATOMIC_RELAXED); }
template <class T> static inline T atomicOr(T *p, T v) { return __atomic_fetch_or(p, v, __ATOMIC_RELAXED); }
template <class T> static inline T atomicAnd(T *p, T v) { return __atomic_fetch_and(p, v, __ATOMIC_RELAXED); }
template <class T> static inline T atomicCAS(T *p, T expected, T desired)
{
    __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
    return expected;
}
template <class T> static inline T atomicMax(T *p, T v)
{
    T old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (old < v && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    return old;
}
template <class T> static inline T atomicMin(T *p, T v)
{
    T old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (old > v && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    return old;
}

// ---- math intrinsics: IEEE round-to-nearest (the .cu files build with -ffp-contract=off) --
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __frcp_rn(float a) { return 1.0f / a; }
static inline float __fsqrt_rn(float a) { return sqrtf(a); }
static inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline double __dsub_rn(double a, double b) { return a - b; }
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline double __ddiv_rn(double a, double b) { return a / b; }
static inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }
static inline float __double2float_rn(double x) { return (float)x; }
static inline double __ull2double_rn(unsigned long long x) { return (double)x; }
static inline double __ll2double_rn(long long x) { return (double)x; }
static inline float __int2float_rn(int x) { return (float)x; }
template <class To, class From> static inline To sd_sim_bits(From f)
{
    static_assert(sizeof(To) == sizeof(From), "same width");
    To t;
    memcpy(&t, &f, sizeof t);
    return t;
}
static inline float __int_as_float(int x) { return sd_sim_bits<float>(x); }
static inline float __uint_as_float(unsigned x) { return sd_sim_bits<float>(x); }
static inline int __float_as_int(float x) { return sd_sim_bits<int>(x); }
static inline unsigned __float_as_uint(float x) { return sd_sim_bits<unsigned>(x); }
static inline double __longlong_as_double(long long x) { return sd_sim_bits<double>(x); }
static inline long long __double_as_longlong(double x) { return sd_sim_bits<long long>(x); }
static inline int __popc(unsigned x) { return __builtin_popcount(x); }
static inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
static inline int __clz(int x) { return x ? __builtin_clz((unsigned)x) : 32; }
static inline int __clzll(long long x) { return x ? __builtin_clzll((unsigned long long)x) : 64; }
static inline int __ffs(int x) { return __builtin_ffs(x); }
template <class T> static inline T __ldg(const T *p) { return *p; }
static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }
static inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
static inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
static inline long long min(long long a, long long b) { return a < b ? a : b; }
static inline long long max(long long a, long long b) { return a > b ? a : b; }
static inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
static inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
static inline float min(float a, float b) { return fminf(a, b); }
static inline float max(float a, float b) { return fmaxf(a, b); }

// ---- the runtime API (core/cudasim/runtime.cc) ----------------------------------------
typedef enum cudaError {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidDevicePointer = 17,
    cudaErrorInvalidMemcpyDirection = 21,
    cudaErrorInsufficientDriver = 35,
    cudaErrorNoDevice = 100,
    cudaErrorInvalidDevice = 101,
    cudaErrorInvalidResourceHandle = 400,
    cudaErrorIllegalState = 401,
    cudaErrorNotReady = 600,
    cudaErrorIllegalAddress = 700,
    cudaErrorLaunchFailure = 719,
    cudaErrorNotSupported = 801,
    cudaErrorStreamCaptureUnsupported = 900,
    cudaErrorStreamCaptureInvalidated = 901,
    cudaErrorStreamCaptureWrongThread = 908,
    cudaErrorUnknown = 999,
} cudaError_t;

typedef struct sd_sim_stream *cudaStream_t;
typedef struct sd_sim_event *cudaEvent_t;
typedef struct sd_sim_graph *cudaGraph_t;
typedef struct sd_sim_graph_exec *cudaGraphExec_t;
#define cudaStreamDefault 0x0u
#define cudaStreamNonBlocking 0x1u
#define cudaStreamLegacy ((cudaStream_t)0x1)
#define cudaStreamPerThread ((cudaStream_t)0x2)

enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4,
};
enum cudaStreamCaptureMode {
    cudaStreamCaptureModeGlobal = 0,
    cudaStreamCaptureModeThreadLocal = 1,
    cudaStreamCaptureModeRelaxed = 2,
};
enum cudaStreamCaptureStatus {
    cudaStreamCaptureStatusNone = 0,
    cudaStreamCaptureStatusActive = 1,
    cudaStreamCaptureStatusInvalidated = 2,
};
enum cudaDeviceAttr {
    cudaDevAttrMaxThreadsPerBlock = 1,
    cudaDevAttrMaxSharedMemoryPerBlock = 8,
    cudaDevAttrWarpSize = 10,
    cudaDevAttrMultiProcessorCount = 16,
    cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

struct cudaDeviceProp {
    char name[256];
    size_t totalGlobalMem, sharedMemPerBlock, sharedMemPerBlockOptin;
    int warpSize, maxThreadsPerBlock, maxThreadsDim[3], maxGridSize[3];
    int major, minor, multiProcessorCount;
};

const char *cudaGetErrorString(cudaError_t e);
const char *cudaGetErrorName(cudaError_t e);
cudaError_t cudaGetLastError(void);
cudaError_t cudaPeekAtLastError(void);

cudaError_t cudaGetDeviceCount(int *count);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDevice(int *device);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *prop, int device);
cudaError_t cudaDeviceGetAttribute(int *value, cudaDeviceAttr attr, int device);
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes);
cudaError_t cudaDeviceSynchronize(void);
cudaError_t cudaFuncSetAttribute(const void *func, cudaFuncAttribute attr, int value);
template <class... P> static inline cudaError_t cudaFuncSetAttribute(void (*f)(P...), cudaFuncAttribute a, int v)
{
    return cudaFuncSetAttribute((const void *)f, a, v);
}

cudaError_t cudaMalloc(void **ptr, size_t bytes);
template <class T> static inline cudaError_t cudaMalloc(T **ptr, size_t bytes) { return cudaMalloc((void **)ptr, bytes); }
cudaError_t cudaFree(void *ptr);
cudaError_t cudaMallocHost(void **ptr, size_t bytes);
template <class T> static inline cudaError_t cudaMallocHost(T **ptr, size_t bytes) { return cudaMallocHost((void **)ptr, bytes); }
cudaError_t cudaFreeHost(void *ptr);
#define cudaHostAllocDefault 0x0u
#define cudaHostAllocMapped 0x2u
// Pinned host memory; "mapped" changes nothing: a kernel reads host memory as it is.
cudaError_t cudaHostAlloc(void **ptr, size_t bytes, unsigned flags);
template <class T> static inline cudaError_t cudaHostAlloc(T **ptr, size_t bytes, unsigned flags)
{
    return cudaHostAlloc((void **)ptr, bytes, flags);
}
cudaError_t cudaHostGetDevicePointer(void **dev, void *host, unsigned flags);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind);

// CUDA IPC between rank processes: device allocations of SD_SIM_SHAREABLE_BYTES or more are
// POSIX shared memory (a memfd), whose handle names the owner's pid and descriptor; another
// process maps it with cudaIpcOpenMemHandle (flags ignored) and unmaps it with
// cudaIpcCloseMemHandle. Smaller allocations: cudaErrorInvalidValue.
#define SD_SIM_SHAREABLE_BYTES ((size_t)16 << 20)
typedef struct cudaIpcMemHandle_st { char reserved[64]; } cudaIpcMemHandle_t;
#define cudaIpcMemLazyEnablePeerAccess 0x1u
cudaError_t cudaIpcGetMemHandle(cudaIpcMemHandle_t *handle, void *dev);
cudaError_t cudaIpcOpenMemHandle(void **dev, cudaIpcMemHandle_t handle, unsigned flags);
template <class T> static inline cudaError_t cudaIpcOpenMemHandle(T **dev, cudaIpcMemHandle_t h, unsigned f)
{
    return cudaIpcOpenMemHandle((void **)dev, h, f);
}
cudaError_t cudaIpcCloseMemHandle(void *dev);
enum cudaMemoryType {
    cudaMemoryTypeUnregistered = 0,
    cudaMemoryTypeHost = 1,
    cudaMemoryTypeDevice = 2,
    cudaMemoryTypeManaged = 3,
};
struct cudaPointerAttributes {
    cudaMemoryType type;
    int device;
    void *devicePointer, *hostPointer;
};
// Unregistered for memory the runtime did not allocate (as CUDA 11+).
cudaError_t cudaPointerGetAttributes(cudaPointerAttributes *attr, const void *ptr);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream = 0);
cudaError_t cudaMemset(void *dst, int value, size_t bytes);
cudaError_t cudaMemsetAsync(void *dst, int value, size_t bytes, cudaStream_t stream = 0);

cudaError_t cudaStreamCreate(cudaStream_t *stream);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t stream);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaStreamQuery(cudaStream_t stream);
cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode mode);
cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t *graph);
cudaError_t cudaStreamIsCapturing(cudaStream_t stream, cudaStreamCaptureStatus *status);
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph, unsigned long long flags = 0);
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream);
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec);
cudaError_t cudaGraphDestroy(cudaGraph_t graph);

cudaError_t cudaEventCreate(cudaEvent_t *event);
cudaError_t cudaEventDestroy(cudaEvent_t event);
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream = 0);
cudaError_t cudaEventSynchronize(cudaEvent_t event);
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end);

// ---- kernel launch ------------------------------------------------------------------------
namespace sd_sim {
// Checks the geometry and shared memory against the device limits, then runs `body` once per
// thread of every block (or records the launch in the stream's capture).
cudaError_t launch(const char *name, const void *fn, dim3 grid, dim3 block, size_t shmem,
                   cudaStream_t stream, std::function<void()> body);
} // namespace sd_sim

// kernel<<<grid, block, shmem, stream>>>(args...), named for diagnostics (what
// cudaLaunchKernelEx is to nvcc; core/cudasim/kernel.cuh's SD_LAUNCH calls one or the other).
template <class... P, class... A>
static inline cudaError_t sd_sim_launch(const char *name, void (*kernel)(P...), dim3 grid, dim3 block,
                                        size_t shmem, cudaStream_t stream, A &&...args)
{
    static_assert(sizeof...(P) == sizeof...(A), "kernel launched with the wrong argument count");
    auto params = std::make_shared<std::tuple<std::decay_t<P>...>>(std::forward<A>(args)...);
    return sd_sim::launch(name, (const void *)kernel, grid, block, shmem, stream,
                          [kernel, params] { std::apply(kernel, *params); });
}

#endif
