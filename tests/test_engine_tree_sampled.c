/* Sampled token trees end to end (sd_generate_ex, a draft model drawing a static tree's
 * children from its q, SpecInfer's recursive rejection sampling): the first three tokens
 * follow the exact target-only joint distribution (chi-square, p > 0.001) and planted bugs
 * in what the drafter hands the verifier fail it (p < 1e-6); the same seed gives the same
 * tokens at any thread count; a width-1 tree is the chain bit for bit. Tiny models. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "draft/drafter_impl.h"
#include "draft/model_drafter.h"
#include "engine/speculative.h"
#include "model/model.h"
#include "specdec/specdec.h"
#include "support/chi2.h"
#include "support/tiny_models.h"

#define V SD_TINY_VOCAB
#define SEEDS 20000

static const int32_t k_prompt[] = {3, 1, 4, 1, 5};
#define PROMPT_N 5

/* ---- a drafter wrapper that plants a bug in the tree it hands over ------------------- */

typedef enum { BUG_NONE, BUG_ROOT_Q_EVERYWHERE, BUG_GREEDY_LEAVES, BUG_Q_WITHOUT_TEMP } bug_t;

typedef struct planted {
    sd_drafter_t base;
    sd_drafter_t *inner;
    bug_t bug;
    float temperature;
} planted_t;

static planted_t *as_planted(const sd_drafter_t *d) { return (planted_t *)d; }
static sd_status_t p_begin(sd_drafter_t *d, const int32_t *t, int n) { return sd_drafter_begin(as_planted(d)->inner, t, n); }
static sd_status_t p_propose(sd_drafter_t *d, const sd_draft_request_t *r, sd_draft_out_t *o) { return sd_drafter_propose(as_planted(d)->inner, r, o); }
static sd_status_t p_accept(sd_drafter_t *d, int n, int32_t next) { return sd_drafter_accept(as_planted(d)->inner, n, next); }
static sd_status_t p_rollback(sd_drafter_t *d, int n) { return sd_drafter_rollback(as_planted(d)->inner, n); }
static void p_reset(sd_drafter_t *d) { sd_drafter_reset(as_planted(d)->inner); }
static void p_destroy(sd_drafter_t *d) { sd_drafter_free(as_planted(d)->inner); free(d); }
static sd_status_t p_accept_path(sd_drafter_t *d, const int32_t *t, int n, int32_t next) { return sd_drafter_accept_path(as_planted(d)->inner, t, n, next); }

/* Every leaf's token becomes its parent's most probable one (q rows kept). */
static void leaves_to_argmax(sd_draft_tree_t *t)
{
    for (int i = 0; i < t->n; i++) {
        int leaf = 1;
        for (int c = i + 1; c < t->n && leaf; c++) leaf = t->parent[c] != i;
        const float *q = t->q + (size_t)(1 + t->parent[i]) * V;
        for (int j = 0; leaf && j < V; j++)
            if (q[j] > q[t->tokens[i]]) t->tokens[i] = j;
    }
}

static sd_status_t p_propose_tree(sd_drafter_t *d, const sd_draft_request_t *r,
                                  const sd_tree_shape_t *shape, sd_draft_tree_t *t)
{
    planted_t *pl = as_planted(d);
    sd_status_t st = sd_drafter_propose_tree(pl->inner, r, shape, t);
    if (st != SD_OK || !t->has_q) return st;
    if (pl->bug == BUG_ROOT_Q_EVERYWHERE) /* planted: every node's children tested against q row 0 */
        for (int i = 0; i < t->n; i++) memcpy(t->q + (size_t)(1 + i) * V, t->q, V * sizeof *t->q);
    if (pl->bug == BUG_GREEDY_LEAVES) /* planted: top guesses verified as draws from q */
        leaves_to_argmax(t);
    if (pl->bug == BUG_Q_WITHOUT_TEMP) /* planted: rows of softmax(logits), before temperature */
        for (int r0 = 0; r0 <= t->n; r0++) {
            float *q = t->q + (size_t)r0 * V;
            double sum = 0.0;
            for (int j = 0; j < V; j++) sum += pow(q[j], pl->temperature);
            for (int j = 0; j < V; j++) q[j] = (float)(pow(q[j], pl->temperature) / sum);
        }
    return SD_OK;
}

static const sd_drafter_ops_t planted_ops = {
    .name = "planted", .begin = p_begin, .propose = p_propose, .accept = p_accept,
    .rollback = p_rollback, .reset = p_reset, .destroy = p_destroy,
    .propose_tree = p_propose_tree, .accept_path = p_accept_path,
};

/* ---- generations ----------------------------------------------------------------------- */

static sd_gen_config_t config(float temperature, float top_p, uint64_t seed)
{
    sd_gen_config_t c;
    sd_gen_config_default(&c);
    c.temperature = temperature;
    c.top_k = 0;
    c.top_p = top_p;
    c.min_p = 0.0f;
    c.max_tokens = 48; /* room for the whole tree; the callback stops at 3 tokens */
    c.seed = seed;
    c.ignore_eos = 1;
    return c;
}

static sd_spec_config_t tree_spec(sd_model_t *draft, const char *shape)
{
    sd_spec_config_t s;
    sd_spec_config_default(&s);
    s.drafter = SD_DRAFTER_MODEL;
    s.draft_model = draft;
    s.k = 3;
    s.adaptive = 0;
    s.tree_sample = SD_TREE_SAMPLE_Q;
    cr_assert_eq(sd_spec_parse_tree(shape, &s), SD_OK, "%s", sd_last_error());
    return s;
}

static int stop_at_three(void *user, int32_t token, const char *text, size_t len)
{
    (void)text, (void)len;
    return token >= 0 && ++*(int *)user >= 3;
}

/* The first three tokens of a generation, through drafter d (NULL: the spec's own). */
static sd_gen_result_t generate3(sd_model_t *m, const sd_gen_config_t *c, const sd_spec_config_t *s,
                                 sd_drafter_t *d)
{
    sd_gen_options_t o = {.drafter = d};
    sd_gen_result_t r;
    int seen = 0;
    sd_status_t st = sd_generate_ex(m, k_prompt, PROMPT_N, c, s, &o, stop_at_three, &seen, &r);
    cr_assert_eq(st, SD_OK, "generate: %s", sd_last_error());
    cr_assert_geq(r.n_tokens, 3);
    return r;
}

static sd_gen_result_t generate(sd_model_t *m, const sd_gen_config_t *c, const sd_spec_config_t *s)
{
    sd_gen_result_t r;
    cr_assert_eq(sd_generate_speculative(m, k_prompt, PROMPT_N, c, s, NULL, NULL, &r), SD_OK, "%s",
                 sd_last_error());
    return r;
}

static void assert_same(const sd_gen_result_t *a, const sd_gen_result_t *b, const char *what,
                        uint64_t seed)
{
    cr_assert_eq(a->n_tokens, b->n_tokens, "%s, seed %llu: %zu vs %zu tokens", what,
                 (unsigned long long)seed, a->n_tokens, b->n_tokens);
    for (size_t i = 0; i < a->n_tokens; i++)
        cr_assert_eq(a->tokens[i], b->tokens[i], "%s, seed %llu: token %zu differs", what,
                     (unsigned long long)seed, i);
}

/* The least chi-square p-value of `seeds` generations' first three tokens (and their
 * marginals) against target-only sampling; *acceptance: accepted / drafted nodes. */
static double lossless_p(const char *shape, long seeds, float temperature, float top_p, bug_t bug,
                         double *acceptance)
{
    sd_model_t *target = sd_tiny_model(11, 0.6f, 1), *draft = sd_tiny_model(11, 0.35f, 1);
    sd_gen_config_t c = config(temperature, top_p, 0);
    sd_spec_config_t s = tree_spec(draft, shape);
    static double joint[SD_TINY_CELLS];
    static long counts[SD_TINY_CELLS];
    sd_tiny_joint(target, &c, k_prompt, PROMPT_N, joint);
    memset(counts, 0, sizeof counts);
    planted_t *pl = calloc(1, sizeof *pl);
    cr_assert_not_null(pl);
    *pl = (planted_t){{&planted_ops}, NULL, bug, temperature};
    cr_assert_eq(sd_drafter_model_new(draft, target, &pl->inner), SD_OK, "%s", sd_last_error());
    uint64_t drafted = 0, accepted = 0;
    for (long seed = 0; seed < seeds; seed++) {
        c.seed = (uint64_t)seed;
        sd_gen_result_t r = generate3(target, &c, &s, &pl->base);
        counts[(r.tokens[0] * V + r.tokens[1]) * V + r.tokens[2]]++;
        drafted += r.stats.drafted;
        accepted += r.stats.accepted;
        sd_gen_result_free(&r);
    }
    /* the joint, and the marginals a bug at one level shows more plainly (the first token
     * is the target's own draw: the prompt's step drafts nothing) */
    static const struct { const char *what; int div, mod; } views[] = {
        {"tokens 1-3", 1, SD_TINY_CELLS}, {"tokens 1-2", V, V * V}, {"token 2", V, V}, {"token 3", 1, V}};
    double p_min = 1.0;
    *acceptance = (double)accepted / (double)drafted;
    for (size_t v = 0; v < sizeof views / sizeof views[0]; v++) {
        static double want[SD_TINY_CELLS];
        static long got[SD_TINY_CELLS];
        int cells = views[v].mod, df = 0;
        memset(want, 0, sizeof want);
        memset(got, 0, sizeof got);
        for (int cell = 0; cell < SD_TINY_CELLS; cell++) {
            want[cell / views[v].div % cells] += joint[cell];
            got[cell / views[v].div % cells] += counts[cell];
        }
        double stat, p = sd_test_chi2_gof(got, want, cells, seeds, &df, &stat);
        cr_log_info("%s, T %.1f top-p %.1f bug %d, %s: chi-square %.1f, df %d, p = %.3g; acceptance "
                    "%.3f", shape, (double)temperature, (double)top_p, (int)bug, views[v].what,
                    stat, df, p, *acceptance);
        p_min = p < p_min ? p : p_min;
    }
    sd_drafter_free(&pl->base);
    sd_model_free(draft);
    sd_model_free(target);
    return p_min;
}

Test(engine_tree_sampled, lossless, .timeout = 600)
{
    const struct { float t, top_p; } cases[] = {{1.0f, 1.0f}, {0.7f, 1.0f}, {1.0f, 0.8f}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        double acceptance;
        double p = lossless_p("3x2x1", SEEDS, cases[i].t, cases[i].top_p, BUG_NONE, &acceptance);
        cr_assert_gt(p, 0.001, "T %.1f top-p %.1f: sampled trees do not follow the target: p = %g",
                     (double)cases[i].t, (double)cases[i].top_p, p);
        /* rejection sampling really ran: many nodes accepted, many rejected */
        cr_assert(acceptance > 0.05 && acceptance < 0.9, "acceptance %.3f", acceptance);
    }
}

static void assert_planted_fails(bug_t bug, const char *name)
{
    double acceptance;
    double p = lossless_p("3x2x1", SEEDS, 0.7f, 1.0f, bug, &acceptance);
    cr_assert_lt(p, 1e-6, "planted bug '%s' went unnoticed: p = %g", name, p);
}

Test(engine_tree_sampled, planted_wrong_q_row_fails, .timeout = 600)
{
    assert_planted_fails(BUG_ROOT_Q_EVERYWHERE, "every node verified against the root's q row");
}

Test(engine_tree_sampled, planted_greedy_leaves_fail, .timeout = 600)
{
    assert_planted_fails(BUG_GREEDY_LEAVES, "leaves the top guess, verified as drawn from q");
}

Test(engine_tree_sampled, planted_q_without_temperature_fails, .timeout = 600)
{
    assert_planted_fails(BUG_Q_WITHOUT_TEMP, "q rows before the temperature");
}

/* Same seed, same tokens — at 1 and 2 threads; a 1x1x1 tree draws and verifies exactly the
 * non-adaptive chain of k = 3. */
Test(engine_tree_sampled, reproducible_and_chain_equal, .timeout = 300)
{
    sd_model_t *target = sd_tiny_model(11, 0.6f, 1), *draft = sd_tiny_model(11, 0.35f, 1);
    sd_model_t *target2 = sd_tiny_model(11, 0.6f, 2), *draft2 = sd_tiny_model(11, 0.35f, 2);
    sd_spec_config_t tree = tree_spec(draft, "3x2x1"), tree2 = tree_spec(draft2, "3x2x1"),
                     width1 = tree_spec(draft, "1x1x1"), chain = tree_spec(draft, "chain");
    int differ = 0;
    for (uint64_t seed = 0; seed < 40; seed++) {
        sd_gen_config_t c = config(0.8f, 1.0f, seed);
        c.max_tokens = 24;
        sd_gen_result_t a = generate(target, &c, &tree), b = generate(target2, &c, &tree2);
        sd_gen_result_t again = generate(target, &c, &tree);
        cr_assert(a.stats.drafted > 0);
        assert_same(&a, &again, "the same seed twice", seed);
        assert_same(&a, &b, "1 and 2 threads", seed);
        sd_gen_result_t w = generate(target, &c, &width1), ch = generate(target, &c, &chain);
        assert_same(&w, &ch, "1x1x1 tree and chain", seed);
        for (size_t i = 0; i < a.n_tokens && !differ; i++) differ = a.tokens[i] != w.tokens[i];
        sd_gen_result_t *all[] = {&a, &b, &again, &w, &ch};
        for (int i = 0; i < 5; i++) sd_gen_result_free(all[i]);
    }
    cr_assert(differ, "the 3x2x1 tree gave the chain's tokens for every seed: the tree was not used");
    sd_model_t *models[] = {draft, target, draft2, target2};
    for (int i = 0; i < 4; i++) sd_model_free(models[i]);
}
