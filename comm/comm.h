/* Collectives behind one ops table, with the rules that make a hang impossible to miss.
 *
 * A communicator (sd_comm_t) is a group of ranks: the world, the target group (= the
 * world: the target runs on every rank) or the draft group (the world's first D ranks).
 * Every collective goes through the wrappers below, which
 *   1. give it the communicator's next sequence number and a deadline
 *      (now + SPECDEC_COMM_TIMEOUT_MS, default 60000);
 *   2. record it in the communicator's flight recorder (the last SD_FLIGHT_LEN ops);
 *   3. apply test-only fault injection (SPECDEC_FAULT, comm/fault.c);
 *   4. call the backend, whose every wait polls the deadline and the abort flag and
 *      yields after a bounded number of spins (ranks may outnumber cores);
 *   5. on failure print the flight record once to stderr and mark the communicator
 *      failed: every later collective on it returns the same status at once (never a
 *      second hang on a broken group).
 * A watchdog thread per process (comm/watchdog.c) catches what a backend cannot: an op
 * still running SD_WATCHDOG_GRACE_MS after its deadline gets the flight record printed
 * and the abort flag set (backends whose waits are outside our loops, e.g. NCCL, abort
 * the communicator from there).
 *
 * Determinism: allreduce sums in rank order 0, 1, ..., size-1 for every element, so every
 * rank gets bit-identical results, whatever the message size or algorithm.
 *
 * Bootstrap (`specdec launch` sets these for every rank it forks):
 *   SPECDEC_RANK, SPECDEC_WORLD_SIZE   this rank and the world size
 *   SPECDEC_JOB_ID                     [A-Za-z0-9_-]{1,40}, unique per job: shared-memory
 *                                      segments are /dev/shm/specdec-<job>-<group>
 * Under mpirun the mpi backend bootstraps from MPI (and hands the job id to the intra
 * backend by MPI_Bcast when intra is chosen). */
#ifndef SPECDEC_COMM_COMM_H
#define SPECDEC_COMM_COMM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "core/check.h"
#include "specdec/specdec.h"

#define SD_COMM_OPS_VERSION 1
#define SD_FLIGHT_LEN 64
#define SD_COMM_TIMEOUT_MS_DEFAULT 60000
#define SD_WATCHDOG_GRACE_MS 1000

typedef enum sd_comm_dtype { SD_COMM_F32 = 0, SD_COMM_F16, SD_COMM_BF16 } sd_comm_dtype_t;
size_t sd_comm_dtype_size(sd_comm_dtype_t dt);
const char *sd_comm_dtype_name(sd_comm_dtype_t dt);

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

typedef struct sd_comm_ops {
    int version;      /* SD_COMM_OPS_VERSION */
    const char *name; /* "single", "intra", "mpi", "nccl" */
    /* buf[count] of dt summed over the group in rank order; every rank gets the same bits. */
    sd_status_t (*allreduce_sum)(sd_comm_t *c, void *buf, size_t count, sd_comm_dtype_t dt);
    /* recv[size * bytes] = every rank's send[bytes], in rank order. send may be
     * recv + rank * bytes (in place). */
    sd_status_t (*allgather)(sd_comm_t *c, const void *send, size_t bytes, void *recv);
    /* buf[bytes] from `root` to every rank. */
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

/* ---- wrappers: every collective goes through these (comm/comm.c) -------------------- */
/* A NULL communicator is a single rank (allreduce/broadcast/barrier do nothing, allgather
 * copies send to recv). Argument errors (NULL buffer with a size, unknown dtype, root out
 * of range) return SD_ERR_INVALID_ARG without touching the communicator. */
sd_status_t sd_comm_allreduce_sum(sd_comm_t *c, void *buf, size_t count, sd_comm_dtype_t dt);
sd_status_t sd_comm_allgather(sd_comm_t *c, const void *send, size_t bytes, void *recv);
sd_status_t sd_comm_broadcast(sd_comm_t *c, void *buf, size_t bytes, int root);
sd_status_t sd_comm_barrier(sd_comm_t *c);

/* Collective over c: every rank learns whether any rank failed. Returns SD_OK when all
 * passed SD_OK; otherwise the lowest failing rank's status, with its sd_last_error()
 * message (prefixed "rank R: ") set on every rank. A failed collective returns its own
 * status. */
sd_status_t sd_comm_agree(sd_comm_t *c, sd_status_t local);

/* ---- for backends -------------------------------------------------------------------- */

/* Monotonic seconds. */
double sd_comm_now(void);
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

/* ---- backends (constructors; stubs answer SD_ERR_NOT_BUILT) ---------------------------- */
sd_status_t sd_comm_single_new(sd_comm_t **out);
/* Shared-memory intra-node backend over SPECDEC_JOB_ID's segments. */
sd_status_t sd_comm_intra_new(int rank, int size, const char *job_id, sd_comm_t **out);
/* Open MPI world (MPI_Init if needed). */
sd_status_t sd_comm_mpi_new(sd_comm_t **out);
int sd_comm_mpi_built(void);
/* OMPI_COMM_WORLD_SIZE (or PMI_SIZE) is set: defined in comm/select.c for both builds. */
int sd_comm_mpi_launched(void);
/* NCCL over the GPU; the unique id travels through `boot` (an intra or mpi world), which
 * is used during the call only (the caller frees it). */
sd_status_t sd_comm_nccl_new(sd_comm_t *boot, sd_comm_t **out);
int sd_comm_nccl_built(void);
/* CUDA devices this process sees: 0 without a GPU, a driver, or NCCL in the build.
 * Initialises CUDA: a test that forks ranks calls it in a child, never in the process
 * that forks. */
int sd_comm_nccl_device_count(void);
/* From the next allreduce on, allreduce on the nccl communicator c runs on the CUDA IPC
 * kernels (comm/cuda/intra_cuda.h: at most 8 ranks, all on one node); allgather,
 * broadcast and barrier stay on NCCL. Every rank of c calls it before the same allreduce;
 * the first one sets up and exchanges the IPC buffers. Split communicators inherit the
 * choice. SD_ERR_NOT_BUILT without NCCL. */
sd_status_t sd_comm_nccl_use_intra(sd_comm_t *c);

/* ---- selection (comm/select.c): the one place that reads ENABLE_INTRA_NODE_COMM -------- */
/* Name of the backend to use, first match wins:
 *   1. SPECDEC_COMM=<name> (single|intra|mpi|nccl): SD_ERR_INVALID_ARG for an unknown name
 *      (or single with a world > 1), SD_ERR_NOT_BUILT for one not built; both name what
 *      was built;
 *   2. "single" for a world of one;
 *   3. "intra" when ENABLE_INTRA_NODE_COMM=1 (0 or unset: go on; else SD_ERR_INVALID_ARG);
 *   4. "nccl" when on_gpu and built;
 *   5. "mpi" when built and launched by mpirun;
 *   6. "intra", logging one info line saying why not nccl/mpi. */
sd_status_t sd_comm_select(int world_size, int on_gpu, const char **name);

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
