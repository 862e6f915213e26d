/* Synthetic random-weight models: determinism, llama.cpp names and shapes, tokenizers,
 * quantized types and spec validation. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "gguf/gguf.h"
#include "gguf/synthetic.h"
#include "support/test_util.h"

typedef struct synth {
    void *buf;
    size_t size;
    gguf_file_t *f;
} synth_t;

static synth_t make(const sd_synth_spec_t *spec)
{
    synth_t s = {0};
    cr_assert_eq(sd_synth_write_buffer(spec, &s.buf, &s.size), SD_OK, "%s", sd_last_error());
    cr_assert_eq(gguf_open_buffer(s.buf, s.size, &s.f), SD_OK, "%s", sd_last_error());
    return s;
}

static void drop(synth_t *s)
{
    gguf_close(s->f);
    free(s->buf);
}

static uint32_t u32_of(const gguf_file_t *f, const char *key)
{
    uint32_t v = 0;
    cr_assert_eq(gguf_get_u32(f, key, &v), SD_OK, "%s", sd_last_error());
    return v;
}

static void expect_tensor(const gguf_file_t *f, const char *name, sd_dtype_t type, int64_t ne0,
                          int64_t ne1)
{
    const gguf_tensor_t *t = gguf_find_tensor(f, name);
    cr_assert_not_null(t, "tensor %s missing", name);
    cr_assert_eq(t->type, type, "%s type %d, expected %d", name, t->type, type);
    cr_assert_eq(t->ne[0], ne0, "%s ne0 %lld", name, (long long)t->ne[0]);
    cr_assert_eq(t->ne[1], ne1, "%s ne1 %lld", name, (long long)t->ne[1]);
    cr_assert_eq(t->n_dims, ne1 > 1 ? 2u : 1u, "%s n_dims", name);
}

/* Every hyperparameter key and tensor llama.cpp reads for this spec. */
static void expect_model(const gguf_file_t *f, const sd_synth_spec_t *s)
{
    char k[128];
    int hd = s->head_dim ? s->head_dim : s->n_embd / s->n_head;
    gguf_str_t str;
    cr_assert_eq(gguf_get_str(f, "general.architecture", &str), SD_OK);
    cr_assert(gguf_str_eq(str, s->arch));
    cr_assert_eq(gguf_get_str(f, "general.name", &str), SD_OK);
    cr_assert(gguf_str_eq(str, "specdec-synthetic"));
#define KEY(suffix) (snprintf(k, sizeof k, "%s.%s", s->arch, suffix), k)
    cr_assert_eq(u32_of(f, KEY("block_count")), (uint32_t)s->n_layer);
    cr_assert_eq(u32_of(f, KEY("context_length")), (uint32_t)s->n_ctx);
    cr_assert_eq(u32_of(f, KEY("embedding_length")), (uint32_t)s->n_embd);
    cr_assert_eq(u32_of(f, KEY("feed_forward_length")), (uint32_t)s->n_ff);
    cr_assert_eq(u32_of(f, KEY("attention.head_count")), (uint32_t)s->n_head);
    cr_assert_eq(u32_of(f, KEY("attention.head_count_kv")), (uint32_t)s->n_head_kv);
    cr_assert_eq(u32_of(f, KEY("rope.dimension_count")), (uint32_t)hd);
    cr_assert_eq(u32_of(f, KEY("vocab_size")), (uint32_t)s->n_vocab);
    float v;
    cr_assert_eq(gguf_get_f32(f, KEY("rope.freq_base"), &v), SD_OK);
    cr_assert_eq(v, s->rope_base);
    cr_assert_eq(gguf_get_f32(f, KEY("attention.layer_norm_rms_epsilon"), &v), SD_OK);
    cr_assert_eq(v, s->norm_eps);
    if (hd * s->n_head != s->n_embd) {
        cr_assert_eq(u32_of(f, KEY("attention.key_length")), (uint32_t)hd);
        cr_assert_eq(u32_of(f, KEY("attention.value_length")), (uint32_t)hd);
    } else {
        cr_assert_null(gguf_find_kv(f, KEY("attention.key_length")));
    }
#undef KEY
    int qwen = strcmp(s->arch, "qwen2") == 0;
    int64_t e = s->n_embd, q = (int64_t)s->n_head * hd, kv = (int64_t)s->n_head_kv * hd;
    expect_tensor(f, "token_embd.weight", s->embd_type, e, s->n_vocab);
    expect_tensor(f, "output_norm.weight", SD_DTYPE_F32, e, 1);
    if (s->tied_embeddings)
        cr_assert_null(gguf_find_tensor(f, "output.weight"));
    else
        expect_tensor(f, "output.weight", s->output_type, e, s->n_vocab);
    for (int l = 0; l < s->n_layer; l++) {
#define BLK(suffix) (snprintf(k, sizeof k, "blk.%d.%s", l, suffix), k)
        expect_tensor(f, BLK("attn_norm.weight"), SD_DTYPE_F32, e, 1);
        expect_tensor(f, BLK("attn_q.weight"), s->weight_type, e, q);
        expect_tensor(f, BLK("attn_k.weight"), s->weight_type, e, kv);
        expect_tensor(f, BLK("attn_v.weight"), s->weight_type, e, kv);
        expect_tensor(f, BLK("attn_output.weight"), s->weight_type, q, e);
        expect_tensor(f, BLK("ffn_norm.weight"), SD_DTYPE_F32, e, 1);
        expect_tensor(f, BLK("ffn_gate.weight"), s->weight_type, e, s->n_ff);
        expect_tensor(f, BLK("ffn_up.weight"), s->weight_type, e, s->n_ff);
        expect_tensor(f, BLK("ffn_down.weight"), s->weight_type, s->n_ff, e);
        if (qwen) {
            expect_tensor(f, BLK("attn_q.bias"), SD_DTYPE_F32, q, 1);
            expect_tensor(f, BLK("attn_k.bias"), SD_DTYPE_F32, kv, 1);
            expect_tensor(f, BLK("attn_v.bias"), SD_DTYPE_F32, kv, 1);
        } else {
            cr_assert_null(gguf_find_tensor(f, BLK("attn_q.bias")));
        }
#undef BLK
    }
    uint64_t n = 2 + !s->tied_embeddings + (uint64_t)s->n_layer * (9 + 3 * qwen);
    cr_assert_eq(f->n_tensors, n);
}

Test(gguf_synth, same_seed_same_bytes_other_seed_other_bytes, .timeout = 60)
{
    sd_synth_spec_t spec;
    sd_synth_spec_default(&spec);
    void *a, *b, *c;
    size_t na, nb, nc;
    cr_assert_eq(sd_synth_write_buffer(&spec, &a, &na), SD_OK, "%s", sd_last_error());
    cr_assert_eq(sd_synth_write_buffer(&spec, &b, &nb), SD_OK);
    cr_assert_eq(na, nb);
    cr_assert(memcmp(a, b, na) == 0);
    spec.seed = 2;
    cr_assert_eq(sd_synth_write_buffer(&spec, &c, &nc), SD_OK);
    cr_assert_eq(na, nc, "only the weights change with the seed");
    cr_assert(memcmp(a, c, na) != 0);
    /* the file written to disk holds the same bytes */
    char path[512];
    sd_test_tmp_path(path, sizeof path, "synth");
    spec.seed = 1;
    cr_assert_eq(sd_synth_write_file(&spec, path), SD_OK, "%s", sd_last_error());
    FILE *fp = fopen(path, "rb");
    cr_assert_not_null(fp);
    void *d = malloc(na + 1);
    cr_assert_eq(fread(d, 1, na + 1, fp), na);
    fclose(fp);
    cr_assert(memcmp(a, d, na) == 0);
    remove(path);
    free(a);
    free(b);
    free(c);
    free(d);
}

Test(gguf_synth, default_spec_is_small_llama)
{
    sd_synth_spec_t spec;
    sd_synth_spec_default(&spec);
    cr_assert_str_eq(spec.arch, "llama");
    cr_assert(spec.n_layer == 2 && spec.n_embd == 64 && spec.n_head == 4 && spec.n_head_kv == 2);
    cr_assert(spec.n_vocab == 320 && spec.weight_type == SD_DTYPE_F32);
    cr_assert_eq(spec.tokenizer, SD_SYNTH_TOKENIZER_GPT2);
    synth_t s = make(&spec);
    expect_model(s.f, &spec);
    drop(&s);
}

/* Parameters are copied into the test process: no pointers in them. */
typedef struct shape_case {
    char arch[8];
    int tied;
    sd_synth_tokenizer_t tok;
    int head_dim;
} shape_case_t;

ParameterizedTestParameters(gguf_synth, shapes)
{
    static shape_case_t cases[] = {
        {"llama", 0, SD_SYNTH_TOKENIZER_GPT2, 0},  {"llama", 1, SD_SYNTH_TOKENIZER_LLAMA, 0},
        {"llama", 1, SD_SYNTH_TOKENIZER_NONE, 32}, {"qwen2", 0, SD_SYNTH_TOKENIZER_GPT2, 0},
        {"qwen2", 1, SD_SYNTH_TOKENIZER_GPT2, 8},  {"qwen2", 0, SD_SYNTH_TOKENIZER_LLAMA, 0},
    };
    return cr_make_param_array(shape_case_t, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(shape_case_t *c, gguf_synth, shapes, .timeout = 60)
{
    sd_synth_spec_t spec;
    sd_synth_spec_default(&spec);
    spec.arch = c->arch;
    spec.tied_embeddings = c->tied;
    spec.tokenizer = c->tok;
    spec.head_dim = c->head_dim;
    spec.n_layer = 3;
    spec.n_head = 8;
    spec.n_head_kv = 2;
    synth_t s = make(&spec);
    expect_model(s.f, &spec);
    if (c->tok == SD_SYNTH_TOKENIZER_NONE)
        for (uint64_t i = 0; i < s.f->n_kv; i++)
            cr_assert(s.f->kv[i].key.len < 10 || memcmp(s.f->kv[i].key.data, "tokenizer", 9) != 0,
                      "tokenizer key '%.*s' without a tokenizer", (int)s.f->kv[i].key.len,
                      s.f->kv[i].key.data);
    drop(&s);
}

/* Mean and standard deviation of a tensor's dequantized values. */
static void tensor_stats(const gguf_tensor_t *t, double *mean, double *std)
{
    int64_t rows = t->ne[1] * t->ne[2] * t->ne[3];
    size_t row_bytes;
    cr_assert_eq(sd_dtype_row_bytes(t->type, t->ne[0], &row_bytes), SD_OK);
    float *row = malloc((size_t)t->ne[0] * sizeof *row);
    double s = 0, s2 = 0;
    for (int64_t r = 0; r < rows; r++) {
        sd_dequantize_row(t->type, (const uint8_t *)t->data + r * row_bytes, row, t->ne[0]);
        for (int64_t i = 0; i < t->ne[0]; i++) {
            s += row[i];
            s2 += (double)row[i] * row[i];
        }
    }
    double n = (double)rows * (double)t->ne[0];
    *mean = s / n;
    *std = sqrt(s2 / n - *mean * *mean);
    free(row);
}

Test(gguf_synth, quantized_weights_have_the_requested_scale, .timeout = 60)
{
    sd_synth_spec_t spec;
    sd_synth_spec_default(&spec);
    spec.n_embd = 256;
    spec.n_ff = 512;
    spec.weight_type = SD_DTYPE_Q4_K;
    spec.embd_type = SD_DTYPE_Q8_0;
    spec.output_type = SD_DTYPE_Q6_K;
    spec.weight_scale = 0.05f;
    synth_t s = make(&spec);
    expect_model(s.f, &spec);
    double mean, std;
    tensor_stats(gguf_find_tensor(s.f, "blk.1.ffn_up.weight"), &mean, &std);
    cr_assert(fabs(mean) < 0.005 && fabs(std - 0.05) < 0.005, "Q4_K mean %g std %g", mean, std);
    tensor_stats(gguf_find_tensor(s.f, "token_embd.weight"), &mean, &std);
    cr_assert(fabs(mean) < 0.005 && fabs(std - 0.05) < 0.003, "Q8_0 mean %g std %g", mean, std);
    tensor_stats(gguf_find_tensor(s.f, "output.weight"), &mean, &std);
    cr_assert(fabs(mean) < 0.005 && fabs(std - 0.05) < 0.003, "Q6_K mean %g std %g", mean, std);
    tensor_stats(gguf_find_tensor(s.f, "blk.0.attn_norm.weight"), &mean, &std);
    cr_assert(fabs(mean - 1.0) < 0.02 && std > 0.01 && std < 0.1, "norm mean %g std %g", mean, std);
    drop(&s);
}

static int find_token(const gguf_kv_t *tokens, const char *s)
{
    for (uint64_t i = 0; i < tokens->arr_n; i++)
        if (gguf_str_eq(tokens->arr_strs[i], s)) return (int)i;
    return -1;
}

static void expect_unique(const gguf_kv_t *tokens)
{
    for (uint64_t i = 0; i < tokens->arr_n; i++)
        for (uint64_t j = i + 1; j < tokens->arr_n; j++)
            cr_assert(tokens->arr_strs[i].len != tokens->arr_strs[j].len ||
                          memcmp(tokens->arr_strs[i].data, tokens->arr_strs[j].data,
                                 tokens->arr_strs[i].len) != 0,
                      "tokens %llu and %llu are both '%.*s'", (unsigned long long)i,
                      (unsigned long long)j, (int)tokens->arr_strs[i].len,
                      tokens->arr_strs[i].data);
}

static void check_gpt2_vocab(int n_vocab, int check_unique)
{
    sd_synth_spec_t spec;
    sd_synth_spec_default(&spec);
    spec.n_vocab = n_vocab;
    spec.n_embd = 32;
    spec.n_ff = 32;
    spec.tied_embeddings = 1;
    synth_t s = make(&spec);
    const gguf_kv_t *tokens, *types, *merges;
    cr_assert_eq(gguf_get_arr(s.f, "tokenizer.ggml.tokens", GGUF_TYPE_STRING, &tokens), SD_OK);
    cr_assert_eq(gguf_get_arr(s.f, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, &types), SD_OK);
    cr_assert_eq(gguf_get_arr(s.f, "tokenizer.ggml.merges", GGUF_TYPE_STRING, &merges), SD_OK);
    cr_assert_eq(tokens->arr_n, (uint64_t)n_vocab);
    cr_assert_eq(types->arr_n, (uint64_t)n_vocab);
    gguf_str_t str;
    cr_assert_eq(gguf_get_str(s.f, "tokenizer.ggml.model", &str), SD_OK);
    cr_assert(gguf_str_eq(str, "gpt2"));
    cr_assert_eq(gguf_get_str(s.f, "tokenizer.ggml.pre", &str), SD_OK);
    cr_assert(gguf_str_eq(str, "smollm"));
    cr_assert_eq(gguf_get_str(s.f, "tokenizer.chat_template", &str), SD_OK);
    char tmpl[1024];
    snprintf(tmpl, sizeof tmpl, "%.*s", (int)str.len, str.data);
    cr_assert(strstr(tmpl, "'<|im_start|>assistant\n'") != NULL, "%s", tmpl);
    /* bytes_to_unicode order: '!' first, '~' at 93, byte 0 -> U+0100 at 188, ' ' -> U+0120 */
    cr_assert(gguf_str_eq(tokens->arr_strs[0], "!"));
    cr_assert(gguf_str_eq(tokens->arr_strs[93], "~"));
    cr_assert(gguf_str_eq(tokens->arr_strs[188], "\xC4\x80"));
    cr_assert(gguf_str_eq(tokens->arr_strs[188 + 32], "\xC4\xA0"));
    cr_assert(gguf_str_eq(tokens->arr_strs[n_vocab - 3], "<|endoftext|>"));
    cr_assert(gguf_str_eq(tokens->arr_strs[n_vocab - 2], "<|im_start|>"));
    cr_assert(gguf_str_eq(tokens->arr_strs[n_vocab - 1], "<|im_end|>"));
    for (int i = 0; i < n_vocab; i++)
        cr_assert_eq(gguf_arr_int(types, (uint64_t)i), i >= n_vocab - 3 ? 3 : 1, "type of %d", i);
    cr_assert_eq(u32_of(s.f, "tokenizer.ggml.eos_token_id"), (uint32_t)(n_vocab - 3));
    cr_assert_eq(u32_of(s.f, "tokenizer.ggml.eot_token_id"), (uint32_t)(n_vocab - 1));
    cr_assert(find_token(tokens, "\xC4\xA0the") > 0, "'Ġthe' is learnt from the corpus");
    /* every merge "a b" joins two tokens into a token, and every non-byte token has one */
    cr_assert_geq(merges->arr_n, (uint64_t)(n_vocab - 259));
    for (uint64_t i = 0; i < merges->arr_n; i++) {
        gguf_str_t m = merges->arr_strs[i];
        const char *sp = memchr(m.data, ' ', m.len);
        cr_assert_not_null(sp, "merge %llu has no space", (unsigned long long)i);
        char a[256], b[256], ab[512];
        snprintf(a, sizeof a, "%.*s", (int)(sp - m.data), m.data);
        snprintf(b, sizeof b, "%.*s", (int)(m.data + m.len - sp - 1), sp + 1);
        snprintf(ab, sizeof ab, "%s%s", a, b);
        if (i < 400 || i % 97 == 0) {
            cr_assert(find_token(tokens, a) >= 0 && find_token(tokens, b) >= 0 &&
                          find_token(tokens, ab) >= 0,
                      "merge '%s %s'", a, b);
        }
    }
    if (check_unique) expect_unique(tokens);
    drop(&s);
}

Test(gguf_synth, gpt2_tokenizer_small_vocab, .timeout = 60) { check_gpt2_vocab(320, 1); }
Test(gguf_synth, gpt2_tokenizer_smollm_sized_vocab, .timeout = 120) { check_gpt2_vocab(49152, 0); }

Test(gguf_synth, llama_tokenizer, .timeout = 60)
{
    sd_synth_spec_t spec;
    sd_synth_spec_default(&spec);
    spec.tokenizer = SD_SYNTH_TOKENIZER_LLAMA;
    spec.n_vocab = 1000;
    synth_t s = make(&spec);
    const gguf_kv_t *tokens, *types, *scores;
    cr_assert_eq(gguf_get_arr(s.f, "tokenizer.ggml.tokens", GGUF_TYPE_STRING, &tokens), SD_OK);
    cr_assert_eq(gguf_get_arr(s.f, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, &types), SD_OK);
    cr_assert_eq(gguf_get_arr(s.f, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, &scores), SD_OK);
    cr_assert_eq(tokens->arr_n, 1000);
    cr_assert_eq(scores->arr_n, 1000);
    cr_assert_null(gguf_find_kv(s.f, "tokenizer.ggml.merges"));
    gguf_str_t str;
    cr_assert_eq(gguf_get_str(s.f, "tokenizer.ggml.model", &str), SD_OK);
    cr_assert(gguf_str_eq(str, "llama"));
    cr_assert(gguf_str_eq(tokens->arr_strs[0], "<unk>"));
    cr_assert(gguf_str_eq(tokens->arr_strs[1], "<s>"));
    cr_assert(gguf_str_eq(tokens->arr_strs[2], "</s>"));
    cr_assert(gguf_str_eq(tokens->arr_strs[3], "<0x00>"));
    cr_assert(gguf_str_eq(tokens->arr_strs[3 + 0x41], "<0x41>"));
    cr_assert(gguf_str_eq(tokens->arr_strs[258], "<0xFF>"));
    cr_assert_eq(gguf_arr_int(types, 0), 2);
    cr_assert_eq(gguf_arr_int(types, 1), 3);
    cr_assert_eq(gguf_arr_int(types, 2), 3);
    for (int i = 3; i < 259; i++) cr_assert_eq(gguf_arr_int(types, (uint64_t)i), 6);
    for (int i = 259; i < 1000; i++) {
        cr_assert_eq(gguf_arr_int(types, (uint64_t)i), 1);
        if (i > 259)
            cr_assert_lt(gguf_arr_float(scores, (uint64_t)i),
                         gguf_arr_float(scores, (uint64_t)i - 1));
    }
    cr_assert(find_token(tokens, "\xE2\x96\x81the") > 0, "'▁the' is a piece");
    cr_assert(find_token(tokens, "\xE2\x96\x81") > 0, "'▁' is a piece");
    expect_unique(tokens);
    cr_assert_eq(u32_of(s.f, "tokenizer.ggml.bos_token_id"), 1);
    cr_assert_eq(u32_of(s.f, "tokenizer.ggml.eos_token_id"), 2);
    cr_assert_eq(u32_of(s.f, "tokenizer.ggml.unknown_token_id"), 0);
    bool add_bos;
    cr_assert_eq(gguf_get_bool(s.f, "tokenizer.ggml.add_bos_token", &add_bos), SD_OK);
    cr_assert(add_bos);
    drop(&s);
}

Test(gguf_synth, no_tokenizer_allows_a_tiny_vocab)
{
    sd_synth_spec_t spec;
    sd_synth_spec_default(&spec);
    spec.tokenizer = SD_SYNTH_TOKENIZER_NONE;
    spec.n_vocab = 16;
    synth_t s = make(&spec);
    expect_model(s.f, &spec);
    cr_assert_null(gguf_find_kv(s.f, "tokenizer.ggml.tokens"));
    cr_assert_null(gguf_find_kv(s.f, "tokenizer.ggml.model"));
    drop(&s);
}

typedef struct bad_case {
    char field[48]; /* substring the error must contain */
    int which;      /* mutation applied to the default spec, see mutate() */
} bad_case_t;

static void mutate(sd_synth_spec_t *s, int which)
{
    switch (which) {
    case 0: s->arch = "gptj"; break;
    case 1: s->n_layer = 0; break;
    case 2: s->n_head_kv = 3; break;
    case 3:
        s->n_head = 5;
        s->n_head_kv = 5;
        break;
    case 4: s->head_dim = 7; break;
    case 5: s->n_vocab = 299; break;
    case 6:
        s->n_vocab = 100;
        s->tokenizer = SD_SYNTH_TOKENIZER_LLAMA;
        break;
    case 7: s->weight_type = SD_DTYPE_Q4_K; break;
    case 8:
        s->n_embd = 48;
        s->embd_type = SD_DTYPE_Q8_0;
        break;
    case 9: s->output_type = (sd_dtype_t)16; break; /* IQ2_XXS */
    case 10: s->norm_eps = 0; break;
    case 11: s->tokenizer = (sd_synth_tokenizer_t)7; break;
    case 12: s->n_ctx = -1; break;
    default: cr_assert_fail("no mutation %d", which);
    }
}

ParameterizedTestParameters(gguf_synth, spec_validation)
{
    static bad_case_t cases[] = {
        {"arch 'gptj'", 0},    {"n_layer = 0", 1},
        {"n_head_kv 3", 2},    {"n_embd 64 is not a multiple of n_head 5", 3},
        {"head_dim 7", 4},     {"n_vocab 299", 5},
        {"n_vocab 100", 6},    {"weight_type Q4_K", 7},
        {"embd_type Q8_0", 8}, {"output_type 16", 9},
        {"norm_eps 0", 10},    {"tokenizer 7", 11},
        {"n_ctx = -1", 12},
    };
    return cr_make_param_array(bad_case_t, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(bad_case_t *c, gguf_synth, spec_validation)
{
    sd_synth_spec_t spec;
    sd_synth_spec_default(&spec);
    mutate(&spec, c->which);
    void *buf = NULL;
    size_t size = 0;
    cr_assert_eq(sd_synth_write_buffer(&spec, &buf, &size), SD_ERR_INVALID_ARG);
    cr_assert(strstr(sd_last_error(), c->field), "'%s' not in: %s", c->field, sd_last_error());
    cr_assert_null(buf);
}
