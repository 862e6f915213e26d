/* For comm backends, the generic layer (comm/) and tests of internals: struct sd_comm, the
 * ops table a backend fills, the backend table, and the deadline, flight-recorder, watchdog
 * and fault machinery every collective goes through (docs/comm.md, "What every collective
 * goes through"). Callers include comm/comm.h only. */
#ifndef SPECDEC_COMM_COMM_IMPL_H
#define SPECDEC_COMM_COMM_IMPL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "comm/comm.h"
#include "core/check.h"

#define SD_FLIGHT_LEN 64
#define SD_COMM_TIMEOUT_MS_DEFAULT 60000
#define SD_WATCHDOG_GRACE_MS 1000
#define SD_COMM_CUDA_IPC_MAX_RANKS 8 /* SD_IPC_MAX_RANKS of comm/cuda/intra_cuda.h */
#define SD_WATCHDOG_THREAD_NAME "sd-watchdog" /* the watchdog thread's name (/proc/.../comm) */

typedef enum sd_comm_op {
    SD_OP_ALLREDUCE = 0, SD_OP_ALLGATHER, SD_OP_BROADCAST, SD_OP_BARRIER, SD_OP_SPLIT,
    SD_OP_INIT, /* a backend's own setup (rendezvous), recorded like a collective */
} sd_comm_op_t;
const char *sd_comm_op_name(sd_comm_op_t op);

/* One entry of the flight recorder. */
typedef enum sd_flight_state { SD_FLIGHT_RUNNING = 1, SD_FLIGHT_DONE, SD_FLIGHT_FAILED } sd_flight_state_t;
typedef struct sd_flight_entry {
    uint64_t seq;
    sd_comm_op_t op;
    size_t bytes;
    sd_flight_state_t state;
    sd_status_t status;
    double t_start, t_end; /* seconds, monotonic clock */
} sd_flight_entry_t;

/* A backend's ops: the wrappers have checked the arguments, numbered the op and started
 * its deadline; each op has the contract of its wrapper in comm/comm.h. */
typedef struct sd_comm_ops {
    const char *name; /* its row's name in the backend table (comm/backends.c) */
    sd_status_t (*allreduce_sum)(sd_comm_t *c, void *buf, size_t count, sd_comm_dtype_t dt);
    sd_status_t (*allgather)(sd_comm_t *c, const void *send, size_t bytes, void *recv);
    sd_status_t (*broadcast)(sd_comm_t *c, void *buf, size_t bytes, int root);
    sd_status_t (*barrier)(sd_comm_t *c);
    /* The first n ranks as a communicator of the same backend (*out = NULL on ranks >= n).
     * The wrapper has already checked n. */
    sd_status_t (*split_first)(sd_comm_t *c, int n, sd_comm_t **out);
    void (*destroy)(sd_comm_t *c);
    /* Optional (NULL: host memory only). Enqueue the allreduce of device buf[count] on
     * `stream` without waiting (the wrapper recorded the enqueue as an op). */
    sd_status_t (*allreduce_device)(sd_comm_t *c, void *buf, size_t count, sd_comm_dtype_t dt,
                                    void *stream);
    /* With allreduce_device: the enqueued allreduces' outcome once their stream is idle. */
    sd_status_t (*device_status)(sd_comm_t *c);
    int device_graphs; /* 1: allreduce_device may be captured in a CUDA graph */
} sd_comm_ops_t;

/* Threads: a communicator is used by one thread at a time (its owner); the watchdog
 * thread reads `lock`-guarded fields under `lock` and touches only the atomics. */
struct sd_comm {
    const sd_comm_ops_t *ops;
    void *ctx;                 /* backend state */
    int rank, size;
    char group[16];            /* "world", "first2", ... (names shm segments too) */
    int world_rank;            /* this rank in the world (for messages and faults) */
    int timeout_ms;            /* SPECDEC_COMM_TIMEOUT_MS */
    pthread_mutex_t lock;      /* guards seq, deadline, flight (owner writes, watchdog reads) */
    uint64_t seq;              /* collectives issued so far (the running one's number) */
    double deadline;           /* of the running op (monotonic seconds); 0 when idle */
    atomic_int abort_flag;     /* set by the watchdog or a failed op; every wait polls it */
    atomic_int flight_printed; /* the flight record goes to stderr once per communicator */
    sd_status_t failed;        /* SD_OK, or the status every later op returns at once */
    char failed_msg[256];      /* sd_last_error() of the failure, repeated by later ops */
    sd_flight_entry_t flight[SD_FLIGHT_LEN]; /* ring: entry seq % SD_FLIGHT_LEN */
    struct sd_comm *wd_next;   /* watchdog registry link (guarded by the registry mutex) */
};

/* ---- the backend table (comm/backends.c) ------------------------------------------------ */

/* The world as the environment describes it (sd_comm_init reads it once). */
typedef struct sd_comm_env {
    int rank, size;
    int device;      /* the GPU of a GPU model's comm: N of cuda:N, or -1 (local rank % count) */
    const char *job; /* SPECDEC_JOB_ID or NULL */
    int mpirun;      /* ranks come from mpirun, not from `specdec launch` */
} sd_comm_env_t;

/* Where a backend's collectives take their buffers (0 is none: a row missing it is caught). */
typedef enum sd_comm_memory { SD_COMM_HOST_MEMORY = 1, SD_COMM_DEVICE_MEMORY = 2 } sd_comm_memory_t;

/* One row per backend; every field is required. */
typedef struct sd_comm_backend {
    const char *name;        /* SPECDEC_COMM=<name>, sd_comm_backend()'s answer */
    int (*built)(void);      /* 1 when in this build (a stub answers 0) */
    sd_comm_memory_t memory; /* the buffers its collectives take */
    int max_ranks;           /* the largest world it runs (INT_MAX: any) */
    /* The world described by env (SD_ERR_NOT_BUILT from a stub). */
    sd_status_t (*create)(const sd_comm_env_t *env, sd_comm_t **out);
} sd_comm_backend_t;

/* The table: *n rows, in the order error messages list them. */
const sd_comm_backend_t *sd_comm_backends(size_t *n);
/* The row named `name`, or NULL. */
const sd_comm_backend_t *sd_comm_backend_find(const char *name);
/* "single, intra, ...": the built rows' names into buf[cap] (truncated to fit). */
void sd_comm_built_names(char *buf, size_t cap);

/* ---- for backends -------------------------------------------------------------------- */

/* Fill the common fields of a new (zeroed) communicator: ops, ctx, rank, size, group,
 * the timeout from SPECDEC_COMM_TIMEOUT_MS (SD_ERR_INVALID_ARG naming a malformed value),
 * the fault spec (SPECDEC_FAULT, checked here), and register it with the watchdog.
 * On failure nothing is registered and the caller frees what it allocated. */
sd_status_t sd_comm_setup(sd_comm_t *c, const sd_comm_ops_t *ops, void *ctx, int rank, int size,
                          const char *group, int world_rank);
/* Unregister from the watchdog (backends call it first thing in destroy). */
void sd_comm_teardown(sd_comm_t *c);

/* A backend's own blocking phase outside a collective (e.g. the rendezvous in its
 * constructor): recorded in the flight recorder as `op` with the next seq and given a
 * deadline, so sd_comm_wait_step and the watchdog work as inside a collective. Pair each
 * begin with an end; a failing end prints the flight record and marks the comm failed. */
void sd_comm_op_begin(sd_comm_t *c, sd_comm_op_t op, size_t bytes);
sd_status_t sd_comm_op_end(sd_comm_t *c, sd_status_t status);

/* One bounded step of a spin-wait (*spins = 0 at the start of each wait): SD_OK to keep
 * waiting, SD_ERR_COMM_TIMEOUT once the deadline has passed or the abort flag is set (naming
 * group, op, seq and `waiting_for`, e.g. "rank 1's arrival"). Backoff: docs/comm.md. */
sd_status_t sd_comm_wait_step(sd_comm_t *c, unsigned *spins, const char *waiting_for);

/* dst[i] = ((src[0][i] + src[1][i]) + ...) + src[p-1][i] for i < n, in f32, rounded once to
 * dt (comm/comm_reduce.c): the CPU backends' one reduction and the C reference of the GPU
 * rank-order sums (comm/cuda/rank_sum.cuh). dst may be one of the sources. */
void sd_comm_reduce_rank_order(void *dst, uint8_t *const *src, int p, size_t n, sd_comm_dtype_t dt);

/* The flight record (rank, group, op, seq, bytes, state of the last SD_FLIGHT_LEN ops) on
 * stderr, one line per entry, each prefixed "specdec flight:". */
void sd_comm_print_flight(const sd_comm_t *c, const char *why);

/* ---- fault injection (comm/fault.c), test-only -------------------------------------- */
/* (Re)reads SPECDEC_FAULT (grammar: docs/comm.md, "Fault injection"); sd_comm_setup calls
 * it. SD_ERR_INVALID_ARG naming a malformed token. */
sd_status_t sd_fault_check_env(void);
/* Called by the wrappers before each collective. */
void sd_fault_before_collective(int world_rank);
/* 1 when rank world_rank must corrupt its token at step `step` (1-based). */
int sd_fault_corrupt_step(int world_rank, uint64_t step);
/* 1 when rank world_rank must corrupt an accepted draft token at step `step` (from N on). */
int sd_fault_corrupt_draft(int world_rank, uint64_t step);

/* ---- watchdog (comm/watchdog.c); sd_comm_setup/teardown call these --------------------- */
void sd_watchdog_register(sd_comm_t *c);
void sd_watchdog_unregister(sd_comm_t *c);

#endif
