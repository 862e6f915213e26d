// Launchers shared by the .cu files of the CUDA backend (kernels/cuda/backend_cuda.cu wires
// them into the ops table of kernels/backend.h). Every pointer argument is device memory
// unless its comment says host; every launcher only enqueues work on `stream` and returns
// the launch error (cudaSuccess, or e.g. cudaErrorInvalidValue for arguments it refuses:
// it then enqueues nothing). Shapes follow the op comments in kernels/backend.h.
//
// Batch invariance (the rule that makes GPU greedy speculative output equal GPU greedy
// target-only output): row i of every output is computed by the same instructions in the
// same order whatever n is and wherever the row sits in the batch — no split of a dot
// product that depends on n, no atomics in a reduction, split-K chunk sizes that depend
// only on the query's own position.
#ifndef SPECDEC_KERNELS_CUDA_LAUNCH_CUH
#define SPECDEC_KERNELS_CUDA_LAUNCH_CUH

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

extern "C" {
#include "kernels/backend_impl.h"
}

// ---- matmul.cu: weights in their GGUF type ---------------------------------------------

// 1 for the types sd_cuda_matmul and sd_cuda_embed compute directly (F32, F16, BF16, Q8_0,
// Q4_0, Q4_1, Q5_0, Q4_K, Q6_K).
int sd_cuda_type_supported(sd_dtype_t type);
// y[n, w->rows] = x[n, w->cols] . W^T (+ bias[w->rows] when not NULL). w is a host struct
// whose data points to device memory. Any n >= 1 (decode 1, verification 2..17, prefill
// hundreds); batch-invariant as above.
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
// Flash-decoding style attention (the op of kernels/backend.h): query i at position pos[i]
// (device [n], read by the kernels) attends to positions 0 .. pos[i] < n_ctx. Each query's
// context is cut into chunks whose size depends only on its length pos[i] + 1; partial
// (max, sum, acc) per chunk go to `workspace` (device, workspace_bytes) and are combined in
// chunk order. The launch geometry depends only on (n, n_ctx, shapes, workspace_bytes), never
// on the positions (capturable in a graph). Queries are processed in groups that fit the
// workspace (never changing a query's own computation). sd_cuda_attention_workspace_bytes
// says how much one query needs for a cache of n_ctx positions.
cudaError_t sd_cuda_attention(cudaStream_t stream, const float *q, const float *k_cache,
                              const float *v_cache, const int32_t *pos, int n, int n_ctx,
                              int n_head, int n_head_kv, int head_dim, float *out,
                              void *workspace, size_t workspace_bytes);
size_t sd_cuda_attention_workspace_bytes(int n_ctx, int n_head, int head_dim);
// cache[pos[i], :] = rows[i, :] for i < n: cache [n_ctx, row], rows [n, row], pos [n], all
// device; a row whose position is outside [0, n_ctx) is not stored.
cudaError_t sd_cuda_kv_store(cudaStream_t stream, float *cache, const float *rows,
                             const int32_t *pos, int n, int n_ctx, size_t row);
cudaError_t sd_cuda_swiglu(cudaStream_t stream, const float *gate, const float *up, size_t len,
                           float *out);
cudaError_t sd_cuda_add(cudaStream_t stream, float *y, const float *x, size_t len);

#endif
