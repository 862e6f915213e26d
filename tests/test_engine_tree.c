/* Token trees end to end on the real SmolLM2: greedy tree output (static, dynamic and n-gram
 * trees, the layer-skip and the draft-model drafters) equals greedy target-only output token
 * for token, sampled output with deterministic guesses equals target-only sampling, logprobs
 * are the target's; bad tree specs are refused naming the value. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "specdec/specdec.h"
#include "support/test_util.h"

static sd_model_t *real_model(void)
{
    const char *path = sd_test_real_model();
    if (path == NULL) cr_skip_test("real model not found (run scripts/fetch-model.sh)");
    sd_model_params_t p;
    sd_model_params_default(&p);
    p.path = path;
    p.n_threads = 2;
    p.n_ctx = 512;
    p.device = "cpu";
    sd_model_t *m = NULL;
    cr_assert_eq(sd_model_load(&p, &m), SD_OK, "load %s: %s", path, sd_last_error());
    return m;
}

static const char *const prompts[] = {
    "def rename(old, new):\n    \"\"\"Rename the file old to new.\"\"\"\n    import os\n    os.rename(old, new)\n\n"
    "def copy(old, new):\n    \"\"\"Copy the file old to new.\"\"\"\n    import shutil\n",
    "The capital of France is Paris. The capital of Germany is Berlin. The capital of Italy is",
};

static size_t tokenize(sd_model_t *m, const char *text, int32_t *ids, size_t cap)
{
    size_t n = 0;
    cr_assert_eq(sd_tokenize(m, text, strlen(text), SD_TOKENIZE_ADD_BOS, ids, cap, &n), SD_OK);
    return n;
}

/* Generate with spec (NULL: target-only); the result is the caller's to free. */
static sd_gen_result_t run(sd_model_t *m, const int32_t *ids, size_t n, const sd_gen_config_t *c,
                           const sd_spec_config_t *spec)
{
    sd_gen_result_t r;
    sd_status_t st = spec ? sd_generate_speculative(m, ids, n, c, spec, NULL, NULL, &r)
                          : sd_generate(m, ids, n, c, NULL, NULL, &r);
    cr_assert_eq(st, SD_OK, "%s", sd_last_error());
    return r;
}

static void assert_same(const sd_gen_result_t *a, const sd_gen_result_t *b, const char *what)
{
    cr_assert_eq(a->n_tokens, b->n_tokens, "%s: %zu vs %zu tokens", what, a->n_tokens, b->n_tokens);
    for (size_t i = 0; i < a->n_tokens; i++)
        cr_assert_eq(a->tokens[i], b->tokens[i], "%s: token %zu differs (%d vs %d)", what, i,
                     a->tokens[i], b->tokens[i]);
}

static void tree_spec(sd_spec_config_t *s, sd_drafter_kind_t kind, const char *shape)
{
    sd_spec_config_default(s);
    s->drafter = kind;
    s->k = 4;
    cr_assert_eq(sd_spec_parse_tree(shape, s), SD_OK, "%s", sd_last_error());
}

Test(engine_tree, greedy_trees_equal_target_only, .timeout = 600)
{
    sd_model_t *m = real_model();
    sd_gen_config_t c;
    sd_gen_config_default(&c);
    c.temperature = 0.0f;
    c.max_tokens = 40;
    c.ignore_eos = 1;
    struct { sd_drafter_kind_t kind; const char *shape; } cases[] = {
        {SD_DRAFTER_LAYERSKIP, "4x2x2x1"}, {SD_DRAFTER_LAYERSKIP, "dynamic:16"},
        {SD_DRAFTER_NGRAM, "4x2x2x1"},     {SD_DRAFTER_NGRAM, "dynamic:12"},
        {SD_DRAFTER_MODEL, "2x2x2"},
    };
    for (size_t p = 0; p < sizeof prompts / sizeof prompts[0]; p++) {
        int32_t ids[256];
        size_t n = tokenize(m, prompts[p], ids, 256);
        sd_gen_result_t base = run(m, ids, n, &c, NULL);
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            sd_spec_config_t s;
            tree_spec(&s, cases[i].kind, cases[i].shape);
            s.draft_model = cases[i].kind == SD_DRAFTER_MODEL ? m : NULL; /* itself: all accepted */
            sd_gen_result_t r = run(m, ids, n, &c, &s);
            char what[96];
            snprintf(what, sizeof what, "prompt %zu, %s tree %s", p,
                     sd_drafter_kind_name(cases[i].kind), cases[i].shape);
            assert_same(&base, &r, what);
            cr_assert(r.stats.drafted > 0, "%s: nothing drafted", what);
            if (p == 0 || cases[i].kind == SD_DRAFTER_MODEL)
                cr_assert(r.stats.accepted > 0, "%s: nothing accepted", what);
            if (cases[i].kind == SD_DRAFTER_MODEL) /* the target drafting for itself */
                cr_assert(r.stats.mean_accepted_len > 3.0, "%s: mean accepted length %.2f", what,
                          r.stats.mean_accepted_len);
            sd_gen_result_free(&r);
        }
        sd_gen_result_free(&base);
    }
    sd_model_free(m);
}

/* Deterministic guesses (--tree-sample top): the target's own draw picks the child, so sampled output (and the
 * logprobs, the target's rows of the kept path) are target-only's exactly. */
Test(engine_tree, sampled_trees_equal_target_only_sampling, .timeout = 600)
{
    sd_model_t *m = real_model();
    sd_gen_config_t c;
    sd_gen_config_default(&c);
    c.temperature = 0.7f;
    c.max_tokens = 32;
    c.ignore_eos = 1;
    c.logprobs = 1;
    c.top_logprobs = 2;
    int32_t ids[256];
    size_t n = tokenize(m, prompts[0], ids, 256);
    for (uint64_t seed = 1; seed <= 3; seed++) {
        c.seed = seed;
        sd_gen_result_t base = run(m, ids, n, &c, NULL);
        const char *shapes[] = {"3x2x1", "dynamic:10"};
        for (int i = 0; i < 2; i++) {
            sd_spec_config_t s;
            tree_spec(&s, SD_DRAFTER_LAYERSKIP, shapes[i]);
            s.tree_sample = SD_TREE_SAMPLE_TOP; /* q-trees: tests/test_engine_tree_sampled.c */
            sd_gen_result_t r = run(m, ids, n, &c, &s);
            assert_same(&base, &r, shapes[i]);
            for (size_t t = 0; t < r.n_tokens; t++)
                cr_assert(memcmp(&base.logprobs[t], &r.logprobs[t], sizeof(float)) == 0 &&
                          base.top_tokens[2 * t] == r.top_tokens[2 * t],
                          "seed %llu %s: logprobs of token %zu differ", (unsigned long long)seed,
                          shapes[i], t);
            sd_gen_result_free(&r);
        }
        sd_gen_result_free(&base);
    }
    sd_model_free(m);
}

Test(engine_tree, bad_tree_specs_name_the_value, .timeout = 60)
{
    sd_spec_config_t s;
    sd_spec_config_default(&s);
    struct { const char *text, *want; } bad[] = {
        {"0x2", "width '0' at level 1"}, {"4x0", "width '0' at level 2"},
        {"8x8x8", "has 584 nodes, more than 64"}, {"dynamic:0", "'0' must be in [1, 64]"},
        {"dynamic:65", "'65' must be in [1, 64]"}, {"4y2", "'y'"}, {"", "width ''"},
        {"1x1x1x1x1x1x1x1x1x1x1x1x1x1x1x1x1", "more than 16 levels"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(sd_spec_parse_tree(bad[i].text, &s), SD_ERR_INVALID_ARG, "'%s'", bad[i].text);
        cr_assert(strstr(sd_last_error(), bad[i].want) != NULL, "'%s': %s", bad[i].text,
                  sd_last_error());
        cr_assert_eq(s.tree_levels + s.tree_budget, 0, "'%s' changed the spec", bad[i].text);
    }
    cr_assert_eq(sd_spec_parse_tree("4x2x2x1", &s), SD_OK);
    cr_assert_eq(s.tree_levels, 4);
    cr_assert_eq(sd_spec_tree_nodes(&s), 4 + 8 + 16 + 16);
    cr_assert_eq(sd_spec_parse_tree("chain", &s), SD_OK);
    cr_assert_eq(sd_spec_tree_nodes(&s), 0);

    /* set directly: checked when a generation starts */
    sd_model_t *m = real_model();
    int32_t ids[8];
    size_t n = tokenize(m, "Hello", ids, 8);
    sd_gen_config_t c;
    sd_gen_config_default(&c);
    c.max_tokens = 4;
    sd_spec_config_default(&s);
    s.drafter = SD_DRAFTER_NGRAM;
    s.tree_budget = 100;
    sd_gen_result_t r;
    cr_assert_eq(sd_generate_speculative(m, ids, n, &c, &s, NULL, NULL, &r), SD_ERR_INVALID_ARG);
    cr_assert(strstr(sd_last_error(), "tree_budget = 100") != NULL, "%s", sd_last_error());
    s.tree_budget = 0;
    s.tree_levels = 2;
    s.tree_width[0] = 3; /* tree_width[1] = 0 */
    cr_assert_eq(sd_generate_speculative(m, ids, n, &c, &s, NULL, NULL, &r), SD_ERR_INVALID_ARG);
    cr_assert(strstr(sd_last_error(), "tree_width[1] = 0") != NULL, "%s", sd_last_error());
    sd_model_free(m);
}

/* ---- a drafter of the caller's own proposing trees ---------------------------------- */

/* Knows the target's output (future); proposes a wrong token, then the right chain as its
 * sibling; bad = 1: a tree with a forward parent. */
typedef struct tree_oracle {
    const int32_t *future;
    size_t n_future, n_prompt;
    int bad, paths, from_tree;
    size_t pos; /* tokens generated so far */
} tree_oracle_t;

static sd_status_t oracle_propose(void *state, const sd_draft_query_t *q, sd_draft_proposal_t *out)
{
    tree_oracle_t *o = state;
    size_t at = q->n_context - o->n_prompt;
    int n = 0;
    cr_assert_not_null(out->parent, "a tree generation hands out parents");
    if (at >= o->n_future) return SD_OK;
    out->tokens[n] = (o->future[at] + 1) % 1000;
    out->parent[n++] = -1;
    for (int d = 0; d < q->k && at + (size_t)d < o->n_future && n < out->capacity; d++, n++) {
        out->tokens[n] = o->future[at + (size_t)d];
        out->parent[n] = d == 0 ? -1 : n - 1;
    }
    if (o->bad) out->parent[1] = 3;
    out->n = n;
    out->is_tree = 1;
    return SD_OK;
}

static sd_status_t oracle_accept(void *state, const sd_draft_outcome_t *oc)
{
    tree_oracle_t *o = state;
    o->paths++;
    o->from_tree += oc->from_tree;
    for (int i = 0; i < oc->n_accepted; i++) /* the kept path is the target's output */
        cr_assert_eq(oc->accepted[i], o->future[o->pos + (size_t)i], "path token %d", i);
    o->pos += (size_t)oc->n_accepted + 1;
    return SD_OK;
}

Test(engine_tree, callback_drafter_trees, .timeout = 300)
{
    sd_model_t *m = real_model();
    int32_t ids[256];
    size_t n = tokenize(m, prompts[0], ids, 256);
    sd_gen_config_t c;
    sd_gen_config_default(&c);
    c.temperature = 0.0f;
    c.max_tokens = 24;
    c.ignore_eos = 1;
    sd_gen_result_t base = run(m, ids, n, &c, NULL);
    tree_oracle_t o = {base.tokens, base.n_tokens, n, 0, 0, 0, 0};
    sd_callback_drafter_t cb = {.user = &o, .propose = oracle_propose, .accept = oracle_accept};
    sd_spec_config_t s;
    tree_spec(&s, SD_DRAFTER_CALLBACK, "dynamic:8");
    s.callback = &cb;
    s.k = 3;
    sd_gen_result_t r = run(m, ids, n, &c, &s);
    assert_same(&base, &r, "callback tree");
    cr_assert(r.stats.mean_accepted_len > 3.0, "mean accepted length %.2f: the sibling chain "
              "should win every step", r.stats.mean_accepted_len);
    cr_assert(o.paths > 0 && o.from_tree == o.paths, "%d paths, %d from trees", o.paths, o.from_tree);
    sd_gen_result_free(&r);
    o.bad = 1;
    o.pos = 0;
    cr_assert_eq(sd_generate_speculative(m, ids, n, &c, &s, NULL, NULL, &r), SD_ERR_INVALID_ARG);
    cr_assert(strstr(sd_last_error(), "callback drafter") != NULL &&
              strstr(sd_last_error(), "parent 3") != NULL, "%s", sd_last_error());
    sd_gen_result_free(&r);
    sd_gen_result_free(&base);
    sd_model_free(m);
}
