/* The forward pass over one sequence (sd_seq_t) or a batch of sequences (sd_batch_t). */
#ifndef SPECDEC_MODEL_FORWARD_H
#define SPECDEC_MODEL_FORWARD_H

#include "model/kv_cache.h"
#include "model/model.h"

/* Rows of one prompt-prefill forward: a context longer than this (a generation's prompt, a
 * drafter's context) is fed in chunks of this many tokens. */
#define SD_PREFILL_CHUNK 64

/* The largest n whose forward a sequence captures as a graph: a verify block of k + 1 with
 * k <= 16 (a decode or draft step is n = 1). */
#define SD_GRAPH_MAX_N 17

/* One captured forward of n tokens (backend graph ops), valid while the arguments it was
 * captured with still hold: the layer count and the KV cache (a drafter sharing the
 * target's cache swaps kv.k / kv.v after sd_seq_init); any change re-captures. */
typedef struct sd_seq_graph {
    void *graph; /* from ops->graph_end, or NULL: not captured */
    int n_layers;
    const float *kv_k, *kv_v;
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
} sd_fwd_scratch_t;

/* Per-sequence forward state: the KV cache plus activation scratch sized for up to
 * max_tokens tokens per forward call. Owned by one request; never shared. K and V are
 * projected into kn / vn, rotated there, then stored at their positions by ops->kv_store;
 * attention reads the positions from sc.ids_dev, so no op argument changes from one step to
 * the next (what lets a device backend replay a captured graph). */
typedef struct sd_seq {
    const sd_model_t *model;
    sd_kv_cache_t kv;
    int max_tokens;
    sd_fwd_scratch_t sc;  /* T = max_tokens */
    int32_t *ids;         /* [2, T] host staging of sc.ids_dev */
    float *logits;        /* [T, n_vocab] host: the result of the last sd_forward */
    int keep_logits_on_device; /* 1: sd_forward leaves the logits in sc.logits_dev only (the
                                  verify kernel reads them there; engine/verifier.h) */
    /* 1: a forward of n <= SD_GRAPH_MAX_N tokens replays a graph of its ops (captured by
     * its first forward of that n). Set by sd_seq_init when the backend has graph ops, the
     * model has no TP comm (an allreduce runs on the host between ops) and the environment
     * variable SPECDEC_CUDA_GRAPHS is not "0"; a caller may clear it. */
    int use_graphs;
    sd_seq_graph_t graphs[SD_GRAPH_MAX_N + 1]; /* [n]; [0] unused */
} sd_seq_t;

/* n_ctx 0 = the model's n_ctx; max_tokens >= 1. */
sd_status_t sd_seq_init(sd_seq_t *s, const sd_model_t *m, int n_ctx, int max_tokens);
void sd_seq_free(sd_seq_t *s);

/* Forward tokens[n] at positions kv.len .. kv.len+n-1, appending them to the cache.
 * Leaves logits for all n tokens in s->logits [n, n_vocab] (row i = next-token logits
 * after tokens[0..i]). n_layers_used = 0 runs every layer (a smaller value runs the
 * first layers then the final norm and head: the layer-skip drafter).
 * SD_ERR_CONTEXT_FULL if kv.len + n > n_ctx; SD_ERR_INVALID_ARG for n > max_tokens
 * or a token id outside the vocabulary (naming it); these are checked before any
 * collective, so under TP every rank refuses the same call. With TP each layer ends its
 * attention and its MLP with an allreduce over m->comm; a failed one returns the comm's
 * status (SD_ERR_COMM_TIMEOUT, SD_ERR_PEER_LOST, ...) with kv.len unchanged. Prefill of
 * a long prompt is the caller's job to chunk by max_tokens. With s->use_graphs and
 * n <= SD_GRAPH_MAX_N the ops from the embedding to the logits are captured once per n and
 * replayed (the ids and positions are uploaded first; the download and the sync stay
 * outside); the results are the same bits as without. */
sd_status_t sd_forward(sd_seq_t *s, const int32_t *tokens, int n, int n_layers_used);

/* A batched forward over several sequences at once (continuous batching): their rows are
 * concatenated, every matmul runs once over all of them (the weights are read once for
 * the whole batch), and each sequence's rows attend to its own KV cache. Scratch for up
 * to max_rows rows lives here; the sequences' own scratch is not used. */
typedef struct sd_batch {
    const sd_model_t *model;
    int max_rows, max_seqs;
    sd_fwd_scratch_t sc; /* T = max_rows, backend memory */
    int32_t *ids;        /* [2, max_rows] host staging of sc.ids_dev */
    void *parts;         /* [max_seqs] internal */
} sd_batch_t;

/* One sequence's part of a batched forward: tokens[n] at positions kv.len .. kv.len+n-1.
 * want_logits: its rows' logits land in seq->logits [n, n_vocab] (host; n must then be
 * <= seq->max_tokens, the rows that buffer holds). */
typedef struct sd_batch_part {
    sd_seq_t *seq;
    const int32_t *tokens;
    int n;
    int want_logits;
} sd_batch_part_t;

/* max_rows >= 1 rows over at most max_seqs sequences per forward. */
sd_status_t sd_batch_init(sd_batch_t *b, const sd_model_t *m, int max_rows, int max_seqs);
void sd_batch_free(sd_batch_t *b);

/* The forward of every part, as sd_forward would run each alone (same bits per row: the ops
 * are batch-invariant), all layers. Parts with want_logits must come first (the head runs
 * over their rows only: a prefill chunk needs none). Checks every part before computing
 * anything (sequences of this model, distinct, not keeping their logits on the device,
 * token ids, context room, total rows <= max_rows, parts <= max_seqs); on failure no cache
 * changes. On success every part's kv.len grows by its n. Under TP every rank must run the
 * same batch (each layer allreduces over all its rows, as sd_forward does). */
sd_status_t sd_forward_batch(sd_batch_t *b, const sd_batch_part_t *parts, int n_parts);
/* The same through the first n_layers layers only, then the final norm and head (0: all;
 * the layer-skip drafter). A part's sequence may then also run a layer-skip view of the
 * batch's model (the same weights with hp.n_layer >= n_layers: draft/seq_drafter.c). */
sd_status_t sd_forward_batch_layers(sd_batch_t *b, const sd_batch_part_t *parts, int n_parts,
                                    int n_layers);

#endif
