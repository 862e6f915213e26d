/* Draft-model drafter: a second, smaller model with the target's vocabulary proposes from
 * a KV cache of its own, one drafter per request; proposals, q rows, early stop and context
 * limits as in draft/seq_drafter.h. */
#ifndef SPECDEC_DRAFT_MODEL_DRAFTER_H
#define SPECDEC_DRAFT_MODEL_DRAFTER_H

#include <stdint.h>

#include "draft/registry.h"

struct sd_kv_pool;

/* The drafter borrows `draft` (it must outlive the drafter; the drafter never frees it).
 * Its sequence has the draft model's n_ctx. SD_ERR_VOCAB_MISMATCH when the vocabularies
 * differ: different sizes (both named), or, when both models carry a tokenizer, the
 * first token id whose texts differ (the id and both texts named). SD_ERR_INVALID_ARG
 * for NULL arguments. */
sd_status_t sd_drafter_model_new(sd_model_t *draft, const sd_model_t *target, sd_drafter_t **out);

/* Forward passes the drafter has run (prefill chunks and one per fed token in propose);
 * 0 for NULL or a drafter of another kind. */
uint64_t sd_drafter_model_forwards(const sd_drafter_t *d);

/* A draft-model drafter (made by sd_drafter_model_new) takes its KV blocks from pool, a
 * prefix-cache pool of the draft model (draft/seq_drafter.h, sd_seq_drafter_use_pool);
 * another drafter (a group drafter, say) is left as is: SD_OK, 0 in *used. */
sd_status_t sd_drafter_model_use_pool(sd_drafter_t *d, struct sd_kv_pool *pool, int *used);

/* Its registry row's functions (draft/registry.h): "model:PATH" and any text naming no
 * drafter (PATH). make builds the drafter over spec->draft_model, or under tensor
 * parallelism with draft_ranks > 0 the group drafter (draft/group_drafter.h). */
sd_status_t sd_drafter_model_parse(const char *text, const char *arg, sd_spec_config_t *spec,
                                   const char **model_path);
sd_status_t sd_drafter_model_check(const sd_spec_config_t *spec);
sd_status_t sd_drafter_model_make(sd_model_t *target, const sd_spec_config_t *spec,
                                  sd_drafter_t **out);
int sd_drafter_model_hash_words(const sd_spec_config_t *spec, int32_t words[SD_DRAFTER_HASH_WORDS]);
sd_status_t sd_drafter_model_text(const sd_spec_config_t *spec, const sd_model_t *target,
                                  char *buf, size_t cap);
const sd_model_t *sd_drafter_model_batch_model(const sd_model_t *target,
                                               const sd_spec_config_t *spec, int *n_layers);

#endif
