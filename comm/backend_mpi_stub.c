/* The mpi backend when specdec was built without MPI. */
#include "comm/comm_impl.h"

sd_status_t sd_comm_mpi_new(sd_comm_t **out)
{
    *out = NULL;
    return sd_set_error(SD_ERR_NOT_BUILT,
                        "specdec was built without MPI (install libopenmpi-dev and rebuild)");
}

int sd_comm_mpi_built(void) { return 0; }
