/* The backend ops table, for implementers (kernels/cpu, kernels/cuda) and the kernels'
 * own tests; callers use kernels/backend.h. */
#ifndef SPECDEC_KERNELS_BACKEND_IMPL_H
#define SPECDEC_KERNELS_BACKEND_IMPL_H

#include "kernels/backend.h"

/* Pointers passed to ops are backend memory (host memory for the CPU backend) obtained
 * from alloc. Ops are void: a device backend issues them asynchronously and an op given
 * bad arguments records the error (reported by the next sync) and does nothing. */

typedef struct sd_backend_ops {
    const char *name;
    /* 1 when alloc returns host memory the engine may also read and write directly (CPU):
     * model weights are then used in place (zero-copy views of the file); 0 for a device
     * backend, whose weights the model loader uploads (model/place.c). */
    int host_memory;
    void (*destroy)(sd_backend_t *be);
    /* Waits for every op issued so far and returns the first error any of them hit since
     * the last call (clearing it), as SD_ERR_DEVICE with sd_set_error's message naming the
     * op and the library error; SD_OK when none. Ops are void (a device backend issues
     * them asynchronously): the engine calls sync once per forward, after the download of
     * the logits. An op given bad arguments records the error and does nothing. */
    sd_status_t (*sync)(sd_backend_t *be);

    /* NULL on failure (device backends: also when the allocation would pass the memory
     * cap). upload and download are ordered with the ops; download returns once the data
     * is on the host. */
    void *(*alloc)(sd_backend_t *be, size_t bytes); /* NULL on failure */
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
    /* Grouped-query attention for n queries; query i is at position pos[i] (pos: [n],
     * backend memory) and attends to cache positions 0 .. pos[i] (causal when the positions
     * are consecutive; they need not be). q[n, n_head, head_dim]; k_cache, v_cache
     * [n_ctx, n_head_kv, head_dim] already hold positions 0 .. pos[i]; query head h uses kv
     * head h / (n_head / n_head_kv); scale 1/sqrt(head_dim). out[n, n_head, head_dim].
     * Every pos[i] must lie in [0, n_ctx): a query whose position does not gets a NaN row
     * (nothing outside the cache is read). Query i's result depends only on q row i, pos[i]
     * and the cache, never on n, n_ctx or the other positions (batch invariance); a device
     * backend's launch depends only on (n, n_ctx, shapes), so a captured graph replays at
     * any positions. */
    void (*attention)(sd_backend_t *be, const float *q, const float *k_cache, const float *v_cache,
                      const int32_t *pos, int n, int n_ctx, int n_head, int n_head_kv,
                      int head_dim, float *out);
    /* cache[pos[i], row] = rows[i, row] for i < n (an exact copy): cache [n_ctx, row], rows
     * [n, row], pos [n] backend memory, positions distinct (which of two rows with one
     * position lands is unspecified). A row whose position is outside [0, n_ctx) is not
     * stored (nothing outside the cache is written). */
    void (*kv_store)(sd_backend_t *be, float *cache, const float *rows, const int32_t *pos, int n,
                     int n_ctx, size_t row);
    /* out[len] = silu(gate) * up   (out may alias gate) */
    void (*swiglu)(sd_backend_t *be, const float *gate, const float *up, size_t len, float *out);
    /* y[len] += x[len] */
    void (*add)(sd_backend_t *be, float *y, const float *x, size_t len);

    /* Graphs (optional: NULL on the CPU). graph_begin starts recording the ops issued after
     * it instead of running them; graph_end stops and returns the recorded sequence, ready
     * to replay, or NULL when the recording failed (an op refused its arguments or could
     * not be recorded; the error is kept for the next sync and the backend is usable
     * again). graph_launch replays a graph with the arguments it was recorded with (the
     * pointers and sizes; the data behind the pointers is read when it runs); graph_free
     * releases one (NULL: nothing). Between graph_begin and graph_end no upload, download,
     * sync, alloc or release may be called (each records an error and does nothing). */
    void (*graph_begin)(sd_backend_t *be);
    void *(*graph_end)(sd_backend_t *be);
    void (*graph_launch)(sd_backend_t *be, void *graph);
    void (*graph_free)(sd_backend_t *be, void *graph);
} sd_backend_ops_t;

struct sd_backend {
    const sd_backend_ops_t *ops;
    void *ctx;
};

#endif
