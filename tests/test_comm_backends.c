/* The comm backend table (comm/backends.c): every row complete, names unique, single and
 * intra always built; SPECDEC_COMM=<each built name> selects it and sd_comm_init builds it
 * at one rank (a forked rank each: MPI and CUDA initialise there, never in the test
 * process; nccl only with a GPU); an unknown name, a not-built one and one that cannot run
 * the world are refused naming the value and the built list. Needs the table (comm_impl.h). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm/comm_impl.h"
#include "support/ranks.h"

#define RANK_TIMEOUT_S 30

Test(comm_backends, every_row_is_complete)
{
    size_t n;
    const sd_comm_backend_t *b = sd_comm_backends(&n);
    cr_assert_gt(n, 0);
    for (size_t i = 0; i < n; i++) {
        cr_assert(b[i].name && b[i].name[0], "row %zu has no name", i);
        cr_expect_not_null(b[i].built, "%s: no built()", b[i].name);
        cr_expect(b[i].memory == SD_COMM_HOST_MEMORY || b[i].memory == SD_COMM_DEVICE_MEMORY,
                  "%s: memory %d", b[i].name, (int)b[i].memory);
        cr_expect_geq(b[i].max_ranks, 1, "%s: max_ranks %d", b[i].name, b[i].max_ranks);
        cr_expect_not_null(b[i].create, "%s: no create()", b[i].name);
    }
}

Test(comm_backends, names_are_unique_and_found)
{
    size_t n;
    const sd_comm_backend_t *b = sd_comm_backends(&n);
    for (size_t i = 0; i < n; i++) {
        cr_expect_eq(sd_comm_backend_find(b[i].name), &b[i], "%s", b[i].name);
        for (size_t j = i + 1; j < n; j++)
            cr_expect(strcmp(b[i].name, b[j].name) != 0, "'%s' twice", b[i].name);
    }
    cr_expect_null(sd_comm_backend_find("tcp"));
    cr_expect_null(sd_comm_backend_find(""));
}

/* The built rows' names, in table order, as the error messages list them. */
static void built_list(char *buf, size_t cap)
{
    size_t n, used = 0;
    const sd_comm_backend_t *b = sd_comm_backends(&n);
    buf[0] = '\0';
    for (size_t i = 0; i < n; i++)
        if (b[i].built())
            used += (size_t)snprintf(buf + used, cap - used, "%s%s", used ? ", " : "", b[i].name);
}

Test(comm_backends, single_and_intra_are_always_built)
{
    cr_assert(sd_comm_backend_find("single")->built());
    cr_assert(sd_comm_backend_find("intra")->built());
    cr_expect_eq(sd_comm_backend_find("mpi")->built(), sd_comm_mpi_built());
    cr_expect_eq(sd_comm_backend_find("nccl")->built(), sd_comm_nccl_built());
    char want[128], got[128];
    built_list(want, sizeof want);
    sd_comm_built_names(got, sizeof got);
    cr_expect_str_eq(got, want);
    cr_expect(strncmp(got, "single, intra", 13) == 0, "'%s'", got);
}

/* SPECDEC_COMM=v at world_size: the status, and the message naming v and the built list. */
static void expect_refused(const char *v, int world_size, sd_status_t want)
{
    char built[128], needle[160];
    built_list(built, sizeof built);
    setenv("SPECDEC_COMM", v, 1);
    const char *name = NULL;
    sd_status_t st = sd_comm_select(world_size, 0, &name);
    unsetenv("SPECDEC_COMM");
    cr_expect_eq(st, want, "SPECDEC_COMM=%s: %s (%s)", v, sd_status_string(st), sd_last_error());
    cr_expect(strstr(sd_last_error(), v), "'%s' does not name '%s'", sd_last_error(), v);
    snprintf(needle, sizeof needle, "(built: %s)", built);
    cr_expect(strstr(sd_last_error(), needle), "'%s' lacks '%s'", sd_last_error(), needle);
}

Test(comm_backends, override_selects_each_built_name)
{
    size_t n;
    const sd_comm_backend_t *b = sd_comm_backends(&n);
    for (size_t i = 0; i < n; i++) {
        if (!b[i].built()) continue;
        setenv("SPECDEC_COMM", b[i].name, 1);
        int worlds[] = {1, 2};
        for (int w = 0; w < 2; w++) {
            if (worlds[w] > b[i].max_ranks) continue;
            const char *name = NULL;
            sd_status_t st = sd_comm_select(worlds[w], 0, &name);
            cr_expect_eq(st, SD_OK, "%s at %d: %s", b[i].name, worlds[w], sd_last_error());
            if (st == SD_OK) cr_expect_str_eq(name, b[i].name);
        }
    }
    unsetenv("SPECDEC_COMM");
}

Test(comm_backends, unknown_not_built_and_too_many_ranks_are_refused)
{
    expect_refused("tcp", 2, SD_ERR_INVALID_ARG);
    expect_refused("Intra", 1, SD_ERR_INVALID_ARG); /* names are exact */
    size_t n;
    const sd_comm_backend_t *b = sd_comm_backends(&n);
    for (size_t i = 0; i < n; i++) {
        if (!b[i].built())
            expect_refused(b[i].name, 2, SD_ERR_NOT_BUILT);
        else if (b[i].max_ranks < 64)
            expect_refused(b[i].name, b[i].max_ranks + 1, SD_ERR_INVALID_ARG);
    }
}

/* ---- sd_comm_init builds the selected backend at one rank ------------------------------- */

typedef struct init_out {
    int skipped;
    char backend[16];
    int size;
    float sum;
    char msg[400];
} init_out_t;

static int init_rank(int rank, int size, const char *job, void *arg, void *outp, size_t cap)
{
    const char *name = arg;
    init_out_t *out = outp;
    if (sd_comm_backend_find(name)->memory == SD_COMM_DEVICE_MEMORY &&
        sd_comm_nccl_device_count() == 0)
        return out->skipped = 1, 0;
    setenv("SPECDEC_COMM", name, 1);
    sd_comm_t *c = NULL;
    if (sd_comm_init(&c) != SD_OK) {
        snprintf(out->msg, sizeof out->msg, "sd_comm_init: %s", sd_last_error());
        return 1;
    }
    snprintf(out->backend, sizeof out->backend, "%s", sd_comm_backend(c));
    out->size = sd_comm_size(c);
    float v = 2.5f;
    if (sd_comm_backend_find(name)->memory == SD_COMM_HOST_MEMORY &&
        sd_comm_allreduce_sum(c, &v, 1, SD_COMM_F32) != SD_OK)
        snprintf(out->msg, sizeof out->msg, "allreduce: %s", sd_last_error());
    out->sum = v;
    sd_comm_free(c);
    return out->msg[0] != '\0';
}

Test(comm_backends, init_builds_each_built_backend_at_one_rank, .timeout = 120)
{
    size_t n;
    const sd_comm_backend_t *b = sd_comm_backends(&n);
    for (size_t i = 0; i < n; i++) {
        if (!b[i].built()) continue;
        sd_test_ranks_t r;
        int ok = sd_test_run_ranks(1, init_rank, (void *)b[i].name, sizeof(init_out_t),
                                   RANK_TIMEOUT_S, &r);
        const init_out_t *o = sd_test_rank_out(&r, 0);
        cr_expect(ok, "%s: exit %d: %s", b[i].name, r.codes[0], o->msg);
        if (ok && !o->skipped) {
            cr_expect_str_eq(o->backend, b[i].name);
            cr_expect_eq(o->size, 1, "%s", b[i].name);
            cr_expect_eq(o->sum, 2.5f, "%s", b[i].name);
        }
        cr_expect(sd_test_no_shm_left(r.job), "%s left /dev/shm/specdec-%s*", b[i].name, r.job);
        sd_test_ranks_free(&r);
    }
}
