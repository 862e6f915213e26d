// One generator for CUDA / cuBLAS / cuRAND error checks: each failure becomes
// SD_ERR_DEVICE with the library's own error name, the call and file:line.
#ifndef SPECDEC_KERNELS_CUDA_CHECK_CUH
#define SPECDEC_KERNELS_CUDA_CHECK_CUH

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <curand.h>

extern "C" {
#include "core/check.h"
}

static inline const char *sd_cuda_error_name(cudaError_t e) { return cudaGetErrorString(e); }
static inline const char *sd_cuda_error_name(cublasStatus_t e) { return cublasGetStatusString(e); }
static inline const char *sd_cuda_error_name(curandStatus_t e)
{
    switch (e) {
    case CURAND_STATUS_ALLOCATION_FAILED: return "CURAND_STATUS_ALLOCATION_FAILED";
    case CURAND_STATUS_INITIALIZATION_FAILED: return "CURAND_STATUS_INITIALIZATION_FAILED";
    case CURAND_STATUS_LAUNCH_FAILURE: return "CURAND_STATUS_LAUNCH_FAILURE";
    case CURAND_STATUS_ARCH_MISMATCH: return "CURAND_STATUS_ARCH_MISMATCH";
    default: return "CURAND_STATUS_ERROR";
    }
}

template <typename E> static inline bool sd_cuda_ok(E e) { return e == (E)0; }

#define SD_CUDA_CHECK(call)                                                                      \
    do {                                                                                         \
        auto sd_cuda_err_ = (call);                                                              \
        if (!sd_cuda_ok(sd_cuda_err_)) {                                                         \
            sd_error_trail(__FILE__, __LINE__, SD_ERR_DEVICE);                                   \
            return sd_set_error(SD_ERR_DEVICE, "%s failed: %s (%s:%d)", #call,                   \
                                sd_cuda_error_name(sd_cuda_err_), __FILE__, __LINE__);           \
        }                                                                                        \
    } while (0)

#endif
