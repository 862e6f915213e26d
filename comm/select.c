/* Backend selection: the one place that reads SPECDEC_COMM and ENABLE_INTRA_NODE_COMM. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm/comm.h"
#include "core/log.h"

int sd_comm_mpi_launched(void)
{
    const char *a = getenv("OMPI_COMM_WORLD_SIZE"), *b = getenv("PMI_SIZE");
    return (a && a[0]) || (b && b[0]);
}

/* "single, intra[, mpi][, nccl]" */
static const char *built_list(void)
{
    static char buf[64];
    snprintf(buf, sizeof buf, "single, intra%s%s", sd_comm_mpi_built() ? ", mpi" : "",
             sd_comm_nccl_built() ? ", nccl" : "");
    return buf;
}

static sd_status_t from_override(const char *v, int world_size, const char **name)
{
    static const char *const known[] = {"single", "intra", "mpi", "nccl"};
    int built[] = {1, 1, sd_comm_mpi_built(), sd_comm_nccl_built()};
    for (int i = 0; i < 4; i++) {
        if (strcmp(v, known[i]) != 0) continue;
        if (!built[i])
            return sd_set_error(SD_ERR_NOT_BUILT,
                                "SPECDEC_COMM=%s: this build has no %s backend (built: %s)", v, v,
                                built_list());
        if (i == 0 && world_size > 1)
            return sd_set_error(SD_ERR_INVALID_ARG,
                                "SPECDEC_COMM=single with a world of %d ranks (built: %s)",
                                world_size, built_list());
        *name = known[i];
        return SD_OK;
    }
    return sd_set_error(SD_ERR_INVALID_ARG, "SPECDEC_COMM='%s' is not a backend (built: %s)", v,
                        built_list());
}

static sd_status_t intra_enabled(int *on)
{
    const char *v = getenv("ENABLE_INTRA_NODE_COMM");
    *on = v && strcmp(v, "1") == 0;
    if (v == NULL || v[0] == '\0' || strcmp(v, "0") == 0 || *on) return SD_OK;
    return sd_set_error(SD_ERR_INVALID_ARG, "ENABLE_INTRA_NODE_COMM='%s' must be 0 or 1", v);
}

sd_status_t sd_comm_select(int world_size, int on_gpu, const char **name)
{
    const char *v = getenv("SPECDEC_COMM");
    if (v && v[0]) return from_override(v, world_size, name);
    int intra;
    SD_CHECK(intra_enabled(&intra));
    if (world_size <= 1) {
        *name = "single";
    } else if (intra) {
        *name = "intra";
    } else if (on_gpu && sd_comm_nccl_built()) {
        *name = "nccl";
    } else if (sd_comm_mpi_built() && sd_comm_mpi_launched()) {
        *name = "mpi";
    } else {
        *name = "intra";
        sd_log(SD_LOG_INFO, "comm: using intra for %d ranks (%s%s)", world_size,
               on_gpu ? "nccl not built; " : "",
               sd_comm_mpi_built() ? "not launched by mpirun" : "mpi not built");
    }
    return SD_OK;
}
