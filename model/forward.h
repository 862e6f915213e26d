/* The forward pass over one sequence (sd_seq_t) or a batch of sequences (sd_batch_t):
 * model/forward.c. Under TP: docs/design-notes.md, "Tensor parallelism"; CUDA graphs:
 * docs/cuda.md, "CUDA graphs". */
#ifndef SPECDEC_MODEL_FORWARD_H
#define SPECDEC_MODEL_FORWARD_H

#include "model/kv_cache.h"
#include "model/model.h"

/* Rows of one prefill forward: longer contexts (a prompt, a drafter's context) are fed in
 * chunks of this many tokens. */
#define SD_PREFILL_CHUNK 64

/* The largest n whose forward a sequence captures as a graph (a verify block k + 1, k <= 16). */
#define SD_GRAPH_MAX_N 17

/* One captured forward of n tokens (backend graph ops), re-captured when the layer count or
 * the KV cache it was captured with changes (a drafter sharing the target's cache swaps
 * kv.k / kv.v after sd_seq_init). A capture that fails is not tried again: that n runs
 * without a graph. */
typedef struct sd_seq_graph {
    void *graph; /* from ops->graph_end, or NULL: not captured */
    int failed;  /* 1: capturing this n failed; its forwards issue the ops directly */
    int n_layers;
    const float *kv_k, *kv_v;
    const int32_t *kv_table; /* the block table's device copy (its contents may change) */
    int kv_n_ctx;
} sd_seq_graph_t;

/* Activation scratch of forwards of up to T rows, backend memory (qd = shard
 * n_head*head_dim, kvd = shard n_head_kv*head_dim, n_ff the shard's). */
typedef struct sd_fwd_scratch {
    float *x, *xb;     /* [T, n_embd] residual stream, normed / projected rows */
    float *q, *att;    /* [T, qd] queries, attention output */
    float *kn, *vn;    /* [T, kvd] new keys (rotated in place) and values */
    float *hb, *hb2;   /* [T, n_ff] gate, up */
    float *logits_dev; /* [T, n_vocab] */
    int32_t *ids_dev;  /* [2, T] token ids then positions */
    float *xb_host;    /* [T, n_embd] host memory: the TP allreduce of a device model whose
                        * comm takes host memory only; else NULL */
} sd_fwd_scratch_t;

/* Per-sequence forward state: the KV cache plus activation scratch for up to max_tokens
 * tokens per forward call. Owned by one request; never shared. */
typedef struct sd_seq {
    const sd_model_t *model;
    sd_kv_cache_t kv;
    int max_tokens;
    sd_fwd_scratch_t sc;  /* T = max_tokens */
    int32_t *ids;         /* [2, T] host staging of sc.ids_dev */
    float *logits;        /* [T, n_vocab] host: the result of the last sd_forward */
    int keep_logits_on_device; /* 1: sd_forward leaves the logits in sc.logits_dev only (the
                                  verify kernel reads them there; engine/verifier.h) */
    /* 1: forwards of n <= SD_GRAPH_MAX_N replay a graph captured by the first of that n.
     * Set by sd_seq_init when the backend has graph ops, the model has no TP comm and
     * SPECDEC_CUDA_GRAPHS is not "0"; a caller may clear it. */
    int use_graphs;
    sd_seq_graph_t graphs[SD_GRAPH_MAX_N + 1]; /* [n]; [0] unused */
    void *tree_dev;       /* sd_forward_tree's slots and mask, backend memory, made on first use */
} sd_seq_t;

/* n_ctx 0 = the model's n_ctx; max_tokens in [1, 65536] (else SD_ERR_INVALID_ARG).
 * SD_ERR_OUT_OF_MEMORY naming what did not fit; on failure s holds nothing. */
sd_status_t sd_seq_init(sd_seq_t *s, const sd_model_t *m, int n_ctx, int max_tokens);
/* The same with the KV cache's blocks taken from pool (a pool of m) as it grows: sequences
 * of one pool share cached prefixes (sd_kv_cache_attach_prefix, _commit). */
sd_status_t sd_seq_init_pooled(sd_seq_t *s, const sd_model_t *m, sd_kv_pool_t *pool, int n_ctx,
                               int max_tokens);
void sd_seq_free(sd_seq_t *s);

/* Forward tokens[n] at positions kv.len .. kv.len+n-1 and append them to the cache; s->logits
 * [n, n_vocab] row i = next-token logits after tokens[0..i]. n_layers_used 0 = all layers,
 * else the first ones, then norm and head (layer-skip). The caller chunks by max_tokens.
 * SD_ERR_CONTEXT_FULL if kv.len + n > n_ctx; SD_ERR_OUT_OF_MEMORY when a pooled cache gets no
 * block; SD_ERR_INVALID_ARG for n outside [1, max_tokens]
 * or a token outside the vocabulary (naming it): checked before any collective, so every TP
 * rank refuses alike. A failed TP allreduce returns the comm's status, a device error
 * SD_ERR_DEVICE; on any error kv.len is unchanged. With use_graphs: the same bits. */
sd_status_t sd_forward(sd_seq_t *s, const int32_t *tokens, int n, int n_layers_used);

/* Forward tokens[n] as the last n nodes of a token tree whose nodes fill cache slots
 * tree_base .. kv.len + n - 1 (tree_base in [0, kv.len]; m = kv.len + n - tree_base <=
 * SD_ATTN_MASK_MAX_COLS nodes): parent[j] (j < m) is node j's parent node, in [-1, j) (-1:
 * under the context [0, tree_base)). Node j stands at position tree_base + depth(j) (0 for
 * a parentless node) and attends to slots [0, tree_base), its ancestors and itself
 * (docs/design-notes.md, "Token trees"). Logits and errors as sd_forward, and
 * SD_ERR_INVALID_ARG naming a bad parent, tree_base or m; SD_ERR_UNSUPPORTED on a backend
 * without the masked attention op. kv.len grows by n; no graphs. */
sd_status_t sd_forward_tree(sd_seq_t *s, const int32_t *tokens, int n, int tree_base,
                            const int32_t *parent, int n_layers_used);

/* Scratch of a batched forward: every sequence's rows concatenated, each attending to its
 * own cache (docs/design-notes.md, "Serving"); the sequences' own scratch is not used. */
typedef struct sd_batch {
    const sd_model_t *model;
    int max_rows, max_seqs;
    sd_fwd_scratch_t sc; /* T = max_rows, backend memory */
    int32_t *ids;        /* [2, max_rows] host staging of sc.ids_dev */
    void *parts;         /* [max_seqs] internal */
    void *tree_dev;      /* tree parts' slots [max_rows] and masks, backend memory, on first use */
    void *tree_host;     /* their host staging */
} sd_batch_t;

/* One sequence's part of a batched forward: tokens[n] at positions kv.len .. kv.len+n-1.
 * want_logits: its rows' logits land in seq->logits [n, n_vocab] (host; n must then be
 * <= seq->max_tokens, the rows that buffer holds). parent non-NULL: the rows are a token
 * tree, as sd_forward_tree(seq, tokens, n, seq->kv.len, parent, 0). */
typedef struct sd_batch_part {
    sd_seq_t *seq;
    const int32_t *tokens;
    int n;
    int want_logits;
    const int32_t *parent;
} sd_batch_part_t;

/* max_rows >= 1 rows over at most max_seqs sequences per forward. */
sd_status_t sd_batch_init(sd_batch_t *b, const sd_model_t *m, int max_rows, int max_seqs);
void sd_batch_free(sd_batch_t *b);

/* Every part's forward, all layers, each row the same bits as sd_forward alone. Parts with
 * want_logits come first. Every part is checked before anything runs, no cache changing on
 * failure: SD_ERR_INVALID_ARG (a NULL, foreign or repeated sequence, logits kept on the
 * device, a bad token, parts > max_seqs), SD_ERR_CONTEXT_FULL, SD_ERR_BATCH_TOO_LARGE (rows >
 * max_rows), a tree part's errors as sd_forward_tree's. On success each kv.len grows by its
 * n. Under TP every rank runs the same batch. */
sd_status_t sd_forward_batch(sd_batch_t *b, const sd_batch_part_t *parts, int n_parts);
/* The same through the first n_layers layers (0: all), then norm and head: the layer-skip
 * drafter. A part's sequence may then belong to a layer-skip view of the batch's model (the
 * same weights, hp.n_layer >= n_layers; draft/seq_drafter.c). */
sd_status_t sd_forward_batch_layers(sd_batch_t *b, const sd_batch_part_t *parts, int n_parts,
                                    int n_layers);

#endif
