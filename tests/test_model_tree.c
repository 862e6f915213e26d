/* Token-tree forwards (sd_forward_tree) and the rollback to the accepted path
 * (sd_kv_cache_move_rows): the cache after rollback and the path's logits equal a plain
 * forward of the path's tokens bit for bit; bad trees are refused naming the value. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "model/forward.h"
#include "model/kv_cache.h"
#include "model/kv_rows.h"
#include "model/model.h"
#include "support/synth_model.h"

static sd_model_t *small_model(void)
{
    sd_synth_spec_t s;
    sd_synth_spec_default(&s);
    s.n_layer = 2;
    s.n_embd = 64;
    s.n_head = 4;
    s.n_head_kv = 2;
    s.n_ff = 96;
    s.n_vocab = 96;
    s.n_ctx = 64;
    s.tokenizer = SD_SYNTH_TOKENIZER_NONE;
    s.seed = 77;
    s.weight_scale = 0.1f;
    return sd_test_synth_model(&s, 2, 64);
}

static const int32_t prompt[] = {3, 17, 42, 5, 60};
/* root (the last kept token) then 7 nodes: 1, 2 under the root; 3 under 1; 4 under 2; 5
 * under 3; 6 under the root; 7 under 5 */
static const int32_t rows[] = {9, 11, 12, 30, 31, 50, 13, 70};
static const int32_t parent[] = {-1, 0, 0, 1, 2, 3, 0, 5};
#define NR ((int)(sizeof rows / sizeof rows[0]))

/* The path rows[path[0 .. 5)] of t's tree at slots base + path[d]: c (which holds t's context)
 * forwards its tokens plainly; their logits must be t's rows' bit for bit; then t's rows move
 * into place (toks, src, dst [5] filled). */
static void forward_path_and_move(const sd_model_t *m, sd_seq_t *t, sd_seq_t *c, int base,
                                  const int *path, int32_t *toks, int32_t *src, int32_t *dst)
{
    int V = m->hp.n_vocab;
    for (int d = 0; d < 5; d++) {
        toks[d] = rows[path[d]];
        src[d] = base + path[d];
        dst[d] = base + d;
    }
    cr_assert_eq(sd_forward(c, toks, 5, 0), SD_OK, "%s", sd_last_error());
    for (int d = 0; d < 5; d++)
        cr_assert(memcmp(t->logits + (size_t)path[d] * V, c->logits + (size_t)d * V,
                         sizeof(float) * (size_t)V) == 0, "logits of path row %d differ", d);
    cr_assert_eq(sd_kv_cache_move_rows(&t->kv, m, src, dst, 5), SD_OK, "%s", sd_last_error());
}

Test(model_tree, rollback_to_the_path_equals_a_plain_forward_bit_for_bit, .timeout = 120)
{
    sd_model_t *m = small_model();
    sd_seq_t t, c;
    cr_assert_eq(sd_seq_init(&t, m, 32, 16), SD_OK, "%s", sd_last_error());
    cr_assert_eq(sd_seq_init(&c, m, 32, 16), SD_OK, "%s", sd_last_error());
    cr_assert_eq(sd_forward(&t, prompt, 5, 0), SD_OK, "%s", sd_last_error());
    cr_assert_eq(sd_forward(&c, prompt, 5, 0), SD_OK, "%s", sd_last_error());
    int len = t.kv.len, V = m->hp.n_vocab;
    cr_assert_eq(sd_forward_tree(&t, rows, NR, len, parent, 0), SD_OK, "%s", sd_last_error());
    cr_assert_eq(t.kv.len, len + NR);
    /* the accepted path: rows 0 (root), 1, 3, 5, 7 */
    const int path[] = {0, 1, 3, 5, 7};
    int32_t toks[5], src[5], dst[5];
    forward_path_and_move(m, &t, &c, len, path, toks, src, dst);
    cr_assert_eq(sd_kv_cache_truncate(&t.kv, len + 5), SD_OK);
    size_t bytes = (size_t)t.kv.n_head_kv * t.kv.head_dim * sizeof(float);
    for (int l = 0; l < m->hp.n_layer; l++)
        for (int p = 0; p < len + 5; p++)
            for (int h = 0; h < 2; h++)
                cr_assert(memcmp(sd_kv_cache_row(&t.kv, h, l, p), sd_kv_cache_row(&c.kv, h, l, p),
                                 bytes) == 0, "layer %d %s position %d differs", l, h ? "V" : "K", p);
    /* and decoding goes on identically */
    int32_t next = 8;
    cr_assert_eq(sd_forward(&t, &next, 1, 0), SD_OK);
    cr_assert_eq(sd_forward(&c, &next, 1, 0), SD_OK);
    cr_assert(memcmp(t.logits, c.logits, sizeof(float) * (size_t)V) == 0);
    sd_seq_free(&t);
    sd_seq_free(&c);
    sd_model_free(m);
}

Test(model_tree, bad_trees_are_refused_naming_the_value, .timeout = 60)
{
    sd_model_t *m = small_model();
    sd_seq_t t;
    cr_assert_eq(sd_seq_init(&t, m, 32, 16), SD_OK, "%s", sd_last_error());
    cr_assert_eq(sd_forward(&t, prompt, 5, 0), SD_OK);
    const int32_t bad_parent[] = {-1, 0, 2};
    cr_assert_eq(sd_forward_tree(&t, rows, 3, t.kv.len, bad_parent, 0), SD_ERR_INVALID_ARG);
    cr_assert(strstr(sd_last_error(), "node 2 has parent 2") != NULL, "%s", sd_last_error());
    cr_assert_eq(sd_forward_tree(&t, rows, 3, t.kv.len + 1, parent, 0), SD_ERR_INVALID_ARG);
    cr_assert(strstr(sd_last_error(), "tree_base = 6") != NULL, "%s", sd_last_error());
    cr_assert_eq(t.kv.len, 5);
    const int32_t src = 2, dst = 3;
    cr_assert_eq(sd_kv_cache_move_rows(&t.kv, m, &src, &dst, 1), SD_ERR_INVALID_ARG);
    cr_assert(strstr(sd_last_error(), "from row 2 to row 3") != NULL, "%s", sd_last_error());
    sd_seq_free(&t);
    sd_model_free(m);
}

/* Every K and V row of positions [0, n) of kv, all layers, into a new buffer. */
static float *kv_snapshot(const sd_kv_cache_t *kv, int n_layer, int n)
{
    size_t row = (size_t)kv->n_head_kv * kv->head_dim;
    float *out = malloc(sizeof(float) * row * (size_t)(2 * n_layer * n));
    cr_assert_not_null(out);
    for (int l = 0, i = 0; l < n_layer; l++)
        for (int h = 0; h < 2; h++)
            for (int p = 0; p < n; p++, i++)
                memcpy(out + (size_t)i * row, sd_kv_cache_row(kv, h, l, p), sizeof(float) * row);
    return out;
}

/* A sequence in a shared pool whose prompt's first two blocks are the prefix cache's: it
 * rolls back into the second (cached) block and runs a tree there whose accepted path
 * crosses into the third block. The tree copies the cached block before writing (the other
 * holder's rows and a later request's attached prefix keep their bits), the path's logits and
 * KV rows equal a plain forward's bit for bit, and the truncation returns the scratch block. */
Test(model_tree, pooled_tree_over_a_cached_prefix_equals_a_plain_forward, .timeout = 120)
{
    sd_model_t *m = small_model();
    enum { NP = 40, BASE = 29 };
    int32_t p[NP];
    for (int i = 0; i < NP; i++) p[i] = (i * 37 + 5) % m->hp.n_vocab;
    sd_kv_pool_t pool;
    cr_assert_eq(sd_kv_pool_init(&pool, m, 12, 1), SD_OK, "%s", sd_last_error());
    sd_seq_t a, t, c, d;
    cr_assert_eq(sd_seq_init_pooled(&a, m, &pool, 64, NP), SD_OK, "%s", sd_last_error());
    cr_assert_eq(sd_forward(&a, p, NP, 0), SD_OK, "%s", sd_last_error());
    sd_kv_cache_commit(&a.kv, p, NP); /* blocks 0 and 1 cached, a holds them */
    float *before = kv_snapshot(&a.kv, m->hp.n_layer, NP);
    cr_assert_eq(sd_seq_init_pooled(&t, m, &pool, 64, 16), SD_OK, "%s", sd_last_error());
    cr_assert_eq(sd_kv_cache_attach_prefix(&t.kv, p, NP - 1), 32);
    cr_assert_eq(sd_kv_cache_truncate(&t.kv, BASE), SD_OK); /* into the cached block 1 */
    cr_assert_eq(sd_seq_init(&c, m, 64, NP), SD_OK, "%s", sd_last_error());
    cr_assert_eq(sd_forward(&c, p, BASE, 0), SD_OK, "%s", sd_last_error());

    int V = m->hp.n_vocab;
    cr_assert_eq(sd_forward_tree(&t, rows, NR, BASE, parent, 0), SD_OK, "%s", sd_last_error());
    const int path[] = {0, 1, 3, 5, 7}; /* slots 29, 30, 32, 34, 36 to 29 .. 33 */
    int32_t toks[5], src[5], dst[5];
    forward_path_and_move(m, &t, &c, BASE, path, toks, src, dst);
    int held0, held1;
    sd_kv_pool_counts(&pool, &held0, NULL, NULL);
    cr_assert_eq(sd_kv_cache_truncate(&t.kv, BASE + 2), SD_OK); /* block 2 goes back */
    sd_kv_pool_counts(&pool, &held1, NULL, NULL);
    cr_assert_eq(held1, held0 - 1, "held %d blocks, then %d", held0, held1);
    float *got = kv_snapshot(&t.kv, m->hp.n_layer, BASE + 2);
    float *want = kv_snapshot(&c.kv, m->hp.n_layer, BASE + 2);
    size_t row = (size_t)t.kv.n_head_kv * t.kv.head_dim;
    cr_assert(memcmp(got, want, sizeof(float) * row * 2 * m->hp.n_layer * (BASE + 2)) == 0,
              "the rolled-back cache differs from a plain forward's");
    /* the cached blocks kept their bits: their other holder, and a later request */
    float *after = kv_snapshot(&a.kv, m->hp.n_layer, NP);
    cr_assert(memcmp(before, after, sizeof(float) * row * 2 * m->hp.n_layer * NP) == 0,
              "the tree step wrote into a cached block");
    cr_assert_eq(sd_seq_init_pooled(&d, m, &pool, 64, 16), SD_OK, "%s", sd_last_error());
    cr_assert_eq(sd_kv_cache_attach_prefix(&d.kv, p, NP - 1), 32);
    cr_assert_eq(sd_forward(&d, p + 32, NP - 32, 0), SD_OK, "%s", sd_last_error());
    float *again = kv_snapshot(&d.kv, m->hp.n_layer, NP);
    cr_assert(memcmp(before, again, sizeof(float) * row * 2 * m->hp.n_layer * NP) == 0,
              "a later request sharing the prefix sees other rows");
    cr_assert(memcmp(d.logits + (size_t)(NP - 33) * V, a.logits + (size_t)(NP - 1) * V,
                     sizeof(float) * (size_t)V) == 0, "a later request's logits differ");
    /* and decoding goes on identically */
    int32_t next[] = {toks[2], 8};
    cr_assert_eq(sd_forward(&t, next, 2, 0), SD_OK);
    cr_assert_eq(sd_kv_cache_truncate(&c.kv, BASE + 2), SD_OK);
    cr_assert_eq(sd_forward(&c, next, 2, 0), SD_OK);
    cr_assert(memcmp(t.logits, c.logits, sizeof(float) * 2 * (size_t)V) == 0);
    free(before), free(after), free(again), free(got), free(want);
    sd_seq_free(&d);
    sd_seq_free(&c);
    sd_seq_free(&t);
    sd_seq_free(&a);
    int held, cached;
    sd_kv_pool_counts(&pool, &held, &cached, NULL);
    cr_assert_eq(held, 0, "%d blocks still held", held);
    sd_kv_pool_free(&pool);
    sd_model_free(m);
}

/* A batched forward mixing a chain part and a tree part (in a shared pool): each part's
 * logits and KV rows are its forward alone's, bit for bit. */
Test(model_tree, batch_mixes_trees_and_chains_bit_for_bit, .timeout = 120)
{
    sd_model_t *m = small_model();
    sd_kv_pool_t pool;
    cr_assert_eq(sd_kv_pool_init(&pool, m, 16, 1), SD_OK, "%s", sd_last_error());
    sd_seq_t s[4]; /* chain and tree in the batch, then each alone */
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(sd_seq_init_pooled(&s[i], m, &pool, 64, 16), SD_OK, "%s", sd_last_error());
        cr_assert_eq(sd_forward(&s[i], prompt, 5, 0), SD_OK, "%s", sd_last_error());
    }
    const int32_t chain[] = {7, 8, 9};
    sd_batch_t b;
    cr_assert_eq(sd_batch_init(&b, m, 32, 4), SD_OK, "%s", sd_last_error());
    sd_batch_part_t parts[] = {{&s[0], chain, 3, 1, NULL}, {&s[1], rows, NR, 1, parent}};
    cr_assert_eq(sd_forward_batch(&b, parts, 2), SD_OK, "%s", sd_last_error());
    cr_assert_eq(sd_forward(&s[2], chain, 3, 0), SD_OK, "%s", sd_last_error());
    cr_assert_eq(sd_forward_tree(&s[3], rows, NR, 5, parent, 0), SD_OK, "%s", sd_last_error());
    size_t V = (size_t)m->hp.n_vocab;
    cr_assert(memcmp(s[0].logits, s[2].logits, sizeof(float) * 3 * V) == 0, "chain logits");
    cr_assert(memcmp(s[1].logits, s[3].logits, sizeof(float) * NR * V) == 0, "tree logits");
    for (int i = 0; i < 2; i++) {
        int n = s[i].kv.len;
        float *got = kv_snapshot(&s[i].kv, m->hp.n_layer, n);
        float *want = kv_snapshot(&s[i + 2].kv, m->hp.n_layer, n);
        size_t row = (size_t)s[i].kv.n_head_kv * s[i].kv.head_dim;
        cr_assert(memcmp(got, want, sizeof(float) * row * 2 * m->hp.n_layer * (size_t)n) == 0,
                  "%s KV rows differ", i ? "tree" : "chain");
        free(got), free(want);
    }
    const int32_t bad[] = {-1, 0, 2};
    sd_batch_part_t bad_part[] = {{&s[0], rows, 3, 1, bad}};
    cr_assert_eq(sd_forward_batch(&b, bad_part, 1), SD_ERR_INVALID_ARG);
    cr_assert(strstr(sd_last_error(), "node 2 has parent 2") != NULL, "%s", sd_last_error());
    sd_batch_free(&b);
    for (int i = 0; i < 4; i++) sd_seq_free(&s[i]);
    sd_kv_pool_free(&pool);
    sd_model_free(m);
}
