/* The group drafter (draft/group_drafter.h): the real drafter on the draft group's ranks,
 * its proposals broadcast from rank 0 to the whole target group. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm/comm.h"
#include "core/check.h"
#include "draft/drafter_impl.h"
#include "draft/group_drafter.h"
#include "model/model.h"

#define AGREE_MSG_LEN 512

typedef struct group_drafter {
    sd_drafter_t base;
    sd_comm_t *world;
    int rank, draft_ranks;
    sd_drafter_t *inner; /* ranks < draft_ranks; NULL elsewhere */
    int n_vocab;
    uint64_t forwards;   /* rank 0's draft forward count, as last broadcast */
} group_drafter_t;

/* What rank 0 tells every rank about a begin or a proposal. */
typedef struct draft_header {
    int32_t status, n, has_q, evidence;
    uint64_t forwards;
} draft_header_t;

static const sd_drafter_ops_t group_ops;

static group_drafter_t *as_group(sd_drafter_t *d) { return (group_drafter_t *)d; }

sd_status_t sd_drafter_group_new(sd_comm_t *world, int draft_ranks, sd_status_t inner_status,
                                 sd_drafter_t *inner, int n_vocab, sd_drafter_t **out)
{
    *out = NULL;
    int rank = sd_comm_rank(world), size = sd_comm_size(world);
    sd_status_t local = inner_status;
    if (local == SD_OK && (draft_ranks < 1 || draft_ranks > size))
        local = sd_set_error(SD_ERR_INVALID_ARG, "draft_ranks = %d outside [1, %d]", draft_ranks,
                             size);
    else if (local == SD_OK && (rank < draft_ranks) != (inner != NULL))
        local = sd_set_error(SD_ERR_INVALID_ARG,
                             "rank %d of %d with draft_ranks = %d %s a draft model", rank, size,
                             draft_ranks, inner ? "must not hold" : "needs");
    SD_CHECK(sd_comm_agree(world, local));
    group_drafter_t *g = calloc(1, sizeof *g);
    SD_ALLOC_CHECK(g, sizeof *g, "group drafter");
    *g = (group_drafter_t){{&group_ops}, world, rank, draft_ranks, inner, n_vocab, 0};
    *out = &g->base;
    return SD_OK;
}

sd_status_t sd_drafter_make_over_draft_model(sd_model_t *target, const sd_spec_config_t *spec,
                                             sd_draft_model_ctor make, sd_drafter_t **out)
{
    sd_comm_t *world = target->comm;
    if (spec->draft_ranks == 0 || sd_comm_size(world) == 1) {
        if (spec->draft_model == NULL)
            return sd_set_error(SD_ERR_INVALID_ARG, "spec draft_ranks = %d needs tensor "
                                "parallelism (a target with a comm of size > 1); without it "
                                "draft_model must be set", spec->draft_ranks);
        return make(spec->draft_model, target, out);
    }
    sd_drafter_t *inner = NULL;
    sd_status_t st = SD_OK;
    if (sd_comm_rank(world) < spec->draft_ranks && spec->draft_model != NULL)
        st = make(spec->draft_model, target, &inner);
    sd_status_t gs = sd_drafter_group_new(world, spec->draft_ranks, st, inner,
                                          target->hp.n_vocab, out);
    if (gs != SD_OK) sd_drafter_free(inner);
    return gs;
}

/* Rank 0's status of a draft-group call, with the message, on every rank. */
static sd_status_t share_header(group_drafter_t *g, sd_status_t st, draft_header_t *h)
{
    char msg[AGREE_MSG_LEN];
    h->status = (int32_t)st;
    h->forwards = g->inner ? sd_drafter_forwards(g->inner) : 0;
    SD_CHECK(sd_comm_broadcast(g->world, h, sizeof *h, 0));
    g->forwards = h->forwards;
    if (h->status == SD_OK) return SD_OK;
    snprintf(msg, sizeof msg, "%s", sd_last_error());
    SD_CHECK(sd_comm_broadcast(g->world, msg, sizeof msg, 0));
    msg[AGREE_MSG_LEN - 1] = '\0';
    return sd_set_error((sd_status_t)h->status, "%s", msg);
}

static sd_status_t group_begin(sd_drafter_t *d, const int32_t *tokens, int n)
{
    group_drafter_t *g = as_group(d);
    sd_status_t st = g->inner ? sd_drafter_begin(g->inner, tokens, n) : SD_OK;
    draft_header_t h = {0};
    return share_header(g, st, &h);
}

/* Ranks < D propose; rank 0's proposal (tokens, and q rows when has_q) reaches all. */
static sd_status_t group_propose(sd_drafter_t *d, const sd_draft_request_t *req,
                                 sd_draft_out_t *out)
{
    group_drafter_t *g = as_group(d);
    sd_status_t st = SD_OK;
    out->n = 0;
    out->has_q = 0;
    if (g->inner) st = sd_drafter_propose(g->inner, req, out);
    draft_header_t h = {.n = out->n, .has_q = out->has_q, .evidence = out->evidence};
    SD_CHECK(share_header(g, st, &h));
    if (h.n < 0 || h.n > req->k || (h.has_q && out->q == NULL))
        return sd_set_error(SD_ERR_INTERNAL, "group drafter: rank 0 proposed %d tokens (k = %d)%s",
                            h.n, req->k, h.has_q && out->q == NULL ? " with q while greedy" : "");
    out->n = h.n;
    out->has_q = h.has_q;
    out->evidence = h.evidence;
    if (h.n == 0) return SD_OK;
    SD_CHECK(sd_comm_broadcast(g->world, out->tokens, (size_t)h.n * sizeof *out->tokens, 0));
    if (h.has_q)
        SD_CHECK(sd_comm_broadcast(g->world, out->q,
                                   (size_t)h.n * (size_t)g->n_vocab * sizeof *out->q, 0));
    return SD_OK;
}

/* Ranks < D build the tree; rank 0's (tokens, parents, and q rows 0..n when has_q) reaches
 * all, as a chain's proposal does. */
static sd_status_t group_propose_tree(sd_drafter_t *d, const sd_draft_request_t *req,
                                      const sd_tree_shape_t *shape, sd_draft_tree_t *out)
{
    group_drafter_t *g = as_group(d);
    sd_status_t st = g->inner ? sd_drafter_propose_tree(g->inner, req, shape, out) : SD_OK;
    draft_header_t h = {.n = out->n, .has_q = out->has_q};
    SD_CHECK(share_header(g, st, &h));
    if (h.n < 0 || h.n > SD_SPEC_TREE_MAX_NODES || (h.has_q && out->q == NULL))
        return sd_set_error(SD_ERR_INTERNAL, "group drafter: rank 0 proposed a tree of %d nodes%s",
                            h.n, h.has_q && out->q == NULL ? " with q while greedy" : "");
    out->n = h.n;
    out->has_q = h.has_q;
    if (h.n == 0) return SD_OK;
    SD_CHECK(sd_comm_broadcast(g->world, out->tokens, (size_t)h.n * sizeof *out->tokens, 0));
    SD_CHECK(sd_comm_broadcast(g->world, out->parent, (size_t)h.n * sizeof *out->parent, 0));
    if (h.has_q)
        SD_CHECK(sd_comm_broadcast(g->world, out->q,
                                   (size_t)(h.n + 1) * (size_t)g->n_vocab * sizeof *out->q, 0));
    return SD_OK;
}

static sd_status_t group_accept_path(sd_drafter_t *d, const int32_t *tokens, int n, int32_t next)
{
    group_drafter_t *g = as_group(d);
    return g->inner ? sd_drafter_accept_path(g->inner, tokens, n, next) : SD_OK;
}

static sd_status_t group_accept(sd_drafter_t *d, int n_accepted, int32_t next_token)
{
    group_drafter_t *g = as_group(d);
    return g->inner ? sd_drafter_accept(g->inner, n_accepted, next_token) : SD_OK;
}

static sd_status_t group_rollback(sd_drafter_t *d, int n)
{
    group_drafter_t *g = as_group(d);
    return g->inner ? sd_drafter_rollback(g->inner, n) : SD_OK;
}

static void group_reset(sd_drafter_t *d)
{
    group_drafter_t *g = as_group(d);
    if (g->inner) sd_drafter_reset(g->inner);
}

static void group_destroy(sd_drafter_t *d)
{
    group_drafter_t *g = as_group(d);
    sd_drafter_free(g->inner);
    free(g);
}

/* Rank 0's draft forward count, as last broadcast (the same on every rank). */
static uint64_t group_forwards(const sd_drafter_t *d)
{
    return ((const group_drafter_t *)d)->forwards;
}

static const sd_drafter_ops_t group_ops = {
    .name = "group",
    .begin = group_begin,
    .propose = group_propose,
    .accept = group_accept,
    .rollback = group_rollback,
    .reset = group_reset,
    .destroy = group_destroy,
    .forwards = group_forwards,
    .propose_tree = group_propose_tree,
    .accept_path = group_accept_path,
};
