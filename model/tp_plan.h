/* Tensor parallelism for the llama/qwen2 family: the default sharding plan every model
 * of the family gets (never "no plan").
 *
 * Plan for TP size P, rank r (Megatron style):
 *   - attention: query heads split into P contiguous equal ranges (n_head % P == 0, else
 *     SD_ERR_TP_PLAN naming n_head and P). KV heads: with g = n_head / n_head_kv query
 *     heads per KV head, rank r's heads [h0, h0 + n_head/P) need KV heads h0/g ..
 *     (h0 + n_head/P - 1)/g: split when n_head_kv % P == 0, replicated (one KV head per
 *     rank, the one its query heads share) when P % n_head_kv == 0, else SD_ERR_TP_PLAN
 *     naming n_head_kv and P.
 *   - Wq/Wk/Wv (and qwen2's biases): column-parallel = the rows of the local heads
 *     (zero-copy views into the mapping). Wo: row-parallel = the columns of the local
 *     heads (copied out; each row's slice must start and end on a quant-block boundary,
 *     else SD_ERR_TP_PLAN naming the tensor, its type and block size).
 *   - gate/up: column-parallel, n_ff split into P equal ranges (n_ff % P == 0 else
 *     SD_ERR_TP_PLAN); down: row-parallel over the same ranges (block boundaries).
 *   - one allreduce-sum of the [n, n_embd] partial outputs after Wo and one after down
 *     (comm/comm.h: rank-order sums, bit-identical on every rank).
 *   - embedding, norms and the output head are replicated: every rank computes the same
 *     full logits, so every rank makes the same sampling and verification decision.
 *   - the KV cache of a rank holds its local KV heads only. */
#ifndef SPECDEC_ENGINE_TP_H
#define SPECDEC_ENGINE_TP_H

#include "model/model.h" /* sd_tp_shard_t lives there: struct sd_model holds one */

/* The plan of rank `rank` of `size` for hyper-parameters hp (size 1: everything local).
 * SD_ERR_TP_PLAN naming the numbers when the model cannot be split that way;
 * SD_ERR_INVALID_ARG for rank/size out of range. Pure: no I/O. */
sd_status_t sd_tp_plan(const sd_hparams_t *hp, int rank, int size, sd_tp_shard_t *out);

/* Block-boundary check of a row-parallel split: every rank's column range
 * [c0, c0 + n) of weight w (type, cols) starts and ends on a block boundary.
 * SD_ERR_TP_PLAN naming `tensor`, the type, its block size, c0 and n otherwise. */
sd_status_t sd_tp_check_col_split(const char *tensor, const sd_weight_t *w, int64_t c0,
                                  int64_t n);

/* Turn the loaded full-model layers of m into m->tp's shard (called by the loader when
 * m->tp.size > 1): row views for Wq/Wk/Wv/gate/up and the biases, copies of the local
 * columns of Wo and down into m->tp_copies. SD_ERR_TP_PLAN (every rank alike) when a
 * column split is off a block boundary; SD_ERR_OUT_OF_MEMORY naming the size. */
sd_status_t sd_tp_shard_layers(sd_model_t *m);

#endif
