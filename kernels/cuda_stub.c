/* kernels/cuda.h for builds without nvcc: every call says CUDA is not built in. */
#include "cuda.h"
#include "engine/check.h"

int sd_cuda_built(void) { return 0; }

static sd_status_t not_built(void)
{
    return sd_set_error(SD_ERR_NOT_BUILT, "this specdec was built without CUDA (nvcc not found "
                                          "at configure time)");
}

sd_status_t sd_cuda_device_count(int *count)
{
    *count = 0;
    return not_built();
}

sd_status_t sd_cuda_device_info(int index, sd_cuda_device_info_t *out)
{
    (void)index, (void)out;
    return not_built();
}

sd_status_t sd_cuda_self_test(int index)
{
    (void)index;
    return not_built();
}
