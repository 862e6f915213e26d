/* The KV cache of one sequence (model/kv_cache.c); f32 for exact rollback by length
 * (docs/design-notes.md, "CPU kernels"). */
#ifndef SPECDEC_MODEL_KV_CACHE_H
#define SPECDEC_MODEL_KV_CACHE_H

#include "model/model.h"

/* KV cache of one sequence: per layer K and V [n_ctx, n_head_kv, head_dim] f32, with
 * n_head_kv the shard's (a rank caches its own KV heads only). */
typedef struct sd_kv_cache {
    int n_layer, n_ctx, n_head_kv, head_dim;
    int len;                   /* positions 0 .. len-1 are valid */
    float *k, *v;              /* [n_layer, n_ctx, n_head_kv, head_dim] backend memory */
} sd_kv_cache_t;

/* n_ctx >= 1 positions; SD_ERR_OUT_OF_MEMORY naming the size. */
sd_status_t sd_kv_cache_init(sd_kv_cache_t *kv, const sd_model_t *m, int n_ctx);
void sd_kv_cache_free(sd_kv_cache_t *kv, const sd_model_t *m);
/* Roll back to `len` positions (len <= kv->len); SD_ERR_INVALID_ARG otherwise. */
sd_status_t sd_kv_cache_truncate(sd_kv_cache_t *kv, int len);

/* Bytes one position takes in a cache of m (K and V over its layers), and the bytes a cache
 * holds (K and V, all n_ctx positions). The one formula for KV-cache sizes. */
size_t sd_kv_position_bytes(const sd_model_t *m);
size_t sd_kv_cache_bytes(const sd_kv_cache_t *kv);

#endif
