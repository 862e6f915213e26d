/* The `mpi` backend: Open MPI communicators for CPU ranks started by mpirun. Every
 * collective is non-blocking and polled with MPI_Test between sd_comm_wait_step calls;
 * allreduce is gather + sd_comm_reduce_rank_order, one-shot below TWO_SHOT_BYTES, two-shot
 * from there. A failed communicator keeps its scratch and MPI communicator until exit (a
 * pending request may still write them). Ranks on one node share an arrival table (an MPI
 * shared-memory window: the last seq each rank entered), so a timeout names the ranks that
 * had not arrived. MPI's lifetime and why: docs/comm.md, "The `mpi` backend". */
#include <limits.h>
#include <mpi.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm/comm_impl.h"

enum {
    TWO_SHOT_BYTES = 64 * 1024, /* messages from this size on use reduce-scatter + allgather */
    ARRIVAL_STRIDE = 8,         /* uint64 words per rank in the arrival table: a cache line */
};

typedef struct mpi_ctx {
    MPI_Comm comm;
    uint8_t *scratch; /* grow-only: n * bytes (one-shot) or n * chunk bytes (two-shot) */
    size_t scratch_cap;
    int *counts, *displs, *rcounts, *rdispls; /* [n] each, for the v-collectives */
    uint8_t **src;                            /* [n] the rank-order sum's sources */
    MPI_Comm node;                            /* the same ranks as a shared-memory comm */
    MPI_Win arrival_win;                      /* MPI_WIN_NULL: the ranks share no node */
    _Atomic uint64_t *arrived;                /* [n * ARRIVAL_STRIDE]: seq each rank entered */
    struct mpi_ctx *kept_next;                /* in g_mpi.kept once its communicator failed */
} mpi_ctx_t;

static struct {
    int live;        /* communicators of this backend not yet destroyed */
    int we_init;     /* MPI_Init_thread was ours: MPI_Finalize is ours too */
    int any_failed;  /* a communicator failed: never MPI_Finalize */
    mpi_ctx_t *kept; /* failed communicators' state, kept for pending requests */
} g_mpi;

int sd_comm_mpi_built(void) { return 1; }

/* ---- errors and waiting ------------------------------------------------------------- */

/* Open MPI 4.1 has no error class for a lost process (mpirun aborts the job instead);
 * MPI_ERR_OTHER / MPI_ERR_UNKNOWN are what a broken transport reports. */
static sd_status_t mpi_fail(const sd_comm_t *c, int rc, const char *call)
{
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0, cls = MPI_ERR_UNKNOWN;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) len = 0;
    msg[len] = '\0';
    MPI_Error_class(rc, &cls);
    sd_status_t s =
        cls == MPI_ERR_OTHER || cls == MPI_ERR_UNKNOWN ? SD_ERR_PEER_LOST : SD_ERR_DEVICE;
    return sd_set_error(s, "mpi: %s on group %s (rank %d of %d) failed: %s (error %d)", call,
                        c->group, c->rank, c->size, msg, rc);
}

/* ---- the arrival table ---------------------------------------------------------------- */

static _Atomic uint64_t *arrival_of(const mpi_ctx_t *x, int rank)
{
    return x->arrived + (size_t)rank * ARRIVAL_STRIDE;
}

/* This rank entered collective c->seq. */
static void arrive(const sd_comm_t *c)
{
    const mpi_ctx_t *x = c->ctx;
    if (x->arrived) atomic_store_explicit(arrival_of(x, c->rank), c->seq, memory_order_release);
}

/* A failed wait's status st, its message extended by the ranks that had not entered this
 * collective (from the arrival table; without one it cannot tell and says so). */
static sd_status_t not_arrived(const sd_comm_t *c, sd_status_t st)
{
    const mpi_ctx_t *x = c->ctx;
    if (x->arrived == NULL)
        return sd_set_error(st, "%s (the ranks share no node: which had not arrived is unknown)",
                            sd_last_error());
    char list[256] = "";
    size_t n = 0;
    for (int q = 0; q < c->size && n < sizeof list - 8; q++)
        if (atomic_load_explicit(arrival_of(x, q), memory_order_acquire) < c->seq)
            n += (size_t)snprintf(list + n, sizeof list - n, "%s%d", n ? ", " : "", q);
    if (n == 0) return sd_set_error(st, "%s: every rank had arrived", sd_last_error());
    return sd_set_error(st, "%s: rank(s) %s had not arrived", sd_last_error(), list);
}

/* Ranks that share a node get the table: the arrival window over a shared-memory comm of
 * the same ranks, rank 0's segment holding every rank's line. Collective, blocking: called
 * right after every rank completed a collective of this communicator. Without a shared
 * node (or on an error) the communicator works without it. */
static void arrival_table(sd_comm_t *c)
{
    mpi_ctx_t *x = c->ctx;
    int node_size = 0;
    if (MPI_Comm_split_type(x->comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &x->node) !=
        MPI_SUCCESS) {
        x->node = MPI_COMM_NULL;
        return;
    }
    MPI_Comm_size(x->node, &node_size);
    if (node_size != c->size) return; /* the window would be collective over part of us */
    MPI_Aint bytes = c->rank == 0 ? (MPI_Aint)c->size * ARRIVAL_STRIDE * 8 : 0, size;
    void *base = NULL;
    int unit;
    if (MPI_Win_allocate_shared(bytes, 8, MPI_INFO_NULL, x->node, &base, &x->arrival_win) !=
        MPI_SUCCESS) {
        x->arrival_win = MPI_WIN_NULL;
        return;
    }
    if (MPI_Win_shared_query(x->arrival_win, 0, &size, &unit, &base) != MPI_SUCCESS) return;
    x->arrived = base;
    atomic_store_explicit(arrival_of(x, c->rank), 0, memory_order_release);
}

/* ---- waiting ------------------------------------------------------------------------- */

/* Poll `req` until done, the deadline or the abort flag. */
static sd_status_t mpi_wait(sd_comm_t *c, MPI_Request *req, const char *call)
{
    unsigned spins = 0;
    arrive(c);
    for (;;) {
        int done = 0, rc = MPI_Test(req, &done, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) return mpi_fail(c, rc, call);
        if (done) return SD_OK;
        sd_status_t st = sd_comm_wait_step(c, &spins, call);
        if (st != SD_OK) return not_arrived(c, st);
    }
}

/* Start a non-blocking call (its return code `rc`) and wait for it. */
static sd_status_t mpi_run(sd_comm_t *c, int rc, MPI_Request *req, const char *call)
{
    if (rc != MPI_SUCCESS) return mpi_fail(c, rc, call);
    return mpi_wait(c, req, call);
}

static sd_status_t check_int_bytes(const sd_comm_t *c, size_t bytes, const char *what)
{
    if (bytes <= (size_t)INT_MAX) return SD_OK;
    return sd_set_error(SD_ERR_INVALID_ARG,
                        "mpi: %s of %zu bytes on group %s is over MPI's int count "
                        "limit (%d bytes)",
                        what, bytes, c->group, INT_MAX);
}

static sd_status_t scratch(sd_comm_t *c, size_t bytes, uint8_t **out)
{
    mpi_ctx_t *x = c->ctx;
    if (bytes > x->scratch_cap) {
        uint8_t *p = realloc(x->scratch, bytes);
        SD_ALLOC_CHECK(p, bytes, "the mpi backend's scratch buffer");
        x->scratch = p, x->scratch_cap = bytes;
    }
    *out = x->scratch;
    return SD_OK;
}

/* dst[count] = the rank-order sum of src_0 .. src_{n-1}, src_r = base + r * stride bytes
 * (sd_comm_reduce_rank_order: the intra backend's reduction, so both give the same bits). */
static void sum_rank_order(sd_comm_t *c, void *dst, uint8_t *base, size_t stride, size_t count,
                           sd_comm_dtype_t dt)
{
    mpi_ctx_t *x = c->ctx;
    for (int r = 0; r < c->size; r++) x->src[r] = base + (size_t)r * stride;
    sd_comm_reduce_rank_order(dst, x->src, c->size, count, dt);
}

/* ---- collectives --------------------------------------------------------------------- */

/* One-shot: gather every rank's buf[bytes] into scratch, sum locally. */
static sd_status_t allreduce_one_shot(sd_comm_t *c, void *buf, size_t count, sd_comm_dtype_t dt)
{
    mpi_ctx_t *x = c->ctx;
    size_t bytes = count * sd_comm_dtype_size(dt);
    uint8_t *all = NULL;
    SD_CHECK(scratch(c, bytes * (size_t)c->size, &all)); /* [size][bytes] */
    MPI_Request req;
    int rc = MPI_Iallgather(buf, (int)bytes, MPI_BYTE, all, (int)bytes, MPI_BYTE, x->comm, &req);
    SD_CHECK(mpi_run(c, rc, &req, "MPI_Iallgather (allreduce)"));
    sum_rank_order(c, buf, all, bytes, count, dt);
    return SD_OK;
}

/* Rank r's chunk of `count` elements: [off, off + len), len = ceil(count / n) or less. */
static void chunk_of(size_t count, int n, int r, size_t *off, size_t *len)
{
    size_t per = (count + (size_t)n - 1) / (size_t)n, o = per * (size_t)r;
    *off = o < count ? o : count;
    *len = count - *off < per ? count - *off : per;
}

/* Two-shot: alltoall of chunks, each rank sums its chunk, allgather of the sums. */
static sd_status_t allreduce_two_shot(sd_comm_t *c, void *buf, size_t count, sd_comm_dtype_t dt)
{
    mpi_ctx_t *x = c->ctx;
    size_t es = sd_comm_dtype_size(dt), my_off, my_len;
    chunk_of(count, c->size, c->rank, &my_off, &my_len);
    for (int r = 0; r < c->size; r++) {
        size_t off, len;
        chunk_of(count, c->size, r, &off, &len);
        x->counts[r] = (int)(len * es), x->displs[r] = (int)(off * es); /* buf's chunks */
        x->rcounts[r] = (int)(my_len * es), x->rdispls[r] = (int)(my_len * es * (size_t)r);
    }
    uint8_t *mine = NULL; /* [size][my_len] of dt: every rank's copy of my chunk */
    SD_CHECK(scratch(c, my_len * es * (size_t)c->size, &mine));
    MPI_Request req;
    int rc = MPI_Ialltoallv(buf, x->counts, x->displs, MPI_BYTE, mine, x->rcounts, x->rdispls,
                            MPI_BYTE, x->comm, &req);
    SD_CHECK(mpi_run(c, rc, &req, "MPI_Ialltoallv (allreduce)"));
    sum_rank_order(c, (char *)buf + my_off * es, mine, my_len * es, my_len, dt);
    rc = MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_BYTE, buf, x->counts, x->displs, MPI_BYTE, x->comm,
                         &req);
    return mpi_run(c, rc, &req, "MPI_Iallgatherv (allreduce)");
}

static sd_status_t mpi_allreduce_sum(sd_comm_t *c, void *buf, size_t count, sd_comm_dtype_t dt)
{
    size_t bytes = count * sd_comm_dtype_size(dt);
    SD_CHECK(check_int_bytes(c, bytes, "allreduce"));
    if (bytes < TWO_SHOT_BYTES || count < (size_t)c->size)
        return allreduce_one_shot(c, buf, count, dt);
    return allreduce_two_shot(c, buf, count, dt);
}

static sd_status_t mpi_allgather(sd_comm_t *c, const void *send, size_t bytes, void *recv)
{
    mpi_ctx_t *x = c->ctx;
    SD_CHECK(check_int_bytes(c, bytes, "allgather"));
    const void *src = send == (char *)recv + bytes * (size_t)c->rank ? MPI_IN_PLACE : send;
    MPI_Request req;
    int rc = MPI_Iallgather(src, (int)bytes, MPI_BYTE, recv, (int)bytes, MPI_BYTE, x->comm, &req);
    return mpi_run(c, rc, &req, "MPI_Iallgather");
}

static sd_status_t mpi_broadcast(sd_comm_t *c, void *buf, size_t bytes, int root)
{
    mpi_ctx_t *x = c->ctx;
    SD_CHECK(check_int_bytes(c, bytes, "broadcast"));
    MPI_Request req;
    int rc = MPI_Ibcast(buf, (int)bytes, MPI_BYTE, root, x->comm, &req);
    return mpi_run(c, rc, &req, "MPI_Ibcast");
}

static sd_status_t mpi_barrier(sd_comm_t *c)
{
    mpi_ctx_t *x = c->ctx;
    MPI_Request req;
    int rc = MPI_Ibarrier(x->comm, &req);
    return mpi_run(c, rc, &req, "MPI_Ibarrier");
}

/* ---- communicators -------------------------------------------------------------------- */

static sd_status_t mpi_split_first(sd_comm_t *c, int n, sd_comm_t **out);
static void mpi_destroy(sd_comm_t *c);

static const sd_comm_ops_t mpi_ops = {
    .name = "mpi",
    .allreduce_sum = mpi_allreduce_sum,
    .allgather = mpi_allgather,
    .broadcast = mpi_broadcast,
    .barrier = mpi_barrier,
    .split_first = mpi_split_first,
    .destroy = mpi_destroy,
};

static void free_ctx(mpi_ctx_t *x)
{
    if (!x) return;
    if (x->arrival_win != MPI_WIN_NULL) MPI_Win_free(&x->arrival_win);
    if (x->node != MPI_COMM_NULL) MPI_Comm_free(&x->node);
    free(x->scratch);
    free(x->counts);
    free(x->src);
    free(x);
}

static sd_status_t alloc_ctx(int size, mpi_ctx_t **out)
{
    mpi_ctx_t *x = calloc(1, sizeof *x);
    SD_ALLOC_CHECK(x, sizeof *x, "the mpi backend's state");
    x->comm = MPI_COMM_NULL;
    x->node = MPI_COMM_NULL;
    x->arrival_win = MPI_WIN_NULL;
    x->counts = calloc(4 * (size_t)size, sizeof(int)); /* counts | displs | rcounts | rdispls */
    x->src = calloc((size_t)size, sizeof *x->src);
    if (!x->counts || !x->src) {
        free_ctx(x);
        return sd_set_error(SD_ERR_OUT_OF_MEMORY, "out of memory for %d ranks' counts", size);
    }
    x->displs = x->counts + size, x->rcounts = x->displs + size, x->rdispls = x->rcounts + size;
    *out = x;
    return SD_OK;
}

/* A new communicator of this backend, its MPI communicator not attached yet. */
static sd_status_t new_comm(int rank, int size, const char *group, int world_rank, sd_comm_t **out)
{
    mpi_ctx_t *x = NULL;
    sd_comm_t *c = calloc(1, sizeof *c);
    sd_status_t s = c ? alloc_ctx(size, &x)
                      : sd_set_error(SD_ERR_OUT_OF_MEMORY, "out of memory for a communicator");
    if (s == SD_OK) s = sd_comm_setup(c, &mpi_ops, x, rank, size, group, world_rank);
    if (s != SD_OK) return free_ctx(x), free(c), s;
    g_mpi.live++;
    *out = c;
    return SD_OK;
}

/* c's MPI communicator is mc, made by a collective every rank completed: set up the arrival
 * table over it. */
static void attach(sd_comm_t *c, MPI_Comm mc)
{
    mpi_ctx_t *x = c->ctx;
    MPI_Comm_set_errhandler(mc, MPI_ERRORS_RETURN);
    x->comm = mc;
    arrival_table(c);
}

static sd_status_t mpi_init_once(void)
{
    int inited = 0, finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized)
        return sd_set_error(SD_ERR_INVALID_ARG, "mpi: MPI was already finalized in this process "
                                                "(one mpi world per process: keep the first one)");
    MPI_Initialized(&inited);
    if (inited) return SD_OK;
    int provided = 0, rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_SERIALIZED, &provided);
    if (rc != MPI_SUCCESS)
        return sd_set_error(SD_ERR_DEVICE, "mpi: MPI_Init_thread failed (error %d)", rc);
    g_mpi.we_init = 1;
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN); /* ours: errors become statuses */
    return SD_OK;
}

/* The world: a duplicate of MPI_COMM_WORLD (ours alone), made with MPI_Comm_idup polled
 * against the deadline of an SD_OP_INIT phase. */
sd_status_t sd_comm_mpi_new(sd_comm_t **out)
{
    *out = NULL;
    SD_CHECK(mpi_init_once());
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    sd_comm_t *c;
    SD_CHECK(new_comm(rank, size, "world", rank, &c));
    MPI_Comm dup;
    MPI_Request req;
    sd_comm_op_begin(c, SD_OP_INIT, 0);
    int rc = MPI_Comm_idup(MPI_COMM_WORLD, &dup, &req);
    sd_status_t s = sd_comm_op_end(c, mpi_run(c, rc, &req, "MPI_Comm_idup (world)"));
    if (s != SD_OK) return mpi_destroy(c), s;
    attach(c, dup);
    *out = c;
    return SD_OK;
}

/* MPI_Comm_split has no non-blocking form: an Ibarrier polled against the deadline first
 * makes sure every rank has arrived, so the split itself cannot wait on a missing peer. */
static sd_status_t mpi_split_first(sd_comm_t *c, int n, sd_comm_t **out)
{
    mpi_ctx_t *x = c->ctx;
    *out = NULL;
    SD_CHECK(mpi_barrier(c));
    MPI_Comm sub;
    int rc = MPI_Comm_split(x->comm, c->rank < n ? 0 : MPI_UNDEFINED, c->rank, &sub);
    if (rc != MPI_SUCCESS) return mpi_fail(c, rc, "MPI_Comm_split");
    if (sub == MPI_COMM_NULL) return SD_OK;
    char group[16];
    snprintf(group, sizeof group, "first%d", n);
    int rank, size;
    MPI_Comm_rank(sub, &rank);
    MPI_Comm_size(sub, &size);
    sd_status_t s = new_comm(rank, size, group, c->world_rank, out);
    if (s != SD_OK) return MPI_Comm_free(&sub), s;
    attach(*out, sub);
    return SD_OK;
}

static void mpi_destroy(sd_comm_t *c)
{
    mpi_ctx_t *x = c->ctx;
    sd_comm_teardown(c);
    if (c->failed != SD_OK) { /* a pending request may still use x's buffers: keep them */
        g_mpi.any_failed = 1;
        x->kept_next = g_mpi.kept;
        g_mpi.kept = x;
    } else {
        if (x->comm != MPI_COMM_NULL) MPI_Comm_free(&x->comm);
        free_ctx(x);
    }
    free(c);
    if (--g_mpi.live == 0 && g_mpi.we_init && !g_mpi.any_failed) MPI_Finalize();
}
