/* Multi-rank tests: run one function as N forked rank processes and collect what each
 * wrote. Ranks are processes (as under `specdec launch`), so they may outnumber cores. */
#ifndef SPECDEC_TESTS_RANKS_H
#define SPECDEC_TESTS_RANKS_H

#include <stddef.h>

/* The body of one rank: out[cap] is this rank's slot of memory shared with the parent.
 * job is a job id unique to this run (for sd_comm_intra_new / SPECDEC_JOB_ID). Its
 * return value is the rank's exit code. */
typedef int (*sd_test_rank_fn)(int rank, int size, const char *job, void *arg, void *out,
                               size_t cap);

typedef struct sd_test_ranks {
    int size;
    int codes[64];  /* exit code of each rank; 128 + signal when killed; -1 timed out */
    void *outs;     /* [size * cap] the ranks' slots (valid until sd_test_ranks_free) */
    size_t cap;
    double seconds; /* until the last rank ended */
    char job[48];   /* the job id the ranks got */
} sd_test_ranks_t;

/* Fork `size` (<= 64) ranks running fn, wait at most timeout_s seconds (then SIGKILL the
 * rest: a test never hangs), reap every child. Returns 1 when every rank exited 0. The
 * environment of the children is the parent's plus SPECDEC_RANK / SPECDEC_WORLD_SIZE /
 * SPECDEC_JOB_ID. */
int sd_test_run_ranks(int size, sd_test_rank_fn fn, void *arg, size_t cap, int timeout_s,
                      sd_test_ranks_t *r);
void *sd_test_rank_out(const sd_test_ranks_t *r, int rank);
void sd_test_ranks_free(sd_test_ranks_t *r);

/* 1 when no /dev/shm entry starts with "specdec-<job>". */
int sd_test_no_shm_left(const char *job);

#endif
