/* Draft group -> target group: a drafter that runs on the first D ranks of the world and
 * reaches every rank by broadcast.
 *
 * Under tensor parallelism the target runs on every rank of the world; a draft model may
 * run on fewer (its own group: the world's first D ranks, or rank 0 alone). The group
 * drafter wraps the real drafter on ranks < D and nothing on the others. Each call is
 * collective over the world, in the same order on every rank:
 *   begin    ranks < D begin the inner drafter; rank 0 broadcasts its status and its
 *            forward count
 *   propose  ranks < D propose (the draft group runs its own collectives); rank 0
 *            broadcasts {status, n, has_q, forwards}, then the n tokens, then the n q rows
 *            when has_q: every rank holds the same proposal and returns the same status
 *            (a draft model out of context is SD_ERR_CONTEXT_FULL everywhere)
 *   accept / rollback / reset   ranks < D only (the others hold no draft state)
 * so every rank of the world verifies the same drafts and makes the same decision. */
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

#endif
