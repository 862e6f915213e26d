/* GPU collectives seen from C (comm/backend_nccl.c, tests): the CUDA IPC allreduce and the
 * rank-order sum behind the nccl backend's deterministic allreduce. No CUDA types (streams
 * are void *), so every build includes it. Region layout, protocol, why it cannot race, and
 * its device deadline: docs/comm.md, "The CUDA IPC allreduce". */
#ifndef SPECDEC_COMM_CUDA_INTRA_CUDA_H
#define SPECDEC_COMM_CUDA_INTRA_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "specdec/specdec.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SD_IPC_MAX_RANKS 8
#define SD_IPC_MAX_BLOCKS 32
#define SD_IPC_THREADS 512
#define SD_IPC_PHASES 2
#define SD_IPC_FLAGS_BYTES (2 * SD_IPC_PHASES * SD_IPC_MAX_BLOCKS * SD_IPC_MAX_RANKS * 8)
#define SD_IPC_SLOT_BYTES ((size_t)8 << 20)
#define SD_IPC_ONE_SHOT_BYTES ((size_t)256 << 10)

/* Element types of the GPU reductions (the same order as sd_comm_dtype_t). */
typedef enum sd_gpu_dtype { SD_GPU_F32 = 0, SD_GPU_F16, SD_GPU_BF16 } sd_gpu_dtype_t;

/* The error word a spin that gives up writes: code << 56 | phase << 48 | rank waited for << 32
 * | (seq & 0xffffffff). */
enum { SD_IPC_ERR_NONE = 0, SD_IPC_ERR_DEADLINE = 1, SD_IPC_ERR_ABORTED = 2 };
static inline int sd_ipc_error_code(uint64_t w) { return (int)(w >> 56); }
static inline int sd_ipc_error_phase(uint64_t w) { return (int)((w >> 48) & 0xff); }
static inline int sd_ipc_error_rank(uint64_t w) { return (int)((w >> 32) & 0xffff); }

/* One allreduce launch over the IPC regions. A region is flags[parity 2][SD_IPC_PHASES]
 * [SD_IPC_MAX_BLOCKS][SD_IPC_MAX_RANKS] (u64), then per parity data[slot_bytes] and
 * tmp[slot_bytes]. */
typedef struct sd_ipc_args {
    char *region[SD_IPC_MAX_RANKS]; /* every rank's region as mapped in this process */
    int rank, nranks;
    sd_gpu_dtype_t dtype;
    int two_shot;                   /* 0: one-shot, 1: two-shot */
    int blocks;                     /* grid size: the same on every rank */
    uint64_t seq;                   /* >= 1; parity seq & 1 (ignored with seq_dev) */
    const uint64_t *seq_dev;        /* NULL, or device memory holding seq (graph replays) */
    void *buf;                      /* [count] of dtype, device memory, reduced in place */
    size_t count;                   /* count * element size <= slot_bytes */
    size_t slot_bytes;
    uint64_t budget_ns;             /* device deadline = block start + budget_ns */
    const volatile int *abort_word; /* device view of the mapped host abort word */
    volatile uint64_t *error_word;  /* device view of the mapped host error word */
} sd_ipc_args_t;

/* Bytes of one rank's region for slots of `slot_bytes`. */
static inline size_t sd_ipc_region_bytes(size_t slot_bytes)
{
    return SD_IPC_FLAGS_BYTES + 4 * slot_bytes;
}
/* Sets a->count, a->two_shot (nranks > 1 and count * esize > SD_IPC_ONE_SHOT_BYTES) and
 * a->blocks (<= max_blocks, SD_IPC_MAX_BLOCKS) from count, esize and a->nranks only, so
 * every rank computes the same. */
void sd_ipc_plan(sd_ipc_args_t *a, size_t count, size_t esize, int max_blocks);

/* Enqueue the allreduce kernel on `stream` (a cudaStream_t): buf reduced in place, the same
 * bits on every rank as sd_comm_reduce_rank_order (comm/comm_impl.h); a spin that gives up
 * writes *error_word. SD_ERR_INVALID_ARG for an unknown dtype, SD_ERR_DEVICE for a launch error. */
sd_status_t sd_ipc_allreduce_launch(const sd_ipc_args_t *a, void *stream);

/* Enqueue ++*seq_dev on `stream`: the launch number the next sd_ipc_allreduce_launch with
 * that seq_dev reads (so a captured graph's launches are numbered anew at each replay). */
sd_status_t sd_ipc_bump_launch(uint64_t *seq_dev, void *stream);

/* out[i] = sum over r of gathered[r * count + i] in rank order, rounded once (as
 * sd_comm_reduce_rank_order): the deterministic allreduce after an allgather. Enqueued on
 * `stream` (a cudaStream_t); SD_ERR_INVALID_ARG for an unknown dt, SD_ERR_DEVICE for a
 * launch error. */
sd_status_t sd_gpu_sum_gathered(const void *gathered, void *out, size_t count, int nranks,
                                sd_gpu_dtype_t dt, void *stream);

/* ---- the host side of one rank's IPC allreduce (comm/cuda/ipc_host.cu) ----------------
 * Waits, statuses and the handle exchange are in comm/ipc.c (comm/ipc.h). */
typedef struct sd_ipc sd_ipc_t;
/* What a rank tells its peers: its region's cudaIpcMemHandle_t and its SM count. */
typedef struct sd_ipc_hello {
    unsigned char handle[64];
    int sms;
} sd_ipc_hello_t;
/* This rank's region on `device` (flags and launch counter zeroed before *hello is filled),
 * the mapped host words. *out is set even on failure (sd_ipc_destroy it). */
sd_status_t sd_ipc_create(int device, void *stream, sd_ipc_t **out, sd_ipc_hello_t *hello);
/* Map every peer's region from all[nranks] (nranks <= SD_IPC_MAX_RANKS). */
sd_status_t sd_ipc_connect(sd_ipc_t *s, int rank, int nranks, const sd_ipc_hello_t *all);
/* Enqueue the allreduce of buf[count] (device memory) on `stream`: per slot-sized piece a
 * counter bump and one kernel, nothing waited for (capturable). */
sd_status_t sd_ipc_enqueue(sd_ipc_t *s, void *buf, size_t count, sd_gpu_dtype_t dt,
                           uint64_t budget_ns, void *stream);
/* Host buffer host[bytes] through the state's device staging (grown to fit): copied in
 * (out = 0; *dev = the staging) or back out (out = 1), on the idle `stream`, waited for. */
sd_status_t sd_ipc_stage(sd_ipc_t *s, void *host, size_t bytes, int out, void *stream, void **dev);
/* cudaStreamQuery: 1 idle, 0 busy, -1 failed (sd_last_error says why). */
int sd_ipc_query(void *stream);
/* Set the abort word every spin of the kernels polls. */
void sd_ipc_abort(sd_ipc_t *s);
/* The error word (SD_IPC_ERR_NONE until a spin gave up; then sticky). */
uint64_t sd_ipc_error(const sd_ipc_t *s);
/* Unmap the peers' regions (own region kept). */
void sd_ipc_close_peers(sd_ipc_t *s);
/* Close the peers' regions, free the state; free_region = 0 leaves the own region and words
 * mapped until the process ends (a peer may still touch them). NULL is a no-op. */
void sd_ipc_destroy(sd_ipc_t *s, int free_region);
/* *stream = a new non-blocking stream on device (destroy = 0), or destroy *stream. */
sd_status_t sd_ipc_stream(int device, void **stream, int destroy);
/* 1 when p is device (or managed) memory. */
int sd_ipc_is_device(const void *p);
/* CUDA devices this process sees (0 without a driver or device). */
int sd_ipc_device_count(void);

/* sd_comm_nccl_device_count and sd_comm_nccl_use_intra are declared in comm/comm.h. */

#ifdef __cplusplus
}
#endif

#endif
