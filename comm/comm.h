/* Collectives for callers (model/, draft/, engine/, apps/, tests): dtypes, the collectives,
 * constructors, backend selection and the caller-side fault hook. Backends include
 * comm/comm_impl.h; sd_comm_init / split_first / free are in include/specdec/specdec.h.
 * Deadlines, failure rules, environment and backends: docs/comm.md. */
#ifndef SPECDEC_COMM_COMM_H
#define SPECDEC_COMM_COMM_H

#include <stddef.h>
#include <stdint.h>

#include "specdec/specdec.h"
#include "core/clock.h"

typedef enum sd_comm_dtype { SD_COMM_F32 = 0, SD_COMM_F16, SD_COMM_BF16 } sd_comm_dtype_t;
size_t sd_comm_dtype_size(sd_comm_dtype_t dt);
const char *sd_comm_dtype_name(sd_comm_dtype_t dt);

/* ---- collectives ----------------------------------------------------------------------- */
/* Every rank of c calls the same collectives in the same order with the same sizes. A NULL c
 * is one rank (allreduce/broadcast/barrier do nothing, allgather copies send to recv).
 * SD_ERR_INVALID_ARG (NULL buffer with a size, unknown dtype, root out of range) leaves c
 * untouched. SD_ERR_COMM_TIMEOUT past the deadline (SPECDEC_COMM_TIMEOUT_MS, default 60000)
 * or SD_ERR_PEER_LOST; after any failure every later collective on c returns it at once. */
/* buf[count] of dt summed over the group in rank order: every rank gets the same bits (all
 * backends but nccl with SPECDEC_NCCL_FAST_ALLREDUCE=1). */
sd_status_t sd_comm_allreduce_sum(sd_comm_t *c, void *buf, size_t count, sd_comm_dtype_t dt);
/* Device memory (GPU models): buf[count] of dt summed in rank order, enqueued on `stream`
 * (a cudaStream_t) and not waited for; SD_ERR_INVALID_ARG when c's backend has no device
 * allreduce (sd_comm_has_device_allreduce). Its outcome: sd_comm_device_status once the
 * stream is idle. A NULL c does nothing. */
sd_status_t sd_comm_allreduce_device(sd_comm_t *c, void *buf, size_t count, sd_comm_dtype_t dt,
                                     void *stream);
int sd_comm_has_device_allreduce(const sd_comm_t *c);
/* 1 when c's device allreduce may be captured in a CUDA graph (its launches number
 * themselves on the device). */
int sd_comm_device_graphs(const sd_comm_t *c);
/* After the stream of c's device allreduces was synchronized: SD_OK, or the failure of one
 * of them (SD_ERR_COMM_TIMEOUT naming the rank a kernel waited for); c fails with it. */
sd_status_t sd_comm_device_status(sd_comm_t *c);
/* recv[size * bytes] = every rank's send[bytes], in rank order (send may be
 * recv + rank * bytes: in place). */
sd_status_t sd_comm_allgather(sd_comm_t *c, const void *send, size_t bytes, void *recv);
/* buf[bytes] from `root` to every rank. */
sd_status_t sd_comm_broadcast(sd_comm_t *c, void *buf, size_t bytes, int root);
sd_status_t sd_comm_barrier(sd_comm_t *c);

/* Collective: SD_OK when every rank passed SD_OK, else on every rank the lowest failing
 * rank's status with its sd_last_error() message prefixed "rank R: " (or the collective's
 * own failure). */
sd_status_t sd_comm_agree(sd_comm_t *c, sd_status_t local);

/* ---- creating communicators (sd_comm_init picks one from the environment) ---------------- */
/* sd_comm_init for a model on `device` (cpu, cuda, cuda:N, auto; NULL: SPECDEC_DEVICE):
 * a cuda one selects with on_gpu = 1 and gives a GPU backend that device. */
sd_status_t sd_comm_init_device(sd_comm_t **world, const char *device);
/* This rank's index among the ranks on its node (OMPI_COMM_WORLD_LOCAL_RANK, else
 * SPECDEC_LOCAL_RANK, else SPECDEC_RANK, else 0): the GPU is local rank % devices. */
int sd_comm_local_rank(void);
/* Each gives a communicator the caller frees with sd_comm_free; a backend not in this build
 * answers SD_ERR_NOT_BUILT (its *_built() is 0). */
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
/* From the next allreduce on, c's allreduce (c a nccl communicator; at most 8 ranks on one
 * node) runs on the CUDA IPC kernels, which that allreduce sets up; allgather, broadcast,
 * barrier stay on NCCL; splits inherit it. Every rank calls it before the same allreduce.
 * SD_ERR_NOT_BUILT without NCCL. (docs/comm.md, "The CUDA IPC allreduce") */
sd_status_t sd_comm_nccl_use_intra(sd_comm_t *c);
/* The cuda_ipc backend: a CPU intra world `host` (taken over: freed with the result) whose
 * allreduce on device buffers runs on the CUDA IPC kernels on `device`; host buffers and
 * the other collectives go to `host`. Collective over host. */
sd_status_t sd_comm_cuda_ipc_new(sd_comm_t *host, int device, sd_comm_t **out);
int sd_comm_cuda_ipc_built(void);

/* ---- selection (comm/select.c): the one place that reads ENABLE_INTRA_NODE_COMM -------- */
/* *name = the backend (a row of comm/backends.c); first match: SPECDEC_COMM, single for one
 * rank, if ENABLE_INTRA_NODE_COMM=1: cuda_ipc if on_gpu and built, else intra; nccl if
 * on_gpu and built, mpi if built and under mpirun, else intra. SD_ERR_INVALID_ARG: unknown SPECDEC_COMM, one that cannot run
 * world_size ranks, bad ENABLE_INTRA_NODE_COMM; SD_ERR_NOT_BUILT: not built (both list them). */
sd_status_t sd_comm_select(int world_size, int on_gpu, const char **name);

/* ---- fault injection (test-only; SPECDEC_FAULT: docs/comm.md, "Fault injection") --------- */
/* 1 when SPECDEC_FAULT=corrupt:rank=R:step=N names c's world rank R and step == N (1-based
 * speculative steps); always 0 for a NULL c. */
int sd_comm_fault_corrupt_step(const sd_comm_t *c, uint64_t step);
/* 1 when SPECDEC_FAULT=corrupt-draft:rank=R:step=N names c's world rank R and step >= N: the
 * caller changes the first draft token the step accepted (asked only of steps that accepted
 * one, so the first such step from N on); always 0 for a NULL c. */
int sd_comm_fault_corrupt_draft(const sd_comm_t *c, uint64_t step);

#endif
