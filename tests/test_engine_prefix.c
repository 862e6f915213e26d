/* The prefix cache of the serving engine (engine/scheduler.c over model/kv_cache.c): 16
 * concurrent multi-turn conversations give each conversation's tokens and log-probabilities
 * exactly as run alone without the cache; a cap small enough to force evictions changes
 * nothing; every block is given back when the requests end; a cap too small for one request
 * is refused with a message naming it. Token trees in the batched step (static, dynamic and
 * n-gram trees, cache on and off) give each conversation's target-only tokens and logprobs. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/kv_cache.h"
#include "specdec/specdec.h"
#include "support/synth_model.h"

#define N_CONV 16
#define N_TURNS 3
#define N_SYSTEM 40 /* shared by every conversation: 2.5 blocks */
#define N_USER 9
#define MAX_TOKENS 32
#define MAX_CTX (N_SYSTEM + N_TURNS * (N_USER + MAX_TOKENS))

/* The target (seed 0), or a draft model with its vocabulary and other weights. */
static sd_model_t *load_synth_seeded(uint64_t seed, int n_layer)
{
    sd_synth_spec_t s;
    sd_synth_spec_default(&s);
    s.n_ctx = 512;
    s.weight_scale = 0.08f;
    if (seed) s.seed = seed;
    if (n_layer) s.n_layer = n_layer;
    return sd_test_synth_model(&s, 2, 512);
}

static sd_model_t *load_synth(void) { return load_synth_seeded(0, 0); }

static sd_model_t *draft_model; /* for spec_of(SD_DRAFTER_MODEL) */
static const char *tree_shape;   /* spec_of's --tree, NULL: chains */
static int no_load_aware;        /* engine_spec: load_aware_drafts = 0 */
static int tree_sample_q;        /* spec_of's trees drawn from the drafter's q */

static sd_spec_config_t spec_of(sd_drafter_kind_t kind)
{
    sd_spec_config_t sp;
    sd_spec_config_default(&sp);
    sp.drafter = kind; /* speculative steps roll the caches back */
    sp.k = 4;
    sp.layerskip_layers = kind == SD_DRAFTER_LAYERSKIP ? 1 : 0;
    sp.draft_model = kind == SD_DRAFTER_MODEL ? draft_model : NULL;
    if (tree_shape != NULL && kind != SD_DRAFTER_NONE)
        cr_assert_eq(sd_spec_parse_tree(tree_shape, &sp), SD_OK, "%s", sd_last_error());
    sp.tree_sample = tree_sample_q ? SD_TREE_SAMPLE_Q : SD_TREE_SAMPLE_TOP;
    return sp;
}

/* One conversation: its context so far and each turn's result. */
typedef struct conv {
    int32_t ctx[MAX_CTX];
    size_t n_ctx;
    sd_gen_config_t config;
    sd_gen_result_t turns[N_TURNS];
} conv_t;

static void conv_init(conv_t *c, int i)
{
    memset(c, 0, sizeof *c);
    for (int t = 0; t < N_SYSTEM; t++) c->ctx[c->n_ctx++] = (int32_t)(30 + (t * 7) % 50);
    sd_gen_config_default(&c->config);
    c->config.max_tokens = MAX_TOKENS;
    c->config.seed = 500 + (uint64_t)i;
    c->config.temperature = i % 2 ? 0.8f : 0.0f;
    c->config.ignore_eos = 1;
    c->config.logprobs = 1;
    c->config.top_logprobs = 2;
}

/* The user's turn t of conversation i appended to its context. */
static void add_user_turn(conv_t *c, int i, int t)
{
    for (int k = 0; k < N_USER; k++)
        c->ctx[c->n_ctx++] = (int32_t)(100 + (i * 13 + t * 5 + k * 3) % 150);
}

static void add_answer(conv_t *c, const sd_gen_result_t *r)
{
    memcpy(c->ctx + c->n_ctx, r->tokens, r->n_tokens * sizeof *r->tokens);
    c->n_ctx += r->n_tokens;
}

static sd_engine_t *engine_spec(sd_model_t *m, sd_drafter_kind_t kind, int prefix_cache,
                               size_t max_kv_positions)
{
    sd_engine_params_t p;
    sd_engine_params_default(&p);
    p.model = m;
    p.spec = spec_of(kind);
    p.max_active = N_CONV;
    p.prefix_cache = prefix_cache;
    p.max_kv_positions = max_kv_positions;
    p.load_aware_drafts = !no_load_aware;
    sd_engine_t *e = NULL;
    cr_assert_eq(sd_engine_create(&p, &e), SD_OK, "engine: %s", sd_last_error());
    return e;
}

static sd_engine_t *engine_new(sd_model_t *m, int prefix_cache, size_t max_kv_positions)
{
    return engine_spec(m, SD_DRAFTER_NGRAM, prefix_cache, max_kv_positions);
}

/* Every conversation's turns: all conversations' turn t submitted together (together = 1),
 * or each conversation alone, turn after turn. */
static void run_conversations(sd_engine_t *e, conv_t *convs, int together)
{
    for (int i = 0; i < N_CONV; i++) conv_init(&convs[i], i);
    int order_outer = together ? N_TURNS : N_CONV, order_inner = together ? N_CONV : N_TURNS;
    for (int a = 0; a < order_outer; a++) {
        sd_request_t *req[N_CONV];
        for (int b = 0; b < order_inner; b++) {
            int i = together ? b : a, t = together ? a : b;
            conv_t *c = &convs[i];
            add_user_turn(c, i, t);
            sd_request_t **slot = &req[together ? b : 0];
            cr_assert_eq(sd_engine_submit(e, c->ctx, c->n_ctx, &c->config, NULL, NULL, slot),
                         SD_OK, "submit: %s", sd_last_error());
            if (!together) {
                cr_assert_eq(sd_request_wait(*slot, 120, &c->turns[t]), SD_OK, "%s", sd_last_error());
                sd_request_free(*slot);
                add_answer(c, &c->turns[t]);
            }
        }
        for (int b = 0; together && b < N_CONV; b++) {
            cr_assert_eq(sd_request_wait(req[b], 120, &convs[b].turns[a]), SD_OK, "%s",
                         sd_last_error());
            sd_request_free(req[b]);
            add_answer(&convs[b], &convs[b].turns[a]);
        }
    }
}

static void assert_same(const conv_t *got, const conv_t *want)
{
    for (int i = 0; i < N_CONV; i++)
        for (int t = 0; t < N_TURNS; t++) {
            const sd_gen_result_t *g = &got[i].turns[t], *w = &want[i].turns[t];
            cr_assert_eq(g->n_tokens, w->n_tokens, "conversation %d turn %d: %zu tokens, alone %zu",
                         i, t, g->n_tokens, w->n_tokens);
            cr_assert_eq(memcmp(g->tokens, w->tokens, g->n_tokens * sizeof *g->tokens), 0,
                         "conversation %d turn %d: tokens differ from the conversation alone", i, t);
            cr_assert_eq(memcmp(g->logprobs, w->logprobs, g->n_tokens * sizeof *g->logprobs), 0,
                         "conversation %d turn %d: logprobs differ", i, t);
            cr_assert_eq(memcmp(g->top_logprobs, w->top_logprobs,
                                g->n_tokens * 2 * sizeof *g->top_logprobs), 0,
                         "conversation %d turn %d: top logprobs differ", i, t);
        }
}

static void free_convs(conv_t *convs)
{
    for (int i = 0; i < N_CONV; i++)
        for (int t = 0; t < N_TURNS; t++) sd_gen_result_free(&convs[i].turns[t]);
}

/* The reference: each conversation alone, no prefix cache. */
static conv_t *reference_with(sd_model_t *m, sd_drafter_kind_t kind)
{
    conv_t *ref = calloc(N_CONV, sizeof *ref);
    sd_engine_t *e = engine_spec(m, kind, 0, 0);
    run_conversations(e, ref, 0);
    sd_engine_metrics_t mt;
    cr_assert_eq(sd_engine_get_metrics(e, &mt), SD_OK);
    cr_assert_eq(mt.cached_prompt_tokens, 0, "the cache is off: %llu tokens cached",
                 (unsigned long long)mt.cached_prompt_tokens);
    for (int i = 0; i < N_CONV; i++)
        for (int t = 0; t < N_TURNS; t++) cr_assert_eq(ref[i].turns[t].n_cached, 0);
    sd_engine_free(e);
    return ref;
}

static void finish_run(sd_engine_t *e, conv_t *got, conv_t *ref)
{
    sd_engine_free(e);
    free_convs(got);
    free_convs(ref);
    free(got);
    free(ref);
}

static void finish(sd_engine_t *e, sd_model_t *m, conv_t *got, conv_t *ref)
{
    finish_run(e, got, ref);
    sd_model_free(m);
}

static conv_t *reference(sd_model_t *m) { return reference_with(m, SD_DRAFTER_NGRAM); }

static uint64_t draft_forwards(const conv_t *convs)
{
    uint64_t n = 0;
    for (int i = 0; i < N_CONV; i++)
        for (int t = 0; t < N_TURNS; t++) n += convs[i].turns[t].stats.draft_forwards;
    return n;
}

/* Nothing held once every request ended; every block is cached or free. */
static void assert_no_leak(sd_engine_t *e, const char *what)
{
    sd_engine_metrics_t mt;
    cr_assert_eq(sd_engine_get_metrics(e, &mt), SD_OK);
    cr_assert_eq(mt.kv_blocks_used, 0, "%s: %d blocks still held", what, mt.kv_blocks_used);
    cr_assert_gt(mt.kv_blocks_cached + mt.kv_blocks_free, 0);
}

Test(engine_prefix, concurrent_conversations_equal_alone_without_cache, .timeout = 600)
{
    sd_model_t *m = load_synth();
    conv_t *ref = reference(m), *got = calloc(N_CONV, sizeof *got);
    sd_engine_t *e = engine_new(m, 1, 0);
    run_conversations(e, got, 1);
    assert_same(got, ref);
    size_t later_cached = 0;
    for (int i = 0; i < N_CONV; i++) {
        for (int t = 1; t < N_TURNS; t++) {
            cr_assert_lt(got[i].turns[t].n_cached, got[i].turns[t].n_prompt);
            cr_assert_eq(got[i].turns[t].n_cached % SD_KV_BLOCK, 0);
            later_cached += got[i].turns[t].n_cached;
        }
    }
    /* turn 2 on: at least the previous turn's prompt but its partial last block */
    cr_assert_geq(later_cached, (size_t)N_CONV * (N_TURNS - 1) * 32,
                  "only %zu prompt tokens of later turns came from the cache", later_cached);
    sd_engine_metrics_t mt;
    cr_assert_eq(sd_engine_get_metrics(e, &mt), SD_OK);
    cr_assert_geq(mt.cached_prompt_tokens, later_cached);
    assert_no_leak(e, "after the conversations");
    finish(e, m, got, ref);
}

Test(engine_prefix, tiny_cap_forces_evictions_and_keeps_results, .timeout = 600)
{
    sd_model_t *m = load_synth();
    conv_t *ref = reference(m), *got = calloc(N_CONV, sizeof *got);
    /* room for two requests at a time: finished conversations' blocks must be evicted */
    sd_engine_t *e = engine_new(m, 1, 2 * (MAX_CTX + MAX_TOKENS));
    run_conversations(e, got, 1);
    assert_same(got, ref);
    sd_engine_metrics_t mt;
    cr_assert_eq(sd_engine_get_metrics(e, &mt), SD_OK);
    cr_assert_gt(mt.kv_block_evictions, 0, "a tiny cap evicted nothing");
    cr_assert_gt(mt.cached_prompt_tokens, 0, "nothing reused under a tiny cap");
    assert_no_leak(e, "under a tiny cap");
    finish(e, m, got, ref);
}

Test(engine_prefix, cap_too_small_for_one_request_is_refused)
{
    sd_model_t *m = load_synth();
    sd_engine_t *e = engine_new(m, 1, 20);
    conv_t c;
    conv_init(&c, 0);
    sd_request_t *r = NULL;
    sd_status_t st = sd_engine_submit(e, c.ctx, c.n_ctx, &c.config, NULL, NULL, &r);
    cr_assert_eq(st, SD_ERR_CONTEXT_FULL, "got %s", sd_status_string(st));
    cr_assert_null(r);
    cr_assert_not_null(strstr(sd_last_error(), "at most 20"), "message: %s", sd_last_error());
    assert_no_leak(e, "after a refusal");
    sd_engine_free(e);
    sd_model_free(m);
}

/* The pool alone: a shared block is never written (copy on write after a rollback into it),
 * eviction takes the least recently used leaf, and a full pool refuses with a message. */
Test(engine_prefix, pool_copy_on_write_and_exhaustion)
{
    sd_model_t *m = load_synth();
    sd_kv_pool_t pool;
    cr_assert_eq(sd_kv_pool_init(&pool, m, 4, 1), SD_OK, "%s", sd_last_error());
    int32_t toks[48];
    for (int i = 0; i < 48; i++) toks[i] = i;
    sd_kv_cache_t a, b;
    cr_assert_eq(sd_kv_cache_init_pooled(&a, &pool, 48), SD_OK);
    cr_assert_eq(sd_kv_cache_prepare(&a, 32), SD_OK, "%s", sd_last_error());
    a.len = 32;
    sd_kv_cache_commit(&a, toks, 32);
    cr_assert_eq(sd_kv_cache_init_pooled(&b, &pool, 64), SD_OK);
    cr_assert_eq(sd_kv_cache_attach_prefix(&b, toks, 33), 32);
    cr_assert_eq(b.table[0], a.table[0]);
    cr_assert_eq(b.table[1], a.table[1]);
    /* b rolls back into the shared second block: writing there copies it first */
    cr_assert_eq(sd_kv_cache_truncate(&b, 20), SD_OK);
    cr_assert_eq(sd_kv_cache_prepare(&b, 21), SD_OK, "%s", sd_last_error());
    cr_assert_eq(b.table[0], a.table[0]);
    cr_assert_neq(b.table[1], a.table[1], "a shared block would be written");
    int held, cached, free_blocks;
    sd_kv_pool_counts(&pool, &held, &cached, &free_blocks);
    cr_assert_eq(held, 3);
    cr_assert_eq(free_blocks, 1);
    /* the pool has one block left: b asks for two more */
    cr_assert_eq(sd_kv_cache_prepare(&b, 64), SD_ERR_OUT_OF_MEMORY);
    cr_assert_not_null(strstr(sd_last_error(), "4 blocks"), "message: %s", sd_last_error());
    sd_kv_cache_free(&b, m);
    sd_kv_cache_free(&a, m);
    sd_kv_pool_counts(&pool, &held, &cached, &free_blocks);
    cr_assert_eq(held, 0);
    cr_assert_eq(cached, 2, "a's two registered blocks stay cached");
    sd_kv_pool_free(&pool);
    sd_model_free(m);
}

/* Drafters that run a model: layer-skip shares the target's cached blocks, a draft model
 * caches its own (fewer draft forwards for the same drafts); the same results as alone. */
Test(engine_prefix, model_drafters_equal_alone_without_cache, .timeout = 600)
{
    sd_model_t *m = load_synth();
    draft_model = load_synth_seeded(77, 1);
    const sd_drafter_kind_t kinds[] = {SD_DRAFTER_LAYERSKIP, SD_DRAFTER_MODEL};
    for (int k = 0; k < 2; k++) {
        conv_t *ref = reference_with(m, kinds[k]), *got = calloc(N_CONV, sizeof *got);
        sd_engine_t *e = engine_spec(m, kinds[k], 1, 0);
        run_conversations(e, got, 1);
        assert_same(got, ref);
        if (kinds[k] == SD_DRAFTER_MODEL)
            cr_assert_lt(draft_forwards(got), draft_forwards(ref),
                         "the draft model's prefill was not cached (%llu forwards, %llu alone)",
                         (unsigned long long)draft_forwards(got),
                         (unsigned long long)draft_forwards(ref));
        assert_no_leak(e, sd_drafter_kind_name(kinds[k]));
        finish_run(e, got, ref);
    }
    sd_model_free(draft_model);
    sd_model_free(m);
}

/* Per-request statistics against the engine's counters: drafted and accepted add up, and
 * the accepted-length histogram has one entry per step; returns the drafted nodes. */
static uint64_t assert_stats_add_up(sd_engine_t *e, const conv_t *convs, const char *what)
{
    uint64_t drafted = 0, accepted = 0, steps = 0;
    for (int i = 0; i < N_CONV; i++)
        for (int t = 0; t < N_TURNS; t++) {
            const sd_gen_stats_t *s = &convs[i].turns[t].stats;
            cr_assert_leq(s->accepted, s->drafted, "%s: conversation %d turn %d", what, i, t);
            drafted += s->drafted;
            accepted += s->accepted;
            steps += s->steps;
        }
    sd_engine_metrics_t mt;
    cr_assert_eq(sd_engine_get_metrics(e, &mt), SD_OK);
    cr_assert_eq(mt.drafted, drafted, "%s: engine %llu drafted, requests %llu", what,
                 (unsigned long long)mt.drafted, (unsigned long long)drafted);
    cr_assert_eq(mt.accepted, accepted, "%s: engine %llu accepted, requests %llu", what,
                 (unsigned long long)mt.accepted, (unsigned long long)accepted);
    cr_assert_eq(mt.accepted_len.count, steps, "%s: %llu steps observed, requests %llu", what,
                 (unsigned long long)mt.accepted_len.count, (unsigned long long)steps);
    return drafted;
}

/* Trees in the serving engine's batched step: 16 conversations at once (half greedy, half
 * sampled, logprobs on) with static, dynamic and n-gram trees, the prefix cache on and off,
 * give each conversation's tokens and logprobs exactly as target-only alone (deterministic
 * guesses keep sampled output target-only's); statistics add up, no block stays held.
 * Whole trees (load-aware drafts off), and trees cut to what the load pays for (on: fewer
 * nodes, the same tokens). */
Test(engine_prefix, batched_trees_equal_target_only_alone, .timeout = 900)
{
    sd_model_t *m = load_synth();
    draft_model = load_synth_seeded(77, 1);
    conv_t *ref = reference_with(m, SD_DRAFTER_NONE);
    struct { sd_drafter_kind_t kind; const char *shape; int cache, load_aware; } cases[] = {
        {SD_DRAFTER_NGRAM, "4x2x2x1", 1, 0},     {SD_DRAFTER_NGRAM, "dynamic:12", 0, 0},
        {SD_DRAFTER_LAYERSKIP, "4x2x2x1", 0, 0}, {SD_DRAFTER_LAYERSKIP, "dynamic:16", 1, 0},
        {SD_DRAFTER_MODEL, "2x2x2", 1, 0},       {SD_DRAFTER_LAYERSKIP, "4x2x2x1", 1, 1},
    };
    uint64_t whole = 0;
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char what[96];
        snprintf(what, sizeof what, "%s tree %s, cache %s, load-aware %s",
                 sd_drafter_kind_name(cases[k].kind), cases[k].shape,
                 cases[k].cache ? "on" : "off", cases[k].load_aware ? "on" : "off");
        tree_shape = cases[k].shape;
        no_load_aware = !cases[k].load_aware;
        conv_t *got = calloc(N_CONV, sizeof *got);
        sd_engine_t *e = engine_spec(m, cases[k].kind, cases[k].cache, 0);
        run_conversations(e, got, 1);
        assert_same(got, ref);
        uint64_t drafted = assert_stats_add_up(e, got, what);
        if (!cases[k].load_aware) cr_assert_gt(drafted, 0, "%s: no tree was drafted", what);
        if (k == 2) whole = drafted; /* layer-skip 4x2x2x1, whole trees */
        if (cases[k].load_aware)
            cr_assert_lt(drafted, whole, "%s: %llu nodes, whole trees %llu", what,
                         (unsigned long long)drafted, (unsigned long long)whole);
        if (cases[k].cache) assert_no_leak(e, what);
        sd_engine_free(e);
        free_convs(got);
        free(got);
    }
    tree_shape = NULL;
    no_load_aware = 0;
    free_convs(ref);
    free(ref);
    sd_model_free(draft_model);
    sd_model_free(m);
}

/* Sampled q-trees (children drawn from the drafter's q): their shape decides the sampled
 * tokens, so the load-aware cut leaves them whole; 16 conversations at once (load-aware
 * drafts on) give each conversation's tokens and logprobs as it alone with the same spec. */
Test(engine_prefix, batched_q_trees_equal_alone, .timeout = 900)
{
    sd_model_t *m = load_synth();
    tree_shape = "3x2x1";
    tree_sample_q = 1;
    conv_t *ref = reference_with(m, SD_DRAFTER_LAYERSKIP), *got = calloc(N_CONV, sizeof *got);
    sd_engine_t *e = engine_spec(m, SD_DRAFTER_LAYERSKIP, 1, 0);
    run_conversations(e, got, 1);
    assert_same(got, ref);
    cr_assert_gt(assert_stats_add_up(e, got, "q-trees"), 0, "no q-tree was drafted");
    assert_no_leak(e, "q-trees");
    tree_shape = NULL;
    tree_sample_q = 0;
    finish(e, m, got, ref);
}
