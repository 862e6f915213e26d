/* One autoregressive drafter over an sd_seq_t, behind the draft-model drafter (every layer
 * of a second model) and layer-skip (the target's first L layers). Internal to draft/:
 * callers use model_drafter.h and layerskip.h. Its KV bookkeeping and early stop:
 * docs/design-notes.md, "Drafters".
 *
 * propose (context length = req->pos0; an empty context proposes nothing): greedy gives the
 * argmax chain, has_q = 0; sampling writes q_i = sd_sampler_probs to out->q row i (out->q
 * non-NULL, n_vocab the model's) and draws d_i with SD_RNG_DRAFT, has_q = 1. With
 * min_confidence > 0 it stops before d_i (i >= 1) whose top probability is below it.
 * At most n_ctx - pos0 + 1 are proposed (every fed token fits); SD_ERR_CONTEXT_FULL (begin
 * too) when the committed context exceeds n_ctx, naming both. Errors keep the context. */
#ifndef SPECDEC_DRAFT_SEQ_DRAFTER_H
#define SPECDEC_DRAFT_SEQ_DRAFTER_H

#include <stdint.h>

#include "draft/drafter.h"
#include "model/forward.h"
#include "model/model.h"

typedef enum sd_seq_drafter_kind {
    SD_SEQ_DRAFTER_MODEL = 0,     /* ops name "model" */
    SD_SEQ_DRAFTER_LAYERSKIP = 1, /* ops name "layerskip" */
} sd_seq_drafter_kind_t;

/* A drafter running `m` (borrowed: it must outlive the drafter) with sd_forward(...,
 * n_layers_used) on a sequence of its own (n_ctx = m->n_ctx). */
sd_status_t sd_seq_drafter_new(sd_seq_drafter_kind_t kind, const sd_model_t *m,
                               int n_layers_used, sd_drafter_t **out);

/* Run on target_seq's KV buffers (a sequence over the drafter's model; layer-skip: the
 * target), releasing its own cache and resetting its context; begin then prefills nothing.
 * target_seq must outlive the drafter and, between drafter calls, hold a prefix of the
 * drafter's context (what lies past it may be overwritten). SD_ERR_INVALID_ARG for NULL
 * or a sequence over another model. */
sd_status_t sd_seq_drafter_share_kv(sd_drafter_t *d, sd_seq_t *target_seq);

/* Take the cache's blocks from pool (a prefix-cache pool of the drafter's model): begin
 * reuses the context's longest cached prefix and registers what it fed, destroy registers
 * the context the cache holds. Before begin; SD_ERR_INVALID_ARG after share_kv, for a pool
 * of another model or a drafter not made here. */
sd_status_t sd_seq_drafter_use_pool(sd_drafter_t *d, sd_kv_pool_t *pool);

/* 1 when d is a drafter of this kind made by sd_seq_drafter_new. */
int sd_seq_drafter_is(const sd_drafter_t *d, sd_seq_drafter_kind_t kind);

/* sd_forward calls this drafter has made since it was created (prefill chunks in begin,
 * the pending tokens and each fed proposal in propose); 0 for NULL or a drafter not made
 * by sd_seq_drafter_new. */
uint64_t sd_seq_drafter_forwards(const sd_drafter_t *d);

/* The drafter's sequence (KV cache and last logits), for tests and statistics; NULL for
 * a drafter not made by sd_seq_drafter_new. */
const sd_seq_t *sd_seq_drafter_seq(const sd_drafter_t *d);

#endif
