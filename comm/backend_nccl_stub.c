/* The nccl backend when specdec was built without CUDA and NCCL. */
#include "comm/comm_impl.h"

sd_status_t sd_comm_nccl_new(sd_comm_t *boot, sd_comm_t **out)
{
    *out = NULL;
    return sd_set_error(SD_ERR_NOT_BUILT,
                        "specdec was built without NCCL (install the CUDA toolkit and NCCL, "
                        "then rebuild)");
}

int sd_comm_nccl_built(void) { return 0; }

int sd_comm_nccl_device_count(void) { return 0; }

sd_status_t sd_comm_nccl_use_intra(sd_comm_t *c)
{
    (void)c;
    return sd_set_error(SD_ERR_NOT_BUILT, "specdec was built without NCCL: no CUDA IPC allreduce");
}
