// The CUDA runtime side of the IPC allreduce's host code (contract: intra_cuda.h): the
// region, the mapped host words, the launch counter, handles and teardown. The waits, the
// status and the handle exchange are C, in comm/ipc.c.
#include <stdlib.h>
#include <string.h>

#include "rank_sum.cuh"

struct sd_ipc {
    char *region;                  // own region (cudaMalloc)
    char *peer[SD_IPC_MAX_RANKS];  // every rank's region in this process (own included)
    void *words;                   // mapped host: abort word, then error word
    volatile int *abort_word;      // host view
    volatile uint64_t *error_word; // host view
    const volatile int *abort_dev; // device views of the same
    volatile uint64_t *error_dev;
    uint64_t *seq_dev;             // device: the launch counter (sd_ipc_bump_launch)
    void *stage;                   // device: host buffers staged (sd_ipc_stage)
    size_t stage_bytes;
    int rank, nranks, device, max_blocks;
};

static_assert(sizeof(cudaIpcMemHandle_t) <= sizeof(((sd_ipc_hello_t *)0)->handle),
              "sd_ipc_hello_t holds a cudaIpcMemHandle_t");

static sd_status_t cuda_status(cudaError_t e, const char *call)
{
    return e == cudaSuccess ? SD_OK
                            : sd_set_error(SD_ERR_DEVICE, "CUDA IPC allreduce: %s failed: %s", call,
                                           cudaGetErrorString(e));
}
#define IPC_CUDA(call) SD_CHECK(cuda_status((call), #call))

extern "C" sd_status_t sd_ipc_create(int device, void *stream, sd_ipc_t **out, sd_ipc_hello_t *hello)
{
    *out = NULL;
    memset(hello, 0, sizeof *hello);
    sd_ipc_t *s = (sd_ipc_t *)calloc(1, sizeof *s);
    SD_ALLOC_CHECK(s, sizeof *s, "the CUDA IPC allreduce state");
    s->device = device;
    *out = s; // sd_ipc_destroy frees what exists, also after a failure here
    cudaStream_t st = (cudaStream_t)stream;
    IPC_CUDA(cudaSetDevice(device));
    IPC_CUDA(cudaMalloc((void **)&s->region, sd_ipc_region_bytes(SD_IPC_SLOT_BYTES)));
    IPC_CUDA(cudaMemsetAsync(s->region, 0, SD_IPC_FLAGS_BYTES, st));
    IPC_CUDA(cudaMalloc((void **)&s->seq_dev, sizeof *s->seq_dev));
    IPC_CUDA(cudaMemsetAsync(s->seq_dev, 0, sizeof *s->seq_dev, st));
    IPC_CUDA(cudaHostAlloc(&s->words, 2 * sizeof(uint64_t), cudaHostAllocMapped));
    memset(s->words, 0, 2 * sizeof(uint64_t));
    s->abort_word = (volatile int *)s->words;
    s->error_word = (volatile uint64_t *)s->words + 1;
    void *dev = NULL;
    IPC_CUDA(cudaHostGetDevicePointer(&dev, s->words, 0));
    s->abort_dev = (const volatile int *)dev;
    s->error_dev = (volatile uint64_t *)dev + 1;
    IPC_CUDA(cudaStreamSynchronize(st)); // flags zeroed before any peer can know the handle
    cudaIpcMemHandle_t h;
    IPC_CUDA(cudaIpcGetMemHandle(&h, s->region));
    memcpy(hello->handle, &h, sizeof h);
    IPC_CUDA(cudaDeviceGetAttribute(&hello->sms, cudaDevAttrMultiProcessorCount, device));
    return SD_OK;
}

extern "C" sd_status_t sd_ipc_connect(sd_ipc_t *s, int rank, int nranks, const sd_ipc_hello_t *all)
{
    s->rank = rank;
    s->nranks = nranks;
    s->max_blocks = SD_IPC_MAX_BLOCKS;
    IPC_CUDA(cudaSetDevice(s->device));
    for (int q = 0; q < nranks; q++) {
        if (all[q].sms < s->max_blocks) s->max_blocks = all[q].sms;
        if (q == rank) {
            s->peer[q] = s->region;
            continue;
        }
        cudaIpcMemHandle_t h;
        memcpy(&h, all[q].handle, sizeof h);
        IPC_CUDA(cudaIpcOpenMemHandle((void **)&s->peer[q], h, cudaIpcMemLazyEnablePeerAccess));
    }
    return SD_OK;
}

extern "C" sd_status_t sd_ipc_enqueue(sd_ipc_t *s, void *buf, size_t count, sd_gpu_dtype_t dt,
                                      uint64_t budget_ns, void *stream)
{
    size_t es = dt == SD_GPU_F32 ? 4 : 2, piece = SD_IPC_SLOT_BYTES / es;
    for (size_t off = 0; off < count; off += piece) {
        sd_ipc_args_t a = {};
        memcpy(a.region, s->peer, sizeof a.region);
        a.rank = s->rank;
        a.nranks = s->nranks;
        a.dtype = dt;
        a.seq_dev = s->seq_dev;
        a.buf = (char *)buf + off * es;
        a.slot_bytes = SD_IPC_SLOT_BYTES;
        a.budget_ns = budget_ns;
        a.abort_word = s->abort_dev;
        a.error_word = s->error_dev;
        sd_ipc_plan(&a, count - off < piece ? count - off : piece, es, s->max_blocks);
        SD_CHECK(sd_ipc_bump_launch(s->seq_dev, stream));
        SD_CHECK(sd_ipc_allreduce_launch(&a, stream));
    }
    return SD_OK;
}

extern "C" int sd_ipc_query(void *stream)
{
    cudaError_t e = cudaStreamQuery((cudaStream_t)stream);
    if (e == cudaSuccess) return 1;
    if (e == cudaErrorNotReady) return 0;
    cuda_status(e, "cudaStreamQuery");
    return -1;
}

extern "C" void sd_ipc_abort(sd_ipc_t *s) { *s->abort_word = 1; }
extern "C" uint64_t sd_ipc_error(const sd_ipc_t *s) { return *s->error_word; }

extern "C" void sd_ipc_close_peers(sd_ipc_t *s)
{
    if (s == NULL) return;
    cudaSetDevice(s->device);
    for (int q = 0; q < SD_IPC_MAX_RANKS; q++) {
        if (s->peer[q] && s->peer[q] != s->region) cudaIpcCloseMemHandle(s->peer[q]);
        s->peer[q] = NULL;
    }
}

extern "C" sd_status_t sd_ipc_stage(sd_ipc_t *s, void *host, size_t bytes, int out, void *stream,
                                    void **dev)
{
    cudaStream_t st = (cudaStream_t)stream;
    if (bytes > s->stage_bytes) {
        IPC_CUDA(cudaFree(s->stage));
        s->stage = NULL;
        s->stage_bytes = 0;
        IPC_CUDA(cudaMalloc(&s->stage, bytes));
        s->stage_bytes = bytes;
    }
    *dev = s->stage;
    if (out)
        IPC_CUDA(cudaMemcpyAsync(host, s->stage, bytes, cudaMemcpyDeviceToHost, st));
    else
        IPC_CUDA(cudaMemcpyAsync(s->stage, host, bytes, cudaMemcpyHostToDevice, st));
    IPC_CUDA(cudaStreamSynchronize(st)); // the stream holds only this copy: bounded
    return SD_OK;
}

extern "C" void sd_ipc_destroy(sd_ipc_t *s, int free_region)
{
    if (s == NULL) return;
    sd_ipc_close_peers(s);
    cudaFree(s->stage);
    if (free_region) {
        cudaFree(s->region);
        cudaFree(s->seq_dev);
        cudaFreeHost(s->words);
    } // else left mapped until the process ends: a late peer may still write its flags
    free(s);
}

extern "C" sd_status_t sd_ipc_stream(int device, void **stream, int destroy)
{
    IPC_CUDA(cudaSetDevice(device));
    if (destroy) {
        if (*stream) IPC_CUDA(cudaStreamDestroy((cudaStream_t)*stream));
        *stream = NULL;
        return SD_OK;
    }
    IPC_CUDA(cudaStreamCreateWithFlags((cudaStream_t *)stream, cudaStreamNonBlocking));
    return SD_OK;
}

extern "C" int sd_ipc_is_device(const void *p)
{
    cudaPointerAttributes a;
    if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
}

extern "C" int sd_ipc_device_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return n;
}
