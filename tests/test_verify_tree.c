/* Token-tree verification: tree checks naming the bad value, the ancestor mask,
 * greedy and deterministic trees picking the target's own path, a chain giving
 * sd_spec_verify's result bit for bit, and losslessness — over 40,000 seeds the
 * first three tokens generated with 3x2x1 trees whose children are drawn from a
 * deliberately different q follow the exact target-only joint distribution
 * (chi-square, p > 0.001), while planted bugs in the recursive rejection
 * sampling fail it (p < 1e-6). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "support/chi2.h"
#include "verify/philox.h"
#include "verify/sampler.h"
#include "verify/tree.h"

#define V 8
#define N_GEN 3
#define DEPTH 3
#define N_POS (N_GEN + DEPTH + 1)
#define PROMPT_TOKEN 2
#define N_SEEDS 40000
#define N_CELLS (V * V * V)
#define MAX_NODES 16

/* logits = f(position, previous token): the target's, and a flatter draft
 * peaked elsewhere. */
static float g_target[N_POS][V][V], g_draft[N_POS][V][V];

static void build_world(void)
{
    for (int pos = 0; pos < N_POS; pos++)
        for (int prev = 0; prev < V; prev++)
            for (int j = 0; j < V; j++) {
                uint64_t cell = ((uint64_t)pos * V + prev) * V + j;
                float t = 4.0f * sd_rng_uniform(4242, cell, SD_RNG_SAMPLE) - 2.0f;
                g_target[pos][prev][j] = t;
                g_draft[pos][prev][j] = 0.3f * t +
                                        1.5f * (sd_rng_uniform(99, cell, SD_RNG_DRAFT) - 0.5f) +
                                        (j == (prev + 3 * pos) % V ? 2.0f : 0.0f);
            }
}

typedef enum { BUG_NONE, BUG_NO_RESIDUAL_BETWEEN_SIBLINGS, BUG_FINAL_FROM_P } bug_t;

typedef sd_status_t (*tree_verify_fn)(bug_t, const sd_sampler_params_t *, uint64_t, uint64_t,
                                      const sd_token_tree_t *, const float *, const float *,
                                      sd_spec_scratch_t *, sd_tree_result_t *);

static sd_status_t library(bug_t bug, const sd_sampler_params_t *params, uint64_t seed,
                           uint64_t pos0, const sd_token_tree_t *t, const float *q,
                           const float *logits, sd_spec_scratch_t *s, sd_tree_result_t *out)
{
    (void)bug;
    return sd_tree_verify(params, seed, pos0, t, q, logits, V, s, out);
}

/* A test-local recursive rejection sampler, the library's but for one planted
 * bug. */
static sd_status_t reference(bug_t bug, const sd_sampler_params_t *params, uint64_t seed,
                             uint64_t pos0, const sd_token_tree_t *t, const float *q,
                             const float *logits, sd_spec_scratch_t *s, sd_tree_result_t *out)
{
    int node = -1, depth = 0;
    float p0[V], p[V], r[V];
    for (;;) {
        uint64_t pos = pos0 + depth;
        const float *qr = q + (node + 1) * V;
        sd_sampler_probs(params, logits + (node + 1) * V, V, &s->sampler, p0);
        memcpy(p, p0, sizeof p);
        int acc = -1, j = 0, any_child = 0;
        for (int c = node + 1; c < t->n && acc < 0; c++) {
            if (t->parent[c] != node)
                continue;
            if (any_child && bug != BUG_NO_RESIDUAL_BETWEEN_SIBLINGS) { /* planted: skipped */
                double sum = 0.0;
                for (int v = 0; v < V; v++)
                    sum += r[v] = p[v] > qr[v] ? p[v] - qr[v] : 0.0f;
                for (int v = 0; v < V; v++)
                    if (sum > 0)
                        p[v] = (float)(r[v] / sum);
            }
            any_child = 1;
            sd_rng_purpose_t pu =
                j == 0 ? SD_RNG_ACCEPT : (sd_rng_purpose_t)(SD_RNG_TREE_SIBLING + j - 1);
            j++;
            if ((double)sd_rng_uniform(seed, pos, pu) * qr[t->tokens[c]] <= p[t->tokens[c]])
                acc = c;
        }
        if (acc >= 0) {
            out->path[depth++] = node = acc;
            continue;
        }
        out->n_accepted = depth;
        if (!any_child) {
            out->next_token = sd_sample_from_probs(p, V, sd_rng_uniform(seed, pos, SD_RNG_SAMPLE));
            return SD_OK;
        }
        const float *from = bug == BUG_FINAL_FROM_P ? p0 : p; /* planted: the original p */
        double sum = 0.0;
        for (int v = 0; v < V; v++)
            sum += r[v] = from[v] > qr[v] ? from[v] - qr[v] : 0.0f;
        out->next_token =
            sd_sample_from_probs(sum > 0 ? r : from, V, sd_rng_uniform(seed, pos, SD_RNG_RESIDUAL));
        return SD_OK;
    }
}

/* A tree after `prev` at position pos0: `widths[d]` children per node of depth
 * d, drawn independently from the node's q row with the drafter's own uniforms
 * (or q's top tokens, deterministic, when sampled is 0); q[n + 1, V] and the
 * target rows logits[n + 1, V]. */
typedef struct tree_buf {
    int32_t tokens[MAX_NODES], parent[MAX_NODES], depth[MAX_NODES];
    float q[(MAX_NODES + 1) * V], logits[(MAX_NODES + 1) * V];
    sd_token_tree_t tree;
} tree_buf_t;

static void draft_tree(const sd_sampler_params_t *params, sd_sampler_scratch_t *ss, uint64_t seed,
                       int pos0, int32_t prev, const int *widths, int sampled, tree_buf_t *b)
{
    sd_philox_t rng;
    sd_philox_init(&rng, seed, 1000 + (uint64_t)pos0, 0);
    int n = 0;
    for (int row = 0; row <= n; row++) { /* rows in order: 0 the root, 1 + i node i */
        int d = row == 0 ? 0 : b->depth[row - 1];
        int32_t ctx = row == 0 ? prev : b->tokens[row - 1];
        int pos = pos0 + d;
        sd_sampler_probs(params, g_draft[pos][ctx], V, ss, b->q + row * V);
        memcpy(b->logits + row * V, g_target[pos][ctx], sizeof(float) * V);
        for (int c = 0; d < DEPTH && c < widths[d]; c++) {
            int32_t x = sampled ? sd_sample_from_probs(b->q + row * V, V, sd_philox_uniform(&rng))
                                : (sd_sample_greedy(g_draft[pos][ctx], V) + c) % V;
            b->tokens[n] = x;
            b->parent[n] = row - 1;
            b->depth[n++] = d + 1;
        }
    }
    b->tree = (sd_token_tree_t){.n = n, .tokens = b->tokens, .parent = b->parent};
}

/* The first N_GEN tokens generated with trees. */
static void tree_generate(tree_verify_fn verify, bug_t bug, const sd_sampler_params_t *params,
                          int sampled, sd_spec_scratch_t *s, uint64_t seed, int32_t *out)
{
    static const int widths[DEPTH] = {3, 2, 1};
    int n = 0;
    int32_t prev = PROMPT_TOKEN;
    while (n < N_GEN) {
        tree_buf_t b;
        draft_tree(params, &s->sampler, seed, n, prev, widths, sampled, &b);
        sd_tree_result_t r;
        cr_assert_eq(
            verify(bug, params, seed, (uint64_t)n, &b.tree, sampled ? b.q : NULL, b.logits, s, &r),
            SD_OK, "%s", sd_last_error());
        for (int i = 0; i <= r.n_accepted && n < N_GEN; i++)
            out[n++] = prev = i < r.n_accepted ? b.tokens[r.path[i]] : r.next_token;
    }
}

static void target_generate(const sd_sampler_params_t *params, sd_spec_scratch_t *s, uint64_t seed,
                            int32_t *out)
{
    float probs[V];
    int32_t prev = PROMPT_TOKEN;
    for (int pos = 0; pos < N_GEN; pos++)
        out[pos] = prev =
            sd_sample(params, g_target[pos][prev], V,
                      sd_rng_uniform(seed, (uint64_t)pos, SD_RNG_SAMPLE), &s->sampler, probs);
}

static double lossless_pvalue(tree_verify_fn verify, bug_t bug, const sd_sampler_params_t *params,
                              sd_spec_scratch_t *s, double *stat, int *df)
{
    static long counts[N_CELLS];
    static double expect[N_CELLS];
    float p0[V], p1[V], p2[V];
    memset(counts, 0, sizeof counts);
    sd_sampler_probs(params, g_target[0][PROMPT_TOKEN], V, &s->sampler, p0);
    for (int a = 0; a < V; a++) {
        sd_sampler_probs(params, g_target[1][a], V, &s->sampler, p1);
        for (int b = 0; b < V; b++) {
            sd_sampler_probs(params, g_target[2][b], V, &s->sampler, p2);
            for (int c = 0; c < V; c++)
                expect[(a * V + b) * V + c] = (double)p0[a] * p1[b] * p2[c];
        }
    }
    for (uint64_t seed = 1; seed <= N_SEEDS; seed++) {
        int32_t t[N_GEN];
        tree_generate(verify, bug, params, 1, s, seed, t);
        counts[(t[0] * V + t[1]) * V + t[2]]++;
    }
    return sd_test_chi2_gof(counts, expect, N_CELLS, N_SEEDS, df, stat);
}

static sd_spec_scratch_t g_s;
static void setup(void)
{
    build_world();
    cr_assert_eq(sd_spec_scratch_init(&g_s, V), SD_OK);
}
static void teardown(void)
{
    sd_spec_scratch_free(&g_s);
}

TestSuite(verify_tree, .init = setup, .fini = teardown);

Test(verify_tree, bad_trees_name_the_value, .timeout = 10)
{
    int32_t tok[3] = {1, 2, 3}, par[3] = {-1, 0, 0}, depth[3];
    sd_token_tree_t t = {.n = 3, .tokens = tok, .parent = par};
    cr_assert_eq(sd_tree_check(&t, V, depth), SD_OK);
    cr_assert(depth[0] == 1 && depth[1] == 2 && depth[2] == 2);
    par[2] = 2;
    cr_assert_eq(sd_tree_check(&t, V, NULL), SD_ERR_INVALID_ARG);
    cr_assert(strstr(sd_last_error(), "node 2 has parent 2"), "%s", sd_last_error());
    par[2] = -2;
    cr_assert_eq(sd_tree_check(&t, V, NULL), SD_ERR_INVALID_ARG);
    par[2] = 1;
    tok[1] = V;
    cr_assert_eq(sd_tree_check(&t, V, NULL), SD_ERR_INVALID_ARG);
    cr_assert(strstr(sd_last_error(), "node 1 has token 8"), "%s", sd_last_error());
    int32_t chain_tok[SD_TREE_MAX_DEPTH + 1] = {0}, chain_par[SD_TREE_MAX_DEPTH + 1];
    for (int i = 0; i <= SD_TREE_MAX_DEPTH; i++)
        chain_par[i] = i - 1;
    sd_token_tree_t deep = {.n = SD_TREE_MAX_DEPTH + 1, .tokens = chain_tok, .parent = chain_par};
    cr_assert_eq(sd_tree_check(&deep, V, NULL), SD_ERR_INVALID_ARG);
    cr_assert(strstr(sd_last_error(), "depth 17"), "%s", sd_last_error());
    t.n = SD_TREE_MAX_NODES + 1;
    cr_assert_eq(sd_tree_check(&t, V, NULL), SD_ERR_INVALID_ARG);
}

Test(verify_tree, ancestor_mask, .timeout = 10)
{
    /* root -> 0 -> {2, 3}; root -> 1 -> 4 -> 5 */
    int32_t tok[6] = {0}, par[6] = {-1, -1, 0, 0, 1, 4};
    sd_token_tree_t t = {.n = 6, .tokens = tok, .parent = par};
    uint8_t m[36];
    sd_tree_ancestor_mask(&t, m);
    static const uint8_t want[36] = {1,      0, 0, 0, 0, 0, /**/ 0, 1, 0, 0, 0, 0,
                                     /**/ 1, 0, 1, 0, 0, 0, 1,      0, 0, 1, 0, 0,
                                     /**/ 0, 1, 0, 0, 1, 0, /**/ 0, 1, 0, 0, 1, 1};
    cr_assert_arr_eq(m, want, sizeof want);
}

Test(verify_tree, greedy_follows_the_argmax_path, .timeout = 10)
{
    /* argmax after the root is 4, after node 1 (token 4) it is 6, after node 3 it
   * is 1 */
    int32_t tok[5] = {2, 4, 7, 6, 6}, par[5] = {-1, -1, 0, 1, 1};
    sd_token_tree_t t = {.n = 5, .tokens = tok, .parent = par};
    float logits[6 * V] = {0};
    logits[0 * V + 4] = 1.0f;
    logits[2 * V + 6] = 1.0f; /* row 2: after node 1 */
    logits[4 * V + 1] = 1.0f; /* row 4: after node 3 (the first child holding 6) */
    sd_sampler_params_t greedy = {.temperature = 0.0f, .top_p = 1.0f};
    sd_tree_result_t r;
    cr_assert_eq(sd_tree_verify(&greedy, 1, 0, &t, NULL, logits, V, &g_s, &r), SD_OK);
    cr_assert_eq(r.n_accepted, 2);
    cr_assert(r.path[0] == 1 && r.path[1] == 3 && r.next_token == 1);
    sd_token_tree_t empty = {0};
    cr_assert_eq(sd_tree_verify(&greedy, 1, 0, &empty, NULL, logits, V, &g_s, &r), SD_OK);
    cr_assert(r.n_accepted == 0 && r.next_token == 4);
}

/* A chain as a tree gives sd_spec_verify's result, greedy, deterministic and
 * sampled. */
Test(verify_tree, chain_equals_the_chain_verifier, .timeout = 60)
{
    static const int widths[DEPTH] = {1, 1, 1};
    sd_sampler_params_t modes[3] = {{.temperature = 0.0f, .top_p = 1.0f},
                                    {.temperature = 0.8f, .top_p = 1.0f},
                                    {.temperature = 1.0f, .top_p = 0.9f}};
    for (int m = 0; m < 3; m++)
        for (uint64_t seed = 1; seed <= 3000; seed++) {
            tree_buf_t b;
            int32_t prev = (int32_t)(seed % V);
            draft_tree(&modes[m], &g_s.sampler, seed, 1, prev, widths, m != 1, &b);
            const float *q = m == 1 ? NULL : b.q;
            sd_tree_result_t tr;
            sd_spec_result_t cr;
            cr_assert_eq(sd_tree_verify(&modes[m], seed, 1, &b.tree, q, b.logits, V, &g_s, &tr),
                         SD_OK);
            cr_assert_eq(
                sd_spec_verify(&modes[m], seed, 1, b.tokens, q, b.tree.n, b.logits, V, &g_s, &cr),
                SD_OK);
            cr_assert(tr.n_accepted == cr.n_accepted && tr.next_token == cr.next_token,
                      "mode %d seed %llu: tree %d/%d, chain %d/%d", m, (unsigned long long)seed,
                      tr.n_accepted, tr.next_token, cr.n_accepted, cr.next_token);
        }
}

/* Deterministic trees (q's top tokens, no q given) reproduce target-only
 * sampling exactly. */
Test(verify_tree, deterministic_trees_reproduce_target_sampling, .timeout = 60)
{
    sd_sampler_params_t p = {.temperature = 0.9f, .top_p = 1.0f};
    for (uint64_t seed = 1; seed <= 2000; seed++) {
        int32_t a[N_GEN], b[N_GEN];
        tree_generate(library, BUG_NONE, &p, 0, &g_s, seed, a);
        target_generate(&p, &g_s, seed, b);
        cr_assert_arr_eq(a, b, sizeof a, "seed %llu", (unsigned long long)seed);
    }
}

Test(verify_tree, reference_equals_library, .timeout = 60)
{
    sd_sampler_params_t p = {.temperature = 1.0f, .top_p = 1.0f};
    for (uint64_t seed = 1; seed <= 3000; seed++) {
        int32_t a[N_GEN], b[N_GEN];
        tree_generate(library, BUG_NONE, &p, 1, &g_s, seed, a);
        tree_generate(reference, BUG_NONE, &p, 1, &g_s, seed, b);
        cr_assert_arr_eq(a, b, sizeof a, "seed %llu", (unsigned long long)seed);
    }
}

Test(verify_tree, recursive_rejection_sampling_is_lossless, .timeout = 180)
{
    sd_sampler_params_t cfg[2] = {{.temperature = 1.0f, .top_p = 1.0f},
                                  {.temperature = 0.7f, .top_p = 0.9f}};
    for (int c = 0; c < 2; c++) {
        double stat;
        int df;
        double p = lossless_pvalue(library, BUG_NONE, &cfg[c], &g_s, &stat, &df);
        fprintf(stderr, "tree 3x2x1 T=%.1f: chi-square %.1f, df %d, p = %.4f\n",
                (double)cfg[c].temperature, stat, df, p);
        cr_assert(p > 0.001, "T=%.1f: p = %g", (double)cfg[c].temperature, p);
    }
}

Test(verify_tree, planted_bugs_are_detected, .timeout = 180)
{
    sd_sampler_params_t p = {.temperature = 1.0f, .top_p = 1.0f};
    const struct {
        bug_t bug;
        const char *name;
    } bugs[] = {
        {BUG_NO_RESIDUAL_BETWEEN_SIBLINGS, "siblings tested against p"},
        {BUG_FINAL_FROM_P, "final residual of the original p"},
    };
    for (size_t i = 0; i < sizeof bugs / sizeof bugs[0]; i++) {
        double stat;
        int df;
        double pv = lossless_pvalue(reference, bugs[i].bug, &p, &g_s, &stat, &df);
        fprintf(stderr, "planted '%s': chi-square %.1f, df %d, p = %.3g\n", bugs[i].name, stat, df,
                pv);
        cr_assert(pv < 1e-6, "planted bug '%s' went unnoticed: p = %g", bugs[i].name, pv);
    }
}
