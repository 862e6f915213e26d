/* The backend ops table, for implementers (kernels/cpu, kernels/cuda) and the kernels' own
 * tests; callers use kernels/backend.h (kernels/backend.c forwards each call here). */
#ifndef SPECDEC_KERNELS_BACKEND_IMPL_H
#define SPECDEC_KERNELS_BACKEND_IMPL_H

#include "kernels/backend.h"

/* Pointers passed to ops are backend memory from alloc (host memory on the CPU). Ops are void
 * and may run asynchronously: an op given bad arguments records the error for the next sync
 * and does nothing. */
typedef struct sd_backend_ops {
    const char *name;
    /* As sd_backend_host_memory (kernels/backend.h); 0: model/place.c uploads the weights. */
    int host_memory;
    void (*destroy)(sd_backend_t *be);
    /* As sd_backend_sync: the first error since the last sync (SD_ERR_DEVICE naming the op
     * and the library error), then cleared. The forward calls it once, after the logits. */
    sd_status_t (*sync)(sd_backend_t *be);

    /* As sd_backend_alloc, _release, _upload, _download. */
    void *(*alloc)(sd_backend_t *be, size_t bytes);
    void (*release)(sd_backend_t *be, void *ptr);
    void (*upload)(sd_backend_t *be, void *dst, const void *host_src, size_t bytes);
    void (*download)(sd_backend_t *be, void *host_dst, const void *src, size_t bytes);

    /* out[n, dim] = dequantize(table row tokens[i]) ; dim = table->cols */
    void (*embed)(sd_backend_t *be, const sd_weight_t *table, const int32_t *tokens, int n,
                  float *out);
    /* out[n, dim] = x / sqrt(mean(x^2) + eps) * w[dim]   (out may alias x) */
    void (*rmsnorm)(sd_backend_t *be, const float *x, const float *w, int n, int dim, float eps,
                    float *out);
    /* y[n, w->rows] = x[n, w->cols] . W^T (+ bias[w->rows] when not NULL) */
    void (*matmul)(sd_backend_t *be, const sd_weight_t *w, const float *x, int n,
                   const float *bias, float *y);
    /* x[n, n_head, head_dim] rotated in place; token i is at position pos[i] */
    void (*rope)(sd_backend_t *be, float *x, const int32_t *pos, int n, int n_head, int head_dim,
                 const sd_rope_params_t *p);
    /* Paged KV layout (model/kv_cache.h): cache position j is cache row
     * blocks[j / block_size] * block_size + j % block_size, blocks backend memory of
     * ceil(n_ctx / block_size) entries the caller keeps inside the cache (read when the op
     * runs, so a replayed graph sees the table's current contents); blocks NULL: row j.
     * Grouped-query attention: q[n, n_head, head_dim] query i at pos[i] (backend memory [n];
     * need not be consecutive) attends to positions 0 .. pos[i], in that order, of k_cache,
     * v_cache (rows [., n_head_kv, head_dim]); query head h uses KV head h / (n_head /
     * n_head_kv); scale 1/sqrt(head_dim); out[n, n_head, head_dim]. Causal only: a tree mask
     * would be one more argument. pos[i] outside [0, n_ctx): a NaN row, nothing read. Row i
     * depends only on q row i, pos[i] and the positions' rows (not on where they live); a
     * device launch only on (n, n_ctx, shapes), so a graph replays at any positions. */
    void (*attention)(sd_backend_t *be, const float *q, const float *k_cache, const float *v_cache,
                      const int32_t *blocks, int block_size, const int32_t *pos, int n, int n_ctx,
                      int n_head, int n_head_kv, int head_dim, float *out);
    /* The row of position pos[i] (layout as attention's) = rows[i, :] exactly for i < n: rows
     * [n, row], pos [n] backend memory. Positions distinct (else which row lands is
     * unspecified); one outside [0, n_ctx) is not stored. */
    void (*kv_store)(sd_backend_t *be, float *cache, const float *rows, const int32_t *blocks,
                     int block_size, const int32_t *pos, int n, int n_ctx, size_t row);
    /* out[len] = silu(gate) * up   (out may alias gate) */
    void (*swiglu)(sd_backend_t *be, const float *gate, const float *up, size_t len, float *out);
    /* y[len] += x[len] */
    void (*add)(sd_backend_t *be, float *y, const float *x, size_t len);

    /* Graphs (optional: NULL on the CPU). Between graph_begin and graph_end ops are recorded,
     * not run, and upload/download/sync/alloc/release record an error and do nothing.
     * graph_end: the graph, or NULL when recording failed (error kept for the next sync; the
     * backend is usable again).
     * graph_launch replays the recorded pointers and sizes, reading the data as it runs;
     * graph_free(NULL) does nothing. */
    void (*graph_begin)(sd_backend_t *be);
    void *(*graph_end)(sd_backend_t *be);
    void (*graph_launch)(sd_backend_t *be, void *graph);
    void (*graph_free)(sd_backend_t *be, void *graph);

    /* As sd_backend_lock / _unlock (optional: NULL where every op is safe from any thread,
     * as on the CPU). */
    void (*lock)(sd_backend_t *be);
    void (*unlock)(sd_backend_t *be);

    /* As sd_backend_matmul_group (optional, after the positional members;
     * NULL: the wrapper calls matmul once per weight). */
    void (*matmul_group)(sd_backend_t *be, int nw, const sd_weight_t *const *w, const float *x, int n,
                         const float *const *bias, float *const *y);

    /* As sd_backend_attention_masked (kernels/backend.h); optional, NULL: the wrapper records
     * nothing and the forward refuses trees on this backend. */
    void (*attention_masked)(sd_backend_t *be, const float *q, const float *k_cache,
                             const float *v_cache, const int32_t *blocks, int block_size,
                             int base, const uint8_t *mask, int n, int m, int n_ctx, int n_head,
                             int n_head_kv, int head_dim, float *out);
    /* As sd_backend_stream (optional: NULL without a device stream). */
    void *(*stream)(sd_backend_t *be);
} sd_backend_ops_t;

struct sd_backend {
    const sd_backend_ops_t *ops;
    void *ctx;
};

#endif
