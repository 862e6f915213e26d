/* For comm backends and the generic layer (comm/): the communicator's internals, the ops
 * table a backend fills, the backend table, and the machinery that makes a hang impossible
 * to miss. Callers include comm/comm.h only.
 *
 * Every collective goes through the wrappers of comm/comm.h (comm/comm.c), which
 *   1. give it the communicator's next sequence number and a deadline
 *      (now + SPECDEC_COMM_TIMEOUT_MS, default 60000);
 *   2. record it in the communicator's flight recorder (the last SD_FLIGHT_LEN ops);
 *   3. apply test-only fault injection (SPECDEC_FAULT, comm/fault.c);
 *   4. call the backend, whose every wait polls the deadline and the abort flag and
 *      yields after a bounded number of spins (ranks may outnumber cores);
 *   5. on failure print the flight record once to stderr and mark the communicator
 *      failed: every later collective on it returns the same status at once.
 * A watchdog thread per process (comm/watchdog.c) catches what a backend cannot: an op
 * still running SD_WATCHDOG_GRACE_MS after its deadline gets the flight record printed
 * and the abort flag set (backends whose waits are outside our loops, e.g. NCCL, abort
 * the communicator from there). */
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

/* One bounded wait step for a spin loop (start each wait with *spins = 0): returns SD_OK
 * to keep spinning, or SD_ERR_COMM_TIMEOUT once the deadline has passed or the abort flag
 * is set (with a message naming the group, op, seq and `waiting_for`, e.g. "rank 1's
 * arrival"). The first 256 steps pause (none when the group has more ranks than online
 * cores), the next 1024 sched_yield(), then each sleeps 50 us: ranks may outnumber cores. */
sd_status_t sd_comm_wait_step(sd_comm_t *c, unsigned *spins, const char *waiting_for);

/* dst[n] = src[0][n] + src[1][n] + ... + src[p-1][n] in rank order, in f32, rounded once to
 * dt (comm/comm_reduce.c): the one reduction of the CPU backends, so every rank and every
 * algorithm gets the same bits. dst may be one of the sources. */
void sd_comm_reduce_rank_order(void *dst, uint8_t *const *src, int p, size_t n, sd_comm_dtype_t dt);

/* The flight record (rank, group, op, seq, bytes, state of the last SD_FLIGHT_LEN ops) on
 * stderr, one line per entry, each prefixed "specdec flight:". */
void sd_comm_print_flight(const sd_comm_t *c, const char *why);

/* ---- fault injection (comm/fault.c), test-only -------------------------------------- */
/* SPECDEC_FAULT is a comma-separated list of
 *   stall:rank=R:op=N      rank R blocks forever (sleeping) at its N-th collective
 *                          (N counts the process's collectives from 1, over all its
 *                          communicators; a backend's SD_OP_INIT is not one)
 *   crash:rank=R:op=N      rank R dies (SIGKILL to itself) at its N-th collective
 *   delay:rank=R:ms=D      rank R sleeps D ms before every collective
 *   corrupt:rank=R:step=N  rank R flips its accepted token at speculative step N
 * R is the world rank. Read by sd_fault_check_env (sd_comm_setup calls it, so at every
 * communicator creation); a changed value restarts the count. A malformed value is
 * SD_ERR_INVALID_ARG naming the token. */
sd_status_t sd_fault_check_env(void);
/* Called by the wrappers before each collective. */
void sd_fault_before_collective(int world_rank);
/* 1 when rank world_rank must corrupt its token at step `step` (1-based). */
int sd_fault_corrupt_step(int world_rank, uint64_t step);

/* ---- watchdog (comm/watchdog.c); sd_comm_setup/teardown call these --------------------- */
void sd_watchdog_register(sd_comm_t *c);
void sd_watchdog_unregister(sd_comm_t *c);

#endif
