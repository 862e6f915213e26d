/* The serving engine over a tensor-parallel model: every rank creates an engine, rank 0
 * takes the requests and broadcasts each step's admissions and cancellations, all ranks
 * step together. Ranks are forked processes on the intra comm (tests/support/ranks.h). */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "comm/comm.h"
#include "core/clock.h"
#include "gguf/synthetic.h"
#include "specdec/specdec.h"
#include "support/ranks.h"
#include "support/test_util.h"

#define N_REQ 6
#define MAX_TOKENS 20

typedef struct tp_case {
    char path[512];
    int idle_ms; /* rank 0 waits this long, idle, before submitting */
} tp_case_t;

typedef struct rank_report {
    int code;
    char msg[400];
} rank_report_t;

static int report(rank_report_t *out, int code, const char *what, const char *detail)
{
    out->code = code;
    snprintf(out->msg, sizeof out->msg, "%s: %s", what, detail);
    return code;
}

static void make_config(int i, sd_gen_config_t *c, int32_t *prompt, size_t *n)
{
    sd_gen_config_default(c);
    c->max_tokens = MAX_TOKENS;
    c->seed = 50 + (uint64_t)i;
    c->temperature = i % 2 ? 0.8f : 0.0f;
    c->ignore_eos = 1;
    *n = 10 + (size_t)i;
    for (size_t t = 0; t < *n; t++) prompt[t] = (int32_t)((t * 7 + (size_t)i) % 11 + 3);
}

typedef struct submit_job {
    sd_engine_t *engine;
    int i;
    sd_gen_result_t result;
    sd_status_t status;
} submit_job_t;

static void *submit_main(void *arg)
{
    submit_job_t *j = arg;
    sd_gen_config_t c;
    int32_t prompt[32];
    size_t n;
    make_config(j->i, &c, prompt, &n);
    sd_request_t *r = NULL;
    j->status = sd_engine_submit(j->engine, prompt, n, &c, NULL, NULL, &r);
    if (j->status == SD_OK) j->status = sd_request_wait(r, -1, &j->result);
    sd_request_free(r);
    return NULL;
}

/* Rank 0: the requests through the engine, from N_REQ threads, each equal to the same
 * request run alone under TP (sd_generate_speculative, done first by every rank). */
static int leader(sd_engine_t *e, const tp_case_t *c, sd_gen_result_t *alone, rank_report_t *out)
{
    usleep((useconds_t)c->idle_ms * 1000);
    submit_job_t jobs[N_REQ];
    pthread_t th[N_REQ];
    for (int i = 0; i < N_REQ; i++) {
        jobs[i] = (submit_job_t){.engine = e, .i = i};
        pthread_create(&th[i], NULL, submit_main, &jobs[i]);
    }
    int bad = -1;
    for (int i = 0; i < N_REQ; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < N_REQ; i++) {
        sd_gen_result_t *g = &jobs[i].result, *a = &alone[i];
        if (jobs[i].status != SD_OK || g->n_tokens != a->n_tokens ||
            memcmp(g->tokens, a->tokens, a->n_tokens * sizeof(int32_t)) != 0)
            bad = bad < 0 ? i : bad;
        sd_gen_result_free(g);
    }
    char which[32];
    snprintf(which, sizeof which, "request %d", bad);
    return bad >= 0 ? report(out, 10, which, "differs from the same request alone under TP") : 0;
}

/* This rank joins the job's intra world and loads its shard of the model (n_ctx). */
static int join_and_load(int rank, int size, const char *job, const char *path, int n_ctx,
                         sd_comm_t **comm, sd_model_t **m, rank_report_t *out)
{
    if (sd_comm_intra_new(rank, size, job, comm) != SD_OK) return report(out, 2, "comm", sd_last_error());
    sd_model_params_t mp;
    sd_model_params_default(&mp);
    mp.path = path;
    mp.n_threads = 1;
    mp.n_ctx = n_ctx;
    mp.comm = *comm;
    return sd_model_load(&mp, m) != SD_OK ? report(out, 3, "load", sd_last_error()) : 0;
}

static int rank_main(int rank, int size, const char *job, void *arg, void *outp, size_t cap)
{
    (void)cap;
    const tp_case_t *c = arg;
    rank_report_t *out = outp;
    sd_comm_t *comm = NULL;
    sd_model_t *m = NULL;
    int joined = join_and_load(rank, size, job, c->path, 128, &comm, &m, out);
    if (joined) return joined;
    sd_spec_config_t spec;
    sd_spec_config_default(&spec);
    spec.drafter = SD_DRAFTER_NGRAM;
    spec.k = 3;
    sd_gen_result_t alone[N_REQ];
    for (int i = 0; i < N_REQ; i++) {
        sd_gen_config_t gc;
        int32_t prompt[32];
        size_t n;
        make_config(i, &gc, prompt, &n);
        if (sd_generate_speculative(m, prompt, n, &gc, &spec, NULL, NULL, &alone[i]) != SD_OK)
            return report(out, 4, "alone", sd_last_error());
    }
    sd_engine_params_t ep;
    sd_engine_params_default(&ep);
    ep.model = m;
    ep.spec = spec;
    ep.max_active = 4; /* 6 requests: some wait in the queue on rank 0 */
    sd_engine_t *e = NULL;
    if (sd_engine_create(&ep, &e) != SD_OK) return report(out, 5, "engine", sd_last_error());
    int code = 0;
    if (rank == 0) {
        if (sd_engine_wait_stopped(e) != SD_ERR_INVALID_ARG)
            code = report(out, 6, "wait_stopped", "accepted on rank 0");
        if (!code) code = leader(e, c, alone, out);
        sd_engine_free(e);
    } else {
        sd_request_t *r = NULL;
        int32_t prompt[2] = {1, 2};
        sd_gen_config_t gc;
        sd_gen_config_default(&gc);
        if (sd_engine_submit(e, prompt, 2, &gc, NULL, NULL, &r) != SD_ERR_INVALID_ARG)
            code = report(out, 7, "submit", "accepted on rank > 0");
        sd_status_t st = sd_engine_wait_stopped(e);
        if (st != SD_OK && !code) code = report(out, 8, "wait_stopped", sd_last_error());
        sd_engine_free(e);
    }
    for (int i = 0; i < N_REQ; i++) sd_gen_result_free(&alone[i]);
    sd_model_free(m);
    sd_comm_free(comm);
    return code;
}

static void write_model(tp_case_t *c)
{
    sd_synth_spec_t s;
    sd_synth_spec_default(&s); /* 4 heads, 2 KV heads: splits over 2 ranks */
    s.tokenizer = SD_SYNTH_TOKENIZER_NONE;
    s.n_vocab = 96;
    s.weight_scale = 0.1f;
    sd_test_tmp_path(c->path, sizeof c->path, "schedtp");
    cr_assert_eq(sd_synth_write_file(&s, c->path), SD_OK, "%s", sd_last_error());
}

static void run_case(tp_case_t *c, int size)
{
    sd_test_ranks_t r;
    int ok = sd_test_run_ranks(size, rank_main, c, sizeof(rank_report_t), 60, &r);
    for (int i = 0; i < size; i++) {
        rank_report_t *o = sd_test_rank_out(&r, i);
        cr_expect_eq(r.codes[i], 0, "rank %d: exit %d: %s", i, r.codes[i], o->msg);
    }
    cr_assert(ok);
    cr_assert(sd_test_no_shm_left(r.job), "shared memory of job %s left behind", r.job);
    sd_test_ranks_free(&r);
}

Test(engine_scheduler_tp, ranks_step_together_and_match_tp_alone, .timeout = 120)
{
    setenv("SPECDEC_COMM_TIMEOUT_MS", "10000", 1);
    tp_case_t c = {.idle_ms = 0};
    write_model(&c);
    run_case(&c, 2);
    remove(c.path);
}

/* Rank 0 idles for 2.5 s with a 1.5 s collective deadline: its heartbeat steps keep the
 * other ranks' broadcast waits alive. */
Test(engine_scheduler_tp, idle_heartbeat_keeps_the_group_alive, .timeout = 120)
{
    setenv("SPECDEC_COMM_TIMEOUT_MS", "1500", 1);
    tp_case_t c = {.idle_ms = 2500};
    write_model(&c);
    run_case(&c, 2);
    remove(c.path);
}

/* ---- admission: a request being admitted stays counted ------------------------------ */

/* Rank 0 with one slot and one queue place. Rank 1 is slow at every collective
 * (SPECDEC_FAULT delay), so admitting request A — the step broadcast, then its generation
 * (collective) — takes over a second. Meanwhile A must count as active: /metrics shows it,
 * and with B queued a third request is SD_ERR_BUSY (it used to be accepted, A being
 * neither queued nor active while admitted). */
static int admission_leader(sd_engine_t *e, rank_report_t *out)
{
    int32_t prompt[3] = {5, 6, 7};
    sd_gen_config_t c;
    sd_gen_config_default(&c);
    c.max_tokens = 1;
    c.temperature = 0.0f;
    c.ignore_eos = 1;
    sd_request_t *r[3] = {NULL, NULL, NULL};
    if (sd_engine_submit(e, prompt, 3, &c, NULL, NULL, &r[0]) != SD_OK)
        return report(out, 20, "submit A", sd_last_error());
    sd_engine_metrics_t m;
    double until = sd_now() + 10.0;
    do sd_engine_get_metrics(e, &m);
    while (m.queued != 0 && sd_now() < until); /* A was taken off the queue */
    int code = 0;
    char what[96];
    snprintf(what, sizeof what, "queued %d + active %d after A left the queue", m.queued, m.active);
    if (m.queued + m.active != 1) code = report(out, 21, what, "A is lost between queue and active");
    sd_status_t sb = sd_engine_submit(e, prompt, 3, &c, NULL, NULL, &r[1]);
    sd_status_t sc = sd_engine_submit(e, prompt, 3, &c, NULL, NULL, &r[2]);
    if (!code && sb != SD_OK) code = report(out, 22, "submit B", sd_last_error());
    if (!code && sc != SD_ERR_BUSY)
        code = report(out, 23, "submit C", "accepted with A admitted and B queued (max_active 1, "
                                           "max_queued 1)");
    for (int i = 0; i < 3; i++) {
        sd_gen_result_t res;
        sd_status_t st = r[i] ? sd_request_wait(r[i], 60, &res) : SD_OK;
        if (r[i] && st != SD_OK && !code) code = report(out, 24, "wait", sd_last_error());
        if (r[i]) sd_gen_result_free(&res);
        sd_request_free(r[i]);
    }
    return code;
}

static int admission_rank(int rank, int size, const char *job, void *arg, void *outp, size_t cap)
{
    (void)cap;
    const tp_case_t *c = arg;
    rank_report_t *out = outp;
    sd_comm_t *comm = NULL;
    sd_model_t *m = NULL;
    int joined = join_and_load(rank, size, job, c->path, 32, &comm, &m, out);
    if (joined) return joined;
    sd_engine_params_t ep;
    sd_engine_params_default(&ep);
    ep.model = m;
    ep.spec.drafter = SD_DRAFTER_NONE;
    ep.max_active = 1;
    ep.max_queued = 1;
    sd_engine_t *e = NULL;
    if (sd_engine_create(&ep, &e) != SD_OK) return report(out, 5, "engine", sd_last_error());
    int code = 0;
    if (rank == 0) {
        code = admission_leader(e, out);
    } else if (sd_engine_wait_stopped(e) != SD_OK) {
        code = report(out, 8, "wait_stopped", sd_last_error());
    }
    sd_engine_free(e);
    sd_model_free(m);
    sd_comm_free(comm);
    return code;
}

Test(engine_scheduler_tp, admitted_requests_stay_counted, .timeout = 120)
{
    setenv("SPECDEC_COMM_TIMEOUT_MS", "10000", 1);
    setenv("SPECDEC_FAULT", "delay:rank=1:ms=200", 1);
    tp_case_t c = {.idle_ms = 0};
    sd_synth_spec_t s;
    sd_synth_spec_default(&s);
    s.tokenizer = SD_SYNTH_TOKENIZER_NONE;
    s.n_vocab = 96;
    s.n_layer = 1; /* few collectives: each costs rank 1 its 200 ms */
    sd_test_tmp_path(c.path, sizeof c.path, "schedtp-admit");
    cr_assert_eq(sd_synth_write_file(&s, c.path), SD_OK, "%s", sd_last_error());
    sd_test_ranks_t r;
    int ok = sd_test_run_ranks(2, admission_rank, &c, sizeof(rank_report_t), 90, &r);
    unsetenv("SPECDEC_FAULT");
    for (int i = 0; i < 2; i++) {
        rank_report_t *o = sd_test_rank_out(&r, i);
        cr_expect_eq(r.codes[i], 0, "rank %d: exit %d: %s", i, r.codes[i], o->msg);
    }
    cr_assert(ok);
    cr_log_info("admission test: %.1f s", r.seconds);
    sd_test_ranks_free(&r);
    remove(c.path);
}
