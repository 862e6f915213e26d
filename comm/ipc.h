/* The CUDA IPC allreduce over a communicator (for comm backends: cuda_ipc, nccl): setup by
 * handle exchange, launches with the op's deadline, host waits, the kernels' error record
 * as a status, and the ordered teardown. Protocol: docs/comm.md, "The CUDA IPC allreduce". */
#ifndef SPECDEC_COMM_IPC_H
#define SPECDEC_COMM_IPC_H

#include "comm/comm_impl.h"
#include "comm/cuda/intra_cuda.h"

/* Collective over c: *out = this rank's region on `device`, the peers' mapped; the hellos
 * travel by `gather` (an allgather of c's host path). *out is NULL on failure. */
typedef sd_status_t (*sd_ipc_gather_fn)(sd_comm_t *c, const void *send, size_t bytes, void *recv);
sd_status_t sd_ipc_setup(sd_comm_t *c, int device, void *stream, sd_ipc_gather_fn gather,
                         sd_ipc_t **out);
/* Enqueue buf[count] (device) on stream with a device deadline of c's timeout; not waited for. */
sd_status_t sd_ipc_launch(sd_comm_t *c, sd_ipc_t *s, void *buf, size_t count,
                          sd_comm_dtype_t dt, void *stream);
/* Inside a collective: enqueue with the op's remaining time, then wait for stream (deadline,
 * abort flag: the abort word, 2 s for the kernel to exit). SD_ERR_COMM_TIMEOUT names the
 * rank the kernel waited for. */
sd_status_t sd_ipc_allreduce_wait(sd_comm_t *c, sd_ipc_t *s, void *buf, size_t count,
                                  sd_comm_dtype_t dt, void *stream);
/* As sd_ipc_allreduce_wait; a host buf goes through the state's device staging. */
sd_status_t sd_ipc_allreduce_staged(sd_comm_t *c, sd_ipc_t *s, void *buf, size_t count,
                                    sd_comm_dtype_t dt, void *stream);
/* After the launches' stream was synchronized: SD_OK, or SD_ERR_COMM_TIMEOUT from the
 * kernels' error record (naming the rank and barrier). */
sd_status_t sd_ipc_status(const sd_comm_t *c, const sd_ipc_t *s);
/* Ordered teardown, outside any op (c's barrier is called): close the peers' regions,
 * barrier (no peer still reads or writes this rank's region), then free it. When !healthy,
 * c failed, a kernel gave up or the barrier fails, the region stays mapped: a peer may
 * still touch it. */
void sd_ipc_teardown(sd_comm_t *c, sd_ipc_t *s, int healthy);

#endif
