/* Cross-vocabulary drafter: a draft model whose tokenizer differs from the target's
 * proposes through text. The target's context is rendered as text and encoded with the
 * draft tokenizer; the draft model's greedy proposal is rendered as text and encoded with
 * the target tokenizer. The translation and its boundary rules: docs/design-notes.md,
 * "Drafting across vocabularies". Proposals are deterministic (has_q = 0), so verification
 * keeps greedy output and sampling exactly the target's. */
#ifndef SPECDEC_DRAFT_XVOCAB_H
#define SPECDEC_DRAFT_XVOCAB_H

#include <stdint.h>

#include "draft/registry.h"

/* The drafter borrows both models (they must outlive it). SD_ERR_NO_TOKENIZER naming the
 * model without one; SD_ERR_INVALID_ARG for NULL arguments. The draft model's context
 * limits its own: SD_ERR_CONTEXT_FULL from begin or propose once the translated context
 * exceeds the draft model's n_ctx. */
sd_status_t sd_drafter_xvocab_new(sd_model_t *draft, const sd_model_t *target, sd_drafter_t **out);

/* The same translation around any drafter `inner` of the draft model's vocabulary (owned
 * on success); the draft model gives only its tokenizer and vocabulary size. For tests. */
sd_status_t sd_drafter_xvocab_wrap(sd_drafter_t *inner, const sd_model_t *draft,
                                   const sd_model_t *target, sd_drafter_t **out);
/* The inner drafter's context (draft tokens, as of the last proposal or begin) into
 * *n; NULL with *n = 0 for a drafter of another kind. For tests. */
const int32_t *sd_drafter_xvocab_draft_context(const sd_drafter_t *d, size_t *n);

/* Its registry row's own functions (draft/registry.h): "xvocab:PATH"; make builds it over
 * spec->draft_model, or under tensor parallelism with draft_ranks > 0 the group drafter
 * around it (draft/group_drafter.h). check, hash_words and batch_model are the draft
 * model row's. */
sd_status_t sd_drafter_xvocab_parse(const char *text, const char *arg, sd_spec_config_t *spec,
                                    const char **model_path);
sd_status_t sd_drafter_xvocab_make(sd_model_t *target, const sd_spec_config_t *spec,
                                   sd_drafter_t **out);
sd_status_t sd_drafter_xvocab_text(const sd_spec_config_t *spec, const sd_model_t *target,
                                   char *buf, size_t cap);

#endif
