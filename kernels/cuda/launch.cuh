// Launchers shared by the .cu files of the CUDA backend (kernels/cuda/backend_cuda.cu wires
// them into the ops table of kernels/backend_impl.h, whose op comments give the shapes).
// Pointers are device memory unless marked host; a launcher only enqueues on `stream` and
// returns the launch error (cudaErrorInvalidValue for arguments it refuses: nothing enqueued).
// Every kernel is batch-invariant: docs/cuda.md, "Batch invariance".
#ifndef SPECDEC_KERNELS_CUDA_LAUNCH_CUH
#define SPECDEC_KERNELS_CUDA_LAUNCH_CUH

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "core/cudasim/kernel.cuh"

extern "C" {
#include "kernels/backend_impl.h"
}

// ---- matmul.cu: weights in their GGUF type ---------------------------------------------

// y[n, w->rows] = x[n, w->cols] . W^T (+ bias[w->rows] when not NULL), any n >= 1. w is a
// host struct whose data points to device memory.
cudaError_t sd_cuda_matmul(cudaStream_t stream, const sd_weight_t *w, const float *x, int n,
                           const float *bias, float *y);
// out[n, table->cols] = dequantize(table row tokens[i]) (tokens: device); a token outside
// [0, table->rows) gives a zero row.
cudaError_t sd_cuda_embed(cudaStream_t stream, const sd_weight_t *table, const int32_t *tokens,
                          int n, float *out);

// ---- ops.cu: the rest of the forward -----------------------------------------------------

cudaError_t sd_cuda_rmsnorm(cudaStream_t stream, const float *x, const float *w, int n, int dim,
                            float eps, float *out);
// pos: device [n]; p: host struct.
cudaError_t sd_cuda_rope(cudaStream_t stream, float *x, const int32_t *pos, int n, int n_head,
                         int head_dim, const sd_rope_params_t *p);
// The attention op (split-K flash-decoding; docs/cuda.md, "Batch invariance"): pos and the
// block table device [n], read by the kernels (paged layout: kernels/backend_impl.h);
// per-chunk partials go to `workspace` (device, workspace_bytes), queries in groups that fit
// it. Geometry depends on (n, n_ctx, shapes, workspace_bytes) only.
cudaError_t sd_cuda_attention(cudaStream_t stream, const float *q, const float *k_cache,
                              const float *v_cache, const int32_t *blocks, int block_size,
                              const int32_t *pos, int n, int n_ctx, int n_head, int n_head_kv,
                              int head_dim, float *out, void *workspace, size_t workspace_bytes);
// Tree attention (kernels/backend.h, sd_backend_attention_masked): mask device [n, m]; one
// warp per (head, query). cudaErrorInvalidValue for bad geometry.
cudaError_t sd_cuda_attention_masked(cudaStream_t stream, const float *q, const float *k_cache,
                                     const float *v_cache, const int32_t *blocks, int block_size,
                                     int base, const uint8_t *mask, int n, int m, int n_ctx,
                                     int n_head, int n_head_kv, int head_dim, float *out);
// Workspace one query needs for a cache of n_ctx positions.
size_t sd_cuda_attention_workspace_bytes(int n_ctx, int n_head, int head_dim);
// The row of pos[i] (paged layout as attention's) = rows[i, :] for i < n: rows [n, row], pos
// [n], all device; a row whose position is outside [0, n_ctx) is not stored.
cudaError_t sd_cuda_kv_store(cudaStream_t stream, float *cache, const float *rows,
                             const int32_t *blocks, int block_size, const int32_t *pos, int n,
                             int n_ctx, size_t row);
cudaError_t sd_cuda_swiglu(cudaStream_t stream, const float *gate, const float *up, size_t len,
                           float *out);
cudaError_t sd_cuda_add(cudaStream_t stream, float *y, const float *x, size_t len);

#endif
