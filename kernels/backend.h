/* A compute backend as its callers (model/, engine/) see it: an opaque handle and one call
 * per op the model forward needs. Pointers passed to ops are backend memory (host memory for
 * the CPU backend) from sd_backend_alloc. Each op's contract is its member's comment in
 * kernels/backend_impl.h; every op is batch-invariant (row i of the output depends only on
 * row i of the inputs and, for attention, the cache it reads, never on n). */
#ifndef SPECDEC_KERNELS_BACKEND_H
#define SPECDEC_KERNELS_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"

/* A weight matrix as stored in GGUF: `rows` output features, each row `cols`
 * input features encoded in `type` (GGUF ne[0] = cols, ne[1] = rows). */
typedef struct sd_weight {
    sd_dtype_t type;
    int64_t rows, cols;
    size_t row_bytes;
    const void *data;
} sd_weight_t;

/* 0 is no style, so a table row that forgets its style is caught (model/arch.h). */
typedef enum sd_rope_style {
    SD_ROPE_NORM = 1, /* llama (GGUF q/k are permuted): rotate pairs (2i, 2i+1) */
    SD_ROPE_NEOX = 2, /* qwen2: rotate pairs (i, i + rot_dim/2) */
} sd_rope_style_t;

typedef struct sd_rope_params {
    sd_rope_style_t style;
    int rot_dim;     /* dimensions rotated per head (<= head_dim, even) */
    float freq_base; /* theta_i = pos * freq_base^(-2i/rot_dim) */
} sd_rope_params_t;

typedef struct sd_backend sd_backend_t;

/* "cpu" or "cuda". */
const char *sd_backend_name(const sd_backend_t *be);
/* 1 when backend memory is host memory the caller may use directly (the CPU backend:
 * weights stay zero-copy views of the file); 0 for a device backend. */
int sd_backend_host_memory(const sd_backend_t *be);
/* Waits for every op issued so far; the first error any of them hit since the last call
 * (SD_ERR_DEVICE naming the op), cleared by this call; SD_OK when none. */
sd_status_t sd_backend_sync(sd_backend_t *be);

/* NULL on failure (a device backend: also past its memory cap). */
void *sd_backend_alloc(sd_backend_t *be, size_t bytes);
void sd_backend_release(sd_backend_t *be, void *ptr);
/* Ordered with the ops; download returns once the data is on the host. */
void sd_backend_upload(sd_backend_t *be, void *dst, const void *host_src, size_t bytes);
void sd_backend_download(sd_backend_t *be, void *host_dst, const void *src, size_t bytes);

/* The forward's ops; shapes and contracts as the members of sd_backend_ops_t. */
void sd_backend_embed(sd_backend_t *be, const sd_weight_t *table, const int32_t *tokens, int n,
                      float *out);
void sd_backend_rmsnorm(sd_backend_t *be, const float *x, const float *w, int n, int dim,
                        float eps, float *out);
void sd_backend_matmul(sd_backend_t *be, const sd_weight_t *w, const float *x, int n,
                       const float *bias, float *y);
/* y[i][n, w[i]->rows] = x . W_i^T (+ bias[i] when bias and bias[i] are not NULL) for i < nw
 * <= SD_MATMUL_GROUP_MAX, every w[i] with the same cols (Q/K/V, gate/up): one call where the
 * backend can share the work; each y[i] bit-identical to sd_backend_matmul(w[i]). */
#define SD_MATMUL_GROUP_MAX 3
void sd_backend_matmul_group(sd_backend_t *be, int nw, const sd_weight_t *const *w, const float *x, int n,
                             const float *const *bias, float *const *y);
void sd_backend_rope(sd_backend_t *be, float *x, const int32_t *pos, int n, int n_head,
                     int head_dim, const sd_rope_params_t *p);
void sd_backend_attention(sd_backend_t *be, const float *q, const float *k_cache,
                          const float *v_cache, const int32_t *blocks, int block_size,
                          const int32_t *pos, int n, int n_ctx, int n_head, int n_head_kv,
                          int head_dim, float *out);
/* Tree attention: as sd_backend_attention (cache slots are positions of the same paged
 * layout), but query i attends to slots [0, base) and then to slots base + j (j < m, in
 * order) where mask[i * m + j] != 0 (mask [n, m] uint8, backend memory; m <=
 * SD_ATTN_MASK_MAX_COLS). A NaN row where base < 0, base + m > n_ctx or the row sees no
 * slot. Same arithmetic as sd_backend_attention over the same keys. */
#define SD_ATTN_MASK_MAX_COLS 256
int sd_backend_has_attention_masked(const sd_backend_t *be);
void sd_backend_attention_masked(sd_backend_t *be, const float *q, const float *k_cache,
                                 const float *v_cache, const int32_t *blocks, int block_size,
                                 int base, const uint8_t *mask, int n, int m, int n_ctx,
                                 int n_head, int n_head_kv, int head_dim, float *out);
void sd_backend_kv_store(sd_backend_t *be, float *cache, const float *rows, const int32_t *blocks,
                         int block_size, const int32_t *pos, int n, int n_ctx, size_t row);
void sd_backend_swiglu(sd_backend_t *be, const float *gate, const float *up, size_t len,
                       float *out);
void sd_backend_add(sd_backend_t *be, float *y, const float *x, size_t len);

/* Graphs: 1 when the backend records and replays op sequences (CUDA). Between
 * sd_backend_graph_begin and _end ops are recorded, not run; _end returns the graph or NULL
 * when recording failed (the error waits for the next sync); _launch replays it with the
 * arguments it was recorded with. */
int sd_backend_has_graphs(const sd_backend_t *be);
void sd_backend_graph_begin(sd_backend_t *be);
void *sd_backend_graph_end(sd_backend_t *be);
void sd_backend_graph_launch(sd_backend_t *be, void *graph);
void sd_backend_graph_free(sd_backend_t *be, void *graph);

/* A backend whose ops share state (a device backend: one stream, its first error, a
 * capture) serves one thread at a time: the forward holds this lock from its upload to its
 * sync, so that another thread's ops cannot land in between. Recursive; each op of such a
 * backend takes it too. Nothing on the CPU. */
void sd_backend_lock(sd_backend_t *be);
void sd_backend_unlock(sd_backend_t *be);

/* The device stream ops are enqueued on (a cudaStream_t), for work of other modules that
 * must run between ops (a TP allreduce); NULL on the CPU. */
void *sd_backend_stream(sd_backend_t *be);

/* CPU backend with a thread pool of n_threads (0 = online cores). */
sd_status_t sd_backend_cpu_create(int n_threads, sd_backend_t **out);

/* CUDA backend on device `device` (kernels/cuda; kernels/cuda_stub.c answers
 * SD_ERR_NOT_BUILT). memory_fraction in (0, 1] caps the bytes all allocs together may
 * hold, as a fraction of the device's total memory; 0 = SPECDEC_GPU_MEMORY_FRACTION from
 * the environment, else 0.9. Errors: SD_ERR_INVALID_ARG naming a device that does not
 * exist or a fraction outside (0, 1]; SD_ERR_DEVICE when the device cannot be used. */
sd_status_t sd_backend_cuda_create(int device, double memory_fraction, sd_backend_t **out);
/* Bytes a CUDA backend's allocations hold now and its cap (SD_ERR_INVALID_ARG for a
 * backend that is not CUDA). */
sd_status_t sd_backend_cuda_memory(sd_backend_t *be, size_t *used, size_t *cap);

/* NULL: nothing. */
void sd_backend_destroy(sd_backend_t *be);

#endif
