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

static int rank_main(int rank, int size, const char *job, void *arg, void *outp, size_t cap)
{
    (void)cap;
    const tp_case_t *c = arg;
    rank_report_t *out = outp;
    sd_comm_t *comm = NULL;
    if (sd_comm_intra_new(rank, size, job, &comm) != SD_OK) return report(out, 2, "comm", sd_last_error());
    sd_model_params_t mp;
    sd_model_params_default(&mp);
    mp.path = c->path;
    mp.n_threads = 1;
    mp.n_ctx = 128;
    mp.comm = comm;
    sd_model_t *m = NULL;
    if (sd_model_load(&mp, &m) != SD_OK) return report(out, 3, "load", sd_last_error());
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
