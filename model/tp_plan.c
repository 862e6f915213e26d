/* Tensor parallelism: the default sharding plan of the llama/qwen2 family and the shard
 * of a loaded model (the plan in words: docs/design-notes.md, "Tensor parallelism"). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "tp_plan.h"

#define TP_COPY_ALIGN 64 /* each copied matrix starts on a cache line */

/* ---- the plan ------------------------------------------------------------ */

/* Local KV heads for query heads [head0, head0 + n_head/size): split, or replicated
 * (the one KV head the local query heads share). */
static sd_status_t plan_kv(const sd_hparams_t *hp, int size, int head0, sd_tp_shard_t *out)
{
    int nkv = hp->n_head_kv, group = hp->n_head / nkv; /* query heads per KV head */
    if (nkv % size == 0) {
        out->n_head_kv = nkv / size;
        out->kv_head0 = head0 / group;
        return SD_OK;
    }
    if (size % nkv == 0) {
        out->n_head_kv = 1;
        out->kv_head0 = head0 / group;
        return SD_OK;
    }
    return sd_set_error(SD_ERR_TP_PLAN,
                        "TP plan: %d KV heads can neither be split over TP size %d (%d %% %d != "
                        "0) nor replicated (%d %% %d != 0)",
                        nkv, size, nkv, size, size, nkv);
}

sd_status_t sd_tp_plan(const sd_hparams_t *hp, int rank, int size, sd_tp_shard_t *out)
{
    if (hp == NULL || out == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG, "sd_tp_plan: hparams and out must be non-NULL");
    if (size < 1 || rank < 0 || rank >= size)
        return sd_set_error(SD_ERR_INVALID_ARG, "sd_tp_plan: rank %d outside a TP size of %d",
                            rank, size);
    if (hp->n_head < 1 || hp->n_head_kv < 1 || hp->n_head % hp->n_head_kv != 0)
        return sd_set_error(SD_ERR_INVALID_ARG,
                            "sd_tp_plan: %d query heads are not a multiple of %d KV heads",
                            hp->n_head, hp->n_head_kv);
    if (hp->n_head % size != 0)
        return sd_set_error(SD_ERR_TP_PLAN,
                            "TP plan: %d attention heads are not divisible by TP size %d",
                            hp->n_head, size);
    if (hp->n_ff % size != 0)
        return sd_set_error(SD_ERR_TP_PLAN,
                            "TP plan: feed-forward length %d is not divisible by TP size %d",
                            hp->n_ff, size);
    sd_tp_shard_t t = {.rank = rank, .size = size, .n_head = hp->n_head / size,
                       .n_ff = hp->n_ff / size};
    t.head0 = rank * t.n_head;
    t.ff0 = rank * t.n_ff;
    SD_CHECK(plan_kv(hp, size, t.head0, &t));
    *out = t;
    return SD_OK;
}

sd_status_t sd_tp_check_col_split(const char *tensor, const sd_weight_t *w, int64_t c0,
                                  int64_t n)
{
    if (w == NULL || c0 < 0 || n < 1 || c0 + n > w->cols)
        return sd_set_error(SD_ERR_INVALID_ARG,
                            "TP split of '%s': columns [%lld, %lld) outside [0, %lld)",
                            tensor ? tensor : "?", (long long)c0, (long long)(c0 + n),
                            (long long)(w ? w->cols : 0));
    int64_t blk = sd_dtype_block_elems(w->type);
    if (blk < 1)
        return sd_set_error(SD_ERR_UNSUPPORTED_TYPE, "TP split of '%s': type %u is not supported",
                            tensor ? tensor : "?", (unsigned)w->type);
    if (c0 % blk != 0 || n % blk != 0) {
        const char *tn = sd_dtype_name(w->type);
        return sd_set_error(SD_ERR_TP_PLAN,
                            "TP plan: tensor '%s' is %s in blocks of %lld columns; a rank's %lld "
                            "columns [%lld, %lld) do not start and end on a block boundary",
                            tensor ? tensor : "?", tn ? tn : "?", (long long)blk, (long long)n,
                            (long long)c0, (long long)(c0 + n));
    }
    return SD_OK;
}

/* ---- the shard of a loaded model ------------------------------------------ */

/* Rows [r0, r0 + n) of w: a view. */
static sd_weight_t row_view(const sd_weight_t *w, int64_t r0, int64_t n)
{
    sd_weight_t v = *w;
    v.rows = n;
    v.data = (const char *)w->data + (size_t)r0 * w->row_bytes;
    return v;
}

static size_t align_up(size_t n) { return (n + TP_COPY_ALIGN - 1) / TP_COPY_ALIGN * TP_COPY_ALIGN; }

/* Column ranges of layer il's row-parallel matrices: Wo [E, qd] -> the local heads' columns,
 * down [E, n_ff] -> the local features. */
static void col_ranges(const sd_model_t *m, int64_t *wo_c0, int64_t *wo_n, int64_t *down_c0,
                       int64_t *down_n)
{
    const sd_tp_shard_t *t = &m->tp;
    *wo_c0 = (int64_t)t->head0 * m->hp.head_dim;
    *wo_n = (int64_t)t->n_head * m->hp.head_dim;
    *down_c0 = t->ff0;
    *down_n = t->n_ff;
}

/* Checks layer il's column splits and adds the bytes of its copies to *bytes. */
static sd_status_t check_layer(const sd_model_t *m, int il, size_t *bytes)
{
    const sd_layer_t *L = &m->layers[il];
    int64_t wo_c0, wo_n, down_c0, down_n;
    col_ranges(m, &wo_c0, &wo_n, &down_c0, &down_n);
    char name[96];
    snprintf(name, sizeof name, "blk.%d.attn_output.weight", il);
    SD_CHECK(sd_tp_check_col_split(name, &L->wo, wo_c0, wo_n));
    snprintf(name, sizeof name, "blk.%d.ffn_down.weight", il);
    SD_CHECK(sd_tp_check_col_split(name, &L->w_down, down_c0, down_n));
    size_t wo_row, down_row;
    SD_CHECK(sd_dtype_row_bytes(L->wo.type, wo_n, &wo_row));
    SD_CHECK(sd_dtype_row_bytes(L->w_down.type, down_n, &down_row));
    *bytes += align_up(wo_row * (size_t)L->wo.rows) + align_up(down_row * (size_t)L->w_down.rows);
    return SD_OK;
}

/* Columns [c0, c0 + n) (block-aligned, checked) of every row of *w copied to dst; *w
 * becomes the copy. Returns the next aligned free byte after it. */
static char *copy_cols(sd_weight_t *w, int64_t c0, int64_t n, char *dst)
{
    size_t off, bytes;
    sd_dtype_row_bytes(w->type, c0, &off); /* checked by check_layer */
    sd_dtype_row_bytes(w->type, n, &bytes);
    for (int64_t r = 0; r < w->rows; r++)
        memcpy(dst + (size_t)r * bytes, (const char *)w->data + (size_t)r * w->row_bytes + off,
               bytes);
    *w = (sd_weight_t){.type = w->type, .rows = w->rows, .cols = n, .row_bytes = bytes,
                       .data = dst};
    return dst + align_up(bytes * (size_t)w->rows);
}

/* Layer il as the shard sees it: local rows of Wq/Wk/Wv/gate/up and biases (views), local
 * columns of Wo/down (copied to dst). Returns the next free byte. */
static char *shard_layer(sd_model_t *m, int il, char *dst)
{
    const sd_tp_shard_t *t = &m->tp;
    sd_layer_t *L = &m->layers[il];
    int64_t hd = m->hp.head_dim, q0 = t->head0 * hd, kv0 = t->kv_head0 * hd;
    L->wq = row_view(&L->wq, q0, t->n_head * hd);
    L->wk = row_view(&L->wk, kv0, t->n_head_kv * hd);
    L->wv = row_view(&L->wv, kv0, t->n_head_kv * hd);
    if (L->bq) L->bq += q0;
    if (L->bk) L->bk += kv0;
    if (L->bv) L->bv += kv0;
    L->w_gate = row_view(&L->w_gate, t->ff0, t->n_ff);
    L->w_up = row_view(&L->w_up, t->ff0, t->n_ff);
    int64_t wo_c0, wo_n, down_c0, down_n;
    col_ranges(m, &wo_c0, &wo_n, &down_c0, &down_n);
    dst = copy_cols(&L->wo, wo_c0, wo_n, dst);
    return copy_cols(&L->w_down, down_c0, down_n, dst);
}

sd_status_t sd_tp_shard_layers(sd_model_t *m)
{
    if (m == NULL || m->layers == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG, "sd_tp_shard_layers: model has no layers");
    size_t bytes = 0;
    for (int il = 0; il < m->hp.n_layer; il++) SD_CHECK(check_layer(m, il, &bytes));
    m->tp_copies = aligned_alloc(TP_COPY_ALIGN, bytes);
    SD_ALLOC_CHECK(m->tp_copies, bytes, "the local columns of Wo and down");
    char *dst = m->tp_copies;
    for (int il = 0; il < m->hp.n_layer; il++) dst = shard_layer(m, il, dst);
    return SD_OK;
}
