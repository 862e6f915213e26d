// One generator for CUDA error checks: each failure becomes SD_ERR_DEVICE with the
// library's own error name, the call and file:line (libraries.cu adds cuBLAS's and cuRAND's
// names to the same macro).
#ifndef SPECDEC_KERNELS_CUDA_CHECK_CUH
#define SPECDEC_KERNELS_CUDA_CHECK_CUH

#include <cuda_runtime.h>

#include "core/cudasim/kernel.cuh"

extern "C" {
#include "core/check.h"
}

static inline const char *sd_cuda_error_name(cudaError_t e) { return cudaGetErrorString(e); }

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

// cuBLAS and cuRAND handles can be made (libraries.cu); the CUDA host mode emulates neither,
// says so and passes (libraries_stub.cu).
sd_status_t sd_cuda_check_libraries(void);

#endif
