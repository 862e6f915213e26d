/* The autoregressive drafter over an sd_seq_t (seq_drafter.h; the bookkeeping:
 * docs/design-notes.md, "Drafters").
 *
 * Layer-skip: the sequence runs over a shallow copy of the target's sd_model_t whose
 * hp.n_layer is L. Every pointer in it (weights, layers, backend, tokenizer) is the
 * target's, so no weight is copied, and sd_seq_init then sizes the KV cache for the L
 * layers the drafter runs instead of all n_layer. The copy is never passed to
 * sd_model_free.
 *
 * Shared KV (sd_seq_drafter_share_kv): the drafter's cache descriptor then points at the
 * target sequence's K/V buffers, whose layers 0..L-1 at committed positions hold exactly
 * what the drafter would compute (same weights, batch-invariant kernels). The target's
 * committed prefix counts as fed: before feeding, kv.len = min(target kv.len, len - 1).
 * The drafter writes only positions at or past that point, which the target's next
 * forward overwrites (or which lie past its committed prefix). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "draft/drafter_impl.h"
#include "draft/seq_drafter.h"
#include "verify/philox.h"


typedef struct sd_seq_drafter {
    sd_drafter_t base;
    sd_model_t view;     /* layer-skip: the target with hp.n_layer = L (see above) */
    const sd_model_t *src; /* the model given: the draft model, or the target */
    const sd_model_t *m; /* the model the sequence runs: src, or &view */
    int n_layers_used;   /* passed to sd_forward: 0 = all of m's layers */
    int n_vocab;
    sd_seq_t seq;
    const sd_seq_t *shared; /* the target sequence whose K/V seq.kv points into, or NULL */
    int pooled;          /* seq's blocks come from a prefix-cache pool (use_pool) */
    const float *last;   /* [n_vocab] logits after the last token fed (in seq.logits) */
    int32_t *ctx;        /* [cap] committed context, then the last proposal */
    int len, cap;        /* committed tokens; capacity of ctx */
    int prop_n;          /* tokens of the last proposal, in ctx[len .. len + prop_n) */
    sd_sampler_scratch_t scratch;
    uint64_t forwards;
    /* a proposal in rounds (propose_begin / propose_resume) */
    sd_draft_request_t req;
    sd_draft_out_t *out;
    float *q;            /* out->q when sampling, else NULL */
    int k, i;            /* drafts allowed; the next draft index */
    int feeding;         /* 1 while the pending context is being fed */
} sd_seq_drafter_t;

static const sd_drafter_ops_t model_ops, layerskip_ops;

static sd_seq_drafter_t *as_seq(const sd_drafter_t *d)
{
    if (d == NULL || (d->ops != &model_ops && d->ops != &layerskip_ops))
        return NULL;
    return (sd_seq_drafter_t *)d;
}

/* ---- context and cache --------------------------------------------------------------- */

static int n_ctx_of(const sd_seq_drafter_t *g) { return g->seq.kv.n_ctx; }

/* ctx capacity for `need` tokens; grows geometrically, so steady decoding never allocates. */
static sd_status_t reserve_ctx(sd_seq_drafter_t *g, int64_t need)
{
    if (need <= g->cap)
        return SD_OK;
    if (need > INT32_MAX)
        return sd_set_error(SD_ERR_CONTEXT_FULL, "%s drafter: context of %lld tokens",
                            g->base.ops->name, (long long)need);
    int64_t cap = g->cap ? g->cap : 256;
    while (cap < need)
        cap *= 2;
    if (cap > INT32_MAX)
        cap = INT32_MAX;
    int32_t *ctx = realloc(g->ctx, (size_t)cap * sizeof *ctx);
    SD_ALLOC_CHECK(ctx, (size_t)cap * sizeof *ctx, "drafter context");
    g->ctx = ctx;
    g->cap = (int)cap;
    return SD_OK;
}

static sd_status_t check_token(const sd_seq_drafter_t *g, int32_t token, const char *what)
{
    return sd_drafter_check_token(&g->base, token, g->n_vocab, what);
}

/* Keep the cache invariant between calls: at least the last committed token unfed. */
static void drop_unfed_tail(sd_seq_drafter_t *g)
{
    int keep = g->len > 0 ? g->len - 1 : 0;
    if (g->seq.kv.len > keep)
        g->seq.kv.len = keep;
}

static sd_status_t forward(sd_seq_drafter_t *g, const int32_t *tokens, int n)
{
    g->forwards++;
    SD_CHECK(sd_forward(&g->seq, tokens, n, g->n_layers_used));
    g->last = g->seq.logits + (size_t)(n - 1) * g->n_vocab;
    return SD_OK;
}

/* SD_ERR_CONTEXT_FULL when a context of len tokens does not fit the drafter's cache. */
static sd_status_t check_fits(const sd_seq_drafter_t *g, int len)
{
    if (len > n_ctx_of(g))
        return sd_set_error(SD_ERR_CONTEXT_FULL,
                            "%s drafter: context of %d tokens exceeds the draft n_ctx = %d",
                            g->base.ops->name, len, n_ctx_of(g));
    return SD_OK;
}

/* Tokens of the next chunk fed towards ctx[.. end): from kv.len, at most max_tokens. */
static int next_chunk(const sd_seq_drafter_t *g, int end)
{
    int n = end - g->seq.kv.len;
    return n < g->seq.max_tokens ? n : g->seq.max_tokens;
}

/* Feed ctx[kv.len .. end) (end within the cache: check_fits) in chunks. */
static sd_status_t feed(sd_seq_drafter_t *g, int end)
{
    while (g->seq.kv.len < end)
        SD_CHECK(forward(g, g->ctx + g->seq.kv.len, next_chunk(g, end)));
    return SD_OK;
}

/* ---- proposing ----------------------------------------------------------------------- */

/* max softmax(logits) = 1 / sum_j exp(l_j - max l). */
static float top_softmax(const float *logits, int n_vocab)
{
    float mx = logits[0];
    for (int j = 1; j < n_vocab; j++)
        mx = logits[j] > mx ? logits[j] : mx;
    double sum = 0.0;
    for (int j = 0; j < n_vocab; j++)
        sum += exp((double)(logits[j] - mx));
    return (float)(1.0 / sum);
}

static float max_of(const float *p, int n)
{
    float mx = p[0];
    for (int j = 1; j < n; j++)
        mx = p[j] > mx ? p[j] : mx;
    return mx;
}

/* Token at position pos (and q row when sampling) from logits[n_vocab]; *top = the
 * drafter's top probability there. */
static int32_t draft_one(sd_seq_drafter_t *g, const sd_draft_request_t *req, const float *logits,
                         float *q, int64_t pos, float *top)
{
    const sd_sampler_params_t *p = req->params;
    if (q == NULL) {
        *top = req->min_confidence > 0.0f ? top_softmax(logits, g->n_vocab) : 1.0f;
        return sd_sample_greedy(logits, g->n_vocab);
    }
    sd_sampler_probs(p, logits, g->n_vocab, &g->scratch, q);
    *top = max_of(q, g->n_vocab);
    return sd_sample_from_probs(q, g->n_vocab, sd_rng_uniform(req->seed, (uint64_t)pos, SD_RNG_DRAFT));
}

static sd_status_t check_request(const sd_seq_drafter_t *g, const sd_draft_request_t *req,
                                 const sd_draft_out_t *out, int sampling)
{
    const char *name = g->base.ops->name;
    if (req->params == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG, "%s drafter: request without sampler params", name);
    SD_CHECK(sd_sampler_params_check(req->params));
    if (req->pos0 != g->len)
        return sd_set_error(SD_ERR_INVALID_ARG,
                            "%s drafter: proposal position %lld differs from the context length %d",
                            name, (long long)req->pos0, g->len);
    if (sampling && (out->q == NULL || out->n_vocab != g->n_vocab))
        return sd_set_error(SD_ERR_INVALID_ARG,
                            "%s drafter: sampling needs q rows of n_vocab = %d (q %s, n_vocab %d)",
                            name, g->n_vocab, out->q ? "set" : "NULL", out->n_vocab);
    return SD_OK;
}

/* The forward of the next chunk of pending context, ctx[kv.len .. len) (at most max_tokens). */
static void next_feed(sd_seq_drafter_t *g, sd_draft_forward_t *fwd)
{
    *fwd = (sd_draft_forward_t){&g->seq, g->ctx + g->seq.kv.len, next_chunk(g, g->len),
                                g->n_layers_used};
}

/* The proposal is complete with g->i drafts. */
static void finish_proposal(sd_seq_drafter_t *g, sd_draft_forward_t *fwd)
{
    memcpy(g->out->tokens, g->ctx + g->len, (size_t)g->i * sizeof *g->out->tokens);
    g->out->n = g->i;
    g->out->has_q = g->q != NULL;
    g->prop_n = g->i;
    fwd->n = 0;
}

/* Draft from g->last: d[i], then either the forward of d[i] (for d[i + 1]'s logits) or the
 * end of the proposal (k drafts, or the drafter's confidence fell below min_confidence;
 * the first token is always proposed). Each token but the last is fed, so at most
 * n_ctx - len + 1 tokens are drafted (all fed ones fit the cache). */
static void draft_next(sd_seq_drafter_t *g, sd_draft_forward_t *fwd)
{
    int32_t *d = g->ctx + g->len; /* [k] */
    float *qi = g->q ? g->q + (size_t)g->i * g->n_vocab : NULL;
    float top;
    int32_t t = draft_one(g, &g->req, g->last, qi, g->req.pos0 + g->i, &top);
    if (g->i > 0 && g->req.min_confidence > 0.0f && top < g->req.min_confidence)
        return finish_proposal(g, fwd);
    d[g->i++] = t;
    if (g->i == g->k)
        return finish_proposal(g, fwd);
    *fwd = (sd_draft_forward_t){&g->seq, &d[g->i - 1], 1, g->n_layers_used};
}

/* The context is fed: draft up to k tokens into ctx[len ..). */
static sd_status_t start_drafting(sd_seq_drafter_t *g, sd_draft_forward_t *fwd)
{
    g->feeding = 0;
    g->k = g->req.k < n_ctx_of(g) - g->len + 1 ? g->req.k : n_ctx_of(g) - g->len + 1;
    g->i = 0;
    SD_CHECK(reserve_ctx(g, (int64_t)g->len + g->k));
    draft_next(g, fwd);
    return SD_OK;
}

static sd_status_t seq_propose_begin(sd_drafter_t *dr, const sd_draft_request_t *req,
                                     sd_draft_out_t *out, sd_draft_forward_t *fwd)
{
    sd_seq_drafter_t *g = (sd_seq_drafter_t *)dr;
    int sampling = req->params != NULL && req->params->temperature > 0.0f;
    g->prop_n = 0;
    fwd->n = 0;
    drop_unfed_tail(g);
    SD_CHECK(check_request(g, req, out, sampling));
    out->n = 0;
    out->has_q = 0;
    if (g->len == 0)
        return SD_OK; /* nothing to continue */
    if (g->shared != NULL) /* the target's committed prefix is already there */
        g->seq.kv.len = g->shared->kv.len < g->len - 1 ? g->shared->kv.len : g->len - 1;
    SD_CHECK(check_fits(g, g->len));
    g->req = *req;
    g->out = out;
    g->q = sampling ? out->q : NULL;
    g->feeding = 1;
    next_feed(g, fwd); /* at least the last committed token is pending */
    return SD_OK;
}

static sd_status_t seq_propose_resume(sd_drafter_t *dr, sd_draft_forward_t *fwd)
{
    sd_seq_drafter_t *g = (sd_seq_drafter_t *)dr;
    g->forwards++;
    g->last = g->seq.logits + (size_t)(fwd->n - 1) * g->n_vocab; /* the last row's */
    if (g->feeding && g->seq.kv.len < g->len) {
        next_feed(g, fwd);
        return SD_OK;
    }
    sd_status_t st = SD_OK;
    if (g->feeding) st = start_drafting(g, fwd);
    else draft_next(g, fwd);
    if (st != SD_OK) drop_unfed_tail(g);
    return st;
}

/* propose: the rounds, each forward run here. */
static sd_status_t seq_propose(sd_drafter_t *dr, const sd_draft_request_t *req, sd_draft_out_t *out)
{
    sd_seq_drafter_t *g = (sd_seq_drafter_t *)dr;
    sd_draft_forward_t fwd;
    sd_status_t st = seq_propose_begin(dr, req, out, &fwd);
    while (st == SD_OK && fwd.n > 0) {
        st = sd_forward(fwd.seq, fwd.tokens, fwd.n, fwd.n_layers);
        if (st == SD_OK) st = seq_propose_resume(dr, &fwd);
    }
    if (st != SD_OK) {
        g->prop_n = 0;
        drop_unfed_tail(g);
    }
    return st;
}

/* ---- trees ------------------------------------------------------------------------------ */
/* Static: every node of depth d < levels gets the drafter's top width[d] tokens as children,
 * or, sampled (shape->sample_q while sampling), width[d] independent draws from its q row.
 * Dynamic (EAGLE-2 style): every level keeps the TREE_BEAM best of its nodes' top
 * TREE_CHILDREN children by cumulative log-probability, down to max_depth; the proposal is
 * then the budget best nodes of all (a child never scores above its parent, so the set is a
 * tree). Nodes are forwarded level by level with sd_forward_tree into scratch slots past the
 * context, dropped again afterwards. */

#define TREE_BEAM 8
#define TREE_CHILDREN 4
#define TREE_CAP (TREE_BEAM * SD_SPEC_MAX_K + SD_SPEC_TREE_MAX_NODES)

typedef struct tree_build {
    int n;                       /* nodes */
    int32_t tok[TREE_CAP], par[TREE_CAP];
    double score[TREE_CAP];      /* cumulative log-probability */
} tree_build_t;

/* The w best tokens of logits (ties: the lower id; the argmax first) and their
 * log-probabilities: one pass keeping a sorted list of w. */
static int top_tokens(const float *logits, int n_vocab, int w, int32_t *tok, double *logp)
{
    w = w < n_vocab ? w : n_vocab;
    int have = 0;
    for (int j = 0; j < n_vocab; j++) {
        if (have == w && !(logits[j] > logits[tok[w - 1]])) continue;
        int at = have < w ? have++ : w - 1;
        while (at > 0 && logits[j] > logits[tok[at - 1]]) {
            tok[at] = tok[at - 1];
            at--;
        }
        tok[at] = j;
    }
    float mx = logits[tok[0]];
    double sum = 0.0;
    for (int j = 0; j < n_vocab; j++) sum += exp((double)logits[j] - mx);
    double lse = mx + log(sum);
    for (int c = 0; c < w; c++) logp[c] = (double)logits[tok[c]] - lse;
    return w;
}

/* Forward nodes [a, b) (all nodes < a are in the cache at slots len + index) in chunks;
 * after each chunk, grow(node, logits row) for its nodes. */
static sd_status_t tree_forward(sd_seq_drafter_t *g, tree_build_t *t, int a, int b,
                                void (*grow)(sd_seq_drafter_t *, tree_build_t *, int, const float *, void *),
                                void *arg)
{
    for (int i = a; i < b;) {
        int n = b - i < g->seq.max_tokens ? b - i : g->seq.max_tokens;
        g->forwards++;
        SD_CHECK(sd_forward_tree(&g->seq, t->tok + i, n, g->len, t->par, g->n_layers_used));
        for (int r = 0; r < n; r++) grow(g, t, i + r, g->seq.logits + (size_t)r * g->n_vocab, arg);
        i += n;
    }
    return SD_OK;
}

static void add_children(tree_build_t *t, int p, const int32_t *tok, const double *logp, int w)
{
    for (int c = 0; c < w && t->n < TREE_CAP; c++) {
        t->tok[t->n] = tok[c];
        t->par[t->n] = p;
        t->score[t->n++] = (p >= 0 ? t->score[p] : 0.0) + logp[c];
    }
}

/* Static growth: node p's top width children (arg: the width). */
static void grow_static(sd_seq_drafter_t *g, tree_build_t *t, int p, const float *logits, void *arg)
{
    int w = *(const int *)arg;
    int32_t tok[SD_SPEC_TREE_MAX_NODES];
    double logp[SD_SPEC_TREE_MAX_NODES];
    add_children(t, p, tok, logp, top_tokens(logits, g->n_vocab, w, tok, logp));
}

/* Dynamic growth: node p's top TREE_CHILDREN children as candidates (pruned per level). */
static void grow_dynamic(sd_seq_drafter_t *g, tree_build_t *t, int p, const float *logits, void *arg)
{
    (void)arg;
    int32_t tok[TREE_CHILDREN];
    double logp[TREE_CHILDREN];
    add_children(t, p, tok, logp, top_tokens(logits, g->n_vocab, TREE_CHILDREN, tok, logp));
}

/* Order of nodes [a, b) by score, best first (ties: the lower index). */
static void rank_nodes(const tree_build_t *t, int a, int b, int *order)
{
    for (int i = a; i < b; i++) {
        int j = i - a;
        while (j > 0 && t->score[order[j - 1]] < t->score[i]) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = i;
    }
}

/* Keep the TREE_BEAM best of the candidates [a, t->n) (their order kept). */
static void prune_level(tree_build_t *t, int a)
{
    int order[TREE_CAP], keep[TREE_CAP] = {0}, n = a;
    rank_nodes(t, a, t->n, order);
    for (int r = 0; r < t->n - a && r < TREE_BEAM; r++) keep[order[r] - a] = 1;
    for (int i = a; i < t->n; i++)
        if (keep[i - a]) {
            t->tok[n] = t->tok[i];
            t->par[n] = t->par[i];
            t->score[n++] = t->score[i];
        }
    t->n = n;
}

/* The tree's nodes into out: all of them (static), or the budget best (dynamic), re-indexed
 * in node order. */
static void tree_emit(const tree_build_t *t, int budget, sd_draft_tree_t *out)
{
    int order[TREE_CAP], keep[TREE_CAP] = {0}, index[TREE_CAP];
    rank_nodes(t, 0, t->n, order);
    for (int r = 0; r < t->n && r < budget; r++) keep[order[r]] = 1;
    out->n = 0;
    for (int i = 0; i < t->n && out->n < SD_SPEC_TREE_MAX_NODES; i++) {
        if (!keep[i] || (t->par[i] >= 0 && index[t->par[i]] < 0)) {
            index[i] = -1;
            continue;
        }
        index[i] = out->n;
        out->tokens[out->n] = t->tok[i];
        out->parent[out->n++] = t->par[i] >= 0 ? index[t->par[i]] : -1;
    }
}

/* A sampled static tree's growth: the draws of the level's parents (docs/design-notes.md,
 * "Token trees"). */
typedef struct grow_q {
    const sd_draft_request_t *req;
    float *q;    /* [SD_SPEC_TREE_MAX_NODES + 1, n_vocab] the tree's q rows, 1 + node */
    int w, a;    /* children per parent; the parents' level starts at node a (root: -1) */
    int64_t pos; /* the children's position */
} grow_q_t;

/* 1 when node p repeats the token of an earlier sibling. */
static int repeats_sibling(const tree_build_t *t, int p)
{
    for (int c = 0; c < p; c++)
        if (t->par[c] == t->par[p] && t->tok[c] == t->tok[p]) return 1;
    return 0;
}

/* Node p's (-1: the root) q row from its logits, then its w children drawn from it
 * independently: draw j of the level's parent number o uses key o * 64 + j (key 0:
 * SD_RNG_DRAFT, so a width-1 tree is the chain's draws). A repeated sibling gets no
 * children: once its twin is rejected the token has no residual mass, it is never kept. */
static void grow_sampled(sd_seq_drafter_t *g, tree_build_t *t, int p, const float *logits, void *arg)
{
    const grow_q_t *s = arg;
    if (p >= 0 && repeats_sibling(t, p)) return;
    float *q = s->q + (size_t)(p + 1) * g->n_vocab;
    sd_sampler_probs(s->req->params, logits, g->n_vocab, &g->scratch, q);
    int o = p - s->a;
    for (int j = 0; j < s->w && t->n < TREE_CAP; j++) {
        int key = o * SD_SPEC_TREE_MAX_NODES + j;
        float u = sd_rng_uniform(s->req->seed, (uint64_t)s->pos,
                                 key == 0 ? SD_RNG_DRAFT : (sd_rng_purpose_t)(SD_RNG_DRAFT_TREE + key - 1));
        t->tok[t->n] = sd_sample_from_probs(q, g->n_vocab, u);
        t->par[t->n] = p;
        t->score[t->n++] = 0.0;
    }
}

/* Grow the tree level by level; sq: sampled (static shapes only), NULL: top guesses. */
static sd_status_t tree_grow(sd_seq_drafter_t *g, const sd_tree_shape_t *shape, grow_q_t *sq,
                             tree_build_t *t)
{
    int dynamic = shape->levels <= 0;
    int depth = dynamic ? shape->max_depth : shape->levels, room = n_ctx_of(g) - g->len;
    depth = depth < SD_SPEC_MAX_K ? depth : SD_SPEC_MAX_K;
    int w0 = dynamic ? TREE_CHILDREN : shape->width[0];
    int32_t tok[SD_SPEC_TREE_MAX_NODES];
    double logp[SD_SPEC_TREE_MAX_NODES];
    if (sq != NULL) {
        sq->w = w0, sq->a = -1, sq->pos = sq->req->pos0;
        grow_sampled(g, t, -1, g->last, sq);
    } else {
        add_children(t, -1, tok, logp, top_tokens(g->last, g->n_vocab, w0, tok, logp));
    }
    if (dynamic) prune_level(t, 0);
    for (int d = 1, a = 0; d < depth; d++) {
        int b = t->n; /* level d's nodes are [a, b) */
        if (b > room) break; /* their rows would not fit the cache */
        int w = dynamic ? TREE_CHILDREN : shape->width[d];
        if (sq != NULL) {
            sq->w = w, sq->a = a, sq->pos = sq->req->pos0 + d;
            SD_CHECK(tree_forward(g, t, a, b, grow_sampled, sq));
        } else {
            SD_CHECK(tree_forward(g, t, a, b, dynamic ? grow_dynamic : grow_static, &w));
        }
        if (dynamic) prune_level(t, b);
        a = b;
    }
    return SD_OK;
}

static sd_status_t seq_propose_tree(sd_drafter_t *dr, const sd_draft_request_t *req,
                                    const sd_tree_shape_t *shape, sd_draft_tree_t *out)
{
    sd_seq_drafter_t *g = (sd_seq_drafter_t *)dr;
    int sampled = shape->sample_q && shape->levels > 0 && out->q != NULL && req->params != NULL &&
                  req->params->temperature > 0.0f;
    sd_draft_out_t qs = {.q = out->q, .n_vocab = out->n_vocab};
    g->prop_n = 0;
    drop_unfed_tail(g);
    SD_CHECK(check_request(g, req, &qs, sampled));
    if (g->len == 0) return SD_OK;
    if (g->shared != NULL)
        g->seq.kv.len = g->shared->kv.len < g->len - 1 ? g->shared->kv.len : g->len - 1;
    SD_CHECK(check_fits(g, g->len));
    SD_CHECK(feed(g, g->len));
    tree_build_t *t = malloc(sizeof *t);
    SD_ALLOC_CHECK(t, sizeof *t, "a draft tree");
    t->n = 0;
    grow_q_t sq = {.req = req, .q = out->q};
    sd_status_t st = tree_grow(g, shape, sampled ? &sq : NULL, t);
    if (st == SD_OK) { /* a static tree keeps its node order, so its q rows stay put */
        int budget = shape->levels > 0 ? SD_SPEC_TREE_MAX_NODES : shape->budget;
        tree_emit(t, budget < SD_SPEC_TREE_MAX_NODES ? budget : SD_SPEC_TREE_MAX_NODES, out);
        out->has_q = sampled;
    }
    free(t);
    if (g->seq.kv.len > g->len) /* the tree's rows (a pool's blocks of them) go; the context stays fed */
        (void)sd_kv_cache_truncate(&g->seq.kv, g->len);
    if (st != SD_OK) drop_unfed_tail(g);
    return st;
}

/* The cache keeps the fed context; the path is fed at the next proposal. */
static sd_status_t seq_accept_path(sd_drafter_t *dr, const int32_t *tokens, int n, int32_t next)
{
    sd_seq_drafter_t *g = (sd_seq_drafter_t *)dr;
    SD_CHECK(sd_drafter_check_tokens(dr, tokens, n, g->n_vocab, "path"));
    SD_CHECK(check_token(g, next, "next"));
    SD_CHECK(reserve_ctx(g, (int64_t)g->len + n + 1));
    memcpy(g->ctx + g->len, tokens, (size_t)n * sizeof *tokens);
    g->len += n;
    g->ctx[g->len++] = next;
    g->prop_n = 0;
    drop_unfed_tail(g);
    return SD_OK;
}

/* ---- committing ---------------------------------------------------------------------- */

static void seq_reset(sd_drafter_t *dr)
{
    sd_seq_drafter_t *g = (sd_seq_drafter_t *)dr;
    g->len = 0;
    g->prop_n = 0;
    g->seq.kv.len = 0;
}

/* The context becomes tokens[n]; all but the last are prefilled. */
static sd_status_t seq_begin(sd_drafter_t *dr, const int32_t *tokens, int n)
{
    sd_seq_drafter_t *g = (sd_seq_drafter_t *)dr;
    SD_CHECK(sd_drafter_check_tokens(dr, tokens, n, g->n_vocab, "context"));
    SD_CHECK(check_fits(g, n));
    seq_reset(dr);
    SD_CHECK(reserve_ctx(g, n));
    if (n > 0)
        memcpy(g->ctx, tokens, (size_t)n * sizeof *tokens);
    g->len = n;
    if (g->shared != NULL)
        return SD_OK; /* fed at propose, from what the target has by then */
    if (g->pooled) {
        sd_kv_cache_reset(&g->seq.kv);
        sd_kv_cache_attach_prefix(&g->seq.kv, tokens, n > 0 ? n - 1 : 0);
    }
    sd_status_t st = feed(g, n > 0 ? n - 1 : 0);
    if (st != SD_OK)
        seq_reset(dr);
    else if (g->pooled)
        sd_kv_cache_commit(&g->seq.kv, tokens, n > 0 ? n - 1 : 0);
    return st;
}

/* The cache holds ctx[0 .. len + prop_n - 1); of the proposal it keeps the accepted part. */
static sd_status_t seq_accept(sd_drafter_t *dr, int n_accepted, int32_t next_token)
{
    sd_seq_drafter_t *g = (sd_seq_drafter_t *)dr;
    if (n_accepted < 0 || n_accepted > g->prop_n)
        return sd_set_error(SD_ERR_INVALID_ARG, "%s drafter: %d tokens accepted of a proposal of %d",
                            dr->ops->name, n_accepted, g->prop_n);
    SD_CHECK(check_token(g, next_token, "next"));
    SD_CHECK(reserve_ctx(g, (int64_t)g->len + n_accepted + 1));
    g->len += n_accepted;
    g->ctx[g->len++] = next_token;
    g->prop_n = 0;
    drop_unfed_tail(g); /* a rejected fed proposal, and keeps next_token unfed */
    return SD_OK;
}

static sd_status_t seq_rollback(sd_drafter_t *dr, int n)
{
    sd_seq_drafter_t *g = (sd_seq_drafter_t *)dr;
    if (n < 0 || n > g->len)
        return sd_set_error(SD_ERR_INVALID_ARG, "%s drafter: rollback to %d tokens, the context holds %d",
                            dr->ops->name, n, g->len);
    g->len = n;
    g->prop_n = 0;
    drop_unfed_tail(g);
    return SD_OK;
}

static void seq_destroy(sd_drafter_t *dr)
{
    sd_seq_drafter_t *g = (sd_seq_drafter_t *)dr;
    if (g->pooled) /* the cache holds ctx[0 .. kv.len) */
        sd_kv_cache_commit(&g->seq.kv, g->ctx, g->seq.kv.len < g->len ? g->seq.kv.len : g->len);
    sd_seq_free(&g->seq);
    sd_sampler_scratch_free(&g->scratch);
    free(g->ctx);
    free(g);
}

static const sd_drafter_ops_t model_ops = {
    .name = "model",
    .begin = seq_begin,
    .propose = seq_propose,
    .accept = seq_accept,
    .rollback = seq_rollback,
    .reset = seq_reset,
    .destroy = seq_destroy,
    .proposes_cheaply = 0,
    .propose_begin = seq_propose_begin,
    .propose_resume = seq_propose_resume,
    .forwards = sd_seq_drafter_forwards,
    .propose_tree = seq_propose_tree,
    .accept_path = seq_accept_path,
};

static const sd_drafter_ops_t layerskip_ops = {
    .name = "layerskip",
    .begin = seq_begin,
    .propose = seq_propose,
    .accept = seq_accept,
    .rollback = seq_rollback,
    .reset = seq_reset,
    .destroy = seq_destroy,
    .proposes_cheaply = 0,
    .propose_begin = seq_propose_begin,
    .propose_resume = seq_propose_resume,
    .forwards = sd_seq_drafter_forwards,
    .propose_tree = seq_propose_tree,
    .accept_path = seq_accept_path,
};

/* ---- construction -------------------------------------------------------------------- */

sd_status_t sd_seq_drafter_new(sd_seq_drafter_kind_t kind, const sd_model_t *m,
                               int n_layers_used, sd_drafter_t **out)
{
    if (m == NULL || out == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG, "drafter: model and out must be non-NULL");
    if (n_layers_used < 0 || n_layers_used > m->hp.n_layer)
        return sd_set_error(SD_ERR_INVALID_ARG, "drafter: n_layers_used = %d outside [0, %d]",
                            n_layers_used, m->hp.n_layer);
    sd_seq_drafter_t *g = calloc(1, sizeof *g);
    SD_ALLOC_CHECK(g, sizeof *g, "drafter");
    g->base.ops = kind == SD_SEQ_DRAFTER_LAYERSKIP ? &layerskip_ops : &model_ops;
    g->src = g->m = m;
    if (n_layers_used > 0 && n_layers_used < m->hp.n_layer) {
        g->view = *m;
        g->view.hp.n_layer = n_layers_used; /* the cache gets n_layers_used layers */
        g->m = &g->view;
    }
    g->n_layers_used = n_layers_used;
    g->n_vocab = m->hp.n_vocab;
    int chunk = m->n_ctx < SD_PREFILL_CHUNK ? m->n_ctx : SD_PREFILL_CHUNK;
    sd_status_t st = sd_seq_init(&g->seq, g->m, m->n_ctx, chunk > 0 ? chunk : 1);
    if (st == SD_OK)
        st = sd_sampler_scratch_init(&g->scratch, g->n_vocab);
    if (st != SD_OK) {
        seq_destroy(&g->base);
        return st;
    }
    *out = &g->base;
    return SD_OK;
}

sd_status_t sd_seq_drafter_share_kv(sd_drafter_t *d, sd_seq_t *target_seq)
{
    sd_seq_drafter_t *g = as_seq(d);
    if (g == NULL || target_seq == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG, "share KV: needs a model-backed drafter and a sequence");
    if (target_seq->model != g->src || target_seq->kv.k == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG,
                            "share KV: the sequence is not an initialised one over the %s "
                            "drafter's model", d->ops->name);
    if (g->shared == NULL)
        sd_kv_cache_free(&g->seq.kv, g->m);
    sd_kv_cache_view(&g->seq.kv, &target_seq->kv, g->m->hp.n_layer);
    g->shared = target_seq;
    seq_reset(d);
    return SD_OK;
}

sd_status_t sd_seq_drafter_use_pool(sd_drafter_t *d, sd_kv_pool_t *pool)
{
    sd_seq_drafter_t *g = as_seq(d);
    if (g == NULL || pool == NULL || g->shared != NULL || pool->model != g->m)
        return sd_set_error(SD_ERR_INVALID_ARG, "drafter KV pool: needs a model-backed drafter "
                            "with its own cache and a pool of its model");
    int max_tokens = g->seq.max_tokens;
    sd_seq_free(&g->seq);
    sd_status_t st = sd_seq_init_pooled(&g->seq, g->m, pool, g->src->n_ctx, max_tokens);
    if (st != SD_OK) { /* the drafter keeps a private cache (if that fails, forwards refuse) */
        sd_status_t again = sd_seq_init(&g->seq, g->m, g->src->n_ctx, max_tokens);
        (void)again;
        return st;
    }
    g->pooled = 1;
    seq_reset(d);
    return SD_OK;
}

int sd_seq_drafter_is(const sd_drafter_t *d, sd_seq_drafter_kind_t kind)
{
    const sd_drafter_ops_t *want = kind == SD_SEQ_DRAFTER_LAYERSKIP ? &layerskip_ops : &model_ops;
    return d != NULL && d->ops == want;
}

uint64_t sd_seq_drafter_forwards(const sd_drafter_t *d)
{
    const sd_seq_drafter_t *g = as_seq(d);
    return g ? g->forwards : 0;
}

const sd_seq_t *sd_seq_drafter_seq(const sd_drafter_t *d)
{
    const sd_seq_drafter_t *g = as_seq(d);
    return g ? &g->seq : NULL;
}
