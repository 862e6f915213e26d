/* The whole model on the GPU: CUDA vs CPU logits within a tolerance, run-to-run bit
 * identity, GPU greedy speculative == GPU greedy target-only for every drafter (random
 * models of several shapes and types, and the real SmolLM2 file), CUDA graphs on == off
 * bit for bit, and the memory cap.
 * Skips without a device (the device-free parts live in test_engine_model.c). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/forward.h"
#include "model/model.h"
#include "gguf/synthetic.h"
#include "kernels/backend_impl.h"
#include "kernels/cuda.h"
#include "support/test_util.h"

static void need_gpu(void)
{
    int n = 0;
    if (!sd_cuda_built()) cr_skip_test("built without CUDA");
    if (sd_cuda_device_count(&n) != SD_OK || n == 0) cr_skip_test("no CUDA device on this machine");
}

/* The full matrix (models of 3 layers, every drafter setting, 40-48 tokens) is a GPU's. The
 * CUDA host mode (kernels on the CPU, thousands of times slower) takes smaller models, fewer
 * tokens and settings, and by default fewer model cases: every case under `slow`. */
static int full_runs(void) { return !sd_cuda_host_mode(); }
static int every_case(void) { return sd_test_long_shapes(sd_cuda_host_mode()); }

/* SmolLM2 on the device: a GPU; in the host mode, where a token takes seconds, only with
 * cheap = 1 and under `slow` (its run by default is tests/cli/test_cli_cuda.sh's). */
static const char *smollm2_or_skip(int cheap)
{
    if (sd_cuda_host_mode() && !(cheap && every_case()))
        cr_skip_test("in the CUDA host mode SmolLM2 generates in tests/cli/test_cli_cuda.sh; %s",
                     cheap ? "this test runs in the host mode under the slow label (SPECDEC_TEST_LONG=1)"
                           : "this test's matrix is for a GPU");
    const char *path = sd_test_real_model();
    if (path == NULL) cr_skip_test("SmolLM2 model not fetched (scripts/fetch-model.sh)");
    return path;
}

static sd_status_t load_on(const char *path, const char *device, sd_model_t **m)
{
    sd_model_params_t p;
    sd_model_params_default(&p);
    p.path = path;
    p.n_threads = 2;
    p.n_ctx = 512;
    p.device = device;
    return sd_model_load(&p, m);
}

static sd_model_t *must_load(const char *path, const char *device)
{
    sd_model_t *m = NULL;
    sd_status_t st = load_on(path, device, &m);
    cr_assert_eq(st, SD_OK, "%s on %s: %s: %s", path, device, sd_status_string(st), sd_last_error());
    return m;
}

typedef struct model_case {
    const char *label, *arch;
    sd_dtype_t type;
    int n_head, n_head_kv;
} model_case_t;

static const model_case_t cases[] = {
    {"llama-f32-gqa", "llama", SD_DTYPE_F32, 8, 2},  {"qwen2-f16-bias", "qwen2", SD_DTYPE_F16, 4, 4},
    {"llama-q8_0", "llama", SD_DTYPE_Q8_0, 4, 1},    {"llama-q4_0", "llama", SD_DTYPE_Q4_0, 4, 2},
    {"qwen2-q4_1", "qwen2", SD_DTYPE_Q4_1, 8, 8},    {"llama-q5_0", "llama", SD_DTYPE_Q5_0, 4, 2},
    {"llama-q4_k", "llama", SD_DTYPE_Q4_K, 4, 2},    {"qwen2-q6_k", "qwen2", SD_DTYPE_Q6_K, 8, 2},
    {"llama-bf16", "llama", SD_DTYPE_BF16, 4, 4},
};

static void write_case(const model_case_t *c, char *path, size_t cap)
{
    sd_synth_spec_t s;
    sd_synth_spec_default(&s);
    s.arch = c->arch;
    s.n_layer = full_runs() ? 3 : 2;
    s.n_embd = 256; /* K-quants need multiples of 256 */
    s.n_head = c->n_head;
    s.n_head_kv = c->n_head_kv;
    s.n_ff = full_runs() ? 512 : 256;
    s.n_vocab = 320;
    s.weight_type = c->type;
    s.weight_scale = 0.08f;
    s.seed = 77;
    sd_test_tmp_path(path, cap, c->label);
    cr_assert_eq(sd_synth_write_file(&s, path), SD_OK, "%s: %s", c->label, sd_last_error());
}

static void tokens_of(int32_t *t, int n, int n_vocab, uint32_t seed)
{
    for (int i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        t[i] = (int32_t)((seed >> 8) % (uint32_t)n_vocab);
    }
}

/* Logits of prompt[n] then of 5 single tokens, each [n_vocab] row appended to out. */
static void logits_of(sd_model_t *m, const int32_t *prompt, int n, float *out)
{
    sd_seq_t s;
    cr_assert_eq(sd_seq_init(&s, m, 0, 64), SD_OK, "%s", sd_last_error());
    int V = m->hp.n_vocab;
    cr_assert_eq(sd_forward(&s, prompt, n, 0), SD_OK, "%s", sd_last_error());
    memcpy(out, s.logits, (size_t)n * V * sizeof(float));
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(sd_forward(&s, &prompt[i], 1, 0), SD_OK, "%s", sd_last_error());
        memcpy(out + (size_t)(n + i) * V, s.logits, (size_t)V * sizeof(float));
    }
    sd_seq_free(&s);
}

/* max |a - b| over n values; *max_ref = max |a|. */
static double max_abs_diff(const float *a, const float *b, size_t n, double *max_ref)
{
    double diff = 0.0;
    *max_ref = 0.0;
    for (size_t i = 0; i < n; i++) {
        *max_ref = fmax(*max_ref, fabs(a[i]));
        diff = fmax(diff, fabs((double)a[i] - b[i]));
    }
    return diff;
}

Test(cuda_engine, logits_match_cpu_and_repeat_bit_for_bit, .timeout = 300)
{
    need_gpu();
    enum { N = 21, ROWS = N + 5 };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char path[512];
        write_case(&cases[c], path, sizeof path);
        sd_model_t *cpu = must_load(path, "cpu"), *gpu = must_load(path, "cuda");
        sd_model_info_t info;
        cr_assert_eq(sd_model_get_info(gpu, &info), SD_OK);
        cr_assert_str_eq(info.device, "cuda");
        int V = cpu->hp.n_vocab;
        int32_t prompt[N];
        tokens_of(prompt, N, V, 5 + (uint32_t)c);
        float *a = malloc(sizeof(float) * ROWS * V), *b = malloc(sizeof(float) * ROWS * V),
              *b2 = malloc(sizeof(float) * ROWS * V);
        logits_of(cpu, prompt, N, a);
        logits_of(gpu, prompt, N, b);
        logits_of(gpu, prompt, N, b2);
        cr_assert(memcmp(b, b2, sizeof(float) * ROWS * V) == 0, "%s: GPU run-to-run differs",
                  cases[c].label);
        double max_ref, max_diff = max_abs_diff(a, b, (size_t)ROWS * V, &max_ref);
        /* the CPU rounds activations (the GPU does not): to int16 for Q8_0/Q4_0/Q4_1, to int8
         * per block for Q5_0 and the K-quants — about 1-2e-2 of max|logit|, held to 0.05 as
         * in tests/reference/check_logits.py */
        sd_dtype_t t = cases[c].type;
        int int8_path = t == SD_DTYPE_Q5_0 || t == SD_DTYPE_Q4_K || t == SD_DTYPE_Q6_K;
        double tol = t == SD_DTYPE_F32 || t == SD_DTYPE_F16 ? 1e-4 : int8_path ? 5e-2 : 2e-3;
        cr_assert(max_diff <= tol * max_ref, "%s: max |cpu - gpu| = %g vs max |logit| %g",
                  cases[c].label, max_diff, max_ref);
        free(a), free(b), free(b2);
        sd_model_free(cpu);
        sd_model_free(gpu);
        remove(path);
    }
}

/* Greedy generation of n tokens; *tokens owned by the caller. */
static size_t greedy(sd_model_t *m, const int32_t *prompt, size_t n_prompt, int n,
                     const sd_spec_config_t *spec, int32_t **tokens)
{
    sd_gen_config_t g;
    sd_gen_config_default(&g);
    g.max_tokens = n;
    g.temperature = 0.0f;
    g.ignore_eos = 1;
    sd_gen_result_t r;
    sd_status_t st = sd_generate_speculative(m, prompt, n_prompt, &g, spec, NULL, NULL, &r);
    cr_assert_eq(st, SD_OK, "%s: %s", sd_status_string(st), sd_last_error());
    *tokens = malloc(sizeof(int32_t) * (r.n_tokens ? r.n_tokens : 1));
    memcpy(*tokens, r.tokens, sizeof(int32_t) * r.n_tokens);
    size_t got = r.n_tokens;
    sd_gen_result_free(&r);
    return got;
}

/* Greedy tokens of each drafter (k 1, 4, 7, fixed and adaptive; in the host mode k 4 adaptive
 * only, 16 tokens) equal target-only greedy. */
static void expect_same_greedy(sd_model_t *m, sd_model_t *draft, const char *label)
{
    int32_t prompt[24];
    tokens_of(prompt, 12, m->hp.n_vocab, 3);
    memcpy(prompt + 12, prompt, 12 * sizeof(int32_t)); /* a repeat for the n-gram drafter */
    const int full = full_runs(), n_tokens = full ? 48 : 16;
    int32_t *want = NULL;
    size_t n_want = greedy(m, prompt, 24, n_tokens, NULL, &want);
    sd_spec_config_t spec;
    sd_drafter_kind_t kinds[] = {SD_DRAFTER_NGRAM, SD_DRAFTER_LAYERSKIP, SD_DRAFTER_MODEL};
    for (size_t d = 0; d < 3; d++) {
        if (kinds[d] == SD_DRAFTER_MODEL && draft == NULL) continue;
        for (int k = full ? 1 : 4; k <= (full ? 8 : 4); k += 3) {
            for (int adaptive = !full; adaptive <= 1; adaptive++) {
                sd_spec_config_default(&spec);
                spec.drafter = kinds[d];
                spec.draft_model = draft;
                spec.layerskip_layers = 1;
                spec.k = k;
                spec.adaptive = adaptive;
                int32_t *got = NULL;
                size_t n_got = greedy(m, prompt, 24, n_tokens, &spec, &got);
                cr_assert_eq(n_got, n_want, "%s drafter %d k %d", label, kinds[d], k);
                for (size_t i = 0; i < n_got; i++)
                    cr_assert_eq(got[i], want[i], "%s drafter %d k %d adaptive %d: token %zu", label,
                                 kinds[d], k, adaptive, i);
                free(got);
            }
        }
    }
    free(want);
}

/* The model cases the host mode's default run takes (and a GPU, where a test runs few):
 * llama f32 GQA, qwen2 q4_1 (bias, NEOX rope), qwen2 q6_k. */
static const size_t few_cases[] = {0, 4, 7};
#define N_FEW (sizeof few_cases / sizeof few_cases[0])
#define N_CASES (sizeof cases / sizeof cases[0])

Test(cuda_engine, greedy_speculative_equals_target_only_on_random_models, .timeout = 600)
{
    need_gpu();
    char draft_path[512];
    write_case(&cases[0], draft_path, sizeof draft_path);
    for (size_t i = 0; i < (every_case() ? N_CASES : N_FEW); i++) {
        size_t c = every_case() ? i : few_cases[i];
        char path[512];
        write_case(&cases[c], path, sizeof path);
        sd_model_t *m = must_load(path, "cuda"), *draft = must_load(draft_path, "cuda");
        expect_same_greedy(m, draft, cases[c].label);
        sd_model_free(draft);
        sd_model_free(m);
        remove(path);
    }
    remove(draft_path);
}

Test(cuda_engine, greedy_speculative_equals_target_only_on_smollm2, .timeout = 600)
{
    need_gpu();
    const char *path = smollm2_or_skip(0);
    sd_model_t *m = must_load(path, "cuda");
    expect_same_greedy(m, m, "smollm2");
    sd_model_free(m);
}

/* The real model's logits on the GPU against the CPU's. */
Test(cuda_engine, smollm2_logits_match_cpu, .timeout = 300)
{
    need_gpu();
    const char *path = smollm2_or_skip(1);
    sd_model_t *cpu = must_load(path, "cpu"), *gpu = must_load(path, "cuda");
    int V = cpu->hp.n_vocab;
    int32_t prompt[16];
    tokens_of(prompt, 16, 5000, 11);
    float *a = malloc(sizeof(float) * 21 * V), *b = malloc(sizeof(float) * 21 * V);
    logits_of(cpu, prompt, 16, a);
    logits_of(gpu, prompt, 16, b);
    double max_ref, max_diff = max_abs_diff(a, b, (size_t)21 * V, &max_ref);
    cr_assert(max_diff <= 5e-3 * max_ref, "max |cpu - gpu| = %g vs max |logit| %g", max_diff,
              max_ref);
    free(a), free(b);
    sd_model_free(cpu);
    sd_model_free(gpu);
}

/* A cap above the backend's own 64 MiB workspace but too small for the weights (~8 MiB):
 * refused at load with the numbers; the same file loads without the cap. */
Test(cuda_engine, memory_cap_refuses_a_model_that_does_not_fit, .timeout = 120)
{
    need_gpu();
    char path[512];
    write_case(&cases[0], path, sizeof path);
    sd_cuda_device_info_t dev;
    cr_assert_eq(sd_cuda_device_info(0, &dev), SD_OK, "%s", sd_last_error());
    char fraction[64];
    snprintf(fraction, sizeof fraction, "%.9f", (double)(65u << 20) / (double)dev.total_memory);
    setenv("SPECDEC_GPU_MEMORY_FRACTION", fraction, 1);
    sd_model_t *m = NULL;
    sd_status_t st = load_on(path, "cuda", &m);
    cr_assert_eq(st, SD_ERR_OUT_OF_MEMORY, "%s: %s", sd_status_string(st), sd_last_error());
    cr_assert_null(m);
    cr_assert(strstr(sd_last_error(), "weights need") != NULL, "%s", sd_last_error());
    unsetenv("SPECDEC_GPU_MEMORY_FRACTION");
    m = must_load(path, "cuda");
    sd_model_free(m);
    remove(path);
}

/* ---- CUDA graphs ------------------------------------------------------------------------- */

/* One sequence through a fixed schedule of forwards: a prefill, n = 1 and n = 5 blocks,
 * rollbacks (sd_kv_cache_truncate) so that the same n runs again at other positions, a
 * forward of fewer layers (re-captured) and one longer than SD_GRAPH_MAX_N (never
 * captured). Every forward's logits rows are appended to out; returns the rows written.
 * *use_graphs reports the sequence's setting. With graphs, after each rollback the forward
 * of the same tokens at the same positions must give the rows it gave before. */
enum { SCHEDULE_ROWS = 9 + 1 + 1 + 5 + 5 + 5 + 1 + 1 + 1 + 20 + 5 };

static int schedule_logits(sd_model_t *m, float *out, int *use_graphs)
{
    sd_seq_t s;
    cr_assert_eq(sd_seq_init(&s, m, 0, 32), SD_OK, "%s", sd_last_error());
    *use_graphs = s.use_graphs;
    const int V = m->hp.n_vocab;
    int32_t t[32];
    tokens_of(t, 32, V, 99);
    int rows = 0;
#define FWD(tok, n, layers)                                                                     \
    do {                                                                                        \
        cr_assert_eq(sd_forward(&s, (tok), (n), (layers)), SD_OK, "%s", sd_last_error());      \
        memcpy(out + (size_t)rows * V, s.logits, sizeof(float) * (size_t)(n) * V);             \
        rows += (n);                                                                            \
    } while (0)
    FWD(t, 9, 0);       /* positions 0..8 */
    FWD(t + 9, 1, 0);   /* 9 */
    FWD(t + 10, 1, 0);  /* 10: the n = 1 graph replayed */
    FWD(t + 11, 5, 0);  /* 11..15 */
    int at = rows;
    cr_assert_eq(sd_kv_cache_truncate(&s.kv, 11), SD_OK);
    FWD(t + 11, 5, 0);  /* 11..15 again: replayed after the rollback, the same rows */
    cr_assert(memcmp(out + (size_t)at * V, out + (size_t)(at - 5) * V, sizeof(float) * 5 * V) == 0,
              "the n = 5 forward after a rollback differs from the first one");
    cr_assert_eq(sd_kv_cache_truncate(&s.kv, 13), SD_OK);
    FWD(t + 20, 5, 0);  /* 13..17: another position and other tokens */
    cr_assert_eq(sd_kv_cache_truncate(&s.kv, 10), SD_OK);
    FWD(t + 10, 1, 0);  /* 10 again */
    cr_assert(memcmp(out + (size_t)(rows - 1) * V, out + (size_t)10 * V, sizeof(float) * V) == 0,
              "the n = 1 forward after a rollback differs from the first one");
    FWD(t + 11, 1, 1);  /* 11 through 1 layer: the n = 1 graph re-captured */
    cr_assert_eq(sd_kv_cache_truncate(&s.kv, 11), SD_OK);
    FWD(t + 11, 1, 0);  /* 11 through every layer again */
    FWD(t, 20, 0);      /* 12..31: past SD_GRAPH_MAX_N, eager */
    cr_assert_eq(sd_kv_cache_truncate(&s.kv, 3), SD_OK);
    FWD(t + 3, 5, 0);   /* 3..7: the first rows' tokens at their positions */
    cr_assert(memcmp(out + (size_t)(rows - 5) * V, out + (size_t)3 * V, sizeof(float) * 5 * V) == 0,
              "positions 3..7 as an n = 5 block differ from the prefill's rows (batch invariance)");
#undef FWD
    cr_assert_eq(rows, SCHEDULE_ROWS);
    sd_seq_free(&s);
    return rows;
}

/* Greedy target-only, layer-skip and n-gram speculative tokens (40 each; 16 in the host
 * mode), concatenated. */
static size_t greedy_runs(sd_model_t *m, int32_t *out, size_t cap)
{
    int32_t prompt[24];
    tokens_of(prompt, 12, m->hp.n_vocab, 3);
    memcpy(prompt + 12, prompt, 12 * sizeof(int32_t));
    size_t len = 0;
    sd_spec_config_t spec;
    for (int run = 0; run < 3; run++) {
        sd_spec_config_default(&spec);
        spec.drafter = run == 1 ? SD_DRAFTER_LAYERSKIP : SD_DRAFTER_NGRAM;
        spec.layerskip_layers = 1;
        spec.k = 4;
        int32_t *got = NULL;
        size_t n = greedy(m, prompt, 24, full_runs() ? 40 : 16, run == 0 ? NULL : &spec, &got);
        cr_assert(len + n <= cap);
        memcpy(out + len, got, n * sizeof(int32_t));
        len += n;
        free(got);
    }
    return len;
}

/* SPECDEC_CUDA_GRAPHS=1 (captured and replayed forwards) against =0 (every op launched by
 * the forward): the same logits bit for bit over the schedule above, and the same greedy
 * tokens, target-only and speculative. */
static void expect_graphs_change_nothing(sd_model_t *m, const char *label)
{
    const int V = m->hp.n_vocab;
    float *eager = malloc(sizeof(float) * SCHEDULE_ROWS * V), *graphs = malloc(sizeof(float) * SCHEDULE_ROWS * V);
    int32_t tok_eager[256], tok_graphs[256];
    int on = -1;
    setenv("SPECDEC_CUDA_GRAPHS", "0", 1);
    schedule_logits(m, eager, &on);
    cr_assert_eq(on, 0, "%s: SPECDEC_CUDA_GRAPHS=0 must turn graphs off", label);
    size_t n_eager = greedy_runs(m, tok_eager, 256);
    setenv("SPECDEC_CUDA_GRAPHS", "1", 1);
    schedule_logits(m, graphs, &on);
    cr_assert_eq(on, 1, "%s: a CUDA model uses graphs by default", label);
    size_t n_graphs = greedy_runs(m, tok_graphs, 256);
    unsetenv("SPECDEC_CUDA_GRAPHS");
    for (int r = 0; r < SCHEDULE_ROWS; r++)
        cr_assert(memcmp(eager + (size_t)r * V, graphs + (size_t)r * V, sizeof(float) * V) == 0,
                  "%s: logits row %d differs with graphs", label, r);
    cr_assert_eq(n_graphs, n_eager, "%s", label);
    for (size_t i = 0; i < n_eager; i++)
        cr_assert_eq(tok_graphs[i], tok_eager[i], "%s: greedy token %zu differs with graphs", label, i);
    free(eager), free(graphs);
}

Test(cuda_engine, graphs_give_the_eager_bits_on_random_models, .timeout = 600)
{
    need_gpu();
    for (size_t w = 0; w < (every_case() ? N_FEW : 1); w++) {
        const model_case_t *c = &cases[few_cases[w]];
        char path[512];
        write_case(c, path, sizeof path);
        sd_model_t *m = must_load(path, "cuda");
        expect_graphs_change_nothing(m, c->label);
        sd_model_free(m);
        remove(path);
    }
}

Test(cuda_engine, graphs_give_the_eager_bits_on_smollm2, .timeout = 600)
{
    need_gpu();
    const char *path = smollm2_or_skip(0);
    sd_model_t *m = must_load(path, "cuda");
    expect_graphs_change_nothing(m, "smollm2");
    sd_model_free(m);
}

/* The model's backend with every capture spoiled: graph_begin then a sync, which a capture
 * refuses (the same failure any op refused during a capture gives). Counts the captures. */
static const sd_backend_ops_t *real_ops;
static sd_backend_ops_t spoiling_ops;
static int captures;

static void spoiled_graph_begin(sd_backend_t *be)
{
    captures++;
    real_ops->graph_begin(be);
    (void)real_ops->sync(be);
}

/* A capture that fails falls back to the eager ops for that n, once and for all: the
 * forwards succeed with the eager bits, and each n is tried once per sequence (before the
 * fix, every forward of that n recaptured and failed with SD_ERR_DEVICE). */
Test(cuda_engine, a_failed_capture_runs_the_ops_without_a_graph, .timeout = 300)
{
    need_gpu();
    char path[512];
    write_case(&cases[0], path, sizeof path);
    sd_model_t *m = must_load(path, "cuda");
    const int V = m->hp.n_vocab;
    float *eager = malloc(sizeof(float) * SCHEDULE_ROWS * V), *fallback = malloc(sizeof(float) * SCHEDULE_ROWS * V);
    int on = -1;
    setenv("SPECDEC_CUDA_GRAPHS", "0", 1);
    schedule_logits(m, eager, &on);
    unsetenv("SPECDEC_CUDA_GRAPHS");
    real_ops = m->backend->ops;
    spoiling_ops = *real_ops;
    spoiling_ops.graph_begin = spoiled_graph_begin;
    m->backend->ops = &spoiling_ops;
    captures = 0;
    schedule_logits(m, fallback, &on);
    m->backend->ops = real_ops;
    cr_assert_eq(on, 1);
    /* the schedule's n: 9, 1, 5 (<= SD_GRAPH_MAX_N: each tried once) and 20 (never captured) */
    cr_assert_eq(captures, 3, "%d captures: a failed n must not be captured again", captures);
    for (int r = 0; r < SCHEDULE_ROWS; r++)
        cr_assert(memcmp(eager + (size_t)r * V, fallback + (size_t)r * V, sizeof(float) * V) == 0,
                  "logits row %d differs after the capture failed", r);
    free(eager), free(fallback);
    sd_model_free(m);
    remove(path);
}

/* The CPU backend has no graph ops: a CPU sequence never uses graphs, whatever the
 * environment says; and the schedule's own checks (rollback, batch invariance) hold there.
 * Runs everywhere. */
Test(cuda_engine, cpu_sequences_never_use_graphs, .timeout = 120)
{
    char path[512];
    write_case(&cases[0], path, sizeof path);
    sd_model_t *m = must_load(path, "cpu");
    cr_assert_not(sd_backend_has_graphs(m->backend));
    setenv("SPECDEC_CUDA_GRAPHS", "1", 1);
    float *rows = malloc(sizeof(float) * SCHEDULE_ROWS * m->hp.n_vocab);
    int on = -1;
    schedule_logits(m, rows, &on);
    cr_assert_eq(on, 0);
    unsetenv("SPECDEC_CUDA_GRAPHS");
    free(rows);
    sd_model_free(m);
    remove(path);
}
