/* Self-speculative layer-skip drafter: the target's first L layers, then its final norm
 * and output head, on the target's weights (no copy) and a KV cache of L layers; proposals,
 * q rows, early stop and context limits as in draft/seq_drafter.h. */
#ifndef SPECDEC_DRAFT_LAYERSKIP_H
#define SPECDEC_DRAFT_LAYERSKIP_H

#include <stdint.h>

#include "draft/registry.h"
#include "model/forward.h"
#include "model/model.h"

/* 1 <= n_layers < the target's n_layer, else SD_ERR_INVALID_ARG naming both; the drafter
 * borrows `target` (it must outlive the drafter). Its sequence has the target's n_ctx. */
sd_status_t sd_drafter_layerskip_new(const sd_model_t *target, int n_layers, sd_drafter_t **out);

/* Run on target_seq's K/V buffers (a sequence over the same target), releasing its own
 * cache and resetting its context: begin prefills nothing, propose feeds only the tokens
 * past the target's cache. target_seq must outlive the drafter and, between drafter calls,
 * hold a prefix of its context (roll back to the accepted length). SD_ERR_INVALID_ARG for
 * a drafter of another kind, NULL, or a sequence over another model. */
sd_status_t sd_drafter_layerskip_share_kv(sd_drafter_t *d, sd_seq_t *target_seq);

/* Forward passes the drafter has run; 0 for NULL or a drafter of another kind. */
uint64_t sd_drafter_layerskip_forwards(const sd_drafter_t *d);

/* Its registry row's functions (draft/registry.h): "layerskip:L", and "layerskip", which
 * leaves layerskip_layers 0: L = n_layer / 2 of the target, resolved by make, text and
 * batch_model. */
sd_status_t sd_drafter_layerskip_parse(const char *text, const char *arg, sd_spec_config_t *spec,
                                       const char **model_path);
sd_status_t sd_drafter_layerskip_check(const sd_spec_config_t *spec);
sd_status_t sd_drafter_layerskip_make(sd_model_t *target, const sd_spec_config_t *spec,
                                      sd_drafter_t **out);
int sd_drafter_layerskip_hash_words(const sd_spec_config_t *spec,
                                    int32_t words[SD_DRAFTER_HASH_WORDS]);
sd_status_t sd_drafter_layerskip_text(const sd_spec_config_t *spec, const sd_model_t *target,
                                      char *buf, size_t cap);
const sd_model_t *sd_drafter_layerskip_batch_model(const sd_model_t *target,
                                                   const sd_spec_config_t *spec, int *n_layers);

#endif
