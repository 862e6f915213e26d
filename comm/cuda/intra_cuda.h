/* GPU collectives seen from C: the CUDA intra-node (IPC) allreduce and the rank-order sum
 * behind the NCCL backend's deterministic allreduce. No CUDA types appear here (streams
 * travel as void *), so C host code and the tests include it in every build.
 *
 * The IPC allreduce. Each rank cudaMallocs one region, shares it with the other ranks of its
 * communicator as a cudaIpcMemHandle_t, and maps theirs. A region is
 *   flags[parity 2][phase 2][block SD_IPC_MAX_BLOCKS][from-rank SD_IPC_MAX_RANKS]  (u64)
 *   then per parity: data[slot_bytes] (the rank's input) and tmp[slot_bytes] (two-shot)
 * Launch n (sequence number seq = n >= 1) uses the buffers and flags of parity seq & 1.
 * A barrier phase: every block b, after its own writes, stores seq into
 * flags[par][phase][b][me] of every rank (system-scope release), then waits until its own
 * flags[par][phase][b][q] >= seq for every rank q (system-scope acquire). Stamps only grow,
 * so a stamp of a later launch also satisfies the wait.
 *
 * Why two parities and no end barrier: a rank may finish launch n and start n+1 while a
 * slow peer still reads n's data. n+1 writes the other parity's buffers, so nothing the
 * peer reads changes; to reach n+2 (the same parity as n again) the fast rank must pass
 * n+1's first barrier, which needs the slow peer's n+1 arrival, which the peer makes only
 * after its kernel for n has finished (kernels of one stream run in order). A single set
 * of buffers would need a second barrier at the end of every launch; a single set of
 * flags reset to 0 between launches is the classic lost-wake-up hang.
 *
 * Every block handles the same elements in every phase on every rank (grid-stride loops
 * over the same grid; the grid is a function of count alone), so a block only ever waits
 * for the same block of its peers. One-shot (<= SD_IPC_ONE_SHOT_BYTES): copy in, barrier,
 * every rank sums all ranks' data in rank order. Two-shot: copy in, barrier, rank r sums
 * partition r into its tmp, barrier, every rank copies every partition from its owner's
 * tmp. Both round each element once from an f32 sum in rank order 0..P-1, so both give
 * the same bits, on every rank, as the C reference in comm/cuda/reference.h.
 *
 * No silent hang: every spin polls a device deadline (%globaltimer, budget_ns after the
 * block started) and an abort word in mapped host memory that the host sets when its own
 * wait gives up (the comm's deadline or the watchdog's abort flag). A spin that gives up
 * writes an error record (code, phase, the rank waited for, seq) to a mapped host word;
 * the kernel exits and the host returns SD_ERR_COMM_TIMEOUT naming that rank. */
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

/* What a failed spin writes to the error word (bits 56..63). */
enum { SD_IPC_ERR_NONE = 0, SD_IPC_ERR_DEADLINE = 1, SD_IPC_ERR_ABORTED = 2 };
/* error word = code << 56 | phase << 48 | rank waited for << 32 | (seq & 0xffffffff) */
static inline int sd_ipc_error_code(uint64_t w) { return (int)(w >> 56); }
static inline int sd_ipc_error_phase(uint64_t w) { return (int)((w >> 48) & 0xff); }
static inline int sd_ipc_error_rank(uint64_t w) { return (int)((w >> 32) & 0xffff); }

/* One allreduce launch over the IPC regions. */
typedef struct sd_ipc_args {
    char *region[SD_IPC_MAX_RANKS]; /* every rank's region as mapped in this process */
    int rank, nranks;
    sd_gpu_dtype_t dtype;
    int two_shot;                   /* 0: one-shot, 1: two-shot */
    int blocks;                     /* grid size: the same on every rank */
    uint64_t seq;                   /* >= 1; parity seq & 1 */
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
/* Grid and algorithm of an allreduce of `count` elements of `esize` bytes over `nranks`
 * (every rank computes the same from the same count). */
void sd_ipc_plan(sd_ipc_args_t *a, size_t count, size_t esize, int max_blocks);

/* Enqueue the allreduce kernel on `stream` (a cudaStream_t). */
sd_status_t sd_ipc_allreduce_launch(const sd_ipc_args_t *a, void *stream);

/* out[i] = sum over r of gathered[r * count + i], in rank order, rounded once: the
 * deterministic allreduce after an allgather. Enqueued on `stream` (a cudaStream_t). */
sd_status_t sd_gpu_sum_gathered(const void *gathered, void *out, size_t count, int nranks,
                                sd_gpu_dtype_t dt, void *stream);

/* sd_comm_nccl_device_count and sd_comm_nccl_use_intra are declared in comm/comm.h. */

#ifdef __cplusplus
}
#endif

#endif
