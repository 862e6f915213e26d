/* The default tensor-parallel plan of the llama/qwen2 family (Megatron style; never "no
 * plan") and the sharding of loaded layers by it. The plan and why: docs/design-notes.md,
 * "Tensor parallelism". */
#ifndef SPECDEC_MODEL_TP_PLAN_H
#define SPECDEC_MODEL_TP_PLAN_H

#include "model/model.h" /* sd_tp_shard_t lives there: struct sd_model holds one */

/* *out = the shard of rank `rank` of `size` for hp (size 1: everything local). Pure.
 * SD_ERR_TP_PLAN naming the numbers when n_head % size, n_ff % size, or both n_head_kv % size
 * and size % n_head_kv are non-zero; SD_ERR_INVALID_ARG for rank/size out of range or n_head
 * not a multiple of n_head_kv. */
sd_status_t sd_tp_plan(const sd_hparams_t *hp, int rank, int size, sd_tp_shard_t *out);

/* SD_OK when columns [c0, c0 + n) of w start and end on a quant-block boundary; else
 * SD_ERR_TP_PLAN naming `tensor`, the type, its block size, c0 and n (SD_ERR_INVALID_ARG for
 * a range outside w, SD_ERR_UNSUPPORTED_TYPE for an unknown type). */
sd_status_t sd_tp_check_col_split(const char *tensor, const sd_weight_t *w, int64_t c0,
                                  int64_t n);

/* Turn m's loaded full layers into m->tp's shard (the loader calls it when m->tp.size > 1):
 * row views of Wq/Wk/Wv/gate/up and the biases; the local columns of Wo and down copied into
 * m->tp_copies (owned by m). SD_ERR_TP_PLAN (every rank alike) for a split off a block
 * boundary; SD_ERR_OUT_OF_MEMORY naming the size. */
sd_status_t sd_tp_shard_layers(sd_model_t *m);

#endif
