/* The CUDA language specdec's kernels use, on a GPU (nvcc) and in the CUDA host mode alike:
 * block barriers, static and dynamic shared memory, warp shuffles and votes, atomics, the
 * launch form (SD_LAUNCH) and the device's launch limits, stream capture and graphs. The
 * host_mode tests check what only the host mode can (a barrier in divergent code, a warp
 * operation that a lane never reaches, a deadlock, copies past an allocation): on a GPU such
 * a kernel hangs or is undefined, so they skip there. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/cudasim/kernel.cuh"

extern "C" {
#include "kernels/cuda.h"
}

#define FULL 0xffffffffu

static void need_device(void)
{
    int n = 0;
    if (sd_cuda_device_count(&n) != SD_OK || n == 0) cr_skip_test("no CUDA device on this machine");
    cr_assert_eq(cudaSetDevice(0), cudaSuccess);
}

#define CUDA_OK(call)                                                                            \
    do {                                                                                         \
        cudaError_t e_ = (call);                                                                 \
        cr_assert_eq(e_, cudaSuccess, "%s: %s", #call, cudaGetErrorString(e_));                  \
    } while (0)

template <class T> static T *device_array(size_t n)
{
    T *p = NULL;
    CUDA_OK(cudaMalloc(&p, n * sizeof(T)));
    return p;
}

/* ---- barriers and shared memory -------------------------------------------------------- */

/* Each block reverses its slice through shared memory: every read is another thread's write,
 * so the barrier is what makes it right. */
static __global__ void reverse_static(const int *in, int *out)
{
    __shared__ int buf[256];
    const int t = threadIdx.x, base = blockIdx.x * blockDim.x;
    buf[t] = in[base + t];
    __syncthreads();
    out[base + t] = buf[blockDim.x - 1 - t];
}

static __global__ void reverse_dynamic(const int *in, int *out)
{
    SD_DYNAMIC_SHARED(int, buf);
    const int t = threadIdx.x, base = blockIdx.x * blockDim.x;
    buf[t] = in[base + t];
    __syncthreads();
    out[base + t] = buf[blockDim.x - 1 - t];
}

Test(cuda_lang, shared_memory_and_barriers, .timeout = 60)
{
    need_device();
    enum { BLOCKS = 5, THREADS = 256, N = BLOCKS * THREADS };
    int host[N], back[N];
    for (int i = 0; i < N; i++) host[i] = i * 7 + 3;
    int *in = device_array<int>(N), *out = device_array<int>(N);
    CUDA_OK(cudaMemcpy(in, host, sizeof host, cudaMemcpyHostToDevice));
    for (int dynamic = 0; dynamic <= 1; dynamic++) {
        CUDA_OK(cudaMemset(out, 0, sizeof back));
        if (dynamic)
            CUDA_OK(SD_LAUNCH(reverse_dynamic, BLOCKS, THREADS, THREADS * sizeof(int), 0, in, out));
        else
            CUDA_OK(SD_LAUNCH(reverse_static, BLOCKS, THREADS, 0, 0, in, out));
        CUDA_OK(cudaMemcpy(back, out, sizeof back, cudaMemcpyDeviceToHost));
        for (int i = 0; i < N; i++)
            cr_assert_eq(back[i], host[(i / THREADS) * THREADS + THREADS - 1 - i % THREADS],
                         "%s shared memory, element %d", dynamic ? "dynamic" : "static", i);
    }
    cudaFree(in);
    cudaFree(out);
}

/* counts[0..2] = __syncthreads_count / _and / _or of per-thread predicates. */
static __global__ void barrier_votes(int *counts)
{
    const int t = threadIdx.x;
    int c = __syncthreads_count(t % 3 == 0);
    int a = __syncthreads_and(t < 1000);
    int o = __syncthreads_or(t == 77);
    int none = __syncthreads_or(0);
    if (t == 0) {
        counts[0] = c;
        counts[1] = a;
        counts[2] = o;
        counts[3] = none;
    }
}

Test(cuda_lang, barrier_votes, .timeout = 60)
{
    need_device();
    int *d = device_array<int>(4), got[4];
    CUDA_OK(SD_LAUNCH(barrier_votes, 1, 300, 0, 0, d));
    CUDA_OK(cudaMemcpy(got, d, sizeof got, cudaMemcpyDeviceToHost));
    cr_assert_eq(got[0], 100, "count %d", got[0]);
    cr_assert(got[1] != 0 && got[2] != 0 && got[3] == 0, "and %d or %d none %d", got[1], got[2], got[3]);
    cudaFree(d);
}

/* ---- warp operations --------------------------------------------------------------------- */

enum { WARP_RESULTS = 9 };

/* out[k][t]: result k of thread t (v = 3t + 1). */
static __global__ void warp_ops(int *out, unsigned long long *wide)
{
    const int t = threadIdx.x, lane = t % 32, n = blockDim.x;
    int v = 3 * t + 1;
    int sum = v;
    for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(FULL, sum, off);
    out[0 * n + t] = sum;
    out[1 * n + t] = __shfl_down_sync(FULL, v, 3);
    out[2 * n + t] = __shfl_up_sync(FULL, v, 5);
    out[3 * n + t] = __shfl_sync(FULL, v, 7);
    out[4 * n + t] = __shfl_xor_sync(FULL, v, 4, 8);
    out[5 * n + t] = (int)__ballot_sync(FULL, lane % 3 == 0);
    out[6 * n + t] = __any_sync(FULL, lane == 31) + 2 * __all_sync(FULL, lane < 31);
    out[7 * n + t] = __shfl_down_sync(FULL, v, 2, 16);
    out[8 * n + t] = __shfl_sync(FULL, v, lane + 9, 16); /* src wraps inside its 16-lane half */
    wide[t] = __shfl_xor_sync(FULL, (unsigned long long)v << 40 | (unsigned)t, 1);
}

/* The same on the host, lane by lane (CUDA's definitions). */
static int warp_expect(int k, int t)
{
    const int lane = t % 32, w0 = t - lane;
    auto v = [&](int l) { return 3 * (w0 + l) + 1; };
    switch (k) {
    case 0: {
        int s = 0;
        for (int l = 0; l < 32; l++) s += v(l);
        return s;
    }
    case 1: return v(lane + 3 < 32 ? lane + 3 : lane);
    case 2: return v(lane >= 5 ? lane - 5 : lane);
    case 3: return v(7);
    case 4: return v(lane ^ 4);
    case 5: {
        int bits = 0;
        for (int l = 0; l < 32; l += 3) bits |= 1 << l;
        return bits;
    }
    case 6: return 1;
    case 7: return v(lane % 16 + 2 < 16 ? lane + 2 : lane);
    case 8: return v((lane & ~15) + (lane + 9) % 16);
    }
    return 0;
}

Test(cuda_lang, warp_shuffles_and_votes, .timeout = 60)
{
    need_device();
    enum { THREADS = 96 };
    int *d = device_array<int>(WARP_RESULTS * THREADS), got[WARP_RESULTS * THREADS];
    unsigned long long *dw = device_array<unsigned long long>(THREADS), wide[THREADS];
    CUDA_OK(SD_LAUNCH(warp_ops, 1, THREADS, 0, 0, d, dw));
    CUDA_OK(cudaMemcpy(got, d, sizeof got, cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(wide, dw, sizeof wide, cudaMemcpyDeviceToHost));
    for (int k = 0; k < WARP_RESULTS; k++)
        for (int t = 0; t < THREADS; t++)
            cr_assert_eq(got[k * THREADS + t], warp_expect(k, t), "result %d of thread %d", k, t);
    for (int t = 0; t < THREADS; t++) {
        unsigned long long want = (unsigned long long)(3 * (t ^ 1) + 1) << 40 | (unsigned)(t ^ 1);
        cr_assert_eq(wide[t], want, "64-bit shuffle, thread %d", t);
    }
    cudaFree(d);
    cudaFree(dw);
}

/* ---- indices and atomics ----------------------------------------------------------------- */

/* Every thread of a 3-D grid of 3-D blocks records its coordinates at its global index and
 * counts itself. */
static __global__ void coordinates(unsigned *where, unsigned *count, float *fsum)
{
    const unsigned block = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
    const unsigned thread = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
    const unsigned i = block * blockDim.x * blockDim.y * blockDim.z + thread;
    where[i] = block << 16 | thread;
    atomicAdd(count, 1u);
    atomicAdd(fsum, 0.5f);
}

Test(cuda_lang, grid_coordinates_and_atomics, .timeout = 60)
{
    need_device();
    const dim3 grid(5, 3, 2), block(8, 4, 3);
    const unsigned blocks = 30, threads = 96, n = blocks * threads;
    unsigned *where = device_array<unsigned>(n), *count = device_array<unsigned>(1);
    float *fsum = device_array<float>(1);
    CUDA_OK(cudaMemset(count, 0, sizeof(unsigned)));
    CUDA_OK(cudaMemset(fsum, 0, sizeof(float)));
    CUDA_OK(SD_LAUNCH(coordinates, grid, block, 0, 0, where, count, fsum));
    unsigned *got = (unsigned *)malloc(n * sizeof *got), total = 0;
    float fs = 0.0f;
    CUDA_OK(cudaMemcpy(got, where, n * sizeof *got, cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(&total, count, sizeof total, cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(&fs, fsum, sizeof fs, cudaMemcpyDeviceToHost));
    for (unsigned i = 0; i < n; i++)
        cr_assert_eq(got[i], (i / threads) << 16 | (i % threads), "thread %u", i);
    cr_assert_eq(total, n);
    cr_assert_eq(fs, 0.5f * (float)n); /* exact: halves summed up to 1440 */
    free(got);
    cudaFree(where);
    cudaFree(count);
    cudaFree(fsum);
}

/* ---- launch limits --------------------------------------------------------------------- */

static __global__ void nothing(int *p)
{
    if (p) p[threadIdx.x] = 1;
}

/* Past the device's limits a launch fails and runs nothing; the error is the launch's own
 * (SD_LAUNCH leaves none behind for cudaGetLastError). */
Test(cuda_lang, launch_geometry_and_shared_memory_limits, .timeout = 60)
{
    need_device();
    cudaDeviceProp prop;
    CUDA_OK(cudaGetDeviceProperties(&prop, 0));
    cr_assert_eq(prop.maxThreadsPerBlock, 1024);
    const struct {
        dim3 grid, block;
    } bad[] = {
        {dim3(1), dim3(1025)},     {dim3(1), dim3(32, 32, 2)}, {dim3(1), dim3(1, 1, 65)},
        {dim3(1, 65536), dim3(32)}, {dim3(0), dim3(32)},        {dim3(1), dim3(0)},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cudaError_t e = SD_LAUNCH(nothing, bad[i].grid, bad[i].block, 0, 0, (int *)NULL);
        cr_assert_eq(e, cudaErrorInvalidConfiguration, "case %zu: %s", i, cudaGetErrorString(e));
        cr_assert_eq(cudaGetLastError(), cudaSuccess, "case %zu left an error behind", i);
    }
    CUDA_OK(SD_LAUNCH(nothing, dim3(1, 65535), dim3(1), 0, 0, (int *)NULL));
    CUDA_OK(SD_LAUNCH(nothing, dim3(1), dim3(1024), 0, 0, (int *)NULL));

    /* dynamic shared memory: 48 KiB without an opt-in, more with it, never past the device's */
    const size_t limit = prop.sharedMemPerBlock, optin = prop.sharedMemPerBlockOptin;
    CUDA_OK(SD_LAUNCH(nothing, 1, 32, limit, 0, (int *)NULL));
    cr_assert_neq(SD_LAUNCH(nothing, 1, 32, limit + 4, 0, (int *)NULL), cudaSuccess);
    CUDA_OK(cudaFuncSetAttribute(nothing, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)optin));
    CUDA_OK(SD_LAUNCH(nothing, 1, 32, optin, 0, (int *)NULL));
    cr_assert_neq(SD_LAUNCH(nothing, 1, 32, optin + 4, 0, (int *)NULL), cudaSuccess);
    cr_assert_neq(cudaFuncSetAttribute(nothing, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)optin + 4),
                  cudaSuccess);
    cudaGetLastError();
    CUDA_OK(cudaDeviceSynchronize());
}

/* ---- stream capture and graphs ------------------------------------------------------------- */

static __global__ void add_one(int *p) { p[threadIdx.x] += 1; }

/* A captured launch replays as often as the graph launches; an allocation during a capture
 * (a "potentially unsafe" call) fails and invalidates it; the stream works afterwards. */
Test(cuda_lang, capture_replays_and_refuses_unsafe_calls, .timeout = 60)
{
    need_device();
    cudaStream_t s;
    CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    int *d = device_array<int>(32), back[32];
    CUDA_OK(cudaMemsetAsync(d, 0, sizeof back, s));
    CUDA_OK(cudaStreamSynchronize(s));

    cudaGraph_t graph = NULL;
    CUDA_OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    CUDA_OK(SD_LAUNCH(add_one, 1, 32, 0, s, d));
    CUDA_OK(SD_LAUNCH(add_one, 1, 32, 0, s, d));
    CUDA_OK(cudaStreamEndCapture(s, &graph));
    CUDA_OK(cudaMemcpy(back, d, sizeof back, cudaMemcpyDeviceToHost));
    cr_assert_eq(back[0], 0, "a captured launch runs only when the graph does");
    cudaGraphExec_t exec = NULL;
    CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
    for (int i = 0; i < 3; i++) CUDA_OK(cudaGraphLaunch(exec, s));
    CUDA_OK(cudaStreamSynchronize(s));
    CUDA_OK(cudaMemcpy(back, d, sizeof back, cudaMemcpyDeviceToHost));
    for (int i = 0; i < 32; i++) cr_assert_eq(back[i], 6, "element %d", i);

    CUDA_OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    CUDA_OK(SD_LAUNCH(add_one, 1, 32, 0, s, d));
    void *p = NULL;
    cr_assert_eq(cudaMalloc(&p, 64), cudaErrorStreamCaptureUnsupported);
    cudaGraph_t spoiled = NULL;
    cr_assert_eq(cudaStreamEndCapture(s, &spoiled), cudaErrorStreamCaptureInvalidated);
    cr_assert_null(spoiled);
    cudaGetLastError();
    CUDA_OK(SD_LAUNCH(add_one, 1, 32, 0, s, d));
    CUDA_OK(cudaStreamSynchronize(s));
    CUDA_OK(cudaMemcpy(back, d, sizeof back, cudaMemcpyDeviceToHost));
    cr_assert_eq(back[5], 7, "the spoiled capture ran nothing; the eager launch did");
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    cudaStreamDestroy(s);
    cudaFree(d);
}

/* ---- what only the host mode checks --------------------------------------------------------- */

static void need_host_mode(void)
{
    if (!sd_cuda_host_mode())
        cr_skip_test("on a GPU this kernel hangs or is undefined; only the CUDA host mode checks it");
    cr_assert_eq(cudaSetDevice(0), cudaSuccess);
}

/* The launch runs nothing wrong silently: the next synchronisation reports a launch failure
 * whose text names the kernel, the block and `what`. */
static void expect_launch_failure(cudaError_t launch, const char *what)
{
    cr_assert_eq(launch, cudaSuccess, "the launch itself is fine: %s", cudaGetErrorString(launch));
    cudaError_t e = cudaDeviceSynchronize();
    cr_assert_eq(e, cudaErrorLaunchFailure, "%s", cudaGetErrorString(e));
    cr_assert(strstr(cudaGetErrorString(e), what) != NULL, "%s", cudaGetErrorString(e));
    cr_assert(strstr(cudaGetErrorString(e), "block (0,0,0)") != NULL, "%s", cudaGetErrorString(e));
}

static __global__ void barrier_after_exit(int *p)
{
    if (threadIdx.x >= 40) return;
    __syncthreads();
    p[threadIdx.x] = 1;
}

Test(cuda_lang, host_mode_barrier_in_divergent_code_fails, .timeout = 60)
{
    need_host_mode();
    int *d = device_array<int>(64);
    expect_launch_failure(SD_LAUNCH(barrier_after_exit, 1, 64, 0, 0, d), "exited");
}

static __global__ void shuffle_missing_a_lane(int *p)
{
    if (threadIdx.x == 5) return;
    p[threadIdx.x] = __shfl_down_sync(FULL, (int)threadIdx.x, 1);
}

Test(cuda_lang, host_mode_shuffle_without_all_its_lanes_fails, .timeout = 60)
{
    need_host_mode();
    int *d = device_array<int>(32);
    expect_launch_failure(SD_LAUNCH(shuffle_missing_a_lane, 1, 32, 0, 0, d), "__shfl_down_sync");
}

static __global__ void warp_op_against_barrier(int *p)
{
    if (threadIdx.x < 16) __syncthreads();
    else p[threadIdx.x] = __shfl_xor_sync(FULL, 1, 1);
}

Test(cuda_lang, host_mode_deadlock_fails, .timeout = 60)
{
    need_host_mode();
    int *d = device_array<int>(32);
    expect_launch_failure(SD_LAUNCH(warp_op_against_barrier, 1, 32, 0, 0, d), "deadlock");
}

/* Copies are checked against the allocations: past the end of one, or device memory where
 * the direction says host. */
Test(cuda_lang, host_mode_copies_stay_inside_allocations, .timeout = 60)
{
    need_host_mode();
    int *d = device_array<int>(16), host[17] = {0};
    cr_assert_eq(cudaMemcpy(d, host, 17 * sizeof(int), cudaMemcpyHostToDevice), cudaErrorInvalidValue);
    cr_assert_eq(cudaMemcpy(host, d + 1, 16 * sizeof(int), cudaMemcpyDeviceToHost), cudaErrorInvalidValue);
    cr_assert_eq(cudaMemcpy(d, d + 8, 4, cudaMemcpyHostToDevice), cudaErrorInvalidValue);
    CUDA_OK(cudaMemcpy(d, host, 16 * sizeof(int), cudaMemcpyHostToDevice));
    cudaGetLastError();
}
