/* The generation loop (engine/gen.h): target-only and speculative decoding are one loop of
 * "draft up to k tokens, verify them with one target forward, emit, roll back"; without a
 * drafter a step drafts nothing. Stops, streaming, seeds and statistics: docs/design-notes.md,
 * "Generation". */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm/comm.h"
#include "core/check.h"
#include "core/clock.h"
#include "core/hash.h"
#include "core/log.h"
#include "draft/model_drafter.h"
#include "engine/gen.h"
#include "engine/gen_output.h"
#include "engine/speculative.h"
#include "engine/verifier.h"
#include "model/forward.h"
#include "model/model.h"
#include "verify/logprobs.h"
#include "verify/sampler.h"
#include "verify/speculative.h"
#include "verify/tree.h"
#include "model/kv_rows.h"

void sd_gen_config_default(sd_gen_config_t *config)
{
    if (config == NULL)
        return;
    memset(config, 0, sizeof *config);
    config->max_tokens = 128;
    config->temperature = 0.8f;
    config->top_k = 40;
    config->top_p = 0.95f;
    config->min_p = 0.05f;
}

void sd_gen_result_free(sd_gen_result_t *result)
{
    if (result == NULL)
        return;
    free(result->tokens);
    free(result->text);
    free(result->logprobs);
    free(result->top_tokens);
    free(result->top_logprobs);
    memset(result, 0, sizeof *result);
}

/* The draft side of a generation. */
typedef struct gen_draft {
    sd_drafter_t *drafter;      /* NULL: target-only */
    sd_drafter_t *owned;        /* built here from the spec, freed here */
    int active;                 /* 0 once the drafter ran out of context */
    sd_spec_k_t kc;             /* the adaptive draft length */
    float min_confidence;
    float *q;                   /* [k_max, n_vocab] the drafter's distributions, or NULL */
    uint64_t forwards0;         /* drafter passes before decoding */
    /* a proposal made in rounds before its step is planned (sd_gen_draft_begin) */
    int ready;                  /* the step's plan (n, has_q, evidence) holds it */
    long k;                     /* tokens asked of the drafter */
    sd_draft_request_t req;
    sd_draft_out_t out;
    double t_begin;             /* when the rounds began */
    /* token trees (docs/design-notes.md, "Token trees"): tree = 1 when steps draft trees of
     * at most tree_nodes nodes */
    int tree, tree_nodes;
    sd_spec_tree_reach_t reach; /* for the load-aware cut */
    sd_tree_shape_t shape;
    sd_draft_tree_t proposal;   /* .q: [SD_SPEC_TREE_MAX_NODES + 1, n_vocab] for q-trees */
    sd_spec_scratch_t tscratch; /* sd_tree_verify's */
    int tscratch_ready;
} gen_draft_t;

typedef enum gen_plan_kind { PLAN_NONE = 0, PLAN_PROMPT, PLAN_STEP } gen_plan_kind_t;

/* The forward a generation planned, and how far its prompt is. */
typedef struct gen_plan {
    gen_plan_kind_t kind;       /* what sd_gen_advance will conclude */
    size_t prefilled;           /* prompt tokens forwarded (of n_prompt - 1) */
    int decoding;               /* the prompt is prefilled and the drafter begun */
    int32_t *tokens;            /* [k_max + 1] a step's forward: the last token, the drafts */
    int n;                      /* rows of a prompt chunk, or drafts of a step */
    int has_q, evidence;        /* the step's draft distributions and evidence class */
    int k;                      /* the step's draft length asked of the drafter */
    double draft_seconds;       /* the step's proposal time */
    size_t len;                 /* the step's context length */
    double row_cost;            /* the step's batch row cost (0: alone) */
    int is_tree;                /* the step forwards a tree: tokens[1 ..] its nodes */
    int32_t *parent;            /* [SD_SPEC_TREE_MAX_NODES + 1] the forward rows' parents */
    int32_t *node_parent;       /* [SD_SPEC_TREE_MAX_NODES] the nodes' parents (verify/tree.h) */
    sd_tree_result_t verdict;   /* the tree step's accepted path */
} gen_plan_t;

/* One generation: the request, the target's sequence and verifier, and the three concerns
 * that change as it runs (drafting, planning, output). */
typedef struct gen {
    const sd_model_t *model;
    const sd_gen_config_t *cfg;
    sd_sampler_params_t sp;
    const int32_t *prompt;
    size_t n_prompt;
    int n_vocab;
    int n_ctx;                  /* prompt + generated never exceed this */
    const sd_gen_options_t *opts;
    sd_step_callback on_step;   /* spec->on_step, and its user */
    void *on_step_user;
    int batched;                /* forwards run through sd_forward_batch */
    int cancelled;              /* sd_gen_cancel */
    sd_seq_t seq;               /* the target: holds the context but its last token */
    int seq_ready;
    size_t n_cached;            /* prompt positions the prefix cache served */
    sd_verifier_t ver;          /* host or kernel verification of each step */
    int ver_ready;
    sd_comm_t *comm;            /* the target's TP group, or NULL */
    int check_consistency;      /* compare every step's tokens across the ranks */
    gen_draft_t draft;
    gen_plan_t plan;
    sd_gen_output_t out;
    uint64_t n_steps;
    sd_gen_stats_t stats;
    double t_start, t_decode, t_plan; /* first plan, end of prefill, the last step's draft end */
} gen_t;

/* ---- state ------------------------------------------------------------------------- */

/* Rows of a tree step's forward (root and nodes), 0 without trees. */
static int tree_rows(const gen_t *g)
{
    return g->draft.tree ? SD_SPEC_TREE_MAX_NODES + 1 : 0;
}

/* Trees when spec asks for them: the drafter must propose trees. */
static sd_status_t tree_init(gen_t *g, const sd_spec_config_t *spec)
{
    int nodes = sd_spec_tree_nodes(spec);
    if (g->draft.drafter == NULL || nodes == 0) return SD_OK;
    if (!sd_drafter_has_trees(g->draft.drafter))
        return sd_set_error(SD_ERR_INVALID_ARG, "--tree: the %s drafter proposes no trees (the "
                            "model, layerskip, xvocab, ngram and callback drafters do)",
                            sd_drafter_name(g->draft.drafter));
    g->draft.tree = 1;
    sd_spec_tree_reach_init(&g->draft.reach);
    g->draft.tree_nodes = nodes < SD_SPEC_TREE_MAX_NODES ? nodes : SD_SPEC_TREE_MAX_NODES;
    g->draft.shape = (sd_tree_shape_t){.levels = spec->tree_levels, .budget = spec->tree_budget,
                                       .max_depth = spec->k,
                                       .sample_q = spec->tree_sample == SD_TREE_SAMPLE_Q};
    memcpy(g->draft.shape.width, spec->tree_width, sizeof spec->tree_width);
    size_t n = SD_SPEC_TREE_MAX_NODES + 1;
    g->plan.parent = malloc(2 * n * sizeof *g->plan.parent);
    SD_ALLOC_CHECK(g->plan.parent, 2 * n * sizeof *g->plan.parent, "tree parents");
    g->plan.node_parent = g->plan.parent + n;
    SD_CHECK(sd_spec_scratch_init(&g->draft.tscratch, g->n_vocab));
    g->draft.tscratch_ready = 1;
    if (g->sp.temperature > 0.0f && g->draft.shape.sample_q) { /* a q-tree's rows */
        size_t bytes = n * (size_t)g->n_vocab * sizeof *g->draft.proposal.q;
        g->draft.proposal.q = malloc(bytes);
        SD_ALLOC_CHECK(g->draft.proposal.q, bytes, "tree draft distributions");
        g->draft.proposal.n_vocab = g->n_vocab;
    }
    return SD_OK;
}

/* Drafter, draft length and buffers for spec (NULL or drafter NONE: none). */
static sd_status_t spec_init(gen_t *g, sd_model_t *m, const sd_spec_config_t *spec)
{
    const sd_gen_options_t *o = g->opts;
    g->on_step = spec->on_step;
    g->on_step_user = spec->on_step_user;
    if (o != NULL && o->drafter != NULL) {
        g->draft.drafter = o->drafter;
    } else {
        SD_CHECK(sd_spec_make_drafter(m, spec, &g->draft.owned));
        g->draft.drafter = g->draft.owned;
        int pooled = 0;
        if (o != NULL && o->draft_kv_pool != NULL)
            SD_CHECK(sd_drafter_model_use_pool(g->draft.owned, o->draft_kv_pool, &pooled));
    }
    int k_max = g->draft.drafter != NULL ? spec->k : 0;
    g->draft.active = g->draft.drafter != NULL;
    SD_CHECK(tree_init(g, spec));
    sd_spec_k_init(&g->draft.kc, k_max, g->draft.drafter != NULL && spec->adaptive);
    g->draft.min_confidence = g->draft.kc.adaptive ? spec->min_confidence : 0.0f;
    int rows = (k_max > tree_rows(g) - 1 ? k_max : tree_rows(g) - 1) + 1;
    g->plan.tokens = malloc((size_t)rows * sizeof *g->plan.tokens);
    SD_ALLOC_CHECK(g->plan.tokens, (size_t)rows * sizeof *g->plan.tokens, "verify batch");
    if (g->draft.drafter != NULL && g->sp.temperature > 0.0f) {
        size_t bytes = (size_t)k_max * (size_t)g->n_vocab * sizeof *g->draft.q;
        g->draft.q = malloc(bytes);
        SD_ALLOC_CHECK(g->draft.q, bytes, "draft distributions");
    }
    return SD_OK;
}

static sd_status_t gen_init(gen_t *g, sd_model_t *m, const sd_gen_config_t *c,
                            const sd_spec_config_t *spec, const int32_t *prompt, size_t n_prompt,
                            sd_token_callback callback, void *user)
{
    g->model = m;
    g->cfg = c;
    g->sp = (sd_sampler_params_t){c->temperature, c->top_k, c->top_p, c->min_p};
    g->n_vocab = m->hp.n_vocab;
    g->prompt = prompt;
    g->n_prompt = n_prompt;
    g->comm = sd_comm_size(m->comm) > 1 ? m->comm : NULL;
    g->check_consistency = g->comm != NULL && sd_gen_consistency_check();
    SD_CHECK(spec_init(g, m, spec));
    g->n_ctx = (int)sd_gen_kv_positions_for(m, n_prompt, c) + 1; /* prompt + generated */
    int chunk = n_prompt - 1 < SD_PREFILL_CHUNK ? (int)n_prompt - 1 : SD_PREFILL_CHUNK;
    int rows = chunk > g->draft.kc.k_max + 1 ? chunk : g->draft.kc.k_max + 1;
    rows = rows > tree_rows(g) ? rows : tree_rows(g);
    sd_kv_pool_t *pool = g->opts != NULL ? g->opts->kv_pool : NULL;
    SD_CHECK(pool != NULL ? sd_seq_init_pooled(&g->seq, m, pool, g->n_ctx - 1, rows)
                          : sd_seq_init(&g->seq, m, g->n_ctx - 1, rows));
    g->seq_ready = 1;
    /* the prompt but its last token is what the sequence holds once prefilled */
    g->n_cached = (size_t)sd_kv_cache_attach_prefix(&g->seq.kv, prompt, (int)n_prompt - 1);
    g->plan.prefilled = g->n_cached;
    SD_CHECK(sd_verifier_init(&g->ver, m, &g->seq, g->draft.kc.k_max, g->draft.q != NULL, g->batched));
    g->ver_ready = 1;
    return sd_gen_output_init(&g->out, m, c, callback, user, (size_t)g->n_ctx - n_prompt);
}

static void gen_release(gen_t *g)
{
    if (g->seq_ready)
        sd_seq_free(&g->seq);
    if (g->ver_ready)
        sd_verifier_free(&g->ver);
    sd_gen_output_free(&g->out);
    sd_drafter_free(g->draft.owned);
    free(g->plan.tokens);
    free(g->plan.parent);
    free(g->draft.q);
    free(g->draft.proposal.q);
    if (g->draft.tscratch_ready)
        sd_spec_scratch_free(&g->draft.tscratch);
}

/* ---- the loop ---------------------------------------------------------------------- */

/* The prompt is prefilled (prompt[0 .. n_prompt-1): the last prompt token is fed by the first
 * step, like every step feeds the token the previous one ended with): begin the drafter. */
static sd_status_t begin_decoding(gen_t *g)
{
    sd_kv_cache_commit(&g->seq.kv, g->prompt, (int)g->n_prompt - 1);
    if (g->draft.drafter != NULL) {
        SD_CHECK(sd_drafter_begin(g->draft.drafter, g->prompt, (int)g->n_prompt));
        g->draft.forwards0 = sd_drafter_forwards(g->draft.drafter);
    }
    g->plan.decoding = 1;
    g->t_decode = sd_now();
    return SD_OK;
}

/* Emit one token, drawn from row `row` of the step's logits: *stop = 1 when generation ends
 * with it (g->out.reason set). max_tokens first: a request that asked for exactly what the
 * context holds got what it asked for. With logprobs the row gives its log-probabilities. */
static sd_status_t emit(gen_t *g, int32_t token, int row, int *stop)
{
    size_t n = g->out.n_tokens + 1; /* with this token */
    sd_stop_reason_t end = n == (size_t)g->cfg->max_tokens ? SD_STOP_MAX_TOKENS
                           : g->n_prompt + n >= (size_t)g->n_ctx ? SD_STOP_CONTEXT_FULL
                                                                  : SD_STOP_NONE;
    if (!g->cfg->logprobs) return sd_gen_output_emit(&g->out, token, NULL, end, stop);
    int32_t top[SD_MAX_TOP_LOGPROBS];
    float top_lp[SD_MAX_TOP_LOGPROBS];
    sd_token_logprobs_t lp = {.token = token, .top_tokens = top, .top_logprobs = top_lp};
    const float *logits = g->seq.logits + (size_t)row * (size_t)g->n_vocab;
    lp.n_top = sd_logprobs_row(logits, g->n_vocab, token, g->out.n_top, &lp.logprob, top, top_lp);
    return sd_gen_output_emit(&g->out, token, &lp, end, stop);
}

/* With logprobs, the step's rows that hold logits only on the device (the verify kernel's
 * forward) come to the host: rows 0 .. n_rows - 1, the rows of the tokens it emits. */
static sd_status_t fetch_rows(gen_t *g, int n_rows)
{
    if (!g->cfg->logprobs || !g->seq.keep_logits_on_device) return SD_OK;
    sd_backend_t *be = g->model->backend;
    sd_backend_download(be, g->seq.logits, g->seq.sc.logits_dev,
                        (size_t)n_rows * (size_t)g->n_vocab * sizeof(float));
    return sd_backend_sync(be);
}

/* The draft length to ask the drafter for: the controller's k, or for a drafter that
 * proposes cheaply under adaptive k the longest (its proposal is cut to its evidence
 * class's k once it is known: cut_to_class). */
static long draft_request_len(gen_t *g)
{
    if (g->draft.kc.adaptive && sd_drafter_proposes_cheaply(g->draft.drafter))
        return g->draft.kc.k_max;
    return sd_spec_k_next(&g->draft.kc);
}

/* A cheap drafter's proposal o cut to the k its evidence class earns (0: a plain decode). */
static void cut_to_class(gen_t *g, sd_draft_out_t *o)
{
    if (o->n < 1 || !g->draft.kc.adaptive || !sd_drafter_proposes_cheaply(g->draft.drafter))
        return;
    int k = sd_spec_k_next_for(&g->draft.kc, o->evidence);
    o->n = o->n < k ? o->n : k;
}

/* In a loaded batch (g->plan.row_cost > 0) the k the class's estimate earns at that cost, for a
 * draft whose length does not decide the tokens (greedy, or deterministic proposals);
 * else no limit (engine/speculative.h, sd_spec_batch_row_cost). */
static int load_cap(const gen_t *g, int evidence, int has_q)
{
    if (g->plan.row_cost <= 0.0 || (g->sp.temperature > 0.0f && has_q))
        return SD_SPEC_MAX_K;
    return sd_spec_k_at_cost(&g->draft.kc, evidence, g->plan.row_cost);
}

/* The draft length this step asks the drafter for (0: no drafting): the controller's, cut
 * to max_rows - 1, max_tokens and the context (a step emits at most k + 1 tokens and its
 * forward fills cache positions up to len + k - 1) and, for a drafter that works per
 * token, to what the load pays for. */
static long draft_len(gen_t *g, size_t len, int max_rows)
{
    if (!g->draft.active)
        return 0;
    long room_tokens = (long)g->cfg->max_tokens - (long)g->out.n_tokens - 1;
    long room_ctx = (long)g->n_ctx - (long)len - 1;
    long k = draft_request_len(g);
    if (!sd_drafter_proposes_cheaply(g->draft.drafter)) {
        long cap = load_cap(g, 0, g->sp.temperature > 0.0f); /* before the drafter works */
        k = k < cap ? k : cap;
    }
    k = k < max_rows - 1 ? k : max_rows - 1;
    k = k < room_tokens ? k : room_tokens;
    k = k < room_ctx ? k : room_ctx;
    return k < 1 ? 0 : k;
}

/* The proposal o (status st) of k asked tokens becomes the step's draft: a drafter out of
 * context stops drafting (the rest is target-only); the proposal is checked, then cut to
 * its evidence class's k and the load cap. */
static sd_status_t draft_conclude(gen_t *g, sd_status_t st, size_t len, long k,
                                  const sd_draft_out_t *o, int *n, int *has_q, int *evidence)
{
    *n = 0;
    *has_q = 0;
    *evidence = 0;
    if (st == SD_ERR_CONTEXT_FULL) {
        sd_log(SD_LOG_WARN, "drafter %s out of context at %zu tokens (%s); continuing without "
                            "drafts", sd_drafter_name(g->draft.drafter), len, sd_last_error());
        sd_clear_error();
        g->draft.active = 0;
        return SD_OK;
    }
    SD_CHECK(st);
    if (o->n < 0 || o->n > k || (o->has_q && g->draft.q == NULL))
        return sd_set_error(SD_ERR_INTERNAL, "drafter %s proposed %d tokens (asked <= %ld)%s",
                            sd_drafter_name(g->draft.drafter), o->n, k,
                            o->has_q && g->draft.q == NULL ? " with distributions while greedy" : "");
    sd_draft_out_t cut = *o;
    cut_to_class(g, &cut);
    int cap = load_cap(g, cut.evidence, cut.has_q);
    *n = cut.n < cap ? cut.n : cap;
    *has_q = cut.has_q;
    *evidence = cut.evidence;
    return SD_OK;
}

/* The step's drafter request for k tokens at position len, into batch[1 ..] and q. */
static void draft_request(gen_t *g, size_t len, long k, sd_draft_request_t *req,
                          sd_draft_out_t *o)
{
    *req = (sd_draft_request_t){(int)k, &g->sp, g->cfg->seed, (int64_t)len, g->draft.min_confidence};
    *o = (sd_draft_out_t){.tokens = g->plan.tokens + 1, .q = g->draft.q, .n_vocab = g->n_vocab};
}

/* Propose the step's drafts into batch[1 .. 1 + *n) for positions len ..; *has_q when q
 * holds their distributions; *evidence is the proposal's evidence class (0 when nothing
 * was proposed or the drafter reports none). */
static sd_status_t draft(gen_t *g, size_t len, int max_rows, int *n, int *has_q, int *evidence)
{
    long k = draft_len(g, len, max_rows);
    g->plan.k = (int)k;
    *n = *has_q = *evidence = 0;
    if (k == 0)
        return SD_OK;
    sd_draft_request_t req;
    sd_draft_out_t o;
    draft_request(g, len, k, &req, &o);
    sd_status_t st = sd_drafter_propose(g->draft.drafter, &req, &o);
    return draft_conclude(g, st, len, k, &o, n, has_q, evidence);
}

/* ---- token trees ------------------------------------------------------------------------ */

/* The proposal's nodes that fit: depth <= max_depth and at most max_nodes, a node kept only
 * with its parent; into plan.tokens[1 ..], plan.node_parent and the forward's plan.parent
 * (row 0 the root), and q rows (has_q) moved to the kept nodes' indices. Returns the nodes
 * kept. */
static int tree_cut(gen_t *g, sd_draft_tree_t *t, int max_depth, int max_nodes)
{
    size_t V = (size_t)g->n_vocab;
    int32_t index[SD_SPEC_TREE_MAX_NODES], depth[SD_SPEC_TREE_MAX_NODES];
    int n = 0;
    g->plan.parent[0] = -1;
    for (int i = 0; i < t->n; i++) {
        int p = t->parent[i];
        depth[i] = p >= 0 ? depth[p] + 1 : 1;
        index[i] = -1;
        if ((p >= 0 && index[p] < 0) || depth[i] > max_depth || n >= max_nodes) continue;
        index[i] = n;
        g->plan.tokens[1 + n] = t->tokens[i];
        g->plan.node_parent[n] = p >= 0 ? index[p] : -1;
        g->plan.parent[1 + n] = g->plan.node_parent[n] + 1;
        if (t->has_q && n != i) /* kept nodes only move down */
            memcpy(t->q + (1 + (size_t)n) * V, t->q + (1 + (size_t)i) * V, V * sizeof *t->q);
        n++;
    }
    return n;
}

/* In a loaded batch (plan.row_cost > 0), the depth whose levels of t pay at that cost
 * (docs/design-notes.md, "Token trees", Serving; t NULL: before proposing, levels of one
 * node, the most any level may keep); else, or for a sampled q-tree (whose shape decides
 * the tokens), no limit. */
static int tree_load_cap(const gen_t *g, const sd_draft_tree_t *t)
{
    if (g->plan.row_cost <= 0.0 || (g->sp.temperature > 0.0f && g->draft.shape.sample_q))
        return SD_TREE_MAX_DEPTH;
    int width[SD_TREE_MAX_DEPTH + 1] = {0}, depth[SD_SPEC_TREE_MAX_NODES], max_depth = 0;
    if (t == NULL) {
        for (int d = 1; d <= SD_TREE_MAX_DEPTH; d++) width[d] = 1;
        max_depth = SD_TREE_MAX_DEPTH;
    }
    for (int i = 0; t != NULL && i < t->n; i++) {
        depth[i] = t->parent[i] >= 0 ? depth[t->parent[i]] + 1 : 1;
        if (depth[i] > SD_TREE_MAX_DEPTH) continue;
        width[depth[i]]++;
        max_depth = depth[i] > max_depth ? depth[i] : max_depth;
    }
    return sd_spec_tree_depth_at_cost(&g->draft.reach, width, max_depth, g->plan.row_cost);
}

/* Propose the step's tree at position len (plan.n nodes, 0: a plain decode): cut to what
 * max_tokens and the context hold (a step emits up to depth + 1 tokens; its forward fills
 * cache rows len - 1 .. len - 1 + nodes) and to what a loaded batch pays for. */
static sd_status_t draft_tree(gen_t *g, size_t len, int max_rows)
{
    g->plan.n = g->plan.has_q = g->plan.evidence = g->plan.k = 0;
    g->plan.is_tree = 0;
    long room_tokens = (long)g->cfg->max_tokens - (long)g->out.n_tokens - 1;
    long room_ctx = (long)g->n_ctx - (long)len - 1;
    long room_rows = (long)max_rows - 1;
    room_ctx = room_ctx < room_rows ? room_ctx : room_rows;
    int levels = tree_load_cap(g, NULL); /* a loaded batch: no deeper than could pay */
    if (!g->draft.active || room_tokens < 1 || room_ctx < 1 || levels < 1) return SD_OK;
    sd_tree_shape_t shape = g->draft.shape;
    if (shape.levels > levels) shape.levels = levels;
    if (shape.max_depth > levels) shape.max_depth = levels;
    sd_draft_request_t req = {1, &g->sp, g->cfg->seed, (int64_t)len, 0.0f};
    sd_draft_tree_t *t = &g->draft.proposal;
    sd_status_t st = sd_drafter_propose_tree(g->draft.drafter, &req, &shape, t);
    sd_draft_out_t none = {.n = 0};
    int unused;
    if (st != SD_OK) return draft_conclude(g, st, len, 0, &none, &g->plan.n, &unused, &unused);
    sd_token_tree_t tree = {t->n, t->tokens, t->parent};
    if (t->n > SD_SPEC_TREE_MAX_NODES || sd_tree_check(&tree, g->n_vocab, NULL) != SD_OK)
        return sd_set_error(SD_ERR_INTERNAL, "drafter %s proposed a bad tree of %d nodes: %s",
                            sd_drafter_name(g->draft.drafter), t->n, sd_last_error());
    int depth = tree_load_cap(g, t);
    g->plan.n = tree_cut(g, t, room_tokens < depth ? (int)room_tokens : depth, (int)room_ctx);
    g->plan.is_tree = g->plan.n > 0;
    g->plan.has_q = t->has_q;
    for (int i = 0; i < g->plan.n; i++) {
        int d = 1;
        for (int a = g->plan.node_parent[i]; a >= 0; a = g->plan.node_parent[a]) d++;
        g->plan.k = d > g->plan.k ? d : g->plan.k;
    }
    return SD_OK;
}

/* Verify the tree step (its logits brought to the host) into r and plan.verdict. */
static sd_status_t tree_step_verify(gen_t *g, size_t len, sd_spec_result_t *r)
{
    size_t V = (size_t)g->n_vocab, n = (size_t)g->plan.n;
    if (g->seq.keep_logits_on_device) {
        sd_backend_download(g->model->backend, g->seq.logits, g->seq.sc.logits_dev,
                            (n + 1) * V * sizeof(float));
        SD_CHECK(sd_backend_sync(g->model->backend));
    }
    sd_token_tree_t tree = {g->plan.n, g->plan.tokens + 1, g->plan.node_parent};
    const float *q = g->plan.has_q ? g->draft.proposal.q : NULL;
    SD_CHECK(sd_tree_verify(&g->sp, g->cfg->seed, (uint64_t)len, &tree, q, g->seq.logits,
                            g->n_vocab, &g->draft.tscratch, &g->plan.verdict));
    r->n_accepted = g->plan.verdict.n_accepted;
    r->next_token = g->plan.verdict.next_token;
    return SD_OK;
}

/* After the verified tree step was reported: plan.tokens[1 ..] become the accepted path,
 * logits rows 0 .. n_accepted the path's rows (for logprobs) and the cache gets its KV rows
 * at len .. len + n_accepted - 1 (the caller truncates past them). */
static sd_status_t tree_step_apply(gen_t *g, size_t len)
{
    const sd_tree_result_t tr = g->plan.verdict;
    size_t V = (size_t)g->n_vocab;
    int32_t src[SD_TREE_MAX_DEPTH], dst[SD_TREE_MAX_DEPTH];
    for (int d = 0; d < tr.n_accepted; d++) { /* sources never below their destinations */
        g->plan.tokens[1 + d] = g->plan.tokens[1 + tr.path[d]];
        size_t row = d == 0 ? 0 : 1 + (size_t)tr.path[d - 1];
        if (g->cfg->logprobs && row != (size_t)d)
            memcpy(g->seq.logits + (size_t)d * V, g->seq.logits + row * V, V * sizeof(float));
        src[d] = (int32_t)len + tr.path[d];
        dst[d] = (int32_t)len + d;
    }
    if (g->cfg->logprobs && tr.n_accepted > 0)
        memcpy(g->seq.logits + (size_t)tr.n_accepted * V,
               g->seq.logits + (1 + (size_t)tr.path[tr.n_accepted - 1]) * V, V * sizeof(float));
    return sd_kv_cache_move_rows(&g->seq.kv, g->model, src, dst, tr.n_accepted);
}

/* Emit the verified block d[0..a) + next; *stop when a token of it ended generation
 * (the rest of the block is dropped). */
static sd_status_t emit_block(gen_t *g, const sd_spec_result_t *r, int *stop)
{
    SD_CHECK(fetch_rows(g, r->n_accepted + 1));
    for (int i = 0; i < r->n_accepted; i++) {
        SD_CHECK(emit(g, g->plan.tokens[1 + i], i, stop));
        if (*stop)
            return SD_OK;
    }
    return emit(g, r->next_token, r->n_accepted, stop);
}

static sd_status_t call_hook(gen_t *g, int n, const sd_spec_result_t *r)
{
    if (g->opts == NULL || g->opts->hook == NULL)
        return SD_OK;
    sd_spec_step_view_t v = {&g->seq, g->draft.active ? g->draft.drafter : NULL, g->prompt, g->n_prompt,
                             g->out.tokens, g->out.n_tokens, n, r->n_accepted, r->next_token, g->draft.kc.k};
    return g->opts->hook(g->opts->hook_user, &v);
}

/* How a step ended on a rank, as the ranks compare it: 0 when generation goes on, else
 * STEP_STOPPED with the stop reason and the tokens kept, or STEP_FAILED with the status. */
#define STEP_STOPPED (1ull << 62)
#define STEP_FAILED (1ull << 63)

static uint64_t step_end(const gen_t *g, sd_status_t emitted, int stop)
{
    if (emitted != SD_OK) return STEP_FAILED | (uint64_t)emitted;
    return stop ? STEP_STOPPED | (uint64_t)g->out.reason << 40 | g->out.n_tokens : 0;
}

static const char *step_end_text(uint64_t end, char *buf, size_t cap)
{
    if (end & STEP_FAILED)
        snprintf(buf, cap, "failed (%s)", sd_status_string((sd_status_t)(end & 0xffff)));
    else if (end & STEP_STOPPED)
        snprintf(buf, cap, "stopped after %llu tokens (%s)",
                 (unsigned long long)(end & ((1ull << 40) - 1)),
                 sd_stop_reason_string((sd_stop_reason_t)((end >> 40) & 0xff)));
    else
        snprintf(buf, cap, "went on");
    return buf;
}

/* Under TP every rank must accept the same tokens and end at the same one: after the step's
 * tokens were emitted, compare a hash of its outcome (position, drafts accepted, their
 * tokens, the next token) and how it ended (a stop, e.g. a callback's on one rank only, or
 * a local failure) across the ranks (one 16-byte allgather). A disagreement is
 * SD_ERR_RANK_DIVERGENCE naming the step on every rank at once, instead of mismatched
 * collectives or a rank waiting out its deadline. emitted: this rank's emit status,
 * returned when the ranks agree. */
static sd_status_t check_ranks_agree(gen_t *g, size_t len, const sd_spec_result_t *r,
                                     sd_status_t emitted, int stop)
{
    if (!g->check_consistency)
        return emitted;
    uint64_t w[3] = {len, (uint64_t)r->n_accepted, (uint64_t)(uint32_t)r->next_token};
    uint64_t h = sd_fnv1a64(SD_FNV64_INIT, w, sizeof w);
    for (int i = 0; i < r->n_accepted; i++) {
        uint64_t t = (uint64_t)(uint32_t)g->plan.tokens[1 + i];
        h = sd_fnv1a64(h, &t, sizeof t);
    }
    uint64_t mine[2] = {h, step_end(g, emitted, stop)};
    int size = sd_comm_size(g->comm);
    uint64_t *all = malloc((size_t)size * sizeof mine);
    SD_ALLOC_CHECK(all, (size_t)size * sizeof mine, "consistency hashes");
    sd_status_t st = sd_comm_allgather(g->comm, mine, sizeof mine, all);
    int bad = -1, part = 0; /* the first rank that differs from rank 0: in part 0 (tokens), else 1 */
    for (; st == SD_OK && bad < 0 && part < 2; part += bad < 0)
        for (int rk = 1; rk < size && bad < 0; rk++)
            if (all[2 * rk + part] != all[part]) bad = rk;
    char a[80], b[80];
    if (bad >= 0 && part == 0)
        st = sd_set_error(SD_ERR_RANK_DIVERGENCE,
                          "ranks disagree on the tokens of step %llu (position %zu): rank 0 "
                          "hash %016llx, rank %d hash %016llx",
                          (unsigned long long)g->n_steps, len, (unsigned long long)all[0], bad,
                          (unsigned long long)all[2 * bad]);
    else if (bad >= 0)
        st = sd_set_error(SD_ERR_RANK_DIVERGENCE,
                          "ranks disagree on where generation ends at step %llu (position %zu): "
                          "rank 0 %s, rank %d %s", (unsigned long long)g->n_steps, len,
                          step_end_text(all[1], a, sizeof a), bad,
                          step_end_text(all[2 * bad + 1], b, sizeof b));
    free(all);
    return st != SD_OK ? st : emitted;
}

/* The step's record for spec->on_step (after verification, before its tokens are emitted). */
static void report_step(gen_t *g, size_t len, const sd_spec_result_t *r)
{
    if (g->on_step == NULL) return;
    sd_step_info_t info = {
        .request = g->opts != NULL ? g->opts->request : 0,
        .step = g->n_steps - 1,
        .pos = (int64_t)len,
        .k = g->plan.k,
        .n_drafted = g->plan.n,
        .drafted = g->plan.tokens + 1,
        .n_accepted = r->n_accepted,
        .next_token = r->next_token,
        .evidence = g->plan.evidence,
        .draft_seconds = g->plan.draft_seconds,
        .verify_seconds = sd_now() - g->t_plan,
    };
    g->on_step(g->on_step_user, &info);
}

/* Plan a step: the drafter proposes; the forward is [last token, drafts]. */
static sd_status_t step_plan(gen_t *g, int max_rows, sd_gen_plan_t *p)
{
    size_t len = g->n_prompt + g->out.n_tokens;
    g->plan.tokens[0] = g->out.n_tokens ? g->out.tokens[g->out.n_tokens - 1] : g->prompt[g->n_prompt - 1];
    double t0 = sd_now();
    int in_rounds = g->draft.ready; /* proposed in rounds: plan.k and draft_seconds are set */
    if (in_rounds)
        g->draft.ready = 0;
    else if (g->draft.tree)
        SD_CHECK(draft_tree(g, len, max_rows));
    else
        SD_CHECK(draft(g, len, max_rows, &g->plan.n, &g->plan.has_q, &g->plan.evidence));
    g->t_plan = sd_now();
    g->stats.draft_seconds += g->t_plan - t0;
    if (!in_rounds) g->plan.draft_seconds = g->t_plan - t0;
    g->plan.len = len;
    *p = (sd_gen_plan_t){&g->seq, g->plan.tokens, g->plan.n + 1, 1,
                         g->plan.is_tree ? g->plan.parent : NULL};
    return SD_OK;
}

/* After the step's forward: verify, emit, roll back, commit to the drafter. */
static sd_status_t step_advance(gen_t *g, int *stop)
{
    size_t len = g->plan.len;
    int n = g->plan.n, evidence = g->plan.evidence, report_tree = 0;
    sd_spec_result_t r;
    double t_check = sd_now();
    if (g->plan.is_tree) {
        report_tree = 1;
        SD_CHECK(tree_step_verify(g, len, &r));
    } else {
        SD_CHECK(sd_verifier_run(&g->ver, &g->seq, &g->sp, g->cfg->seed, (uint64_t)len,
                                 g->plan.tokens + 1, g->plan.has_q ? g->draft.q : NULL, n, &r));
    }
    double t_done = sd_now();
    g->stats.verify_seconds += t_done - g->t_plan; /* the forward and the check */
    g->stats.check_seconds += t_done - t_check;
    g->n_steps++;
    /* test-only: SPECDEC_FAULT corrupt / corrupt-draft */
    if (sd_comm_fault_corrupt_step(g->comm, g->n_steps))
        r.next_token = (r.next_token + 1) % g->n_vocab;
    if (r.n_accepted > 0 && sd_comm_fault_corrupt_draft(g->comm, g->n_steps))
        g->plan.tokens[1] = (g->plan.tokens[1] + 1) % g->n_vocab;
    report_step(g, len, &r);
    if (report_tree) {
        SD_CHECK(tree_step_apply(g, len));
        sd_spec_tree_reach_update(&g->draft.reach, g->plan.k, r.n_accepted);
    }
    sd_gen_stats_step(&g->stats, n, r.n_accepted);
    if (!report_tree) sd_spec_k_update_for(&g->draft.kc, evidence, n, r.n_accepted);
    sd_status_t emitted = emit_block(g, &r, stop);
    SD_CHECK(check_ranks_agree(g, len, &r, emitted, *stop));
    if (*stop)
        return SD_OK;
    SD_CHECK(sd_kv_cache_truncate(&g->seq.kv, (int)len + r.n_accepted));
    if (g->draft.active) {
        double t3 = sd_now();
        if (g->draft.tree)
            SD_CHECK(sd_drafter_accept_path(g->draft.drafter, g->plan.tokens + 1, r.n_accepted,
                                            r.next_token));
        else
            SD_CHECK(sd_drafter_accept(g->draft.drafter, r.n_accepted, r.next_token));
        g->stats.draft_seconds += sd_now() - t3;
    }
    return call_hook(g, n, &r);
}

/* Generation ended (SD_OK): held text, timings, statistics. */
static sd_status_t finish_run(gen_t *g, sd_gen_result_t *out)
{
    sd_stop_reason_t why = g->out.reason;
    if (why != SD_STOP_STRING && why != SD_STOP_MAX_TOKENS && why != SD_STOP_CONTEXT_FULL)
        SD_CHECK(sd_gen_output_finish(&g->out));
    double t_end = sd_now();
    out->prefill_seconds = g->t_decode - g->t_start;
    out->decode_seconds = t_end - g->t_decode;
    sd_gen_stats_t *s = &g->stats;
    s->draft_forwards = sd_drafter_forwards(g->draft.drafter) - g->draft.forwards0;
    s->other_seconds = out->decode_seconds - s->draft_seconds - s->verify_seconds;
    if (s->other_seconds < 0.0)
        s->other_seconds = 0.0;
    sd_gen_stats_finish(s, g->out.n_tokens);
    return SD_OK;
}

/* ---- driving (engine/gen.h) ------------------------------------------------------- */

sd_status_t sd_gen_new(sd_model_t *model, const int32_t *prompt, size_t n_prompt,
                       const sd_gen_config_t *config, const sd_spec_config_t *spec,
                       const sd_gen_options_t *opts, sd_token_callback callback, void *user,
                       int batched, sd_gen_t **out)
{
    *out = NULL;
    sd_spec_config_t none;
    if (spec == NULL) {
        sd_spec_config_default(&none);
        spec = &none;
    }
    sd_status_t st = sd_gen_check("sd_generate", model, prompt, n_prompt, config, spec,
                                  opts != NULL && opts->drafter != NULL);
    if (model == NULL || config == NULL) return st;
    SD_CHECK(sd_gen_agree_on_request(model, st, prompt, n_prompt, config, spec));
    gen_t *g = calloc(1, sizeof *g);
    SD_ALLOC_CHECK(g, sizeof *g, "generation state");
    *g = (gen_t){.opts = opts, .batched = batched};
    st = gen_init(g, model, config, spec, prompt, n_prompt, callback, user);
    st = sd_comm_agree(g->comm, st); /* e.g. one rank out of memory */
    if (st != SD_OK) {
        gen_release(g);
        free(g);
        return st;
    }
    *out = g;
    return SD_OK;
}

sd_status_t sd_gen_plan(sd_gen_t *g, int max_rows, double row_cost, sd_gen_plan_t *plan)
{
    if (max_rows < 1)
        return sd_set_error(SD_ERR_INVALID_ARG, "sd_gen_plan: max_rows = %d", max_rows);
    if (g->t_start == 0.0) g->t_start = sd_now();
    size_t left = g->n_prompt - 1 - g->plan.prefilled;
    if (!g->plan.decoding && left == 0) SD_CHECK(begin_decoding(g));
    if (g->plan.decoding) {
        g->plan.kind = PLAN_STEP;
        g->plan.row_cost = row_cost;
        return step_plan(g, max_rows, plan);
    }
    /* sd_forward computes in the sequence's own scratch; a batch in its own */
    size_t cap = g->batched ? (size_t)max_rows : (size_t)g->seq.max_tokens;
    cap = cap < (size_t)max_rows ? cap : (size_t)max_rows;
    g->plan.n = (int)(left < cap ? left : cap);
    g->plan.kind = PLAN_PROMPT;
    *plan = (sd_gen_plan_t){&g->seq, g->prompt + g->plan.prefilled, g->plan.n, 0, NULL};
    return SD_OK;
}

sd_status_t sd_gen_advance(sd_gen_t *g, int *done)
{
    *done = 0;
    gen_plan_kind_t planned = g->plan.kind;
    g->plan.kind = PLAN_NONE;
    if (planned == PLAN_PROMPT) {
        g->plan.prefilled += (size_t)g->plan.n;
        return SD_OK;
    }
    if (planned != PLAN_STEP)
        return sd_set_error(SD_ERR_INTERNAL, "sd_gen_advance without a planned forward");
    return step_advance(g, done);
}

/* ---- drafting in rounds ------------------------------------------------------------- */

int sd_gen_drafts_in_rounds(const sd_gen_t *g)
{
    return !sd_gen_prefilling(g) && g->draft.active && !g->draft.ready && !g->draft.tree &&
           sd_drafter_has_rounds(g->draft.drafter); /* trees: grown in propose_tree */
}

/* The rounds ended (status st): the proposal becomes the step's draft. */
static sd_status_t draft_rounds_end(gen_t *g, sd_status_t st, sd_draft_forward_t *fwd)
{
    fwd->n = 0;
    size_t len = g->n_prompt + g->out.n_tokens;
    st = draft_conclude(g, st, len, g->draft.k, &g->draft.out, &g->plan.n, &g->plan.has_q,
                        &g->plan.evidence);
    g->draft.ready = st == SD_OK;
    g->plan.k = (int)g->draft.k;
    g->plan.draft_seconds = sd_now() - g->draft.t_begin;
    g->stats.draft_seconds += g->plan.draft_seconds;
    return st;
}

sd_status_t sd_gen_draft_begin(sd_gen_t *g, int max_rows, double row_cost,
                               sd_draft_forward_t *fwd)
{
    fwd->n = 0;
    if (!g->plan.decoding) SD_CHECK(begin_decoding(g));
    g->draft.t_begin = sd_now();
    g->plan.row_cost = row_cost;
    size_t len = g->n_prompt + g->out.n_tokens;
    g->draft.k = draft_len(g, len, max_rows);
    g->draft.out = (sd_draft_out_t){0};
    if (g->draft.k == 0) return draft_rounds_end(g, SD_OK, fwd);
    draft_request(g, len, g->draft.k, &g->draft.req, &g->draft.out);
    sd_status_t st = sd_drafter_propose_begin(g->draft.drafter, &g->draft.req, &g->draft.out, fwd);
    return st != SD_OK || fwd->n == 0 ? draft_rounds_end(g, st, fwd) : SD_OK;
}

sd_status_t sd_gen_draft_resume(sd_gen_t *g, sd_draft_forward_t *fwd)
{
    sd_status_t st = sd_drafter_propose_resume(g->draft.drafter, fwd);
    return st != SD_OK || fwd->n == 0 ? draft_rounds_end(g, st, fwd) : SD_OK;
}

size_t sd_gen_n_tokens(const sd_gen_t *g) { return g->out.n_tokens; }

int sd_gen_prefilling(const sd_gen_t *g) { return !g->plan.decoding && g->plan.prefilled + 1 < g->n_prompt; }

int sd_gen_max_step_rows(const sd_gen_t *g)
{
    return (g->draft.tree ? g->draft.tree_nodes : g->draft.kc.k_max) + 1;
}

const sd_gen_stats_t *sd_gen_stats(const sd_gen_t *g) { return &g->stats; }

size_t sd_gen_kv_bytes(const sd_gen_t *g)
{
    return sd_kv_cache_bytes(&g->seq.kv);
}

void sd_gen_cancel(sd_gen_t *g) { g->cancelled = 1; }

/* The context the sequence holds (prompt, then the tokens generated) offered to the prefix
 * cache for later requests. */
static void commit_context(gen_t *g)
{
    if (g->opts == NULL || g->opts->kv_pool == NULL || !g->opts->kv_pool->prefix_cache) return;
    size_t n = g->n_prompt + g->out.n_tokens;
    n = n < (size_t)g->seq.kv.len ? n : (size_t)g->seq.kv.len;
    if (n == 0) return;
    int32_t *ctx = malloc(n * sizeof *ctx);
    if (ctx == NULL) return; /* nothing offered: later requests prefill it */
    size_t np = n < g->n_prompt ? n : g->n_prompt;
    memcpy(ctx, g->prompt, np * sizeof *ctx);
    if (n > np) memcpy(ctx + np, g->out.tokens, (n - np) * sizeof *ctx);
    sd_kv_cache_commit(&g->seq.kv, ctx, (int)n);
    free(ctx);
}

sd_status_t sd_gen_finish(sd_gen_t *g, sd_status_t st, sd_gen_result_t *out)
{
    memset(out, 0, sizeof *out);
    if (st == SD_OK) st = finish_run(g, out);
    if (st != SD_OK) {
        /* Generation had started: keep what was produced (text held back for a possible
         * stop string included), timings aside. */
        memset(out, 0, sizeof *out);
        g->out.reason = g->cancelled ? SD_STOP_CANCELLED : SD_STOP_ERROR;
        sd_gen_stats_finish(&g->stats, g->out.n_tokens);
    }
    if (st == SD_OK) commit_context(g);
    sd_gen_output_take(&g->out, out);
    out->n_prompt = g->n_prompt;
    out->n_cached = g->n_cached;
    out->stats = g->stats;
    gen_release(g);
    free(g);
    return st;
}

sd_status_t sd_generate_ex(sd_model_t *model, const int32_t *prompt, size_t n_prompt,
                           const sd_gen_config_t *config, const sd_spec_config_t *spec,
                           const sd_gen_options_t *opts, sd_token_callback callback, void *user,
                           sd_gen_result_t *out)
{
    if (out == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG, "sd_generate: out is NULL");
    memset(out, 0, sizeof *out);
    sd_gen_t *g = NULL;
    SD_CHECK(sd_gen_new(model, prompt, n_prompt, config, spec, opts, callback, user, 0, &g));
    sd_status_t st = SD_OK;
    for (int done = 0; st == SD_OK && !done;) {
        sd_gen_plan_t p;
        st = sd_gen_plan(g, INT_MAX, 0.0, &p); /* alone: the sequence's own limits apply */
        if (st == SD_OK)
            st = p.parent ? sd_forward_tree(p.seq, p.tokens, p.n, p.seq->kv.len, p.parent, 0)
                          : sd_forward(p.seq, p.tokens, p.n, 0);
        if (st == SD_OK) st = sd_gen_advance(g, &done);
    }
    return sd_gen_finish(g, st, out);
}

sd_status_t sd_generate_speculative(sd_model_t *model, const int32_t *prompt, size_t n_prompt,
                                    const sd_gen_config_t *config, const sd_spec_config_t *spec,
                                    sd_token_callback callback, void *user, sd_gen_result_t *out)
{
    return sd_generate_ex(model, prompt, n_prompt, config, spec, NULL, callback, user, out);
}

sd_status_t sd_generate(sd_model_t *model, const int32_t *prompt, size_t n_prompt,
                        const sd_gen_config_t *config, sd_token_callback callback, void *user,
                        sd_gen_result_t *out)
{
    return sd_generate_ex(model, prompt, n_prompt, config, NULL, NULL, callback, user, out);
}
