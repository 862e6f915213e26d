/* Model loading: hyper-parameters and info for llama/qwen2, tied and untied heads, norms
 * converted from F16, and one clear error per kind of bad file. The bad files are
 * written tensor by tensor with the GGUF writer. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "model/forward.h"
#include "model/model.h"
#include "model/place.h"
#include "gguf/synthetic.h"
#include "kernels/cuda.h"
#include "tests/support/test_util.h"

/* ---- a tiny hand-written model with one thing changed ---------------------- */

enum { T_EMBD = 32, T_HEAD = 4, T_FF = 64, T_VOCAB = 40, T_CTX = 64 };

typedef struct tiny {
    const char *arch;      /* general.architecture; default "llama" */
    const char *drop;      /* tensor to leave out */
    const char *reshape;   /* tensor written with one row too many */
    int n_head_kv;         /* 0 = 2 */
    int vocab_size_key;    /* 0 = no {arch}.vocab_size */
    sd_dtype_t norm_type;  /* blk.0.attn_norm.weight; default F32 */
    int with_bias;         /* write attn_q/k/v.bias */
} tiny_t;

static void add_tensor(gguf_writer_t *w, const tiny_t *t, const char *name, sd_dtype_t type,
                       int64_t ne0, int64_t ne1, float value)
{
    if (t->drop && strcmp(t->drop, name) == 0) return;
    if (t->reshape && strcmp(t->reshape, name) == 0) ne1 += 1;
    size_t n = (size_t)(ne0 * ne1);
    float *data = malloc(n * sizeof(float));
    uint32_t s = 7;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        data[i] = value != 0 ? value : ((float)(s >> 9) / (float)(1u << 23) - 0.5f) * 0.2f;
    }
    int64_t ne[2] = {ne0, ne1};
    sd_status_t st = gguf_writer_add_tensor_f32(w, name, type, ne1 == 1 ? 1 : 2, ne, data);
    cr_assert_eq(st, SD_OK, "add %s: %s", name, sd_last_error());
    free(data);
}

static void write_tiny(const tiny_t *t, char *path, size_t cap)
{
    const char *arch = t->arch ? t->arch : "llama";
    int kv = t->n_head_kv ? t->n_head_kv : 2, hd = T_EMBD / T_HEAD;
    char key[128];
    gguf_writer_t *w;
    cr_assert_eq(gguf_writer_new(&w), SD_OK);
    gguf_writer_set_str(w, "general.architecture", arch);
    gguf_writer_set_str(w, "general.name", "tiny test model");
#define KEY(s) (snprintf(key, sizeof key, "%s." s, arch), key)
    gguf_writer_set_u32(w, KEY("block_count"), 1);
    gguf_writer_set_u32(w, KEY("embedding_length"), T_EMBD);
    gguf_writer_set_u32(w, KEY("feed_forward_length"), T_FF);
    gguf_writer_set_u32(w, KEY("attention.head_count"), T_HEAD);
    gguf_writer_set_u32(w, KEY("attention.head_count_kv"), (uint32_t)kv);
    gguf_writer_set_u32(w, KEY("context_length"), T_CTX);
    gguf_writer_set_f32(w, KEY("attention.layer_norm_rms_epsilon"), 1e-5f);
    if (t->vocab_size_key) gguf_writer_set_u32(w, KEY("vocab_size"), (uint32_t)t->vocab_size_key);
#undef KEY
    sd_dtype_t F32 = SD_DTYPE_F32, norm = t->norm_type ? t->norm_type : F32;
    add_tensor(w, t, "token_embd.weight", F32, T_EMBD, T_VOCAB, 0);
    add_tensor(w, t, "output_norm.weight", F32, T_EMBD, 1, 1.0f);
    add_tensor(w, t, "blk.0.attn_norm.weight", norm, T_EMBD, 1, 0.5f);
    add_tensor(w, t, "blk.0.attn_q.weight", F32, T_EMBD, T_EMBD, 0);
    add_tensor(w, t, "blk.0.attn_k.weight", F32, T_EMBD, kv * hd, 0);
    add_tensor(w, t, "blk.0.attn_v.weight", F32, T_EMBD, kv * hd, 0);
    add_tensor(w, t, "blk.0.attn_output.weight", F32, T_EMBD, T_EMBD, 0);
    if (t->with_bias) {
        add_tensor(w, t, "blk.0.attn_q.bias", F32, T_EMBD, 1, 0.25f);
        add_tensor(w, t, "blk.0.attn_k.bias", F32, kv * hd, 1, 0.25f);
        add_tensor(w, t, "blk.0.attn_v.bias", F32, kv * hd, 1, 0.25f);
    }
    add_tensor(w, t, "blk.0.ffn_norm.weight", F32, T_EMBD, 1, 1.0f);
    add_tensor(w, t, "blk.0.ffn_gate.weight", F32, T_EMBD, T_FF, 0);
    add_tensor(w, t, "blk.0.ffn_up.weight", F32, T_EMBD, T_FF, 0);
    add_tensor(w, t, "blk.0.ffn_down.weight", F32, T_FF, T_EMBD, 0);
    sd_test_tmp_path(path, cap, "tiny");
    cr_assert_eq(gguf_writer_write_file(w, path), SD_OK, "%s", sd_last_error());
    gguf_writer_free(w);
}

static sd_status_t load_with(const char *path, int n_ctx, const char *device, sd_model_t **m)
{
    sd_model_params_t p;
    sd_model_params_default(&p);
    p.path = path;
    p.n_threads = 1;
    p.n_ctx = n_ctx;
    p.device = device;
    return sd_model_load(&p, m);
}

static sd_status_t load_path(const char *path, int n_ctx, sd_model_t **m)
{
    return load_with(path, n_ctx, NULL, m);
}

static sd_status_t load_tiny(const tiny_t *t, sd_model_t **m)
{
    char path[512];
    write_tiny(t, path, sizeof path);
    sd_status_t st = load_path(path, 0, m);
    remove(path);
    return st;
}

static void expect_error(const tiny_t *t, sd_status_t want, const char *needle)
{
    sd_model_t *m = NULL;
    sd_status_t st = load_tiny(t, &m);
    cr_assert_eq(st, want, "got %s (%s), want %s", sd_status_string(st), sd_last_error(),
                 sd_status_string(want));
    cr_assert_null(m);
    cr_assert(strstr(sd_last_error(), needle) != NULL, "message '%s' does not name '%s'",
              sd_last_error(), needle);
}

/* ---- good models ------------------------------------------------------------- */

static sd_model_t *load_synth(const sd_synth_spec_t *s, int n_ctx)
{
    char path[512];
    sd_test_tmp_path(path, sizeof path, "model");
    cr_assert_eq(sd_synth_write_file(s, path), SD_OK, "%s", sd_last_error());
    sd_model_t *m = NULL;
    sd_status_t st = load_path(path, n_ctx, &m);
    cr_assert_eq(st, SD_OK, "%s: %s", sd_status_string(st), sd_last_error());
    remove(path);
    return m;
}

Test(engine_model, synthetic_llama_info, .timeout = 30)
{
    sd_synth_spec_t s;
    sd_synth_spec_default(&s);
    s.arch = "llama";
    s.n_layer = 3;
    s.n_embd = 64;
    s.n_head = 4;
    s.n_head_kv = 2;
    s.n_ff = 96;
    s.n_vocab = 320;
    s.n_ctx = 8192;
    s.tied_embeddings = 1;
    s.tokenizer = SD_SYNTH_TOKENIZER_GPT2;
    sd_model_t *m = load_synth(&s, 0);
    sd_model_info_t info;
    cr_assert_eq(sd_model_get_info(m, &info), SD_OK);
    cr_assert_str_eq(info.arch, "llama");
    cr_assert_eq(info.n_layer, 3);
    cr_assert_eq(info.n_embd, 64);
    cr_assert_eq(info.n_head, 4);
    cr_assert_eq(info.n_head_kv, 2);
    cr_assert_eq(info.n_ff, 96);
    cr_assert_eq(info.n_vocab, 320);
    cr_assert_eq(info.n_ctx, 4096, "n_ctx defaults to min(context_length, 4096)");
    cr_assert_eq(m->hp.head_dim, 16);
    cr_assert_eq(m->hp.rope.style, SD_ROPE_NORM);
    cr_assert_eq(m->hp.rope.rot_dim, 16);
    cr_assert_eq(m->output.data, m->tok_embd.data, "tied: output is the embedding");
    cr_assert_null(m->layers[0].bq);
    cr_assert_not_null(m->tokenizer);
    cr_assert_geq(info.eos, 0);
    sd_model_free(m);
}

Test(engine_model, synthetic_qwen2_untied_with_biases, .timeout = 30)
{
    sd_synth_spec_t s;
    sd_synth_spec_default(&s);
    s.arch = "qwen2";
    s.n_layer = 2;
    s.n_head_kv = 1;
    s.n_ctx = 128;
    s.tied_embeddings = 0;
    s.tokenizer = SD_SYNTH_TOKENIZER_NONE;
    sd_model_t *m = load_synth(&s, 100);
    sd_model_info_t info;
    cr_assert_eq(sd_model_get_info(m, &info), SD_OK);
    cr_assert_str_eq(info.arch, "qwen2");
    cr_assert_eq(info.n_ctx, 100, "explicit n_ctx wins");
    cr_assert_eq(info.n_head_kv, 1);
    cr_assert_eq(info.bos, -1);
    cr_assert_eq(info.eos, -1);
    cr_assert_eq(m->hp.rope.style, SD_ROPE_NEOX);
    cr_assert_neq(m->output.data, m->tok_embd.data);
    for (int il = 0; il < 2; il++) {
        cr_assert_not_null(m->layers[il].bq);
        cr_assert_not_null(m->layers[il].bk);
        cr_assert_not_null(m->layers[il].bv);
    }
    cr_assert_null(m->tokenizer);
    size_t n;
    int32_t tok[4];
    cr_assert_eq(sd_tokenize(m, "hi", 2, 0, tok, 4, &n), SD_ERR_NO_TOKENIZER);
    sd_model_free(m);
}

Test(engine_model, tiny_model_loads_with_name_and_defaults, .timeout = 30)
{
    tiny_t t = {0};
    sd_model_t *m = NULL;
    cr_assert_eq(load_tiny(&t, &m), SD_OK, "%s", sd_last_error());
    sd_model_info_t info;
    sd_model_get_info(m, &info);
    cr_assert_str_eq(info.name, "tiny test model");
    cr_assert_eq(info.n_ctx, T_CTX);
    cr_assert_float_eq(m->hp.rope.freq_base, 10000.0f, 0, "default rope base");
    cr_assert_eq(m->hp.n_vocab, T_VOCAB);
    cr_assert_eq(m->layers[0].attn_norm[3], 0.5f);
    sd_model_free(m);
}

/* Norms stored as F16 are converted; 0.5 is exact in F16, so logits are bit-identical. */
Test(engine_model, f16_norm_is_converted, .timeout = 30)
{
    tiny_t t32 = {0}, t16 = {.norm_type = SD_DTYPE_F16};
    sd_model_t *a = NULL, *b = NULL;
    cr_assert_eq(load_tiny(&t32, &a), SD_OK, "%s", sd_last_error());
    cr_assert_eq(load_tiny(&t16, &b), SD_OK, "%s", sd_last_error());
    cr_assert_not_null(b->f32_copies);
    cr_assert_eq(b->layers[0].attn_norm[0], 0.5f);
    sd_seq_t sa, sb;
    int32_t tok[3] = {3, 17, 39};
    cr_assert_eq(sd_seq_init(&sa, a, 8, 3), SD_OK);
    cr_assert_eq(sd_seq_init(&sb, b, 8, 3), SD_OK);
    cr_assert_eq(sd_forward(&sa, tok, 3, 0), SD_OK, "%s", sd_last_error());
    cr_assert_eq(sd_forward(&sb, tok, 3, 0), SD_OK, "%s", sd_last_error());
    cr_assert(memcmp(sa.logits, sb.logits, 3 * T_VOCAB * sizeof(float)) == 0);
    sd_seq_free(&sa);
    sd_seq_free(&sb);
    sd_model_free(a);
    sd_model_free(b);
}

/* ---- bad models ------------------------------------------------------------------ */

Test(engine_model, unsupported_arch_is_named, .timeout = 30)
{
    expect_error(&(tiny_t){.arch = "mamba"}, SD_ERR_UNSUPPORTED_ARCH, "mamba");
}

Test(engine_model, missing_tensor_is_named, .timeout = 30)
{
    expect_error(&(tiny_t){.drop = "blk.0.ffn_up.weight"}, SD_ERR_BAD_MODEL, "blk.0.ffn_up.weight");
    expect_error(&(tiny_t){.drop = "output_norm.weight"}, SD_ERR_BAD_MODEL, "output_norm.weight");
    expect_error(&(tiny_t){.drop = "token_embd.weight"}, SD_ERR_BAD_MODEL, "token_embd.weight");
}

Test(engine_model, wrong_shape_is_named, .timeout = 30)
{
    expect_error(&(tiny_t){.reshape = "blk.0.attn_k.weight"}, SD_ERR_BAD_MODEL,
                 "'blk.0.attn_k.weight' has shape [32, 17");
    expect_error(&(tiny_t){.reshape = "blk.0.ffn_down.weight"}, SD_ERR_BAD_MODEL,
                 "expected [64, 32]");
    expect_error(&(tiny_t){.reshape = "blk.0.ffn_norm.weight"}, SD_ERR_BAD_MODEL,
                 "blk.0.ffn_norm.weight");
}

Test(engine_model, head_count_must_divide, .timeout = 30)
{
    expect_error(&(tiny_t){.n_head_kv = 3}, SD_ERR_BAD_MODEL, "head_count_kv 3");
}

Test(engine_model, vocab_size_mismatch_names_both, .timeout = 30)
{
    expect_error(&(tiny_t){.vocab_size_key = 41}, SD_ERR_BAD_MODEL, "vocab_size = 41");
    cr_assert(strstr(sd_last_error(), "40 rows") != NULL, "%s", sd_last_error());
}

Test(engine_model, qwen2_needs_biases, .timeout = 30)
{
    expect_error(&(tiny_t){.arch = "qwen2"}, SD_ERR_BAD_MODEL, "blk.0.attn_q.bias");
    sd_model_t *m = NULL;
    cr_assert_eq(load_tiny(&(tiny_t){.arch = "qwen2", .with_bias = 1}, &m), SD_OK, "%s",
                 sd_last_error());
    cr_assert_eq(m->layers[0].bk[0], 0.25f);
    sd_model_free(m);
}

Test(engine_model, quantized_norm_is_unsupported, .timeout = 30)
{
    expect_error(&(tiny_t){.norm_type = SD_DTYPE_Q8_0}, SD_ERR_UNSUPPORTED_TYPE,
                 "blk.0.attn_norm.weight");
}

/* A device backend's type check (sd_model_place_weights runs it with sd_cuda_type_supported
 * before any upload): the first matrix of a type without a kernel is named with its type. */
static int refuse_q4_k(sd_dtype_t t) { return t != SD_DTYPE_Q4_K; }
static int refuse_q5_0(sd_dtype_t t) { return t != SD_DTYPE_Q5_0; }
static int accept_all(sd_dtype_t t) { return (void)t, 1; }

Test(engine_model, device_type_check_names_tensor_and_type, .timeout = 30)
{
    sd_synth_spec_t s;
    sd_synth_spec_default(&s);
    s.n_layer = 2, s.n_embd = 256, s.n_head = 4, s.n_head_kv = 2, s.n_ff = 256, s.n_vocab = 320;
    s.tokenizer = SD_SYNTH_TOKENIZER_GPT2;
    s.weight_type = SD_DTYPE_Q4_K, s.embd_type = SD_DTYPE_Q8_0, s.output_type = SD_DTYPE_Q5_0;
    s.tied_embeddings = 0;
    sd_model_t *m = load_synth(&s, 0);
    cr_assert_eq(sd_model_check_weight_types(m, accept_all), SD_OK, "%s", sd_last_error());
    cr_assert_eq(sd_model_check_weight_types(m, refuse_q4_k), SD_ERR_UNSUPPORTED_TYPE);
    cr_assert(strstr(sd_last_error(), "'blk.0.attn_q.weight' has type Q4_K") != NULL, "%s",
              sd_last_error());
    cr_assert_eq(sd_model_check_weight_types(m, refuse_q5_0), SD_ERR_UNSUPPORTED_TYPE);
    cr_assert(strstr(sd_last_error(), "'output.weight' has type Q5_0") != NULL, "%s", sd_last_error());
    sd_model_free(m);
}

Test(engine_model, nonexistent_path_is_io_error, .timeout = 30)
{
    sd_model_t *m = NULL;
    cr_assert_eq(load_path("/nonexistent/dir/model.gguf", 0, &m), SD_ERR_IO);
    cr_assert_null(m);
}

Test(engine_model, null_arguments, .timeout = 30)
{
    sd_model_params_t p;
    sd_model_params_default(&p);
    cr_assert_null(p.path);
    cr_assert_eq(p.n_threads, 0);
    cr_assert_eq(p.n_ctx, 0);
    sd_model_t *m = NULL;
    cr_assert_eq(sd_model_load(&p, &m), SD_ERR_INVALID_ARG);
    cr_assert(strstr(sd_last_error(), "path") != NULL, "%s", sd_last_error());
    cr_assert_eq(sd_model_load(NULL, &m), SD_ERR_INVALID_ARG);
    cr_assert(strstr(sd_last_error(), "params") != NULL, "%s", sd_last_error());
    sd_model_info_t info;
    cr_assert_eq(sd_model_get_info(NULL, &info), SD_ERR_INVALID_ARG);
    cr_assert(strstr(sd_last_error(), "model") != NULL, "%s", sd_last_error());
    size_t n;
    cr_assert_eq(sd_tokenize(NULL, "a", 1, 0, NULL, 0, &n), SD_ERR_INVALID_ARG);
    cr_assert_eq(sd_detokenize(NULL, NULL, 0, NULL, 0, &n), SD_ERR_INVALID_ARG);
    cr_assert_eq(sd_chat_apply(NULL, NULL, 0, 1, NULL, 0, &n), SD_ERR_INVALID_ARG);
    sd_model_free(NULL);
}

Test(engine_model, bad_runtime_params, .timeout = 30)
{
    char path[512];
    write_tiny(&(tiny_t){0}, path, sizeof path);
    sd_model_t *m = NULL;
    cr_assert_eq(load_path(path, -5, &m), SD_ERR_INVALID_ARG);
    cr_assert(strstr(sd_last_error(), "n_ctx = -5") != NULL, "%s", sd_last_error());
    remove(path);
}

/* ---- device selection -------------------------------------------------------------- */

static sd_status_t load_on(const char *path, const char *device, sd_model_t **m)
{
    return load_with(path, 0, device, m);
}

static void expect_device_error(const char *path, const char *device, const char *needle)
{
    sd_model_t *m = NULL;
    sd_status_t st = load_on(path, device, &m);
    cr_assert_eq(st, SD_ERR_INVALID_ARG, "device '%s': got %s (%s)", device,
                 sd_status_string(st), sd_last_error());
    cr_assert_null(m);
    cr_assert(strstr(sd_last_error(), needle) != NULL, "device '%s': message '%s' lacks '%s'",
              device, sd_last_error(), needle);
}

Test(engine_model, device_names_are_checked, .timeout = 30)
{
    char path[512];
    write_tiny(&(tiny_t){0}, path, sizeof path);
    expect_device_error(path, "gpu", "unknown device 'gpu'");
    expect_device_error(path, "cuda:", "unknown device 'cuda:'");
    expect_device_error(path, "cuda:-1", "unknown device 'cuda:-1'");
    expect_device_error(path, "cuda:1x", "unknown device 'cuda:1x'");
    sd_model_t *m = NULL;
    sd_model_info_t info;
    cr_assert_eq(load_on(path, "cpu", &m), SD_OK, "%s", sd_last_error());
    cr_assert_eq(sd_model_get_info(m, &info), SD_OK);
    cr_assert_str_eq(info.device, "cpu");
    sd_model_free(m);
    remove(path);
}

/* Asking for CUDA where it cannot run is an error naming why, never a CPU fallback; "auto"
 * (and the environment's SPECDEC_DEVICE) picks the CPU on a machine without a GPU. */
Test(engine_model, cuda_without_a_gpu_is_an_error_not_a_fallback, .timeout = 30)
{
    int count = 0;
    if (sd_cuda_device_count(&count) == SD_OK && count > 0) cr_skip_test("a GPU is present");
    char path[512];
    write_tiny(&(tiny_t){0}, path, sizeof path);
    const char *asks[] = {"cuda", "cuda:0", "cuda:3"};
    for (size_t i = 0; i < sizeof asks / sizeof asks[0]; i++) {
        sd_model_t *m = NULL;
        sd_status_t st = load_on(path, asks[i], &m);
        cr_assert(st == SD_ERR_NOT_BUILT || st == SD_ERR_INVALID_ARG, "'%s': %s (%s)", asks[i],
                  sd_status_string(st), sd_last_error());
        cr_assert_null(m);
        cr_assert(strstr(sd_last_error(), st == SD_ERR_NOT_BUILT ? "without CUDA" : "does not exist"),
                  "'%s': %s", asks[i], sd_last_error());
    }
    sd_model_t *m = NULL;
    sd_model_info_t info;
    cr_assert_eq(load_on(path, "auto", &m), SD_OK, "%s", sd_last_error());
    cr_assert_eq(sd_model_get_info(m, &info), SD_OK);
    cr_assert_str_eq(info.device, "cpu");
    sd_model_free(m);
    setenv("SPECDEC_DEVICE", "cuda", 1);
    cr_assert_neq(load_on(path, NULL, &m), SD_OK, "SPECDEC_DEVICE=cuda must be honoured");
    setenv("SPECDEC_DEVICE", "cpu", 1);
    cr_assert_eq(load_on(path, NULL, &m), SD_OK, "%s", sd_last_error());
    sd_model_free(m);
    remove(path);
}

/* ---- tokenizer wrappers ---------------------------------------------------------- */

Test(engine_model, tokenize_detokenize_round_trip, .timeout = 30)
{
    sd_synth_spec_t s;
    sd_synth_spec_default(&s);
    s.tokenizer = SD_SYNTH_TOKENIZER_GPT2;
    sd_model_t *m = load_synth(&s, 64);
    const char *text = "hello world, hello!";
    int32_t tok[64];
    size_t n = 0, need = 0, len = 0;
    cr_assert_eq(sd_tokenize(m, text, strlen(text), 0, tok, 64, &n), SD_OK, "%s", sd_last_error());
    cr_assert_gt(n, 0);
    cr_assert_eq(sd_tokenize(m, text, strlen(text), 0, tok, 0, &need), SD_ERR_BUFFER_TOO_SMALL);
    cr_assert_eq(need, n);
    char buf[64];
    cr_assert_eq(sd_detokenize(m, tok, n, buf, 4, &len), SD_ERR_BUFFER_TOO_SMALL);
    cr_assert_eq(len, strlen(text), "needed size reported");
    cr_assert_eq(sd_detokenize(m, tok, n, buf, sizeof buf, &len), SD_OK, "%s", sd_last_error());
    cr_assert_eq(len, strlen(text));
    cr_assert(memcmp(buf, text, len) == 0);
    int32_t bad = 100000;
    cr_assert_neq(sd_detokenize(m, &bad, 1, buf, sizeof buf, &len), SD_OK);
    sd_model_free(m);
}

Test(engine_model, chat_apply_renders_chatml, .timeout = 30)
{
    sd_synth_spec_t s;
    sd_synth_spec_default(&s);
    s.tokenizer = SD_SYNTH_TOKENIZER_GPT2;
    sd_model_t *m = load_synth(&s, 64);
    sd_chat_message_t msg[] = {{"user", "hi"}};
    char buf[256];
    size_t len = 0;
    cr_assert_eq(sd_chat_apply(m, msg, 1, 1, buf, sizeof buf, &len), SD_OK, "%s", sd_last_error());
    cr_assert(strstr(buf, "<|im_start|>user\nhi<|im_end|>") != NULL, "rendered: %s", buf);
    cr_assert_eq(len, strlen(buf));
    size_t need = 0;
    cr_assert_eq(sd_chat_apply(m, msg, 1, 1, buf, 4, &need), SD_ERR_BUFFER_TOO_SMALL);
    cr_assert_eq(need, len);
    sd_model_free(m);
}

/* ---- the real SmolLM2 file ---------------------------------------------------------- */

Test(engine_model, real_model_info, .timeout = 60)
{
    const char *path = sd_test_real_model();
    if (path == NULL) cr_skip_test("real model not found");
    sd_model_t *m = NULL;
    sd_status_t st = load_path(path, 0, &m);
    cr_assert_eq(st, SD_OK, "%s: %s", sd_status_string(st), sd_last_error());
    sd_model_info_t info;
    cr_assert_eq(sd_model_get_info(m, &info), SD_OK);
    cr_assert_str_eq(info.arch, "llama");
    cr_assert_eq(info.n_layer, 30);
    cr_assert_eq(info.n_embd, 576);
    cr_assert_eq(info.n_head, 9);
    cr_assert_eq(info.n_head_kv, 3);
    cr_assert_eq(info.n_vocab, 49152);
    cr_assert_eq(info.n_ff, 1536);
    cr_assert_eq(info.n_ctx, 4096);
    cr_assert_eq(m->output.data, m->tok_embd.data, "SmolLM2 ties its embeddings");
    cr_assert_eq(m->tok_embd.type, SD_DTYPE_Q8_0);
    cr_assert_eq(m->layers[0].wq.type, SD_DTYPE_Q4_1);
    cr_assert_float_eq(m->hp.rope.freq_base, 100000.0f, 0);
    cr_assert_eq(info.bos, 1);
    cr_assert_eq(info.eos, 2);
    sd_model_free(m);
}
