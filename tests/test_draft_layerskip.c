/* Layer-skip drafter: on a synthetic 3-layer target with L = 1 and L = 2, its logits and
 * its KV cache (L layers only) equal the target run with sd_forward(n_layers_used = L),
 * bit for bit; greedy and sampled proposals equal that truncated model's chain run by
 * hand; accept bookkeeping matches a fresh drafter for every n_accepted; L out of range,
 * NULL arguments and a full context are errors. On SmolLM2 (skipped when absent): greedy
 * proposals with L = 8 of 30 layers and the draft-model vocabulary check of 49152 texts. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "draft/layerskip.h"
#include "draft/model_drafter.h"
#include "draft/seq_drafter.h"
#include "model/forward.h"
#include "model/model.h"
#include "gguf/synthetic.h"
#include "support/test_util.h"
#include "verify/philox.h"

#define K_MAX 6
#define N_VOCAB 320

static sd_model_t *load_path(const char *path, int n_ctx, int n_threads)
{
    sd_model_params_t p;
    sd_model_params_default(&p);
    p.path = path;
    p.n_threads = n_threads;
    p.n_ctx = n_ctx;
    sd_model_t *m = NULL;
    sd_status_t st = sd_model_load(&p, &m);
    cr_assert_eq(st, SD_OK, "load %s: %s", sd_status_string(st), sd_last_error());
    return m;
}

/* A 3-layer qwen2 (biases) target with GQA. */
static sd_model_t *load_target(int n_ctx)
{
    sd_synth_spec_t s;
    sd_synth_spec_default(&s);
    s.arch = "qwen2";
    s.n_layer = 3;
    s.n_ctx = 128;
    s.seed = 21;
    s.weight_scale = 0.25f;
    char path[512];
    sd_test_tmp_path(path, sizeof path, "layerskip");
    cr_assert_eq(sd_synth_write_file(&s, path), SD_OK, "synth: %s", sd_last_error());
    sd_model_t *m = load_path(path, n_ctx, 1);
    remove(path);
    return m;
}

static sd_drafter_t *make(const sd_model_t *target, int L)
{
    sd_drafter_t *d = NULL;
    sd_status_t st = sd_drafter_layerskip_new(target, L, &d);
    cr_assert_eq(st, SD_OK, "new L = %d: %s: %s", L, sd_status_string(st), sd_last_error());
    cr_assert_str_eq(sd_drafter_name(d), "layerskip");
    return d;
}

static void make_context(int32_t *ctx, int n, uint32_t salt, int n_vocab)
{
    for (int i = 0; i < n; i++)
        ctx[i] = (int32_t)((i * 41u + salt * 97u + 11u) % (uint32_t)n_vocab);
}

typedef struct proposal {
    int32_t tokens[K_MAX];
    float q[K_MAX * N_VOCAB];
    int n, has_q;
} proposal_t;

static const sd_sampler_params_t GREEDY = {.temperature = 0.0f, .top_p = 1.0f};
static const sd_sampler_params_t SAMPLE = {.temperature = 1.0f, .top_p = 0.9f, .min_p = 0.01f};

static sd_status_t try_propose(sd_drafter_t *d, const sd_sampler_params_t *sp, int k, int64_t pos0,
                               proposal_t *p)
{
    memset(p, 0, sizeof *p);
    sd_draft_request_t req = {.k = k, .params = sp, .seed = 4242, .pos0 = pos0};
    sd_draft_out_t out = {.tokens = p->tokens, .q = p->q, .n_vocab = N_VOCAB};
    sd_status_t st = sd_drafter_propose(d, &req, &out);
    p->n = out.n;
    p->has_q = out.has_q;
    return st;
}

static void propose(sd_drafter_t *d, const sd_sampler_params_t *sp, int k, int64_t pos0,
                    proposal_t *p)
{
    sd_status_t st = try_propose(d, sp, k, pos0, p);
    cr_assert_eq(st, SD_OK, "propose: %s: %s", sd_status_string(st), sd_last_error());
    cr_assert_eq(p->n, k);
}

/* ---- equality with sd_forward(n_layers_used = L) ------------------------------------ */

typedef struct ls_case {
    int L;
    int n_ctx_tokens;
} ls_case_t;

ParameterizedTestParameters(layerskip, matches_truncated_target)
{
    static ls_case_t cases[] = {{1, 5}, {2, 5}, {1, 70}, {2, 70}}; /* 70: prefill in 2 chunks */
    return cr_make_param_array(ls_case_t, cases, sizeof cases / sizeof cases[0]);
}

/* Logits after the context, the cache rows of every used layer, and the proposals (greedy
 * then sampled) against the full target run by hand with n_layers_used = L. */
ParameterizedTest(ls_case_t *c, layerskip, matches_truncated_target, .timeout = 120)
{
    sd_model_t *target = load_target(0);
    int n = c->n_ctx_tokens, L = c->L;
    int32_t ctx[80];
    make_context(ctx, n, (uint32_t)L, N_VOCAB);
    sd_drafter_t *d = make(target, L);
    const sd_seq_t *ds = sd_seq_drafter_seq(d);
    cr_assert_eq(ds->kv.n_layer, L, "the drafter's cache holds only the %d layers it runs", L);
    cr_assert_eq(ds->kv.n_ctx, target->n_ctx);
    cr_assert_eq(sd_drafter_begin(d, ctx, n), SD_OK, "%s", sd_last_error());
    proposal_t p;
    propose(d, &GREEDY, 1, n, &p); /* feeds the last context token only */

    sd_seq_t ref;
    cr_assert_eq(sd_seq_init(&ref, target, 0, n), SD_OK, "%s", sd_last_error());
    cr_assert_eq(sd_forward(&ref, ctx, n, L), SD_OK, "%s", sd_last_error());
    cr_assert(memcmp(ds->logits, ref.logits + (size_t)(n - 1) * N_VOCAB, N_VOCAB * sizeof(float)) == 0,
              "logits after the context differ from sd_forward(n_layers_used = %d)", L);
    size_t kvd = (size_t)target->hp.n_head_kv * target->hp.head_dim;
    cr_assert_eq(ds->kv.len, n);
    for (int il = 0; il < L; il++)
        for (int p = 0; p < n; p++)
            for (int v = 0; v < 2; v++)
                cr_assert(memcmp(sd_kv_cache_row(&ds->kv, v, il, p), sd_kv_cache_row(&ref.kv, v, il, p),
                                 kvd * sizeof(float)) == 0, "%s layer %d position %d", v ? "V" : "K", il, p);
    cr_assert_eq(p.tokens[0], sd_sample_greedy(ref.logits + (size_t)(n - 1) * N_VOCAB, N_VOCAB));

    /* Sampled chain by hand, continuing the reference sequence. */
    proposal_t s;
    propose(d, &SAMPLE, K_MAX, n, &s);
    cr_assert_eq(s.has_q, 1);
    sd_sampler_scratch_t scratch;
    cr_assert_eq(sd_sampler_scratch_init(&scratch, N_VOCAB), SD_OK);
    float q[N_VOCAB];
    const float *logits = ref.logits + (size_t)(n - 1) * N_VOCAB;
    for (int i = 0; i < K_MAX; i++) {
        sd_sampler_probs(&SAMPLE, logits, N_VOCAB, &scratch, q);
        int32_t t = sd_sample_from_probs(q, N_VOCAB, sd_rng_uniform(4242, (uint64_t)(n + i), SD_RNG_DRAFT));
        cr_assert_eq(s.tokens[i], t, "sampled token %d: %d, by hand %d", i, s.tokens[i], t);
        cr_assert(memcmp(s.q + (size_t)i * N_VOCAB, q, sizeof q) == 0, "q row %d", i);
        cr_assert_eq(sd_forward(&ref, &t, 1, L), SD_OK, "%s", sd_last_error());
        logits = ref.logits;
    }
    sd_sampler_scratch_free(&scratch);
    sd_seq_free(&ref);
    /* begin: ceil((n-1)/64) chunks; propose 1: 1; propose K_MAX: 1 + (K_MAX - 1) */
    uint64_t want = (uint64_t)((n - 1 + 63) / 64) + 1 + K_MAX;
    cr_assert_eq(sd_drafter_layerskip_forwards(d), want);
    cr_assert_eq(sd_drafter_forwards(d), want);
    cr_assert_eq(sd_drafter_model_forwards(d), 0, "not a draft-model drafter");
    sd_drafter_free(d);
    sd_model_free(target);
}

Test(layerskip, accept_every_n_matches_fresh, .timeout = 120)
{
    sd_model_t *target = load_target(0);
    int32_t ctx[32], committed[32];
    make_context(ctx, 9, 3, N_VOCAB);
    sd_drafter_t *d = make(target, 2);
    for (int n_acc = 0; n_acc <= K_MAX; n_acc++) {
        cr_assert_eq(sd_drafter_begin(d, ctx, 9), SD_OK, "%s", sd_last_error());
        proposal_t p, again, want;
        propose(d, &SAMPLE, K_MAX, 9, &p);
        int32_t next = (int32_t)((n_acc * 31 + 7) % N_VOCAB);
        cr_assert_eq(sd_drafter_accept(d, n_acc, next), SD_OK, "%s", sd_last_error());
        memcpy(committed, ctx, 9 * sizeof *ctx);
        memcpy(committed + 9, p.tokens, (size_t)n_acc * sizeof *ctx);
        committed[9 + n_acc] = next;
        int len = 9 + n_acc + 1;
        propose(d, &SAMPLE, K_MAX, len, &again);
        sd_drafter_t *f = make(target, 2);
        cr_assert_eq(sd_drafter_begin(f, committed, len), SD_OK, "%s", sd_last_error());
        propose(f, &SAMPLE, K_MAX, len, &want);
        sd_drafter_free(f);
        for (int i = 0; i < K_MAX; i++)
            cr_assert_eq(again.tokens[i], want.tokens[i], "n_accepted %d, token %d", n_acc, i);
        cr_assert(memcmp(again.q, want.q, sizeof again.q) == 0, "n_accepted %d: q rows", n_acc);
    }
    sd_drafter_free(d);
    sd_model_free(target);
}

/* ---- KV cache shared with the target ------------------------------------------------- */

/* A speculative loop by hand: the target verifies [last, d...] on its sequence (which the
 * shared drafter writes into), rolls back to the accepted length, both drafters commit.
 * The shared drafter proposes exactly what an unshared one does, and the target's logits
 * equal those of a sequence no drafter touches. target_prefill: tokens the target
 * prefilled before the first step (0: the drafter fills layers 0..L-1 itself). */
static void check_shared_loop(int L, int target_prefill)
{
    sd_model_t *target = load_target(0);
    int32_t ctx[128];
    int len = 20;
    make_context(ctx, len, 9, N_VOCAB);
    sd_seq_t ts, ref; /* the target's sequence (shared), and an untouched copy */
    cr_assert_eq(sd_seq_init(&ts, target, 0, 32), SD_OK, "%s", sd_last_error());
    cr_assert_eq(sd_seq_init(&ref, target, 0, 32), SD_OK, "%s", sd_last_error());
    if (target_prefill > 0) {
        cr_assert_eq(sd_forward(&ts, ctx, target_prefill, 0), SD_OK, "%s", sd_last_error());
        cr_assert_eq(sd_forward(&ref, ctx, target_prefill, 0), SD_OK, "%s", sd_last_error());
    }
    sd_drafter_t *sh = make(target, L), *own = make(target, L);
    cr_assert_eq(sd_drafter_layerskip_share_kv(sh, &ts), SD_OK, "%s", sd_last_error());
    cr_assert_eq(sd_drafter_begin(sh, ctx, len), SD_OK, "%s", sd_last_error());
    cr_assert_eq(sd_drafter_begin(own, ctx, len), SD_OK, "%s", sd_last_error());
    cr_assert_eq(sd_drafter_layerskip_forwards(sh), 0, "begin prefills nothing when shared");
    if (target_prefill == 0) { /* the target catches up to all but the last token */
        proposal_t a, b;
        propose(sh, &SAMPLE, 1, len, &a);
        propose(own, &SAMPLE, 1, len, &b);
        cr_assert(memcmp(a.q, b.q, N_VOCAB * sizeof(float)) == 0,
                  "q after the drafter's own prefill into the target's cache");
        cr_assert_eq(sd_forward(&ts, ctx, len - 1, 0), SD_OK, "%s", sd_last_error());
        cr_assert_eq(sd_forward(&ref, ctx, len - 1, 0), SD_OK, "%s", sd_last_error());
    }
    for (int step = 0; step < 8; step++) {
        proposal_t a, b;
        int k = 1 + step % K_MAX;
        propose(sh, &SAMPLE, k, len, &a);
        propose(own, &SAMPLE, k, len, &b);
        for (int i = 0; i < k; i++)
            cr_assert_eq(a.tokens[i], b.tokens[i], "step %d token %d", step, i);
        cr_assert(memcmp(a.q, b.q, (size_t)k * N_VOCAB * sizeof(float)) == 0, "step %d: q", step);
        int32_t block[K_MAX + 1];
        block[0] = ctx[len - 1];
        memcpy(block + 1, a.tokens, (size_t)k * sizeof *block);
        cr_assert_eq(ts.kv.len, len - 1, "step %d: the target holds all but the last token", step);
        cr_assert_eq(sd_forward(&ts, block, k + 1, 0), SD_OK, "%s", sd_last_error());
        cr_assert_eq(sd_forward(&ref, block, k + 1, 0), SD_OK, "%s", sd_last_error());
        cr_assert(memcmp(ts.logits, ref.logits, (size_t)(k + 1) * N_VOCAB * sizeof(float)) == 0,
                  "step %d: the drafter disturbed the target's cache", step);
        int n_acc = (step * 5) % (k + 1);
        int32_t next = sd_sample_greedy(ts.logits + (size_t)n_acc * N_VOCAB, N_VOCAB);
        cr_assert_eq(sd_kv_cache_truncate(&ts.kv, len + n_acc), SD_OK);
        cr_assert_eq(sd_kv_cache_truncate(&ref.kv, len + n_acc), SD_OK);
        cr_assert_eq(sd_drafter_accept(sh, n_acc, next), SD_OK, "%s", sd_last_error());
        cr_assert_eq(sd_drafter_accept(own, n_acc, next), SD_OK, "%s", sd_last_error());
        memcpy(ctx + len, a.tokens, (size_t)n_acc * sizeof *ctx);
        ctx[len + n_acc] = next;
        len += n_acc + 1;
    }
    /* Same forward calls per propose; begin's prefill call is saved. */
    cr_assert_eq(sd_drafter_layerskip_forwards(sh) + 1, sd_drafter_layerskip_forwards(own));
    sd_drafter_free(sh); /* leaves the target's buffers alone (ASan: no double free) */
    sd_drafter_free(own);
    sd_seq_free(&ts);
    sd_seq_free(&ref);
    sd_model_free(target);
}

Test(layerskip, shared_kv_target_prefilled, .timeout = 120) { check_shared_loop(2, 19); }
Test(layerskip, shared_kv_drafter_prefills, .timeout = 120) { check_shared_loop(1, 0); }

Test(layerskip, shared_kv_bad_arguments, .timeout = 60)
{
    sd_model_t *target = load_target(0), *other = load_target(0);
    sd_seq_t ts;
    cr_assert_eq(sd_seq_init(&ts, other, 0, 4), SD_OK, "%s", sd_last_error());
    sd_drafter_t *d = make(target, 1), *md = NULL;
    cr_assert_eq(sd_drafter_layerskip_share_kv(d, &ts), SD_ERR_INVALID_ARG, "another model's sequence");
    cr_assert_eq(sd_drafter_layerskip_share_kv(d, NULL), SD_ERR_INVALID_ARG);
    cr_assert_eq(sd_drafter_layerskip_share_kv(NULL, &ts), SD_ERR_INVALID_ARG);
    cr_assert_eq(sd_drafter_model_new(target, other, &md), SD_OK, "%s", sd_last_error());
    cr_assert_eq(sd_drafter_layerskip_share_kv(md, &ts), SD_ERR_INVALID_ARG, "not layer-skip");
    cr_assert(strstr(sd_last_error(), "model"), "%s", sd_last_error());
    sd_drafter_free(md);
    sd_drafter_free(d);
    sd_seq_free(&ts);
    sd_model_free(other);
    sd_model_free(target);
}

/* ---- errors -------------------------------------------------------------------------- */

Test(layerskip, bad_layer_counts_and_arguments, .timeout = 60)
{
    sd_model_t *target = load_target(0);
    int bad[] = {0, -1, 3, 4};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sd_drafter_t *d = NULL;
        cr_assert_eq(sd_drafter_layerskip_new(target, bad[i], &d), SD_ERR_INVALID_ARG, "L = %d", bad[i]);
        cr_assert_null(d);
        char want[32];
        snprintf(want, sizeof want, "L = %d", bad[i]);
        cr_assert(strstr(sd_last_error(), want) && strstr(sd_last_error(), "n_layer = 3"), "%s",
                  sd_last_error());
    }
    sd_drafter_t *d = NULL;
    cr_assert_eq(sd_drafter_layerskip_new(NULL, 1, &d), SD_ERR_INVALID_ARG);
    cr_assert_eq(sd_drafter_layerskip_new(target, 1, NULL), SD_ERR_INVALID_ARG);
    cr_assert_eq(sd_drafter_layerskip_forwards(NULL), 0);
    sd_model_free(target);
}

Test(layerskip, context_full, .timeout = 60)
{
    sd_model_t *target = load_target(12);
    sd_drafter_t *d = make(target, 1);
    int32_t ctx[16];
    make_context(ctx, 16, 5, N_VOCAB);
    cr_assert_eq(sd_drafter_begin(d, ctx, 13), SD_ERR_CONTEXT_FULL);
    cr_assert(strstr(sd_last_error(), "13") && strstr(sd_last_error(), "12"), "%s", sd_last_error());
    cr_assert_eq(sd_drafter_begin(d, ctx, 12), SD_OK, "%s", sd_last_error());
    proposal_t p;
    cr_assert_eq(try_propose(d, &GREEDY, K_MAX, 12, &p), SD_OK, "%s", sd_last_error());
    cr_assert_eq(p.n, 1, "only the unfed last proposal fits: %d", p.n);
    cr_assert_eq(sd_drafter_accept(d, 1, 0), SD_OK, "%s", sd_last_error());
    cr_assert_eq(try_propose(d, &GREEDY, K_MAX, 14, &p), SD_ERR_CONTEXT_FULL);
    cr_assert(strstr(sd_last_error(), "14") && strstr(sd_last_error(), "12"), "%s", sd_last_error());
    cr_assert_eq(sd_drafter_rollback(d, 10), SD_OK, "%s", sd_last_error());
    cr_assert_eq(try_propose(d, &GREEDY, K_MAX, 10, &p), SD_OK, "%s", sd_last_error());
    cr_assert_eq(p.n, 3);
    sd_drafter_free(d);
    sd_model_free(target);
}

/* ---- the real model ------------------------------------------------------------------ */

Test(layerskip, smollm2_greedy_chain, .timeout = 300)
{
    const char *path = sd_test_real_model();
    if (path == NULL)
        cr_skip_test("SmolLM2 not found");
    sd_model_t *m = load_path(path, 256, 2);
    int n_vocab = m->hp.n_vocab, L = 8;
    int32_t ctx[24];
    make_context(ctx, 24, 1, n_vocab);
    sd_drafter_t *d = make(m, L);
    cr_assert_eq(sd_drafter_begin(d, ctx, 24), SD_OK, "%s", sd_last_error());
    int32_t toks[4];
    sd_draft_request_t req = {.k = 4, .params = &GREEDY, .seed = 1, .pos0 = 24};
    sd_draft_out_t out = {.tokens = toks};
    cr_assert_eq(sd_drafter_propose(d, &req, &out), SD_OK, "%s", sd_last_error());
    cr_assert_eq(out.n, 4);
    sd_seq_t ref;
    cr_assert_eq(sd_seq_init(&ref, m, 0, 24), SD_OK, "%s", sd_last_error());
    cr_assert_eq(sd_forward(&ref, ctx, 24, L), SD_OK, "%s", sd_last_error());
    const float *logits = ref.logits + (size_t)23 * n_vocab;
    for (int i = 0; i < 4; i++) {
        int32_t t = sd_sample_greedy(logits, n_vocab);
        cr_assert_eq(toks[i], t, "token %d: %d, by hand %d", i, toks[i], t);
        cr_assert_eq(sd_forward(&ref, &t, 1, L), SD_OK, "%s", sd_last_error());
        logits = ref.logits;
    }
    sd_seq_free(&ref);
    sd_drafter_free(d);
    /* The same file as its own draft: 49152 token texts compared, all equal. */
    sd_drafter_t *md = NULL;
    cr_assert_eq(sd_drafter_model_new(m, m, &md), SD_OK, "%s", sd_last_error());
    sd_drafter_free(md);
    sd_model_free(m);
}
