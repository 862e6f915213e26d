/* The cuda_ipc backend (ENABLE_INTRA_NODE_COMM=1 for GPU models): allreduces on the CUDA
 * IPC kernels (comm/ipc.h), on the comm's own stream inside a collective (host buffers
 * staged through device memory) or on the caller's stream, capturable
 * (sd_comm_allreduce_device); every other collective goes to a CPU intra world. The region is set up when the
 * communicator is made, so no setup falls inside a graph capture. docs/comm.md. */
#include <stdlib.h>

#include "comm/ipc.h"

typedef struct cuda_ipc_ctx {
    sd_comm_t *host; /* the intra world: allgather, broadcast, barrier */
    sd_ipc_t *ipc;
    void *stream;    /* the comm's own stream, for sd_comm_allreduce_sum on device buffers */
    int device;
} cuda_ipc_ctx_t;

static const sd_comm_ops_t cuda_ipc_ops;

static cuda_ipc_ctx_t *ctx_of(const sd_comm_t *c) { return (cuda_ipc_ctx_t *)c->ctx; }

static sd_status_t cuda_ipc_allreduce(sd_comm_t *c, void *buf, size_t count, sd_comm_dtype_t dt)
{
    cuda_ipc_ctx_t *x = ctx_of(c);
    return sd_ipc_allreduce_staged(c, x->ipc, buf, count, dt, x->stream);
}

static sd_status_t cuda_ipc_allreduce_device(sd_comm_t *c, void *buf, size_t count,
                                             sd_comm_dtype_t dt, void *stream)
{
    return sd_ipc_launch(c, ctx_of(c)->ipc, buf, count, dt, stream);
}

static sd_status_t cuda_ipc_device_status(sd_comm_t *c) { return sd_ipc_status(c, ctx_of(c)->ipc); }

static sd_status_t cuda_ipc_allgather(sd_comm_t *c, const void *send, size_t bytes, void *recv)
{
    return sd_comm_allgather(ctx_of(c)->host, send, bytes, recv);
}

static sd_status_t cuda_ipc_broadcast(sd_comm_t *c, void *buf, size_t bytes, int root)
{
    return sd_comm_broadcast(ctx_of(c)->host, buf, bytes, root);
}

static sd_status_t cuda_ipc_barrier(sd_comm_t *c) { return sd_comm_barrier(ctx_of(c)->host); }

/* Teardown in order: the peers' regions closed, a barrier, then the own region freed
 * (left mapped after a failure: a peer may still write its flags there). */
static void cuda_ipc_destroy(sd_comm_t *c)
{
    cuda_ipc_ctx_t *x = ctx_of(c);
    sd_ipc_teardown(c, x->ipc, x->host != NULL && x->host->failed == SD_OK);
    sd_comm_teardown(c);
    sd_ipc_stream(x->device, &x->stream, 1);
    sd_comm_free(x->host);
    free(x);
    free(c);
}

static sd_status_t cuda_ipc_split_first(sd_comm_t *c, int n, sd_comm_t **out)
{
    cuda_ipc_ctx_t *x = ctx_of(c);
    sd_comm_t *host = NULL;
    SD_CHECK(sd_comm_split_first(x->host, n, &host));
    if (host == NULL) return SD_OK;
    return sd_comm_cuda_ipc_new(host, x->device, out);
}

static const sd_comm_ops_t cuda_ipc_ops = {
    .name = "cuda_ipc",
    .allreduce_sum = cuda_ipc_allreduce,
    .allgather = cuda_ipc_allgather,
    .broadcast = cuda_ipc_broadcast,
    .barrier = cuda_ipc_barrier,
    .split_first = cuda_ipc_split_first,
    .destroy = cuda_ipc_destroy,
    .allreduce_device = cuda_ipc_allreduce_device,
    .device_status = cuda_ipc_device_status,
    .device_graphs = 1,
};

/* The device of a rank: `device`, or local rank % the devices this process sees. */
static sd_status_t pick_device(int device, int *out)
{
    int n = sd_ipc_device_count();
    if (n <= 0) return sd_set_error(SD_ERR_DEVICE, "cuda_ipc backend: this rank sees no CUDA device");
    if (device >= n)
        return sd_set_error(SD_ERR_INVALID_ARG, "cuda_ipc backend: device cuda:%d of %d", device, n);
    *out = device >= 0 ? device : sd_comm_local_rank() % n;
    return SD_OK;
}

sd_status_t sd_comm_cuda_ipc_new(sd_comm_t *host, int device, sd_comm_t **out)
{
    *out = NULL;
    sd_comm_t *c = calloc(1, sizeof *c);
    cuda_ipc_ctx_t *x = calloc(1, sizeof *x);
    sd_status_t st = c && x ? SD_OK
                            : sd_set_error(SD_ERR_OUT_OF_MEMORY, "out of memory allocating a "
                                                                 "cuda_ipc communicator");
    if (st == SD_OK) {
        x->host = host;
        st = sd_comm_agree(host, pick_device(device, &x->device));
    }
    if (st == SD_OK) st = sd_comm_agree(host, sd_ipc_stream(x->device, &x->stream, 0));
    if (st == SD_OK)
        st = sd_comm_setup(c, &cuda_ipc_ops, x, host->rank, host->size, host->group,
                           host->world_rank);
    if (st == SD_OK) {
        sd_comm_op_begin(c, SD_OP_INIT, sizeof(sd_ipc_hello_t));
        st = sd_comm_op_end(c, sd_ipc_setup(c, x->device, x->stream, cuda_ipc_allgather, &x->ipc));
        if (st != SD_OK) {
            cuda_ipc_destroy(c);
            return st;
        }
        *out = c;
        return SD_OK;
    }
    if (x && x->stream) sd_ipc_stream(x->device, &x->stream, 1);
    free(x);
    free(c);
    sd_comm_free(host);
    return st;
}

int sd_comm_cuda_ipc_built(void) { return 1; }
