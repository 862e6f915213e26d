/* Model loading: the architecture's row (model/arch.c), hyper-parameters from {arch}.*
 * metadata, every tensor looked up by the row's name for it and shape-checked, matrices
 * as zero-copy views into the GGUF mapping; under tensor parallelism, then cut down to
 * this rank's shard (model/tp_plan.c). */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/check.h"
#include "comm/comm.h"
#include "model/place.h"
#include "model.h"
#include "tp_plan.h"

#define MAX_CTX_DEFAULT 4096

/* ---- metadata ----------------------------------------------------------- */

/* Integer {arch}.{suffix} in [lo, hi]; `def` when absent and def >= 0, else required. */
static sd_status_t get_int(const sd_model_t *m, const char *suffix, int def, int lo, int hi,
                           int *out)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", m->arch->name, suffix);
    if (gguf_find_kv(m->gguf, key) == NULL && def >= 0) {
        *out = def;
        return SD_OK;
    }
    uint32_t v;
    SD_CHECK(gguf_get_u32(m->gguf, key, &v));
    if (v < (uint32_t)lo || v > (uint32_t)hi)
        return sd_set_error(SD_ERR_BAD_MODEL, "metadata '%s' = %u is outside [%d, %d]", key, v,
                            lo, hi);
    *out = (int)v;
    return SD_OK;
}

/* Float {arch}.{suffix} (> 0, finite); `def` when absent and def > 0, else required. */
static sd_status_t get_float(const sd_model_t *m, const char *suffix, float def, float *out)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", m->arch->name, suffix);
    if (gguf_find_kv(m->gguf, key) == NULL && def > 0) {
        *out = def;
        return SD_OK;
    }
    float v;
    SD_CHECK(gguf_get_f32(m->gguf, key, &v));
    if (!(v > 0.0f && v < 1e30f))
        return sd_set_error(SD_ERR_BAD_MODEL, "metadata '%s' = %g must be positive and finite",
                            key, (double)v);
    *out = v;
    return SD_OK;
}

static sd_status_t load_arch(sd_model_t *m)
{
    gguf_str_t arch;
    SD_CHECK(gguf_get_str(m->gguf, "general.architecture", &arch));
    SD_CHECK(sd_arch_find(arch.data, arch.len, &m->arch));
    m->hp.arch = m->arch->id;
    m->hp.rope.style = m->arch->rope;
    m->arch_name = m->arch->name;

    gguf_str_t name = {"", 0};
    if (gguf_find_kv(m->gguf, "general.name")) SD_CHECK(gguf_get_str(m->gguf, "general.name", &name));
    m->name = strndup(name.data, name.len);
    SD_ALLOC_CHECK(m->name, name.len + 1, "general.name");
    return SD_OK;
}

/* The architecture's name of tensor t (of layer il), in buf[TENSOR_NAME_MAX]. */
#define TENSOR_NAME_MAX 96
static const char *tensor_name(const sd_model_t *m, sd_arch_tensor_t t, int il, char *buf)
{
    return sd_arch_tensor_name(m->arch, t, il, buf, TENSOR_NAME_MAX);
}

/* n_vocab from the token embedding's ne[1], cross-checked with {arch}.vocab_size. */
static sd_status_t load_vocab_size(sd_model_t *m)
{
    char embd[TENSOR_NAME_MAX];
    tensor_name(m, SD_ARCH_TENSOR_TOKEN_EMBD, 0, embd);
    const gguf_tensor_t *t = gguf_find_tensor(m->gguf, embd);
    if (t == NULL) return sd_set_error(SD_ERR_BAD_MODEL, "tensor '%s' is missing", embd);
    if (t->ne[1] < 1 || t->ne[1] > INT_MAX)
        return sd_set_error(SD_ERR_BAD_MODEL, "tensor '%s' has %lld rows", embd,
                            (long long)t->ne[1]);
    m->hp.n_vocab = (int)t->ne[1];
    int vocab_size;
    SD_CHECK(get_int(m, "vocab_size", m->hp.n_vocab, 1, INT_MAX, &vocab_size));
    if (vocab_size != m->hp.n_vocab)
        return sd_set_error(SD_ERR_BAD_MODEL, "%s.vocab_size = %d but %s has %d rows",
                            m->arch->name, vocab_size, embd, m->hp.n_vocab);
    return SD_OK;
}

static sd_status_t load_hparams(sd_model_t *m)
{
    sd_hparams_t *hp = &m->hp;
    const int big = 1 << 20;
    SD_CHECK(get_int(m, "block_count", -1, 1, 4096, &hp->n_layer));
    SD_CHECK(get_int(m, "embedding_length", -1, 1, big, &hp->n_embd));
    SD_CHECK(get_int(m, "feed_forward_length", -1, 1, 4 * big, &hp->n_ff));
    SD_CHECK(get_int(m, "attention.head_count", -1, 1, 4096, &hp->n_head));
    SD_CHECK(get_int(m, "attention.head_count_kv", hp->n_head, 1, 4096, &hp->n_head_kv));
    SD_CHECK(get_int(m, "context_length", -1, 1, INT_MAX, &hp->n_ctx_train));
    SD_CHECK(get_float(m, "attention.layer_norm_rms_epsilon", -1.0f, &hp->norm_eps));
    SD_CHECK(get_float(m, "rope.freq_base", 10000.0f, &hp->rope.freq_base));
    if (hp->n_head % hp->n_head_kv != 0)
        return sd_set_error(SD_ERR_BAD_MODEL,
                            "attention.head_count %d is not a multiple of head_count_kv %d",
                            hp->n_head, hp->n_head_kv);
    int def_hd = hp->n_embd % hp->n_head == 0 ? hp->n_embd / hp->n_head : -1;
    SD_CHECK(get_int(m, "attention.key_length", def_hd, 1, 4096, &hp->head_dim));
    SD_CHECK(get_int(m, "rope.dimension_count", hp->head_dim, 2, hp->head_dim, &hp->rope.rot_dim));
    if (hp->rope.rot_dim % 2 != 0)
        return sd_set_error(SD_ERR_BAD_MODEL, "%s.rope.dimension_count %d is odd", m->arch->name,
                            hp->rope.rot_dim);
    if ((int64_t)hp->n_head * hp->head_dim > big)
        return sd_set_error(SD_ERR_BAD_MODEL, "%d heads x %d dims is too large", hp->n_head,
                            hp->head_dim);
    return load_vocab_size(m);
}

/* ---- tensors ------------------------------------------------------------ */

static const gguf_tensor_t *find_shaped(sd_model_t *m, const char *name, int64_t ne0, int64_t ne1,
                                        sd_status_t *st)
{
    const gguf_tensor_t *t = gguf_find_tensor(m->gguf, name);
    if (t == NULL) {
        *st = sd_set_error(SD_ERR_BAD_MODEL, "tensor '%s' is missing", name);
        return NULL;
    }
    if (t->ne[0] != ne0 || t->ne[1] != ne1 || t->ne[2] != 1 || t->ne[3] != 1) {
        *st = sd_set_error(SD_ERR_BAD_MODEL,
                           "tensor '%s' has shape [%lld, %lld, %lld, %lld], expected [%lld, %lld]",
                           name, (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2],
                           (long long)t->ne[3], (long long)ne0, (long long)ne1);
        return NULL;
    }
    *st = SD_OK;
    return t;
}

/* Matrix [rows, cols] (GGUF ne = {cols, rows}) as a view into the mapping. */
static sd_status_t get_matrix(sd_model_t *m, const char *name, int64_t rows, int64_t cols,
                              sd_weight_t *w)
{
    sd_status_t st;
    const gguf_tensor_t *t = find_shaped(m, name, cols, rows, &st);
    if (t == NULL) return st;
    if (!sd_dtype_supported(t->type)) {
        const char *tn = sd_dtype_name(t->type);
        return sd_set_error(SD_ERR_UNSUPPORTED_TYPE, "tensor '%s' has unsupported type %s (%u)",
                            name, tn ? tn : "unknown", (unsigned)t->type);
    }
    *w = (sd_weight_t){.type = t->type, .rows = rows, .cols = cols, .data = t->data};
    SD_CHECK(sd_dtype_row_bytes(t->type, cols, &w->row_bytes));
    if (w->row_bytes * (size_t)rows > t->nbytes)
        return sd_set_error(SD_ERR_BAD_MODEL, "tensor '%s' holds %zu bytes, needs %zu", name,
                            t->nbytes, w->row_bytes * (size_t)rows);
    return SD_OK;
}

/* Bytes of f32 copies a model may need: every norm and bias. */
static size_t vector_elems(const sd_hparams_t *hp)
{
    size_t qd = (size_t)hp->n_head * hp->head_dim, kvd = (size_t)hp->n_head_kv * hp->head_dim;
    return (size_t)hp->n_embd * (1 + 2 * (size_t)hp->n_layer) + hp->n_layer * (qd + 2 * kvd);
}

/* Vector [n] as f32: a view when stored F32, else converted into m->f32_copies.
 * Absent and !required -> *out = NULL. */
static sd_status_t get_vector(sd_model_t *m, const char *name, int64_t n, int required,
                              size_t *copy_used, const float **out)
{
    *out = NULL;
    if (!required && gguf_find_tensor(m->gguf, name) == NULL) return SD_OK;
    sd_status_t st;
    const gguf_tensor_t *t = find_shaped(m, name, n, 1, &st);
    if (t == NULL) return st;
    if (t->type == SD_DTYPE_F32) {
        *out = t->data;
        return SD_OK;
    }
    if (t->type != SD_DTYPE_F16 && t->type != SD_DTYPE_BF16) {
        const char *tn = sd_dtype_name(t->type);
        return sd_set_error(SD_ERR_UNSUPPORTED_TYPE,
                            "tensor '%s' has type %s; norms and biases must be F32, F16 or BF16",
                            name, tn ? tn : "unknown");
    }
    if (m->f32_copies == NULL) {
        size_t bytes = vector_elems(&m->hp) * sizeof(float);
        m->f32_copies = malloc(bytes);
        SD_ALLOC_CHECK(m->f32_copies, bytes, "converted norms and biases");
    }
    float *dst = m->f32_copies + *copy_used;
    sd_dequantize_row(t->type, t->data, dst, n);
    *copy_used += (size_t)n;
    *out = dst;
    return SD_OK;
}

static sd_status_t load_layer(sd_model_t *m, int il, size_t *used)
{
    const sd_hparams_t *hp = &m->hp;
    sd_layer_t *L = &m->layers[il];
    int64_t E = hp->n_embd, qd = (int64_t)hp->n_head * hp->head_dim;
    int64_t kvd = (int64_t)hp->n_head_kv * hp->head_dim;
    int bias_required = m->arch->qkv_bias == SD_ARCH_BIAS_REQUIRED;
    char name[TENSOR_NAME_MAX];
#define NAME(t) tensor_name(m, SD_ARCH_TENSOR_##t, il, name)
    SD_CHECK(get_vector(m, NAME(ATTN_NORM), E, 1, used, &L->attn_norm));
    SD_CHECK(get_matrix(m, NAME(ATTN_Q), qd, E, &L->wq));
    SD_CHECK(get_matrix(m, NAME(ATTN_K), kvd, E, &L->wk));
    SD_CHECK(get_matrix(m, NAME(ATTN_V), kvd, E, &L->wv));
    SD_CHECK(get_matrix(m, NAME(ATTN_OUT), E, qd, &L->wo));
    SD_CHECK(get_vector(m, NAME(ATTN_Q_BIAS), qd, bias_required, used, &L->bq));
    SD_CHECK(get_vector(m, NAME(ATTN_K_BIAS), kvd, bias_required, used, &L->bk));
    SD_CHECK(get_vector(m, NAME(ATTN_V_BIAS), kvd, bias_required, used, &L->bv));
    SD_CHECK(get_vector(m, NAME(FFN_NORM), E, 1, used, &L->ffn_norm));
    SD_CHECK(get_matrix(m, NAME(FFN_GATE), hp->n_ff, E, &L->w_gate));
    SD_CHECK(get_matrix(m, NAME(FFN_UP), hp->n_ff, E, &L->w_up));
    SD_CHECK(get_matrix(m, NAME(FFN_DOWN), E, hp->n_ff, &L->w_down));
#undef NAME
    return SD_OK;
}

static sd_status_t load_tensors(sd_model_t *m)
{
    const sd_hparams_t *hp = &m->hp;
    size_t used = 0;
    char name[TENSOR_NAME_MAX];
    SD_CHECK(get_matrix(m, tensor_name(m, SD_ARCH_TENSOR_TOKEN_EMBD, 0, name), hp->n_vocab,
                        hp->n_embd, &m->tok_embd));
    SD_CHECK(get_vector(m, tensor_name(m, SD_ARCH_TENSOR_OUTPUT_NORM, 0, name), hp->n_embd, 1,
                        &used, &m->output_norm));
    if (gguf_find_tensor(m->gguf, tensor_name(m, SD_ARCH_TENSOR_OUTPUT, 0, name)))
        SD_CHECK(get_matrix(m, name, hp->n_vocab, hp->n_embd, &m->output));
    else
        m->output = m->tok_embd;
    m->layers = calloc((size_t)hp->n_layer, sizeof *m->layers);
    SD_ALLOC_CHECK(m->layers, (size_t)hp->n_layer * sizeof *m->layers, "layer table");
    for (int il = 0; il < hp->n_layer; il++) SD_CHECK(load_layer(m, il, &used));
    return m->comm ? sd_tp_shard_layers(m) : SD_OK;
}

/* ---- tensor parallelism --------------------------------------------------- */

/* This rank's plan over p->comm. Every rank computes the same plan from the same file, so
 * a model that cannot be split fails alike on every rank, before any collective. */
static sd_status_t setup_tp(sd_model_t *m, const sd_model_params_t *p)
{
    int size = sd_comm_size(p->comm);
    SD_CHECK(sd_tp_plan(&m->hp, sd_comm_rank(p->comm), size, &m->tp));
    m->comm = size > 1 ? p->comm : NULL;
    return SD_OK;
}

/* ---- tokenizer, runtime ------------------------------------------------- */

static sd_status_t load_tokenizer(sd_model_t *m)
{
    sd_status_t st = sd_tokenizer_load(m->gguf, &m->tokenizer);
    if (st == SD_ERR_NO_TOKENIZER) {
        m->tokenizer = NULL;
        sd_clear_error();
        return SD_OK;
    }
    SD_CHECK(st);
    int nt = sd_tokenizer_n_vocab(m->tokenizer);
    char embd[TENSOR_NAME_MAX];
    if (nt != m->hp.n_vocab)
        return sd_set_error(SD_ERR_BAD_MODEL, "tokenizer has %d tokens but %s has %d rows", nt,
                            tensor_name(m, SD_ARCH_TENSOR_TOKEN_EMBD, 0, embd), m->hp.n_vocab);
    return SD_OK;
}

static sd_status_t setup_runtime(sd_model_t *m, const sd_model_params_t *p)
{
    if (p->n_threads < 0)
        return sd_set_error(SD_ERR_INVALID_ARG, "n_threads = %d must be >= 0", p->n_threads);
    if (p->n_ctx < 0)
        return sd_set_error(SD_ERR_INVALID_ARG, "n_ctx = %d must be >= 0", p->n_ctx);
    m->n_ctx = p->n_ctx > 0 ? p->n_ctx
                            : (m->hp.n_ctx_train < MAX_CTX_DEFAULT ? m->hp.n_ctx_train
                                                                   : MAX_CTX_DEFAULT);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    m->n_threads = p->n_threads > 0 ? p->n_threads : (cores > 0 ? (int)cores : 1);
    SD_CHECK(sd_model_create_backend(m, p));
    return sd_model_place_weights(m, p->n_ctx > 0);
}

sd_status_t sd_model_load_gguf(gguf_file_t *f, const sd_model_params_t *p, sd_model_t **out)
{
    if (f == NULL) return sd_set_error(SD_ERR_INVALID_ARG, "sd_model_load_gguf: file is NULL");
    if (p == NULL) return sd_set_error(SD_ERR_INVALID_ARG, "sd_model_load_gguf: params is NULL");
    if (out == NULL) return sd_set_error(SD_ERR_INVALID_ARG, "sd_model_load_gguf: out is NULL");
    *out = NULL;
    sd_model_t *m = calloc(1, sizeof *m);
    SD_ALLOC_CHECK(m, sizeof *m, "model");
    m->gguf = f;
    sd_status_t st;
    SD_CHECK_GOTO(load_arch(m), st, fail);
    SD_CHECK_GOTO(load_hparams(m), st, fail);
    SD_CHECK_GOTO(setup_tp(m, p), st, fail);
    SD_CHECK_GOTO(load_tensors(m), st, fail);
    SD_CHECK_GOTO(load_tokenizer(m), st, fail);
    SD_CHECK_GOTO(setup_runtime(m, p), st, fail);
    *out = m;
    return SD_OK;
fail:
    m->gguf = NULL; /* still the caller's */
    sd_model_free(m);
    return st;
}

void sd_model_free(sd_model_t *m)
{
    if (m == NULL) return;
    if (m->backend) sd_model_release_weights(m);
    sd_backend_destroy(m->backend);
    sd_tokenizer_free(m->tokenizer);
    free(m->layers);
    free(m->f32_copies);
    free(m->tp_copies);
    free(m->name);
    gguf_close(m->gguf);
    free(m);
}
