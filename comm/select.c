/* Backend selection over the backend table (comm/backends.c): the one place that reads
 * SPECDEC_COMM and ENABLE_INTRA_NODE_COMM. */
#include <stdlib.h>
#include <string.h>

#include "comm/comm_impl.h"
#include "core/log.h"

int sd_comm_mpi_launched(void)
{
    const char *a = getenv("OMPI_COMM_WORLD_SIZE"), *b = getenv("PMI_SIZE");
    return (a && a[0]) || (b && b[0]);
}

int sd_comm_local_rank(void)
{
    static const char *const names[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "SPECDEC_LOCAL_RANK",
                                        "SPECDEC_RANK"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const char *v = getenv(names[i]);
        if (v && v[0]) return atoi(v) > 0 ? atoi(v) : 0;
    }
    return 0;
}

static int is_built(const char *name)
{
    const sd_comm_backend_t *b = sd_comm_backend_find(name);
    return b != NULL && b->built();
}

static sd_status_t from_override(const char *v, int world_size, const char **name)
{
    char built[128];
    sd_comm_built_names(built, sizeof built);
    const sd_comm_backend_t *b = sd_comm_backend_find(v);
    if (b == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG, "SPECDEC_COMM='%s' is not a backend (built: %s)", v,
                            built);
    if (!b->built())
        return sd_set_error(SD_ERR_NOT_BUILT,
                            "SPECDEC_COMM=%s: this build has no %s backend (built: %s)", v, v,
                            built);
    if (world_size > b->max_ranks)
        return sd_set_error(SD_ERR_INVALID_ARG,
                            "SPECDEC_COMM=%s with a world of %d ranks (built: %s)", v, world_size,
                            built);
    *name = b->name;
    return SD_OK;
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
    const char *gpu = on_gpu && is_built("nccl") ? "nccl" : NULL;
    if (world_size <= 1) {
        *name = "single";
    } else if (intra) {
        *name = on_gpu && is_built("cuda_ipc") ? "cuda_ipc" : "intra";
    } else if (gpu) {
        *name = gpu;
    } else if (is_built("mpi") && sd_comm_mpi_launched()) {
        *name = "mpi";
    } else {
        *name = "intra";
        sd_log(SD_LOG_INFO, "comm: using intra for %d ranks (%s%s)", world_size,
               on_gpu ? "nccl not built; " : "",
               is_built("mpi") ? "not launched by mpirun" : "mpi not built");
    }
    return SD_OK;
}
