/* The caller's drafter (SD_DRAFTER_CALLBACK): sd_callback_drafter_t's callbacks behind the
 * drafter ops. The library keeps the context (prompt and kept tokens) and hands it to
 * every proposal; proposals are checked (count, vocabulary, evidence class) and are
 * deterministic guesses (has_q = 0). It proposes cheaply: asked for the longest draft,
 * cut to what its evidence class earns. Contract: include/specdec/specdec.h. */
#ifndef SPECDEC_DRAFT_CALLBACK_H
#define SPECDEC_DRAFT_CALLBACK_H

#include <stdint.h>

#include "draft/registry.h"

/* Calls cb->create (when set) once, here. SD_ERR_INVALID_ARG for NULL arguments, a table
 * without propose or n_vocab < 1; create's failure as its status. */
sd_status_t sd_drafter_callback_new(const sd_callback_drafter_t *cb, int n_vocab,
                                    sd_drafter_t **out);

/* Its registry row's functions (draft/registry.h): "callback" (the callbacks themselves
 * are spec->callback, set through the API). Under tensor parallelism make builds it on
 * rank 0 only, inside a group drafter (draft/group_drafter.h) that broadcasts its
 * proposals. */
sd_status_t sd_drafter_callback_parse(const char *text, const char *arg, sd_spec_config_t *spec,
                                      const char **model_path);
sd_status_t sd_drafter_callback_check(const sd_spec_config_t *spec);
sd_status_t sd_drafter_callback_make(sd_model_t *target, const sd_spec_config_t *spec,
                                     sd_drafter_t **out);
int sd_drafter_callback_hash_words(const sd_spec_config_t *spec,
                                   int32_t words[SD_DRAFTER_HASH_WORDS]);
sd_status_t sd_drafter_callback_text(const sd_spec_config_t *spec, const sd_model_t *target,
                                     char *buf, size_t cap);

#endif
