/* Collectives for callers (model/, draft/, engine/, apps/, tests): what a rank runs over a
 * communicator. Backends and the generic layer also include comm/comm_impl.h.
 *
 * A communicator (sd_comm_t) is a group of ranks: the world, the target group (= the
 * world: the target runs on every rank) or the draft group (the world's first D ranks).
 * Every collective carries a sequence number and a deadline (SPECDEC_COMM_TIMEOUT_MS,
 * default 60000): a collective that cannot finish returns SD_ERR_COMM_TIMEOUT (or
 * SD_ERR_PEER_LOST) with the flight record printed once to stderr, and every later
 * collective on that communicator returns the same status at once (never a second hang).
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

#include <stddef.h>
#include <stdint.h>

#include "specdec/specdec.h"

typedef enum sd_comm_dtype { SD_COMM_F32 = 0, SD_COMM_F16, SD_COMM_BF16 } sd_comm_dtype_t;
size_t sd_comm_dtype_size(sd_comm_dtype_t dt);
const char *sd_comm_dtype_name(sd_comm_dtype_t dt);

/* ---- collectives ----------------------------------------------------------------------- */
/* A NULL communicator is a single rank (allreduce/broadcast/barrier do nothing, allgather
 * copies send to recv). Argument errors (NULL buffer with a size, unknown dtype, root out
 * of range) return SD_ERR_INVALID_ARG without touching the communicator. */
/* buf[count] of dt summed over the group in rank order; every rank gets the same bits. */
sd_status_t sd_comm_allreduce_sum(sd_comm_t *c, void *buf, size_t count, sd_comm_dtype_t dt);
/* recv[size * bytes] = every rank's send[bytes], in rank order (send may be
 * recv + rank * bytes: in place). */
sd_status_t sd_comm_allgather(sd_comm_t *c, const void *send, size_t bytes, void *recv);
/* buf[bytes] from `root` to every rank. */
sd_status_t sd_comm_broadcast(sd_comm_t *c, void *buf, size_t bytes, int root);
sd_status_t sd_comm_barrier(sd_comm_t *c);

/* Collective over c: every rank learns whether any rank failed. Returns SD_OK when all
 * passed SD_OK; otherwise the lowest failing rank's status, with its sd_last_error()
 * message (prefixed "rank R: ") set on every rank. A failed collective returns its own
 * status. */
sd_status_t sd_comm_agree(sd_comm_t *c, sd_status_t local);

/* Monotonic seconds (the clock of the deadlines; callers time with it too). */
double sd_comm_now(void);

/* ---- creating communicators (sd_comm_init picks one from the environment) ---------------- */
/* Each returns a communicator the caller frees with sd_comm_free; a backend not in this
 * build answers SD_ERR_NOT_BUILT (its *_built() is 0). */
sd_status_t sd_comm_single_new(sd_comm_t **out);
/* Shared-memory intra-node backend over job_id's segments; rank in [0, size). */
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
/* Name of the backend to use (a row of comm/backends.c), first match wins:
 *   1. SPECDEC_COMM=<name>: SD_ERR_INVALID_ARG for an unknown name (or one that cannot run
 *      world_size ranks, e.g. single with a world > 1), SD_ERR_NOT_BUILT for one not
 *      built; both name what was built;
 *   2. "single" for a world of one;
 *   3. "intra" when ENABLE_INTRA_NODE_COMM=1 (0 or unset: go on; else SD_ERR_INVALID_ARG);
 *   4. the built backend on GPU buffers ("nccl") when on_gpu;
 *   5. "mpi" when built and launched by mpirun;
 *   6. "intra", logging one info line saying why not nccl/mpi. */
sd_status_t sd_comm_select(int world_size, int on_gpu, const char **name);

/* ---- fault injection (test-only; SPECDEC_FAULT, grammar in comm/comm_impl.h) ------------ */
/* 1 when SPECDEC_FAULT=corrupt:rank=R:step=N names c's world rank R and step == N (1-based
 * speculative steps); always 0 for a NULL c. */
int sd_comm_fault_corrupt_step(const sd_comm_t *c, uint64_t step);

#endif
