/* Token-tree forwards (sd_forward_tree) and the rollback to the accepted path
 * (sd_kv_cache_move_rows): the cache after rollback and the path's logits equal a plain
 * forward of the path's tokens bit for bit; bad trees are refused naming the value. */
#include <criterion/criterion.h>
#include <string.h>

#include "model/forward.h"
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
    for (int d = 0; d < 5; d++) {
        toks[d] = rows[path[d]];
        src[d] = len + path[d];
        dst[d] = len + d;
    }
    cr_assert_eq(sd_forward(&c, toks, 5, 0), SD_OK, "%s", sd_last_error());
    for (int d = 0; d < 5; d++)
        cr_assert(memcmp(t.logits + (size_t)path[d] * V, c.logits + (size_t)d * V,
                         sizeof(float) * (size_t)V) == 0, "logits of path row %d differ", d);
    cr_assert_eq(sd_kv_cache_move_rows(&t.kv, m, src, dst, 5), SD_OK, "%s", sd_last_error());
    cr_assert_eq(sd_kv_cache_truncate(&t.kv, len + 5), SD_OK);
    size_t row = (size_t)t.kv.n_head_kv * t.kv.head_dim;
    for (int l = 0; l < m->hp.n_layer; l++) {
        size_t off = (size_t)l * (size_t)t.kv.n_ctx * row, bytes = (size_t)(len + 5) * row * sizeof(float);
        cr_assert(memcmp(t.kv.k + off, c.kv.k + off, bytes) == 0, "layer %d K differs", l);
        cr_assert(memcmp(t.kv.v + off, c.kv.v + off, bytes) == 0, "layer %d V differs", l);
    }
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
