/* The serving engine (engine/scheduler.c): thread-safe submission from many threads,
 * continuous batching, per-request determinism (a request's tokens equal the same request
 * run alone with sd_generate_speculative, in any arrival order), cancellation, queue limits,
 * shutdown, bad requests and the metrics. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/speculative.h"
#include "gguf/synthetic.h"
#include "specdec/specdec.h"
#include "support/test_util.h"

#define N_CLIENTS 16

/* A synthetic model of spec s (n_ctx KV positions, 2 threads) written and loaded. */
static sd_model_t *load_spec(const sd_synth_spec_t *s, int n_ctx)
{
    char path[512];
    sd_test_tmp_path(path, sizeof path, "sched");
    cr_assert_eq(sd_synth_write_file(s, path), SD_OK, "%s", sd_last_error());
    sd_model_params_t p;
    sd_model_params_default(&p);
    p.path = path;
    p.n_threads = 2;
    p.n_ctx = n_ctx;
    sd_model_t *m = NULL;
    sd_status_t st = sd_model_load(&p, &m);
    cr_assert_eq(st, SD_OK, "load: %s", sd_last_error());
    remove(path);
    return m;
}

/* The target: 2 layers, 64 dims, vocab 320, GPT-2 tokenizer. */
static sd_model_t *load_synth(int n_ctx)
{
    sd_synth_spec_t s;
    sd_synth_spec_default(&s);
    s.n_ctx = 512;
    s.weight_scale = 0.08f;
    return load_spec(&s, n_ctx);
}

/* Request i: a prompt with repeats (so the n-gram drafter finds matches), its own seed;
 * even requests greedy, odd ones sampled. */
typedef struct client {
    int32_t prompt[48];
    size_t n_prompt;
    sd_gen_config_t config;
    sd_engine_t *engine;
    sd_gen_result_t result;
    sd_status_t status;
    int delay_us;
} client_t;

static void make_client(client_t *c, int i, int max_tokens)
{
    memset(c, 0, sizeof *c);
    c->n_prompt = 12 + (size_t)(i % 5) * 7;
    for (size_t t = 0; t < c->n_prompt; t++)
        c->prompt[t] = (int32_t)(40 + (t * (3 + (size_t)i)) % (5 + (size_t)i % 4));
    sd_gen_config_default(&c->config);
    c->config.max_tokens = max_tokens;
    c->config.seed = 1000 + (uint64_t)i;
    c->config.temperature = i % 2 ? 0.9f : 0.0f;
    c->config.ignore_eos = 1;
}

static sd_spec_config_t ngram_spec(void)
{
    sd_spec_config_t s;
    sd_spec_config_default(&s);
    s.drafter = SD_DRAFTER_NGRAM;
    s.k = 4;
    return s;
}

static sd_engine_t *engine_new_ex(sd_model_t *m, const sd_spec_config_t *spec, int max_active,
                                  int max_queued, int max_rows, int load_aware)
{
    sd_engine_params_t p;
    sd_engine_params_default(&p);
    p.load_aware_drafts = load_aware;
    p.model = m;
    p.spec = *spec;
    p.max_active = max_active;
    p.max_queued = max_queued;
    p.max_batch_rows = max_rows;
    sd_engine_t *e = NULL;
    sd_status_t st = sd_engine_create(&p, &e);
    cr_assert_eq(st, SD_OK, "engine: %s", sd_last_error());
    return e;
}

static sd_engine_t *engine_new(sd_model_t *m, const sd_spec_config_t *spec, int max_active,
                               int max_queued, int max_rows)
{
    return engine_new_ex(m, spec, max_active, max_queued, max_rows, 1);
}

static void *client_main(void *arg)
{
    client_t *c = arg;
    if (c->delay_us) usleep((useconds_t)c->delay_us);
    sd_request_t *r = NULL;
    c->status = sd_engine_submit(c->engine, c->prompt, c->n_prompt, &c->config, NULL, NULL, &r);
    if (c->status == SD_OK) c->status = sd_request_wait(r, -1, &c->result);
    sd_request_free(r);
    return NULL;
}

/* Same tokens, text and stop; with same_drafts also the same drafting (no load cut). */
static void assert_same_result(const sd_gen_result_t *got, const sd_gen_result_t *want, int i,
                               int same_drafts)
{
    cr_assert_eq(got->n_tokens, want->n_tokens, "client %d: %zu tokens, alone %zu", i,
                 got->n_tokens, want->n_tokens);
    cr_assert(memcmp(got->tokens, want->tokens, got->n_tokens * sizeof(int32_t)) == 0,
              "client %d: tokens differ from the request run alone", i);
    cr_assert_str_eq(got->text, want->text, "client %d", i);
    cr_assert_eq(got->stop_reason, want->stop_reason);
    if (!same_drafts) return;
    cr_assert_eq(got->stats.drafted, want->stats.drafted, "client %d drafted", i);
    cr_assert_eq(got->stats.accepted, want->stats.accepted, "client %d accepted", i);
}

/* 16 clients on 16 threads, arriving in three orders (all at once, staggered forward,
 * staggered backward); with a row budget that makes some steps wait. Every response equals
 * the request run alone; without load-aware drafts its drafting does too. */
static void check_concurrent_equals_alone(const sd_spec_config_t *spec, int max_rows,
                                          int load_aware)
{
    sd_model_t *m = load_synth(256);
    client_t alone[N_CLIENTS];
    for (int i = 0; i < N_CLIENTS; i++) {
        make_client(&alone[i], i, 24 + i);
        sd_status_t st = sd_generate_speculative(m, alone[i].prompt, alone[i].n_prompt,
                                                 &alone[i].config, spec, NULL, NULL,
                                                 &alone[i].result);
        cr_assert_eq(st, SD_OK, "alone %d: %s", i, sd_last_error());
    }
    for (int order = 0; order < 3; order++) {
        sd_engine_t *e = engine_new_ex(m, spec, 8, 64, max_rows, load_aware);
        client_t c[N_CLIENTS];
        pthread_t th[N_CLIENTS];
        for (int i = 0; i < N_CLIENTS; i++) {
            make_client(&c[i], i, 24 + i);
            c[i].engine = e;
            c[i].delay_us = order == 0 ? 0 : 300 * (order == 1 ? i : N_CLIENTS - 1 - i);
            pthread_create(&th[i], NULL, client_main, &c[i]);
        }
        for (int i = 0; i < N_CLIENTS; i++) pthread_join(th[i], NULL);
        uint64_t drafted = 0, drafted_alone = 0;
        for (int i = 0; i < N_CLIENTS; i++) {
            cr_assert_eq(c[i].status, SD_OK, "order %d client %d: %s", order, i,
                         sd_status_string(c[i].status));
            assert_same_result(&c[i].result, &alone[i].result, i, !load_aware);
            drafted += c[i].result.stats.drafted;
            drafted_alone += alone[i].result.stats.drafted;
            sd_gen_result_free(&c[i].result);
        }
        if (load_aware && order == 0) /* 8 decoding together: drafts were cut */
            cr_assert_lt(drafted, drafted_alone, "%llu drafts in the batch, %llu alone",
                         (unsigned long long)drafted, (unsigned long long)drafted_alone);
        sd_engine_metrics_t mt;
        cr_assert_eq(sd_engine_get_metrics(e, &mt), SD_OK);
        cr_assert_eq(mt.submitted, N_CLIENTS);
        cr_assert_eq(mt.finished[SD_STOP_MAX_TOKENS], N_CLIENTS);
        cr_assert_eq(mt.active, 0);
        cr_assert_eq(mt.kv_positions_used, 0);
        cr_assert_eq(mt.kv_bytes_used, 0);
        /* all at once: batching happened (fewer forwards than the requests' steps alone) */
        uint64_t steps_alone = 0;
        for (int i = 0; i < N_CLIENTS; i++) steps_alone += alone[i].result.stats.steps;
        if (order == 0)
            cr_assert_lt(mt.steps, steps_alone, "%llu batched forwards vs %llu steps alone",
                         (unsigned long long)mt.steps, (unsigned long long)steps_alone);
        cr_assert_gt(mt.batch_rows, mt.steps);
        if (spec->drafter == SD_DRAFTER_MODEL || spec->drafter == SD_DRAFTER_LAYERSKIP) {
            cr_assert_gt(mt.draft_forwards, 0, "the drafter's forwards ran batched");
            if (order == 0)
                cr_assert_gt(mt.draft_rows, mt.draft_forwards,
                             "draft rounds of several requests share a forward");
        }
        sd_engine_free(e);
    }
    for (int i = 0; i < N_CLIENTS; i++) sd_gen_result_free(&alone[i].result);
    sd_model_free(m);
}

Test(engine_scheduler, concurrent_requests_equal_alone_ngram, .timeout = 240)
{
    sd_spec_config_t s = ngram_spec();
    check_concurrent_equals_alone(&s, 256, 0);
}

Test(engine_scheduler, concurrent_requests_equal_alone_tight_rows, .timeout = 240)
{
    sd_spec_config_t s = ngram_spec();
    check_concurrent_equals_alone(&s, 12, 0); /* two k = 4 steps fit, prompts are chunked */
}

Test(engine_scheduler, concurrent_requests_equal_alone_target_only, .timeout = 240)
{
    sd_spec_config_t s;
    sd_spec_config_default(&s); /* drafter NONE */
    check_concurrent_equals_alone(&s, 64, 0);
}

Test(engine_scheduler, concurrent_requests_equal_alone_layerskip, .timeout = 240)
{
    sd_spec_config_t s;
    sd_spec_config_default(&s);
    s.drafter = SD_DRAFTER_LAYERSKIP;
    s.layerskip_layers = 1;
    s.k = 3;
    check_concurrent_equals_alone(&s, 256, 0);
}

/* A separate draft model (same tokenizer, fewer and other weights): its draft forwards run
 * batched across the requests, round by round; tokens and drafting equal each alone. */
Test(engine_scheduler, concurrent_requests_equal_alone_draft_model, .timeout = 240)
{
    sd_synth_spec_t ds;
    sd_synth_spec_default(&ds); /* the target's tokenizer, other weights, one layer */
    ds.n_layer = 1;
    ds.n_ctx = 512;
    ds.seed = 99;
    ds.weight_scale = 0.08f;
    sd_model_t *draft = load_spec(&ds, 256);
    sd_spec_config_t s;
    sd_spec_config_default(&s);
    s.drafter = SD_DRAFTER_MODEL;
    s.draft_model = draft;
    s.k = 3;
    check_concurrent_equals_alone(&s, 256, 0);
    check_concurrent_equals_alone(&s, 12, 0); /* rows tight: steps wait, drafts do not change */
    sd_model_free(draft);
}

/* Load-aware drafts cut only drafts whose length cannot change the tokens: greedy requests
 * and the n-gram drafter's (sampled requests included). */
Test(engine_scheduler, load_aware_drafts_keep_the_tokens, .timeout = 240)
{
    sd_spec_config_t s = ngram_spec();
    check_concurrent_equals_alone(&s, 256, 1);
    sd_spec_config_default(&s);
    s.drafter = SD_DRAFTER_LAYERSKIP;
    s.layerskip_layers = 1;
    s.k = 3;
    check_concurrent_equals_alone(&s, 256, 1);
}

/* The cost model: a draft row is worth less the more requests share the step. */
Test(engine_scheduler, batch_row_cost_grows_with_load)
{
    cr_assert_float_eq(sd_spec_batch_row_cost(1), 0.5, 1e-12);
    cr_assert_float_eq(sd_spec_batch_row_cost(4), 0.8, 1e-12);
    sd_spec_k_t c;
    sd_spec_k_init(&c, 8, 1);
    for (int i = 0; i < 20; i++) sd_spec_k_update_for(&c, 1, 4, 3); /* alpha -> 0.75 */
    int alone = sd_spec_k_at_cost(&c, 1, sd_spec_batch_row_cost(1));
    cr_assert_gt(alone, 0);
    cr_assert_eq(sd_spec_k_at_cost(&c, 1, sd_spec_batch_row_cost(16)), 0,
                 "at 16 requests a 75 %% draft row does not pay");
    for (int i = 0; i < 40; i++) sd_spec_k_update_for(&c, 2, 4, 4); /* alpha -> 1 */
    cr_assert_gt(sd_spec_k_at_cost(&c, 2, sd_spec_batch_row_cost(16)), 0);
    sd_spec_k_init(&c, 5, 0);
    cr_assert_eq(sd_spec_k_at_cost(&c, 0, 0.99), 5, "fixed k is never cut");
}

/* Load-aware trees: a level is kept while the estimated chance of accepting that deep pays
 * for its nodes at the batch's row cost; evidence moves the cut both ways. */
Test(engine_scheduler, tree_depth_at_cost_follows_the_evidence)
{
    sd_spec_tree_reach_t t;
    sd_spec_tree_reach_init(&t);
    const int width[] = {0, 1, 2, 4, 4}; /* levels 1 .. 4 */
    double alone = sd_spec_batch_row_cost(1), busy = sd_spec_batch_row_cost(16);
    /* prior 0.75^d: level 1 (0.75 >= 0.5), not level 2 (0.56 < 2 x 0.5) */
    cr_assert_eq(sd_spec_tree_depth_at_cost(&t, width, 4, alone), 1);
    cr_assert_eq(sd_spec_tree_depth_at_cost(&t, width, 4, busy), 0, "0.75 < 0.94");
    cr_assert_eq(sd_spec_tree_depth_at_cost(&t, width, 0, alone), 0, "an empty tree");
    for (int i = 0; i < 40; i++) sd_spec_tree_reach_update(&t, 4, 4); /* always all of it */
    cr_assert_eq(sd_spec_tree_depth_at_cost(&t, width, 4, 0.2), 4);
    cr_assert_eq(sd_spec_tree_depth_at_cost(&t, width, 4, busy), 1, "one node pays at 16");
    for (int i = 0; i < 40; i++) sd_spec_tree_reach_update(&t, 4, 0); /* never */
    cr_assert_eq(sd_spec_tree_depth_at_cost(&t, width, 4, alone), 0);
}

/* ---- cancellation, limits, shutdown ---------------------------------------------------- */

typedef struct counter {
    int tokens;
    int stop_after;
    int delay_us; /* per token: keeps a request running while the test looks at the others */
} counter_t;

static int count_tokens(void *user, int32_t token, const char *text, size_t len)
{
    (void)text;
    (void)len;
    counter_t *c = user;
    if (token >= 0) __atomic_add_fetch(&c->tokens, 1, __ATOMIC_SEQ_CST);
    if (c->delay_us > 0) usleep((useconds_t)c->delay_us);
    return c->stop_after > 0 && c->tokens >= c->stop_after;
}

static int tokens_seen(counter_t *c) { return __atomic_load_n(&c->tokens, __ATOMIC_SEQ_CST); }

static sd_request_t *submit_ok(sd_engine_t *e, const client_t *c, counter_t *cnt)
{
    sd_request_t *r = NULL;
    sd_status_t st = sd_engine_submit(e, c->prompt, c->n_prompt, &c->config,
                                      cnt ? count_tokens : NULL, cnt, &r);
    cr_assert_eq(st, SD_OK, "submit: %s", sd_last_error());
    return r;
}

static void wait_metrics(sd_engine_t *e, int active, size_t kv_used)
{
    sd_engine_metrics_t mt;
    for (int i = 0; i < 2000; i++) {
        sd_engine_get_metrics(e, &mt);
        if (mt.active == active && mt.kv_positions_used == kv_used) return;
        usleep(5000);
    }
    cr_assert_fail("metrics: %d active, %zu KV positions; wanted %d, %zu", mt.active,
                   mt.kv_positions_used, active, kv_used);
}

Test(engine_scheduler, cancel_mid_generation_frees_the_slot, .timeout = 120)
{
    sd_model_t *m = load_synth(256);
    sd_spec_config_t s = ngram_spec();
    sd_engine_t *e = engine_new(m, &s, 4, 4, 64);
    client_t c;
    make_client(&c, 3, 200);
    counter_t cnt = {0};
    sd_request_t *r = submit_ok(e, &c, &cnt);
    while (tokens_seen(&cnt) < 3) usleep(1000);
    sd_request_cancel(r);
    sd_gen_result_t res;
    cr_assert_eq(sd_request_wait(r, -1, &res), SD_ERR_CANCELLED);
    cr_assert_eq(res.stop_reason, SD_STOP_CANCELLED);
    cr_assert(res.n_tokens >= 3 && res.n_tokens < 200, "%zu tokens kept", res.n_tokens);
    /* what was kept is a prefix of the full run */
    sd_gen_result_t full;
    cr_assert_eq(sd_generate_speculative(m, c.prompt, c.n_prompt, &c.config, &s, NULL, NULL, &full),
                 SD_OK);
    cr_assert(memcmp(res.tokens, full.tokens, res.n_tokens * sizeof(int32_t)) == 0);
    wait_metrics(e, 0, 0);
    sd_engine_metrics_t mt;
    sd_engine_get_metrics(e, &mt);
    cr_assert_eq(mt.finished[SD_STOP_CANCELLED], 1);
    sd_gen_result_free(&res);
    sd_gen_result_free(&full);
    sd_request_free(r);
    sd_engine_free(e);
    sd_model_free(m);
}

Test(engine_scheduler, queue_limit_answers_busy, .timeout = 120)
{
    sd_model_t *m = load_synth(256);
    sd_spec_config_t s = ngram_spec();
    sd_engine_t *e = engine_new(m, &s, 1, 1, 64);
    client_t c;
    make_client(&c, 1, 200);
    /* a takes at least 0.4 s (2 ms a token): still active while b, x and d are looked at;
     * undelayed, its 200 n-gram tokens could end first on an idle machine */
    counter_t slow_a = {.delay_us = 2000};
    sd_request_t *a = submit_ok(e, &c, &slow_a), *b = submit_ok(e, &c, NULL), *x = NULL;
    cr_assert_eq(sd_engine_submit(e, c.prompt, c.n_prompt, &c.config, NULL, NULL, &x), SD_ERR_BUSY);
    cr_assert_null(x);
    cr_assert(strstr(sd_last_error(), "max_queued = 1") != NULL, "%s", sd_last_error());
    sd_request_cancel(b); /* cancelled while queued */
    sd_gen_result_t res;
    cr_assert_eq(sd_request_wait(b, -1, &res), SD_ERR_CANCELLED);
    cr_assert_eq(res.stop_reason, SD_STOP_CANCELLED);
    cr_assert_eq(res.n_tokens, 0);
    sd_gen_result_free(&res);
    /* a slot in the queue again */
    sd_request_t *d = submit_ok(e, &c, NULL);
    cr_assert_eq(sd_request_wait(d, 0.001, &res), SD_ERR_BUSY, "still queued behind a");
    sd_engine_metrics_t mt;
    sd_engine_get_metrics(e, &mt);
    cr_assert_eq(mt.rejected_busy, 1);
    cr_assert_eq(mt.queued, 1);
    cr_assert_eq(mt.active, 1);
    sd_request_free(a); /* cancels a; d runs */
    cr_assert_eq(sd_request_wait(d, -1, &res), SD_OK, "%s", sd_last_error());
    cr_assert_eq(res.n_tokens, 200);
    sd_gen_result_free(&res);
    sd_request_free(b);
    sd_request_free(d);
    sd_engine_free(e);
    sd_model_free(m);
}

Test(engine_scheduler, shutdown_cancels_after_the_grace_period, .timeout = 120)
{
    sd_model_t *m = load_synth(256);
    sd_spec_config_t s = ngram_spec();
    sd_engine_t *e = engine_new(m, &s, 2, 8, 64);
    client_t shortc, longc;
    make_client(&shortc, 2, 4);
    make_client(&longc, 5, 220);
    counter_t cnt = {0};
    sd_request_t *r[4] = {submit_ok(e, &shortc, NULL), submit_ok(e, &longc, &cnt),
                          submit_ok(e, &longc, NULL), submit_ok(e, &longc, NULL)};
    sd_gen_result_t res;
    cr_assert_eq(sd_request_wait(r[0], -1, &res), SD_OK, "the short one finishes first");
    sd_gen_result_free(&res);
    while (tokens_seen(&cnt) < 2) usleep(1000);
    sd_engine_shutdown(e, 0.0); /* no grace: the running one and the queued ones end now */
    sd_request_t *late = NULL;
    cr_assert_eq(sd_engine_submit(e, shortc.prompt, shortc.n_prompt, &shortc.config, NULL, NULL,
                                  &late), SD_ERR_BUSY);
    cr_assert(strstr(sd_last_error(), "shutting down") != NULL, "%s", sd_last_error());
    for (int i = 1; i < 4; i++) {
        cr_assert(sd_request_done(r[i]));
        cr_assert_eq(sd_request_wait(r[i], 0, &res), SD_ERR_CANCELLED, "request %d", i);
        cr_assert_eq(res.stop_reason, SD_STOP_CANCELLED);
        sd_gen_result_free(&res);
    }
    sd_engine_metrics_t mt;
    sd_engine_get_metrics(e, &mt);
    cr_assert_eq(mt.active + mt.queued, 0);
    sd_engine_free(e); /* handles outlive the engine */
    for (int i = 0; i < 4; i++) sd_request_free(r[i]);
    sd_model_free(m);
}

/* A grace period long enough lets running and queued requests finish. */
Test(engine_scheduler, shutdown_grace_lets_requests_finish, .timeout = 120)
{
    sd_model_t *m = load_synth(256);
    sd_spec_config_t s = ngram_spec();
    sd_engine_t *e = engine_new(m, &s, 1, 8, 64);
    client_t c;
    make_client(&c, 3, 30);
    sd_request_t *r[3] = {submit_ok(e, &c, NULL), submit_ok(e, &c, NULL), submit_ok(e, &c, NULL)};
    sd_engine_shutdown(e, 60.0); /* returns once all three are done */
    for (int i = 0; i < 3; i++) {
        cr_assert(sd_request_done(r[i]), "request %d", i);
        sd_gen_result_t res;
        cr_assert_eq(sd_request_wait(r[i], 0, &res), SD_OK, "request %d", i);
        cr_assert_eq(res.n_tokens, 30);
        sd_gen_result_free(&res);
        sd_request_free(r[i]);
    }
    sd_engine_free(e);
    sd_model_free(m);
}

Test(engine_scheduler, requests_freed_unwaited_and_callback_stop, .timeout = 120)
{
    sd_model_t *m = load_synth(256);
    sd_spec_config_t s = ngram_spec();
    sd_engine_t *e = engine_new(m, &s, 4, 8, 64);
    client_t c;
    make_client(&c, 4, 100);
    counter_t stop3 = {.stop_after = 3};
    sd_request_t *r = submit_ok(e, &c, &stop3);
    for (int i = 0; i < 6; i++) sd_request_free(submit_ok(e, &c, NULL)); /* never waited for */
    sd_gen_result_t res;
    cr_assert_eq(sd_request_wait(r, -1, &res), SD_OK);
    cr_assert_eq(res.stop_reason, SD_STOP_CALLBACK);
    cr_assert_eq(res.n_tokens, 3);
    sd_gen_result_free(&res);
    sd_request_free(r);
    wait_metrics(e, 0, 0);
    sd_engine_free(e);
    sd_model_free(m);
}

Test(engine_scheduler, bad_requests_are_refused_at_submit, .timeout = 60)
{
    sd_model_t *m = load_synth(64);
    sd_spec_config_t s = ngram_spec();
    sd_engine_params_t p;
    sd_engine_params_default(&p);
    p.model = m;
    p.spec = s;
    p.max_kv_positions = 40;
    sd_engine_t *e = NULL;
    cr_assert_eq(sd_engine_create(&p, &e), SD_OK);
    client_t c;
    make_client(&c, 0, 8);
    sd_request_t *r = NULL;
    c.config.max_tokens = 0;
    cr_assert_eq(sd_engine_submit(e, c.prompt, c.n_prompt, &c.config, NULL, NULL, &r),
                 SD_ERR_INVALID_ARG);
    cr_assert(strstr(sd_last_error(), "max_tokens = 0") != NULL, "%s", sd_last_error());
    c.config.max_tokens = 30; /* 12 + 30 - 1 positions > 40 */
    cr_assert_eq(sd_engine_submit(e, c.prompt, c.n_prompt, &c.config, NULL, NULL, &r),
                 SD_ERR_CONTEXT_FULL);
    cr_assert(strstr(sd_last_error(), "at most 40") != NULL, "%s", sd_last_error());
    int32_t long_prompt[80] = {0};
    c.config.max_tokens = 4;
    cr_assert_eq(sd_engine_submit(e, long_prompt, 80, &c.config, NULL, NULL, &r),
                 SD_ERR_CONTEXT_FULL);
    c.prompt[2] = 320;
    cr_assert_eq(sd_engine_submit(e, c.prompt, c.n_prompt, &c.config, NULL, NULL, &r),
                 SD_ERR_INVALID_ARG);
    cr_assert(strstr(sd_last_error(), "320") != NULL, "%s", sd_last_error());
    cr_assert_eq(sd_engine_submit(e, c.prompt, c.n_prompt, NULL, NULL, NULL, &r),
                 SD_ERR_INVALID_ARG); /* the message names the call the caller made */
    cr_assert(strncmp(sd_last_error(), "sd_engine_submit: config is NULL", 32) == 0, "%s",
              sd_last_error());
    cr_assert_null(r);
    sd_engine_metrics_t mt;
    sd_engine_get_metrics(e, &mt);
    cr_assert_eq(mt.rejected_invalid, 5);
    cr_assert_eq(mt.submitted, 0);
    sd_engine_free(e);
    /* bad engine parameters */
    p.max_batch_rows = 4; /* < k + 1 = 5 */
    cr_assert_eq(sd_engine_create(&p, &e), SD_ERR_INVALID_ARG);
    cr_assert(strstr(sd_last_error(), "max_batch_rows = 4") != NULL, "%s", sd_last_error());
    p.max_batch_rows = 64;
    p.max_active = 0;
    cr_assert_eq(sd_engine_create(&p, &e), SD_ERR_INVALID_ARG);
    p.max_active = 4;
    p.spec.drafter = SD_DRAFTER_LAYERSKIP;
    p.spec.layerskip_layers = 5; /* the model has 2 layers: refused at creation */
    cr_assert_eq(sd_engine_create(&p, &e), SD_ERR_INVALID_ARG);
    cr_assert(strstr(sd_last_error(), "5") != NULL, "%s", sd_last_error());
    sd_model_free(m);
}

Test(engine_scheduler, metrics_add_up, .timeout = 120)
{
    sd_model_t *m = load_synth(256);
    sd_spec_config_t s = ngram_spec();
    sd_engine_t *e = engine_new(m, &s, 4, 8, 64);
    sd_request_t *r[6];
    uint64_t tokens = 0, prompt = 0, drafted = 0, accepted = 0, steps = 0;
    client_t c[6];
    for (int i = 0; i < 6; i++) {
        make_client(&c[i], i, 10 + i);
        r[i] = submit_ok(e, &c[i], NULL);
        prompt += c[i].n_prompt;
    }
    for (int i = 0; i < 6; i++) {
        sd_gen_result_t res;
        cr_assert_eq(sd_request_wait(r[i], -1, &res), SD_OK);
        tokens += res.n_tokens;
        drafted += res.stats.drafted;
        accepted += res.stats.accepted;
        steps += res.stats.steps;
        sd_gen_result_free(&res);
        sd_request_free(r[i]);
    }
    sd_engine_metrics_t mt;
    sd_engine_get_metrics(e, &mt);
    cr_assert_eq(mt.generated_tokens, tokens);
    cr_assert_eq(mt.prompt_tokens, prompt);
    cr_assert_eq(mt.drafted, drafted);
    cr_assert_eq(mt.accepted, accepted);
    cr_assert_eq(mt.accepted_len.count, steps, "one observation per request step");
    cr_assert_eq(mt.ttft_seconds.count, 6);
    cr_assert_eq(mt.queue_seconds.count, 6);
    cr_assert_eq(mt.step_seconds.count, mt.steps);
    uint64_t sum = 0;
    for (int i = 0; i <= mt.accepted_len.n_bounds; i++) sum += mt.accepted_len.counts[i];
    cr_assert_eq(sum, steps);
    cr_assert_eq((uint64_t)mt.accepted_len.sum, accepted);
    sd_engine_free(e);
    sd_model_free(m);
}
