// Device discovery and the health check run before a model is placed on a GPU.
#include <cstdio>
#include <cstring>

#include "check.cuh"

extern "C" {
#include "kernels/cuda.h"
}

extern "C" int sd_cuda_built(void) { return 1; }
extern "C" int sd_cuda_host_mode(void) { return SD_CUDA_HOST_MODE; }

extern "C" sd_status_t sd_cuda_device_count(int *count)
{
    *count = 0;
    cudaError_t e = cudaGetDeviceCount(count);
    if (e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver) {
        cudaGetLastError(); // clear the sticky "no device" state
        *count = 0;
        return SD_OK;
    }
    SD_CUDA_CHECK(e);
    return SD_OK;
}

extern "C" sd_status_t sd_cuda_device_info(int index, sd_cuda_device_info_t *out)
{
    int count = 0;
    SD_CHECK(sd_cuda_device_count(&count));
    if (index < 0 || index >= count)
        return sd_set_error(SD_ERR_INVALID_ARG, "CUDA device %d does not exist (%d devices)",
                            index, count);
    cudaDeviceProp prop;
    SD_CUDA_CHECK(cudaGetDeviceProperties(&prop, index));
    SD_CUDA_CHECK(cudaSetDevice(index));
    memset(out, 0, sizeof *out);
    out->index = index;
    snprintf(out->name, sizeof out->name, "%s", prop.name);
    out->cc_major = prop.major;
    out->cc_minor = prop.minor;
    out->multiprocessors = prop.multiProcessorCount;
    SD_CUDA_CHECK(cudaMemGetInfo(&out->free_memory, &out->total_memory));
    return SD_OK;
}

// y[i] = a * x[i] + i, one thread per element.
__global__ static void self_test_kernel(const float *x, float a, float *y, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = a * x[i] + (float)i;
}

static sd_status_t run_self_test_kernel(float *dx, float *dy, int n)
{
    float host[1000];
    for (int i = 0; i < n; i++) host[i] = (float)(i % 7);
    SD_CUDA_CHECK(cudaMemcpy(dx, host, n * sizeof(float), cudaMemcpyHostToDevice));
    SD_CUDA_CHECK(SD_LAUNCH(self_test_kernel, (n + 255) / 256, 256, 0, 0, dx, 3.0f, dy, n));
    SD_CUDA_CHECK(cudaMemcpy(host, dy, n * sizeof(float), cudaMemcpyDeviceToHost));
    for (int i = 0; i < n; i++)
        if (host[i] != 3.0f * (float)(i % 7) + (float)i)
            return sd_set_error(SD_ERR_DEVICE, "CUDA self-test: y[%d] = %g, expected %g", i,
                                host[i], 3.0f * (float)(i % 7) + (float)i);
    return SD_OK;
}

extern "C" sd_status_t sd_cuda_self_test(int index)
{
    sd_cuda_device_info_t info;
    SD_CHECK(sd_cuda_device_info(index, &info));
    enum { N = 1000 };
    float *dx = nullptr, *dy = nullptr;
    SD_CUDA_CHECK(cudaMalloc(&dx, N * sizeof(float)));
    if (cudaMalloc(&dy, N * sizeof(float)) != cudaSuccess) {
        cudaFree(dx);
        return sd_set_error(SD_ERR_DEVICE, "CUDA self-test: cudaMalloc of %zu bytes failed",
                            N * sizeof(float));
    }
    sd_status_t s = run_self_test_kernel(dx, dy, N);
    cudaFree(dx);
    cudaFree(dy);
    SD_CHECK(s);
    return sd_cuda_check_libraries();
}

// Device-to-device copy bandwidth: the best of `reps` timed cudaMemcpy of `bytes`, counting
// the bytes read plus the bytes written (the roofline's denominator for a kernel that
// streams its weights once).
static sd_status_t time_copies(void *dst, const void *src, size_t bytes, int reps, double *gbps)
{
    cudaEvent_t t0, t1;
    SD_CUDA_CHECK(cudaEventCreate(&t0));
    SD_CUDA_CHECK(cudaEventCreate(&t1));
    float best_ms = 1e30f;
    for (int r = 0; r <= reps; r++) { // r = 0 warms up
        SD_CUDA_CHECK(cudaEventRecord(t0));
        SD_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice));
        SD_CUDA_CHECK(cudaEventRecord(t1));
        SD_CUDA_CHECK(cudaEventSynchronize(t1));
        float ms = 0.0f;
        SD_CUDA_CHECK(cudaEventElapsedTime(&ms, t0, t1));
        if (r > 0 && ms < best_ms) best_ms = ms;
    }
    cudaEventDestroy(t0);
    cudaEventDestroy(t1);
    *gbps = 2.0 * (double)bytes / (best_ms * 1e-3) / 1e9;
    return SD_OK;
}

extern "C" sd_status_t sd_cuda_copy_bandwidth(int index, size_t bytes, int reps, double *gbps)
{
    *gbps = 0.0;
    if (bytes == 0 || reps < 1)
        return sd_set_error(SD_ERR_INVALID_ARG, "copy bandwidth: bytes = %zu, reps = %d", bytes,
                            reps);
    sd_cuda_device_info_t info;
    SD_CHECK(sd_cuda_device_info(index, &info));
    void *a = nullptr, *b = nullptr;
    SD_CUDA_CHECK(cudaMalloc(&a, bytes));
    if (cudaMalloc(&b, bytes) != cudaSuccess) {
        cudaFree(a);
        return sd_set_error(SD_ERR_OUT_OF_MEMORY, "copy bandwidth: cudaMalloc of %zu bytes failed",
                            bytes);
    }
    sd_status_t s = time_copies(b, a, bytes, reps, gbps);
    cudaFree(a);
    cudaFree(b);
    return s;
}
