// The CUDA libraries in the device health check (sd_cuda_self_test): a cuBLAS handle and a
// cuRAND generator can be made. The CUDA host mode emulates neither: libraries_stub.cu.
#include <cublas_v2.h>
#include <curand.h>

#include "check.cuh"

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

sd_status_t sd_cuda_check_libraries(void)
{
    cublasHandle_t blas;
    SD_CUDA_CHECK(cublasCreate(&blas));
    cublasDestroy(blas);
    curandGenerator_t gen;
    SD_CUDA_CHECK(curandCreateGenerator(&gen, CURAND_RNG_PSEUDO_PHILOX4_32_10));
    curandDestroyGenerator(gen);
    return SD_OK;
}
