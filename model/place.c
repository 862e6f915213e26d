/* Where a model computes: the backend chosen from sd_model_params_t.device, and, for a
 * device backend, one upload of every weight, norm and bias at load time (all device
 * memory is taken up front: weights here, the KV cache and scratch by sd_seq_init). */
#include <stdlib.h>
#include <string.h>

#include "comm/comm.h"
#include "core/check.h"
#include "kernels/cuda.h"
#include "core/log.h"
#include "model/forward.h"
#include "model/place.h"
#include "model.h"

#define TENSOR_NAME_LEN 96
#define DEVICE_CTX_SHARE 0.8 /* of what the weights leave, for a default-sized KV cache */

/* ---- the backend ------------------------------------------------------------------ */

/* "cuda" -> 0, "cuda:N" -> N; -1 for anything else. */
static int cuda_index(const char *name)
{
    if (strcmp(name, "cuda") == 0) return 0;
    if (strncmp(name, "cuda:", 5) != 0 || name[5] == '\0') return -1;
    char *end;
    long v = strtol(name + 5, &end, 10);
    return *end == '\0' && v >= 0 && v < 1024 ? (int)v : -1;
}

/* "auto": CUDA device 0 for a single-rank model when a GPU is present, else the CPU (also in
 * the CUDA host mode, whose device is the CPU running kernels: only an explicit "cuda").
 * Under TP, "cuda" is device local rank % devices; "cuda:N" is N on every rank. */
static const char *resolve_auto(int ranks)
{
    int count = 0;
    if (ranks > 1 || sd_cuda_host_mode() || sd_cuda_device_count(&count) != SD_OK || count == 0) {
        sd_clear_error();
        return "cpu";
    }
    return "cuda";
}

sd_status_t sd_model_create_backend(sd_model_t *m, const sd_model_params_t *p)
{
    const char *name = p->device ? p->device : getenv("SPECDEC_DEVICE");
    if (name == NULL || name[0] == '\0') name = "auto";
    int ranks = m->comm ? m->tp.size : 1;
    m->cuda_device = -1;
    if (strcmp(name, "auto") == 0) name = resolve_auto(ranks);
    if (strcmp(name, "cpu") == 0) return sd_backend_cpu_create(m->n_threads, &m->backend);
    int index = cuda_index(name);
    if (index < 0)
        return sd_set_error(SD_ERR_INVALID_ARG,
                            "unknown device '%s' (expected cpu, cuda, cuda:N or auto)", name);
    if (ranks > 1 && strcmp(name, "cuda") == 0) { /* each rank on its own GPU where it can */
        int count = 0;
        SD_CHECK(sd_cuda_device_count(&count));
        if (count > 0) index = sd_comm_local_rank() % count;
    }
    SD_CHECK(sd_backend_cuda_create(index, 0.0, &m->backend));
    m->cuda_device = index;
    return SD_OK;
}

/* ---- weight placement ---------------------------------------------------------------- */

typedef struct placement {
    sd_model_t *m;
    size_t bytes; /* counted by the sizing pass */
    int uploading;
    int (*type_ok)(sd_dtype_t); /* sizing pass: the matrix types the backend computes */
} placement_t;

/* Sizing pass: count; upload pass: copy `bytes` at *ptr to a new device buffer and point
 * *ptr at it. */
static sd_status_t place(placement_t *pl, const void **ptr, size_t bytes, const char *what)
{
    if (*ptr == NULL || bytes == 0) return SD_OK;
    if (!pl->uploading) {
        pl->bytes += bytes;
        return SD_OK;
    }
    sd_model_t *m = pl->m;
    sd_backend_t *be = m->backend;
    void *dev = sd_backend_alloc(be, bytes);
    if (dev == NULL)
        return sd_set_error(SD_ERR_OUT_OF_MEMORY, "out of %s memory placing %s (%zu bytes)",
                            sd_backend_name(be), what, bytes);
    m->device_bufs[m->n_device_bufs++] = dev;
    sd_backend_upload(be, dev, *ptr, bytes);
    *ptr = dev;
    return SD_OK;
}

static sd_status_t place_matrix(placement_t *pl, sd_weight_t *w, const char *what)
{
    if (!pl->uploading && !pl->type_ok(w->type)) {
        const char *tn = sd_dtype_name((uint32_t)w->type);
        return sd_set_error(SD_ERR_UNSUPPORTED_TYPE,
                            "tensor '%s' has type %s (%u), which the %s backend has no kernel for "
                            "(use --device cpu)",
                            what, tn ? tn : "unknown", (unsigned)w->type, sd_backend_name(pl->m->backend));
    }
    return place(pl, &w->data, w->row_bytes * (size_t)w->rows, what);
}

static sd_status_t place_vector(placement_t *pl, const float **v, int64_t n, const char *what)
{
    return place(pl, (const void **)v, (size_t)n * sizeof(float), what);
}

/* Every tensor of the model, in one pass (sizing or uploading). */
static sd_status_t place_all(placement_t *pl)
{
    sd_model_t *m = pl->m;
    const sd_hparams_t *hp = &m->hp;
    int64_t E = hp->n_embd, qd = (int64_t)m->tp.n_head * hp->head_dim;
    int64_t kvd = (int64_t)m->tp.n_head_kv * hp->head_dim;
    int tied = m->output.data == m->tok_embd.data;
    SD_CHECK(place_matrix(pl, &m->tok_embd, "token_embd.weight"));
    if (tied)
        m->output.data = m->tok_embd.data; /* one device copy serves both */
    else
        SD_CHECK(place_matrix(pl, &m->output, "output.weight"));
    SD_CHECK(place_vector(pl, &m->output_norm, E, "output_norm.weight"));
    static const sd_arch_tensor_t mat_ids[] = {
        SD_ARCH_TENSOR_ATTN_Q,    SD_ARCH_TENSOR_ATTN_K,  SD_ARCH_TENSOR_ATTN_V, SD_ARCH_TENSOR_ATTN_OUT,
        SD_ARCH_TENSOR_FFN_GATE, SD_ARCH_TENSOR_FFN_UP, SD_ARCH_TENSOR_FFN_DOWN};
    for (int il = 0; il < hp->n_layer; il++) {
        sd_layer_t *L = &m->layers[il];
        sd_weight_t *mats[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        char name[TENSOR_NAME_LEN];
        for (size_t i = 0; i < sizeof mats / sizeof mats[0]; i++)
            SD_CHECK(place_matrix(pl, mats[i],
                                  sd_arch_tensor_name(m->arch, mat_ids[i], il, name, sizeof name)));
        SD_CHECK(place_vector(pl, &L->attn_norm, E, "attn_norm.weight"));
        SD_CHECK(place_vector(pl, &L->ffn_norm, E, "ffn_norm.weight"));
        SD_CHECK(place_vector(pl, &L->bq, qd, "attn_q.bias"));
        SD_CHECK(place_vector(pl, &L->bk, kvd, "attn_k.bias"));
        SD_CHECK(place_vector(pl, &L->bv, kvd, "attn_v.bias"));
    }
    return SD_OK;
}

#define MAX_DEVICE_BUFS_PER_LAYER 12 /* 7 matrices + 5 vectors */

/* The default KV cache (p->n_ctx == 0) shrinks to what the device has left. */
static sd_status_t fit_default_ctx(sd_model_t *m, size_t free_bytes)
{
    size_t per_pos = sd_kv_position_bytes(m);
    size_t fit = (size_t)((double)free_bytes * DEVICE_CTX_SHARE) / per_pos;
    if (fit < 1)
        return sd_set_error(SD_ERR_OUT_OF_MEMORY,
                            "the weights leave %zu bytes on the device: not one KV-cache position "
                            "(%zu bytes) fits",
                            free_bytes, per_pos);
    if (fit < (size_t)m->n_ctx) {
        sd_log(SD_LOG_INFO, "device memory holds a KV cache of %zu positions (of %d)", fit,
               m->n_ctx);
        m->n_ctx = (int)fit;
    }
    return SD_OK;
}

sd_status_t sd_model_check_weight_types(sd_model_t *m, int (*type_ok)(sd_dtype_t))
{
    placement_t pl = {.m = m, .type_ok = type_ok};
    return place_all(&pl);
}

sd_status_t sd_model_place_weights(sd_model_t *m, int ctx_given)
{
    sd_backend_t *be = m->backend;
    if (sd_backend_host_memory(be)) return SD_OK; /* the CPU computes on the file's pages */
    placement_t pl = {.m = m, .type_ok = sd_cuda_type_supported};
    SD_CHECK(place_all(&pl));
    size_t used = 0, cap = 0;
    SD_CHECK(sd_backend_cuda_memory(be, &used, &cap));
    if (used + pl.bytes > cap)
        return sd_set_error(SD_ERR_OUT_OF_MEMORY,
                            "the model's weights need %.1f MiB but the %s device has %.1f MiB "
                            "left of its %.1f MiB cap (SPECDEC_GPU_MEMORY_FRACTION)",
                            pl.bytes / 1048576.0, sd_backend_name(be), (cap - used) / 1048576.0,
                            cap / 1048576.0);
    size_t n_bufs = 3 + (size_t)m->hp.n_layer * MAX_DEVICE_BUFS_PER_LAYER;
    m->device_bufs = calloc(n_bufs, sizeof *m->device_bufs);
    SD_ALLOC_CHECK(m->device_bufs, n_bufs * sizeof *m->device_bufs, "device buffer table");
    pl.uploading = 1;
    SD_CHECK(place_all(&pl));
    SD_CHECK(sd_backend_sync(be));
    SD_CHECK(sd_backend_cuda_memory(be, &used, &cap));
    return ctx_given ? SD_OK : fit_default_ctx(m, cap - used);
}

void sd_model_release_weights(sd_model_t *m)
{
    for (int i = 0; i < m->n_device_bufs; i++) sd_backend_release(m->backend, m->device_bufs[i]);
    free(m->device_bufs);
    m->device_bufs = NULL;
    m->n_device_bufs = 0;
}
