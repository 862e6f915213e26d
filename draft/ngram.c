/* N-gram prompt-lookup drafter.
 *
 * For every n in [n_min, n_max] a hash table maps an n-gram to the end e of its most
 * recent occurrence that has a follower: ctx[e-n .. e) == the n-gram and e < length.
 * Appending the token at index L makes L the end of one new such occurrence per n, so
 * the tables are updated in O(n_max^2) per token; a proposal hashes the n-token suffix
 * (n_max down to n_min) and copies ctx[e .. e+k) — no scan of the context.
 *
 * Rollback: when end e is inserted, the table's previous value for that n-gram is kept
 * in prev[n][e]; truncating undoes ends from the top down by restoring those values, so
 * the tables equal those of a drafter that never saw the dropped tokens.
 *
 * Keys are 64-bit hashes (never 0, which marks an empty slot); a proposal compares the
 * actual tokens, so a hash collision can only cost a match, never propose a wrong one.
 * Slots whose value went back to -1 (no occurrence) stay until the next resize. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "draft/drafter_impl.h"
#include "draft/ngram.h"

typedef struct ngram_table {
    uint64_t *keys; /* [cap] hash of the n-gram; 0 = empty */
    int32_t *last;  /* [cap] end of its most recent occurrence with a follower, -1 = none */
    size_t cap;     /* power of two */
    size_t used;    /* occupied slots */
} ngram_table_t;

typedef struct sd_ngram {
    sd_drafter_t base;
    int n_min, n_max;
    int32_t *tok;          /* [cap] the context */
    int len, cap;
    int32_t *prev;         /* [n_max - n_min + 1, cap]: table value replaced by end e */
    ngram_table_t *tables; /* [n_max - n_min + 1], table j is for n = n_min + j */
    int prop_start, prop_n; /* the last proposal: tok[prop_start .. prop_start + prop_n) */
} sd_ngram_t;

void sd_ngram_params_default(sd_ngram_params_t *p)
{
    p->n_min = 1;
    p->n_max = 3;
}

static int n_sizes(const sd_ngram_t *g) { return g->n_max - g->n_min + 1; }

/* ---- hashing and the tables -------------------------------------------------------- */

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Hash of tok[n]; never 0. */
static uint64_t hash_ngram(const int32_t *tok, int n)
{
    uint64_t h = 0x9e3779b97f4a7c15ull * (uint64_t)n;
    for (int i = 0; i < n; i++)
        h = mix64(h ^ (uint32_t)tok[i]);
    return h ? h : 1;
}

/* Slot holding key, or the empty slot where it would go. */
static size_t table_slot(const ngram_table_t *t, uint64_t key)
{
    size_t mask = t->cap - 1, i = (size_t)key & mask;
    while (t->keys[i] != 0 && t->keys[i] != key)
        i = (i + 1) & mask;
    return i;
}

static void table_free(ngram_table_t *t)
{
    free(t->keys);
    free(t->last);
    memset(t, 0, sizeof *t);
}

/* Rebuild with room for `need` occupied slots at load <= 1/2, dropping slots at -1. */
static sd_status_t table_reserve(ngram_table_t *t, size_t need)
{
    if (t->cap != 0 && 2 * need <= t->cap)
        return SD_OK;
    size_t cap = 64;
    while (cap < 2 * need)
        cap *= 2;
    ngram_table_t n = {.keys = calloc(cap, sizeof(uint64_t)),
                       .last = malloc(cap * sizeof(int32_t)), .cap = cap};
    if (n.keys == NULL || n.last == NULL) {
        table_free(&n);
        return sd_set_error(SD_ERR_OUT_OF_MEMORY, "ngram drafter: out of memory for %zu table slots",
                            cap);
    }
    for (size_t i = 0; i < t->cap; i++) {
        if (t->keys[i] == 0 || t->last[i] < 0)
            continue;
        size_t s = table_slot(&n, t->keys[i]);
        n.keys[s] = t->keys[i];
        n.last[s] = t->last[i];
        n.used++;
    }
    table_free(t);
    *t = n;
    return SD_OK;
}

/* ---- context ----------------------------------------------------------------------- */

/* Context and undo-log capacity of at least `need` tokens. */
static sd_status_t grow_context(sd_ngram_t *g, int need)
{
    if (need <= g->cap)
        return SD_OK;
    int cap = g->cap ? g->cap : 256;
    while (cap < need)
        cap = cap > INT32_MAX / 2 ? INT32_MAX : cap * 2;
    int32_t *tok = realloc(g->tok, (size_t)cap * sizeof *tok);
    SD_ALLOC_CHECK(tok, (size_t)cap * sizeof *tok, "ngram drafter context");
    g->tok = tok;
    size_t prev_bytes = (size_t)n_sizes(g) * (size_t)cap * sizeof *g->prev;
    int32_t *prev = malloc(prev_bytes); /* [n_sizes, cap] */
    SD_ALLOC_CHECK(prev, prev_bytes, "ngram drafter undo log");
    for (int j = 0; j < n_sizes(g) && g->len > 0; j++) /* rows: stride g->cap -> cap */
        memcpy(prev + (size_t)j * cap, g->prev + (size_t)j * g->cap, (size_t)g->len * sizeof *prev);
    free(g->prev);
    g->prev = prev;
    g->cap = cap;
    return SD_OK;
}

/* Room for `extra` more tokens in the context, the undo log and every table (so appending
 * them cannot fail half-way). */
static sd_status_t reserve(sd_ngram_t *g, int extra)
{
    if (extra > INT32_MAX - g->len)
        return sd_set_error(SD_ERR_CONTEXT_FULL, "ngram drafter: context of %d + %d tokens",
                            g->len, extra);
    SD_CHECK(grow_context(g, g->len + extra));
    for (int j = 0; j < n_sizes(g); j++)
        SD_CHECK(table_reserve(&g->tables[j], g->tables[j].used + (size_t)extra));
    return SD_OK;
}

/* Append one token (capacity reserved): each n-gram ending at its index gains a follower. */
static void push(sd_ngram_t *g, int32_t token)
{
    int L = g->len;
    g->tok[g->len++] = token;
    for (int j = 0; j < n_sizes(g); j++) {
        int n = g->n_min + j;
        if (L < n)
            break;
        ngram_table_t *t = &g->tables[j];
        uint64_t key = hash_ngram(g->tok + L - n, n);
        size_t s = table_slot(t, key);
        if (t->keys[s] == 0) {
            t->keys[s] = key;
            t->last[s] = -1;
            t->used++;
        }
        g->prev[(size_t)j * g->cap + L] = t->last[s];
        t->last[s] = L;
    }
}

/* Drop the last token, restoring what its insertion replaced. */
static void pop(sd_ngram_t *g)
{
    int L = --g->len;
    for (int j = 0; j < n_sizes(g); j++) {
        int n = g->n_min + j;
        if (L < n)
            break;
        ngram_table_t *t = &g->tables[j];
        size_t s = table_slot(t, hash_ngram(g->tok + L - n, n));
        t->last[s] = g->prev[(size_t)j * g->cap + L];
    }
}

static sd_status_t check_token(int32_t token)
{
    if (token < 0)
        return sd_set_error(SD_ERR_INVALID_ARG, "ngram drafter: token %d is negative", token);
    return SD_OK;
}

/* ---- ops --------------------------------------------------------------------------- */

static void ngram_reset(sd_drafter_t *d)
{
    sd_ngram_t *g = (sd_ngram_t *)d;
    g->len = 0;
    g->prop_n = 0;
    for (int j = 0; j < n_sizes(g); j++) {
        ngram_table_t *t = &g->tables[j];
        if (t->cap)
            memset(t->keys, 0, t->cap * sizeof *t->keys);
        t->used = 0;
    }
}

static sd_status_t ngram_begin(sd_drafter_t *d, const int32_t *tokens, int n)
{
    sd_ngram_t *g = (sd_ngram_t *)d;
    for (int i = 0; i < n; i++)
        SD_CHECK(check_token(tokens[i]));
    ngram_reset(d);
    SD_CHECK(reserve(g, n));
    for (int i = 0; i < n; i++)
        push(g, tokens[i]);
    return SD_OK;
}

/* End of the most recent earlier occurrence of the n-token suffix, or -1. */
static int find_suffix(const sd_ngram_t *g, int n)
{
    const ngram_table_t *t = &g->tables[n - g->n_min];
    if (g->len < n || t->cap == 0)
        return -1;
    const int32_t *suffix = g->tok + g->len - n;
    size_t s = table_slot(t, hash_ngram(suffix, n));
    int e = t->keys[s] ? t->last[s] : -1;
    if (e < 0 || memcmp(g->tok + e - n, suffix, (size_t)n * sizeof *suffix) != 0)
        return -1; /* none, or a hash collision */
    return e;
}

static sd_status_t ngram_propose(sd_drafter_t *d, const sd_draft_request_t *req, sd_draft_out_t *out)
{
    sd_ngram_t *g = (sd_ngram_t *)d;
    if (req->pos0 != g->len)
        return sd_set_error(SD_ERR_INVALID_ARG,
                            "ngram drafter: proposal position %lld differs from the context length %d",
                            (long long)req->pos0, g->len);
    g->prop_n = 0;
    for (int n = g->n_max; n >= g->n_min; n--) {
        int e = find_suffix(g, n);
        if (e < 0)
            continue;
        g->prop_start = e;
        g->prop_n = g->len - e < req->k ? g->len - e : req->k;
        out->evidence = n < SD_DRAFT_EVIDENCE_CLASSES ? n : SD_DRAFT_EVIDENCE_CLASSES - 1;
        break;
    }
    if (g->prop_n > 0)
        memcpy(out->tokens, g->tok + g->prop_start, (size_t)g->prop_n * sizeof *out->tokens);
    out->n = g->prop_n;
    out->has_q = 0;
    return SD_OK;
}

static sd_status_t ngram_accept(sd_drafter_t *d, int n_accepted, int32_t next_token)
{
    sd_ngram_t *g = (sd_ngram_t *)d;
    if (n_accepted < 0 || n_accepted > g->prop_n)
        return sd_set_error(SD_ERR_INVALID_ARG,
                            "ngram drafter: %d tokens accepted of a proposal of %d", n_accepted,
                            g->prop_n);
    SD_CHECK(check_token(next_token));
    SD_CHECK(reserve(g, n_accepted + 1));
    for (int i = 0; i < n_accepted; i++) /* indices stay valid: no reallocation from here */
        push(g, g->tok[g->prop_start + i]);
    push(g, next_token);
    g->prop_n = 0;
    return SD_OK;
}

/* ---- trees: several continuations ------------------------------------------------------ */

#define NGRAM_TREE_OCCURRENCES 16 /* occurrences walked per proposal */

/* The child of node p (-1: the root) holding token t in out, or -1. */
static int tree_child(const sd_draft_tree_t *out, int p, int32_t t)
{
    for (int c = p + 1; c < out->n; c++)
        if (out->parent[c] == p && out->tokens[c] == t) return c;
    return -1;
}

/* Merge the continuation tok[e .. e + depth) (cut at the context's end) into out's trie, up
 * to budget nodes. */
static void tree_insert(const sd_ngram_t *g, int e, int depth, int budget, sd_draft_tree_t *out)
{
    int p = -1;
    for (int i = e; i < g->len && i < e + depth; i++) {
        int c = tree_child(out, p, g->tok[i]);
        if (c < 0) {
            if (out->n >= budget) return;
            c = out->n++;
            out->tokens[c] = g->tok[i];
            out->parent[c] = p;
        }
        p = c;
    }
}

/* Continuations of the suffix's earlier occurrences, longest n first and most recent first,
 * merged into one trie (budget nodes, depth levels or max_depth); parents come first since a
 * node is added after its parent. */
static sd_status_t ngram_propose_tree(sd_drafter_t *d, const sd_draft_request_t *req,
                                      const sd_tree_shape_t *shape, sd_draft_tree_t *out)
{
    sd_ngram_t *g = (sd_ngram_t *)d;
    if (req->pos0 != g->len)
        return sd_set_error(SD_ERR_INVALID_ARG,
                            "ngram drafter: proposal position %lld differs from the context length %d",
                            (long long)req->pos0, g->len);
    int depth = shape->levels > 0 ? shape->levels : shape->max_depth;
    int budget = SD_SPEC_TREE_MAX_NODES;
    if (shape->levels > 0) {
        for (int d0 = 0, level = 1, total = 0; d0 < shape->levels; d0++, budget = total) {
            level *= shape->width[d0];
            total += level;
        }
    } else if (shape->budget > 0) {
        budget = shape->budget;
    }
    budget = budget < SD_SPEC_TREE_MAX_NODES ? budget : SD_SPEC_TREE_MAX_NODES;
    depth = depth < SD_SPEC_MAX_K ? depth : SD_SPEC_MAX_K;
    g->prop_n = 0;
    out->n = 0;
    int walked = 0;
    for (int n = g->n_max; n >= g->n_min && walked < NGRAM_TREE_OCCURRENCES; n--) {
        int j = n - g->n_min;
        const int32_t *suffix = g->tok + g->len - n;
        for (int e = find_suffix(g, n); e >= n && walked < NGRAM_TREE_OCCURRENCES;
             e = g->prev[(size_t)j * g->cap + e], walked++)
            if (memcmp(g->tok + e - n, suffix, (size_t)n * sizeof *suffix) == 0)
                tree_insert(g, e, depth, budget, out);
    }
    return SD_OK;
}

static sd_status_t ngram_accept_path(sd_drafter_t *d, const int32_t *tokens, int n, int32_t next)
{
    sd_ngram_t *g = (sd_ngram_t *)d;
    for (int i = 0; i < n; i++) SD_CHECK(check_token(tokens[i]));
    SD_CHECK(check_token(next));
    SD_CHECK(reserve(g, n + 1));
    for (int i = 0; i < n; i++) push(g, tokens[i]);
    push(g, next);
    g->prop_n = 0;
    return SD_OK;
}

static sd_status_t ngram_rollback(sd_drafter_t *d, int n)
{
    sd_ngram_t *g = (sd_ngram_t *)d;
    if (n < 0 || n > g->len)
        return sd_set_error(SD_ERR_INVALID_ARG,
                            "ngram drafter: rollback to %d tokens, the context holds %d", n, g->len);
    while (g->len > n)
        pop(g);
    g->prop_n = 0;
    return SD_OK;
}

static void ngram_destroy(sd_drafter_t *d)
{
    sd_ngram_t *g = (sd_ngram_t *)d;
    if (g->tables != NULL)
        for (int j = 0; j < n_sizes(g); j++)
            table_free(&g->tables[j]);
    free(g->tables);
    free(g->tok);
    free(g->prev);
    free(g);
}

static const sd_drafter_ops_t ngram_ops = {
    .name = "ngram",
    .begin = ngram_begin,
    .propose = ngram_propose,
    .accept = ngram_accept,
    .rollback = ngram_rollback,
    .reset = ngram_reset,
    .destroy = ngram_destroy,
    .proposes_cheaply = 1, /* a hash lookup and a copy */
    .propose_tree = ngram_propose_tree,
    .accept_path = ngram_accept_path,
};

/* SD_ERR_INVALID_ARG naming the field when p is out of range. */
static sd_status_t check_params(const sd_ngram_params_t *p)
{
    if (p->n_min < 1 || p->n_min > SD_NGRAM_N_LIMIT)
        return sd_set_error(SD_ERR_INVALID_ARG, "ngram drafter: n_min %d must be in [1, %d]",
                            p->n_min, SD_NGRAM_N_LIMIT);
    if (p->n_max < p->n_min || p->n_max > SD_NGRAM_N_LIMIT)
        return sd_set_error(SD_ERR_INVALID_ARG, "ngram drafter: n_max %d must be in [n_min %d, %d]",
                            p->n_max, p->n_min, SD_NGRAM_N_LIMIT);
    return SD_OK;
}

sd_status_t sd_drafter_ngram_new(const sd_ngram_params_t *p, sd_drafter_t **out)
{
    if (p == NULL || out == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG, "ngram drafter: params and out must be non-NULL");
    SD_CHECK(check_params(p));
    sd_ngram_t *g = calloc(1, sizeof *g);
    SD_ALLOC_CHECK(g, sizeof *g, "ngram drafter");
    g->base.ops = &ngram_ops;
    g->n_min = p->n_min;
    g->n_max = p->n_max;
    g->tables = calloc((size_t)n_sizes(g), sizeof *g->tables);
    if (g->tables == NULL) {
        ngram_destroy(&g->base);
        return sd_set_error(SD_ERR_OUT_OF_MEMORY, "ngram drafter: out of memory for %d tables",
                            p->n_max - p->n_min + 1);
    }
    *out = &g->base;
    return SD_OK;
}

/* ---- registry row -------------------------------------------------------------------- */

static sd_ngram_params_t params_of(const sd_spec_config_t *spec)
{
    return (sd_ngram_params_t){spec->ngram_min, spec->ngram_max};
}

sd_status_t sd_drafter_ngram_parse(const char *text, const char *arg, sd_spec_config_t *spec,
                                   const char **model_path)
{
    sd_ngram_params_t p;
    sd_ngram_params_default(&p);
    if (arg != NULL)
        SD_CHECK(sd_drafter_parse_int(text, arg, "N", p.n_min, SD_NGRAM_N_LIMIT, &p.n_max));
    spec->drafter = SD_DRAFTER_NGRAM;
    spec->ngram_min = p.n_min;
    spec->ngram_max = p.n_max;
    *model_path = NULL;
    return SD_OK;
}

sd_status_t sd_drafter_ngram_check(const sd_spec_config_t *spec)
{
    sd_ngram_params_t p = params_of(spec);
    return check_params(&p);
}

sd_status_t sd_drafter_ngram_make(sd_model_t *target, const sd_spec_config_t *spec,
                                  sd_drafter_t **out)
{
    sd_ngram_params_t p = params_of(spec);
    return sd_drafter_ngram_new(&p, out);
}

int sd_drafter_ngram_hash_words(const sd_spec_config_t *spec, int32_t words[SD_DRAFTER_HASH_WORDS])
{
    words[0] = spec->ngram_min;
    words[1] = spec->ngram_max;
    return 2;
}

sd_status_t sd_drafter_ngram_text(const sd_spec_config_t *spec, const sd_model_t *target,
                                  char *buf, size_t cap)
{
    sd_ngram_params_t p;
    sd_ngram_params_default(&p);
    if (spec->ngram_min == p.n_min && spec->ngram_max == p.n_max)
        snprintf(buf, cap, "ngram");
    else
        snprintf(buf, cap, "ngram:%d", spec->ngram_max);
    return SD_OK;
}
