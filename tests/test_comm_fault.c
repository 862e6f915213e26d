/* No silent hang: injected faults (SPECDEC_FAULT) against the intra backend with ranks as
 * forked processes - a stalled rank gives every other rank SD_ERR_COMM_TIMEOUT naming it
 * within timeout + 2 s, a crashed one SD_ERR_PEER_LOST at once, a delayed one only slows
 * things down - plus the flight record, sticky failure, mismatched collectives, the
 * fault grammar, and the watchdog aborting a wait that ignores its deadline. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "comm/comm_impl.h"
#include "core/clock.h"
#include "support/ranks.h"
#include "support/test_util.h"

#define N_OPS 5

typedef struct fault_out {
    int fail_at;           /* 1-based collective that failed; 0 none */
    sd_status_t status;    /* of that collective */
    double fail_seconds;   /* how long the failing call took */
    sd_status_t again;     /* the next collective on the failed comm (sticky) */
    double again_seconds;
    double total_seconds;
    char msg[512], again_msg[512];
} fault_out_t;

typedef struct fault_arg {
    char err_stem[256]; /* rank q's stderr goes to <err_stem>-<q>.err */
} fault_arg_t;

static void err_path(const fault_arg_t *a, int rank, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s-%d.err", a->err_stem, rank);
}

/* Read a rank's captured stderr (NUL-terminated, "" if absent). */
static char *slurp(const fault_arg_t *a, int rank)
{
    char path[300];
    err_path(a, rank, path, sizeof path);
    FILE *f = fopen(path, "r");
    char *buf = calloc(1, 1 << 16);
    if (f) {
        size_t n = fread(buf, 1, (1 << 16) - 1, f);
        buf[n] = '\0';
        fclose(f);
        remove(path);
    }
    return buf;
}

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p++) n++;
    return n;
}

/* N_OPS allreduces of 100 floats on the world from sd_comm_init; stops at the first
 * failure and tries one more collective to see the failure stick. */
static int faulty_rank(int rank, int size, const char *job, void *argp, void *outp, size_t cap)
{
    fault_out_t *out = outp;
    char path[300];
    err_path(argp, rank, path, sizeof path);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd >= 0) dup2(fd, 2);
    sd_comm_t *w = NULL;
    if (sd_comm_init(&w) != SD_OK) {
        snprintf(out->msg, sizeof out->msg, "sd_comm_init: %s", sd_last_error());
        return 2;
    }
    float v[100];
    double t0 = sd_now();
    for (int op = 1; op <= N_OPS && out->fail_at == 0; op++) {
        for (int i = 0; i < 100; i++) v[i] = (float)(rank + i);
        double t = sd_now();
        sd_status_t st = sd_comm_allreduce_sum(w, v, 100, SD_COMM_F32);
        if (st == SD_OK && v[7] != (float)(size * 7 + size * (size - 1) / 2)) {
            snprintf(out->msg, sizeof out->msg, "op %d: wrong sum %g", op, v[7]);
            return 3;
        }
        if (st == SD_OK) continue;
        out->fail_at = op;
        out->status = st;
        out->fail_seconds = sd_now() - t;
        snprintf(out->msg, sizeof out->msg, "%s", sd_last_error());
        t = sd_now();
        out->again = sd_comm_barrier(w);
        out->again_seconds = sd_now() - t;
        snprintf(out->again_msg, sizeof out->again_msg, "%s", sd_last_error());
    }
    out->total_seconds = sd_now() - t0;
    sd_comm_free(w);
    return 0;
}

static void run_faulty(int size, const char *fault, const char *timeout_ms, int harness_s,
                       fault_arg_t *a, sd_test_ranks_t *r)
{
    sd_test_tmp_path(a->err_stem, sizeof a->err_stem, "fault");
    setenv("SPECDEC_FAULT", fault, 1);
    setenv("SPECDEC_COMM_TIMEOUT_MS", timeout_ms, 1);
    sd_test_run_ranks(size, faulty_rank, a, sizeof(fault_out_t), harness_s, r);
    unsetenv("SPECDEC_FAULT");
    unsetenv("SPECDEC_COMM_TIMEOUT_MS");
}

/* Drop what is left of the run: its stderr files, its ranks; check /dev/shm is clean. */
static void end_run(fault_arg_t *a, sd_test_ranks_t *r)
{
    for (int q = 0; q < r->size; q++) free(slurp(a, q));
    cr_expect(sd_test_no_shm_left(r->job), "/dev/shm/specdec-%s* left behind", r->job);
    sd_test_ranks_free(r);
}

/* Every rank but `bad` saw `status` at collective `at`, naming the bad rank. */
static void expect_survivors(const sd_test_ranks_t *r, int bad, int at, sd_status_t status,
                             const char *needle, double max_seconds)
{
    for (int q = 0; q < r->size; q++) {
        if (q == bad) continue;
        const fault_out_t *o = sd_test_rank_out(r, q);
        cr_expect_eq(r->codes[q], 0, "rank %d exited %d: %s", q, r->codes[q], o->msg);
        cr_expect_eq(o->fail_at, at, "rank %d failed at collective %d, not %d (%s)", q, o->fail_at,
                     at, o->msg);
        cr_expect_eq(o->status, status, "rank %d: %s (%s)", q, sd_status_string(o->status), o->msg);
        cr_expect(strstr(o->msg, needle), "rank %d: '%s' does not name '%s'", q, o->msg, needle);
        cr_expect_leq(o->fail_seconds, max_seconds, "rank %d took %.2f s to report", q,
                      o->fail_seconds);
        /* sticky: the next collective returns the same status at once */
        cr_expect_eq(o->again, status, "rank %d: next op gave %s", q, sd_status_string(o->again));
        cr_expect(strstr(o->again_msg, "failed earlier"), "rank %d: '%s'", q, o->again_msg);
        cr_expect_lt(o->again_seconds, 0.05, "rank %d: the failed comm took %.3f s to refuse", q,
                     o->again_seconds);
    }
}

Test(comm_fault, stalled_rank_times_out_naming_it, .timeout = 30)
{
    fault_arg_t a;
    sd_test_ranks_t r;
    /* rank 1 stalls at its 3rd collective (seq 4: seq 1 is the init rendezvous) */
    run_faulty(4, "stall:rank=1:op=3", "1000", 4, &a, &r);
    expect_survivors(&r, 1, 3, SD_ERR_COMM_TIMEOUT, "rank(s) 1 had not arrived", 1.0 + 2.0);
    for (int q = 0; q < 4; q++) {
        const fault_out_t *o = sd_test_rank_out(&r, q);
        char *err = slurp(&a, q);
        if (q == 1) {
            cr_expect_eq(r.codes[1], -1, "the stalled rank should still be stalled (killed)");
            cr_expect(strstr(err, "stalls at collective 3"), "rank 1 stderr: %s", err);
            /* its watchdog saw seq 4 overdue: record printed, communicator aborted */
            cr_expect(strstr(err, "watchdog: seq 4 is"), "rank 1 stderr: %s", err);
            cr_expect(strstr(err, "op allreduce seq 4 bytes 400 state running"), "rank 1: %s", err);
        } else {
            cr_expect(strstr(o->msg, "allreduce seq 4 (400 bytes) timed out after 1000 ms"),
                      "rank %d: %s", q, o->msg);
            cr_expect_geq(o->fail_seconds, 0.95, "rank %d gave up early", q);
            /* the flight record, once, naming op, seq, bytes and state of every op */
            cr_expect_eq(count(err, "specdec flight: rank"), 1, "rank %d stderr: %s", q, err);
            cr_expect(strstr(err, "op init seq 1 bytes"), "rank %d stderr: %s", q, err);
            cr_expect(strstr(err, "op allreduce seq 3 bytes 400 state done"), "rank %d: %s", q, err);
            cr_expect(strstr(err, "op allreduce seq 4 bytes 400 state failed SD_ERR_COMM_TIMEOUT"),
                      "rank %d stderr: %s", q, err);
        }
        free(err);
    }
    end_run(&a, &r);
}

Test(comm_fault, crashed_rank_is_peer_lost_at_once, .timeout = 30)
{
    fault_arg_t a;
    sd_test_ranks_t r;
    run_faulty(3, "crash:rank=1:op=2", "20000", 15, &a, &r);
    expect_survivors(&r, 1, 2, SD_ERR_PEER_LOST, "rank 1 (pid", 1.0);
    cr_expect_eq(r.codes[1], 128 + 9, "rank 1 should die of SIGKILL, exited %d", r.codes[1]);
    end_run(&a, &r);
}

Test(comm_fault, delayed_rank_is_only_slower, .timeout = 30)
{
    fault_arg_t a;
    sd_test_ranks_t r;
    run_faulty(2, "delay:rank=1:ms=60", "5000", 15, &a, &r);
    for (int q = 0; q < 2; q++) {
        const fault_out_t *o = sd_test_rank_out(&r, q);
        cr_expect_eq(r.codes[q], 0, "rank %d exited %d: %s", q, r.codes[q], o->msg);
        cr_expect_eq(o->fail_at, 0, "rank %d failed: %s", q, o->msg);
        cr_expect_geq(o->total_seconds, N_OPS * 0.06, "rank %d was not slowed down (%.3f s)", q,
                      o->total_seconds);
    }
    end_run(&a, &r);
}

/* Ranks calling different collectives fail alike instead of hanging or mixing data. */
static int mismatch_rank(int rank, int size, const char *job, void *arg, void *outp, size_t cap)
{
    fault_out_t *out = outp;
    sd_comm_t *w = NULL;
    if (sd_comm_intra_new(rank, size, job, &w) != SD_OK) return 2;
    float v[10] = {0};
    double t = sd_now();
    out->status = rank == 0 ? sd_comm_allreduce_sum(w, v, 10, SD_COMM_F32)
                            : sd_comm_allgather(w, v, 40, (float[20]){0});
    out->fail_seconds = sd_now() - t;
    snprintf(out->msg, sizeof out->msg, "%s", sd_last_error());
    sd_comm_free(w);
    return 0;
}

Test(comm_fault, mismatched_collectives_diverge, .timeout = 30)
{
    sd_test_ranks_t r;
    setenv("SPECDEC_COMM_TIMEOUT_MS", "20000", 1);
    int ok = sd_test_run_ranks(2, mismatch_rank, NULL, sizeof(fault_out_t), 15, &r);
    unsetenv("SPECDEC_COMM_TIMEOUT_MS");
    cr_assert(ok, "a rank failed to run");
    for (int q = 0; q < 2; q++) {
        const fault_out_t *o = sd_test_rank_out(&r, q);
        cr_expect_eq(o->status, SD_ERR_RANK_DIVERGENCE, "rank %d: %s (%s)", q,
                     sd_status_string(o->status), o->msg);
        cr_expect(strstr(o->msg, "allreduce seq 2 (40 bytes") && strstr(o->msg, "allgather seq 2"),
                  "rank %d: %s", q, o->msg);
        cr_expect_lt(o->fail_seconds, 2.0);
    }
    cr_expect(sd_test_no_shm_left(r.job));
    sd_test_ranks_free(&r);
}

/* ---- the SPECDEC_FAULT grammar ------------------------------------------------------- */

Test(comm_fault, malformed_fault_spec_names_the_token, .timeout = 10)
{
    static const char *const bad[][2] = {
        {"stall:rank=1", "'stall:rank=1'"},
        {"explode:rank=1:op=2", "'explode:rank=1:op=2'"},
        {"stall:rank=x:op=1", "'stall:rank=x:op=1'"},
        {"crash:rank=1:op=0", "'crash:rank=1:op=0'"},
        {"delay:rank=1:op=5", "'delay:rank=1:op=5'"},
        {"delay:rank=1:ms=5:x=1", "'delay:rank=1:ms=5:x=1'"},
        {"delay:rank=0:ms=1,corrupt:rank=1:step=", "'corrupt:rank=1:step='"},
        {"corrupt-draft:rank=1:op=3", "'corrupt-draft:rank=1:op=3'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        setenv("SPECDEC_FAULT", bad[i][0], 1);
        cr_expect_eq(sd_fault_check_env(), SD_ERR_INVALID_ARG, "'%s' accepted", bad[i][0]);
        cr_expect(strstr(sd_last_error(), bad[i][1]), "'%s' lacks %s", sd_last_error(), bad[i][1]);
        sd_comm_t *c = NULL;
        cr_expect_eq(sd_comm_single_new(&c), SD_ERR_INVALID_ARG, "a comm was made with '%s'",
                     bad[i][0]);
    }
    setenv("SPECDEC_FAULT", "delay:rank=0:ms=0,corrupt:rank=1:step=5", 1);
    cr_assert_eq(sd_fault_check_env(), SD_OK, "%s", sd_last_error());
    cr_expect(sd_fault_corrupt_step(1, 5));
    cr_expect(!sd_fault_corrupt_step(1, 4));
    cr_expect(!sd_fault_corrupt_step(0, 5));
    cr_expect(!sd_fault_corrupt_draft(1, 5), "corrupt is not corrupt-draft");
    setenv("SPECDEC_FAULT", "corrupt-draft:rank=1:step=5", 1); /* from step 5 on */
    cr_assert_eq(sd_fault_check_env(), SD_OK, "%s", sd_last_error());
    cr_expect(!sd_fault_corrupt_draft(1, 4));
    cr_expect(sd_fault_corrupt_draft(1, 5) && sd_fault_corrupt_draft(1, 9));
    cr_expect(!sd_fault_corrupt_draft(0, 9));
    cr_expect(!sd_fault_corrupt_step(1, 5), "corrupt-draft is not corrupt");
    unsetenv("SPECDEC_FAULT");
    cr_assert_eq(sd_fault_check_env(), SD_OK);
    cr_expect(!sd_fault_corrupt_step(1, 5), "the fault outlived SPECDEC_FAULT");
}

/* ---- the watchdog: a backend wait that never looks at its deadline ------------------- */

/* Like a wait inside NCCL: only the abort flag ends it (or 10 s, so the test cannot hang). */
static sd_status_t deaf_allreduce(sd_comm_t *c, void *buf, size_t count, sd_comm_dtype_t dt)
{
    for (int i = 0; i < 10000 && !atomic_load(&c->abort_flag); i++) usleep(1000);
    return sd_set_error(SD_ERR_COMM_TIMEOUT, "deaf backend aborted");
}

static void deaf_destroy(sd_comm_t *c)
{
    sd_comm_teardown(c);
    free(c);
}

static const sd_comm_ops_t deaf_ops = {
    .name = "deaf",
    .allreduce_sum = deaf_allreduce,
    .destroy = deaf_destroy,
};

/* Threads of this process named as the watchdog (by name: a sanitizer may run threads of
 * its own, ThreadSanitizer starts one in a forked child). */
static int n_threads(void)
{
    DIR *d = opendir("/proc/self/task");
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d)) != NULL;) {
        if (e->d_name[0] == '.') continue;
        char path[300], name[32] = "";
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (f && fgets(name, sizeof name, f)) name[strcspn(name, "\n")] = '\0';
        if (f) fclose(f);
        n += strcmp(name, SD_WATCHDOG_THREAD_NAME) == 0;
    }
    if (d) closedir(d);
    return n;
}

Test(comm_fault, watchdog_aborts_an_overdue_op, .timeout = 20)
{
    char path[300];
    sd_test_tmp_path(path, sizeof path, "watchdog");
    setenv("SPECDEC_COMM_TIMEOUT_MS", "500", 1);
    int threads0 = n_threads();
    sd_comm_t *c = calloc(1, sizeof *c);
    cr_assert_eq(sd_comm_setup(c, &deaf_ops, NULL, 0, 2, "deafgrp", 0), SD_OK, "%s", sd_last_error());
    cr_expect_eq(n_threads(), threads0 + 1, "no watchdog thread started");
    int saved = dup(2), fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(fd, 2);
    float v = 1;
    double t = sd_now();
    sd_status_t st = sd_comm_allreduce_sum(c, &v, 1, SD_COMM_F32);
    double took = sd_now() - t;
    sd_status_t again = sd_comm_allreduce_sum(c, &v, 1, SD_COMM_F32);
    dup2(saved, 2);
    close(fd);
    close(saved);
    cr_expect_eq(st, SD_ERR_COMM_TIMEOUT);
    cr_expect_eq(again, SD_ERR_COMM_TIMEOUT, "not sticky");
    /* deadline 0.5 s + grace 1 s, checked every 0.1 s */
    cr_expect(took >= 1.45 && took < 3.0, "the watchdog aborted after %.2f s", took);
    FILE *f = fopen(path, "r");
    char err[8192] = "";
    if (f) {
        err[fread(err, 1, sizeof err - 1, f)] = '\0';
        fclose(f);
    }
    remove(path);
    cr_expect(strstr(err, "watchdog: seq 1 is") && strstr(err, "past its 500 ms deadline"),
              "stderr: %s", err);
    cr_expect(strstr(err, "group 'deafgrp' op allreduce seq 1 bytes 4 state running"), "stderr: %s",
              err);
    cr_expect_eq(count(err, "specdec flight: rank"), 1, "the record must print once: %s", err);
    sd_comm_free(c);
    cr_expect_eq(n_threads(), threads0, "the watchdog thread outlived the last communicator");
    unsetenv("SPECDEC_COMM_TIMEOUT_MS");
}
