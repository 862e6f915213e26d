/* The speculative step loop (sd_generate_speculative): greedy output equals target-only
 * output token for token for every drafter, k and shape; sampling is reproducible and
 * lossless; the KV caches hold exactly the committed prefix after every step; stops inside
 * an accepted block; statistics; bad input. Synthetic models, plus the real SmolLM2 file
 * when present. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "draft/layerskip.h"
#include "draft/model_drafter.h"
#include "draft/seq_drafter.h"
#include "model/forward.h"
#include "model/model.h"
#include "engine/speculative.h"
#include "gguf/synthetic.h"
#include "specdec/specdec.h"
#include "support/chi2.h"
#include "support/test_util.h"
#include "support/tiny_models.h"
#include "verify/sampler.h"

/* ---- helpers --------------------------------------------------------------------- */

static sd_model_t *load_path(const char *path, int n_threads, int n_ctx)
{
    sd_model_params_t p;
    sd_model_params_default(&p);
    p.path = path;
    p.n_threads = n_threads;
    p.n_ctx = n_ctx;
    sd_model_t *m = NULL;
    sd_status_t st = sd_model_load(&p, &m);
    cr_assert_eq(st, SD_OK, "load %s: %s", path, sd_last_error());
    return m;
}

static sd_model_t *synth_load(const sd_synth_spec_t *spec, int n_threads, int n_ctx)
{
    char path[512];
    sd_test_tmp_path(path, sizeof path, "spec");
    cr_assert_eq(sd_synth_write_file(spec, path), SD_OK, "%s", sd_last_error());
    sd_model_t *m = load_path(path, n_threads, n_ctx);
    remove(path);
    return m;
}

static sd_gen_config_t config(float temperature, int max_tokens, uint64_t seed)
{
    sd_gen_config_t c;
    sd_gen_config_default(&c);
    c.temperature = temperature;
    c.top_k = 0;
    c.top_p = 1.0f;
    c.min_p = 0.0f;
    c.max_tokens = max_tokens;
    c.seed = seed;
    c.ignore_eos = 1;
    return c;
}

static sd_spec_config_t spec_of(sd_drafter_kind_t kind, int k, int adaptive, sd_model_t *draft)
{
    sd_spec_config_t s;
    sd_spec_config_default(&s);
    s.drafter = kind;
    s.k = k;
    s.adaptive = adaptive;
    s.draft_model = draft;
    s.layerskip_layers = 1;
    return s;
}

static sd_gen_result_t gen_spec(sd_model_t *m, const int32_t *prompt, size_t n,
                                const sd_gen_config_t *c, const sd_spec_config_t *s)
{
    sd_gen_result_t r;
    sd_status_t st = sd_generate_speculative(m, prompt, n, c, s, NULL, NULL, &r);
    cr_assert_eq(st, SD_OK, "generate: %s: %s", sd_status_string(st), sd_last_error());
    return r;
}

static void assert_same(const sd_gen_result_t *a, const sd_gen_result_t *b, const char *what)
{
    cr_assert_eq(a->n_tokens, b->n_tokens, "%s: %zu tokens vs %zu", what, a->n_tokens,
                 b->n_tokens);
    for (size_t i = 0; i < a->n_tokens; i++)
        cr_assert_eq(a->tokens[i], b->tokens[i], "%s: token %zu: %d vs %d", what, i,
                     a->tokens[i], b->tokens[i]);
    cr_assert_eq(a->stop_reason, b->stop_reason, "%s: stop reason", what);
    cr_assert_eq(a->text_len, b->text_len, "%s: text length", what);
    cr_assert(memcmp(a->text, b->text, a->text_len) == 0, "%s: text", what);
}

/* Statistics invariants of any generation. */
static void assert_stats(const sd_gen_result_t *r, int k_max)
{
    const sd_gen_stats_t *s = &r->stats;
    cr_assert_eq(s->tokens_generated, r->n_tokens);
    cr_assert_leq(s->accepted, s->drafted);
    cr_assert_eq(s->target_forwards, s->steps);
    uint64_t sum = 0, acc = 0;
    for (int i = 0; i <= SD_SPEC_MAX_K; i++) {
        sum += s->accepted_hist[i];
        acc += (uint64_t)i * s->accepted_hist[i];
        if (i > k_max)
            cr_assert_eq(s->accepted_hist[i], 0, "hist[%d] above k %d", i, k_max);
    }
    cr_assert_eq(sum, s->steps);
    cr_assert_eq(acc, s->accepted);
    cr_assert_leq(s->drafted, (uint64_t)k_max * s->steps);
    /* each step emits its accepted drafts + 1, except what a stop cut off */
    cr_assert_leq(r->n_tokens, s->accepted + s->steps);
    if (r->stop_reason == SD_STOP_MAX_TOKENS)
        cr_assert_eq(r->n_tokens, s->accepted + s->steps);
    double rate = s->drafted ? (double)s->accepted / (double)s->drafted : 0.0;
    cr_assert_float_eq(s->acceptance_rate, rate, 1e-12);
    cr_assert_float_eq(s->mean_accepted_len, (double)(s->accepted + s->steps) / (double)s->steps,
                       1e-12);
    cr_assert(s->draft_seconds >= 0 && s->verify_seconds > 0 && s->other_seconds >= 0);
    cr_assert(s->check_seconds > 0 && s->check_seconds <= s->verify_seconds);
}

/* ---- greedy exactness on synthetic shapes ---------------------------------------- */

/* No pointers: Criterion hands parameters to a re-executed worker, where addresses differ. */
typedef enum shape_name { MHA, GQA, QWEN2, Q4_1, Q8_0, Q5_0, Q4_K } shape_name_t;
static const char *const k_shape_names[] = {"mha", "gqa", "qwen2", "q4_1", "q8_0", "q5_0", "q4_k"};

typedef struct shape {
    shape_name_t name;
    int qwen2;
    int n_head, n_head_kv;
    sd_dtype_t weight_type;
    sd_drafter_kind_t drafter;
} shape_t;

#define SHAPES(d)                                                                          \
    {MHA, 0, 4, 4, SD_DTYPE_F32, d}, {GQA, 0, 4, 2, SD_DTYPE_F32, d},                        \
        {QWEN2, 1, 4, 2, SD_DTYPE_F32, d}, {Q4_1, 0, 4, 2, SD_DTYPE_Q4_1, d},                \
        {Q8_0, 0, 4, 2, SD_DTYPE_Q8_0, d}, {Q5_0, 0, 4, 2, SD_DTYPE_Q5_0, d},                \
        {Q4_K, 1, 4, 2, SD_DTYPE_Q4_K, d}

ParameterizedTestParameters(engine_speculative, greedy_equals_target_only)
{
    static shape_t shapes[] = {SHAPES(SD_DRAFTER_NGRAM), SHAPES(SD_DRAFTER_MODEL),
                               SHAPES(SD_DRAFTER_LAYERSKIP)};
    return cr_make_param_array(shape_t, shapes, sizeof shapes / sizeof shapes[0]);
}

static sd_synth_spec_t shape_spec(const shape_t *sh)
{
    sd_synth_spec_t s;
    sd_synth_spec_default(&s);
    s.arch = sh->qwen2 ? "qwen2" : "llama";
    s.n_head = sh->n_head;
    s.n_head_kv = sh->n_head_kv;
    s.weight_type = sh->weight_type;
    if (sd_dtype_block_elems(sh->weight_type) == 256) s.n_embd = 256, s.n_ff = 512; /* K-quant blocks */
    s.n_layer = 3;
    s.weight_scale = 0.08f; /* peaked enough that greedy output falls into loops */
    return s;
}

/* Repetitive byte-token prompts (so prompt lookup finds matches) and a plain one. */
static const char *const k_prompts[] = {"abcabcabcabc", "the cat, the dog, the cat, the", "Hello"};

static size_t byte_prompt(const char *text, int32_t *ids)
{
    size_t n = strlen(text);
    for (size_t i = 0; i < n; i++)
        ids[i] = (unsigned char)text[i];
    return n;
}

ParameterizedTest(shape_t *sh, engine_speculative, greedy_equals_target_only, .timeout = 240)
{
    sd_synth_spec_t ts = shape_spec(sh);
    sd_model_t *target = synth_load(&ts, 1, 0), *draft = NULL;
    if (sh->drafter == SD_DRAFTER_MODEL) {
        sd_synth_spec_t ds = ts; /* a smaller model sharing the first layer's weights */
        ds.n_layer = 1;
        draft = synth_load(&ds, 1, 0);
    }
    uint64_t drafted = 0, accepted = 0;
    for (size_t p = 0; p < sizeof k_prompts / sizeof k_prompts[0]; p++) {
        int32_t ids[64];
        size_t n = byte_prompt(k_prompts[p], ids);
        sd_gen_config_t c = config(0.0f, 40, 0);
        sd_gen_result_t want = gen_spec(target, ids, n, &c, NULL);
        assert_stats(&want, 0);
        for (int k = 1; k <= 8; k++)
            for (int adaptive = 0; adaptive <= 1; adaptive++) {
                sd_spec_config_t s = spec_of(sh->drafter, k, adaptive, draft);
                sd_gen_result_t got = gen_spec(target, ids, n, &c, &s);
                char what[96];
                snprintf(what, sizeof what, "%s drafter %d prompt %zu k %d adaptive %d",
                         k_shape_names[sh->name], (int)sh->drafter, p, k, adaptive);
                assert_same(&got, &want, what);
                assert_stats(&got, k);
                drafted += got.stats.drafted;
                accepted += got.stats.accepted;
                sd_gen_result_free(&got);
            }
        sd_gen_result_free(&want);
    }
    /* the comparison means something only if drafts were both accepted and rejected */
    cr_assert_gt(accepted, 0, "%s: no draft token accepted", k_shape_names[sh->name]);
    cr_assert_lt(accepted, drafted, "%s: every draft token accepted", k_shape_names[sh->name]);
    sd_model_free(draft);
    sd_model_free(target);
}

/* ---- greedy exactness on the real model ------------------------------------------ */

typedef struct real_case {
    sd_drafter_kind_t drafter;
    int layers; /* layer-skip L */
} real_case_t;

ParameterizedTestParameters(engine_speculative, real_greedy_equals_target_only)
{
    static real_case_t cases[] = {{SD_DRAFTER_NGRAM, 0}, {SD_DRAFTER_LAYERSKIP, 10},
                                  {SD_DRAFTER_MODEL, 0}};
    return cr_make_param_array(real_case_t, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(real_case_t *rc, engine_speculative, real_greedy_equals_target_only,
                  .timeout = 600)
{
    const char *path = sd_test_real_model();
    if (path == NULL)
        cr_skip_test("real model not present");
    if (sd_test_sanitizer_pass()) /* ~8 minutes under ASan; cli_run covers the real model there */
        cr_skip_test("sanitizer pass: the release pass ran this test");
    sd_model_t *m = load_path(path, 2, 512);
    /* the draft model: the same file loaded again (a second model with the same vocab) */
    sd_model_t *draft = rc->drafter == SD_DRAFTER_MODEL ? load_path(path, 2, 512) : NULL;
    static const char *const text =
        "<|im_start|>user\nRepeat this list twice: red, green, blue, yellow, purple."
        "<|im_end|>\n<|im_start|>assistant\n";
    int32_t ids[128];
    size_t n = 0;
    cr_assert_eq(sd_tokenize(m, text, strlen(text), SD_TOKENIZE_ADD_BOS | SD_TOKENIZE_PARSE_SPECIAL,
                             ids, 128, &n), SD_OK);
    sd_gen_config_t c = config(0.0f, 32, 0);
    c.ignore_eos = 0;
    sd_gen_result_t want = gen_spec(m, ids, n, &c, NULL);
    static const int ks[] = {1, 4, 8};
    uint64_t accepted = 0;
    for (int i = 0; i < 3; i++)
        for (int adaptive = 0; adaptive <= 1; adaptive++) {
            sd_spec_config_t s = spec_of(rc->drafter, ks[i], adaptive, draft);
            s.layerskip_layers = rc->layers;
            sd_gen_result_t got = gen_spec(m, ids, n, &c, &s);
            char what[64];
            snprintf(what, sizeof what, "drafter %d k %d adaptive %d", (int)rc->drafter, ks[i],
                     adaptive);
            assert_same(&got, &want, what);
            assert_stats(&got, ks[i]);
            accepted += got.stats.accepted;
            if (rc->drafter == SD_DRAFTER_MODEL) /* draft == target: every draft token kept */
                cr_assert_eq(got.stats.accepted, got.stats.drafted, "%s", what);
            sd_gen_result_free(&got);
        }
    cr_assert_gt(accepted, 0);
    sd_gen_result_free(&want);
    sd_model_free(draft);
    sd_model_free(m);
}

/* ---- determinism ------------------------------------------------------------------- */

#ifndef SMALL_SCALE
#define SMALL_SCALE 0.2f
#endif
static sd_synth_spec_t small_spec(uint64_t seed, float scale)
{
    sd_synth_spec_t s;
    sd_synth_spec_default(&s);
    s.seed = seed;
    s.weight_scale = scale;
    return s;
}

/* With the n-gram drafter (deterministic proposals) sampling emits exactly the tokens of
 * target-only sampling for the same seed; with a sampling draft model, the same seed gives
 * the same tokens on every run and thread count, and another seed another sample. */
Test(engine_speculative, ngram_sampling_equals_target_only_sampling, .timeout = 120)
{
    sd_synth_spec_t ts = small_spec(1, SMALL_SCALE);
    sd_model_t *m = synth_load(&ts, 1, 0);
    int32_t ids[64];
    size_t n = byte_prompt(k_prompts[1], ids);
    static const float temps[] = {1.0f, 0.7f, 1.5f};
    uint64_t accepted = 0;
    for (int t = 0; t < 3; t++)
        for (uint64_t seed = 1; seed <= 6; seed++) {
            sd_gen_config_t c = config(temps[t], 48, seed);
            c.top_p = t == 2 ? 0.8f : 1.0f;
            sd_gen_result_t want = gen_spec(m, ids, n, &c, NULL);
            for (int k = 1; k <= 8; k += 3) {
                sd_spec_config_t s = spec_of(SD_DRAFTER_NGRAM, k, k % 2, NULL);
                sd_gen_result_t got = gen_spec(m, ids, n, &c, &s);
                assert_same(&got, &want, "ngram sampling");
                assert_stats(&got, k);
                accepted += got.stats.accepted;
                sd_gen_result_free(&got);
            }
            sd_gen_result_free(&want);
        }
    cr_assert_gt(accepted, 0);
    sd_model_free(m);
}

Test(engine_speculative, draft_model_sampling_reproducible, .timeout = 120)
{
    sd_synth_spec_t ts = small_spec(1, SMALL_SCALE), ds = small_spec(1, SMALL_SCALE);
    ds.n_layer = 1;
    sd_model_t *m1 = synth_load(&ts, 1, 0), *m2 = synth_load(&ts, 2, 0);
    sd_model_t *d1 = synth_load(&ds, 1, 0), *d2 = synth_load(&ds, 2, 0);
    int32_t ids[64];
    size_t n = byte_prompt(k_prompts[0], ids);
    sd_gen_config_t c = config(0.9f, 48, 42);
    sd_spec_config_t s1 = spec_of(SD_DRAFTER_MODEL, 5, 1, d1), s2 = spec_of(SD_DRAFTER_MODEL, 5, 1, d2);
    sd_gen_result_t a = gen_spec(m1, ids, n, &c, &s1);
    for (int rep = 0; rep < 2; rep++) {
        sd_gen_result_t b = gen_spec(m1, ids, n, &c, &s1), e = gen_spec(m2, ids, n, &c, &s2);
        assert_same(&b, &a, "repeat");
        assert_same(&e, &a, "two threads");
        cr_assert_eq(b.stats.accepted, a.stats.accepted);
        cr_assert_eq(e.stats.accepted, a.stats.accepted);
        sd_gen_result_free(&b);
        sd_gen_result_free(&e);
    }
    cr_assert_gt(a.stats.accepted, 0);
    c.seed = 43;
    sd_gen_result_t other = gen_spec(m1, ids, n, &c, &s1);
    int differ = other.n_tokens != a.n_tokens;
    for (size_t i = 0; !differ && i < a.n_tokens; i++)
        differ = other.tokens[i] != a.tokens[i];
    cr_assert(differ, "seeds 42 and 43 gave the same %zu tokens", a.n_tokens);
    sd_gen_result_free(&other);
    sd_gen_result_free(&a);
    sd_model_free(d1);
    sd_model_free(d2);
    sd_model_free(m1);
    sd_model_free(m2);
}

/* ---- rollback: the caches hold exactly the committed prefix after every step ------- */

typedef struct rollback_check {
    const sd_model_t *target, *draft; /* draft: the draft model, or the target (layer-skip) */
    int draft_layers;                 /* layers the drafter's cache holds */
    int steps, drafter_checks;
} rollback_check_t;

/* K and V rows [0, len) of layers [0, n_layer) of a and b are bit-identical. */
static void assert_kv_equal(const sd_kv_cache_t *a, const sd_kv_cache_t *b, int n_layer, int len,
                            const char *what)
{
    size_t bytes = (size_t)a->n_head_kv * (size_t)a->head_dim * sizeof(float);
    for (int l = 0; l < n_layer; l++)
        for (int p = 0; p < len; p++)
            for (int v = 0; v < 2; v++)
                cr_assert(memcmp(sd_kv_cache_row(a, v, l, p), sd_kv_cache_row(b, v, l, p), bytes) == 0,
                          "%s: %s of layer %d position %d differs from a fresh prefill", what,
                          v ? "V" : "K", l, p);
}

/* A fresh sequence of m with ctx[0..n) forwarded (n_layers_used layers). */
static void fresh_prefill(sd_seq_t *s, const sd_model_t *m, const int32_t *ctx, int n, int layers)
{
    cr_assert_eq(sd_seq_init(s, m, 0, n), SD_OK, "%s", sd_last_error());
    cr_assert_eq(sd_forward(s, ctx, n, layers), SD_OK, "%s", sd_last_error());
}

static sd_status_t rollback_hook(void *user, const sd_spec_step_view_t *v)
{
    rollback_check_t *rc = user;
    int len = (int)(v->n_prompt + v->n_tokens);
    int32_t ctx[512];
    cr_assert_leq(len, 512);
    memcpy(ctx, v->prompt, v->n_prompt * sizeof *ctx);
    memcpy(ctx + v->n_prompt, v->tokens, v->n_tokens * sizeof *ctx);
    /* target: the cache holds ctx[0..len-1); feeding ctx[len-1] gives a fresh prefill's logits */
    sd_seq_t *t = v->target;
    cr_assert_eq(t->kv.len, len - 1, "step %d: target cache %d, context %d", rc->steps,
                 t->kv.len, len);
    sd_seq_t fresh;
    fresh_prefill(&fresh, rc->target, ctx, len, 0);
    assert_kv_equal(&t->kv, &fresh.kv, rc->target->hp.n_layer, len - 1, "target");
    cr_assert_eq(sd_forward(t, ctx + len - 1, 1, 0), SD_OK, "%s", sd_last_error());
    size_t nv = (size_t)rc->target->hp.n_vocab;
    cr_assert(memcmp(t->logits, fresh.logits + (size_t)(len - 1) * nv, nv * sizeof(float)) == 0,
              "step %d: target logits after rollback differ from a fresh prefill", rc->steps);
    cr_assert_eq(sd_kv_cache_truncate(&t->kv, len - 1), SD_OK);
    sd_seq_free(&fresh);
    const sd_seq_t *ds = sd_seq_drafter_seq(v->drafter);
    if (ds != NULL) { /* the drafter's cache: a prefix of the context (its last token pending) */
        cr_assert_lt(ds->kv.len, len, "step %d: drafter cache %d, context %d", rc->steps,
                     ds->kv.len, len);
        sd_seq_t dfresh;
        fresh_prefill(&dfresh, rc->draft, ctx, len, rc->draft == rc->target ? rc->draft_layers : 0);
        assert_kv_equal(&ds->kv, &dfresh.kv, rc->draft_layers, ds->kv.len, "drafter");
        sd_seq_free(&dfresh);
        rc->drafter_checks++;
    }
    rc->steps++;
    return SD_OK;
}

ParameterizedTestParameters(engine_speculative, caches_hold_committed_prefix)
{
    static sd_drafter_kind_t kinds[] = {SD_DRAFTER_NONE, SD_DRAFTER_NGRAM, SD_DRAFTER_MODEL,
                                        SD_DRAFTER_LAYERSKIP};
    return cr_make_param_array(sd_drafter_kind_t, kinds, 4);
}

ParameterizedTest(sd_drafter_kind_t *kind, engine_speculative, caches_hold_committed_prefix,
                  .timeout = 120)
{
    sd_synth_spec_t ts = small_spec(1, SMALL_SCALE), ds = small_spec(1, SMALL_SCALE);
    ts.n_layer = 3;
    ds.n_layer = 2; /* the target's first two layers, without the third: close, not equal */
    sd_model_t *m = synth_load(&ts, 1, 0);
    sd_model_t *draft = *kind == SD_DRAFTER_MODEL ? synth_load(&ds, 1, 0) : NULL;
    int32_t ids[64];
    size_t n = byte_prompt(k_prompts[1], ids);
    uint64_t accepted = 0, rejected = 0;
    for (int temp = 0; temp <= 1; temp++) {
        sd_gen_config_t c = config(temp ? 1.0f : 0.0f, 40, 5);
        sd_spec_config_t s = spec_of(*kind, 4, 0, draft); /* fixed k: never paused */
        s.layerskip_layers = 2;
        rollback_check_t rc = {m, draft ? draft : m, 2, 0, 0};
        sd_gen_options_t o = {.hook = rollback_hook, .hook_user = &rc};
        sd_gen_result_t r;
        cr_assert_eq(sd_generate_ex(m, ids, n, &c, &s, &o, NULL, NULL, &r), SD_OK, "%s",
                     sd_last_error());
        cr_assert_eq((uint64_t)rc.steps + 1, r.stats.steps); /* every step but the last */
        if (*kind == SD_DRAFTER_MODEL || *kind == SD_DRAFTER_LAYERSKIP)
            cr_assert_eq(rc.drafter_checks, rc.steps);
        accepted += r.stats.accepted;
        rejected += r.stats.drafted - r.stats.accepted;
        sd_gen_result_free(&r);
    }
    if (*kind != SD_DRAFTER_NONE) /* both kinds of step were checked */
        cr_assert(accepted > 0 && rejected > 0, "accepted %llu, rejected %llu",
                  (unsigned long long)accepted, (unsigned long long)rejected);
    sd_model_free(draft);
    sd_model_free(m);
}

/* ---- stops inside an accepted block ------------------------------------------------ */

typedef struct blocks {
    int start[256], n_acc[256]; /* per step: index of its first emitted token, drafts kept */
    int n;
} blocks_t;

static sd_status_t record_blocks(void *user, const sd_spec_step_view_t *v)
{
    blocks_t *b = user;
    cr_assert_lt(b->n, 256);
    b->start[b->n] = (int)v->n_tokens - v->n_accepted - 1;
    b->n_acc[b->n++] = v->n_accepted;
    return SD_OK;
}

/* Token j was an accepted draft token with more of its block after it. */
static int inside_block(const blocks_t *b, int j)
{
    for (int i = 0; i < b->n; i++)
        if (j > b->start[i] && j < b->start[i] + b->n_acc[i])
            return 1;
    return 0;
}

typedef struct stream_cap {
    char text[4096];
    size_t len;
    int calls, stop_at; /* stop_at > 0: return 1 on that call */
} stream_cap_t;

static int stream_cb(void *user, int32_t token, const char *text, size_t len)
{
    stream_cap_t *c = user;
    cr_assert_lt(c->len + len, sizeof c->text);
    memcpy(c->text + c->len, text, len);
    c->len += len;
    return token >= 0 && ++c->calls == c->stop_at;
}

/* Target-only and n-gram speculative generation under the same stop settings: same tokens,
 * text, stop reason, and streamed text. */
static void compare_stop(sd_model_t *m, const int32_t *ids, size_t n, const sd_gen_config_t *c,
                         int stop_at, const char *what)
{
    sd_spec_config_t s = spec_of(SD_DRAFTER_NGRAM, 6, 0, NULL);
    stream_cap_t a = {.stop_at = stop_at}, b = {.stop_at = stop_at};
    sd_gen_result_t want, got;
    cr_assert_eq(sd_generate(m, ids, n, c, stream_cb, &a, &want), SD_OK, "%s", sd_last_error());
    cr_assert_eq(sd_generate_speculative(m, ids, n, c, &s, stream_cb, &b, &got), SD_OK, "%s",
                 sd_last_error());
    assert_same(&got, &want, what);
    assert_stats(&got, 6);
    cr_assert_eq(b.len, got.text_len, "%s: streamed text length", what);
    cr_assert(memcmp(b.text, got.text, b.len) == 0, "%s: streamed text", what);
    sd_gen_result_free(&want);
    sd_gen_result_free(&got);
}

Test(engine_speculative, stops_inside_accepted_block, .timeout = 120)
{
    sd_synth_spec_t ts = small_spec(1, SMALL_SCALE);
    sd_model_t *m = synth_load(&ts, 1, 0);
    int32_t ids[64];
    size_t n = byte_prompt(k_prompts[1], ids);
    sd_gen_config_t c = config(0.0f, 40, 0);
    blocks_t blocks = {.n = 0};
    sd_spec_config_t s = spec_of(SD_DRAFTER_NGRAM, 6, 0, NULL);
    sd_gen_options_t o = {.hook = record_blocks, .hook_user = &blocks};
    sd_gen_result_t full;
    cr_assert_eq(sd_generate_ex(m, ids, n, &c, &s, &o, NULL, NULL, &full), SD_OK);
    int inside = 0;
    for (int j = 1; j < (int)full.n_tokens - 1; j++) {
        inside += inside_block(&blocks, j);
        char what[64];
        sd_gen_config_t cj = c;
        int32_t stop_token = full.tokens[j];
        cj.stop_tokens = &stop_token;
        cj.n_stop_tokens = 1;
        snprintf(what, sizeof what, "stop token at %d", j);
        compare_stop(m, ids, n, &cj, 0, what);
        char piece[64];
        size_t len = 0;
        cr_assert_eq(sd_detokenize(m, full.tokens + j, 2, piece, sizeof piece - 1, &len), SD_OK);
        piece[len] = '\0';
        const char *stops[] = {piece};
        cj = c;
        cj.stop_strings = stops;
        cj.n_stop_strings = len > 0;
        snprintf(what, sizeof what, "stop string at %d", j);
        compare_stop(m, ids, n, &cj, 0, what);
        cj = c;
        cj.max_tokens = j;
        snprintf(what, sizeof what, "max tokens %d", j);
        compare_stop(m, ids, n, &cj, 0, what);
        snprintf(what, sizeof what, "callback stop at %d", j);
        compare_stop(m, ids, n, &c, j, what);
    }
    cr_assert_geq(inside, 3, "only %d stop positions fell inside an accepted block", inside);
    sd_gen_result_free(&full);
    sd_model_free(m);
}

/* ---- bad input ----------------------------------------------------------------------- */

Test(engine_speculative, bad_spec_is_a_clear_error, .timeout = 60)
{
    sd_synth_spec_t ts = small_spec(1, SMALL_SCALE);
    sd_model_t *m = synth_load(&ts, 1, 0);
    int32_t ids[64];
    size_t n = byte_prompt(k_prompts[0], ids);
    sd_gen_config_t c = config(0.0f, 8, 0);
    struct { sd_drafter_kind_t kind; int k, layers; const char *needle; } cases[] = {
        {SD_DRAFTER_NGRAM, 0, 1, "k = 0"},
        {SD_DRAFTER_NGRAM, SD_SPEC_MAX_K + 1, 1, "k = 17"},
        {SD_DRAFTER_LAYERSKIP, 4, 2, "2"},  /* L == n_layer */
        {SD_DRAFTER_LAYERSKIP, 4, -1, "layerskip_layers = -1"}, /* 0 is n_layer / 2 */
        {SD_DRAFTER_MODEL, 4, 1, "draft_model is NULL"},
        {(sd_drafter_kind_t)9, 4, 1, "drafter = 9"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sd_spec_config_t s = spec_of(cases[i].kind, cases[i].k, 1, NULL);
        s.layerskip_layers = cases[i].layers;
        sd_gen_result_t r;
        sd_status_t st = sd_generate_speculative(m, ids, n, &c, &s, NULL, NULL, &r);
        cr_assert_eq(st, SD_ERR_INVALID_ARG, "case %zu: %s", i, sd_status_string(st));
        cr_assert(strstr(sd_last_error(), cases[i].needle) != NULL, "case %zu: '%s' lacks '%s'", i,
                  sd_last_error(), cases[i].needle);
        cr_assert_null(r.tokens);
    }
    sd_model_free(m);
}

Test(engine_speculative, draft_vocab_mismatch, .timeout = 60)
{
    sd_synth_spec_t ts = small_spec(1, SMALL_SCALE), other = small_spec(2, SMALL_SCALE);
    other.tokenizer = SD_SYNTH_TOKENIZER_LLAMA; /* same size, different tokens */
    sd_model_t *m = synth_load(&ts, 1, 0), *d = synth_load(&other, 1, 0);
    other.tokenizer = SD_SYNTH_TOKENIZER_NONE;
    other.n_vocab = 64;
    sd_model_t *small = synth_load(&other, 1, 0);
    int32_t ids[64];
    size_t n = byte_prompt(k_prompts[0], ids);
    sd_gen_config_t c = config(0.0f, 8, 0);
    sd_gen_result_t r;
    sd_spec_config_t s = spec_of(SD_DRAFTER_MODEL, 4, 1, d);
    cr_assert_eq(sd_generate_speculative(m, ids, n, &c, &s, NULL, NULL, &r), SD_ERR_VOCAB_MISMATCH);
    cr_assert(strstr(sd_last_error(), "token 0") != NULL, "%s", sd_last_error());
    s.draft_model = small;
    cr_assert_eq(sd_generate_speculative(m, ids, n, &c, &s, NULL, NULL, &r), SD_ERR_VOCAB_MISMATCH);
    cr_assert(strstr(sd_last_error(), "64") != NULL, "%s", sd_last_error());
    sd_model_free(small);
    sd_model_free(d);
    sd_model_free(m);
}

/* A draft model with a shorter context than the generation: drafting stops when it is
 * full, generation goes on target-only and nothing generated is lost. */
Test(engine_speculative, draft_context_full_continues_target_only, .timeout = 60)
{
    sd_synth_spec_t ts = small_spec(1, SMALL_SCALE), ds = small_spec(1, SMALL_SCALE);
    ds.n_layer = 1;
    sd_model_t *m = synth_load(&ts, 1, 0), *d = synth_load(&ds, 1, 40);
    int32_t ids[64];
    size_t n = byte_prompt(k_prompts[1], ids);
    sd_gen_config_t c = config(0.0f, 60, 0);
    sd_gen_result_t want = gen_spec(m, ids, n, &c, NULL);
    sd_spec_config_t s = spec_of(SD_DRAFTER_MODEL, 4, 0, d);
    sd_gen_result_t got = gen_spec(m, ids, n, &c, &s);
    assert_same(&got, &want, "draft context full");
    assert_stats(&got, 4);
    cr_assert_gt(got.stats.drafted, 0);
    cr_assert_eq(got.n_tokens, 60);
    sd_gen_result_free(&got);
    sd_gen_result_free(&want);
    sd_model_free(d);
    sd_model_free(m);
}

/* ---- lossless sampling with real (tiny) models -------------------------------------- */


#define LV SD_TINY_VOCAB
#define LCELLS SD_TINY_CELLS /* joint outcomes of the first three tokens */
#define LSEEDS 20000

static const int32_t k_lossless_prompt[] = {3, 1, 4, 1, 5};
#define LPROMPT_N 5

typedef struct lossless_case {
    float temperature, top_p;
} lossless_case_t;

ParameterizedTestParameters(engine_speculative, lossless_sampling)
{
    static lossless_case_t cases[] = {{1.0f, 1.0f}, {1.0f, 0.8f}, {0.7f, 1.0f}};
    return cr_make_param_array(lossless_case_t, cases, 3);
}

/* The first three tokens of speculative sampling with a deliberately different draft
 * model (k = 2: two drafts checked by rejection sampling, then a bonus or a correction)
 * follow the exact target-only joint distribution: chi-square over 20,000 seeds, p > 0.001.
 * Planted bug, run once by hand: rolling the target's KV cache back one position too far
 * after each step (sd_kv_cache_truncate(&kv, len + n_accepted - 1) in engine/generate.c:
 * runs without error, later tokens see a context missing one token) gives p = 0 (the
 * double underflows) at all three settings, against p = 0.99 / 0.04 / 0.78 when correct. */
ParameterizedTest(lossless_case_t *lc, engine_speculative, lossless_sampling, .timeout = 240)
{
    sd_model_t *target = sd_tiny_model(11, 0.6f, 1), *draft = sd_tiny_model(11, 0.35f, 1);
    sd_gen_config_t c = config(lc->temperature, 3, 0);
    c.top_p = lc->top_p;
    static double joint[LCELLS];
    static long counts[LCELLS];
    sd_tiny_joint(target, &c, k_lossless_prompt, LPROMPT_N, joint);
    memset(counts, 0, sizeof counts);
    sd_spec_config_t s = spec_of(SD_DRAFTER_MODEL, 2, 0, draft);
    uint64_t drafted = 0, accepted = 0;
    for (long seed = 0; seed < LSEEDS; seed++) {
        c.seed = (uint64_t)seed;
        sd_gen_result_t r = gen_spec(target, k_lossless_prompt, LPROMPT_N, &c, &s);
        cr_assert_eq(r.n_tokens, 3);
        counts[(r.tokens[0] * LV + r.tokens[1]) * LV + r.tokens[2]]++;
        drafted += r.stats.drafted;
        accepted += r.stats.accepted;
        sd_gen_result_free(&r);
    }
    int df = 0;
    double stat;
    double p = sd_test_chi2_gof(counts, joint, LCELLS, LSEEDS, &df, &stat);
    cr_log_info("T %.1f top-p %.1f: p = %.4g (df %d), acceptance %.3f", (double)lc->temperature,
                (double)lc->top_p, p, df, (double)accepted / (double)drafted);
    cr_assert_gt(p, 0.001, "speculative samples do not follow the target: p = %g (df %d)", p, df);
    /* rejection sampling really ran: many drafts accepted, many rejected */
    cr_assert(accepted > drafted / 10 && accepted < drafted * 9 / 10, "accepted %llu of %llu",
              (unsigned long long)accepted, (unsigned long long)drafted);
    sd_model_free(draft);
    sd_model_free(target);
}

/* ---- adaptive draft length ------------------------------------------------------------ */

Test(engine_speculative, adaptive_k_follows_acceptance)
{
    sd_spec_k_t c;
    sd_spec_k_init(&c, 8, 1);
    cr_assert_eq(c.k, 8);
    sd_spec_k_update(&c, c.k, 0); /* everything rejected: k falls */
    cr_assert_eq(c.k, 1);
    for (int i = 0; i < 10; i++)
        sd_spec_k_update(&c, 1, 0); /* still everything: drafting pauses */
    cr_assert_eq(c.k, 0);
    for (int i = 1; i < SD_SPEC_PROBE_INTERVAL; i++) /* paused steps draft nothing ... */
        cr_assert_eq(sd_spec_k_next(&c), 0, "paused step %d drafts", i);
    cr_assert_eq(sd_spec_k_next(&c), 1, "... but every 8th probes with one token");
    sd_spec_k_update(&c, 1, 0); /* probe rejected: stay paused, count again */
    for (int i = 1; i < SD_SPEC_PROBE_INTERVAL; i++)
        cr_assert_eq(sd_spec_k_next(&c), 0);
    cr_assert_eq(sd_spec_k_next(&c), 1);
    for (int i = 0; i < 3; i++) /* probes accepted: drafting resumes */
        sd_spec_k_update(&c, 1, 1);
    cr_assert_geq(sd_spec_k_next(&c), 1);
    int prev = c.k;
    for (int i = 0; i < 20; i++) { /* everything accepted: k grows back to the maximum */
        sd_spec_k_update(&c, c.k, c.k);
        cr_assert_geq(c.k, prev);
        prev = c.k;
    }
    cr_assert_eq(c.k, 8);
    sd_spec_k_update(&c, 0, 0); /* nothing drafted: no evidence, no change */
    cr_assert_eq(c.k, 8);
    for (int i = 0; i < 30; i++) /* 2 of each 3-token draft: alpha ~ 2/3 -> k = 1 */
        sd_spec_k_update(&c, 3, 2);
    cr_assert_eq(c.k, 1);
    sd_spec_k_init(&c, 5, 0); /* fixed */
    for (int i = 0; i < 10; i++)
        sd_spec_k_update(&c, 5, 0);
    cr_assert_eq(c.k, 5);
}

/* Evidence classes learn apart: proposals of class 1 that always fail pause class 1 only,
 * while class 3, always accepted, drafts at the maximum; each paused class counts its own
 * probe interval; class 0 (sd_spec_k_next / sd_spec_k_update) is a class like the others;
 * out-of-range classes clamp. */
Test(engine_speculative, adaptive_k_per_evidence_class)
{
    sd_spec_k_t c;
    sd_spec_k_init(&c, 16, 1);
    for (int i = 0; i < 12 && c.cls[1].k > 0; i++) /* class 1 fails until it pauses */
        sd_spec_k_update_for(&c, 1, sd_spec_k_next_for(&c, 1), 0);
    cr_assert_eq(c.cls[1].k, 0, "class 1 keeps drafting (k %d) though it always fails", c.cls[1].k);
    for (int i = 0; i < 12; i++) {
        int k3 = sd_spec_k_next_for(&c, 3);
        sd_spec_k_update_for(&c, 3, k3, k3);
    }
    cr_assert_eq(sd_spec_k_next_for(&c, 3), 16, "class 3 always accepted drafts %d, not 16",
                 sd_spec_k_next_for(&c, 3));
    cr_assert_eq(sd_spec_k_next(&c), 16, "class 0 saw nothing and keeps its prior k_max");
    for (int i = 1; i < SD_SPEC_PROBE_INTERVAL; i++) {
        cr_assert_eq(sd_spec_k_next_for(&c, 1), 0, "paused class 1 drafts at its proposal %d", i);
        cr_assert_eq(sd_spec_k_next_for(&c, 3), 16); /* never counts against class 1 */
    }
    cr_assert_eq(sd_spec_k_next_for(&c, 1), 1, "class 1's 8th proposal since pausing probes");
    cr_assert_eq(sd_spec_k_next_for(&c, -5), sd_spec_k_next(&c), "class -5 is class 0");
    sd_spec_k_update_for(&c, 99, 4, 0); /* clamps to the last class */
    cr_assert_eq(c.cls[SD_DRAFT_EVIDENCE_CLASSES - 1].k, c.k);
    cr_assert_lt(c.k, 16);
    sd_spec_k_init(&c, 5, 0); /* fixed: every class asks for k_max */
    sd_spec_k_update_for(&c, 2, 5, 0);
    cr_assert_eq(sd_spec_k_next_for(&c, 2), 5);
}

/* ---- a failure mid-generation keeps what was generated ------------------------------ */

typedef struct {
    int steps_left;
} fail_after_t;

static sd_status_t fail_after_hook(void *user, const sd_spec_step_view_t *v)
{
    (void)v;
    fail_after_t *f = user;
    if (--f->steps_left > 0) return SD_OK;
    return sd_set_error(SD_ERR_CANCELLED, "injected failure");
}

/* The hook fails after 3 steps: the call returns that status, and the result holds the
 * tokens of those steps — a prefix of the full run — with SD_STOP_ERROR. */
Test(engine_speculative, failure_mid_generation_keeps_the_tokens, .timeout = 120)
{
    sd_synth_spec_t ts = small_spec(1, SMALL_SCALE);
    sd_model_t *m = synth_load(&ts, 1, 0);
    int32_t ids[64];
    size_t n = byte_prompt(k_prompts[1], ids);
    sd_gen_config_t c = config(0.0f, 40, 0);
    sd_spec_config_t s = spec_of(SD_DRAFTER_NGRAM, 4, 0, NULL);
    sd_gen_result_t full = gen_spec(m, ids, n, &c, &s);
    fail_after_t f = {.steps_left = 3};
    sd_gen_options_t o = {.hook = fail_after_hook, .hook_user = &f};
    sd_gen_result_t part;
    cr_assert_eq(sd_generate_ex(m, ids, n, &c, &s, &o, NULL, NULL, &part), SD_ERR_CANCELLED);
    cr_assert_str_eq(sd_last_error(), "injected failure");
    cr_assert_eq(part.stop_reason, SD_STOP_ERROR);
    cr_assert(part.n_tokens >= 3 && part.n_tokens < full.n_tokens, "kept %zu of %zu tokens",
              part.n_tokens, full.n_tokens);
    cr_assert(memcmp(part.tokens, full.tokens, part.n_tokens * sizeof(int32_t)) == 0);
    cr_assert_eq(part.stats.tokens_generated, part.n_tokens);
    cr_assert_eq(part.stats.steps, 3);
    cr_assert_not_null(part.text);
    sd_gen_result_free(&part);
    sd_gen_result_free(&full);
    sd_model_free(m);
}
