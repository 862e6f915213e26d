/* The paged KV cache (model/kv_cache.c): a pool of fixed-size blocks per model, a block table
 * per sequence, and the prefix cache over the pool (docs/design-notes.md, "Paged KV cache and
 * prefix cache"). f32 for exact rollback by length. */
#ifndef SPECDEC_MODEL_KV_CACHE_H
#define SPECDEC_MODEL_KV_CACHE_H

#include <stdint.h>

#include "model/model.h"

/* Positions per KV block. */
#define SD_KV_BLOCK 16

/* Blocks of one model: per layer K and V [n_blocks * SD_KV_BLOCK, n_head_kv, head_dim] f32
 * backend memory (n_head_kv the shard's). A block is free, held by sequences (ref > 0), or
 * cached: unreferenced but registered under its token prefix, evicted least recently used
 * first when a free block is wanted. Used by one thread at a time (the one running the model). */
typedef struct sd_kv_pool {
    const sd_model_t *model;
    int n_layer, n_head_kv, head_dim, n_blocks;
    int prefix_cache;          /* 1: full blocks are registered and reused (sd_kv_cache_commit) */
    float *k, *v;              /* [n_layer, n_blocks * SD_KV_BLOCK, n_head_kv, head_dim] */
    void *meta;                /* refs, keys, free list, LRU, hash buckets (kv_cache.c) */
    uint64_t hits_tokens;      /* prompt positions served from cached blocks */
    uint64_t evictions;        /* cached blocks evicted */
} sd_kv_pool_t;

/* n_blocks >= 1; SD_ERR_OUT_OF_MEMORY naming the size. */
sd_status_t sd_kv_pool_init(sd_kv_pool_t *p, const sd_model_t *m, int n_blocks, int prefix_cache);
/* Every sequence of the pool must be freed first. */
void sd_kv_pool_free(sd_kv_pool_t *p);
/* Blocks now held by sequences, cached (unreferenced, reusable), and free. */
void sd_kv_pool_counts(const sd_kv_pool_t *p, int *held, int *cached, int *free_blocks);

/* KV cache of one sequence: position j lives in row table[j / SD_KV_BLOCK] * SD_KV_BLOCK +
 * j % SD_KV_BLOCK of its pool (the layout of kernels/backend_impl.h). */
typedef struct sd_kv_cache {
    sd_kv_pool_t *pool;
    int own_pool;              /* 1: a private pool of exactly its blocks (sd_kv_cache_init) */
    int n_layer, n_ctx, n_head_kv, head_dim;
    int len;                   /* positions 0 .. len-1 are valid */
    float *k, *v;              /* the pool's memory */
    int n_table;               /* ceil(n_ctx / SD_KV_BLOCK) */
    int n_held;                /* table[0 .. n_held) hold blocks */
    int32_t *table;            /* [n_table] host */
    int32_t *table_dev;        /* [n_table] backend memory, the ops read it */
    int table_dirty;           /* table changed since the last upload */
    struct sd_kv_cache *owner; /* a view (sd_kv_cache_view): the sequence whose blocks it uses */
} sd_kv_cache_t;

/* A private pool holding all ceil(n_ctx / SD_KV_BLOCK) blocks (n_ctx >= 1):
 * SD_ERR_OUT_OF_MEMORY naming the size. */
sd_status_t sd_kv_cache_init(sd_kv_cache_t *kv, const sd_model_t *m, int n_ctx);
/* A sequence of n_ctx positions whose blocks come from pool p as it grows. */
sd_status_t sd_kv_cache_init_pooled(sd_kv_cache_t *kv, sd_kv_pool_t *p, int n_ctx);
/* kv becomes a view of owner's blocks over its first n_layer layers (layer-skip: the
 * drafter's cache is the target's); the view's len is its own, its table the owner's. */
void sd_kv_cache_view(sd_kv_cache_t *kv, sd_kv_cache_t *owner, int n_layer);
/* Releases its blocks (full registered ones stay cached in a shared pool). */
void sd_kv_cache_free(sd_kv_cache_t *kv, const sd_model_t *m);
/* Empty: len 0, a pooled cache's blocks released (full registered ones stay cached). */
void sd_kv_cache_reset(sd_kv_cache_t *kv);
/* Roll back to `len` positions (len <= kv->len; SD_ERR_INVALID_ARG otherwise); a pooled
 * cache's blocks past them go back to the pool. */
sd_status_t sd_kv_cache_truncate(sd_kv_cache_t *kv, int len);
/* Make positions [len, new_len) writable: blocks taken (evicting cached ones), a shared block
 * they fall in copied first; the table uploaded (a view prepares its owner's blocks). SD_ERR_OUT_OF_MEMORY when the pool has no
 * block left; SD_ERR_CONTEXT_FULL when new_len > n_ctx. Not while a graph records. */
sd_status_t sd_kv_cache_prepare(sd_kv_cache_t *kv, int new_len);

/* An empty sequence takes the longest run of cached full blocks matching tokens[0 .. n) and
 * sets len to the positions they hold (a multiple of SD_KV_BLOCK, <= n); 0 without a cache. */
int sd_kv_cache_attach_prefix(sd_kv_cache_t *kv, const int32_t *tokens, int n);
/* Register the full blocks of positions [0, n) (n <= len), tokens[i] the token at position
 * i, so later sequences may reuse them. A block already cached under the same prefix stays
 * as is. Nothing without a prefix cache. */
void sd_kv_cache_commit(sd_kv_cache_t *kv, const int32_t *tokens, int n);

/* The K (v = 0) or V (v = 1) row [n_head_kv, head_dim] of position pos < len in layer il;
 * readable on host-memory backends (tests). */
const float *sd_kv_cache_row(const sd_kv_cache_t *kv, int v, int il, int pos);

/* Bytes one position takes in a cache of m (K and V over its layers), and the bytes a cache
 * holds (K and V, all its blocks). The one formula for KV-cache sizes. */
size_t sd_kv_position_bytes(const sd_model_t *m);
size_t sd_kv_cache_bytes(const sd_kv_cache_t *kv);

#endif
