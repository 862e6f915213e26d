/* The llama/qwen2 forward pass over n tokens at once, through the backend ops table;
 * scratch lives in sd_seq_t / sd_batch_t, so a forward allocates nothing. Under TP the
 * attention and MLP blocks run on the rank's shard (m->tp) and end with an allreduce;
 * the rest is replicated (docs/design-notes.md, "Tensor parallelism"). No op argument
 * changes between steps, so a device backend can replay graphs (docs/cuda.md, "CUDA graphs"). */
#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "core/log.h"
#include "comm/comm.h"
#include "model/forward.h"
#include "model.h"

/* 1 unless the environment variable SPECDEC_CUDA_GRAPHS is "0". */
static int graphs_allowed_by_env(void)
{
    const char *v = getenv("SPECDEC_CUDA_GRAPHS");
    return v == NULL || strcmp(v, "0") != 0;
}

static void *seq_alloc(const sd_model_t *m, size_t bytes, sd_status_t *st, const char *what)
{
    void *p = sd_backend_alloc(m->backend, bytes);
    if (p == NULL && *st == SD_OK)
        *st = sd_set_error(SD_ERR_OUT_OF_MEMORY, "out of memory allocating %zu bytes for %s",
                           bytes, what);
    return p;
}

static const char *const scratch_names[] = {"activations x", "activations xb", "queries",
    "attention output", "new keys", "new values", "MLP gate", "MLP up", "logits"};

/* The scratch of forwards of up to T rows (sizes from the model's shard); on failure what
 * was allocated is released and *sc zeroed. */
static sd_status_t scratch_alloc(const sd_model_t *m, size_t T, sd_fwd_scratch_t *sc)
{
    const sd_hparams_t *hp = &m->hp;
    size_t f = sizeof(float), qd = (size_t)m->tp.n_head * hp->head_dim;
    size_t kvd = (size_t)m->tp.n_head_kv * hp->head_dim, ff = (size_t)m->tp.n_ff;
    size_t widths[] = {hp->n_embd, hp->n_embd, qd, qd, kvd, kvd, ff, ff, hp->n_vocab};
    float **bufs[] = {&sc->x, &sc->xb, &sc->q, &sc->att, &sc->kn, &sc->vn, &sc->hb, &sc->hb2,
                      &sc->logits_dev};
    sd_status_t st = SD_OK;
    memset(sc, 0, sizeof *sc);
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        *bufs[i] = seq_alloc(m, T * widths[i] * f, &st, scratch_names[i]);
    sc->ids_dev = seq_alloc(m, 2 * T * sizeof(int32_t), &st, "token ids");
    if (st == SD_OK && m->comm && !sd_backend_host_memory(m->backend) &&
        !sd_comm_has_device_allreduce(m->comm)) {
        sc->xb_host = malloc(T * hp->n_embd * f);
        if (sc->xb_host == NULL)
            st = sd_set_error(SD_ERR_OUT_OF_MEMORY, "out of memory allocating %zu bytes for the "
                              "TP allreduce's host staging", T * hp->n_embd * f);
    }
    return st;
}

static void scratch_release(const sd_model_t *m, sd_fwd_scratch_t *sc)
{
    sd_backend_t *be = m->backend;
    float *bufs[] = {sc->x, sc->xb, sc->q, sc->att, sc->kn, sc->vn, sc->hb, sc->hb2,
                     sc->logits_dev};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i]) sd_backend_release(be, bufs[i]);
    if (sc->ids_dev) sd_backend_release(be, sc->ids_dev);
    free(sc->xb_host);
    memset(sc, 0, sizeof *sc);
}

/* sd_seq_init, the KV cache's blocks from pool (NULL: a private pool). */
static sd_status_t seq_init(sd_seq_t *s, const sd_model_t *m, sd_kv_pool_t *pool, int n_ctx,
                            int max_tokens)
{
    if (s == NULL) return sd_set_error(SD_ERR_INVALID_ARG, "sd_seq_init: seq is NULL");
    memset(s, 0, sizeof *s);
    if (m == NULL) return sd_set_error(SD_ERR_INVALID_ARG, "sd_seq_init: model is NULL");
    if (max_tokens < 1 || max_tokens > (1 << 16))
        return sd_set_error(SD_ERR_INVALID_ARG, "max_tokens = %d must be in [1, 65536]",
                            max_tokens);
    if (n_ctx < 0) return sd_set_error(SD_ERR_INVALID_ARG, "n_ctx = %d must be >= 0", n_ctx);
    s->model = m;
    s->max_tokens = max_tokens;
    n_ctx = n_ctx > 0 ? n_ctx : m->n_ctx;
    if (pool != NULL && pool->model != m)
        return sd_set_error(SD_ERR_INVALID_ARG, "sd_seq_init_pooled: the pool is another model's");
    SD_CHECK(pool != NULL ? sd_kv_cache_init_pooled(&s->kv, pool, n_ctx)
                          : sd_kv_cache_init(&s->kv, m, n_ctx));

    size_t T = (size_t)max_tokens, logits_bytes = T * m->hp.n_vocab * sizeof(float);
    sd_status_t st = scratch_alloc(m, T, &s->sc);
    s->ids = malloc(2 * T * sizeof(int32_t));
    s->logits = malloc(logits_bytes);
    if (st == SD_OK && (s->ids == NULL || s->logits == NULL))
        st = sd_set_error(SD_ERR_OUT_OF_MEMORY, "out of memory allocating %zu bytes for logits",
                          logits_bytes);
    if (st != SD_OK) sd_seq_free(s);
    else s->use_graphs = sd_backend_has_graphs(m->backend) && sd_comm_device_graphs(m->comm) &&
                         graphs_allowed_by_env();
    return st;
}

sd_status_t sd_seq_init(sd_seq_t *s, const sd_model_t *m, int n_ctx, int max_tokens)
{
    return seq_init(s, m, NULL, n_ctx, max_tokens);
}

sd_status_t sd_seq_init_pooled(sd_seq_t *s, const sd_model_t *m, sd_kv_pool_t *pool, int n_ctx,
                               int max_tokens)
{
    if (pool == NULL) return sd_set_error(SD_ERR_INVALID_ARG, "sd_seq_init_pooled: pool is NULL");
    return seq_init(s, m, pool, n_ctx, max_tokens);
}

void sd_seq_free(sd_seq_t *s)
{
    if (s == NULL || s->model == NULL) return;
    sd_backend_t *be = s->model->backend;
    for (int n = 0; n <= SD_GRAPH_MAX_N; n++)
        if (s->graphs[n].graph) sd_backend_graph_free(be, s->graphs[n].graph);
    scratch_release(s->model, &s->sc);
    if (s->tree_dev) sd_backend_release(be, s->tree_dev);
    sd_kv_cache_free(&s->kv, s->model);
    free(s->ids);
    free(s->logits);
    memset(s, 0, sizeof *s);
}

static sd_status_t check_forward_args(const sd_seq_t *s, const int32_t *tokens, int n,
                                      int n_layers_used)
{
    if (s == NULL || s->model == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG, "sd_forward: seq is NULL or not initialised");
    if (tokens == NULL) return sd_set_error(SD_ERR_INVALID_ARG, "sd_forward: tokens is NULL");
    if (n < 1 || n > s->max_tokens)
        return sd_set_error(SD_ERR_INVALID_ARG, "sd_forward: n = %d tokens outside [1, %d]", n,
                            s->max_tokens);
    const sd_hparams_t *hp = &s->model->hp;
    if (n_layers_used < 0 || n_layers_used > hp->n_layer)
        return sd_set_error(SD_ERR_INVALID_ARG, "sd_forward: n_layers_used = %d outside [0, %d]",
                            n_layers_used, hp->n_layer);
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= hp->n_vocab)
            return sd_set_error(SD_ERR_INVALID_ARG,
                                "sd_forward: token %d (at %d) outside the vocabulary [0, %d)",
                                tokens[i], i, hp->n_vocab);
    if (s->kv.len + n > s->kv.n_ctx)
        return sd_set_error(SD_ERR_CONTEXT_FULL,
                            "context full: %d cached + %d new tokens exceed n_ctx = %d", s->kv.len,
                            n, s->kv.n_ctx);
    return SD_OK;
}

/* What one forward computes with: scratch for its n rows and the sequences the rows belong
 * to (rows [row0, row0 + n) of part i attend to and extend kv of part i). A single
 * sequence's forward is one part over its own scratch; a batched forward has one part per
 * sequence over the batch's scratch. A tree part (mask non-NULL): its rows go to cache slots
 * slots[n] and attend by mask[n, mask_m] after the slots [0, mask_base); else rows at their
 * positions, causal. */
typedef struct fwd_part {
    sd_kv_cache_t *kv;
    int row0, n;
    const int32_t *slots;
    const uint8_t *mask;
    int mask_base, mask_m;
} fwd_part_t;

typedef struct fwd {
    const sd_model_t *m;
    sd_fwd_scratch_t sc;    /* ids_dev: [2, n] token ids then positions */
    int n;                  /* rows */
    int n_head_rows;        /* the head computes logits for rows [0, n_head_rows) */
    const fwd_part_t *parts;
    int n_parts;
} fwd_t;

/* Sum the ranks' partial outputs xb[n, n_embd] of a row-parallel Wo or down (rank order:
 * every rank gets the same bits). Nothing to do without TP. A device model's allreduce is
 * enqueued on its stream (its outcome: sd_comm_device_status after the sync), or, on a comm
 * that takes host memory only, goes through sc.xb_host (graphs are off then). */
static sd_status_t tp_allreduce(const fwd_t *f, float *xb, int n)
{
    const sd_model_t *m = f->m;
    sd_backend_t *be = m->backend;
    size_t count = (size_t)n * (size_t)m->hp.n_embd;
    if (m->comm == NULL) return SD_OK;
    if (sd_backend_host_memory(be)) return sd_comm_allreduce_sum(m->comm, xb, count, SD_COMM_F32);
    if (f->sc.xb_host == NULL)
        return sd_comm_allreduce_device(m->comm, xb, count, SD_COMM_F32, sd_backend_stream(be));
    sd_backend_download(be, f->sc.xb_host, xb, count * sizeof(float)); /* waits for the stream */
    SD_CHECK(sd_comm_allreduce_sum(m->comm, f->sc.xb_host, count, SD_COMM_F32));
    sd_backend_upload(be, xb, f->sc.xb_host, count * sizeof(float));
    return SD_OK;
}

/* Store part p's new K/V rows in its cache at their positions and attend over it:
 * att rows [row0, row0 + n) of the part. */
static void attend_part(const fwd_t *f, const fwd_part_t *p, int il, const int32_t *pos)
{
    const sd_model_t *m = f->m;
    sd_backend_t *be = m->backend;
    const sd_kv_cache_t *kv = p->kv;
    int nh = m->tp.n_head, nkv = m->tp.n_head_kv, hd = m->hp.head_dim, n_ctx = kv->n_ctx;
    size_t kvd = (size_t)nkv * hd, qd = (size_t)nh * hd, r0 = (size_t)p->row0;
    size_t layer_off = (size_t)il * (size_t)kv->pool->n_blocks * SD_KV_BLOCK * kvd;
    float *k_cache = kv->k + layer_off, *v_cache = kv->v + layer_off; /* the layer's pool rows */
    const int32_t *ppos = pos + p->row0, *blocks = kv->table_dev;     /* [n], the block table */
    const int32_t *slot = p->mask ? p->slots : ppos; /* a tree's rows: their own slots */

    sd_backend_kv_store(be, k_cache, f->sc.kn + r0 * kvd, blocks, SD_KV_BLOCK, slot, p->n, n_ctx,
                        kvd); /* the rows of positions slot[i] */
    sd_backend_kv_store(be, v_cache, f->sc.vn + r0 * kvd, blocks, SD_KV_BLOCK, slot, p->n, n_ctx,
                        kvd);
    if (p->mask) /* slots are cache positions, through the same block table */
        sd_backend_attention_masked(be, f->sc.q + r0 * qd, k_cache, v_cache, blocks, SD_KV_BLOCK,
                                    p->mask_base, p->mask, p->n, p->mask_m, n_ctx, nh, nkv, hd,
                                    f->sc.att + r0 * qd);
    else
        sd_backend_attention(be, f->sc.q + r0 * qd, k_cache, v_cache, blocks, SD_KV_BLOCK, ppos,
                             p->n, n_ctx, nh, nkv, hd, f->sc.att + r0 * qd); /* att[n, qd] */
}

/* Attention block of layer il: x[n, n_embd] += attention(rmsnorm(x)) . Wo^T, over the
 * shard's nh query heads and nkv KV heads (qd = nh * hd, kvd = nkv * hd). The new K/V rows
 * go to their part's cache rows pos[i] (pos: [n] backend memory). */
static sd_status_t attention_block(const fwd_t *f, int il, const int32_t *pos)
{
    const sd_model_t *m = f->m;
    const sd_hparams_t *hp = &m->hp;
    const sd_layer_t *L = &m->layers[il];
    sd_backend_t *be = m->backend;
    int n = f->n;

    sd_backend_rmsnorm(be, f->sc.x, L->attn_norm, n, hp->n_embd, hp->norm_eps, f->sc.xb); /* xb[n, E] */
    const sd_weight_t *qkv[] = {&L->wq, &L->wk, &L->wv};
    const float *qkv_bias[] = {L->bq, L->bk, L->bv};
    float *qkv_out[] = {f->sc.q, f->sc.kn, f->sc.vn}; /* q[n, qd], kn[n, kvd], vn[n, kvd] */
    sd_backend_matmul_group(be, 3, qkv, f->sc.xb, n, qkv_bias, qkv_out);
    sd_backend_rope(be, f->sc.q, pos, n, m->tp.n_head, hp->head_dim, &hp->rope);
    sd_backend_rope(be, f->sc.kn, pos, n, m->tp.n_head_kv, hp->head_dim, &hp->rope);
    for (int i = 0; i < f->n_parts; i++)
        attend_part(f, &f->parts[i], il, pos);
    sd_backend_matmul(be, &L->wo, f->sc.att, n, NULL, f->sc.xb); /* xb[n, E], partial under TP */
    SD_CHECK(tp_allreduce(f, f->sc.xb, n));
    sd_backend_add(be, f->sc.x, f->sc.xb, (size_t)n * hp->n_embd);
    return SD_OK;
}

/* MLP block of layer il: x[n, n_embd] += (silu(xb . Wg^T) * (xb . Wu^T)) . Wd^T, over the
 * shard's ff features. */
static sd_status_t mlp_block(const fwd_t *f, int il)
{
    const sd_model_t *m = f->m;
    const sd_hparams_t *hp = &m->hp;
    const sd_layer_t *L = &m->layers[il];
    sd_backend_t *be = m->backend;
    int n = f->n;

    sd_backend_rmsnorm(be, f->sc.x, L->ffn_norm, n, hp->n_embd, hp->norm_eps, f->sc.xb);
    const sd_weight_t *gate_up[] = {&L->w_gate, &L->w_up};
    float *gate_up_out[] = {f->sc.hb, f->sc.hb2}; /* hb[n, ff], hb2[n, ff] */
    sd_backend_matmul_group(be, 2, gate_up, f->sc.xb, n, NULL, gate_up_out);
    sd_backend_swiglu(be, f->sc.hb, f->sc.hb2, (size_t)n * m->tp.n_ff, f->sc.hb);
    sd_backend_matmul(be, &L->w_down, f->sc.hb, n, NULL, f->sc.xb); /* xb[n, E], partial under TP */
    SD_CHECK(tp_allreduce(f, f->sc.xb, n));
    sd_backend_add(be, f->sc.x, f->sc.xb, (size_t)n * hp->n_embd);
    return SD_OK;
}

/* The ops of one forward, from the embedding of ids_dev[0, n] to logits_dev[n_head_rows,
 * n_vocab] (ids and positions already uploaded). Its only failure is a TP allreduce's. */
static sd_status_t forward_ops(const fwd_t *f, int n_layers)
{
    const sd_model_t *m = f->m;
    const sd_hparams_t *hp = &m->hp;
    sd_backend_t *be = m->backend;
    const int32_t *pos = f->sc.ids_dev + f->n; /* [n] */

    sd_backend_embed(be, &m->tok_embd, f->sc.ids_dev, f->n, f->sc.x); /* x[n, E] */
    for (int il = 0; il < n_layers; il++) {
        SD_CHECK(attention_block(f, il, pos));
        SD_CHECK(mlp_block(f, il));
    }
    if (f->n_head_rows == 0) return SD_OK;
    sd_backend_rmsnorm(be, f->sc.x, m->output_norm, f->n_head_rows, hp->n_embd, hp->norm_eps, f->sc.xb);
    sd_backend_matmul(be, &m->output, f->sc.xb, f->n_head_rows, NULL, f->sc.logits_dev); /* [rows, n_vocab] */
    return SD_OK;
}

/* A single sequence's forward of n rows over its own scratch (one part: its cache). */
static fwd_t seq_fwd(sd_seq_t *s, int n, const fwd_part_t *part)
{
    return (fwd_t){.m = s->model, .sc = s->sc, .n = n, .n_head_rows = n,
                   .parts = part, .n_parts = 1};
}

/* 1 when g was captured with the arguments forward_ops(s, n, n_layers) would use now. */
static int graph_is_current(const sd_seq_graph_t *g, const sd_seq_t *s, int n_layers)
{
    return g->n_layers == n_layers && g->kv_k == s->kv.k && g->kv_v == s->kv.v &&
           g->kv_n_ctx == s->kv.n_ctx && g->kv_table == s->kv.table_dev;
}

/* forward_ops(s, n, n_layers) replayed from the sequence's graph for n, captured first when
 * there is none or it no longer matches. A failed capture launches nothing: its error is
 * logged and cleared, the ops run directly, and this n is not captured again. */
static sd_status_t forward_graph(sd_seq_t *s, int n, int n_layers)
{
    sd_backend_t *be = s->model->backend;
    sd_seq_graph_t *g = &s->graphs[n];
    fwd_part_t part = {.kv = &s->kv, .row0 = 0, .n = n};
    fwd_t f = seq_fwd(s, n, &part);
    if (g->failed) return forward_ops(&f, n_layers);
    if (g->graph != NULL && !graph_is_current(g, s, n_layers)) {
        sd_backend_graph_free(be, g->graph);
        g->graph = NULL;
    }
    if (g->graph == NULL) {
        sd_backend_graph_begin(be);
        sd_status_t st = forward_ops(&f, n_layers); /* a TP allreduce's enqueue may fail */
        void *graph = sd_backend_graph_end(be);
        if (st != SD_OK) {
            if (graph) sd_backend_graph_free(be, graph);
            return st;
        }
        if (graph == NULL) {
            st = sd_backend_sync(be); /* the capture's error, cleared */
            sd_log(SD_LOG_WARN, "sd_forward: capturing the forward of n = %d failed (%s); it runs "
                   "without a graph from now on", n, st != SD_OK ? sd_last_error() : "no error");
            g->failed = 1;
            return forward_ops(&f, n_layers);
        }
        *g = (sd_seq_graph_t){.graph = graph, .n_layers = n_layers, .kv_k = s->kv.k,
                              .kv_v = s->kv.v, .kv_n_ctx = s->kv.n_ctx,
                              .kv_table = s->kv.table_dev};
    }
    sd_backend_graph_launch(be, g->graph);
    return SD_OK;
}

/* sd_forward after its checks, with the backend's lock held. */
static sd_status_t forward_locked(sd_seq_t *s, const int32_t *tokens, int n, int n_layers_used)
{
    const sd_model_t *m = s->model;
    const sd_hparams_t *hp = &m->hp;
    sd_backend_t *be = m->backend;
    int n_layers = n_layers_used > 0 ? n_layers_used : hp->n_layer;

    SD_CHECK(sd_kv_cache_prepare(&s->kv, s->kv.len + n)); /* blocks and table, before a graph */
    memcpy(s->ids, tokens, (size_t)n * sizeof(int32_t));
    for (int i = 0; i < n; i++) s->ids[n + i] = s->kv.len + i;
    sd_backend_upload(be, s->sc.ids_dev, s->ids, 2 * (size_t)n * sizeof(int32_t)); /* ids, positions */

    fwd_part_t part = {.kv = &s->kv, .row0 = 0, .n = n};
    fwd_t f = seq_fwd(s, n, &part);
    if (s->use_graphs && n <= SD_GRAPH_MAX_N)
        SD_CHECK(forward_graph(s, n, n_layers)); /* kv.len moves only on success */
    else
        SD_CHECK(forward_ops(&f, n_layers));
    if (!s->keep_logits_on_device)
        sd_backend_download(be, s->logits, s->sc.logits_dev, (size_t)n * hp->n_vocab * sizeof(float));
    SD_CHECK(sd_backend_sync(be)); /* a device op's failure surfaces here; kv.len unchanged */
    SD_CHECK(sd_comm_device_status(m->comm)); /* and a device allreduce's */
    s->kv.len += n;
    return SD_OK;
}

/* Another thread's ops on the same backend (a device's one stream) never land between this
 * forward's upload and its sync. */
sd_status_t sd_forward(sd_seq_t *s, const int32_t *tokens, int n, int n_layers_used)
{
    SD_CHECK(check_forward_args(s, tokens, n, n_layers_used));
    sd_backend_t *be = s->model->backend;
    sd_backend_lock(be);
    sd_status_t st = forward_locked(s, tokens, n, n_layers_used);
    sd_backend_unlock(be);
    return st;
}

/* ---- token trees ------------------------------------------------------------------------ */

/* Bytes of a tree buffer for T rows: slots [T] int32, then masks [T, SD_ATTN_MASK_MAX_COLS]. */
static size_t tree_buf_bytes(size_t T)
{
    return T * (sizeof(int32_t) + SD_ATTN_MASK_MAX_COLS);
}

static sd_status_t check_tree_args(const sd_seq_t *s, int n, int tree_base, const int32_t *parent)
{
    if (!sd_backend_has_attention_masked(s->model->backend))
        return sd_set_error(SD_ERR_INVALID_ARG, "sd_forward_tree: the %s backend has no masked "
                            "attention", sd_backend_name(s->model->backend));
    if (tree_base < 0 || tree_base > s->kv.len)
        return sd_set_error(SD_ERR_INVALID_ARG, "sd_forward_tree: tree_base = %d outside [0, %d]",
                            tree_base, s->kv.len);
    int m = s->kv.len + n - tree_base;
    if (m > SD_ATTN_MASK_MAX_COLS)
        return sd_set_error(SD_ERR_INVALID_ARG, "sd_forward_tree: %d tree nodes exceed %d", m,
                            SD_ATTN_MASK_MAX_COLS);
    if (parent == NULL) return sd_set_error(SD_ERR_INVALID_ARG, "sd_forward_tree: parent is NULL");
    for (int j = 0; j < m; j++)
        if (parent[j] < -1 || parent[j] >= j)
            return sd_set_error(SD_ERR_INVALID_ARG,
                                "sd_forward_tree: node %d has parent %d outside [-1, %d)", j,
                                parent[j], j);
    return SD_OK;
}

/* The host side of a tree part of n rows over kv (nodes from slot tree_base): the rows'
 * positions pos[n], cache slots slot[n] (kv.len + i) and mask[n, cols] (cols = kv.len + n -
 * tree_base); returns cols. */
static int tree_stage(const sd_kv_cache_t *kv, int n, int tree_base, const int32_t *parent,
                      int32_t *pos, int32_t *slot, uint8_t *mask)
{
    int first = kv->len - tree_base, cols = first + n; /* node of row 0; tree nodes */
    memset(mask, 0, (size_t)n * (size_t)cols);
    for (int i = 0; i < n; i++) {
        int depth = 0;
        for (int a = first + i; a >= 0; a = parent[a]) {
            mask[(size_t)i * cols + a] = 1;
            depth += parent[a] >= 0;
        }
        pos[i] = tree_base + depth;
        slot[i] = kv->len + i;
    }
    return cols;
}

/* sd_forward_tree after its checks, with the backend's lock held: host staging of ids,
 * positions, slots and mask. */
static sd_status_t tree_locked(sd_seq_t *s, const int32_t *tokens, int n, int tree_base,
                               const int32_t *parent, int n_layers)
{
    const sd_model_t *m = s->model;
    sd_backend_t *be = m->backend;
    SD_CHECK(sd_kv_cache_prepare(&s->kv, s->kv.len + n)); /* its slots' blocks and table */
    size_t buf = tree_buf_bytes((size_t)s->max_tokens);
    if (s->tree_dev == NULL) {
        s->tree_dev = sd_backend_alloc(be, buf);
        if (s->tree_dev == NULL)
            return sd_set_error(SD_ERR_OUT_OF_MEMORY, "out of memory allocating %zu bytes for "
                                "tree attention", buf);
    }
    int cols = s->kv.len - tree_base + n;
    int32_t *slot_host = malloc((size_t)n * (sizeof(int32_t) + (size_t)cols)); /* [n], mask [n, cols] */
    SD_ALLOC_CHECK(slot_host, (size_t)n * (sizeof(int32_t) + (size_t)cols), "a tree mask");
    uint8_t *mask = (uint8_t *)(slot_host + n);
    memcpy(s->ids, tokens, (size_t)n * sizeof(int32_t));
    tree_stage(&s->kv, n, tree_base, parent, s->ids + n, slot_host, mask);
    int32_t *slots_dev = s->tree_dev;
    uint8_t *mask_dev = (uint8_t *)(slots_dev + s->max_tokens);
    sd_backend_upload(be, s->sc.ids_dev, s->ids, 2 * (size_t)n * sizeof(int32_t));
    sd_backend_upload(be, slots_dev, slot_host, (size_t)n * sizeof(int32_t));
    sd_backend_upload(be, mask_dev, mask, (size_t)n * (size_t)cols);
    sd_status_t st = sd_backend_sync(be); /* the staging is freed below */
    free(slot_host);
    SD_CHECK(st);

    fwd_part_t part = {.kv = &s->kv, .row0 = 0, .n = n, .slots = slots_dev, .mask = mask_dev,
                       .mask_base = tree_base, .mask_m = cols};
    fwd_t f = seq_fwd(s, n, &part);
    SD_CHECK(forward_ops(&f, n_layers));
    if (!s->keep_logits_on_device)
        sd_backend_download(be, s->logits, s->sc.logits_dev, (size_t)n * m->hp.n_vocab * sizeof(float));
    SD_CHECK(sd_backend_sync(be));
    SD_CHECK(sd_comm_device_status(m->comm));
    s->kv.len += n;
    return SD_OK;
}

sd_status_t sd_forward_tree(sd_seq_t *s, const int32_t *tokens, int n, int tree_base,
                            const int32_t *parent, int n_layers_used)
{
    SD_CHECK(check_forward_args(s, tokens, n, n_layers_used));
    SD_CHECK(check_tree_args(s, n, tree_base, parent));
    sd_backend_t *be = s->model->backend;
    int n_layers = n_layers_used > 0 ? n_layers_used : s->model->hp.n_layer;
    sd_backend_lock(be);
    sd_status_t st = tree_locked(s, tokens, n, tree_base, parent, n_layers);
    sd_backend_unlock(be);
    return st;
}

/* ---- batched forward over several sequences ------------------------------------------ */

sd_status_t sd_batch_init(sd_batch_t *b, const sd_model_t *m, int max_rows, int max_seqs)
{
    if (b == NULL) return sd_set_error(SD_ERR_INVALID_ARG, "sd_batch_init: batch is NULL");
    memset(b, 0, sizeof *b);
    if (m == NULL) return sd_set_error(SD_ERR_INVALID_ARG, "sd_batch_init: model is NULL");
    if (max_rows < 1 || max_rows > (1 << 16) || max_seqs < 1 || max_seqs > max_rows)
        return sd_set_error(SD_ERR_INVALID_ARG,
                            "sd_batch_init: max_rows = %d must be in [1, 65536] and max_seqs = %d "
                            "in [1, max_rows]", max_rows, max_seqs);
    b->model = m;
    b->max_rows = max_rows;
    b->max_seqs = max_seqs;
    sd_status_t st = scratch_alloc(m, (size_t)max_rows, &b->sc);
    b->ids = malloc(2 * (size_t)max_rows * sizeof *b->ids);
    b->parts = malloc((size_t)max_seqs * sizeof(fwd_part_t));
    if (st == SD_OK && (b->ids == NULL || b->parts == NULL))
        st = sd_set_error(SD_ERR_OUT_OF_MEMORY, "out of memory for a batch of %d rows", max_rows);
    if (st != SD_OK) sd_batch_free(b);
    return st;
}

void sd_batch_free(sd_batch_t *b)
{
    if (b == NULL || b->model == NULL) return;
    scratch_release(b->model, &b->sc);
    if (b->tree_dev) sd_backend_release(b->model->backend, b->tree_dev);
    free(b->tree_host);
    free(b->ids);
    free(b->parts);
    memset(b, 0, sizeof *b);
}

/* 1 when s runs b's model, or a layer-skip view of it (its weights, fewer layers) that
 * holds the n_layers layers the forward runs. */
static int runs_batch_model(const sd_batch_t *b, const sd_seq_t *s, int n_layers)
{
    return s->model == b->model ||
           (s->model->layers == b->model->layers && n_layers > 0 && n_layers <= s->model->hp.n_layer);
}

/* Part i may join batch b: its sequence, tokens and room (see sd_forward_batch). */
static sd_status_t check_part(const sd_batch_t *b, const sd_batch_part_t *p, int i,
                              int logits_done, int n_layers)
{
    const sd_seq_t *s = p->seq;
    if (s == NULL || !runs_batch_model(b, s, n_layers) || p->tokens == NULL || p->n < 1)
        return sd_set_error(SD_ERR_INVALID_ARG,
                            "sd_forward_batch: part %d has %s (n = %d)", i,
                            s == NULL ? "no sequence" : !runs_batch_model(b, s, n_layers)
                            ? "a sequence of another model" : "no tokens", p->n);
    if (p->want_logits && (logits_done || s->keep_logits_on_device || p->n > s->max_tokens))
        return sd_set_error(SD_ERR_INVALID_ARG,
                            "sd_forward_batch: part %d wants logits %s", i,
                            logits_done ? "after a part that wants none"
                            : s->keep_logits_on_device ? "but keeps them on the device"
                            : "for more rows than its sequence's max_tokens");
    for (int t = 0; t < p->n; t++)
        if (p->tokens[t] < 0 || p->tokens[t] >= b->model->hp.n_vocab)
            return sd_set_error(SD_ERR_INVALID_ARG,
                                "sd_forward_batch: part %d token %d (at %d) outside the "
                                "vocabulary [0, %d)", i, p->tokens[t], t, b->model->hp.n_vocab);
    if (s->kv.len + p->n > s->kv.n_ctx)
        return sd_set_error(SD_ERR_CONTEXT_FULL,
                            "context full: part %d has %d cached + %d new tokens over n_ctx = %d",
                            i, s->kv.len, p->n, s->kv.n_ctx);
    return p->parent != NULL ? check_tree_args(s, p->n, s->kv.len, p->parent) : SD_OK;
}

/* Every part checked, distinct sequences, rows and parts within the batch; *rows and
 * *logit_rows get the totals. */
static sd_status_t check_batch(const sd_batch_t *b, const sd_batch_part_t *parts, int n_parts,
                               int n_layers, int *rows, int *logit_rows)
{
    if (b == NULL || b->model == NULL || parts == NULL || n_parts < 1 || n_parts > b->max_seqs)
        return sd_set_error(SD_ERR_INVALID_ARG, "sd_forward_batch: %d parts outside [1, %d]",
                            n_parts, b && b->model ? b->max_seqs : 0);
    if (n_layers < 0 || n_layers > b->model->hp.n_layer)
        return sd_set_error(SD_ERR_INVALID_ARG, "sd_forward_batch: n_layers = %d outside [0, %d]",
                            n_layers, b->model->hp.n_layer);
    *rows = *logit_rows = 0;
    for (int i = 0; i < n_parts; i++) {
        SD_CHECK(check_part(b, &parts[i], i, *logit_rows < *rows, n_layers));
        for (int j = 0; j < i; j++)
            if (parts[j].seq == parts[i].seq)
                return sd_set_error(SD_ERR_INVALID_ARG,
                                    "sd_forward_batch: parts %d and %d share a sequence", j, i);
        if (parts[i].n > b->max_rows - *rows)
            return sd_set_error(SD_ERR_BATCH_TOO_LARGE,
                                "sd_forward_batch: more than max_rows = %d rows", b->max_rows);
        *rows += parts[i].n;
        if (parts[i].want_logits) *logit_rows += parts[i].n;
    }
    return SD_OK;
}

sd_status_t sd_forward_batch(sd_batch_t *b, const sd_batch_part_t *parts, int n_parts)
{
    return sd_forward_batch_layers(b, parts, n_parts, 0);
}

/* Stage tree part p (fp: its rows from fp->row0, positions in b->ids[n + row]) into the
 * batch's tree buffers: its slots at row0, its mask after *mask_bytes (which grows). */
static sd_status_t batch_tree_part(sd_batch_t *b, const sd_batch_part_t *p, fwd_part_t *fp, int n,
                                   size_t *mask_bytes)
{
    size_t buf = tree_buf_bytes((size_t)b->max_rows);
    if (b->tree_dev == NULL) {
        b->tree_dev = sd_backend_alloc(b->model->backend, buf);
        b->tree_host = malloc(buf);
        if (b->tree_dev == NULL || b->tree_host == NULL)
            return sd_set_error(SD_ERR_OUT_OF_MEMORY, "out of memory allocating 2 x %zu bytes "
                                "for a batch's tree attention", buf);
    }
    int32_t *slots = b->tree_host;
    uint8_t *mask = (uint8_t *)(slots + b->max_rows) + *mask_bytes;
    int cols = tree_stage(&p->seq->kv, p->n, p->seq->kv.len, p->parent, b->ids + n + fp->row0,
                          slots + fp->row0, mask);
    int32_t *slots_dev = b->tree_dev;
    fp->slots = slots_dev + fp->row0;
    fp->mask = (uint8_t *)(slots_dev + b->max_rows) + *mask_bytes;
    fp->mask_base = p->seq->kv.len;
    fp->mask_m = cols;
    *mask_bytes += (size_t)p->n * (size_t)cols;
    return SD_OK;
}

/* sd_forward_batch_layers after its checks (n rows, n_logits of them with logits), with the
 * backend's lock held. */
static sd_status_t batch_locked(sd_batch_t *b, const sd_batch_part_t *parts, int n_parts,
                                int n_layers, int n, int n_logits)
{
    const sd_model_t *m = b->model;
    sd_backend_t *be = m->backend;
    size_t row_bytes = (size_t)m->hp.n_vocab * sizeof(float);
    fwd_part_t *fp = b->parts;

    for (int i = 0; i < n_parts; i++)
        SD_CHECK(sd_kv_cache_prepare(&parts[i].seq->kv, parts[i].seq->kv.len + parts[i].n));
    size_t mask_bytes = 0;
    for (int i = 0, row = 0; i < n_parts; row += parts[i].n, i++) {
        sd_kv_cache_t *kv = &parts[i].seq->kv;
        fp[i] = (fwd_part_t){.kv = kv, .row0 = row, .n = parts[i].n};
        memcpy(b->ids + row, parts[i].tokens, (size_t)parts[i].n * sizeof(int32_t)); /* ids[n] */
        for (int t = 0; t < parts[i].n; t++) b->ids[n + row + t] = kv->len + t; /* then pos[n] */
        if (parts[i].parent != NULL) SD_CHECK(batch_tree_part(b, &parts[i], &fp[i], n, &mask_bytes));
    }
    sd_backend_upload(be, b->sc.ids_dev, b->ids, 2 * (size_t)n * sizeof(int32_t));
    if (mask_bytes > 0) /* slots of every row (a chain part's unused), then the masks */
        sd_backend_upload(be, b->tree_dev, b->tree_host,
                          (size_t)b->max_rows * sizeof(int32_t) + mask_bytes);
    fwd_t f = {.m = m, .sc = b->sc, .n = n, .n_head_rows = n_logits, .parts = fp,
               .n_parts = n_parts};
    SD_CHECK(forward_ops(&f, n_layers > 0 ? n_layers : m->hp.n_layer));
    for (int i = 0; i < n_parts && parts[i].want_logits; i++)
        sd_backend_download(be, parts[i].seq->logits,
                      b->sc.logits_dev + (size_t)fp[i].row0 * m->hp.n_vocab,
                      (size_t)parts[i].n * row_bytes);
    SD_CHECK(sd_backend_sync(be)); /* a device op's failure surfaces here; no kv.len changed */
    SD_CHECK(sd_comm_device_status(m->comm));
    for (int i = 0; i < n_parts; i++) parts[i].seq->kv.len += parts[i].n;
    return SD_OK;
}

sd_status_t sd_forward_batch_layers(sd_batch_t *b, const sd_batch_part_t *parts, int n_parts,
                                    int n_layers)
{
    int n = 0, n_logits = 0;
    SD_CHECK(check_batch(b, parts, n_parts, n_layers, &n, &n_logits));
    sd_backend_t *be = b->model->backend;
    sd_backend_lock(be); /* as sd_forward */
    sd_status_t st = batch_locked(b, parts, n_parts, n_layers, n, n_logits);
    sd_backend_unlock(be);
    return st;
}
