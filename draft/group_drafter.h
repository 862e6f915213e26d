/* Draft group -> target group: a drafter that runs on the world's first D ranks and reaches
 * every rank by broadcast. Every rank makes every call, in the same order; begin and
 * propose return the same status and proposal everywhere (docs/design-notes.md, "The step
 * loop over ranks"). */
#ifndef SPECDEC_DRAFT_GROUP_DRAFTER_H
#define SPECDEC_DRAFT_GROUP_DRAFTER_H

#include <stdint.h>

#include "draft/drafter.h"

/* Collective over world. world: the target's communicator (size >= 2). draft_ranks: D in
 * [1, size]. inner_status / inner: how building the real drafter went on this rank
 * (ranks >= D pass SD_OK and NULL). Every rank returns the same status: when any rank
 * failed, the first failing rank's status and message (prefixed "rank R: ") on all.
 * n_vocab: the row length of q. On success the group drafter owns inner; on failure the
 * caller still does. */
sd_status_t sd_drafter_group_new(sd_comm_t *world, int draft_ranks, sd_status_t inner_status,
                                 sd_drafter_t *inner, int n_vocab, sd_drafter_t **out);

/* The drafter make(spec->draft_model, target, out) spec asks for: under tensor
 * parallelism with spec->draft_ranks > 0, on the target group's first draft_ranks ranks
 * (which hold the draft model) inside a group drafter on every rank (collective over
 * target->comm); else over spec->draft_model (SD_ERR_INVALID_ARG when NULL). */
typedef sd_status_t (*sd_draft_model_ctor)(sd_model_t *draft, const sd_model_t *target,
                                           sd_drafter_t **out);
sd_status_t sd_drafter_make_over_draft_model(sd_model_t *target, const sd_spec_config_t *spec,
                                             sd_draft_model_ctor make, sd_drafter_t **out);

#endif
