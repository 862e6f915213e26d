/* Draft and target groups under tensor parallelism: the target split over T ranks, a
 * draft model on the first D ranks (draft/group_drafter.h) — with the target's vocabulary,
 * or another one (xvocab) — or a caller's drafter on rank 0. Every rank must return the
 * same full result (tokens, text, stop reason, statistics), greedy output must equal
 * single-rank target-only output, and a rank that disagrees must be caught at the step
 * it diverged (SD_ERR_RANK_DIVERGENCE on every rank), keeping what was generated. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "comm/comm.h"
#include "engine/speculative.h"
#include "gguf/synthetic.h"
#include "support/ranks.h"
#include "support/test_util.h"

#define MAX_OUT 96

/* What a rank reports to the parent. */
typedef struct rank_result {
    int status;
    int n_tokens, stop_reason;
    int32_t tokens[MAX_OUT];
    uint64_t steps, drafted, accepted, draft_forwards;
    uint64_t hist[SD_SPEC_MAX_K + 1];
    char text_hash[17];
    char error[256];
    int barrier_status; /* a barrier over the world after the generation */
} rank_result_t;

typedef struct group_case {
    int target_ranks, draft_ranks;
    float temperature;
    int draft_missing_on; /* rank that passes no draft model (-1: none) */
    const char *fault;    /* SPECDEC_FAULT for the ranks, or NULL */
    int rank1_differs;    /* 1: rank 1 gets a shorter prompt; 2: rank 1 asks max_tokens 0;
                             3: rank 1 loads the target with a context of 40; 4: rank 1 runs
                             with SPECDEC_CHECK_CONSISTENCY=0 */
    int rank1_callback_stop; /* > 0: rank 1's token callback stops after this many tokens */
    sd_drafter_kind_t drafter; /* 0: SD_DRAFTER_MODEL; XVOCAB: a SentencePiece draft model
                                  (draft_ranks 0: on every rank); CALLBACK */
} group_case_t;

static char g_target_path[512], g_draft_path[512], g_xdraft_path[512];

static void write_models(void)
{
    sd_synth_spec_t s;
    sd_synth_spec_default(&s); /* 4 heads, 2 KV heads, vocab 320 */
    s.n_layer = 3;
    s.weight_scale = 0.08f;
    sd_test_tmp_path(g_target_path, sizeof g_target_path, "groups-target.gguf");
    cr_assert_eq(sd_synth_write_file(&s, g_target_path), SD_OK, "%s", sd_last_error());
    s.n_layer = 1; /* shares the target's first layer: some drafts accepted, some not */
    sd_test_tmp_path(g_draft_path, sizeof g_draft_path, "groups-draft.gguf");
    cr_assert_eq(sd_synth_write_file(&s, g_draft_path), SD_OK, "%s", sd_last_error());
    s.tokenizer = SD_SYNTH_TOKENIZER_LLAMA;
    s.n_vocab = 400;
    sd_test_tmp_path(g_xdraft_path, sizeof g_xdraft_path, "groups-xdraft.gguf");
    cr_assert_eq(sd_synth_write_file(&s, g_xdraft_path), SD_OK, "%s", sd_last_error());
}

/* A caller's drafter: the tokens that followed the latest earlier occurrence of the last
 * one. Ranks > 0 get one that fails if called: under TP only rank 0 proposes. */
static sd_status_t lookup_propose(void *state, const sd_draft_query_t *q, sd_draft_proposal_t *out)
{
    const int32_t *c = q->context;
    size_t n = q->n_context;
    for (size_t j = n - 1; j-- > 0 && out->n == 0;)
        if (c[j] == c[n - 1])
            for (size_t t = j + 1; t < n && out->n < q->k; t++) out->tokens[out->n++] = c[t];
    return SD_OK;
}

static sd_status_t poisoned_propose(void *state, const sd_draft_query_t *q, sd_draft_proposal_t *out)
{
    return SD_ERR_INTERNAL;
}

static const sd_callback_drafter_t k_lookup = {.propose = lookup_propose};
static const sd_callback_drafter_t k_poisoned = {.propose = poisoned_propose};

static sd_status_t load_ctx(const char *path, sd_comm_t *comm, int n_ctx, sd_model_t **out)
{
    sd_model_params_t p;
    sd_model_params_default(&p);
    p.path = path;
    p.n_threads = 1;
    p.n_ctx = n_ctx;
    p.comm = comm;
    return sd_model_load(&p, out);
}

static sd_status_t load(const char *path, sd_comm_t *comm, sd_model_t **out)
{
    return load_ctx(path, comm, 0, out);
}

static void gen_config(sd_gen_config_t *g, float temperature)
{
    sd_gen_config_default(g);
    g->max_tokens = 48;
    g->ignore_eos = 1;
    g->temperature = temperature;
    g->seed = 11;
}

static const int32_t k_prompt[] = {97, 98, 99, 97, 98, 99, 97, 98, 99, 100, 101};
#define N_PROMPT (sizeof k_prompt / sizeof k_prompt[0])

static void record(rank_result_t *o, sd_status_t st, const sd_gen_result_t *r)
{
    o->status = (int)st;
    o->n_tokens = (int)r->n_tokens;
    o->stop_reason = (int)r->stop_reason;
    for (size_t i = 0; i < r->n_tokens && i < MAX_OUT; i++) o->tokens[i] = r->tokens[i];
    o->steps = r->stats.steps;
    o->drafted = r->stats.drafted;
    o->accepted = r->stats.accepted;
    o->draft_forwards = r->stats.draft_forwards;
    memcpy(o->hist, r->stats.accepted_hist, sizeof o->hist);
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < r->text_len; i++) h = (h ^ (unsigned char)r->text[i]) * 1099511628211ull;
    snprintf(o->text_hash, sizeof o->text_hash, "%016llx", (unsigned long long)h);
    snprintf(o->error, sizeof o->error, "%s", st == SD_OK ? "" : sd_last_error());
}

/* A token callback that stops once it has seen *left tokens. */
static int stop_after(void *user, int32_t token, const char *text, size_t len)
{
    (void)text, (void)len;
    int *left = user;
    return token >= 0 && --*left == 0;
}

/* One rank: the target over the world, the draft model over the first D ranks. */
static int group_rank(int rank, int size, const char *job, void *arg, void *out, size_t cap)
{
    const group_case_t *gc = arg;
    rank_result_t *o = out;
    sd_comm_t *world = NULL, *dcomm = NULL;
    sd_model_t *target = NULL, *draft = NULL;
    sd_status_t st = sd_comm_intra_new(rank, size, job, &world);
    if (rank == 1 && gc->rank1_differs == 4) setenv("SPECDEC_CHECK_CONSISTENCY", "0", 1);
    if (st == SD_OK)
        st = load_ctx(g_target_path, world, rank == 1 && gc->rank1_differs == 3 ? 40 : 0, &target);
    if (st == SD_OK && gc->draft_ranks > 1) st = sd_comm_split_first(world, gc->draft_ranks, &dcomm);
    int xvocab = gc->drafter == SD_DRAFTER_XVOCAB;
    if (st == SD_OK && (rank < gc->draft_ranks || (xvocab && gc->draft_ranks == 0)) &&
        rank != gc->draft_missing_on && gc->drafter != SD_DRAFTER_CALLBACK)
        st = load(xvocab ? g_xdraft_path : g_draft_path, gc->draft_ranks > 1 ? dcomm : NULL, &draft);
    sd_gen_result_t r = {0};
    if (st == SD_OK) {
        sd_gen_config_t g;
        gen_config(&g, gc->temperature);
        size_t n_prompt = N_PROMPT - (rank == 1 && gc->rank1_differs == 1);
        if (rank == 1 && gc->rank1_differs == 2) g.max_tokens = 0;
        sd_spec_config_t s;
        sd_spec_config_default(&s);
        s.drafter = gc->drafter ? gc->drafter : SD_DRAFTER_MODEL;
        s.draft_model = draft;
        s.callback = rank == 0 ? &k_lookup : &k_poisoned;
        s.draft_ranks = gc->draft_ranks;
        s.k = 4;
        s.adaptive = 0; /* a fixed k: adaptive k may pause drafting on a weak draft model */
        int left = gc->rank1_callback_stop;
        st = sd_generate_speculative(target, k_prompt, n_prompt, &g, &s,
                                     rank == 1 && left > 0 ? stop_after : NULL, &left, &r);
    } else {
        snprintf(o->error, sizeof o->error, "%s", sd_last_error());
    }
    record(o, st, &r);
    o->barrier_status = world ? (int)sd_comm_barrier(world) : -1;
    sd_gen_result_free(&r);
    sd_model_free(draft);
    sd_model_free(target);
    sd_comm_free(dcomm);
    sd_comm_free(world);
    (void)cap;
    return 0;
}

static sd_test_ranks_t run_case(const group_case_t *gc)
{
    if (gc->fault) setenv("SPECDEC_FAULT", gc->fault, 1);
    setenv("SPECDEC_COMM_TIMEOUT_MS", "20000", 1);
    sd_test_ranks_t r;
    int ok = sd_test_run_ranks(gc->target_ranks, group_rank, (void *)gc, sizeof(rank_result_t),
                               50, &r);
    unsetenv("SPECDEC_FAULT");
    for (int i = 0; i < r.size; i++)
        cr_assert_eq(r.codes[i], 0, "rank %d ended with code %d", i, r.codes[i]);
    cr_assert(ok);
    cr_assert(sd_test_no_shm_left(r.job), "shared-memory segments of job %s left behind", r.job);
    return r;
}

/* Every rank returned the same full result as rank 0. */
static void assert_ranks_agree(const sd_test_ranks_t *r)
{
    const rank_result_t *r0 = sd_test_rank_out(r, 0);
    for (int i = 1; i < r->size; i++) {
        const rank_result_t *ri = sd_test_rank_out(r, i);
        cr_assert_eq(ri->status, r0->status, "rank %d status %d vs rank 0 %d (%s)", i, ri->status,
                     r0->status, ri->error);
        cr_assert_eq(ri->n_tokens, r0->n_tokens, "rank %d: %d tokens vs %d", i, ri->n_tokens,
                     r0->n_tokens);
        cr_assert_arr_eq(ri->tokens, r0->tokens, sizeof ri->tokens, "rank %d tokens differ", i);
        cr_assert_str_eq(ri->text_hash, r0->text_hash, "rank %d text differs", i);
        cr_assert_eq(ri->stop_reason, r0->stop_reason);
        cr_assert_eq(ri->steps, r0->steps, "rank %d steps", i);
        cr_assert_eq(ri->drafted, r0->drafted, "rank %d drafted", i);
        cr_assert_eq(ri->accepted, r0->accepted, "rank %d accepted", i);
        cr_assert_eq(ri->draft_forwards, r0->draft_forwards, "rank %d draft forwards", i);
        cr_assert_arr_eq(ri->hist, r0->hist, sizeof ri->hist, "rank %d histogram", i);
    }
}

/* Single-rank target-only greedy output (computed after the ranks ran: never fork with
 * a live thread pool). */
static void assert_equals_target_only(const rank_result_t *r0)
{
    sd_model_t *m = NULL;
    cr_assert_eq(load(g_target_path, NULL, &m), SD_OK, "%s", sd_last_error());
    sd_gen_config_t g;
    gen_config(&g, 0.0f);
    sd_gen_result_t ref;
    cr_assert_eq(sd_generate(m, k_prompt, N_PROMPT, &g, NULL, NULL, &ref), SD_OK);
    cr_assert_eq((int)ref.n_tokens, r0->n_tokens);
    cr_assert_arr_eq(ref.tokens, r0->tokens, ref.n_tokens * sizeof(int32_t),
                     "TP speculative greedy output differs from single-rank target-only");
    sd_gen_result_free(&ref);
    sd_model_free(m);
}

static group_case_t k_greedy_cases[] = {
    {2, 1, 0.0f, -1, NULL, 0, 0, 0},
    {4, 1, 0.0f, -1, NULL, 0, 0, 0},
    {4, 2, 0.0f, -1, NULL, 0, 0, 0},
    {2, 2, 0.0f, -1, NULL, 0, 0, 0},
};

ParameterizedTestParameters(engine_groups, greedy_same_on_every_rank)
{
    return cr_make_param_array(group_case_t, k_greedy_cases,
                               sizeof k_greedy_cases / sizeof k_greedy_cases[0]);
}

ParameterizedTest(group_case_t *gc, engine_groups, greedy_same_on_every_rank, .timeout = 90)
{
    write_models();
    sd_test_ranks_t r = run_case(gc);
    const rank_result_t *r0 = sd_test_rank_out(&r, 0);
    cr_assert_eq(r0->status, SD_OK, "T=%d D=%d: %s", gc->target_ranks, gc->draft_ranks, r0->error);
    assert_ranks_agree(&r);
    cr_assert_gt(r0->accepted, 0, "no draft accepted: the case tests nothing");
    cr_assert_lt(r0->accepted, r0->drafted, "every draft accepted: rejections untested");
    cr_assert_gt(r0->draft_forwards, 0);
    assert_equals_target_only(r0);
    sd_test_ranks_free(&r);
}

Test(engine_groups, sampling_same_on_every_rank, .timeout = 90)
{
    write_models();
    group_case_t gc = {4, 1, 0.8f, -1, NULL, 0, 0, 0};
    sd_test_ranks_t r = run_case(&gc);
    const rank_result_t *r0 = sd_test_rank_out(&r, 0);
    cr_assert_eq(r0->status, SD_OK, "%s", r0->error);
    cr_assert_eq(r0->n_tokens, 48);
    assert_ranks_agree(&r);
    sd_test_ranks_free(&r);
}

/* SPECDEC_FAULT corrupt: rank 1 flips its token at step 3; every rank must stop there
 * with SD_ERR_RANK_DIVERGENCE naming step 3, keeping the tokens of steps 1 and 2. */
Test(engine_groups, divergence_is_caught_at_its_step, .timeout = 90)
{
    write_models();
    group_case_t gc = {2, 1, 0.0f, -1, "corrupt:rank=1:step=3", 0, 0, 0};
    sd_test_ranks_t r = run_case(&gc);
    for (int i = 0; i < r.size; i++) {
        const rank_result_t *ri = sd_test_rank_out(&r, i);
        cr_assert_eq(ri->status, SD_ERR_RANK_DIVERGENCE, "rank %d: status %d (%s)", i,
                     ri->status, ri->error);
        cr_assert(strstr(ri->error, "step 3") != NULL, "rank %d: '%s'", i, ri->error);
        cr_assert_eq(ri->stop_reason, SD_STOP_ERROR);
        cr_assert_gt(ri->n_tokens, 0, "rank %d kept nothing of steps 1 and 2", i);
    }
    const rank_result_t *r0 = sd_test_rank_out(&r, 0), *r1 = sd_test_rank_out(&r, 1);
    cr_assert_eq(r0->n_tokens, r1->n_tokens);
    sd_test_ranks_free(&r);
}

/* SPECDEC_FAULT corrupt-draft: rank 1 changes the first draft token it accepted (from step
 * 2 on) and keeps the same count and next token, so only the accepted tokens in the per-step
 * hash can tell: every rank must stop there with SD_ERR_RANK_DIVERGENCE. */
Test(engine_groups, a_differing_accepted_draft_is_caught, .timeout = 90)
{
    write_models();
    group_case_t gc = {2, 1, 0.0f, -1, "corrupt-draft:rank=1:step=2", 0, 0, 0};
    sd_test_ranks_t r = run_case(&gc);
    for (int i = 0; i < r.size; i++) {
        const rank_result_t *ri = sd_test_rank_out(&r, i);
        cr_assert_eq(ri->status, SD_ERR_RANK_DIVERGENCE, "rank %d: status %d (%s)", i,
                     ri->status, ri->error);
        cr_assert(strstr(ri->error, "ranks disagree on the tokens of step") != NULL, "rank %d: '%s'",
                  i, ri->error);
        cr_assert_lt(ri->n_tokens, 48, "rank %d generated everything: the fault never fired", i);
    }
    sd_test_ranks_free(&r);
}

/* Rank 1's callback stops its generation after 10 tokens, the others' do not: every rank
 * learns it at that step's check (SD_ERR_RANK_DIVERGENCE naming the stop, at once, not at the
 * 20 s collective deadline) and the group stays usable. */
Test(engine_groups, a_stop_on_one_rank_reaches_every_rank, .timeout = 90)
{
    write_models();
    group_case_t gc = {2, 1, 0.0f, -1, NULL, 0, 10, 0};
    sd_test_ranks_t r = run_case(&gc);
    for (int i = 0; i < r.size; i++) {
        const rank_result_t *ri = sd_test_rank_out(&r, i);
        cr_assert_eq(ri->status, SD_ERR_RANK_DIVERGENCE, "rank %d: status %d (%s)", i,
                     ri->status, ri->error);
        cr_assert(strstr(ri->error, "rank 0 went on, rank 1 stopped after 10 tokens (callback)"),
                  "rank %d: '%s'", i, ri->error);
        cr_assert_eq(ri->barrier_status, SD_OK, "rank %d: the group failed after the stop", i);
    }
    cr_assert_lt(r.seconds, 10.0);
    sd_test_ranks_free(&r);
}

/* A draft-group rank without its draft model: every rank gets the same clear error,
 * none hangs. */
Test(engine_groups, missing_draft_model_fails_on_every_rank, .timeout = 60)
{
    write_models();
    group_case_t gc = {2, 1, 0.0f, 0, NULL, 0, 0, 0};
    sd_test_ranks_t r = run_case(&gc);
    for (int i = 0; i < r.size; i++) {
        const rank_result_t *ri = sd_test_rank_out(&r, i);
        cr_assert_eq(ri->status, SD_ERR_INVALID_ARG, "rank %d: status %d (%s)", i, ri->status,
                     ri->error);
        cr_assert(strstr(ri->error, "rank 0") != NULL, "rank %d: '%s'", i, ri->error);
    }
    sd_test_ranks_free(&r);
}

/* Ranks given different requests (here: rank 1 a prompt one token shorter) are told so
 * before any collective of the request, on every rank; nothing hangs. */
Test(engine_groups, different_requests_are_refused_on_every_rank, .timeout = 60)
{
    write_models();
    group_case_t gc = {4, 1, 0.0f, -1, NULL, 1, 0, 0};
    sd_test_ranks_t r = run_case(&gc);
    for (int i = 0; i < r.size; i++) {
        const rank_result_t *ri = sd_test_rank_out(&r, i);
        cr_assert_eq(ri->status, SD_ERR_RANK_DIVERGENCE, "rank %d: status %d (%s)", i,
                     ri->status, ri->error);
        cr_assert(strstr(ri->error, "rank 1 was given a different request") != NULL, "rank %d: '%s'",
                  i, ri->error);
        cr_assert_eq(ri->n_tokens, 0);
    }
    cr_assert_lt(r.seconds, 15.0);
    sd_test_ranks_free(&r);
}

/* Every value that changes a request's tokens, its length or its collectives is compared:
 * a rank whose context is shorter (it would stop early and leave the others waiting) or
 * that skips the per-step check is named, with both values, on every rank before any
 * collective of the request. */
Test(engine_groups, context_size_and_check_setting_are_compared, .timeout = 60)
{
    write_models();
    const struct {
        int differs;
        const char *msg;
    } cases[] = {
        {3, "rank 1 was given a different request than rank 0: the context size (n_ctx) is "},
        {4, "rank 1 was given a different request than rank 0: SPECDEC_CHECK_CONSISTENCY is 1 "
            "on rank 0, 0 on rank 1"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        group_case_t gc = {2, 1, 0.0f, -1, NULL, cases[c].differs, 0, 0};
        sd_test_ranks_t r = run_case(&gc);
        for (int i = 0; i < r.size; i++) {
            const rank_result_t *ri = sd_test_rank_out(&r, i);
            cr_assert_eq(ri->status, SD_ERR_RANK_DIVERGENCE, "case %zu rank %d: status %d (%s)",
                         c, i, ri->status, ri->error);
            cr_assert(strstr(ri->error, cases[c].msg) != NULL, "case %zu rank %d: '%s'", c, i,
                      ri->error);
            cr_assert_eq(ri->n_tokens, 0);
        }
        cr_assert_lt(r.seconds, 15.0);
        sd_test_ranks_free(&r);
    }
}

/* A request one rank refuses (rank 1: max_tokens 0) fails on every rank with that rank's
 * message, before any collective of the request. */
Test(engine_groups, a_refusal_on_one_rank_reaches_every_rank, .timeout = 60)
{
    write_models();
    group_case_t gc = {2, 1, 0.0f, -1, NULL, 2, 0, 0};
    sd_test_ranks_t r = run_case(&gc);
    for (int i = 0; i < r.size; i++) {
        const rank_result_t *ri = sd_test_rank_out(&r, i);
        cr_assert_eq(ri->status, SD_ERR_INVALID_ARG, "rank %d: status %d (%s)", i, ri->status,
                     ri->error);
        cr_assert(strstr(ri->error, "rank 1: config max_tokens = 0") != NULL, "rank %d: '%s'", i,
                  ri->error);
    }
    sd_test_ranks_free(&r);
}

/* A draft model with another tokenizer, on a draft group or on every rank: every rank
 * returns the same result, greedy output is single-rank target-only output. */
static group_case_t k_xvocab_cases[] = {
    {2, 1, 0.0f, -1, NULL, 0, 0, SD_DRAFTER_XVOCAB},
    {4, 2, 0.0f, -1, NULL, 0, 0, SD_DRAFTER_XVOCAB},
    {2, 0, 0.0f, -1, NULL, 0, 0, SD_DRAFTER_XVOCAB},
};

ParameterizedTestParameters(engine_groups, xvocab_same_on_every_rank)
{
    return cr_make_param_array(group_case_t, k_xvocab_cases,
                               sizeof k_xvocab_cases / sizeof k_xvocab_cases[0]);
}

ParameterizedTest(group_case_t *gc, engine_groups, xvocab_same_on_every_rank, .timeout = 90)
{
    write_models();
    sd_test_ranks_t r = run_case(gc);
    const rank_result_t *r0 = sd_test_rank_out(&r, 0);
    cr_assert_eq(r0->status, SD_OK, "T=%d D=%d: %s", gc->target_ranks, gc->draft_ranks, r0->error);
    assert_ranks_agree(&r);
    cr_assert_gt(r0->draft_forwards, 0);
    assert_equals_target_only(r0);
    sd_test_ranks_free(&r);
}

/* A caller's drafter under TP: rank 0's callbacks propose and every rank verifies the
 * same drafts (the other ranks' callbacks would fail if called). */
Test(engine_groups, callback_drafter_runs_on_rank_0, .timeout = 90)
{
    write_models();
    group_case_t gc = {4, 0, 0.0f, -1, NULL, 0, 0, SD_DRAFTER_CALLBACK};
    sd_test_ranks_t r = run_case(&gc);
    const rank_result_t *r0 = sd_test_rank_out(&r, 0);
    cr_assert_eq(r0->status, SD_OK, "%s", r0->error);
    assert_ranks_agree(&r);
    cr_assert_gt(r0->drafted, 0, "rank 0's drafter proposed");
    assert_equals_target_only(r0);
    sd_test_ranks_free(&r);
}
