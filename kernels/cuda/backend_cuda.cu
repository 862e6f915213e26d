// The CUDA backend: the ops table of kernels/backend_impl.h on one device, one non-blocking
// stream. A launch that fails or refuses its arguments is kept as the first error for the
// next sync (docs/cuda.md, "Errors"); memory is plain cudaMalloc under a cap that counts the
// attention workspace. Graphs are stream captures (thread-local mode) during which upload,
// download, sync, alloc and release are refused (docs/cuda.md, "CUDA graphs"). Every op holds
// the backend's recursive lock, which a forward holds from its upload to its sync
// (sd_backend_lock); every call that touches the device first selects ctx->device.
#include <pthread.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "check.cuh"
#include "launch.cuh"

extern "C" {
#include "kernels/cuda.h"
}

static const size_t ATTN_WORKSPACE_BYTES = (size_t)64 << 20;
static const double DEFAULT_MEMORY_FRACTION = 0.9;

typedef struct cuda_allocation {
    void *ptr;
    size_t bytes;
} cuda_allocation_t;

typedef struct cuda_ctx {
    int device;
    cudaStream_t stream;
    size_t cap, used; // bytes every allocation together may hold / holds (workspace included)
    void *workspace;  // attention partials, ATTN_WORKSPACE_BYTES
    cuda_allocation_t *allocs;
    size_t n_allocs, allocs_cap;
    bool failed;     // an op failed since the last sync
    char error[512]; // "<op>: <error> (<arguments>)" of the first failure
    bool capturing;      // between a successful graph_begin and its graph_end
    bool capture_failed; // an error was noted since that graph_begin: graph_end discards
    pthread_mutex_t lock; // recursive: an op, or a forward around its ops
    bool lock_made;
} cuda_ctx_t;

static cuda_ctx_t *ctx_of(sd_backend_t *be) { return (cuda_ctx_t *)be->ctx; }

// The backend's lock for the rest of a scope.
struct held {
    cuda_ctx_t *ctx;
    explicit held(sd_backend_t *be) : ctx(ctx_of(be)) { pthread_mutex_lock(&ctx->lock); }
    ~held() { pthread_mutex_unlock(&ctx->lock); }
    held(const held &) = delete;
    held &operator=(const held &) = delete;
};

// Keeps the first failure since the last sync: op name, the CUDA error and the arguments
// that matter; during a capture any failure also spoils the capture. cudaSuccess is a no-op.
static void note_error(cuda_ctx_t *ctx, const char *op, cudaError_t e, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void note_error(cuda_ctx_t *ctx, const char *op, cudaError_t e, const char *fmt, ...)
{
    if (e == cudaSuccess) return;
    if (ctx->capturing) ctx->capture_failed = true;
    if (ctx->failed) return;
    ctx->failed = true;
    int len = snprintf(ctx->error, sizeof ctx->error, "%s: %s (", op, cudaGetErrorString(e));
    if (len < 0 || (size_t)len >= sizeof ctx->error) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->error + len, sizeof ctx->error - (size_t)len, fmt, ap);
    va_end(ap);
    size_t used = strlen(ctx->error);
    if (used + 1 < sizeof ctx->error) memcpy(ctx->error + used, ")", 2);
}

// Every call that uses the device selects it first (only when another one is current).
static cudaError_t enter(cuda_ctx_t *ctx)
{
    int current = -1;
    if (cudaGetDevice(&current) == cudaSuccess && current == ctx->device) return cudaSuccess;
    return cudaSetDevice(ctx->device);
}

// false (and an error noted) when a graph is being captured: `op` would wait for the stream,
// touch host memory or allocate, none of which a capture can hold.
static bool outside_capture(cuda_ctx_t *ctx, const char *op)
{
    if (!ctx->capturing) return true;
    note_error(ctx, op, cudaErrorStreamCaptureUnsupported, "called while a graph is being captured");
    return false;
}

// ---- memory -------------------------------------------------------------------------------

static bool reserve_allocation_slot(cuda_ctx_t *ctx)
{
    if (ctx->n_allocs < ctx->allocs_cap) return true;
    size_t cap = ctx->allocs_cap ? 2 * ctx->allocs_cap : 64;
    void *grown = realloc(ctx->allocs, cap * sizeof *ctx->allocs);
    if (!grown) return false;
    ctx->allocs = (cuda_allocation_t *)grown;
    ctx->allocs_cap = cap;
    return true;
}

// Index of ptr in ctx->allocs, or n_allocs when it is not there (newest first: scratch
// buffers are usually released soon after they are made).
static size_t find_allocation(const cuda_ctx_t *ctx, const void *ptr)
{
    for (size_t k = ctx->n_allocs; k > 0; k--)
        if (ctx->allocs[k - 1].ptr == ptr) return k - 1;
    return ctx->n_allocs;
}

static void *cuda_alloc(sd_backend_t *be, size_t bytes)
{
    held h(be);
    cuda_ctx_t *ctx = h.ctx;
    if (!outside_capture(ctx, "alloc")) {
        sd_set_error(SD_ERR_DEVICE, "cuda backend: alloc of %zu bytes while a graph is being captured",
                     bytes);
        return NULL;
    }
    if (bytes > ctx->cap - ctx->used) { // used <= cap always
        sd_set_error(SD_ERR_OUT_OF_MEMORY,
                     "cuda backend: %zu bytes would pass the memory cap (%zu of %zu bytes used)",
                     bytes, ctx->used, ctx->cap);
        return NULL;
    }
    if (!reserve_allocation_slot(ctx)) return NULL;
    void *ptr = NULL;
    cudaError_t e = enter(ctx);
    if (e == cudaSuccess) e = cudaMalloc(&ptr, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        cudaGetLastError(); // a failed allocation is reported by NULL, not by the next sync
        sd_set_error(SD_ERR_OUT_OF_MEMORY, "cuda backend: cudaMalloc of %zu bytes: %s", bytes,
                     cudaGetErrorString(e));
        return NULL;
    }
    ctx->allocs[ctx->n_allocs++] = cuda_allocation_t{ptr, bytes};
    ctx->used += bytes;
    return ptr;
}

static void cuda_release(sd_backend_t *be, void *ptr)
{
    if (!ptr) return;
    held h(be);
    cuda_ctx_t *ctx = h.ctx;
    if (!outside_capture(ctx, "release")) return;
    size_t k = find_allocation(ctx, ptr);
    if (k == ctx->n_allocs) {
        note_error(ctx, "release", cudaErrorInvalidDevicePointer, "%p is not an allocation of this backend", ptr);
        return;
    }
    size_t bytes = ctx->allocs[k].bytes;
    cudaError_t e = enter(ctx);
    if (e == cudaSuccess) e = cudaFree(ptr);
    note_error(ctx, "release", e, "%p, %zu bytes", ptr, bytes);
    ctx->allocs[k] = ctx->allocs[--ctx->n_allocs];
    ctx->used -= bytes;
}

static void cuda_upload(sd_backend_t *be, void *dst, const void *host_src, size_t bytes)
{
    if (bytes == 0) return;
    held h(be);
    cuda_ctx_t *ctx = h.ctx;
    if (!outside_capture(ctx, "upload")) return;
    cudaError_t e = enter(ctx);
    if (e == cudaSuccess) e = cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, ctx->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(ctx->stream); // host_src is reusable at return
    note_error(ctx, "upload", e, "%zu bytes to %p", bytes, dst);
}

static void cuda_download(sd_backend_t *be, void *host_dst, const void *src, size_t bytes)
{
    if (bytes == 0) return;
    held h(be);
    cuda_ctx_t *ctx = h.ctx;
    if (!outside_capture(ctx, "download")) return;
    cudaError_t e = enter(ctx);
    if (e == cudaSuccess) e = cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, ctx->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(ctx->stream);
    note_error(ctx, "download", e, "%zu bytes from %p", bytes, src);
}

// ---- ops ----------------------------------------------------------------------------------

static void cuda_embed(sd_backend_t *be, const sd_weight_t *table, const int32_t *tokens, int n,
                       float *out)
{
    held h(be);
    cuda_ctx_t *ctx = h.ctx;
    cudaError_t e = table ? enter(ctx) : cudaErrorInvalidValue;
    if (e == cudaSuccess) e = sd_cuda_embed(ctx->stream, table, tokens, n, out);
    note_error(ctx, "embed", e, "type %d table [%lld, %lld], n=%d", table ? (int)table->type : -1,
               table ? (long long)table->rows : 0LL, table ? (long long)table->cols : 0LL, n);
}

static void cuda_rmsnorm(sd_backend_t *be, const float *x, const float *w, int n, int dim,
                         float eps, float *out)
{
    held h(be);
    cuda_ctx_t *ctx = h.ctx;
    cudaError_t e = enter(ctx);
    if (e == cudaSuccess) e = sd_cuda_rmsnorm(ctx->stream, x, w, n, dim, eps, out);
    note_error(ctx, "rmsnorm", e, "n=%d dim=%d eps=%g", n, dim, (double)eps);
}

static void cuda_matmul(sd_backend_t *be, const sd_weight_t *w, const float *x, int n,
                        const float *bias, float *y)
{
    held h(be);
    cuda_ctx_t *ctx = h.ctx;
    cudaError_t e = w ? enter(ctx) : cudaErrorInvalidValue;
    if (e == cudaSuccess) e = sd_cuda_matmul(ctx->stream, w, x, n, bias, y);
    note_error(ctx, "matmul", e, "type %d weight [%lld, %lld], n=%d%s", w ? (int)w->type : -1,
               w ? (long long)w->rows : 0LL, w ? (long long)w->cols : 0LL, n, bias ? ", bias" : "");
}

static void cuda_rope(sd_backend_t *be, float *x, const int32_t *pos, int n, int n_head,
                      int head_dim, const sd_rope_params_t *p)
{
    held h(be);
    cuda_ctx_t *ctx = h.ctx;
    cudaError_t e = enter(ctx);
    if (e == cudaSuccess) e = sd_cuda_rope(ctx->stream, x, pos, n, n_head, head_dim, p);
    note_error(ctx, "rope", e, "n=%d n_head=%d head_dim=%d style=%d rot_dim=%d", n, n_head,
               head_dim, p ? (int)p->style : -1, p ? p->rot_dim : -1);
}

static void cuda_attention(sd_backend_t *be, const float *q, const float *k_cache,
                           const float *v_cache, const int32_t *blocks, int block_size,
                           const int32_t *pos, int n, int n_ctx, int n_head, int n_head_kv,
                           int head_dim, float *out)
{
    held h(be);
    cuda_ctx_t *ctx = h.ctx;
    cudaError_t e = enter(ctx);
    if (e == cudaSuccess)
        e = sd_cuda_attention(ctx->stream, q, k_cache, v_cache, blocks, block_size, pos, n, n_ctx,
                              n_head, n_head_kv, head_dim, out, ctx->workspace,
                              ATTN_WORKSPACE_BYTES);
    note_error(ctx, "attention", e, "n=%d n_ctx=%d n_head=%d n_head_kv=%d head_dim=%d", n, n_ctx,
               n_head, n_head_kv, head_dim);
}

static void cuda_attention_masked(sd_backend_t *be, const float *q, const float *k_cache,
                                  const float *v_cache, const int32_t *blocks, int block_size,
                                  int base, const uint8_t *mask, int n, int m, int n_ctx,
                                  int n_head, int n_head_kv, int head_dim, float *out)
{
    held h(be);
    cuda_ctx_t *ctx = h.ctx;
    cudaError_t e = enter(ctx);
    if (e == cudaSuccess)
        e = sd_cuda_attention_masked(ctx->stream, q, k_cache, v_cache, blocks, block_size, base,
                                     mask, n, m, n_ctx, n_head, n_head_kv, head_dim, out);
    note_error(ctx, "attention_masked", e, "base=%d n=%d m=%d n_ctx=%d n_head=%d n_head_kv=%d "
               "head_dim=%d", base, n, m, n_ctx, n_head, n_head_kv, head_dim);
}

static void cuda_kv_store(sd_backend_t *be, float *cache, const float *rows,
                          const int32_t *blocks, int block_size, const int32_t *pos, int n,
                          int n_ctx, size_t row)
{
    held h(be);
    cuda_ctx_t *ctx = h.ctx;
    cudaError_t e = enter(ctx);
    if (e == cudaSuccess)
        e = sd_cuda_kv_store(ctx->stream, cache, rows, blocks, block_size, pos, n, n_ctx, row);
    note_error(ctx, "kv_store", e, "n=%d n_ctx=%d row=%zu", n, n_ctx, row);
}

static void cuda_swiglu(sd_backend_t *be, const float *gate, const float *up, size_t len,
                        float *out)
{
    held h(be);
    cuda_ctx_t *ctx = h.ctx;
    cudaError_t e = enter(ctx);
    if (e == cudaSuccess) e = sd_cuda_swiglu(ctx->stream, gate, up, len, out);
    note_error(ctx, "swiglu", e, "len=%zu", len);
}

static void cuda_add(sd_backend_t *be, float *y, const float *x, size_t len)
{
    held h(be);
    cuda_ctx_t *ctx = h.ctx;
    cudaError_t e = enter(ctx);
    if (e == cudaSuccess) e = sd_cuda_add(ctx->stream, y, x, len);
    note_error(ctx, "add", e, "len=%zu", len);
}

// ---- graphs -------------------------------------------------------------------------------

static void cuda_graph_begin(sd_backend_t *be)
{
    held h(be);
    cuda_ctx_t *ctx = h.ctx;
    if (!outside_capture(ctx, "graph_begin")) return; // nested: spoils the running capture
    cudaError_t e = enter(ctx);
    if (e == cudaSuccess) e = cudaStreamBeginCapture(ctx->stream, cudaStreamCaptureModeThreadLocal);
    note_error(ctx, "graph_begin", e, "stream capture on device %d", ctx->device);
    ctx->capturing = e == cudaSuccess;
    ctx->capture_failed = false;
}

// Ends the capture whatever happened during it (the stream is usable again), then
// instantiates the graph, or discards it when the capture or an op in it failed.
static void *cuda_graph_end(sd_backend_t *be)
{
    held h(be);
    cuda_ctx_t *ctx = h.ctx;
    if (!ctx->capturing) {
        note_error(ctx, "graph_end", cudaErrorIllegalState, "no capture in progress on device %d",
                   ctx->device);
        return NULL;
    }
    ctx->capturing = false;
    cudaGraph_t graph = NULL;
    cudaError_t e = enter(ctx);
    cudaError_t ended = cudaStreamEndCapture(ctx->stream, &graph); // always leave capture mode
    if (e == cudaSuccess) e = ended;
    if (e == cudaSuccess && ctx->capture_failed) e = cudaErrorStreamCaptureInvalidated;
    cudaGraphExec_t exec = NULL;
    if (e == cudaSuccess) e = cudaGraphInstantiate(&exec, graph, 0);
    if (graph) cudaGraphDestroy(graph);
    if (e == cudaSuccess) return (void *)exec;
    cudaGetLastError(); // reported below, once
    note_error(ctx, "graph_end", e, "the captured ops are discarded; SPECDEC_CUDA_GRAPHS=0 runs "
                                    "without graphs");
    return NULL;
}

static void cuda_graph_launch(sd_backend_t *be, void *graph)
{
    held h(be);
    cuda_ctx_t *ctx = h.ctx;
    if (!outside_capture(ctx, "graph_launch")) return;
    cudaError_t e = graph ? enter(ctx) : cudaErrorInvalidValue;
    if (e == cudaSuccess) e = cudaGraphLaunch((cudaGraphExec_t)graph, ctx->stream);
    note_error(ctx, "graph_launch", e, "graph %p", graph);
}

// Waits for the stream (no launch of the graph may still be pending), then destroys it.
static void cuda_graph_free(sd_backend_t *be, void *graph)
{
    if (!graph) return;
    held h(be);
    cuda_ctx_t *ctx = h.ctx;
    if (!outside_capture(ctx, "graph_free")) return;
    cudaError_t e = enter(ctx);
    if (e == cudaSuccess) {
        e = cudaStreamSynchronize(ctx->stream);
        cudaError_t destroyed = cudaGraphExecDestroy((cudaGraphExec_t)graph);
        if (e == cudaSuccess) e = destroyed;
    }
    note_error(ctx, "graph_free", e, "graph %p", graph);
}

// ---- lifetime -----------------------------------------------------------------------------

// Waits for the stream, then returns and clears the first error since the last sync. An
// error raised while kernels ran (not at launch) surfaces here, named "sync". During a
// capture it does not wait (refused: the error is returned now and spoils the capture).
// The thread's cudaGetLastError() is not ours to read: launches report their own status.
static sd_status_t cuda_sync(sd_backend_t *be)
{
    held h(be);
    cuda_ctx_t *ctx = h.ctx;
    cudaError_t e = enter(ctx);
    if (e == cudaSuccess && outside_capture(ctx, "sync")) e = cudaStreamSynchronize(ctx->stream);
    note_error(ctx, "sync", e, "an op issued since the last sync, device %d", ctx->device);
    if (!ctx->failed) return SD_OK;
    ctx->failed = false;
    return sd_set_error(SD_ERR_DEVICE, "cuda backend: %s", ctx->error);
}

// Frees whatever ctx holds (any part may be missing: also the cleanup of a failed create).
static void free_ctx(cuda_ctx_t *ctx)
{
    if (cudaSetDevice(ctx->device) == cudaSuccess) {
        if (ctx->capturing) { // destroyed mid-capture: end it, discard the graph
            cudaGraph_t graph = NULL;
            if (cudaStreamEndCapture(ctx->stream, &graph) == cudaSuccess && graph) cudaGraphDestroy(graph);
        }
        if (ctx->stream) cudaStreamSynchronize(ctx->stream);
        for (size_t k = 0; k < ctx->n_allocs; k++) cudaFree(ctx->allocs[k].ptr);
        if (ctx->workspace) cudaFree(ctx->workspace);
        if (ctx->stream) cudaStreamDestroy(ctx->stream);
    }
    cudaGetLastError(); // nothing of this backend may reach another one's sync
    if (ctx->lock_made) pthread_mutex_destroy(&ctx->lock);
    free(ctx->allocs);
    free(ctx);
}

static void cuda_lock(sd_backend_t *be) { pthread_mutex_lock(&ctx_of(be)->lock); }
static void cuda_unlock(sd_backend_t *be) { pthread_mutex_unlock(&ctx_of(be)->lock); }

static void *cuda_stream(sd_backend_t *be) { return ctx_of(be)->stream; }

static void cuda_destroy(sd_backend_t *be)
{
    free_ctx(ctx_of(be));
    free(be);
}

static const sd_backend_ops_t cuda_ops = {
    /* .name = */ "cuda",
    /* .host_memory = */ 0,
    /* .destroy = */ cuda_destroy,
    /* .sync = */ cuda_sync,
    /* .alloc = */ cuda_alloc,
    /* .release = */ cuda_release,
    /* .upload = */ cuda_upload,
    /* .download = */ cuda_download,
    /* .embed = */ cuda_embed,
    /* .rmsnorm = */ cuda_rmsnorm,
    /* .matmul = */ cuda_matmul,
    /* .rope = */ cuda_rope,
    /* .attention = */ cuda_attention,
    /* .kv_store = */ cuda_kv_store,
    /* .swiglu = */ cuda_swiglu,
    /* .add = */ cuda_add,
    /* .graph_begin = */ cuda_graph_begin,
    /* .graph_end = */ cuda_graph_end,
    /* .graph_launch = */ cuda_graph_launch,
    /* .graph_free = */ cuda_graph_free,
    /* .lock = */ cuda_lock,
    /* .unlock = */ cuda_unlock,
    /* .matmul_group = */ NULL, // one matmul launch per weight
    /* .attention_masked = */ cuda_attention_masked,
    /* .stream = */ cuda_stream,
};

// ---- creation -----------------------------------------------------------------------------

static bool fraction_in_range(double f) { return f > 0.0 && f <= 1.0; } // false for NaN

// memory_fraction, or SPECDEC_GPU_MEMORY_FRACTION when it is 0, or the default when that is
// unset or empty.
static sd_status_t resolve_memory_fraction(double memory_fraction, double *out)
{
    if (memory_fraction != 0.0) {
        if (!fraction_in_range(memory_fraction))
            return sd_set_error(SD_ERR_INVALID_ARG, "CUDA memory fraction %g is outside (0, 1]",
                                memory_fraction);
        *out = memory_fraction;
        return SD_OK;
    }
    const char *env = getenv("SPECDEC_GPU_MEMORY_FRACTION");
    if (!env || !*env) {
        *out = DEFAULT_MEMORY_FRACTION;
        return SD_OK;
    }
    char *end = NULL;
    double f = strtod(env, &end);
    if (end == env || *end != '\0' || !fraction_in_range(f))
        return sd_set_error(SD_ERR_INVALID_ARG,
                            "SPECDEC_GPU_MEMORY_FRACTION='%s' is not a number in (0, 1]", env);
    *out = f;
    return SD_OK;
}

static sd_status_t check_device_index(int device)
{
    int count = 0;
    SD_CHECK(sd_cuda_device_count(&count));
    if (device < 0 || device >= count)
        return sd_set_error(SD_ERR_INVALID_ARG, "CUDA device %d does not exist (%d devices)",
                            device, count);
    return SD_OK;
}

// Selects the device, sets the cap, makes the stream and the attention workspace.
static sd_status_t open_device(cuda_ctx_t *ctx, double fraction)
{
    SD_CUDA_CHECK(cudaSetDevice(ctx->device));
    size_t free_bytes = 0, total_bytes = 0;
    SD_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    ctx->cap = (size_t)(fraction * (double)total_bytes);
    if (ctx->cap < ATTN_WORKSPACE_BYTES)
        return sd_set_error(SD_ERR_INVALID_ARG,
                            "CUDA memory fraction %g of device %d caps memory at %zu bytes, less "
                            "than the %zu-byte attention workspace",
                            fraction, ctx->device, ctx->cap, ATTN_WORKSPACE_BYTES);
    SD_CUDA_CHECK(cudaStreamCreateWithFlags(&ctx->stream, cudaStreamNonBlocking));
    SD_CUDA_CHECK(cudaMalloc(&ctx->workspace, ATTN_WORKSPACE_BYTES));
    ctx->used = ATTN_WORKSPACE_BYTES;
    return SD_OK;
}

extern "C" sd_status_t sd_backend_cuda_create(int device, double memory_fraction, sd_backend_t **out)
{
    if (!out) return sd_set_error(SD_ERR_INVALID_ARG, "sd_backend_cuda_create: out is NULL");
    *out = NULL;
    double fraction = 0.0;
    SD_CHECK(resolve_memory_fraction(memory_fraction, &fraction));
    SD_CHECK(check_device_index(device));
    sd_backend_t *be = (sd_backend_t *)calloc(1, sizeof *be);
    cuda_ctx_t *ctx = (cuda_ctx_t *)calloc(1, sizeof *ctx);
    if (!be || !ctx) {
        free(be);
        free(ctx);
        return sd_set_error(SD_ERR_OUT_OF_MEMORY, "out of memory creating the CUDA backend");
    }
    ctx->device = device;
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
    ctx->lock_made = pthread_mutex_init(&ctx->lock, &attr) == 0;
    pthread_mutexattr_destroy(&attr);
    sd_status_t st = ctx->lock_made ? open_device(ctx, fraction)
                                    : sd_set_error(SD_ERR_INTERNAL, "cuda backend: cannot make its lock");
    if (st != SD_OK) {
        free_ctx(ctx);
        free(be);
        return st;
    }
    be->ops = &cuda_ops;
    be->ctx = ctx;
    *out = be;
    return SD_OK;
}

// Bytes the backend's allocations hold now (the attention workspace included) and the cap.
extern "C" sd_status_t sd_backend_cuda_memory(sd_backend_t *be, size_t *used, size_t *cap)
{
    if (!be || be->ops != &cuda_ops)
        return sd_set_error(SD_ERR_INVALID_ARG, "sd_backend_cuda_memory: backend '%s' is not a CUDA backend",
                            be ? be->ops->name : "(null)");
    held h(be);
    cuda_ctx_t *ctx = h.ctx;
    if (used) *used = ctx->used;
    if (cap) *cap = ctx->cap;
    return SD_OK;
}
