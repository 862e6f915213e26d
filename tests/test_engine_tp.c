/* Tensor parallelism: the default plan (sd_tp_plan) and quant-block checks as tables;
 * TP = 2 and 4 against TP = 1 on synthetic llama/qwen2 models (F32, Q8_0, Q4_0, Q4_K, GQA
 * with split and with replicated KV heads), ranks as forked processes over the intra
 * comm: logits bit-identical on every rank and within a stated tolerance of TP = 1
 * (|tp - tp1| <= tol * max|tp1| + 1e-5; tol 1e-5 for F32, 5e-4 for quantized weights,
 * whose activations are re-quantized per layer; measured about 5e-7 and 5e-5), greedy
 * target-only and speculative (n-gram, layer-skip) output equal to TP = 1 on every rank,
 * rollback = fresh prefill; bad plans and bad input fail alike on every rank without a
 * collective; a lost peer fails the forward with kv.len unchanged. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/check.h"
#include "core/clock.h"
#include "comm/comm.h"
#include "kernels/cuda.h"
#include "model/forward.h"
#include "model/model.h"
#include "gguf/synthetic.h"
#include "model/tp_plan.h"
#include "tests/support/test_util.h"

#define MAX_RANKS 4
#define N_VOCAB 96
#define N_PROMPT 12
#define N_STEPS 4
#define N_ROWS (N_PROMPT + N_STEPS) /* logits rows: the prompt, then single-token steps */
#define N_GEN 20
#define RANKS_TIMEOUT_S 25.0       /* a run of forked ranks; the test fails, never hangs */
#define COMM_TIMEOUT_MS "10000"

/* ---- plan tables ------------------------------------------------------------------ */

static sd_hparams_t hparams(int n_head, int n_head_kv, int n_ff)
{
    return (sd_hparams_t){.arch = SD_ARCH_LLAMA, .n_vocab = N_VOCAB, .n_embd = 64, .n_layer = 2,
                          .n_head = n_head, .n_head_kv = n_head_kv, .head_dim = 8,
                          .n_ff = n_ff, .n_ctx_train = 64};
}

/* Every local query head j must find, through the attention kernel's mapping
 * (local kv = j / (nh / nkv)), exactly the KV head the full model gives it. */
static void assert_shard_consistent(const sd_hparams_t *hp, const sd_tp_shard_t *t, int rank,
                                    int size)
{
    cr_assert_eq(t->rank, rank);
    cr_assert_eq(t->size, size);
    cr_assert_eq(t->n_head * size, hp->n_head);
    cr_assert_eq(t->head0, rank * t->n_head);
    cr_assert_eq(t->n_ff * size, hp->n_ff);
    cr_assert_eq(t->ff0, rank * t->n_ff);
    cr_assert(t->n_head % t->n_head_kv == 0, "%d local heads, %d local kv", t->n_head,
              t->n_head_kv);
    int group = hp->n_head / hp->n_head_kv, local_group = t->n_head / t->n_head_kv;
    for (int j = 0; j < t->n_head; j++)
        cr_assert_eq(t->kv_head0 + j / local_group, (t->head0 + j) / group,
                     "rank %d/%d: local head %d maps to the wrong KV head", rank, size, j);
}

typedef struct plan_case {
    int n_head, n_head_kv, n_ff, size;
    sd_status_t want;
    int kv_per_rank;             /* when SD_OK */
    const char *msg1, *msg2;     /* substrings of the error */
} plan_case_t;

Test(engine_tp, plan_table)
{
    static const plan_case_t cases[] = {
        {8, 2, 64, 1, SD_OK, 2, NULL, NULL},
        {8, 2, 64, 2, SD_OK, 1, NULL, NULL},  /* split KV */
        {8, 2, 64, 4, SD_OK, 1, NULL, NULL},  /* replicated KV, 2 query heads per rank */
        {8, 2, 64, 8, SD_OK, 1, NULL, NULL},  /* replicated KV, 1 query head per rank */
        {8, 8, 64, 4, SD_OK, 2, NULL, NULL},
        {9, 3, 63, 3, SD_OK, 1, NULL, NULL},
        {9, 3, 64, 2, SD_ERR_TP_PLAN, 0, "9 attention heads", "TP size 2"},
        {12, 3, 64, 2, SD_ERR_TP_PLAN, 0, "3 KV heads", "TP size 2"},
        {12, 6, 64, 4, SD_ERR_TP_PLAN, 0, "6 KV heads", "TP size 4"},
        {8, 2, 66, 4, SD_ERR_TP_PLAN, 0, "feed-forward length 66", "TP size 4"},
        {8, 2, 64, 16, SD_ERR_TP_PLAN, 0, "8 attention heads", "TP size 16"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const plan_case_t *c = &cases[i];
        sd_hparams_t hp = hparams(c->n_head, c->n_head_kv, c->n_ff);
        for (int r = 0; r < c->size; r++) {
            sd_tp_shard_t t;
            sd_status_t st = sd_tp_plan(&hp, r, c->size, &t);
            cr_assert_eq(st, c->want, "case %zu rank %d: %s: %s", i, r, sd_status_string(st),
                         sd_last_error());
            if (st != SD_OK) {
                cr_assert(strstr(sd_last_error(), c->msg1) && strstr(sd_last_error(), c->msg2),
                          "case %zu: message '%s' lacks '%s' / '%s'", i, sd_last_error(),
                          c->msg1, c->msg2);
                continue;
            }
            cr_assert_eq(t.n_head_kv, c->kv_per_rank, "case %zu rank %d", i, r);
            assert_shard_consistent(&hp, &t, r, c->size);
        }
    }
}

Test(engine_tp, plan_rejects_bad_rank)
{
    sd_hparams_t hp = hparams(8, 2, 64);
    sd_tp_shard_t t;
    cr_assert_eq(sd_tp_plan(&hp, 2, 2, &t), SD_ERR_INVALID_ARG);
    cr_assert(strstr(sd_last_error(), "rank 2"), "%s", sd_last_error());
    cr_assert_eq(sd_tp_plan(&hp, 0, 0, &t), SD_ERR_INVALID_ARG);
    cr_assert_eq(sd_tp_plan(&hp, -1, 2, &t), SD_ERR_INVALID_ARG);
}

typedef struct split_case {
    sd_dtype_t type;
    int64_t cols, c0, n;
    sd_status_t want;
    const char *msg1, *msg2;
} split_case_t;

Test(engine_tp, column_split_block_boundaries)
{
    static const split_case_t cases[] = {
        {SD_DTYPE_F32, 128, 3, 5, SD_OK, NULL, NULL},
        {SD_DTYPE_Q4_0, 128, 0, 64, SD_OK, NULL, NULL},
        {SD_DTYPE_Q4_0, 128, 64, 64, SD_OK, NULL, NULL},
        {SD_DTYPE_Q4_0, 128, 0, 48, SD_ERR_TP_PLAN, "Q4_0 in blocks of 32", "[0, 48)"},
        {SD_DTYPE_Q8_0, 128, 32, 32, SD_OK, NULL, NULL},
        {SD_DTYPE_Q8_0, 128, 16, 16, SD_ERR_TP_PLAN, "Q8_0 in blocks of 32", "[16, 32)"},
        {SD_DTYPE_Q4_K, 512, 256, 256, SD_OK, NULL, NULL},
        {SD_DTYPE_Q4_K, 512, 128, 128, SD_ERR_TP_PLAN, "Q4_K in blocks of 256", "[128, 256)"},
        {SD_DTYPE_Q8_0, 128, 96, 64, SD_ERR_INVALID_ARG, "[96, 160)", "[0, 128)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const split_case_t *c = &cases[i];
        sd_weight_t w = {.type = c->type, .rows = 4, .cols = c->cols};
        sd_status_t st = sd_tp_check_col_split("blk.3.ffn_down.weight", &w, c->c0, c->n);
        cr_assert_eq(st, c->want, "case %zu: %s: %s", i, sd_status_string(st), sd_last_error());
        if (st == SD_OK) continue;
        const char *e = sd_last_error();
        cr_assert(strstr(e, "'blk.3.ffn_down.weight'") && strstr(e, c->msg1) &&
                      strstr(e, c->msg2),
                  "case %zu: message '%s' lacks '%s' / '%s'", i, e, c->msg1, c->msg2);
    }
}

/* ---- forked ranks ------------------------------------------------------------------ */

/* What a rank reports (in memory shared with the parent). */
typedef struct rank_out {
    int code;                     /* 0 = every step ran as expected */
    char err[512];                /* what failed */
    float logits[N_ROWS * N_VOCAB];
    int32_t gen[3][N_GEN];        /* target-only, n-gram, layer-skip */
    int n_gen[3];
    sd_status_t statuses[8];      /* the bad-input test's calls */
    int kv_len[8];
    double call_seconds[2];       /* the lost-peer test's two forwards */
    double seconds;
} rank_out_t;

typedef int (*rank_fn)(sd_comm_t *comm, rank_out_t *out, const void *arg);

static int fail(rank_out_t *o, int code, const char *what, sd_status_t st)
{
    snprintf(o->err, sizeof o->err, "%s: %s: %s", what, sd_status_string(st), sd_last_error());
    return o->code = code;
}

static void run_rank(int rank, int size, const char *job, rank_fn fn, const void *arg,
                     rank_out_t *o)
{
    double t0 = sd_now();
    sd_comm_t *c = NULL;
    sd_status_t st = sd_comm_intra_new(rank, size, job, &c);
    int code = st == SD_OK ? fn(c, o, arg) : fail(o, 90, "sd_comm_intra_new", st);
    sd_comm_free(c);
    o->seconds = sd_now() - t0;
    _exit(code);
}

/* Waits for every rank until the deadline, then kills what is left. 1 when all exited 0. */
static int wait_ranks(const pid_t *pids, int size, double deadline, char *why, size_t cap)
{
    int ok = 1, left = size, done[MAX_RANKS] = {0};
    while (left > 0 && sd_now() < deadline) {
        for (int r = 0; r < size; r++) {
            int wst;
            if (done[r] || waitpid(pids[r], &wst, WNOHANG) != pids[r]) continue;
            done[r] = 1, left--;
            if (!WIFEXITED(wst) || WEXITSTATUS(wst) != 0) {
                snprintf(why, cap, "rank %d ended with status 0x%x", r, wst);
                ok = 0;
            }
        }
        usleep(2000);
    }
    for (int r = 0; r < size; r++) {
        if (done[r]) continue;
        kill(pids[r], SIGKILL);
        waitpid(pids[r], NULL, 0);
        snprintf(why, cap, "rank %d did not finish within %.0f s", r, RANKS_TIMEOUT_S);
        ok = 0;
    }
    return ok;
}

/* fn on `size` forked ranks of a fresh intra comm; out[size] in shared memory. Asserts
 * every rank exits 0 in time (printing the first rank's error otherwise); returns the
 * wall time. */
static double run_ranks(int size, rank_fn fn, const void *arg, rank_out_t *out)
{
    static int run;
    char job[48];
    snprintf(job, sizeof job, "tp%d-%d", run++, (int)getpid());
    memset(out, 0, (size_t)size * sizeof *out);
    fflush(NULL);
    double t0 = sd_now();
    pid_t pids[MAX_RANKS];
    for (int r = 0; r < size; r++) {
        pids[r] = fork();
        cr_assert(pids[r] >= 0, "fork failed");
        if (pids[r] == 0) run_rank(r, size, job, fn, arg, &out[r]);
    }
    char why[128] = "";
    int ok = wait_ranks(pids, size, t0 + RANKS_TIMEOUT_S, why, sizeof why);
    int bad = 0; /* the first rank that says what went wrong */
    while (bad < size - 1 && out[bad].code == 0) bad++;
    cr_assert(ok, "TP %d: %s; rank %d: code %d: %s", size, why, bad, out[bad].code,
              out[bad].err);
    return sd_now() - t0;
}

static rank_out_t *shared_outs(void)
{
    void *p = mmap(NULL, MAX_RANKS * sizeof(rank_out_t), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert(p != MAP_FAILED, "mmap");
    return p;
}

static void tp_init(void)
{
    setenv("SPECDEC_COMM_TIMEOUT_MS", COMM_TIMEOUT_MS, 1);
}

/* ---- models and the work every rank does ------------------------------------------ */

typedef struct model_case {
    char label[24], arch[8];
    int n_embd, n_head, n_head_kv, head_dim, n_ff;
    sd_dtype_t weight_type;
    int sizes[2];               /* TP sizes to compare with TP = 1 */
    double tol_rel;             /* |tp - tp1| <= tol_rel * max|tp1| + 1e-5 */
    char path[512];
} model_case_t;

static void write_model(model_case_t *c)
{
    sd_synth_spec_t s;
    sd_synth_spec_default(&s);
    s.arch = c->arch;
    s.n_layer = 2;
    s.n_embd = c->n_embd;
    s.n_head = c->n_head;
    s.n_head_kv = c->n_head_kv;
    s.head_dim = c->head_dim;
    s.n_ff = c->n_ff;
    s.n_vocab = N_VOCAB;
    s.n_ctx = 64;
    s.weight_type = c->weight_type;
    s.embd_type = SD_DTYPE_F32;
    s.output_type = SD_DTYPE_F32;
    s.tokenizer = SD_SYNTH_TOKENIZER_NONE;
    s.seed = 77;
    s.weight_scale = 0.1f; /* attention far from uniform */
    sd_test_tmp_path(c->path, sizeof c->path, "tp");
    sd_status_t st = sd_synth_write_file(&s, c->path);
    cr_assert_eq(st, SD_OK, "%s: %s", c->label, sd_last_error());
}

static sd_status_t load(const char *path, sd_comm_t *comm, int n_ctx, sd_model_t **m)
{
    sd_model_params_t p;
    sd_model_params_default(&p);
    p.path = path;
    p.n_threads = 1;
    p.n_ctx = n_ctx;
    p.comm = comm;
    return sd_model_load(&p, m);
}

static void tokens_of(int32_t *t, int n, uint32_t seed)
{
    for (int i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        t[i] = (int32_t)((seed >> 8) % N_VOCAB);
    }
}

/* Logits of the prompt (one forward) then N_STEPS single-token forwards; then a fresh
 * prefill of all N_ROWS tokens and a rollback (truncate to 9, re-forward the rest) must
 * give the same rows bit for bit. 0 or the failing step's code. */
static int forward_rows(sd_model_t *m, rank_out_t *o)
{
    int32_t tok[N_ROWS];
    tokens_of(tok, N_ROWS, 5);
    size_t row = N_VOCAB * sizeof(float);
    sd_seq_t s, f;
    sd_status_t st = sd_seq_init(&s, m, 64, N_ROWS);
    if (st != SD_OK) return fail(o, 10, "seq_init", st);
    if ((st = sd_forward(&s, tok, N_PROMPT, 0)) != SD_OK) return fail(o, 11, "prompt", st);
    memcpy(o->logits, s.logits, N_PROMPT * row);
    for (int i = N_PROMPT; i < N_ROWS; i++) {
        if ((st = sd_forward(&s, tok + i, 1, 0)) != SD_OK) return fail(o, 12, "step", st);
        memcpy(o->logits + i * N_VOCAB, s.logits, row);
    }
    if ((st = sd_seq_init(&f, m, 64, N_ROWS)) != SD_OK) return fail(o, 13, "seq_init", st);
    if ((st = sd_forward(&f, tok, N_ROWS, 0)) != SD_OK) return fail(o, 14, "prefill", st);
    int same = memcmp(f.logits, o->logits, N_ROWS * row) == 0;
    sd_seq_free(&f);
    if (!same) return fail(o, 15, "one prefill != prompt + steps", SD_OK);
    if ((st = sd_kv_cache_truncate(&s.kv, 9)) != SD_OK) return fail(o, 16, "truncate", st);
    if ((st = sd_forward(&s, tok + 9, N_ROWS - 9, 0)) != SD_OK) return fail(o, 17, "refwd", st);
    same = memcmp(s.logits, o->logits + 9 * N_VOCAB, (N_ROWS - 9) * row) == 0;
    sd_seq_free(&s);
    return same ? 0 : fail(o, 18, "truncate + re-forward != fresh prefill", SD_OK);
}

/* Greedy generation: target-only, n-gram and layer-skip drafters, into o->gen[0..2]. */
static int generate_all(sd_model_t *m, rank_out_t *o)
{
    int32_t prompt[N_PROMPT];
    tokens_of(prompt, N_PROMPT, 9);
    sd_gen_config_t c;
    sd_gen_config_default(&c);
    c.temperature = 0.0f;
    c.max_tokens = N_GEN;
    c.ignore_eos = 1;
    sd_drafter_kind_t kinds[3] = {SD_DRAFTER_NONE, SD_DRAFTER_NGRAM, SD_DRAFTER_LAYERSKIP};
    for (int i = 0; i < 3; i++) {
        sd_spec_config_t sp;
        sd_spec_config_default(&sp);
        sp.drafter = kinds[i];
        sp.k = 4;
        sp.layerskip_layers = 1;
        sd_gen_result_t r;
        sd_status_t st = sd_generate_speculative(m, prompt, N_PROMPT, &c, &sp, NULL, NULL, &r);
        if (st != SD_OK) {
            sd_gen_result_free(&r);
            return fail(o, 20 + i, "generate", st);
        }
        o->n_gen[i] = (int)r.n_tokens;
        memcpy(o->gen[i], r.tokens, r.n_tokens * sizeof(int32_t));
        sd_gen_result_free(&r);
    }
    return 0;
}

static int model_work(sd_comm_t *comm, rank_out_t *o, const void *arg)
{
    const model_case_t *c = arg;
    sd_model_t *m = NULL;
    sd_status_t st = load(c->path, comm, 64, &m);
    if (st != SD_OK) return fail(o, 1, "load", st);
    int code = forward_rows(m, o);
    if (code == 0) code = generate_all(m, o);
    sd_model_free(m);
    return code;
}

/* max |a - ref| / max |ref| over the logits. */
static double rel_diff(const float *a, const float *ref, size_t n, double *max_ref)
{
    double d = 0.0, mr = 0.0;
    for (size_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - (double)ref[i]));
        mr = fmax(mr, fabs((double)ref[i]));
    }
    *max_ref = mr;
    return d / mr;
}

static void assert_same_outputs(const rank_out_t *a, const rank_out_t *b, const char *what)
{
    cr_assert(memcmp(a->logits, b->logits, sizeof a->logits) == 0, "%s: logits differ", what);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(a->n_gen[i], N_GEN, "%s: generation %d made %d tokens", what, i,
                     a->n_gen[i]);
        cr_assert_eq(b->n_gen[i], N_GEN, "%s: generation %d made %d tokens", what, i,
                     b->n_gen[i]);
        cr_assert(memcmp(a->gen[i], b->gen[i], sizeof a->gen[i]) == 0,
                  "%s: generation %d differs", what, i);
    }
}

/* TP = 1 in this process, then each TP size on forked ranks: every rank equal to rank 0
 * bit for bit, rank 0 within tolerance of TP = 1, greedy tokens equal to TP = 1's. */
static void check_model(model_case_t *c)
{
    write_model(c);
    rank_out_t *out = shared_outs(), ref = {0};
    sd_model_t *m = NULL;
    sd_status_t st = load(c->path, NULL, 64, &m);
    cr_assert_eq(st, SD_OK, "%s: %s", c->label, sd_last_error());
    cr_assert_eq(forward_rows(m, &ref), 0, "%s TP 1: %s", c->label, ref.err);
    cr_assert_eq(generate_all(m, &ref), 0, "%s TP 1: %s", c->label, ref.err);
    sd_model_free(m);
    for (int k = 0; k < 2 && c->sizes[k]; k++) {
        int P = c->sizes[k];
        double secs = run_ranks(P, model_work, c, out);
        char what[64];
        for (int r = 1; r < P; r++) {
            snprintf(what, sizeof what, "%s TP %d rank %d vs rank 0", c->label, P, r);
            assert_same_outputs(&out[r], &out[0], what);
        }
        double max_ref, rel = rel_diff(out[0].logits, ref.logits, N_ROWS * N_VOCAB, &max_ref);
        cr_log_info("%s TP %d: max |logit - TP1| = %.3g x max|logit| (%.3g); %.2f s", c->label,
                    P, rel, max_ref, secs);
        cr_assert(rel * max_ref <= c->tol_rel * max_ref + 1e-5,
                  "%s TP %d: logits differ from TP 1 by %.3g x max|logit|, tolerance %.3g",
                  c->label, P, rel, c->tol_rel);
        for (int i = 0; i < 3; i++)
            cr_assert(memcmp(out[0].gen[i], ref.gen[0], sizeof ref.gen[0]) == 0,
                      "%s TP %d: generation %d differs from TP 1 target-only", c->label, P, i);
    }
    for (int i = 1; i < 3; i++)
        cr_assert(memcmp(ref.gen[i], ref.gen[0], sizeof ref.gen[0]) == 0,
                  "%s TP 1: drafter %d differs from target-only", c->label, i);
    remove(c->path);
    munmap(out, MAX_RANKS * sizeof(rank_out_t));
}

/* GQA 8/2 splits the KV heads at TP 2 and replicates them at TP 4; qwen2 4/2 at TP 4 has
 * one query head per rank; Q4_K's Wo (8 heads of 64 = 512 columns) splits at 256, one
 * block, so TP 2 only. */
ParameterizedTestParameters(engine_tp, matches_tp1)
{
    static model_case_t cases[] = {
        {"llama-f32", "llama", 64, 8, 2, 0, 128, SD_DTYPE_F32, {2, 4}, 1e-5, ""},
        {"qwen2-f32", "qwen2", 64, 4, 2, 0, 128, SD_DTYPE_F32, {2, 4}, 1e-5, ""},
        {"llama-q8_0", "llama", 128, 4, 4, 0, 256, SD_DTYPE_Q8_0, {2, 4}, 5e-4, ""},
        {"llama-q4_0", "llama", 128, 8, 2, 0, 256, SD_DTYPE_Q4_0, {2, 4}, 5e-4, ""},
        {"llama-q4_k", "llama", 256, 8, 4, 64, 512, SD_DTYPE_Q4_K, {2, 0}, 5e-4, ""},
    };
    return cr_make_param_array(model_case_t, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(model_case_t *c, engine_tp, matches_tp1, .init = tp_init, .timeout = 60)
{
    check_model(c);
}

/* ---- bad plans and bad input --------------------------------------------------------- */

static int load_work(sd_comm_t *comm, rank_out_t *o, const void *arg)
{
    const model_case_t *c = arg;
    sd_model_t *m = NULL;
    o->statuses[0] = load(c->path, comm, 64, &m);
    snprintf(o->err, sizeof o->err, "%s", sd_last_error());
    sd_model_free(m);
    return 0;
}

typedef struct bad_plan {
    model_case_t model;
    int size;
    const char *msg1, *msg2;
} bad_plan_t;

Test(engine_tp, bad_plans_fail_on_every_rank, .init = tp_init, .timeout = 60)
{
    bad_plan_t cases[] = {
        {{"6-heads", "llama", 48, 6, 2, 0, 64, SD_DTYPE_F32, {0}, 0, ""}, 4,
         "6 attention heads", "TP size 4"},
        {{"kv-3", "llama", 48, 6, 3, 0, 64, SD_DTYPE_F32, {0}, 0, ""}, 2,
         "3 KV heads", "TP size 2"},
        {{"q4_k-wo", "llama", 256, 4, 4, 0, 512, SD_DTYPE_Q4_K, {0}, 0, ""}, 2,
         "'blk.0.attn_output.weight' is Q4_K in blocks of 256", "128 columns"},
        {{"q8_0-wo", "llama", 64, 8, 8, 0, 128, SD_DTYPE_Q8_0, {0}, 0, ""}, 4,
         "'blk.0.attn_output.weight' is Q8_0 in blocks of 32", "16 columns"},
    };
    rank_out_t *out = shared_outs();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bad_plan_t *b = &cases[i];
        write_model(&b->model);
        double secs = run_ranks(b->size, load_work, &b->model, out);
        for (int r = 0; r < b->size; r++) {
            cr_assert_eq(out[r].statuses[0], SD_ERR_TP_PLAN, "%s rank %d: %s: %s",
                         b->model.label, r, sd_status_string(out[r].statuses[0]), out[r].err);
            cr_assert(strstr(out[r].err, b->msg1) && strstr(out[r].err, b->msg2),
                      "%s rank %d: '%s' lacks '%s' / '%s'", b->model.label, r, out[r].err,
                      b->msg1, b->msg2);
        }
        cr_assert_lt(secs, 5.0, "%s: %.1f s: looks like a wait", b->model.label, secs);
        remove(b->model.path);
    }
    munmap(out, MAX_RANKS * sizeof(rank_out_t));
}

/* A tensor-parallel model on CUDA where no device can serve it (a build without CUDA, or
 * no GPU): every rank fails alike, naming why, before any collective (SPECDEC_DEVICE
 * reaches the loader as the default). With a device, tests/cuda/test_cuda_tp.c runs it. */
Test(engine_tp, cuda_with_tp_without_a_device_fails_on_every_rank, .init = tp_init, .timeout = 60)
{
    int n = 0;
    if (sd_cuda_built() && sd_cuda_device_count(&n) == SD_OK && n > 0)
        cr_skip_test("a CUDA device is present: TP on CUDA runs (tests/cuda/test_cuda_tp.c)");
    sd_clear_error();
    model_case_t c = {"cuda-tp", "llama", 48, 4, 2, 0, 64, SD_DTYPE_F32, {0}, 0, ""};
    write_model(&c);
    setenv("SPECDEC_DEVICE", "cuda", 1);
    rank_out_t *out = shared_outs();
    double secs = run_ranks(2, load_work, &c, out);
    unsetenv("SPECDEC_DEVICE");
    sd_status_t want = sd_cuda_built() ? SD_ERR_INVALID_ARG : SD_ERR_NOT_BUILT;
    for (int r = 0; r < 2; r++) {
        cr_assert_eq(out[r].statuses[0], want, "rank %d: %s: %s", r,
                     sd_status_string(out[r].statuses[0]), out[r].err);
        cr_assert(strstr(out[r].err, sd_cuda_built() ? "does not exist (0 devices)" : "without CUDA"),
                  "rank %d: %s", r, out[r].err);
    }
    cr_assert_lt(secs, 5.0, "%.1f s: looks like a wait", secs);
    remove(c.path);
    munmap(out, MAX_RANKS * sizeof(rank_out_t));
}

/* Calls that must fail before any collective, interleaved with ones that must work (and
 * so find the ranks' collectives still in step). n_ctx = 8. */
static int bad_input_work(sd_comm_t *comm, rank_out_t *o, const void *arg)
{
    const model_case_t *c = arg;
    sd_model_t *m = NULL;
    sd_status_t st = load(c->path, comm, 8, &m);
    if (st != SD_OK) return fail(o, 1, "load", st);
    sd_seq_t s;
    if ((st = sd_seq_init(&s, m, 0, 6)) != SD_OK) return fail(o, 2, "seq_init", st);
    int32_t tok[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, bad = N_VOCAB;
    o->statuses[0] = sd_forward(&s, &bad, 1, 0);
    o->kv_len[0] = s.kv.len;
    o->statuses[1] = sd_forward(&s, tok, 5, 0);
    o->kv_len[1] = s.kv.len;
    o->statuses[2] = sd_forward(&s, tok, 4, 0);   /* 5 + 4 > 8 */
    o->kv_len[2] = s.kv.len;
    o->statuses[3] = sd_forward(&s, tok, 7, 0);   /* > max_tokens */
    o->kv_len[3] = s.kv.len;
    o->statuses[4] = sd_forward(&s, tok, 3, 0);   /* fills the context */
    o->kv_len[4] = s.kv.len;
    memcpy(o->logits, s.logits, 3 * N_VOCAB * sizeof(float));
    sd_seq_free(&s);
    sd_gen_config_t gc;
    sd_gen_config_default(&gc);
    gc.temperature = 0.0f;
    gc.max_tokens = 2;
    sd_gen_result_t r;
    o->statuses[5] = sd_generate(m, tok, 9, &gc, NULL, NULL, &r); /* prompt > n_ctx */
    sd_gen_result_free(&r);
    int32_t prompt[2] = {3, N_VOCAB + 7};
    o->statuses[6] = sd_generate(m, prompt, 2, &gc, NULL, NULL, &r);
    sd_gen_result_free(&r);
    sd_model_free(m);
    return 0;
}

Test(engine_tp, bad_input_fails_alike_on_every_rank, .init = tp_init, .timeout = 60)
{
    model_case_t c = {"bad-input", "llama", 64, 8, 2, 0, 128, SD_DTYPE_F32, {0}, 0, ""};
    write_model(&c);
    rank_out_t *out = shared_outs();
    const sd_status_t want[7] = {SD_ERR_INVALID_ARG, SD_OK, SD_ERR_CONTEXT_FULL,
                                 SD_ERR_INVALID_ARG, SD_OK, SD_ERR_CONTEXT_FULL,
                                 SD_ERR_INVALID_ARG};
    const int want_len[5] = {0, 5, 5, 5, 8};
    for (int P = 2; P <= 4; P += 2) {
        double secs = run_ranks(P, bad_input_work, &c, out);
        for (int r = 0; r < P; r++) {
            for (int i = 0; i < 7; i++)
                cr_assert_eq(out[r].statuses[i], want[i], "TP %d rank %d call %d: %s", P, r, i,
                             sd_status_string(out[r].statuses[i]));
            for (int i = 0; i < 5; i++)
                cr_assert_eq(out[r].kv_len[i], want_len[i], "TP %d rank %d call %d", P, r, i);
            cr_assert(memcmp(out[r].logits, out[0].logits, 3 * N_VOCAB * sizeof(float)) == 0,
                      "TP %d rank %d: logits after the refused calls differ", P, r);
        }
        cr_assert_lt(secs, 10.0, "TP %d: %.1f s", P, secs);
    }
    remove(c.path);
    munmap(out, MAX_RANKS * sizeof(rank_out_t));
}

/* Rank 0 forwards; the other rank leaves after loading. Rank 0's forward must fail with
 * the comm's status, kv.len unchanged, and the next call must fail at once. */
static int lost_peer_work(sd_comm_t *comm, rank_out_t *o, const void *arg)
{
    const model_case_t *c = arg;
    sd_model_t *m = NULL;
    sd_status_t st = load(c->path, comm, 16, &m);
    if (st != SD_OK) return fail(o, 1, "load", st);
    if (sd_comm_rank(comm) != 0) {
        sd_model_free(m);
        return 0;
    }
    sd_seq_t s;
    if ((st = sd_seq_init(&s, m, 0, 4)) != SD_OK) return fail(o, 2, "seq_init", st);
    int32_t tok[2] = {1, 2};
    double t0 = sd_now();
    o->statuses[0] = sd_forward(&s, tok, 2, 0);
    o->kv_len[0] = s.kv.len;
    snprintf(o->err, sizeof o->err, "%s", sd_last_error());
    double t1 = sd_now();
    o->statuses[1] = sd_forward(&s, tok, 2, 0);
    o->kv_len[1] = s.kv.len;
    o->call_seconds[0] = t1 - t0;
    o->call_seconds[1] = sd_now() - t1;
    sd_seq_free(&s);
    sd_model_free(m);
    return 0;
}

Test(engine_tp, lost_peer_fails_forward_with_kv_unchanged, .timeout = 60)
{
    setenv("SPECDEC_COMM_TIMEOUT_MS", "2000", 1);
    model_case_t c = {"lost-peer", "llama", 64, 8, 2, 0, 128, SD_DTYPE_F32, {0}, 0, ""};
    write_model(&c);
    rank_out_t *out = shared_outs();
    run_ranks(2, lost_peer_work, &c, out);
    for (int i = 0; i < 2; i++) {
        sd_status_t st = out[0].statuses[i];
        cr_assert(st == SD_ERR_COMM_TIMEOUT || st == SD_ERR_PEER_LOST,
                  "call %d: %s (%s)", i, sd_status_string(st), out[0].err);
        cr_assert_eq(out[0].kv_len[i], 0, "call %d left kv.len = %d", i, out[0].kv_len[i]);
    }
    cr_log_info("lost peer: first forward failed after %.2f s, second after %.4f s",
                out[0].call_seconds[0], out[0].call_seconds[1]);
    cr_assert_lt(out[0].call_seconds[0], 2.0 + 2.0, "first failure took %.1f s",
                 out[0].call_seconds[0]);
    cr_assert_lt(out[0].call_seconds[1], 0.5, "second call took %.1f s", out[0].call_seconds[1]);
    remove(c.path);
    munmap(out, MAX_RANKS * sizeof(rank_out_t));
}
