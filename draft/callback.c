/* The caller's drafter (draft/callback.h): the context kept here, the callbacks called
 * with the public types, every proposal checked before the step loop sees it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm/comm.h"
#include "core/check.h"
#include "draft/callback.h"
#include "draft/drafter_impl.h"
#include "draft/group_drafter.h"
#include "verify/tree.h"

typedef struct cb_drafter {
    sd_drafter_t base;
    sd_callback_drafter_t cb; /* the caller's table, copied */
    void *state;              /* what cb.create made (cb.user without create) */
    int n_vocab;
    int32_t *ctx;             /* [cap] the prompt and every kept token */
    size_t len, cap;
    int32_t *prop;            /* [prop_cap] the last proposal */
    int prop_n, prop_cap;
    int32_t tree_tokens[SD_SPEC_TREE_MAX_NODES], tree_parent[SD_SPEC_TREE_MAX_NODES];
} cb_drafter_t;

static const sd_drafter_ops_t callback_ops;

/* A callback's failure as its own status, with what failed. */
static sd_status_t failed(const char *what, sd_status_t st)
{
    return sd_set_error(st, "callback drafter: %s returned %s", what, sd_status_string(st));
}

static sd_status_t reserve(cb_drafter_t *g, size_t n)
{
    if (n <= g->cap) return SD_OK;
    size_t cap = g->cap ? g->cap : 256;
    while (cap < n) cap *= 2;
    int32_t *ctx = realloc(g->ctx, cap * sizeof *ctx);
    SD_ALLOC_CHECK(ctx, cap * sizeof *ctx, "callback drafter context");
    g->ctx = ctx;
    g->cap = cap;
    return SD_OK;
}

static sd_status_t check_token(const cb_drafter_t *g, int32_t token, const char *what)
{
    return sd_drafter_check_token(&g->base, token, g->n_vocab, what);
}

static sd_status_t cb_begin(sd_drafter_t *d, const int32_t *tokens, int n)
{
    cb_drafter_t *g = (cb_drafter_t *)d;
    SD_CHECK(sd_drafter_check_tokens(d, tokens, n, g->n_vocab, "context"));
    SD_CHECK(reserve(g, (size_t)n));
    if (n > 0) memcpy(g->ctx, tokens, (size_t)n * sizeof *tokens);
    g->len = (size_t)n;
    g->prop_n = 0;
    sd_status_t st = g->cb.begin ? g->cb.begin(g->state, g->ctx, g->len) : SD_OK;
    return st == SD_OK ? SD_OK : failed("begin", st);
}

/* SD_ERR_INVALID_ARG naming what the callback got wrong in p (k asked). */
static sd_status_t check_proposal(const cb_drafter_t *g, const sd_draft_proposal_t *p, int k)
{
    if (p->n < 0 || p->n > k)
        return sd_set_error(SD_ERR_INVALID_ARG,
                            "callback drafter: proposed n = %d tokens, must be in [0, k = %d]",
                            p->n, k);
    if (p->evidence < 0 || p->evidence >= SD_DRAFT_EVIDENCE_CLASSES)
        return sd_set_error(SD_ERR_INVALID_ARG,
                            "callback drafter: evidence = %d, must be in [0, %d]", p->evidence,
                            SD_DRAFT_EVIDENCE_CLASSES - 1);
    for (int i = 0; i < p->n; i++)
        if (p->tokens[i] < 0 || p->tokens[i] >= g->n_vocab)
            return sd_set_error(SD_ERR_INVALID_ARG,
                                "callback drafter: proposed token %d (at %d) outside the "
                                "vocabulary [0, %d)", p->tokens[i], i, g->n_vocab);
    return SD_OK;
}

static sd_status_t cb_propose(sd_drafter_t *d, const sd_draft_request_t *req, sd_draft_out_t *out)
{
    cb_drafter_t *g = (cb_drafter_t *)d;
    out->n = 0;
    out->has_q = 0;
    g->prop_n = 0;
    if (req->pos0 < 0 || (size_t)req->pos0 != g->len)
        return sd_set_error(SD_ERR_INVALID_ARG,
                            "callback drafter: proposal position %lld differs from the context "
                            "length %zu", (long long)req->pos0, g->len);
    if (req->k > g->prop_cap) {
        int32_t *prop = realloc(g->prop, (size_t)req->k * sizeof *prop);
        SD_ALLOC_CHECK(prop, (size_t)req->k * sizeof *prop, "callback drafter proposal");
        g->prop = prop;
        g->prop_cap = req->k;
    }
    sd_draft_query_t q = {g->ctx, g->len, req->k, req->params ? req->params->temperature : 0.0f,
                          req->seed};
    sd_draft_proposal_t p = {.tokens = g->prop, .capacity = req->k};
    sd_status_t st = g->cb.propose(g->state, &q, &p);
    if (st != SD_OK) return failed("propose", st);
    SD_CHECK(check_proposal(g, &p, req->k));
    if (p.n > 0) memcpy(out->tokens, g->prop, (size_t)p.n * sizeof *g->prop);
    g->prop_n = p.n;
    out->n = p.n;
    out->evidence = p.evidence;
    return SD_OK;
}

static sd_status_t cb_accept(sd_drafter_t *d, int n_accepted, int32_t next_token)
{
    cb_drafter_t *g = (cb_drafter_t *)d;
    if (n_accepted < 0 || n_accepted > g->prop_n)
        return sd_set_error(SD_ERR_INVALID_ARG,
                            "callback drafter: %d tokens accepted of a proposal of %d",
                            n_accepted, g->prop_n);
    SD_CHECK(check_token(g, next_token, "next"));
    SD_CHECK(reserve(g, g->len + (size_t)n_accepted + 1));
    if (n_accepted > 0) memcpy(g->ctx + g->len, g->prop, (size_t)n_accepted * sizeof *g->prop);
    g->len += (size_t)n_accepted;
    g->ctx[g->len++] = next_token;
    g->prop_n = 0;
    sd_draft_outcome_t o = {n_accepted, next_token, g->ctx + g->len - 1 - n_accepted, 0};
    sd_status_t st = g->cb.accept ? g->cb.accept(g->state, &o) : SD_OK;
    return st == SD_OK ? SD_OK : failed("accept", st);
}

/* A tree request: up to the shape's nodes (at most SD_SPEC_TREE_MAX_NODES), depth <= its
 * levels (dynamic: max_depth); a chain answer becomes the tree of a chain. */
static sd_status_t cb_propose_tree(sd_drafter_t *d, const sd_draft_request_t *req,
                                   const sd_tree_shape_t *shape, sd_draft_tree_t *out)
{
    cb_drafter_t *g = (cb_drafter_t *)d;
    g->prop_n = 0;
    if (req->pos0 < 0 || (size_t)req->pos0 != g->len)
        return sd_set_error(SD_ERR_INVALID_ARG,
                            "callback drafter: proposal position %lld differs from the context "
                            "length %zu", (long long)req->pos0, g->len);
    int depth = shape->levels > 0 ? shape->levels : shape->max_depth, cap = 0;
    for (int l = 0, level = 1; l < shape->levels; l++) cap += level *= shape->width[l];
    cap = shape->levels > 0 ? cap : shape->budget;
    cap = cap < SD_SPEC_TREE_MAX_NODES ? cap : SD_SPEC_TREE_MAX_NODES;
    depth = depth < SD_SPEC_MAX_K ? depth : SD_SPEC_MAX_K;
    sd_draft_query_t q = {g->ctx, g->len, depth, req->params ? req->params->temperature : 0.0f,
                          req->seed};
    sd_draft_proposal_t p = {.tokens = g->tree_tokens, .capacity = cap, .parent = g->tree_parent};
    sd_status_t st = g->cb.propose(g->state, &q, &p);
    if (st != SD_OK) return failed("propose", st);
    if (!p.is_tree) {
        SD_CHECK(check_proposal(g, &p, depth));
        for (int i = 0; i < p.n; i++) g->tree_parent[i] = i - 1;
    } else if (p.n < 0 || p.n > cap) {
        return sd_set_error(SD_ERR_INVALID_ARG, "callback drafter: proposed a tree of n = %d "
                            "nodes, must be in [0, %d]", p.n, cap);
    }
    int32_t node_depth[SD_SPEC_TREE_MAX_NODES];
    sd_token_tree_t tree = {p.n, g->tree_tokens, g->tree_parent};
    if (sd_tree_check(&tree, g->n_vocab, node_depth) != SD_OK)
        return sd_set_error(SD_ERR_INVALID_ARG, "callback drafter: %s", sd_last_error());
    for (int i = 0; i < p.n; i++)
        if (node_depth[i] > depth)
            return sd_set_error(SD_ERR_INVALID_ARG, "callback drafter: tree node %d at depth %d, "
                                "deeper than k = %d", i, node_depth[i], depth);
    out->n = p.n;
    memcpy(out->tokens, g->tree_tokens, (size_t)p.n * sizeof *g->tree_tokens);
    memcpy(out->parent, g->tree_parent, (size_t)p.n * sizeof *g->tree_parent);
    return SD_OK;
}

static sd_status_t cb_accept_path(sd_drafter_t *d, const int32_t *tokens, int n, int32_t next)
{
    cb_drafter_t *g = (cb_drafter_t *)d;
    SD_CHECK(sd_drafter_check_tokens(d, tokens, n, g->n_vocab, "path"));
    SD_CHECK(check_token(g, next, "next"));
    SD_CHECK(reserve(g, g->len + (size_t)n + 1));
    if (n > 0) memcpy(g->ctx + g->len, tokens, (size_t)n * sizeof *tokens);
    g->len += (size_t)n;
    g->ctx[g->len++] = next;
    sd_draft_outcome_t o = {n, next, g->ctx + g->len - 1 - n, 1};
    sd_status_t st = g->cb.accept ? g->cb.accept(g->state, &o) : SD_OK;
    return st == SD_OK ? SD_OK : failed("accept", st);
}

static sd_status_t cb_rollback(sd_drafter_t *d, int n)
{
    cb_drafter_t *g = (cb_drafter_t *)d;
    if (n < 0 || (size_t)n > g->len)
        return sd_set_error(SD_ERR_INVALID_ARG,
                            "callback drafter: rollback to %d tokens, the context holds %zu", n,
                            g->len);
    g->len = (size_t)n;
    g->prop_n = 0;
    sd_status_t st = g->cb.rollback ? g->cb.rollback(g->state, g->len) : SD_OK;
    return st == SD_OK ? SD_OK : failed("rollback", st);
}

static void cb_reset(sd_drafter_t *d)
{
    cb_drafter_t *g = (cb_drafter_t *)d;
    g->len = 0;
    g->prop_n = 0;
}

static void cb_destroy(sd_drafter_t *d)
{
    cb_drafter_t *g = (cb_drafter_t *)d;
    if (g->cb.create != NULL && g->cb.destroy != NULL) g->cb.destroy(g->state);
    free(g->ctx);
    free(g->prop);
    free(g);
}

static const sd_drafter_ops_t callback_ops = {
    .name = "callback",
    .begin = cb_begin,
    .propose = cb_propose,
    .accept = cb_accept,
    .rollback = cb_rollback,
    .reset = cb_reset,
    .destroy = cb_destroy,
    .proposes_cheaply = 1,
    .propose_tree = cb_propose_tree,
    .accept_path = cb_accept_path,
};

sd_status_t sd_drafter_callback_new(const sd_callback_drafter_t *cb, int n_vocab,
                                    sd_drafter_t **out)
{
    if (cb == NULL || out == NULL || cb->propose == NULL || n_vocab < 1)
        return sd_set_error(SD_ERR_INVALID_ARG, "callback drafter: needs callbacks with propose "
                            "set and n_vocab >= 1 (n_vocab = %d)", n_vocab);
    cb_drafter_t *g = calloc(1, sizeof *g);
    SD_ALLOC_CHECK(g, sizeof *g, "callback drafter");
    g->base.ops = &callback_ops;
    g->cb = *cb;
    g->n_vocab = n_vocab;
    g->state = cb->user;
    sd_status_t st = cb->create ? cb->create(cb->user, &g->state) : SD_OK;
    if (st != SD_OK) {
        free(g);
        return failed("create", st);
    }
    *out = &g->base;
    return SD_OK;
}

/* ---- registry row -------------------------------------------------------------------- */

sd_status_t sd_drafter_callback_parse(const char *text, const char *arg, sd_spec_config_t *spec,
                                      const char **model_path)
{
    if (arg != NULL)
        return sd_set_error(SD_ERR_INVALID_ARG, "drafter '%s': callback takes no argument (its "
                            "callbacks are spec.callback, set through the C or Python API)", text);
    spec->drafter = SD_DRAFTER_CALLBACK;
    *model_path = NULL;
    return SD_OK;
}

sd_status_t sd_drafter_callback_check(const sd_spec_config_t *spec)
{
    if (spec->callback == NULL || spec->callback->propose == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG,
                            "spec drafter is callback but spec callback%s is NULL: a drafter of "
                            "the caller's own is given through the C or Python API "
                            "(sd_callback_drafter_t), not on the command line",
                            spec->callback == NULL ? "" : "->propose");
    return SD_OK;
}

sd_status_t sd_drafter_callback_make(sd_model_t *target, const sd_spec_config_t *spec,
                                     sd_drafter_t **out)
{
    sd_comm_t *world = target->comm;
    if (sd_comm_size(world) == 1)
        return sd_drafter_callback_new(spec->callback, target->hp.n_vocab, out);
    sd_drafter_t *inner = NULL;
    sd_status_t st = SD_OK;
    if (sd_comm_rank(world) == 0) /* the others take rank 0's proposals */
        st = sd_drafter_callback_new(spec->callback, target->hp.n_vocab, &inner);
    sd_status_t gs = sd_drafter_group_new(world, 1, st, inner, target->hp.n_vocab, out);
    if (gs != SD_OK) sd_drafter_free(inner);
    return gs;
}

int sd_drafter_callback_hash_words(const sd_spec_config_t *spec,
                                   int32_t words[SD_DRAFTER_HASH_WORDS])
{
    return 0; /* the callbacks' addresses may differ between ranks */
}

sd_status_t sd_drafter_callback_text(const sd_spec_config_t *spec, const sd_model_t *target,
                                     char *buf, size_t cap)
{
    snprintf(buf, cap, "callback");
    return SD_OK;
}
