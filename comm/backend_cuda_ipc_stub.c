/* The cuda_ipc backend when the CUDA comm kernels are not built (no nvcc+NCCL, no host mode). */
#include "comm/comm_impl.h"

sd_status_t sd_comm_cuda_ipc_new(sd_comm_t *host, int device, sd_comm_t **out)
{
    (void)device;
    sd_comm_free(host);
    *out = NULL;
    return sd_set_error(SD_ERR_NOT_BUILT, "specdec was built without the CUDA comm kernels: no "
                                          "cuda_ipc backend");
}

int sd_comm_cuda_ipc_built(void) { return 0; }
