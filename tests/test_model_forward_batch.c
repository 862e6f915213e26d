/* The batched forward over several sequences (model/model.h sd_forward_batch): every
 * sequence's logits and KV cache are those of its own sd_forward, bit for bit, whatever the
 * other parts of the batch; bad batches are refused before any cache changes. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/forward.h"
#include "model/model.h"
#include "gguf/synthetic.h"
#include "tests/support/test_util.h"

typedef struct batch_case {
    char label[24], arch[8];
    int n_embd, n_head, n_head_kv, n_ff;
    sd_dtype_t weight_type, embd_type, output_type;
} batch_case_t;

static sd_model_t *load_case(const batch_case_t *c)
{
    sd_synth_spec_t s;
    sd_synth_spec_default(&s);
    s.arch = c->arch;
    s.n_embd = c->n_embd;
    s.n_head = c->n_head;
    s.n_head_kv = c->n_head_kv;
    s.n_ff = c->n_ff;
    s.n_vocab = 96;
    s.n_ctx = 64;
    s.weight_type = c->weight_type;
    s.embd_type = c->embd_type;
    s.output_type = c->output_type;
    s.tokenizer = SD_SYNTH_TOKENIZER_NONE;
    s.weight_scale = 0.1f;
    char path[512];
    sd_test_tmp_path(path, sizeof path, "fwdbatch");
    cr_assert_eq(sd_synth_write_file(&s, path), SD_OK, "%s", sd_last_error());
    sd_model_params_t p;
    sd_model_params_default(&p);
    p.path = path;
    p.n_threads = 2;
    sd_model_t *m = NULL;
    sd_status_t st = sd_model_load(&p, &m);
    cr_assert_eq(st, SD_OK, "load: %s", sd_last_error());
    remove(path);
    return m;
}

static void tokens_for(int32_t *t, int n, int n_vocab, uint32_t seed)
{
    for (int i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        t[i] = (int32_t)((seed >> 8) % (uint32_t)n_vocab);
    }
}

static void forward_ok(sd_seq_t *s, const int32_t *t, int n)
{
    sd_status_t st = sd_forward(s, t, n, 0);
    cr_assert_eq(st, SD_OK, "forward: %s", sd_last_error());
}

/* The cache rows [0, len) of a and b are the same bits, every layer. */
static void assert_cache_equal(const sd_seq_t *a, const sd_seq_t *b)
{
    cr_assert_eq(a->kv.len, b->kv.len);
    size_t bytes = (size_t)a->kv.n_head_kv * a->kv.head_dim * sizeof(float);
    for (int il = 0; il < a->kv.n_layer; il++)
        for (int p = 0; p < a->kv.len; p++)
            for (int v = 0; v < 2; v++)
                cr_assert(memcmp(sd_kv_cache_row(&a->kv, v, il, p), sd_kv_cache_row(&b->kv, v, il, p),
                                 bytes) == 0, "%s layer %d position %d", v ? "V" : "K", il, p);
}

#define F32 SD_DTYPE_F32
static batch_case_t cases[] = {
    {"llama GQA F32", "llama", 64, 4, 2, 128, F32, F32, F32},
    {"llama Q4_1", "llama", 64, 4, 2, 160, SD_DTYPE_Q4_1, SD_DTYPE_Q8_0, F32},
    {"qwen2 Q4_K", "qwen2", 256, 4, 2, 512, SD_DTYPE_Q4_K, SD_DTYPE_Q4_K, SD_DTYPE_Q6_K},
};

ParameterizedTestParameters(engine_forward_batch, parts_equal_their_own_forward)
{
    return cr_make_param_array(batch_case_t, cases, sizeof cases / sizeof cases[0]);
}

/* Three sequences at different lengths: two verify-like blocks with logits (5 and 1 rows)
 * and a prefill chunk without, batched over two steps; each equals its own sd_forward. */
ParameterizedTest(batch_case_t *c, engine_forward_batch, parts_equal_their_own_forward,
                  .timeout = 60)
{
    sd_model_t *m = load_case(c);
    int V = m->hp.n_vocab;
    int32_t t[3][24];
    for (int i = 0; i < 3; i++) tokens_for(t[i], 24, V, 100 + (uint32_t)i);
    sd_seq_t bs[3], alone[3];
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(sd_seq_init(&bs[i], m, 48, 8), SD_OK);
        cr_assert_eq(sd_seq_init(&alone[i], m, 48, 16), SD_OK);
    }
    /* different history lengths first: 3, 7 and 0 tokens */
    forward_ok(&bs[0], t[0], 3);
    forward_ok(&alone[0], t[0], 3);
    forward_ok(&bs[1], t[1], 7);
    forward_ok(&alone[1], t[1], 7);
    sd_batch_t b;
    cr_assert_eq(sd_batch_init(&b, m, 32, 4), SD_OK, "%s", sd_last_error());
    for (int step = 0; step < 2; step++) {
        int n[3] = {5, 1, 12};
        const int32_t *tok[3] = {t[0] + bs[0].kv.len, t[1] + bs[1].kv.len, t[2] + bs[2].kv.len};
        sd_batch_part_t parts[3] = {{&bs[0], tok[0], n[0], 1, NULL}, {&bs[1], tok[1], n[1], 1, NULL},
                                    {&bs[2], tok[2], n[2], 0, NULL}};
        sd_status_t st = sd_forward_batch(&b, parts, 3);
        cr_assert_eq(st, SD_OK, "step %d: %s", step, sd_last_error());
        for (int i = 0; i < 3; i++) {
            forward_ok(&alone[i], tok[i], n[i]);
            if (parts[i].want_logits)
                cr_assert(memcmp(bs[i].logits, alone[i].logits,
                                 (size_t)n[i] * V * sizeof(float)) == 0,
                          "step %d part %d logits differ from its own forward", step, i);
            assert_cache_equal(&bs[i], &alone[i]);
        }
    }
    sd_batch_free(&b);
    for (int i = 0; i < 3; i++) {
        sd_seq_free(&bs[i]);
        sd_seq_free(&alone[i]);
    }
    sd_model_free(m);
}

Test(engine_forward_batch, bad_batches_change_nothing, .timeout = 60)
{
    sd_model_t *m = load_case(&cases[0]);
    sd_seq_t a, b2;
    cr_assert_eq(sd_seq_init(&a, m, 8, 4), SD_OK);
    cr_assert_eq(sd_seq_init(&b2, m, 8, 4), SD_OK);
    sd_batch_t b;
    cr_assert_eq(sd_batch_init(&b, m, 6, 2), SD_OK);
    int32_t ok[6] = {1, 2, 3, 4, 5, 6}, bad[2] = {1, 96};
    struct { sd_batch_part_t parts[2]; int n; sd_status_t want; const char *what; } rows[] = {
        {{{&a, ok, 2, 1, NULL}, {&a, ok, 1, 1, NULL}}, 2, SD_ERR_INVALID_ARG, "share a sequence"},
        {{{&a, bad, 2, 1, NULL}}, 1, SD_ERR_INVALID_ARG, "outside the vocabulary"},
        {{{&a, ok, 4, 0, NULL}, {&b2, ok, 1, 1, NULL}}, 2, SD_ERR_INVALID_ARG, "after a part that wants none"},
        {{{&a, ok, 5, 1, NULL}}, 1, SD_ERR_INVALID_ARG, "max_tokens"},
        {{{&a, ok, 4, 1, NULL}, {&b2, ok, 3, 1, NULL}}, 2, SD_ERR_BATCH_TOO_LARGE, "max_rows"},
        {{{&a, ok, 1, 1, NULL}, {NULL, ok, 1, 1, NULL}}, 2, SD_ERR_INVALID_ARG, "no sequence"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        sd_status_t st = sd_forward_batch(&b, rows[i].parts, rows[i].n);
        cr_assert_eq(st, rows[i].want, "row %zu: %s: %s", i, sd_status_string(st), sd_last_error());
        cr_assert(strstr(sd_last_error(), rows[i].what) != NULL, "row %zu: '%s' lacks '%s'", i,
                  sd_last_error(), rows[i].what);
        cr_assert_eq(a.kv.len, 0);
        cr_assert_eq(b2.kv.len, 0);
    }
    /* context full: 6 + 4 positions in a context of 8 */
    sd_batch_part_t fill = {&a, ok, 6, 0, NULL};
    cr_assert_eq(sd_forward_batch(&b, &fill, 1), SD_OK);
    sd_batch_part_t over = {&a, ok, 4, 1, NULL};
    cr_assert_eq(sd_forward_batch(&b, &over, 1), SD_ERR_CONTEXT_FULL);
    cr_assert_eq(a.kv.len, 6);
    sd_batch_free(&b);
    sd_seq_free(&a);
    sd_seq_free(&b2);
    sd_model_free(m);
}
