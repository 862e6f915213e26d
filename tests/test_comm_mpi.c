/* The mpi comm backend under a real mpirun (2 and 4 ranks, oversubscribed): allreduce of
 * every dtype and of sizes on both sides of the two-shot threshold equals the rank-order
 * reference and is bit-identical on every rank; allgather (also in place), broadcast and
 * split_first; a stalled peer (SPECDEC_FAULT) turns into SD_ERR_COMM_TIMEOUT on the other
 * rank within the timeout + 2 s, and mpirun ends the job. The ranks are
 * tests/mpi/mpi_rank.c (sd_mpi_rank, built next to this test). Skipped without mpirun or
 * without the mpi backend. */
#include <criterion/criterion.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "comm/comm.h"
#include "core/clock.h"

enum { MAX_RANKS = 4, MAX_LINES = 256, LINE = 512 };

static int have_mpirun(void)
{
    const char *path = getenv("PATH");
    char buf[PATH_MAX];
    for (const char *p = path ? path : ""; *p;) {
        int n = (int)strcspn(p, ":");
        snprintf(buf, sizeof buf, "%.*s/mpirun", n ? n : 1, n ? p : ".");
        if (access(buf, X_OK) == 0) return 1;
        p += n + (p[n] == ':');
    }
    return 0;
}

static void skip_without_mpi(void)
{
    if (!sd_comm_mpi_built()) cr_skip_test("specdec was built without MPI");
    if (!have_mpirun()) cr_skip_test("mpirun is not on PATH");
}

/* sd_mpi_rank sits next to this test's executable. */
static void rank_exe(char *buf, size_t cap)
{
    char self[PATH_MAX - 16];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    cr_assert_gt(n, 0);
    self[n] = '\0';
    *strrchr(self, '/') = '\0';
    snprintf(buf, cap, "%s/sd_mpi_rank", self);
    cr_assert_eq(access(buf, X_OK), 0, "%s is missing: tests/CMakeLists.txt must build sd_mpi_rank",
                 buf);
}

typedef struct mpi_run {
    int status;     /* waitpid status of mpirun */
    double seconds; /* until mpirun ended */
    char dir[512];  /* the ranks' output files */
    char log[528];  /* mpirun's stdout + stderr */
} mpi_run_t;

/* SIGTERM makes mpirun kill its ranks (each runs in a process group of its own); SIGKILL
 * mpirun's group if it is still there after 5 s. Reaps mpirun. */
static void stop_mpirun(pid_t pid)
{
    kill(pid, SIGTERM);
    for (int i = 0; i < 500 && waitpid(pid, NULL, WNOHANG) == 0; i++)
        nanosleep(&(struct timespec){.tv_nsec = 10 * 1000 * 1000}, NULL);
    if (killpg(pid, SIGKILL) == 0) waitpid(pid, NULL, 0);
}

/* mpirun -n n sd_mpi_rank mode dir, with `env` (NAME=VALUE, NULL-terminated) added;
 * stopped after timeout_s. */
static void run_mpirun(int n, const char *mode, const char *const *env, int timeout_s, mpi_run_t *r)
{
    char exe[PATH_MAX], ranks[8];
    rank_exe(exe, sizeof exe);
    snprintf(ranks, sizeof ranks, "%d", n);
    static int counter;
    const char *tmp = getenv("SPECDEC_TEST_TMP");
    snprintf(r->dir, sizeof r->dir, "%s/mpi-%d-%d", tmp && tmp[0] ? tmp : "/tmp", (int)getpid(),
             counter++);
    cr_assert_eq(mkdir(r->dir, 0755), 0, "mkdir %s", r->dir);
    snprintf(r->log, sizeof r->log, "%s/mpirun.log", r->dir);
    double t0 = sd_now();
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        setpgid(0, 0);
        freopen(r->log, "w", stdout);
        dup2(STDOUT_FILENO, STDERR_FILENO);
        setenv("SPECDEC_COMM", "mpi", 1);
        /* sanitizer builds: Open MPI's own allocations outlive MPI_Finalize */
        setenv("LSAN_OPTIONS",
               "suppressions=" SPECDEC_SOURCE_DIR "/tests/mpi/lsan.supp:print_suppressions=0", 1);
        const char *asan = getenv("ASAN_OPTIONS");
        char asan_opts[512];
        snprintf(asan_opts, sizeof asan_opts, "%s%sfast_unwind_on_malloc=0", asan ? asan : "",
                 asan && asan[0] ? ":" : "");
        setenv("ASAN_OPTIONS", asan_opts, 1);
        for (const char *const *e = env; e && *e; e++) putenv((char *)*e);
        execlp("mpirun", "mpirun", "--allow-run-as-root", "--oversubscribe", "-n", ranks, exe, mode,
               r->dir, (char *)NULL);
        _exit(127);
    }
    setpgid(pid, pid);
    while (waitpid(pid, &r->status, WNOHANG) == 0) {
        if (sd_now() - t0 > timeout_s) {
            stop_mpirun(pid);
            cr_assert_fail("mpirun -n %d %s still running after %d s (log %s)", n, mode, timeout_s,
                           r->log);
        }
        nanosleep(&(struct timespec){.tv_nsec = 10 * 1000 * 1000}, NULL);
    }
    r->seconds = sd_now() - t0;
}

/* Remove the run's files, unless mpirun ended unexpectedly (its log is then kept). */
static void cleanup(const mpi_run_t *run, int n, int expected_exit)
{
    if (!WIFEXITED(run->status) || WEXITSTATUS(run->status) != expected_exit) return;
    char path[600];
    for (int r = 0; r < n; r++) {
        snprintf(path, sizeof path, "%s/rank%d.txt", run->dir, r);
        remove(path);
    }
    remove(run->log);
    rmdir(run->dir);
}

/* The lines of rank r's output file. */
static int read_rank(const mpi_run_t *run, int r, char lines[][LINE])
{
    char path[600];
    snprintf(path, sizeof path, "%s/rank%d.txt", run->dir, r);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "rank %d wrote no %s (mpirun log: %s)", r, path, run->log);
    int n = 0;
    for (; n < MAX_LINES && fgets(lines[n], LINE, f); n++) lines[n][strcspn(lines[n], "\n")] = '\0';
    fclose(f);
    return n;
}

static void collectives(int n)
{
    skip_without_mpi();
    mpi_run_t run;
    run_mpirun(n, "collectives", NULL, 90, &run);
    static char lines[MAX_RANKS][MAX_LINES][LINE];
    int n_lines[MAX_RANKS];
    for (int r = 0; r < n; r++) {
        n_lines[r] = read_rank(&run, r, lines[r]);
        char want[64];
        snprintf(want, sizeof want, "backend mpi rank %d size %d", r, n);
        cr_expect_str_eq(lines[r][0], want);
        for (int i = 0; i < n_lines[r]; i++)
            cr_expect(strncmp(lines[r][i], "FAIL", 4), "rank %d: %s", r, lines[r][i]);
        cr_expect_str_eq(lines[r][n_lines[r] - 1], "ok", "rank %d did not finish", r);
    }
    int hashes = 0;
    for (int i = 0; i < n_lines[0]; i++) {
        if (strncmp(lines[0][i], "hash ", 5)) continue;
        hashes++;
        for (int r = 1; r < n; r++)
            cr_expect(i < n_lines[r] && !strcmp(lines[0][i], lines[r][i]),
                      "rank 0 '%s' vs rank %d '%s'", lines[0][i], r,
                      i < n_lines[r] ? lines[r][i] : "(none)");
    }
    cr_expect_eq(hashes, 33, "allreduce cases on rank 0: %d", hashes);
    cr_expect(WIFEXITED(run.status) && WEXITSTATUS(run.status) == 0, "mpirun status %#x (log %s)",
              run.status, run.log);
    cleanup(&run, n, 0);
}

Test(comm_mpi, collectives_2_ranks, .timeout = 120) { collectives(2); }

Test(comm_mpi, collectives_4_ranks, .timeout = 120) { collectives(4); }

/* Rank 1 stalls at its 5th collective: rank 0 times out there within timeout + 2 s with
 * SD_ERR_COMM_TIMEOUT naming the op, exits 3, and mpirun takes the stalled rank down. */
Test(comm_mpi, stalled_peer_times_out, .timeout = 60)
{
    skip_without_mpi();
    const char *env[] = {"SPECDEC_FAULT=stall:rank=1:op=5", "SPECDEC_COMM_TIMEOUT_MS=2000", NULL};
    mpi_run_t run;
    run_mpirun(2, "timeout", env, 30, &run);
    char lines[MAX_LINES][LINE];
    int n = read_rank(&run, 0, lines);
    cr_assert_eq(n, 2, "rank 0 wrote %d lines (log %s)", n, run.log);
    int op = 0;
    char status[64];
    double secs = 0;
    cr_assert_eq(sscanf(lines[1], "status %d %63s %lf", &op, status, &secs), 3, "%s", lines[1]);
    cr_expect_eq(op, 5);
    cr_expect_str_eq(status, "SD_ERR_COMM_TIMEOUT");
    cr_expect(secs >= 1.9 && secs <= 4.0, "timed out after %.3f s (timeout 2 s)", secs);
    cr_expect(strstr(lines[1], "barrier seq "), "message names the op and seq: %s", lines[1]);
    cr_expect(strstr(lines[1], "rank(s) 1 had not arrived"), "message names rank 1: %s", lines[1]);
    cr_expect(WIFEXITED(run.status) && WEXITSTATUS(run.status) == 3, "mpirun status %#x (log %s)",
              run.status, run.log);
    cr_expect_lt(run.seconds, 20, "mpirun took %.1f s to end the job", run.seconds);
    cleanup(&run, 2, 3);
}

/* 4 ranks, rank 2 stalls: rank 0 names rank 2 (and only it) as the one that had not arrived. */
Test(comm_mpi, stalled_peer_is_named, .timeout = 60)
{
    skip_without_mpi();
    const char *env[] = {"SPECDEC_FAULT=stall:rank=2:op=5", "SPECDEC_COMM_TIMEOUT_MS=1500", NULL};
    mpi_run_t run;
    run_mpirun(4, "timeout", env, 30, &run);
    char lines[MAX_LINES][LINE];
    int n = read_rank(&run, 0, lines);
    cr_assert_eq(n, 2, "rank 0 wrote %d lines (log %s)", n, run.log);
    cr_expect(strstr(lines[1], "SD_ERR_COMM_TIMEOUT") && strstr(lines[1], ": rank(s) 2 had not arrived"),
              "rank 0: %s", lines[1]);
    cleanup(&run, 4, 3);
}
