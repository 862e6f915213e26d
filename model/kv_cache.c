/* The paged KV cache and the prefix cache over it (kv_cache.h; docs/design-notes.md, "Paged
 * KV cache and prefix cache"). A registered block is keyed by (parent block, its tokens): the
 * chain from the first block names the whole token prefix exactly, and the bucket is the
 * chain's FNV hash. Only blocks without registered children are evicted, so a registered
 * block's parent stays registered and the key never dangles. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "core/hash.h"
#include "model/kv_cache.h"
#include "model.h"

#define BS SD_KV_BLOCK

typedef struct pool_meta {
    int *ref;            /* [n] sequences holding the block */
    int *parent;         /* [n] registered: the previous block of its prefix, -1 for the first */
    int *n_children;     /* [n] registered blocks whose parent it is */
    uint8_t *registered; /* [n] */
    int32_t *tokens;     /* [n, BS] registered: the block's tokens */
    uint64_t *chain;     /* [n] registered: hash of the prefix through this block */
    int *next;           /* [n] next block in its bucket */
    int *bucket;         /* [n_buckets] first block, -1: empty */
    int n_buckets;       /* a power of two */
    int *prev_lru, *next_lru; /* cached blocks (registered, ref 0), least recent at lru_head */
    int lru_head, lru_tail;
    int *free_stack;     /* [n] unregistered unreferenced blocks */
    int n_free;
    int n_held;
} pool_meta_t;

/* Bytes of K (or of V) for n positions; SIZE_MAX when that overflows size_t. */
static size_t half_bytes(int n_layer, int n_head_kv, int head_dim, size_t n)
{
    size_t row = (size_t)n_head_kv * (size_t)head_dim * sizeof(float);
    if (row == 0 || n == 0) return 0;
    if (SIZE_MAX / row < n || SIZE_MAX / (row * n) < (size_t)n_layer) return SIZE_MAX;
    return row * n * (size_t)n_layer;
}

size_t sd_kv_position_bytes(const sd_model_t *m)
{
    return 2 * half_bytes(m->hp.n_layer, m->tp.n_head_kv, m->hp.head_dim, 1);
}

size_t sd_kv_cache_bytes(const sd_kv_cache_t *kv)
{
    return 2 * half_bytes(kv->n_layer, kv->n_head_kv, kv->head_dim, (size_t)kv->n_table * BS);
}

/* ---- the pool --------------------------------------------------------------------------- */

static void meta_free(pool_meta_t *t)
{
    if (t == NULL) return;
    free(t->ref);
    free(t->parent);
    free(t->n_children);
    free(t->registered);
    free(t->tokens);
    free(t->chain);
    free(t->next);
    free(t->bucket);
    free(t->prev_lru);
    free(t->next_lru);
    free(t->free_stack);
    free(t);
}

static pool_meta_t *meta_new(int n)
{
    pool_meta_t *t = calloc(1, sizeof *t);
    if (t == NULL) return NULL;
    t->n_buckets = 1;
    while (t->n_buckets < n) t->n_buckets *= 2;
    size_t un = (size_t)n;
    t->ref = calloc(un, sizeof *t->ref);
    t->parent = malloc(un * sizeof *t->parent);
    t->n_children = calloc(un, sizeof *t->n_children);
    t->registered = calloc(un, 1);
    t->tokens = malloc(un * BS * sizeof *t->tokens);
    t->chain = calloc(un, sizeof *t->chain);
    t->next = malloc(un * sizeof *t->next);
    t->bucket = malloc((size_t)t->n_buckets * sizeof *t->bucket);
    t->prev_lru = malloc(un * sizeof *t->prev_lru);
    t->next_lru = malloc(un * sizeof *t->next_lru);
    t->free_stack = malloc(un * sizeof *t->free_stack);
    if (!t->ref || !t->parent || !t->n_children || !t->registered || !t->tokens || !t->chain ||
        !t->next || !t->bucket || !t->prev_lru || !t->next_lru || !t->free_stack) {
        meta_free(t);
        return NULL;
    }
    for (int i = 0; i < t->n_buckets; i++) t->bucket[i] = -1;
    for (int i = 0; i < n; i++) t->free_stack[i] = n - 1 - i; /* block 0 taken first */
    t->n_free = n;
    t->lru_head = t->lru_tail = -1;
    return t;
}

sd_status_t sd_kv_pool_init(sd_kv_pool_t *p, const sd_model_t *m, int n_blocks, int prefix_cache)
{
    if (p == NULL || m == NULL) return sd_set_error(SD_ERR_INVALID_ARG, "sd_kv_pool_init: NULL argument");
    memset(p, 0, sizeof *p);
    if (n_blocks < 1 || n_blocks > INT32_MAX / BS)
        return sd_set_error(SD_ERR_INVALID_ARG, "KV pool of %d blocks: must be in [1, %d]",
                            n_blocks, INT32_MAX / BS);
    const sd_hparams_t *hp = &m->hp;
    size_t bytes = half_bytes(hp->n_layer, m->tp.n_head_kv, hp->head_dim, (size_t)n_blocks * BS);
    if (bytes == SIZE_MAX)
        return sd_set_error(SD_ERR_OUT_OF_MEMORY, "KV pool of %d blocks overflows size_t", n_blocks);
    p->model = m;
    p->k = sd_backend_alloc(m->backend, bytes);
    p->v = p->k ? sd_backend_alloc(m->backend, bytes) : NULL;
    p->meta = p->v ? meta_new(n_blocks) : NULL;
    if (p->meta == NULL) {
        sd_kv_pool_free(p);
        return sd_set_error(SD_ERR_OUT_OF_MEMORY,
                            "out of memory allocating 2 x %zu bytes for a KV pool of %d blocks of "
                            "%d positions", bytes, n_blocks, BS);
    }
    p->n_layer = hp->n_layer;
    p->n_head_kv = m->tp.n_head_kv;
    p->head_dim = hp->head_dim;
    p->n_blocks = n_blocks;
    p->prefix_cache = prefix_cache != 0;
    return SD_OK;
}

void sd_kv_pool_free(sd_kv_pool_t *p)
{
    if (p == NULL) return;
    if (p->model != NULL) {
        if (p->k) sd_backend_release(p->model->backend, p->k);
        if (p->v) sd_backend_release(p->model->backend, p->v);
    }
    meta_free(p->meta);
    memset(p, 0, sizeof *p);
}

void sd_kv_pool_counts(const sd_kv_pool_t *p, int *held, int *cached, int *free_blocks)
{
    const pool_meta_t *t = p->meta;
    int h = t ? t->n_held : 0, f = t ? t->n_free : 0;
    if (held) *held = h;
    if (free_blocks) *free_blocks = f;
    if (cached) *cached = p->n_blocks - h - f;
}

static uint64_t chain_of(uint64_t parent_chain, const int32_t *tokens)
{
    return sd_fnv1a64(parent_chain, tokens, BS * sizeof *tokens);
}

static void lru_remove(pool_meta_t *t, int b)
{
    int pv = t->prev_lru[b], nx = t->next_lru[b];
    if (pv >= 0) t->next_lru[pv] = nx;
    else t->lru_head = nx;
    if (nx >= 0) t->prev_lru[nx] = pv;
    else t->lru_tail = pv;
}

static void lru_push(pool_meta_t *t, int b) /* the most recent */
{
    t->prev_lru[b] = t->lru_tail;
    t->next_lru[b] = -1;
    if (t->lru_tail >= 0) t->next_lru[t->lru_tail] = b;
    else t->lru_head = b;
    t->lru_tail = b;
}

/* The registered block keyed (parent, tokens), or -1. */
static int lookup(const pool_meta_t *t, int parent, const int32_t *tokens, uint64_t chain)
{
    for (int b = t->bucket[chain & (uint64_t)(t->n_buckets - 1)]; b >= 0; b = t->next[b])
        if (t->chain[b] == chain && t->parent[b] == parent &&
            memcmp(t->tokens + (size_t)b * BS, tokens, BS * sizeof *tokens) == 0)
            return b;
    return -1;
}

static void unregister(pool_meta_t *t, int b)
{
    int *link = &t->bucket[t->chain[b] & (uint64_t)(t->n_buckets - 1)];
    while (*link != b) link = &t->next[*link];
    *link = t->next[b];
    if (t->parent[b] >= 0) t->n_children[t->parent[b]]--;
    t->registered[b] = 0;
}

/* Hold block b once more (a cached one leaves the LRU list). */
static void hold(pool_meta_t *t, int b)
{
    if (t->ref[b] == 0) {
        if (t->registered[b]) lru_remove(t, b);
        t->n_held++;
    }
    t->ref[b]++;
}

static void release(pool_meta_t *t, int b)
{
    if (--t->ref[b] > 0) return;
    t->n_held--;
    if (t->registered[b]) lru_push(t, b);
    else t->free_stack[t->n_free++] = b;
}

/* A block held once: a free one, else the least recently used cached block without
 * registered children (evicted); -1 when every block is held. */
static int take(sd_kv_pool_t *p)
{
    pool_meta_t *t = p->meta;
    int b = -1;
    if (t->n_free > 0) {
        b = t->free_stack[--t->n_free];
    } else {
        for (b = t->lru_head; b >= 0 && t->n_children[b] > 0; b = t->next_lru[b]) {}
        if (b < 0) return -1;
        lru_remove(t, b);
        unregister(t, b);
        p->evictions++;
    }
    t->ref[b] = 1;
    t->n_held++;
    return b;
}

/* ---- sequences ---------------------------------------------------------------------- */

static sd_status_t table_init(sd_kv_cache_t *kv, sd_kv_pool_t *p, int n_ctx)
{
    kv->pool = p;
    kv->n_layer = p->n_layer;
    kv->n_head_kv = p->n_head_kv;
    kv->head_dim = p->head_dim;
    kv->n_ctx = n_ctx;
    kv->k = p->k;
    kv->v = p->v;
    kv->n_table = (n_ctx + BS - 1) / BS;
    size_t bytes = (size_t)kv->n_table * sizeof(int32_t);
    kv->table = calloc((size_t)kv->n_table, sizeof(int32_t));
    kv->table_dev = kv->table ? sd_backend_alloc(p->model->backend, bytes) : NULL;
    if (kv->table_dev == NULL)
        return sd_set_error(SD_ERR_OUT_OF_MEMORY, "out of memory for a KV block table of %d blocks",
                            kv->n_table);
    kv->table_dirty = 1;
    return SD_OK;
}

sd_status_t sd_kv_cache_init(sd_kv_cache_t *kv, const sd_model_t *m, int n_ctx)
{
    if (kv == NULL) return sd_set_error(SD_ERR_INVALID_ARG, "sd_kv_cache_init: kv is NULL");
    if (m == NULL) return sd_set_error(SD_ERR_INVALID_ARG, "sd_kv_cache_init: model is NULL");
    memset(kv, 0, sizeof *kv);
    if (n_ctx < 1 || n_ctx > INT32_MAX - BS)
        return sd_set_error(SD_ERR_INVALID_ARG, "KV cache n_ctx = %d must be in [1, %d]", n_ctx,
                            INT32_MAX - BS);
    sd_kv_pool_t *p = calloc(1, sizeof *p);
    SD_ALLOC_CHECK(p, sizeof *p, "KV pool");
    sd_status_t st = sd_kv_pool_init(p, m, (n_ctx + BS - 1) / BS, 0);
    if (st != SD_OK) {
        free(p);
        return st;
    }
    kv->own_pool = 1;
    st = table_init(kv, p, n_ctx);
    for (int i = 0; st == SD_OK && i < kv->n_table; i++) kv->table[i] = take(p); /* i: identity */
    if (st != SD_OK) {
        sd_kv_cache_free(kv, m);
        return st;
    }
    kv->n_held = kv->n_table;
    return SD_OK;
}

sd_status_t sd_kv_cache_init_pooled(sd_kv_cache_t *kv, sd_kv_pool_t *p, int n_ctx)
{
    if (kv == NULL || p == NULL || p->meta == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG, "sd_kv_cache_init_pooled: kv or pool is NULL");
    memset(kv, 0, sizeof *kv);
    if (n_ctx < 1 || n_ctx > INT32_MAX - BS)
        return sd_set_error(SD_ERR_INVALID_ARG, "KV cache n_ctx = %d must be in [1, %d]", n_ctx,
                            INT32_MAX - BS);
    sd_status_t st = table_init(kv, p, n_ctx);
    if (st != SD_OK) sd_kv_cache_free(kv, p->model);
    return st;
}

void sd_kv_cache_view(sd_kv_cache_t *kv, sd_kv_cache_t *owner, int n_layer)
{
    *kv = *owner;
    kv->own_pool = 0;
    kv->n_layer = n_layer;
    kv->len = 0;
    kv->owner = owner;
}

/* Release a pooled cache's blocks from table index `keep` on, last first (parents stay more
 * recent in the LRU list). */
static void release_blocks_from(sd_kv_cache_t *kv, int keep)
{
    if (kv->owner != NULL || kv->own_pool || kv->pool == NULL) return;
    for (int i = kv->n_held - 1; i >= keep; i--) release(kv->pool->meta, kv->table[i]);
    if (kv->n_held > keep) kv->n_held = keep;
}

static void release_blocks(sd_kv_cache_t *kv) { release_blocks_from(kv, 0); }

void sd_kv_cache_reset(sd_kv_cache_t *kv)
{
    if (kv == NULL) return;
    release_blocks(kv);
    kv->len = 0;
}

void sd_kv_cache_free(sd_kv_cache_t *kv, const sd_model_t *m)
{
    if (kv == NULL) return;
    if (kv->owner == NULL && kv->pool != NULL) {
        release_blocks(kv);
        if (kv->table_dev) sd_backend_release(kv->pool->model->backend, kv->table_dev);
        free(kv->table);
        if (kv->own_pool) {
            sd_kv_pool_free(kv->pool);
            free(kv->pool);
        }
    }
    (void)m;
    memset(kv, 0, sizeof *kv);
}

sd_status_t sd_kv_cache_truncate(sd_kv_cache_t *kv, int len)
{
    if (kv == NULL) return sd_set_error(SD_ERR_INVALID_ARG, "sd_kv_cache_truncate: kv is NULL");
    if (len < 0 || len > kv->len)
        return sd_set_error(SD_ERR_INVALID_ARG, "cannot truncate a KV cache of %d positions to %d",
                            kv->len, len);
    kv->len = len;
    release_blocks_from(kv, (len + BS - 1) / BS); /* a tree's scratch, rejected drafts */
    return SD_OK;
}

const float *sd_kv_cache_row(const sd_kv_cache_t *kv, int v, int il, int pos)
{
    size_t row = (size_t)kv->n_head_kv * (size_t)kv->head_dim;
    size_t r = (size_t)il * (size_t)kv->pool->n_blocks * BS +
               (size_t)kv->table[pos / BS] * BS + (size_t)(pos % BS);
    return (v ? kv->v : kv->k) + r * row;
}

/* Copy block `from` into block `to`, every layer's K and V rows (through the host). */
static sd_status_t copy_block(sd_kv_pool_t *p, int from, int to)
{
    sd_backend_t *be = p->model->backend;
    size_t row = (size_t)p->n_head_kv * (size_t)p->head_dim, n = row * BS;
    float *tmp = malloc(n * sizeof *tmp);
    SD_ALLOC_CHECK(tmp, n * sizeof *tmp, "a KV block copy");
    for (int il = 0; il < p->n_layer; il++) {
        size_t layer = (size_t)il * (size_t)p->n_blocks * BS * row;
        float *halves[] = {p->k, p->v};
        for (int h = 0; h < 2; h++) {
            sd_backend_download(be, tmp, halves[h] + layer + (size_t)from * n, n * sizeof *tmp);
            sd_backend_upload(be, halves[h] + layer + (size_t)to * n, tmp, n * sizeof *tmp);
        }
    }
    sd_status_t st = sd_backend_sync(be);
    free(tmp);
    return st;
}

static sd_status_t no_block(const sd_kv_pool_t *p)
{
    return sd_set_error(SD_ERR_OUT_OF_MEMORY,
                        "KV pool: all %d blocks of %d positions are held by running sequences",
                        p->n_blocks, BS);
}

/* Blocks for owner's positions [from, to), the ones written private. */
static sd_status_t prepare_range(sd_kv_cache_t *kv, int from, int to)
{
    sd_kv_pool_t *p = kv->pool;
    pool_meta_t *t = p->meta;
    int need = (to + BS - 1) / BS;
    for (int b = from / BS; b < need; b++) {
        if (b >= kv->n_held) {
            int nb = take(p);
            if (nb < 0) return no_block(p);
            kv->table[kv->n_held++] = nb;
            kv->table_dirty = 1;
            continue;
        }
        int cur = kv->table[b];
        if (t->ref[cur] == 1 && t->registered[cur] && t->n_children[cur] == 0)
            unregister(t, cur); /* ours alone: it just leaves the cache */
        if (t->ref[cur] == 1 && !t->registered[cur]) continue;
        int nb = take(p); /* shared: copy on write */
        if (nb < 0) return no_block(p);
        sd_status_t st = copy_block(p, cur, nb);
        if (st != SD_OK) {
            release(t, nb);
            return st;
        }
        release(t, cur);
        kv->table[b] = nb;
        kv->table_dirty = 1;
    }
    return SD_OK;
}

static void upload_table(sd_kv_cache_t *kv)
{
    if (!kv->table_dirty) return;
    sd_backend_upload(kv->pool->model->backend, kv->table_dev, kv->table,
                      (size_t)kv->n_table * sizeof(int32_t));
    kv->table_dirty = 0;
}

sd_status_t sd_kv_cache_prepare(sd_kv_cache_t *kv, int new_len)
{
    if (new_len > kv->n_ctx)
        return sd_set_error(SD_ERR_CONTEXT_FULL, "context full: %d positions exceed n_ctx = %d",
                            new_len, kv->n_ctx);
    sd_kv_cache_t *o = kv->owner != NULL ? kv->owner : kv;
    if (!kv->own_pool) SD_CHECK(prepare_range(o, kv->len, new_len));
    upload_table(o);
    return SD_OK;
}

int sd_kv_cache_attach_prefix(sd_kv_cache_t *kv, const int32_t *tokens, int n)
{
    if (kv == NULL || kv->owner != NULL || kv->own_pool || !kv->pool->prefix_cache ||
        kv->len != 0 || kv->n_held != 0)
        return 0;
    pool_meta_t *t = kv->pool->meta;
    int parent = -1;
    uint64_t chain = SD_FNV64_INIT;
    for (int b = 0; (b + 1) * BS <= n && b < kv->n_table; b++) {
        const int32_t *tok = tokens + (size_t)b * BS;
        chain = chain_of(chain, tok);
        int hit = lookup(t, parent, tok, chain);
        if (hit < 0) break;
        hold(t, hit);
        kv->table[kv->n_held++] = hit;
        parent = hit;
    }
    kv->len = kv->n_held * BS;
    kv->table_dirty = kv->n_held > 0;
    kv->pool->hits_tokens += (uint64_t)kv->len;
    return kv->len;
}

void sd_kv_cache_commit(sd_kv_cache_t *kv, const int32_t *tokens, int n)
{
    if (kv == NULL || kv->owner != NULL || kv->own_pool || !kv->pool->prefix_cache) return;
    pool_meta_t *t = kv->pool->meta;
    n = n < kv->len ? n : kv->len;
    int parent = -1;
    uint64_t chain = SD_FNV64_INIT;
    for (int b = 0; (b + 1) * BS <= n && b < kv->n_held; b++) {
        const int32_t *tok = tokens + (size_t)b * BS;
        int cur = kv->table[b];
        chain = chain_of(chain, tok);
        if (t->registered[cur]) {
            if (t->parent[cur] != parent || t->chain[cur] != chain) return; /* not this prefix */
            parent = cur;
            continue;
        }
        int same = lookup(t, parent, tok, chain);
        if (same >= 0) { /* computed twice: the same bits; keep the cached one */
            hold(t, same);
            release(t, cur);
            kv->table[b] = same;
            kv->table_dirty = 1;
            parent = same;
            continue;
        }
        t->registered[cur] = 1;
        t->parent[cur] = parent;
        t->chain[cur] = chain;
        memcpy(t->tokens + (size_t)cur * BS, tok, BS * sizeof *tok);
        int bk = (int)(chain & (uint64_t)(t->n_buckets - 1));
        t->next[cur] = t->bucket[bk];
        t->bucket[bk] = cur;
        if (parent >= 0) t->n_children[parent]++;
        parent = cur;
    }
}
