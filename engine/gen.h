/* One generation as a state machine its caller drives one target forward at a time
 * (sd_generate_ex alone, the scheduler many at once in one batch): everything else happens
 * inside plan and advance, so the tokens do not depend on the driver.
 *   sd_gen_new -> { sd_gen_plan -> forward the plan -> sd_gen_advance } until done -> sd_gen_finish */
#ifndef SPECDEC_ENGINE_GEN_H
#define SPECDEC_ENGINE_GEN_H

#include "model/forward.h"
#include "model/model.h"
#include "engine/speculative.h"

typedef struct gen sd_gen_t;

/* The target forward a generation needs next. */
typedef struct sd_gen_plan {
    sd_seq_t *seq;         /* the generation's target sequence */
    const int32_t *tokens; /* [n] owned by the generation, valid until sd_gen_advance */
    int n;
    int want_logits;       /* 0 for a prompt chunk (prefill needs no logits) */
    const int32_t *parent; /* NULL, or a token tree step: [n] the rows' parents, for
                              sd_forward_tree(seq, tokens, n, seq->kv.len, parent, 0) */
} sd_gen_plan_t;

/* What sd_generate_ex refuses before generating: config, prompt and spec (drafter_given:
 * opts supply a drafter); messages start with `caller`. No allocation; any thread. */
sd_status_t sd_gen_check(const char *caller, const sd_model_t *model, const int32_t *prompt,
                         size_t n_prompt, const sd_gen_config_t *config,
                         const sd_spec_config_t *spec, int drafter_given);

/* Under TP (model->comm of size > 1), before any collective of a request: every rank gets
 * the first rank's refusal (local != SD_OK somewhere), or SD_ERR_RANK_DIVERGENCE naming what
 * differs when the ranks' requests differ — prompt, config, spec, the context size, the
 * model's shape, SPECDEC_CHECK_CONSISTENCY. Without TP: returns local. Collective otherwise. */
sd_status_t sd_gen_agree_on_request(const sd_model_t *model, sd_status_t local,
                                    const int32_t *prompt, size_t n_prompt,
                                    const sd_gen_config_t *config, const sd_spec_config_t *spec);

/* SPECDEC_CHECK_CONSISTENCY: 0 when it is "0" (no per-step check between ranks), else 1. */
int sd_gen_consistency_check(void);

/* sd_gen_check, then (under TP) the ranks' agreement on the request, then the generation's
 * state: target sequence, drafter, verifier, buffers. prompt and config (with its strings)
 * must stay valid until sd_gen_finish. batched: the forwards will run through
 * sd_forward_batch, which leaves logits on the host, so verification runs there. */
sd_status_t sd_gen_new(sd_model_t *model, const int32_t *prompt, size_t n_prompt,
                       const sd_gen_config_t *config, const sd_spec_config_t *spec,
                       const sd_gen_options_t *opts, sd_token_callback callback, void *user,
                       int batched, sd_gen_t **out);

/* The next forward: a prompt chunk of at most max_rows tokens (no logits), else a step —
 * the drafter proposes here — of the last token and k drafts (k + 1 <= max_rows rows, with
 * logits). row_cost: a loaded batch's price of a verified row (0: alone; load-aware drafts,
 * docs/design-notes.md "Serving"). */
sd_status_t sd_gen_plan(sd_gen_t *g, int max_rows, double row_cost, sd_gen_plan_t *plan);

/* Drafting in rounds, so a caller can batch many drafters' forwards: drafts_in_rounds is 1
 * when the next step's drafter proposes in rounds (it runs a model; not with trees, which
 * sd_gen_plan grows). draft_begin starts the
 * proposal (capped as sd_gen_plan's) and fills *fwd with its first forward; after the caller
 * ran it, draft_resume goes on. fwd->n == 0: the draft is ready for the next sd_gen_plan. */
int sd_gen_drafts_in_rounds(const sd_gen_t *g);
sd_status_t sd_gen_draft_begin(sd_gen_t *g, int max_rows, double row_cost,
                               sd_draft_forward_t *fwd);
sd_status_t sd_gen_draft_resume(sd_gen_t *g, sd_draft_forward_t *fwd);

/* After the planned forward ran: a prompt chunk is counted; a step is verified, its tokens
 * emitted (the callback runs here) and the caches rolled back. *done = 1 once generation
 * has ended (a stop, max_tokens, the context). */
sd_status_t sd_gen_advance(sd_gen_t *g, int *done);

/* Tokens generated so far. */
size_t sd_gen_n_tokens(const sd_gen_t *g);
/* 1 while prompt tokens remain to be forwarded (the next plan is a prompt chunk). */
int sd_gen_prefilling(const sd_gen_t *g);
/* The rows a step's plan may need at most: 1 + the longest draft (a tree: its nodes). */
int sd_gen_max_step_rows(const sd_gen_t *g);
/* Statistics so far (steps, drafted, accepted; rates only after sd_gen_finish). */
const sd_gen_stats_t *sd_gen_stats(const sd_gen_t *g);
/* KV-cache positions the target cache of a generation of this request holds: prompt +
 * max_tokens, capped by the model's context, less the last token (sampled, never
 * forwarded). Known before the generation exists (the serving engine admits by it). */
size_t sd_gen_kv_positions_for(const sd_model_t *model, size_t n_prompt,
                               const sd_gen_config_t *config);
/* Bytes the generation's target cache holds (a draft model's own cache is not counted). */
size_t sd_gen_kv_bytes(const sd_gen_t *g);

/* Mark the generation cancelled: sd_gen_finish then ends it with SD_STOP_CANCELLED. */
void sd_gen_cancel(sd_gen_t *g);

/* End the generation with status st — SD_OK after *done, or the failure that stopped it
 * (stop reason SD_STOP_ERROR; SD_STOP_CANCELLED after sd_gen_cancel) — moving everything it
 * made into *out (release it with sd_gen_result_free), then free g. Returns st. */
sd_status_t sd_gen_finish(sd_gen_t *g, sd_status_t st, sd_gen_result_t *out);

#endif
