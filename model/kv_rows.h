/* Moving KV rows inside one sequence's cache (model/kv_rows.c): a token tree's accepted path
 * goes from its scratch slots to consecutive positions. The one place that knows the cache's
 * row layout for this (re-implemented over block tables for the paged cache). */
#ifndef SPECDEC_MODEL_KV_ROWS_H
#define SPECDEC_MODEL_KV_ROWS_H

#include "model/kv_cache.h"

/* For i < n in order: K and V row src[i] -> row dst[i] in every layer, exactly; rows below
 * kv->len, dst[i] <= src[i], and a dst never a later src (a path moving down).
 * SD_ERR_INVALID_ARG naming a bad row. */
sd_status_t sd_kv_cache_move_rows(sd_kv_cache_t *kv, const sd_model_t *m, const int32_t *src,
                                  const int32_t *dst, int n);

#endif
