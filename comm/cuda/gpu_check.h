/* One generator for CUDA runtime and NCCL error checks, shared by the C host code
 * (comm/backend_nccl.c) and the CUDA C++ files under comm/cuda/: a failing call becomes
 * SD_ERR_DEVICE with the call, the library's own error string and file:line. */
#ifndef SPECDEC_COMM_CUDA_GPU_CHECK_H
#define SPECDEC_COMM_CUDA_GPU_CHECK_H

#include <cuda_runtime_api.h>
#include <nccl.h>

#ifdef __cplusplus
extern "C" {
#endif
#include "core/check.h"
#ifdef __cplusplus
}
#endif

/* SD_ERR_DEVICE naming `call` and `why` at file:line. */
static inline sd_status_t sd_gpu_fail(const char *call, const char *why, const char *file,
                                      int line)
{
    return sd_set_error(SD_ERR_DEVICE, "%s failed: %s (%s:%d)", call, why, file, line);
}

static inline sd_status_t sd_gpu_status_cuda(cudaError_t e, const char *call, const char *file,
                                             int line)
{
    return e == cudaSuccess ? SD_OK : sd_gpu_fail(call, cudaGetErrorString(e), file, line);
}

static inline sd_status_t sd_gpu_status_nccl(ncclResult_t e, const char *call, const char *file,
                                             int line)
{
    return e == ncclSuccess ? SD_OK : sd_gpu_fail(call, ncclGetErrorString(e), file, line);
}

/* The sd_status_t of `call`, a cudaError_t or ncclResult_t expression (evaluated once). */
#ifdef __cplusplus
static inline sd_status_t sd_gpu_status(cudaError_t e, const char *c, const char *f, int l)
{
    return sd_gpu_status_cuda(e, c, f, l);
}
static inline sd_status_t sd_gpu_status(ncclResult_t e, const char *c, const char *f, int l)
{
    return sd_gpu_status_nccl(e, c, f, l);
}
#define SD_GPU_STATUS(call) sd_gpu_status((call), #call, __FILE__, __LINE__)
#else
#define SD_GPU_STATUS(call)                                                                      \
    _Generic((call), cudaError_t: sd_gpu_status_cuda, ncclResult_t: sd_gpu_status_nccl)(         \
        (call), #call, __FILE__, __LINE__)
#endif

/* Return (or jump to `label` with the status in `var`) when `call` fails. */
#define SD_GPU_CHECK(call) SD_CHECK(SD_GPU_STATUS(call))
#define SD_GPU_CHECK_GOTO(call, var, label) SD_CHECK_GOTO(SD_GPU_STATUS(call), var, label)

#endif
