/* The nccl backend: NCCL communicators in non-blocking mode (config.blocking = 0), one CUDA
 * stream each; every NCCL call and enqueued collective is polled in a sd_comm_wait_step loop
 * (deadline or abort flag: ncclCommAbort). Buffers are device pointers, or host pointers
 * staged through the device scratch. Allreduce: allgather + rank-order sum
 * (comm/cuda/gather_sum.cu) by default, ncclAllReduce with SPECDEC_NCCL_FAST_ALLREDUCE=1, the
 * CUDA IPC allreduce after sd_comm_nccl_use_intra. Why and the details: docs/comm.md, "The
 * `nccl` backend". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "comm/comm_impl.h"
#include "comm/cuda/gpu_check.h"
#include "comm/ipc.h"
#include "core/clock.h"
#include "core/log.h"

_Static_assert((int)SD_GPU_F32 == (int)SD_COMM_F32 && (int)SD_GPU_F16 == (int)SD_COMM_F16 &&
                   (int)SD_GPU_BF16 == (int)SD_COMM_BF16,
               "sd_gpu_dtype_t mirrors sd_comm_dtype_t");

#define NCCL_ALIGN 256
#define GATHER_PIECE_BYTES ((size_t)32 << 20) /* per rank row of the gather scratch */
#define SETUP_POLL_NS 1000000L

typedef struct nccl_ctx {
    ncclComm_t nc;          /* NULL once aborted */
    ncclComm_t split_child; /* written by NCCL when a non-blocking split completes */
    cudaStream_t stream;
    int device;
    int fast_allreduce;     /* SPECDEC_NCCL_FAST_ALLREDUCE=1 */
    int use_ipc;            /* sd_comm_nccl_use_intra was called */
    sd_ipc_t *ipc;          /* set up by the first IPC allreduce (comm/ipc.h) */
    char *scratch;          /* device: staging of host buffers, gathered rows */
    size_t scratch_bytes;
    float *one;             /* device: the barrier's 1-element allreduce */
} nccl_ctx_t;

static const sd_comm_ops_t nccl_ops;

/* ---- helpers ------------------------------------------------------------------------- */

static size_t align_up(size_t n) { return (n + NCCL_ALIGN - 1) / NCCL_ALIGN * NCCL_ALIGN; }

static ncclDataType_t nccl_type(sd_comm_dtype_t dt)
{
    switch (dt) {
    case SD_COMM_F16: return ncclFloat16;
    case SD_COMM_BF16: return ncclBfloat16;
    default: return ncclFloat32;
    }
}

static void abort_nccl(nccl_ctx_t *x)
{
    if (x->ipc) sd_ipc_abort(x->ipc);
    if (x->nc == NULL) return;
    ncclCommAbort(x->nc);
    x->nc = NULL;
}

/* st, after aborting the communicator when st is a failure. */
static sd_status_t abort_on_fail(nccl_ctx_t *x, sd_status_t st)
{
    if (st != SD_OK) abort_nccl(x);
    return st;
}

static sd_status_t nccl_fail(ncclComm_t nc, ncclResult_t r, const char *call, const char *file,
                             int line)
{
    char why[512];
    const char *last = ncclGetLastError(nc);
    snprintf(why, sizeof why, "%s%s%s", ncclGetErrorString(r), last && last[0] ? ": " : "",
             last ? last : "");
    return sd_gpu_fail(call, why, file, line);
}

/* A non-blocking NCCL call on `nc` answered r: wait until NCCL is done with it (the
 * state leaves ncclInProgress), polling c's deadline and abort flag. */
static sd_status_t settle(sd_comm_t *c, ncclComm_t nc, ncclResult_t r, const char *call,
                          const char *file, int line)
{
    unsigned spins = 0;
    while (r == ncclInProgress) {
        SD_CHECK(sd_comm_wait_step(c, &spins, call));
        SD_GPU_CHECK(ncclCommGetAsyncError(nc, &r));
    }
    return r == ncclSuccess ? SD_OK : nccl_fail(nc, r, call, file, line);
}

/* Issue a non-blocking NCCL call on x->nc and settle it; any failure aborts the
 * communicator. */
#define NCCL_CALL(c, x, call)                                                                    \
    SD_CHECK(abort_on_fail((x), settle((c), (x)->nc, (call), #call, __FILE__, __LINE__)))

/* Wait for everything enqueued on the comm's stream, polling NCCL's async state, the
 * deadline and the abort flag. Any failure aborts the communicator. */
static sd_status_t wait_stream(sd_comm_t *c, nccl_ctx_t *x, const char *what)
{
    unsigned spins = 0;
    for (;;) {
        ncclResult_t r = ncclSuccess;
        if (x->nc) SD_CHECK(abort_on_fail(x, SD_GPU_STATUS(ncclCommGetAsyncError(x->nc, &r))));
        if (r != ncclSuccess && r != ncclInProgress)
            return abort_on_fail(x, nccl_fail(x->nc, r, what, __FILE__, __LINE__));
        cudaError_t e = cudaStreamQuery(x->stream);
        if (e == cudaSuccess) return SD_OK;
        if (e != cudaErrorNotReady)
            return abort_on_fail(x, sd_gpu_fail(what, cudaGetErrorString(e), __FILE__, __LINE__));
        SD_CHECK(abort_on_fail(x, sd_comm_wait_step(c, &spins, what)));
    }
}

/* ---- buffers: device memory as is, host memory staged --------------------------------- */

typedef struct view {
    void *user;   /* the caller's buffer */
    char *dev;    /* what the device reads and writes: user, or staging */
    size_t bytes;
    int staged;
} view_t;

static int is_device_memory(const void *p)
{
    struct cudaPointerAttributes a;
    if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
        cudaGetLastError(); /* a plain host pointer on an old driver */
        return 0;
    }
    return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
}

static view_t view_of(const void *user, size_t bytes)
{
    int dev = is_device_memory(user);
    return (view_t){.user = (void *)user, .dev = dev ? (char *)user : NULL, .bytes = bytes,
                    .staged = !dev};
}

static size_t view_staging(const view_t *v) { return v->staged ? align_up(v->bytes) : 0; }

static void view_place(view_t *v, char **cursor)
{
    if (!v->staged) return;
    v->dev = *cursor;
    *cursor += align_up(v->bytes);
}

/* At the start of an op: the stream is idle, so a pageable copy cannot block on anything. */
static sd_status_t view_copy_in(nccl_ctx_t *x, const view_t *v)
{
    if (v->staged)
        SD_GPU_CHECK(cudaMemcpyAsync(v->dev, v->user, v->bytes, cudaMemcpyHostToDevice, x->stream));
    return SD_OK;
}

/* After wait_stream: the stream holds only this copy, so the synchronize is bounded. */
static sd_status_t view_copy_out(nccl_ctx_t *x, const view_t *v)
{
    if (!v->staged) return SD_OK;
    SD_GPU_CHECK(cudaMemcpyAsync(v->user, v->dev, v->bytes, cudaMemcpyDeviceToHost, x->stream));
    SD_GPU_CHECK(cudaStreamSynchronize(x->stream));
    return SD_OK;
}

/* The comm's device scratch, grown to at least `bytes`. Stream-ordered (cudaMallocAsync):
 * unlike cudaFree, growing it never waits for the whole device, where another
 * communicator's collective could be stuck. */
static sd_status_t scratch(nccl_ctx_t *x, size_t bytes, char **out)
{
    if (bytes > x->scratch_bytes) {
        if (x->scratch) SD_GPU_CHECK(cudaFreeAsync(x->scratch, x->stream));
        x->scratch = NULL;
        x->scratch_bytes = 0;
        SD_GPU_CHECK(cudaMallocAsync((void **)&x->scratch, bytes, x->stream));
        x->scratch_bytes = bytes;
    }
    *out = x->scratch;
    return SD_OK;
}

static sd_status_t nccl_allgather(sd_comm_t *c, const void *send, size_t bytes, void *recv);

/* ---- ops ------------------------------------------------------------------------------ */

/* buf[count] = rank-order sum: per piece, allgather every rank's piece into rows
 * [size][n], then sum the rows on the device. */
static sd_status_t gather_allreduce(sd_comm_t *c, nccl_ctx_t *x, char *buf, size_t count,
                                    sd_comm_dtype_t dt, size_t piece, char *rows)
{
    size_t es = sd_comm_dtype_size(dt);
    for (size_t off = 0; off < count; off += piece) {
        size_t n = count - off < piece ? count - off : piece;
        NCCL_CALL(c, x, ncclAllGather(buf + off * es, rows, n, nccl_type(dt), x->nc, x->stream));
        SD_CHECK(abort_on_fail(x, sd_gpu_sum_gathered(rows, buf + off * es, n, c->size,
                                                      (sd_gpu_dtype_t)dt, x->stream)));
    }
    return SD_OK;
}

static sd_status_t nccl_allreduce(sd_comm_t *c, void *buf, size_t count, sd_comm_dtype_t dt)
{
    nccl_ctx_t *x = c->ctx;
    size_t es = sd_comm_dtype_size(dt);
    if (count == 0) return SD_OK;
    SD_GPU_CHECK(cudaSetDevice(x->device));
    if (x->use_ipc && x->ipc == NULL)
        SD_CHECK(abort_on_fail(x, sd_ipc_setup(c, x->device, x->stream, nccl_allgather, &x->ipc)));
    int gather = !x->use_ipc && !x->fast_allreduce;
    size_t piece = GATHER_PIECE_BYTES / es < count ? GATHER_PIECE_BYTES / es : count;
    view_t v = view_of(buf, count * es);
    char *cursor = NULL;
    SD_CHECK(scratch(x, view_staging(&v) + (gather ? piece * es * c->size : 0), &cursor));
    view_place(&v, &cursor);
    SD_CHECK(view_copy_in(x, &v));
    if (x->use_ipc)
        SD_CHECK(abort_on_fail(x, sd_ipc_allreduce_wait(c, x->ipc, v.dev, count, dt, x->stream)));
    else if (gather)
        SD_CHECK(gather_allreduce(c, x, v.dev, count, dt, piece, cursor));
    else
        NCCL_CALL(c, x,
                  ncclAllReduce(v.dev, v.dev, count, nccl_type(dt), ncclSum, x->nc, x->stream));
    SD_CHECK(wait_stream(c, x, "allreduce"));
    return view_copy_out(x, &v);
}

/* For a model's forward: its stream drained first (polled against the deadline), then the
 * allreduce above on the comm's stream, waited for: not capturable (device_graphs = 0). */
static sd_status_t nccl_allreduce_device(sd_comm_t *c, void *buf, size_t count,
                                         sd_comm_dtype_t dt, void *stream)
{
    unsigned spins = 0;
    cudaError_t e;
    while ((e = cudaStreamQuery((cudaStream_t)stream)) == cudaErrorNotReady)
        SD_CHECK(sd_comm_wait_step(c, &spins, "the model's stream"));
    SD_GPU_CHECK(e);
    return nccl_allreduce(c, buf, count, dt);
}

static sd_status_t nccl_allgather(sd_comm_t *c, const void *send, size_t bytes, void *recv)
{
    nccl_ctx_t *x = c->ctx;
    if (bytes == 0) return SD_OK;
    SD_GPU_CHECK(cudaSetDevice(x->device));
    view_t s = view_of(send, bytes), r = view_of(recv, bytes * c->size);
    char *cursor = NULL;
    SD_CHECK(scratch(x, view_staging(&s) + view_staging(&r), &cursor));
    view_place(&s, &cursor);
    view_place(&r, &cursor);
    SD_CHECK(view_copy_in(x, &s));
    NCCL_CALL(c, x, ncclAllGather(s.dev, r.dev, bytes, ncclUint8, x->nc, x->stream));
    SD_CHECK(wait_stream(c, x, "allgather"));
    return view_copy_out(x, &r);
}

static sd_status_t nccl_broadcast(sd_comm_t *c, void *buf, size_t bytes, int root)
{
    nccl_ctx_t *x = c->ctx;
    if (bytes == 0) return SD_OK;
    SD_GPU_CHECK(cudaSetDevice(x->device));
    view_t v = view_of(buf, bytes);
    char *cursor = NULL;
    SD_CHECK(scratch(x, view_staging(&v), &cursor));
    view_place(&v, &cursor);
    SD_CHECK(view_copy_in(x, &v));
    NCCL_CALL(c, x, ncclBroadcast(v.dev, v.dev, bytes, ncclUint8, root, x->nc, x->stream));
    SD_CHECK(wait_stream(c, x, "broadcast"));
    return view_copy_out(x, &v);
}

/* A 1-element allreduce: no rank's stream gets past it before every rank has joined. */
static sd_status_t nccl_barrier(sd_comm_t *c)
{
    nccl_ctx_t *x = c->ctx;
    SD_GPU_CHECK(cudaSetDevice(x->device));
    NCCL_CALL(c, x, ncclAllReduce(x->one, x->one, 1, ncclFloat32, ncclSum, x->nc, x->stream));
    return wait_stream(c, x, "barrier");
}

/* ---- life cycle ----------------------------------------------------------------------- */

static void free_ctx(nccl_ctx_t *x)
{
    sd_ipc_destroy(x->ipc, 0); /* sd_ipc_teardown (nccl_destroy) freed it when it could */
    if (x->scratch) cudaFreeAsync(x->scratch, x->stream);
    if (x->one) cudaFreeAsync(x->one, x->stream);
    if (x->stream) cudaStreamDestroy(x->stream);
    free(x);
}

/* ncclCommFinalize, polled until NCCL has flushed, bounded by the comm's timeout (in
 * destroy no op is running, so neither the wrappers nor the watchdog bound it). */
static sd_status_t finalize(sd_comm_t *c, nccl_ctx_t *x)
{
    ncclResult_t r = ncclCommFinalize(x->nc);
    double deadline = sd_now() + c->timeout_ms * 1e-3;
    struct timespec nap = {.tv_sec = 0, .tv_nsec = SETUP_POLL_NS};
    while (r == ncclInProgress && sd_now() < deadline) {
        nanosleep(&nap, NULL);
        if (ncclCommGetAsyncError(x->nc, &r) != ncclSuccess) break;
    }
    if (r == ncclSuccess) return SD_OK;
    sd_log(SD_LOG_WARN, "nccl: group '%s' rank %d: ncclCommFinalize: %s; aborting instead",
           c->group, c->rank, r == ncclInProgress ? "timed out" : ncclGetErrorString(r));
    return SD_ERR_DEVICE;
}

static void nccl_destroy(sd_comm_t *c)
{
    nccl_ctx_t *x = c->ctx;
    cudaSetDevice(x->device);
    /* the IPC regions first, in order (closed, barrier, freed), while NCCL still works */
    sd_ipc_teardown(c, x->ipc, x->nc != NULL);
    x->ipc = NULL;
    if (x->nc && (c->failed != SD_OK || finalize(c, x) != SD_OK)) abort_nccl(x);
    if (x->nc) ncclCommDestroy(x->nc);
    sd_comm_teardown(c);
    free_ctx(x);
    free(c);
}

/* A communicator with stream and buffers but no NCCL communicator yet; settings from
 * `like` (the device, the allreduce choice). */
static sd_status_t make_comm(const nccl_ctx_t *like, int rank, int size, const char *group,
                             int world_rank, sd_comm_t **out)
{
    sd_comm_t *c = calloc(1, sizeof *c);
    nccl_ctx_t *x = calloc(1, sizeof *x);
    if (c == NULL || x == NULL) {
        free(c);
        free(x);
        return sd_set_error(SD_ERR_OUT_OF_MEMORY, "out of memory allocating an nccl communicator");
    }
    *x = (nccl_ctx_t){.device = like->device, .fast_allreduce = like->fast_allreduce,
                      .use_ipc = like->use_ipc};
    sd_status_t st = SD_OK;
    SD_GPU_CHECK_GOTO(cudaSetDevice(x->device), st, fail);
    SD_GPU_CHECK_GOTO(cudaStreamCreate(&x->stream), st, fail);
    SD_GPU_CHECK_GOTO(cudaMallocAsync((void **)&x->one, sizeof *x->one, x->stream), st, fail);
    SD_GPU_CHECK_GOTO(cudaMemsetAsync(x->one, 0, sizeof *x->one, x->stream), st, fail);
    SD_CHECK_GOTO(sd_comm_setup(c, &nccl_ops, x, rank, size, group, world_rank), st, fail);
    *out = c;
    return SD_OK;
fail:
    free_ctx(x);
    free(c);
    return st;
}

/* The first n ranks via ncclCommSplit (color 0, or NCCL_SPLIT_NOCOLOR for the others).
 * NCCL writes the new communicator into x->split_child when the split completes, which
 * in non-blocking mode is after the call returns: it must outlive this frame. */
static sd_status_t nccl_split_first(sd_comm_t *c, int n, sd_comm_t **out)
{
    nccl_ctx_t *x = c->ctx;
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = 0;
    x->split_child = NULL;
    SD_GPU_CHECK(cudaSetDevice(x->device));
    NCCL_CALL(c, x, ncclCommSplit(x->nc, c->rank < n ? 0 : NCCL_SPLIT_NOCOLOR, c->rank,
                                  &x->split_child, &cfg));
    if (c->rank >= n) return SD_OK;
    ncclComm_t child = x->split_child;
    if (child == NULL)
        return sd_set_error(SD_ERR_INTERNAL, "ncclCommSplit gave rank %d of group '%s' no "
                                             "communicator", c->rank, c->group);
    sd_status_t st = settle(c, child, ncclInProgress, "ncclCommSplit (new communicator)",
                            __FILE__, __LINE__);
    char group[24]; /* "first<n>" */
    snprintf(group, sizeof group, "first%d", n);
    if (st == SD_OK) st = make_comm(x, c->rank, n, group, c->world_rank, out);
    if (st != SD_OK) {
        ncclCommAbort(child);
        return st;
    }
    ((nccl_ctx_t *)(*out)->ctx)->nc = child;
    return SD_OK;
}

static const sd_comm_ops_t nccl_ops = {
    .name = "nccl",
    .allreduce_sum = nccl_allreduce,
    .allgather = nccl_allgather,
    .broadcast = nccl_broadcast,
    .barrier = nccl_barrier,
    .split_first = nccl_split_first,
    .destroy = nccl_destroy,
    .allreduce_device = nccl_allreduce_device,
};

/* ---- construction --------------------------------------------------------------------- */

/* SPECDEC_NCCL_FAST_ALLREDUCE (read here only): 1 = plain ncclAllReduce. */
static sd_status_t fast_allreduce_from_env(int *fast)
{
    const char *v = getenv("SPECDEC_NCCL_FAST_ALLREDUCE");
    *fast = v && strcmp(v, "1") == 0;
    if (v == NULL || v[0] == '\0' || strcmp(v, "0") == 0 || *fast) return SD_OK;
    return sd_set_error(SD_ERR_INVALID_ARG, "SPECDEC_NCCL_FAST_ALLREDUCE='%s' is not 0 or 1", v);
}

typedef struct rank_host {
    char name[64];
    int devices;
} rank_host_t;

/* This rank's device: its index among the ranks on its host (by host name) modulo the
 * host's device count. Collective over boot, so a rank without a GPU fails everywhere. */
static sd_status_t pick_device(sd_comm_t *boot, int *device)
{
    rank_host_t me = {.devices = sd_comm_nccl_device_count()};
    gethostname(me.name, sizeof me.name - 1);
    rank_host_t *all = calloc((size_t)boot->size, sizeof *all);
    SD_ALLOC_CHECK(all, (size_t)boot->size * sizeof *all, "the ranks' host names");
    sd_status_t st = sd_comm_allgather(boot, &me, sizeof me, all);
    int local = 0, without = -1;
    for (int q = 0; st == SD_OK && q < boot->size; q++) {
        if (all[q].devices <= 0 && without < 0) without = q;
        if (q < boot->rank && strcmp(all[q].name, me.name) == 0) local++;
    }
    free(all);
    SD_CHECK(st);
    if (without >= 0)
        return sd_set_error(SD_ERR_DEVICE, "nccl backend: rank %d sees no CUDA device", without);
    *device = local % me.devices;
    SD_GPU_CHECK(cudaSetDevice(*device));
    return SD_OK;
}

/* Rank 0's ncclUniqueId to every rank of boot (with rank 0's success, so a failure
 * there fails every rank instead of leaving them waiting). */
static sd_status_t share_unique_id(sd_comm_t *boot, ncclUniqueId *id)
{
    struct {
        int ok;
        ncclUniqueId id;
    } m = {0};
    sd_status_t made = SD_OK;
    if (boot->rank == 0) {
        made = SD_GPU_STATUS(ncclGetUniqueId(&m.id));
        m.ok = made == SD_OK;
    }
    SD_CHECK(sd_comm_broadcast(boot, &m, sizeof m, 0));
    if (!m.ok)
        return boot->rank == 0 ? made
                               : sd_set_error(SD_ERR_DEVICE, "nccl backend: rank 0 could not "
                                                             "create the NCCL unique id");
    *id = m.id;
    return SD_OK;
}

/* ncclCommInitRankConfig, non-blocking, polled against the SD_OP_INIT deadline. */
static sd_status_t init_rank(sd_comm_t *c, ncclUniqueId id)
{
    nccl_ctx_t *x = c->ctx;
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = 0;
    ncclResult_t r = ncclCommInitRankConfig(&x->nc, c->size, id, c->rank, &cfg);
    return abort_on_fail(x, settle(c, x->nc, r, "ncclCommInitRankConfig", __FILE__, __LINE__));
}

sd_status_t sd_comm_nccl_new(sd_comm_t *boot, sd_comm_t **out)
{
    if (out == NULL || boot == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG, "sd_comm_nccl_new: NULL %s",
                            out == NULL ? "out" : "boot");
    *out = NULL;
    nccl_ctx_t like = {0};
    SD_CHECK(fast_allreduce_from_env(&like.fast_allreduce));
    SD_CHECK(pick_device(boot, &like.device));
    ncclUniqueId id;
    SD_CHECK(share_unique_id(boot, &id));
    sd_comm_t *c = NULL;
    SD_CHECK(make_comm(&like, boot->rank, boot->size, boot->group, boot->world_rank, &c));
    sd_comm_op_begin(c, SD_OP_INIT, 0);
    sd_status_t st = sd_comm_op_end(c, init_rank(c, id));
    if (st != SD_OK) {
        nccl_destroy(c);
        return st;
    }
    *out = c;
    return SD_OK;
}

int sd_comm_nccl_built(void) { return 1; }

int sd_comm_nccl_device_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError(); /* no driver or no device: not an error here */
        return 0;
    }
    return n;
}

sd_status_t sd_comm_nccl_use_intra(sd_comm_t *c)
{
    if (c == NULL || c->ops != &nccl_ops)
        return sd_set_error(SD_ERR_INVALID_ARG, "sd_comm_nccl_use_intra: the %s communicator is "
                                                "not an nccl one",
                            c ? c->ops->name : "NULL");
    if (c->size > SD_IPC_MAX_RANKS)
        return sd_set_error(SD_ERR_INVALID_ARG, "the CUDA IPC allreduce takes at most %d ranks; "
                                                "group '%s' has %d",
                            SD_IPC_MAX_RANKS, c->group, c->size);
    ((nccl_ctx_t *)c->ctx)->use_ipc = 1;
    return SD_OK;
}
