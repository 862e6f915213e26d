/* Per-sequence KV cache: f32 K and V [n_layer, n_ctx, n_head_kv, head_dim] in backend
 * memory, n_head_kv the rank's local KV heads (all of them without TP). Rolling back only
 * moves `len`; rows past it are overwritten by the next forward. */
#include <stdint.h>
#include <string.h>

#include "core/check.h"
#include "model/kv_cache.h"
#include "model.h"

sd_status_t sd_kv_cache_init(sd_kv_cache_t *kv, const sd_model_t *m, int n_ctx)
{
    if (kv == NULL) return sd_set_error(SD_ERR_INVALID_ARG, "sd_kv_cache_init: kv is NULL");
    if (m == NULL) return sd_set_error(SD_ERR_INVALID_ARG, "sd_kv_cache_init: model is NULL");
    memset(kv, 0, sizeof *kv);
    if (n_ctx < 1) return sd_set_error(SD_ERR_INVALID_ARG, "KV cache n_ctx = %d must be >= 1", n_ctx);
    const sd_hparams_t *hp = &m->hp;
    size_t row = (size_t)m->tp.n_head_kv * hp->head_dim * sizeof(float);
    size_t per_layer = (size_t)n_ctx * row;
    if (per_layer / row != (size_t)n_ctx || SIZE_MAX / per_layer < (size_t)hp->n_layer)
        return sd_set_error(SD_ERR_OUT_OF_MEMORY, "KV cache of %d positions overflows size_t",
                            n_ctx);
    size_t bytes = per_layer * (size_t)hp->n_layer;
    sd_backend_t *be = m->backend;
    kv->k = be->ops->alloc(be, bytes);
    kv->v = kv->k ? be->ops->alloc(be, bytes) : NULL;
    if (kv->v == NULL) {
        sd_kv_cache_free(kv, m);
        return sd_set_error(SD_ERR_OUT_OF_MEMORY,
                            "out of memory allocating 2 x %zu bytes for a KV cache of %d positions",
                            bytes, n_ctx);
    }
    kv->n_layer = hp->n_layer;
    kv->n_ctx = n_ctx;
    kv->n_head_kv = m->tp.n_head_kv;
    kv->head_dim = hp->head_dim;
    kv->len = 0;
    return SD_OK;
}

void sd_kv_cache_free(sd_kv_cache_t *kv, const sd_model_t *m)
{
    if (kv == NULL || m == NULL) return;
    if (kv->k) m->backend->ops->release(m->backend, kv->k);
    if (kv->v) m->backend->ops->release(m->backend, kv->v);
    memset(kv, 0, sizeof *kv);
}

sd_status_t sd_kv_cache_truncate(sd_kv_cache_t *kv, int len)
{
    if (kv == NULL) return sd_set_error(SD_ERR_INVALID_ARG, "sd_kv_cache_truncate: kv is NULL");
    if (len < 0 || len > kv->len)
        return sd_set_error(SD_ERR_INVALID_ARG, "cannot truncate a KV cache of %d positions to %d",
                            kv->len, len);
    kv->len = len;
    return SD_OK;
}
