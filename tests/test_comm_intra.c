/* The comm layer on the CPU: the intra backend's collectives (ranks as forked processes,
 * more ranks than cores), split_first, the single backend, argument checks, sd_comm_init's
 * environment, sd_comm_select's rule, and the 2,000-step hang regression. Every multi-rank
 * test also checks that nothing is left in /dev/shm. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "comm/comm_impl.h"
#include "core/clock.h"
#include "support/comm_hang.h"
#include "support/ranks.h"

#define RUN_TIMEOUT_S 40

typedef struct rank_out {
    char msg[512];
    uint64_t hash[64];
    double t_arrive, t_leave;
} rank_out_t;

/* In a rank: record why and fail. */
#define RANK_REQUIRE(cond, out, ...)                                                             \
    do {                                                                                         \
        if (!(cond)) {                                                                           \
            snprintf((out)->msg, sizeof (out)->msg, __VA_ARGS__);                                \
            return 1;                                                                            \
        }                                                                                        \
    } while (0)

static void expect_all_ok(int ok, const sd_test_ranks_t *r)
{
    for (int q = 0; q < r->size; q++) {
        const rank_out_t *o = sd_test_rank_out(r, q);
        cr_expect_eq(r->codes[q], 0, "rank %d exited %d: %s", q, r->codes[q], o->msg);
    }
    cr_assert(ok, "not every rank succeeded");
    cr_assert(sd_test_no_shm_left(r->job), "/dev/shm/specdec-%s* left behind", r->job);
}

static sd_comm_t *world_or_die(int rank, int size, const char *job, rank_out_t *out)
{
    sd_comm_t *c = NULL;
    if (sd_comm_intra_new(rank, size, job, &c) != SD_OK)
        snprintf(out->msg, sizeof out->msg, "intra_new: %s", sd_last_error());
    return c;
}

/* ---- reference arithmetic (independent of comm/'s conversions) ----------------------- */

static float widen(const void *p, size_t i, sd_comm_dtype_t dt)
{
    if (dt == SD_COMM_F32) return ((const float *)p)[i];
    uint16_t h = ((const uint16_t *)p)[i];
    if (dt == SD_COMM_F16) {
        _Float16 v;
        memcpy(&v, &h, 2);
        return (float)v;
    }
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* bf16 nearest-even by comparing the two neighbours in double */
static uint16_t ref_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    uint16_t lo = (uint16_t)(u >> 16);
    uint32_t ul = (uint32_t)lo << 16, uh = (uint32_t)(lo + 1) << 16;
    float fl, fh;
    memcpy(&fl, &ul, 4);
    memcpy(&fh, &uh, 4);
    double dl = fabs((double)f - fl), dh = fabs((double)fh - f);
    if (dl != dh) return dl < dh ? lo : (uint16_t)(lo + 1);
    return (lo & 1) ? (uint16_t)(lo + 1) : lo;
}

static void narrow(void *p, size_t i, float v, sd_comm_dtype_t dt)
{
    if (dt == SD_COMM_F32) {
        ((float *)p)[i] = v;
    } else if (dt == SD_COMM_F16) {
        _Float16 h = (_Float16)v;
        memcpy((uint16_t *)p + i, &h, 2);
    } else {
        ((uint16_t *)p)[i] = ref_bf16(v);
    }
}

/* rank q's input: sd_hang_value stored as dt (bf16 by truncation: any bf16 is an input) */
static void fill(void *p, size_t n, sd_comm_dtype_t dt, uint64_t salt, int q)
{
    for (size_t i = 0; i < n; i++) {
        float v = sd_hang_value(salt, q, i);
        if (dt == SD_COMM_BF16) {
            uint32_t u;
            memcpy(&u, &v, 4);
            ((uint16_t *)p)[i] = (uint16_t)(u >> 16);
        } else {
            narrow(p, i, v, dt);
        }
    }
}

/* ref[n] = inputs of ranks 0..size-1 summed in that order in f32, rounded once */
static void reference(void *ref, size_t n, sd_comm_dtype_t dt, uint64_t salt, int size, void *tmp)
{
    float *acc = calloc(n ? n : 1, sizeof *acc);
    for (int q = 0; q < size; q++) {
        fill(tmp, n, dt, salt, q);
        for (size_t i = 0; i < n; i++) acc[i] = q == 0 ? widen(tmp, i, dt) : acc[i] + widen(tmp, i, dt);
    }
    for (size_t i = 0; i < n; i++) narrow(ref, i, acc[i], dt);
    free(acc);
}

/* ---- allreduce: bit-identical on every rank, equal to the rank-order reference -------- */

static const size_t sizes[] = {1, 7, 1000, 16384, 16385, 65535, 65536, 65537, 1 << 20};
#define N_SIZES (sizeof sizes / sizeof sizes[0])

static int allreduce_rank(int rank, int size, const char *job, void *arg, void *outp, size_t cap)
{
    rank_out_t *out = outp;
    sd_comm_t *c = world_or_die(rank, size, job, out);
    if (c == NULL) return 2;
    size_t max = (size_t)1 << 20;
    void *buf = malloc(max * 4), *ref = malloc(max * 4), *tmp = malloc(max * 4);
    int k = 0;
    for (int dt = SD_COMM_F32; dt <= SD_COMM_BF16; dt++) {
        for (size_t s = 0; s < N_SIZES; s++, k++) {
            size_t n = sizes[s], es = sd_comm_dtype_size((sd_comm_dtype_t)dt);
            uint64_t salt = 1000u * (uint64_t)dt + s;
            fill(buf, n, (sd_comm_dtype_t)dt, salt, rank);
            sd_status_t st = sd_comm_allreduce_sum(c, buf, n, (sd_comm_dtype_t)dt);
            RANK_REQUIRE(st == SD_OK, out, "%s x %zu: %s", sd_comm_dtype_name(dt), n, sd_last_error());
            reference(ref, n, (sd_comm_dtype_t)dt, salt, size, tmp);
            RANK_REQUIRE(memcmp(buf, ref, n * es) == 0, out, "%s x %zu differs from the reference",
                         sd_comm_dtype_name(dt), n);
            out->hash[k] = sd_hang_fnv(buf, n * es);
        }
    }
    free(buf);
    free(ref);
    free(tmp);
    sd_comm_free(c);
    return 0;
}

static void check_allreduce(int size)
{
    sd_test_ranks_t r;
    int ok = sd_test_run_ranks(size, allreduce_rank, NULL, sizeof(rank_out_t), RUN_TIMEOUT_S, &r);
    expect_all_ok(ok, &r);
    const rank_out_t *o0 = sd_test_rank_out(&r, 0);
    for (int q = 1; q < size; q++) {
        const rank_out_t *o = sd_test_rank_out(&r, q);
        for (size_t k = 0; k < 3 * N_SIZES; k++)
            cr_expect_eq(o->hash[k], o0->hash[k], "rank %d result %zu differs from rank 0's", q, k);
    }
    sd_test_ranks_free(&r);
}

Test(comm_intra, allreduce_2_ranks_bit_identical, .timeout = 60) { check_allreduce(2); }
Test(comm_intra, allreduce_4_ranks_bit_identical, .timeout = 60) { check_allreduce(4); }

/* ---- allgather, broadcast, barrier, argument errors on a live communicator ------------- */

static int exchange_rank(int rank, int size, const char *job, void *arg, void *outp, size_t cap)
{
    rank_out_t *out = outp;
    sd_comm_t *c = world_or_die(rank, size, job, out);
    if (c == NULL) return 2;
    static const size_t lens[] = {0, 1, 13, 300001}; /* 300001: pieces over two slots */
    uint8_t *send = malloc(300001), *recv = malloc(300001 * (size_t)size);
    for (size_t l = 0; l < 4; l++) {
        size_t n = lens[l];
        for (size_t i = 0; i < n; i++) send[i] = (uint8_t)(i * 7 + (size_t)rank * 31 + l);
        RANK_REQUIRE(sd_comm_allgather(c, send, n, recv) == SD_OK, out, "allgather %zu: %s", n,
                     sd_last_error());
        for (int q = 0; q < size; q++)
            for (size_t i = 0; i < n; i++)
                RANK_REQUIRE(recv[(size_t)q * n + i] == (uint8_t)(i * 7 + (size_t)q * 31 + l), out,
                             "allgather %zu: rank %d byte %zu wrong", n, q, i);
        /* in place: send is recv + rank * n */
        for (size_t i = 0; i < n; i++) recv[(size_t)rank * n + i] = (uint8_t)(i + (size_t)rank);
        RANK_REQUIRE(sd_comm_allgather(c, recv + (size_t)rank * n, n, recv) == SD_OK, out,
                     "in-place allgather %zu: %s", n, sd_last_error());
        for (int q = 0; q < size; q++)
            for (size_t i = 0; i < n; i++)
                RANK_REQUIRE(recv[(size_t)q * n + i] == (uint8_t)(i + (size_t)q), out,
                             "in-place allgather %zu: rank %d byte %zu wrong", n, q, i);
        for (int root = 0; root < size; root++) {
            for (size_t i = 0; i < n; i++) send[i] = (uint8_t)(rank == root ? i ^ (size_t)root : 0xee);
            RANK_REQUIRE(sd_comm_broadcast(c, send, n, root) == SD_OK, out, "broadcast %zu from %d: %s",
                         n, root, sd_last_error());
            for (size_t i = 0; i < n; i++)
                RANK_REQUIRE(send[i] == (uint8_t)(i ^ (size_t)root), out,
                             "broadcast %zu from %d: byte %zu wrong", n, root, i);
        }
    }
    /* bad arguments are refused without breaking the communicator */
    RANK_REQUIRE(sd_comm_broadcast(c, send, 4, size) == SD_ERR_INVALID_ARG &&
                     strstr(sd_last_error(), "root"),
                 out, "root %d accepted: %s", size, sd_last_error());
    RANK_REQUIRE(sd_comm_allreduce_sum(c, NULL, 3, SD_COMM_F32) == SD_ERR_INVALID_ARG, out,
                 "NULL buffer accepted");
    /* barrier: nobody leaves before the last (rank size-1, 50 ms late) arrives */
    usleep((useconds_t)(rank == size - 1 ? 50000 : 0));
    out->t_arrive = sd_now();
    RANK_REQUIRE(sd_comm_barrier(c) == SD_OK, out, "barrier: %s", sd_last_error());
    out->t_leave = sd_now();
    free(send);
    free(recv);
    sd_comm_free(c);
    return 0;
}

static void check_exchange(int size)
{
    sd_test_ranks_t r;
    int ok = sd_test_run_ranks(size, exchange_rank, NULL, sizeof(rank_out_t), RUN_TIMEOUT_S, &r);
    expect_all_ok(ok, &r);
    double last_arrive = 0;
    for (int q = 0; q < size; q++) {
        const rank_out_t *o = sd_test_rank_out(&r, q);
        if (o->t_arrive > last_arrive) last_arrive = o->t_arrive;
    }
    for (int q = 0; q < size; q++) {
        const rank_out_t *o = sd_test_rank_out(&r, q);
        cr_expect_geq(o->t_leave, last_arrive, "rank %d left the barrier before the last arrival", q);
    }
    sd_test_ranks_free(&r);
}

Test(comm_intra, allgather_broadcast_barrier_2_ranks, .timeout = 60) { check_exchange(2); }
Test(comm_intra, allgather_broadcast_barrier_4_ranks, .timeout = 60) { check_exchange(4); }

/* ---- split_first ---------------------------------------------------------------------- */

static int split_rank(int rank, int size, const char *job, void *arg, void *outp, size_t cap)
{
    rank_out_t *out = outp;
    sd_comm_t *w = NULL;
    /* the world through the public entry point: SPECDEC_RANK/WORLD_SIZE/JOB_ID are set */
    RANK_REQUIRE(sd_comm_init(&w) == SD_OK, out, "sd_comm_init: %s", sd_last_error());
    RANK_REQUIRE(strcmp(sd_comm_backend(w), "intra") == 0 && sd_comm_rank(w) == rank &&
                     sd_comm_size(w) == size,
                 out, "world is %s rank %d of %d", sd_comm_backend(w), sd_comm_rank(w),
                 sd_comm_size(w));
    for (int n = 1; n <= size; n++) {
        sd_comm_t *first = NULL;
        RANK_REQUIRE(sd_comm_split_first(w, n, &first) == SD_OK, out, "split %d: %s", n, sd_last_error());
        RANK_REQUIRE((first != NULL) == (rank < n), out, "split %d: rank %d got %p", n, rank,
                     (void *)first);
        if (first) {
            RANK_REQUIRE(sd_comm_size(first) == n && sd_comm_rank(first) == rank &&
                             strcmp(sd_comm_backend(first), "intra") == 0,
                         out, "split %d: rank %d of %d", n, sd_comm_rank(first), sd_comm_size(first));
            float v = (float)(rank + 1);
            RANK_REQUIRE(sd_comm_allreduce_sum(first, &v, 1, SD_COMM_F32) == SD_OK &&
                             v == (float)(n * (n + 1) / 2),
                         out, "split %d: sum %g: %s", n, v, sd_last_error());
            sd_comm_t *inner = NULL; /* a split of a split */
            RANK_REQUIRE(sd_comm_split_first(first, 1, &inner) == SD_OK && (inner != NULL) == (rank == 0),
                         out, "split 1 of first%d: %s", n, sd_last_error());
            RANK_REQUIRE(sd_comm_barrier(inner) == SD_OK, out, "inner barrier: %s", sd_last_error());
            sd_comm_free(inner);
        }
        sd_comm_free(first);
        float v = 1.0f;
        RANK_REQUIRE(sd_comm_allreduce_sum(w, &v, 1, SD_COMM_F32) == SD_OK && v == (float)size, out,
                     "world after split %d: %g: %s", n, v, sd_last_error());
    }
    RANK_REQUIRE(sd_comm_split_first(w, size + 1, &(sd_comm_t *){NULL}) == SD_ERR_INVALID_ARG, out,
                 "split %d accepted", size + 1);
    sd_comm_free(w);
    return 0;
}

static void check_split(int size)
{
    sd_test_ranks_t r;
    int ok = sd_test_run_ranks(size, split_rank, NULL, sizeof(rank_out_t), RUN_TIMEOUT_S, &r);
    expect_all_ok(ok, &r);
    sd_test_ranks_free(&r);
}

Test(comm_intra, split_first_2_ranks, .timeout = 60) { check_split(2); }
Test(comm_intra, split_first_4_ranks, .timeout = 60) { check_split(4); }

/* ---- one process: single backend, NULL comm, argument and environment errors ---------- */

#define EXPECT_ERR(call, status, needle)                                                         \
    do {                                                                                         \
        sd_status_t st_ = (call);                                                                \
        cr_expect_eq(st_, status, "%s: got %s (%s)", #call, sd_status_string(st_), sd_last_error()); \
        cr_expect(strstr(sd_last_error(), needle) != NULL, "%s: message '%s' lacks '%s'", #call,   \
                  sd_last_error(), needle);                                                      \
    } while (0)

Test(comm_intra, single_backend_and_null_comm, .timeout = 10)
{
    unsetenv("SPECDEC_RANK");
    unsetenv("SPECDEC_WORLD_SIZE");
    sd_comm_t *c = NULL;
    cr_assert_eq(sd_comm_init(&c), SD_OK, "%s", sd_last_error());
    cr_assert_str_eq(sd_comm_backend(c), "single");
    cr_assert_eq(sd_comm_size(c), 1);
    cr_assert_eq(sd_comm_rank(c), 0);
    float v[3] = {1.5f, -2.0f, 3.25f};
    cr_assert_eq(sd_comm_allreduce_sum(c, v, 3, SD_COMM_F32), SD_OK);
    cr_assert(v[0] == 1.5f && v[1] == -2.0f && v[2] == 3.25f, "single allreduce changed data");
    char send[5] = "abcd", recv[5] = "";
    cr_assert_eq(sd_comm_allgather(c, send, 5, recv), SD_OK);
    cr_assert_str_eq(recv, "abcd");
    cr_assert_eq(sd_comm_broadcast(c, send, 5, 0), SD_OK);
    cr_assert_eq(sd_comm_barrier(c), SD_OK);
    sd_comm_t *first = NULL;
    cr_assert_eq(sd_comm_split_first(c, 1, &first), SD_OK);
    cr_assert(first && strcmp(sd_comm_backend(first), "single") == 0 && sd_comm_size(first) == 1);
    sd_comm_free(first);

    EXPECT_ERR(sd_comm_allreduce_sum(c, NULL, 3, SD_COMM_F32), SD_ERR_INVALID_ARG, "NULL buffer with count 3");
    EXPECT_ERR(sd_comm_allreduce_sum(c, v, 3, (sd_comm_dtype_t)7), SD_ERR_INVALID_ARG, "dtype 7");
    EXPECT_ERR(sd_comm_broadcast(c, send, 5, 1), SD_ERR_INVALID_ARG, "root 1 outside [0, 1)");
    EXPECT_ERR(sd_comm_broadcast(c, send, 5, -1), SD_ERR_INVALID_ARG, "root -1");
    EXPECT_ERR(sd_comm_allgather(c, send, 5, NULL), SD_ERR_INVALID_ARG, "NULL recv");
    EXPECT_ERR(sd_comm_split_first(c, 2, &first), SD_ERR_INVALID_ARG, "n=2 outside [1, 1]");
    EXPECT_ERR(sd_comm_split_first(c, 0, &first), SD_ERR_INVALID_ARG, "n=0");
    cr_assert_eq(sd_comm_barrier(c), SD_OK, "argument errors must not fail the communicator");
    sd_comm_free(c);

    /* NULL is a single rank everywhere */
    cr_assert_eq(sd_comm_rank(NULL), 0);
    cr_assert_eq(sd_comm_size(NULL), 1);
    cr_assert_str_eq(sd_comm_backend(NULL), "single");
    cr_assert_eq(sd_comm_allreduce_sum(NULL, v, 3, SD_COMM_F32), SD_OK);
    memset(recv, 0, sizeof recv);
    cr_assert_eq(sd_comm_allgather(NULL, send, 5, recv), SD_OK);
    cr_assert_str_eq(recv, "abcd");
    cr_assert_eq(sd_comm_barrier(NULL), SD_OK);
    EXPECT_ERR(sd_comm_broadcast(NULL, send, 5, 1), SD_ERR_INVALID_ARG, "root 1");
    first = (sd_comm_t *)&first;
    cr_assert_eq(sd_comm_split_first(NULL, 1, &first), SD_OK);
    cr_assert_null(first);
    sd_comm_free(NULL);
}

Test(comm_intra, constructor_and_environment_errors, .timeout = 10)
{
    sd_comm_t *c = NULL;
    EXPECT_ERR(sd_comm_intra_new(0, 2, "bad/job", &c), SD_ERR_INVALID_ARG, "'bad/job'");
    EXPECT_ERR(sd_comm_intra_new(2, 2, "job", &c), SD_ERR_INVALID_ARG, "rank 2 outside [0, 2)");
    EXPECT_ERR(sd_comm_intra_new(0, 0, "job", &c), SD_ERR_INVALID_ARG, "world size 0");
    cr_assert_null(c);

    setenv("SPECDEC_RANK", "1", 1);
    unsetenv("SPECDEC_WORLD_SIZE");
    EXPECT_ERR(sd_comm_init(&c), SD_ERR_INVALID_ARG, "SPECDEC_WORLD_SIZE=unset");
    setenv("SPECDEC_WORLD_SIZE", "two", 1);
    EXPECT_ERR(sd_comm_init(&c), SD_ERR_INVALID_ARG, "SPECDEC_WORLD_SIZE='two'");
    setenv("SPECDEC_WORLD_SIZE", "2", 1);
    setenv("SPECDEC_RANK", "2", 1);
    EXPECT_ERR(sd_comm_init(&c), SD_ERR_INVALID_ARG, "SPECDEC_RANK='2'");
    setenv("SPECDEC_RANK", "0", 1);
    unsetenv("SPECDEC_JOB_ID");
    EXPECT_ERR(sd_comm_init(&c), SD_ERR_INVALID_ARG, "SPECDEC_JOB_ID is not set");
    setenv("SPECDEC_JOB_ID", "a b", 1);
    EXPECT_ERR(sd_comm_init(&c), SD_ERR_INVALID_ARG, "SPECDEC_JOB_ID='a b'");
    unsetenv("SPECDEC_RANK");
    unsetenv("SPECDEC_WORLD_SIZE");
    unsetenv("SPECDEC_JOB_ID");
    setenv("SPECDEC_COMM_TIMEOUT_MS", "10s", 1);
    EXPECT_ERR(sd_comm_init(&c), SD_ERR_INVALID_ARG, "SPECDEC_COMM_TIMEOUT_MS='10s'");
    setenv("SPECDEC_COMM_TIMEOUT_MS", "-5", 1);
    EXPECT_ERR(sd_comm_single_new(&c), SD_ERR_INVALID_ARG, "SPECDEC_COMM_TIMEOUT_MS='-5'");
    setenv("SPECDEC_COMM_TIMEOUT_MS", "250", 1);
    cr_assert_eq(sd_comm_single_new(&c), SD_OK, "%s", sd_last_error());
    cr_assert_eq(c->timeout_ms, 250);
    sd_comm_free(c);
    unsetenv("SPECDEC_COMM_TIMEOUT_MS");
    cr_assert_eq(sd_comm_single_new(&c), SD_OK);
    cr_assert_eq(c->timeout_ms, SD_COMM_TIMEOUT_MS_DEFAULT);
    sd_comm_free(c);
}

/* ---- sd_comm_select: the rule, row by row -------------------------------------------- */

typedef struct select_row {
    const char *comm, *intra, *ompi; /* SPECDEC_COMM, ENABLE_INTRA_NODE_COMM, OMPI_COMM_WORLD_SIZE */
    int world, gpu;
    sd_status_t status;
    const char *want; /* backend, or a piece of the error message */
} select_row_t;

static void set_or_unset(const char *name, const char *v)
{
    if (v)
        setenv(name, v, 1);
    else
        unsetenv(name);
}

Test(comm_intra, select_rule, .timeout = 10)
{
    int mpi = sd_comm_mpi_built(), nccl = sd_comm_nccl_built(), ipc = sd_comm_cuda_ipc_built();
    const select_row_t rows[] = {
        {NULL, NULL, NULL, 1, 0, SD_OK, "single"},
        {NULL, "1", NULL, 1, 0, SD_OK, "single"},
        {NULL, NULL, NULL, 2, 0, SD_OK, "intra"},
        {NULL, "0", NULL, 4, 0, SD_OK, "intra"},
        {NULL, "1", NULL, 2, 1, SD_OK, ipc ? "cuda_ipc" : "intra"},
        {NULL, "1", "2", 2, 0, SD_OK, "intra"},
        {NULL, NULL, "2", 2, 0, SD_OK, mpi ? "mpi" : "intra"},
        {NULL, NULL, NULL, 2, 1, SD_OK, nccl ? "nccl" : "intra"},
        {NULL, "yes", NULL, 2, 0, SD_ERR_INVALID_ARG, "ENABLE_INTRA_NODE_COMM='yes'"},
        {"intra", NULL, "2", 2, 1, SD_OK, "intra"},
        {"intra", NULL, NULL, 1, 0, SD_OK, "intra"},
        {"single", NULL, NULL, 1, 0, SD_OK, "single"},
        {"single", NULL, NULL, 2, 0, SD_ERR_INVALID_ARG, "SPECDEC_COMM=single with a world of 2"},
        {"tcp", NULL, NULL, 2, 0, SD_ERR_INVALID_ARG, "'tcp' is not a backend (built: single, intra"},
        {"mpi", NULL, NULL, 2, 0, mpi ? SD_OK : SD_ERR_NOT_BUILT, mpi ? "mpi" : "built: single, intra"},
        {"nccl", NULL, NULL, 2, 1, nccl ? SD_OK : SD_ERR_NOT_BUILT, nccl ? "nccl" : "no nccl backend"},
        {"cuda_ipc", NULL, NULL, 2, 1, ipc ? SD_OK : SD_ERR_NOT_BUILT,
         ipc ? "cuda_ipc" : "no cuda_ipc backend"},
        {"cuda_ipc", NULL, NULL, 9, 1, ipc ? SD_ERR_INVALID_ARG : SD_ERR_NOT_BUILT,
         ipc ? "world of 9 ranks" : "no cuda_ipc backend"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        const select_row_t *w = &rows[i];
        set_or_unset("SPECDEC_COMM", w->comm);
        set_or_unset("ENABLE_INTRA_NODE_COMM", w->intra);
        set_or_unset("OMPI_COMM_WORLD_SIZE", w->ompi);
        unsetenv("PMI_SIZE");
        const char *name = NULL;
        sd_status_t st = sd_comm_select(w->world, w->gpu, &name);
        cr_expect_eq(st, w->status, "row %zu: %s (%s)", i, sd_status_string(st), sd_last_error());
        if (st == SD_OK)
            cr_expect_str_eq(name, w->want, "row %zu", i);
        else
            cr_expect(strstr(sd_last_error(), w->want), "row %zu: '%s' lacks '%s'", i,
                      sd_last_error(), w->want);
    }
    unsetenv("SPECDEC_COMM");
    unsetenv("ENABLE_INTRA_NODE_COMM");
    unsetenv("OMPI_COMM_WORLD_SIZE");
}

/* ---- the hang regression: 2,000 data-dependent steps with jitter -------------------- */

Test(comm_intra, hang_regression_2_ranks_2000_steps, .timeout = 60)
{
    sd_hang_check(2, 2000, (uint64_t)getpid(), 50);
}
Test(comm_intra, hang_regression_4_ranks_2000_steps, .timeout = 60)
{
    sd_hang_check(4, 2000, (uint64_t)getpid() * 31u, 50);
}
