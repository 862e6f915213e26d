/* The backend table: one row per comm backend (name, built, buffers, rank limit, how to make
 * the world from the environment). Selection (comm/select.c), sd_comm_init (comm/comm.c)
 * and their error messages read it. */
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "comm/comm_impl.h"

static int always_built(void) { return 1; }

static sd_status_t single_world(const sd_comm_env_t *env, sd_comm_t **out)
{
    (void)env;
    return sd_comm_single_new(out);
}

static sd_status_t intra_world(const sd_comm_env_t *env, sd_comm_t **out)
{
    char solo[32];
    const char *job = env->job;
    if (job == NULL && env->size == 1) { /* nobody to meet: any unique name will do */
        snprintf(solo, sizeof solo, "solo-%d", (int)getpid());
        job = solo;
    }
    if (job == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG,
                            env->mpirun ? "the intra backend under mpirun needs SPECDEC_JOB_ID "
                                          "(mpirun -x SPECDEC_JOB_ID=<id> ...), or use "
                                          "SPECDEC_COMM=mpi"
                                        : "SPECDEC_JOB_ID is not set (world of %d ranks): run the "
                                          "ranks with `specdec launch`, which sets it",
                            env->size);
    return sd_comm_intra_new(env->rank, env->size, job, out);
}

static sd_status_t mpi_world(const sd_comm_env_t *env, sd_comm_t **out)
{
    (void)env;
    return sd_comm_mpi_new(out);
}

/* NCCL needs a CPU world to hand out its unique id; it is freed once NCCL is up. */
static sd_status_t nccl_world(const sd_comm_env_t *env, sd_comm_t **out)
{
    sd_comm_t *boot = NULL;
    if (sd_comm_mpi_built() && sd_comm_mpi_launched())
        SD_CHECK(sd_comm_mpi_new(&boot));
    else
        SD_CHECK(intra_world(env, &boot));
    sd_status_t st = sd_comm_nccl_new(boot, out);
    sd_comm_free(boot);
    return st;
}

/* The CUDA IPC allreduce over a CPU intra world (which carries everything else). */
static sd_status_t cuda_ipc_world(const sd_comm_env_t *env, sd_comm_t **out)
{
    sd_comm_t *host = NULL;
    SD_CHECK(intra_world(env, &host));
    return sd_comm_cuda_ipc_new(host, env->device, out);
}

static const sd_comm_backend_t backends[] = {
    {.name = "single", .built = always_built, .memory = SD_COMM_HOST_MEMORY, .max_ranks = 1,
     .create = single_world},
    {.name = "intra", .built = always_built, .memory = SD_COMM_HOST_MEMORY,
     .max_ranks = INT_MAX, .create = intra_world},
    {.name = "mpi", .built = sd_comm_mpi_built, .memory = SD_COMM_HOST_MEMORY,
     .max_ranks = INT_MAX, .create = mpi_world},
    {.name = "nccl", .built = sd_comm_nccl_built, .memory = SD_COMM_DEVICE_MEMORY,
     .max_ranks = INT_MAX, .create = nccl_world},
    {.name = "cuda_ipc", .built = sd_comm_cuda_ipc_built, .memory = SD_COMM_DEVICE_MEMORY,
     .max_ranks = SD_COMM_CUDA_IPC_MAX_RANKS, .create = cuda_ipc_world},
};

#define N_BACKENDS (sizeof backends / sizeof backends[0])

const sd_comm_backend_t *sd_comm_backends(size_t *n)
{
    *n = N_BACKENDS;
    return backends;
}

const sd_comm_backend_t *sd_comm_backend_find(const char *name)
{
    for (size_t i = 0; i < N_BACKENDS; i++)
        if (strcmp(backends[i].name, name) == 0) return &backends[i];
    return NULL;
}

void sd_comm_built_names(char *buf, size_t cap)
{
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < N_BACKENDS && used < cap; i++)
        if (backends[i].built())
            used += (size_t)snprintf(buf + used, cap - used, "%s%s", used ? ", " : "",
                                     backends[i].name);
}
