/* Forked ranks for multi-rank tests (tests/support/ranks.h). */
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "support/ranks.h"

static void rank_child(int rank, int size, const char *job, sd_test_rank_fn fn, void *arg,
                       void *out, size_t cap)
{
    char v[16];
    snprintf(v, sizeof v, "%d", rank);
    setenv("SPECDEC_RANK", v, 1);
    snprintf(v, sizeof v, "%d", size);
    setenv("SPECDEC_WORLD_SIZE", v, 1);
    setenv("SPECDEC_JOB_ID", job, 1);
    int code = fn(rank, size, job, arg, out, cap);
    fflush(NULL);
    _exit(code);
}

/* Reap children until all ended or the deadline passed; returns how many are left. */
static int reap(pid_t *pids, sd_test_ranks_t *r, double deadline)
{
    int left = r->size;
    while (left > 0 && sd_now() < deadline) {
        left = 0;
        for (int i = 0; i < r->size; i++) {
            if (pids[i] <= 0) continue;
            int st;
            pid_t got = waitpid(pids[i], &st, WNOHANG);
            if (got == pids[i]) {
                r->codes[i] = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
                pids[i] = 0;
            } else {
                left++;
            }
        }
        if (left > 0) usleep(2000);
    }
    return left;
}

int sd_test_run_ranks(int size, sd_test_rank_fn fn, void *arg, size_t cap, int timeout_s,
                      sd_test_ranks_t *r)
{
    memset(r, 0, sizeof *r);
    if (size < 1 || size > 64) return 0;
    r->size = size;
    r->cap = cap;
    r->outs = mmap(NULL, (size_t)size * cap, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                   -1, 0);
    if (r->outs == MAP_FAILED) return r->outs = NULL, 0;
    memset(r->outs, 0, (size_t)size * cap);
    static int runs;
    char *job = r->job;
    snprintf(job, sizeof r->job, "t%d-%d-%ld", (int)getpid(), ++runs, (long)time(NULL) % 100000);
    pid_t pids[64] = {0};
    double t0 = sd_now();
    fflush(NULL);
    for (int i = 0; i < size; i++) {
        pids[i] = fork();
        if (pids[i] == 0) rank_child(i, size, job, fn, arg, (char *)r->outs + (size_t)i * cap, cap);
        r->codes[i] = -1;
    }
    int left = reap(pids, r, t0 + timeout_s);
    for (int i = 0; i < size; i++)
        if (pids[i] > 0) kill(pids[i], SIGKILL);
    for (int i = 0; i < size; i++)
        if (pids[i] > 0) waitpid(pids[i], NULL, 0); /* codes stay -1: timed out */
    r->seconds = sd_now() - t0;
    int ok = left == 0;
    for (int i = 0; i < size; i++) ok = ok && r->codes[i] == 0;
    return ok;
}

void *sd_test_rank_out(const sd_test_ranks_t *r, int rank) { return (char *)r->outs + (size_t)rank * r->cap; }

void sd_test_ranks_free(sd_test_ranks_t *r)
{
    if (r->outs) munmap(r->outs, (size_t)r->size * r->cap);
    r->outs = NULL;
}

int sd_test_no_shm_left(const char *job)
{
    char prefix[96];
    snprintf(prefix, sizeof prefix, "specdec-%s", job);
    DIR *d = opendir("/dev/shm");
    if (d == NULL) return 1;
    int clean = 1;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0) clean = 0;
    closedir(d);
    return clean;
}
