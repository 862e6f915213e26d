/* The llama/qwen2 forward pass over n tokens at once, through the backend ops table.
 * Scratch lives in sd_seq_t, so a forward call allocates nothing. Under tensor
 * parallelism the attention and MLP blocks run on the rank's shard (m->tp: local heads
 * and MLP features) and end with an allreduce of their partial outputs; everything
 * else (embedding, norms, residual stream, head) is replicated.
 *
 * Every op argument is fixed for a given (sequence, n, layer count): token ids and positions
 * live in ids_dev (uploaded before the ops run), K/V rows reach the cache through kv_store
 * at those positions, and attention reads them there. So a device backend with graph ops
 * captures the ops of the first forward of each n and replays them afterwards. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "comm/comm.h"
#include "model.h"

/* 1 unless the environment variable SPECDEC_CUDA_GRAPHS is "0". */
static int graphs_allowed_by_env(void)
{
    const char *v = getenv("SPECDEC_CUDA_GRAPHS");
    return v == NULL || strcmp(v, "0") != 0;
}

static int backend_has_graphs(const sd_backend_ops_t *ops)
{
    return ops->graph_begin && ops->graph_end && ops->graph_launch && ops->graph_free;
}

static void *seq_alloc(const sd_model_t *m, size_t bytes, sd_status_t *st, const char *what)
{
    void *p = m->backend->ops->alloc(m->backend, bytes);
    if (p == NULL && *st == SD_OK)
        *st = sd_set_error(SD_ERR_OUT_OF_MEMORY, "out of memory allocating %zu bytes for %s",
                           bytes, what);
    return p;
}

sd_status_t sd_seq_init(sd_seq_t *s, const sd_model_t *m, int n_ctx, int max_tokens)
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
    SD_CHECK(sd_kv_cache_init(&s->kv, m, n_ctx > 0 ? n_ctx : m->n_ctx));

    const sd_hparams_t *hp = &m->hp;
    size_t T = (size_t)max_tokens, f = sizeof(float);
    size_t qd = (size_t)m->tp.n_head * hp->head_dim, ff = (size_t)m->tp.n_ff;
    size_t kvd = (size_t)m->tp.n_head_kv * hp->head_dim;
    sd_status_t st = SD_OK;
    s->x = seq_alloc(m, T * hp->n_embd * f, &st, "activations x");
    s->xb = seq_alloc(m, T * hp->n_embd * f, &st, "activations xb");
    s->q = seq_alloc(m, T * qd * f, &st, "queries");
    s->att = seq_alloc(m, T * qd * f, &st, "attention output");
    s->kn = seq_alloc(m, T * kvd * f, &st, "new keys");
    s->vn = seq_alloc(m, T * kvd * f, &st, "new values");
    s->hb = seq_alloc(m, T * ff * f, &st, "MLP gate");
    s->hb2 = seq_alloc(m, T * ff * f, &st, "MLP up");
    s->logits_dev = seq_alloc(m, T * hp->n_vocab * f, &st, "logits");
    s->ids_dev = seq_alloc(m, 2 * T * sizeof(int32_t), &st, "token ids");
    s->ids = malloc(2 * T * sizeof(int32_t));
    s->logits = malloc(T * hp->n_vocab * f);
    if (st == SD_OK && (s->ids == NULL || s->logits == NULL))
        st = sd_set_error(SD_ERR_OUT_OF_MEMORY, "out of memory allocating %zu bytes for logits",
                          T * hp->n_vocab * f);
    if (st != SD_OK) sd_seq_free(s);
    else s->use_graphs = backend_has_graphs(m->backend->ops) && m->comm == NULL && graphs_allowed_by_env();
    return st;
}

void sd_seq_free(sd_seq_t *s)
{
    if (s == NULL || s->model == NULL) return;
    sd_backend_t *be = s->model->backend;
    for (int n = 0; n <= SD_GRAPH_MAX_N; n++)
        if (s->graphs[n].graph) be->ops->graph_free(be, s->graphs[n].graph);
    float *bufs[] = {s->x, s->xb, s->q, s->att, s->kn, s->vn, s->hb, s->hb2, s->logits_dev};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i]) be->ops->release(be, bufs[i]);
    if (s->ids_dev) be->ops->release(be, s->ids_dev);
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

/* Sum the ranks' partial outputs xb[n, n_embd] of a row-parallel Wo or down (rank order:
 * every rank gets the same bits). Nothing to do without TP. */
static sd_status_t tp_allreduce(const sd_model_t *m, float *xb, int n)
{
    if (m->comm == NULL) return SD_OK;
    return sd_comm_allreduce_sum(m->comm, xb, (size_t)n * (size_t)m->hp.n_embd, SD_COMM_F32);
}

/* Attention block of layer il: x[n, n_embd] += attention(rmsnorm(x)) . Wo^T, over the
 * shard's nh query heads and nkv KV heads (qd = nh * hd, kvd = nkv * hd). The new K/V rows
 * go to the cache rows pos[i] (pos: [n] backend memory). */
static sd_status_t attention_block(sd_seq_t *s, int il, int n, const int32_t *pos)
{
    const sd_model_t *m = s->model;
    const sd_hparams_t *hp = &m->hp;
    const sd_layer_t *L = &m->layers[il];
    const sd_backend_ops_t *ops = m->backend->ops;
    sd_backend_t *be = m->backend;
    int nh = m->tp.n_head, nkv = m->tp.n_head_kv, n_ctx = s->kv.n_ctx;
    size_t kvd = (size_t)nkv * hp->head_dim;
    size_t layer_off = (size_t)il * (size_t)n_ctx * kvd;
    float *k_cache = s->kv.k + layer_off, *v_cache = s->kv.v + layer_off; /* [n_ctx, kvd] */

    ops->rmsnorm(be, s->x, L->attn_norm, n, hp->n_embd, hp->norm_eps, s->xb); /* xb[n, E] */
    ops->matmul(be, &L->wq, s->xb, n, L->bq, s->q);                          /* q[n, qd] */
    ops->matmul(be, &L->wk, s->xb, n, L->bk, s->kn);                         /* kn[n, kvd] */
    ops->matmul(be, &L->wv, s->xb, n, L->bv, s->vn);                         /* vn[n, kvd] */
    ops->rope(be, s->q, pos, n, nh, hp->head_dim, &hp->rope);
    ops->rope(be, s->kn, pos, n, nkv, hp->head_dim, &hp->rope);
    ops->kv_store(be, k_cache, s->kn, pos, n, n_ctx, kvd); /* cache rows pos[i] */
    ops->kv_store(be, v_cache, s->vn, pos, n, n_ctx, kvd);
    ops->attention(be, s->q, k_cache, v_cache, pos, n, n_ctx, nh, nkv, hp->head_dim,
                   s->att);                                 /* att[n, qd] */
    ops->matmul(be, &L->wo, s->att, n, NULL, s->xb); /* xb[n, E], partial under TP */
    SD_CHECK(tp_allreduce(m, s->xb, n));
    ops->add(be, s->x, s->xb, (size_t)n * hp->n_embd);
    return SD_OK;
}

/* MLP block of layer il: x[n, n_embd] += (silu(xb . Wg^T) * (xb . Wu^T)) . Wd^T, over the
 * shard's ff features. */
static sd_status_t mlp_block(sd_seq_t *s, int il, int n)
{
    const sd_model_t *m = s->model;
    const sd_hparams_t *hp = &m->hp;
    const sd_layer_t *L = &m->layers[il];
    const sd_backend_ops_t *ops = m->backend->ops;
    sd_backend_t *be = m->backend;

    ops->rmsnorm(be, s->x, L->ffn_norm, n, hp->n_embd, hp->norm_eps, s->xb);
    ops->matmul(be, &L->w_gate, s->xb, n, NULL, s->hb); /* hb[n, ff] */
    ops->matmul(be, &L->w_up, s->xb, n, NULL, s->hb2);  /* hb2[n, ff] */
    ops->swiglu(be, s->hb, s->hb2, (size_t)n * m->tp.n_ff, s->hb);
    ops->matmul(be, &L->w_down, s->hb, n, NULL, s->xb); /* xb[n, E], partial under TP */
    SD_CHECK(tp_allreduce(m, s->xb, n));
    ops->add(be, s->x, s->xb, (size_t)n * hp->n_embd);
    return SD_OK;
}

/* The ops of one forward, from the embedding of ids_dev[0, n] to logits_dev[n, n_vocab]
 * (ids and positions already uploaded). Its only failure is a TP allreduce's. */
static sd_status_t forward_ops(sd_seq_t *s, int n, int n_layers)
{
    const sd_model_t *m = s->model;
    const sd_hparams_t *hp = &m->hp;
    const sd_backend_ops_t *ops = m->backend->ops;
    sd_backend_t *be = m->backend;
    const int32_t *pos = s->ids_dev + n; /* [n] */

    ops->embed(be, &m->tok_embd, s->ids_dev, n, s->x); /* x[n, E] */
    for (int il = 0; il < n_layers; il++) {
        SD_CHECK(attention_block(s, il, n, pos));
        SD_CHECK(mlp_block(s, il, n));
    }
    ops->rmsnorm(be, s->x, m->output_norm, n, hp->n_embd, hp->norm_eps, s->xb);
    ops->matmul(be, &m->output, s->xb, n, NULL, s->logits_dev); /* logits[n, n_vocab] */
    return SD_OK;
}

/* 1 when g was captured with the arguments forward_ops(s, n, n_layers) would use now. */
static int graph_is_current(const sd_seq_graph_t *g, const sd_seq_t *s, int n_layers)
{
    return g->n_layers == n_layers && g->kv_k == s->kv.k && g->kv_v == s->kv.v &&
           g->kv_n_ctx == s->kv.n_ctx;
}

/* forward_ops(s, n, n_layers) replayed from the sequence's graph for n, captured first when
 * there is none or it no longer matches. A failed capture launches nothing and returns the
 * backend's error (through its sync). */
static sd_status_t forward_graph(sd_seq_t *s, int n, int n_layers)
{
    sd_backend_t *be = s->model->backend;
    const sd_backend_ops_t *ops = be->ops;
    sd_seq_graph_t *g = &s->graphs[n];
    if (g->graph != NULL && !graph_is_current(g, s, n_layers)) {
        ops->graph_free(be, g->graph);
        g->graph = NULL;
    }
    if (g->graph == NULL) {
        ops->graph_begin(be);
        sd_status_t st = forward_ops(s, n, n_layers); /* SD_OK: graphs imply no TP comm */
        void *graph = ops->graph_end(be);
        if (st != SD_OK) {
            if (graph) ops->graph_free(be, graph);
            return st;
        }
        if (graph == NULL) {
            st = ops->sync(be);
            return st != SD_OK ? st
                               : sd_set_error(SD_ERR_DEVICE,
                                              "sd_forward: capturing the forward of n = %d failed", n);
        }
        *g = (sd_seq_graph_t){.graph = graph, .n_layers = n_layers, .kv_k = s->kv.k,
                              .kv_v = s->kv.v, .kv_n_ctx = s->kv.n_ctx};
    }
    ops->graph_launch(be, g->graph);
    return SD_OK;
}

sd_status_t sd_forward(sd_seq_t *s, const int32_t *tokens, int n, int n_layers_used)
{
    SD_CHECK(check_forward_args(s, tokens, n, n_layers_used));
    const sd_model_t *m = s->model;
    const sd_hparams_t *hp = &m->hp;
    const sd_backend_ops_t *ops = m->backend->ops;
    sd_backend_t *be = m->backend;
    int n_layers = n_layers_used > 0 ? n_layers_used : hp->n_layer;

    memcpy(s->ids, tokens, (size_t)n * sizeof(int32_t));
    for (int i = 0; i < n; i++) s->ids[n + i] = s->kv.len + i;
    ops->upload(be, s->ids_dev, s->ids, 2 * (size_t)n * sizeof(int32_t)); /* ids, positions */

    if (s->use_graphs && n <= SD_GRAPH_MAX_N)
        SD_CHECK(forward_graph(s, n, n_layers)); /* kv.len moves only on success */
    else
        SD_CHECK(forward_ops(s, n, n_layers));
    if (!s->keep_logits_on_device)
        ops->download(be, s->logits, s->logits_dev, (size_t)n * hp->n_vocab * sizeof(float));
    SD_CHECK(ops->sync(be)); /* a device op's failure surfaces here; kv.len unchanged */
    s->kv.len += n;
    return SD_OK;
}
