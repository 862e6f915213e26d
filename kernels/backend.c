/* The callers' side of the backend (kernels/backend.h): each call goes through the ops
 * table of kernels/backend_impl.h. */
#include "kernels/backend_impl.h"

const char *sd_backend_name(const sd_backend_t *be) { return be->ops->name; }
int sd_backend_host_memory(const sd_backend_t *be) { return be->ops->host_memory; }
sd_status_t sd_backend_sync(sd_backend_t *be) { return be->ops->sync(be); }
void *sd_backend_alloc(sd_backend_t *be, size_t bytes) { return be->ops->alloc(be, bytes); }
void sd_backend_release(sd_backend_t *be, void *ptr) { be->ops->release(be, ptr); }

void sd_backend_upload(sd_backend_t *be, void *dst, const void *host_src, size_t bytes)
{
    be->ops->upload(be, dst, host_src, bytes);
}

void sd_backend_download(sd_backend_t *be, void *host_dst, const void *src, size_t bytes)
{
    be->ops->download(be, host_dst, src, bytes);
}

void sd_backend_embed(sd_backend_t *be, const sd_weight_t *table, const int32_t *tokens, int n,
                      float *out)
{
    be->ops->embed(be, table, tokens, n, out);
}

void sd_backend_rmsnorm(sd_backend_t *be, const float *x, const float *w, int n, int dim,
                        float eps, float *out)
{
    be->ops->rmsnorm(be, x, w, n, dim, eps, out);
}

void sd_backend_matmul(sd_backend_t *be, const sd_weight_t *w, const float *x, int n,
                       const float *bias, float *y)
{
    be->ops->matmul(be, w, x, n, bias, y);
}

void sd_backend_matmul_group(sd_backend_t *be, int nw, const sd_weight_t *const *w, const float *x, int n,
                             const float *const *bias, float *const *y)
{
    if (be->ops->matmul_group) {
        be->ops->matmul_group(be, nw, w, x, n, bias, y);
        return;
    }
    for (int i = 0; i < nw; i++) be->ops->matmul(be, w[i], x, n, bias ? bias[i] : NULL, y[i]);
}

void sd_backend_rope(sd_backend_t *be, float *x, const int32_t *pos, int n, int n_head,
                     int head_dim, const sd_rope_params_t *p)
{
    be->ops->rope(be, x, pos, n, n_head, head_dim, p);
}

void sd_backend_attention(sd_backend_t *be, const float *q, const float *k_cache,
                          const float *v_cache, const int32_t *blocks, int block_size,
                          const int32_t *pos, int n, int n_ctx, int n_head, int n_head_kv,
                          int head_dim, float *out)
{
    be->ops->attention(be, q, k_cache, v_cache, blocks, block_size, pos, n, n_ctx, n_head,
                       n_head_kv, head_dim, out);
}

int sd_backend_has_attention_masked(const sd_backend_t *be)
{
    return be != NULL && be->ops->attention_masked != NULL;
}

void sd_backend_attention_masked(sd_backend_t *be, const float *q, const float *k_cache,
                                 const float *v_cache, const int32_t *blocks, int block_size,
                                 int base, const uint8_t *mask, int n, int m, int n_ctx,
                                 int n_head, int n_head_kv, int head_dim, float *out)
{
    if (be->ops->attention_masked != NULL)
        be->ops->attention_masked(be, q, k_cache, v_cache, blocks, block_size, base, mask, n, m,
                                  n_ctx, n_head, n_head_kv, head_dim, out);
}

void sd_backend_kv_store(sd_backend_t *be, float *cache, const float *rows, const int32_t *blocks,
                         int block_size, const int32_t *pos, int n, int n_ctx, size_t row)
{
    be->ops->kv_store(be, cache, rows, blocks, block_size, pos, n, n_ctx, row);
}

void sd_backend_swiglu(sd_backend_t *be, const float *gate, const float *up, size_t len,
                       float *out)
{
    be->ops->swiglu(be, gate, up, len, out);
}

void sd_backend_add(sd_backend_t *be, float *y, const float *x, size_t len)
{
    be->ops->add(be, y, x, len);
}

void *sd_backend_stream(sd_backend_t *be)
{
    return be->ops->stream ? be->ops->stream(be) : NULL;
}

int sd_backend_has_graphs(const sd_backend_t *be)
{
    const sd_backend_ops_t *o = be->ops;
    return o->graph_begin && o->graph_end && o->graph_launch && o->graph_free;
}

void sd_backend_graph_begin(sd_backend_t *be) { be->ops->graph_begin(be); }
void *sd_backend_graph_end(sd_backend_t *be) { return be->ops->graph_end(be); }
void sd_backend_graph_launch(sd_backend_t *be, void *graph) { be->ops->graph_launch(be, graph); }

void sd_backend_graph_free(sd_backend_t *be, void *graph)
{
    if (graph != NULL) be->ops->graph_free(be, graph);
}

void sd_backend_lock(sd_backend_t *be)
{
    if (be->ops->lock != NULL) be->ops->lock(be);
}

void sd_backend_unlock(sd_backend_t *be)
{
    if (be->ops->unlock != NULL) be->ops->unlock(be);
}

void sd_backend_destroy(sd_backend_t *be)
{
    if (be != NULL) be->ops->destroy(be);
}
