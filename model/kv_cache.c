/* Per-sequence KV cache: f32 K and V [n_layer, n_ctx, n_head_kv, head_dim] in backend
 * memory, n_head_kv the rank's local KV heads (all of them without TP). Rolling back only
 * moves `len`; rows past it are overwritten by the next forward. */
#include <stdint.h>
#include <string.h>

#include "core/check.h"
#include "model/kv_cache.h"
#include "model.h"

/* Bytes of K (or of V) for n_ctx positions; SIZE_MAX when that overflows size_t. */
static size_t half_bytes(int n_layer, int n_head_kv, int head_dim, size_t n_ctx)
{
    size_t row = (size_t)n_head_kv * (size_t)head_dim * sizeof(float);
    if (row == 0 || n_ctx == 0) return 0;
    if (SIZE_MAX / row < n_ctx || SIZE_MAX / (row * n_ctx) < (size_t)n_layer) return SIZE_MAX;
    return row * n_ctx * (size_t)n_layer;
}

size_t sd_kv_position_bytes(const sd_model_t *m)
{
    return 2 * half_bytes(m->hp.n_layer, m->tp.n_head_kv, m->hp.head_dim, 1);
}

size_t sd_kv_cache_bytes(const sd_kv_cache_t *kv)
{
    return 2 * half_bytes(kv->n_layer, kv->n_head_kv, kv->head_dim, (size_t)kv->n_ctx);
}

sd_status_t sd_kv_cache_init(sd_kv_cache_t *kv, const sd_model_t *m, int n_ctx)
{
    if (kv == NULL) return sd_set_error(SD_ERR_INVALID_ARG, "sd_kv_cache_init: kv is NULL");
    if (m == NULL) return sd_set_error(SD_ERR_INVALID_ARG, "sd_kv_cache_init: model is NULL");
    memset(kv, 0, sizeof *kv);
    if (n_ctx < 1) return sd_set_error(SD_ERR_INVALID_ARG, "KV cache n_ctx = %d must be >= 1", n_ctx);
    const sd_hparams_t *hp = &m->hp;
    size_t bytes = half_bytes(hp->n_layer, m->tp.n_head_kv, hp->head_dim, (size_t)n_ctx);
    if (bytes == SIZE_MAX)
        return sd_set_error(SD_ERR_OUT_OF_MEMORY, "KV cache of %d positions overflows size_t",
                            n_ctx);
    sd_backend_t *be = m->backend;
    kv->k = sd_backend_alloc(be, bytes);
    kv->v = kv->k ? sd_backend_alloc(be, bytes) : NULL;
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
    if (kv->k) sd_backend_release(m->backend, kv->k);
    if (kv->v) sd_backend_release(m->backend, kv->v);
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
