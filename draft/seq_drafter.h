/* One autoregressive drafter over an sd_seq_t, shared by the draft-model drafter (a
 * second model, every layer) and the self-speculative layer-skip drafter (the target's
 * first L layers). Internal to draft/: callers use model_drafter.h and layerskip.h.
 *
 * Bookkeeping. The drafter keeps the committed context ctx[0..len) and, after a
 * proposal, the proposed tokens right behind it in ctx[len..len+prop_n). Its KV cache
 * holds ctx[0..kv.len): every committed token except at least the last one, which is
 * fed (with any other pending tokens) at the start of the next propose so that its
 * logits give the first proposal. After proposing n tokens the cache also holds
 * d[0..n-1) (the last proposal is never fed); accept keeps what of that was accepted.
 *
 * propose (context length len = req->pos0 >= 1; an empty context proposes nothing):
 *   - greedy (temperature <= 0): d_i = argmax of the logits, has_q = 0;
 *   - sampling: q_i = sd_sampler_probs(params, logits) written to out->q row i,
 *     d_i = sd_sample_from_probs(q_i, sd_rng_uniform(seed, pos0 + i, SD_RNG_DRAFT)),
 *     has_q = 1 (out->q must then be non-NULL with n_vocab equal to the model's);
 *   - confidence: the drafter's top probability at position pos0 + i is max(q_i) when
 *     sampling and max(softmax(logits)) (temperature 1) when greedy. With
 *     min_confidence > 0, drafting stops before d_i when i >= 1 and that top probability
 *     is below min_confidence: the first token is always proposed (it costs no extra
 *     forward: its logits come from feeding the context).
 *   - context: proposals are capped so every fed token fits the cache (at most
 *     n_ctx - len + 1 of them); SD_ERR_CONTEXT_FULL when the committed context itself
 *     no longer fits (len > n_ctx), naming both numbers. begin reports it too.
 * Errors leave the committed context unchanged (the proposal is forgotten). */
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

/* Run on target_seq's KV buffers instead of a cache of its own (which is released);
 * target_seq must be a sequence over the model the drafter was made with (layer-skip:
 * the target, whose first L layers it runs; draft model: that same model). The target's
 * committed prefix then counts as fed, so begin prefills nothing. The drafter's context
 * is reset. target_seq must outlive the drafter, and between drafter calls its cache must
 * hold a prefix of the drafter's context (anything past that prefix may be overwritten).
 * SD_ERR_INVALID_ARG for NULL or a sequence over another model. */
sd_status_t sd_seq_drafter_share_kv(sd_drafter_t *d, sd_seq_t *target_seq);

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
