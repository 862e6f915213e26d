// The CUDA host mode (docs/cuda.md) emulates neither cuBLAS nor cuRAND: the health check
// says so and passes (libraries.cu checks them where the toolkit builds the backend).
#include "check.cuh"

extern "C" {
#include "core/log.h"
}

sd_status_t sd_cuda_check_libraries(void)
{
    sd_log(SD_LOG_INFO, "CUDA host mode: cuBLAS and cuRAND are not emulated; their handles are "
                        "not checked");
    return SD_OK;
}
