/* KV row moves for token trees (model/kv_rows.h): through the host with download/upload, so
 * it runs on any backend; a tree's path is a few rows per layer. */
#include <stdlib.h>

#include "core/check.h"
#include "model/kv_rows.h"
#include "model.h"

sd_status_t sd_kv_cache_move_rows(sd_kv_cache_t *kv, const sd_model_t *m, const int32_t *src,
                                  const int32_t *dst, int n)
{
    if (kv == NULL || m == NULL || (n > 0 && (src == NULL || dst == NULL)))
        return sd_set_error(SD_ERR_INVALID_ARG, "sd_kv_cache_move_rows: NULL argument");
    for (int i = 0; i < n; i++)
        if (src[i] < 0 || src[i] >= kv->len || dst[i] < 0 || dst[i] > src[i])
            return sd_set_error(SD_ERR_INVALID_ARG,
                                "sd_kv_cache_move_rows: move %d from row %d to row %d (cache of "
                                "%d rows; rows move down only)", i, src[i], dst[i], kv->len);
    size_t row = (size_t)kv->n_head_kv * (size_t)kv->head_dim, bytes = row * sizeof(float);
    float *buf = malloc(bytes);
    SD_ALLOC_CHECK(buf, bytes, "a KV row");
    sd_backend_t *be = m->backend;
    for (int i = 0; i < n; i++) {
        if (src[i] == dst[i]) continue;
        for (int l = 0; l < kv->n_layer; l++) {
            size_t layer = (size_t)l * (size_t)kv->n_ctx * row;
            float *halves[] = {kv->k + layer, kv->v + layer};
            for (int h = 0; h < 2; h++) {
                sd_backend_download(be, buf, halves[h] + (size_t)src[i] * row, bytes);
                sd_backend_upload(be, halves[h] + (size_t)dst[i] * row, buf, bytes);
            }
        }
    }
    sd_status_t st = sd_backend_sync(be);
    free(buf);
    return st;
}
