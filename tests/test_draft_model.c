/* Draft-model drafter: the vocabulary check (sizes; one token text patched in the file),
 * greedy proposals == the argmax chain of the draft model run by hand, sampled proposals
 * == q rows of sd_sampler_probs over the hand-run logits with d_i drawn by SD_RNG_DRAFT
 * uniforms, accept/rollback bookkeeping (the next proposal equals a fresh drafter's on the
 * committed context, bit for bit, for every n_accepted), early stop on min_confidence,
 * context limits and bad arguments. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "draft/model_drafter.h"
#include "model/forward.h"
#include "model/model.h"
#include "gguf/synthetic.h"
#include "support/test_util.h"
#include "verify/philox.h"

#define K_MAX 8
#define N_VOCAB 320

/* ---- models ----------------------------------------------------------------------- */

static void spec_for(sd_synth_spec_t *s, uint64_t seed, int n_layer)
{
    sd_synth_spec_default(s); /* gpt2 tokenizer, vocab 320 */
    s->n_layer = n_layer;
    s->n_ctx = 128;
    s->seed = seed;
    s->weight_scale = 0.25f; /* peaked enough that top probabilities vary */
}

static sd_model_t *load_file(const char *path, int n_ctx)
{
    sd_model_params_t p;
    sd_model_params_default(&p);
    p.path = path;
    p.n_threads = 1;
    p.n_ctx = n_ctx;
    sd_model_t *m = NULL;
    sd_status_t st = sd_model_load(&p, &m);
    cr_assert_eq(st, SD_OK, "load %s: %s", sd_status_string(st), sd_last_error());
    return m;
}

static sd_model_t *load_spec(const sd_synth_spec_t *s, int n_ctx)
{
    char path[512];
    sd_test_tmp_path(path, sizeof path, "draft_model");
    cr_assert_eq(sd_synth_write_file(s, path), SD_OK, "synth: %s", sd_last_error());
    sd_model_t *m = load_file(path, n_ctx);
    remove(path);
    return m;
}

static sd_model_t *load(uint64_t seed, int n_layer, int n_ctx)
{
    sd_synth_spec_t s;
    spec_for(&s, seed, n_layer);
    return load_spec(&s, n_ctx);
}

static sd_drafter_t *make(sd_model_t *draft, const sd_model_t *target)
{
    sd_drafter_t *d = NULL;
    sd_status_t st = sd_drafter_model_new(draft, target, &d);
    cr_assert_eq(st, SD_OK, "new: %s: %s", sd_status_string(st), sd_last_error());
    cr_assert_str_eq(sd_drafter_name(d), "model");
    return d;
}

static void begin(sd_drafter_t *d, const int32_t *ctx, int n)
{
    cr_assert_eq(sd_drafter_begin(d, ctx, n), SD_OK, "begin: %s", sd_last_error());
}

static void make_context(int32_t *ctx, int n, uint32_t salt)
{
    for (int i = 0; i < n; i++)
        ctx[i] = (int32_t)((i * 37u + salt * 101u + 5u) % N_VOCAB);
}

/* ---- proposals ---------------------------------------------------------------------- */

typedef struct proposal {
    int32_t tokens[K_MAX];
    float q[K_MAX * N_VOCAB];
    int n, has_q;
} proposal_t;

static const sd_sampler_params_t GREEDY = {.temperature = 0.0f, .top_k = 0, .top_p = 1.0f};
static const sd_sampler_params_t SAMPLE = {.temperature = 0.9f, .top_k = 40, .top_p = 0.95f};

static sd_status_t try_propose(sd_drafter_t *d, const sd_sampler_params_t *sp, int k, int64_t pos0,
                               float min_conf, proposal_t *p)
{
    memset(p, 0, sizeof *p);
    sd_draft_request_t req = {.k = k, .params = sp, .seed = 777, .pos0 = pos0,
                              .min_confidence = min_conf};
    sd_draft_out_t out = {.tokens = p->tokens, .q = p->q, .n_vocab = N_VOCAB, .n = -1, .has_q = -1};
    sd_status_t st = sd_drafter_propose(d, &req, &out);
    p->n = out.n;
    p->has_q = out.has_q;
    return st;
}

static void propose(sd_drafter_t *d, const sd_sampler_params_t *sp, int k, int64_t pos0,
                    float min_conf, proposal_t *p)
{
    sd_status_t st = try_propose(d, sp, k, pos0, min_conf, p);
    cr_assert_eq(st, SD_OK, "propose: %s: %s", sd_status_string(st), sd_last_error());
    cr_assert(p->n >= 1 && p->n <= k, "%d tokens for k = %d", p->n, k);
    cr_assert_eq(p->has_q, sp->temperature > 0.0f);
}

static void assert_same(const proposal_t *a, const proposal_t *b, const char *what)
{
    cr_assert_eq(a->n, b->n, "%s: %d tokens vs %d", what, a->n, b->n);
    cr_assert_eq(a->has_q, b->has_q, "%s: has_q", what);
    for (int i = 0; i < a->n; i++)
        cr_assert_eq(a->tokens[i], b->tokens[i], "%s: token %d is %d vs %d", what, i, a->tokens[i],
                     b->tokens[i]);
    if (a->has_q)
        cr_assert(memcmp(a->q, b->q, (size_t)a->n * N_VOCAB * sizeof(float)) == 0,
                  "%s: q rows differ", what);
}

/* ---- the draft model run by hand ---------------------------------------------------- */

typedef struct hand_chain {
    int32_t tokens[K_MAX];
    float q[K_MAX * N_VOCAB];
    float top[K_MAX]; /* the drafter's top probability at each position */
} hand_chain_t;

static float softmax_max(const float *l)
{
    float mx = l[0];
    for (int j = 1; j < N_VOCAB; j++)
        mx = l[j] > mx ? l[j] : mx;
    double s = 0.0;
    for (int j = 0; j < N_VOCAB; j++)
        s += exp((double)(l[j] - mx));
    return (float)(1.0 / s);
}

/* k tokens continuing ctx[n]: prefill in one call, then one token per sd_forward. */
static void run_by_hand(const sd_model_t *m, const sd_sampler_params_t *sp, const int32_t *ctx,
                        int n, int k, hand_chain_t *h)
{
    sd_seq_t s;
    cr_assert_eq(sd_seq_init(&s, m, 0, n), SD_OK, "%s", sd_last_error());
    sd_sampler_scratch_t scratch;
    cr_assert_eq(sd_sampler_scratch_init(&scratch, N_VOCAB), SD_OK);
    cr_assert_eq(sd_forward(&s, ctx, n, 0), SD_OK, "%s", sd_last_error());
    const float *logits = s.logits + (size_t)(n - 1) * N_VOCAB;
    for (int i = 0; i < k; i++) {
        float *q = h->q + (size_t)i * N_VOCAB;
        if (sp->temperature > 0.0f) {
            sd_sampler_probs(sp, logits, N_VOCAB, &scratch, q);
            float u = sd_rng_uniform(777, (uint64_t)(n + i), SD_RNG_DRAFT);
            h->tokens[i] = sd_sample_from_probs(q, N_VOCAB, u);
            h->top[i] = 0.0f;
            for (int j = 0; j < N_VOCAB; j++)
                h->top[i] = q[j] > h->top[i] ? q[j] : h->top[i];
        } else {
            h->tokens[i] = sd_sample_greedy(logits, N_VOCAB);
            h->top[i] = softmax_max(logits);
        }
        cr_assert_eq(sd_forward(&s, &h->tokens[i], 1, 0), SD_OK, "%s", sd_last_error());
        logits = s.logits;
    }
    sd_sampler_scratch_free(&scratch);
    sd_seq_free(&s);
}

/* ---- vocabulary --------------------------------------------------------------------- */

Test(draft_model, vocab_sizes_differ, .timeout = 60)
{
    sd_synth_spec_t s;
    spec_for(&s, 1, 1);
    s.tokenizer = SD_SYNTH_TOKENIZER_NONE;
    s.n_vocab = 96;
    sd_model_t *target = load_spec(&s, 0);
    s.n_vocab = 97;
    sd_model_t *draft = load_spec(&s, 0);
    sd_drafter_t *d = (sd_drafter_t *)&d;
    cr_assert_eq(sd_drafter_model_new(draft, target, &d), SD_ERR_VOCAB_MISMATCH);
    cr_assert_eq(d, (sd_drafter_t *)&d, "out untouched on failure");
    cr_assert(strstr(sd_last_error(), "97") && strstr(sd_last_error(), "96"), "%s",
              sd_last_error());
    /* Without tokenizers equal sizes are all that is checked. */
    sd_model_t *same = load_spec(&s, 0);
    sd_drafter_free(make(same, draft));
    sd_model_free(same);
    sd_model_free(draft);
    sd_model_free(target);
}

Test(draft_model, equal_gpt2_vocabularies_match, .timeout = 60)
{
    sd_model_t *target = load(1, 2, 0), *draft = load(99, 1, 0);
    const sd_tokenizer_t *a = target->tokenizer, *b = draft->tokenizer;
    cr_assert(a && b);
    cr_assert_eq(sd_tokenizer_n_vocab(a), sd_tokenizer_n_vocab(b));
    for (int32_t id = 0; id < N_VOCAB; id++) {
        size_t na, nb;
        const char *ta = sd_tokenizer_token_text(a, id, &na), *tb = sd_tokenizer_token_text(b, id, &nb);
        cr_assert(na == nb && memcmp(ta, tb, na) == 0, "token %d differs", id);
    }
    sd_drafter_free(make(draft, target));
    sd_model_free(draft);
    sd_model_free(target);
}

/* The draft file with the text of token `id` changed in place (same length). */
static sd_model_t *load_patched(const sd_model_t *target, int32_t id)
{
    size_t n;
    const char *text = sd_tokenizer_token_text(target->tokenizer, id, &n);
    cr_assert(text != NULL && n >= 2 && n < 64);
    sd_synth_spec_t s;
    spec_for(&s, 99, 1);
    void *buf = NULL;
    size_t size = 0;
    cr_assert_eq(sd_synth_write_buffer(&s, &buf, &size), SD_OK, "%s", sd_last_error());
    unsigned char pat[72]; /* GGUF string: u64 length, then the bytes */
    uint64_t len = n;
    memcpy(pat, &len, 8);
    memcpy(pat + 8, text, n);
    unsigned char *hit = NULL;
    for (size_t i = 0; i + 8 + n <= size && hit == NULL; i++)
        if (memcmp((unsigned char *)buf + i, pat, 8 + n) == 0)
            hit = (unsigned char *)buf + i;
    cr_assert_not_null(hit, "token %d's text not found in the file", id);
    hit[8 + n - 2] ^= 0x01; /* "<|im_end|>" -> "<|im_enE|>" */
    char path[512];
    sd_test_tmp_path(path, sizeof path, "draft_patched");
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(buf, 1, size, f), size);
    fclose(f);
    free(buf);
    sd_model_t *m = load_file(path, 0);
    remove(path);
    return m;
}

Test(draft_model, vocab_text_differs, .timeout = 60)
{
    sd_model_t *target = load(1, 2, 0);
    int32_t id = N_VOCAB - 1; /* a ChatML special: not part of any merge */
    sd_model_t *draft = load_patched(target, id);
    sd_drafter_t *d = NULL;
    cr_assert_eq(sd_drafter_model_new(draft, target, &d), SD_ERR_VOCAB_MISMATCH);
    char want[32];
    snprintf(want, sizeof want, "token %d:", id);
    cr_assert(strstr(sd_last_error(), want), "%s", sd_last_error());
    size_t n;
    const char *text = sd_tokenizer_token_text(target->tokenizer, id, &n);
    char quoted[80];
    snprintf(quoted, sizeof quoted, "target '%.*s'", (int)n, text);
    cr_assert(strstr(sd_last_error(), quoted), "%s", sd_last_error());
    cr_assert_null(d);
    sd_model_free(draft);
    sd_model_free(target);
}

/* ---- proposals against the hand-run chain ------------------------------------------- */

Test(draft_model, greedy_is_the_argmax_chain, .timeout = 120)
{
    sd_model_t *target = load(1, 2, 0), *draft = load(99, 1, 0);
    sd_drafter_t *d = make(draft, target);
    for (int n_ctx = 1; n_ctx <= 90; n_ctx += 89) { /* 90: prefill in two chunks */
        int32_t ctx[90];
        make_context(ctx, n_ctx, 3);
        begin(d, ctx, n_ctx);
        proposal_t p;
        propose(d, &GREEDY, K_MAX, n_ctx, 0.0f, &p);
        cr_assert_eq(p.n, K_MAX);
        hand_chain_t h;
        run_by_hand(draft, &GREEDY, ctx, n_ctx, K_MAX, &h);
        for (int i = 0; i < K_MAX; i++)
            cr_assert_eq(p.tokens[i], h.tokens[i], "context %d, token %d: %d, by hand %d", n_ctx,
                         i, p.tokens[i], h.tokens[i]);
    }
    /* begin (up to 89 fed in chunks of 64) + one per proposal fed, for both contexts */
    cr_assert_eq(sd_drafter_model_forwards(d), (0 + 8) + (2 + 8));
    cr_assert_eq(sd_drafter_forwards(d), sd_drafter_model_forwards(d));
    sd_drafter_free(d);
    sd_model_free(draft);
    sd_model_free(target);
}

Test(draft_model, sampled_q_rows_and_draft_uniforms, .timeout = 120)
{
    sd_model_t *target = load(1, 2, 0), *draft = load(99, 1, 0);
    sd_drafter_t *d = make(draft, target);
    int32_t ctx[20];
    make_context(ctx, 20, 4);
    begin(d, ctx, 20);
    proposal_t p;
    propose(d, &SAMPLE, K_MAX, 20, 0.0f, &p);
    hand_chain_t h;
    run_by_hand(draft, &SAMPLE, ctx, 20, K_MAX, &h);
    cr_assert_eq(p.n, K_MAX);
    int differs_from_greedy = 0;
    for (int i = 0; i < K_MAX; i++) {
        const float *q = h.q + (size_t)i * N_VOCAB;
        cr_assert_eq(p.tokens[i], h.tokens[i], "token %d: %d, by hand %d", i, p.tokens[i],
                     h.tokens[i]);
        cr_assert(memcmp(p.q + (size_t)i * N_VOCAB, q, N_VOCAB * sizeof(float)) == 0,
                  "q row %d", i);
        cr_assert_gt(q[p.tokens[i]], 0.0f);
        differs_from_greedy += p.tokens[i] != sd_sample_greedy(q, N_VOCAB);
    }
    cr_assert_gt(differs_from_greedy, 0, "the draws never left the argmax: not sampled");
    sd_drafter_free(d);
    sd_model_free(draft);
    sd_model_free(target);
}

/* ---- bookkeeping --------------------------------------------------------------------- */

/* Fresh drafter on ctx[n]: its proposal. */
static void fresh_proposal(sd_model_t *draft, const sd_model_t *target, const int32_t *ctx, int n,
                           const sd_sampler_params_t *sp, int k, proposal_t *p)
{
    sd_drafter_t *f = make(draft, target);
    begin(f, ctx, n);
    propose(f, sp, k, n, 0.0f, p);
    sd_drafter_free(f);
}

static void check_accept_every_n(const sd_sampler_params_t *sp)
{
    sd_model_t *target = load(1, 2, 0), *draft = load(99, 1, 0);
    int32_t ctx[64];
    make_context(ctx, 16, 5);
    sd_drafter_t *d = make(draft, target);
    for (int n_acc = 0; n_acc <= K_MAX; n_acc++) {
        begin(d, ctx, 16);
        proposal_t p, again, want;
        propose(d, sp, K_MAX, 16, 0.0f, &p);
        cr_assert_eq(p.n, K_MAX);
        int32_t next = (p.tokens[n_acc < K_MAX ? n_acc : 0] + 1) % N_VOCAB; /* a correction */
        cr_assert_eq(sd_drafter_accept(d, n_acc, next), SD_OK, "%s", sd_last_error());
        int32_t committed[64];
        memcpy(committed, ctx, 16 * sizeof *ctx);
        memcpy(committed + 16, p.tokens, (size_t)n_acc * sizeof *ctx);
        committed[16 + n_acc] = next;
        int len = 16 + n_acc + 1;
        propose(d, sp, K_MAX, len, 0.0f, &again);
        fresh_proposal(draft, target, committed, len, sp, K_MAX, &want);
        char what[48];
        snprintf(what, sizeof what, "after accepting %d", n_acc);
        assert_same(&again, &want, what);
    }
    sd_drafter_free(d);
    sd_model_free(draft);
    sd_model_free(target);
}

Test(draft_model, accept_every_n_greedy, .timeout = 180) { check_accept_every_n(&GREEDY); }
Test(draft_model, accept_every_n_sampled, .timeout = 180) { check_accept_every_n(&SAMPLE); }

Test(draft_model, rollback_and_multi_step_walk, .timeout = 180)
{
    sd_model_t *target = load(1, 2, 0), *draft = load(99, 1, 0);
    int32_t ctx[128];
    make_context(ctx, 12, 6);
    int len = 12;
    sd_drafter_t *d = make(draft, target);
    begin(d, ctx, len);
    for (int step = 0; step < 6; step++) { /* accept a varying share, commit, repeat */
        proposal_t p;
        int k = 1 + step % K_MAX;
        propose(d, &SAMPLE, k, len, 0.0f, &p);
        int n_acc = (step * 3) % (p.n + 1);
        memcpy(ctx + len, p.tokens, (size_t)n_acc * sizeof *ctx);
        ctx[len + n_acc] = (int32_t)(step * 53 % N_VOCAB);
        cr_assert_eq(sd_drafter_accept(d, n_acc, ctx[len + n_acc]), SD_OK, "%s", sd_last_error());
        len += n_acc + 1;
    }
    proposal_t got, want;
    propose(d, &SAMPLE, K_MAX, len, 0.0f, &got);
    fresh_proposal(draft, target, ctx, len, &SAMPLE, K_MAX, &want);
    assert_same(&got, &want, "after the walk");
    /* Rollback after a proposal: to mid-context, then to one token. */
    for (int back = len - 5; back >= 1; back -= len - 6) {
        cr_assert_eq(sd_drafter_rollback(d, back), SD_OK, "%s", sd_last_error());
        propose(d, &GREEDY, K_MAX, back, 0.0f, &got);
        fresh_proposal(draft, target, ctx, back, &GREEDY, K_MAX, &want);
        assert_same(&got, &want, "after rollback");
    }
    cr_assert_eq(sd_drafter_rollback(d, len), SD_ERR_INVALID_ARG, "past the context");
    cr_assert_eq(sd_drafter_rollback(d, -1), SD_ERR_INVALID_ARG);
    /* Reset forgets the context: nothing to continue. */
    sd_drafter_reset(d);
    proposal_t none;
    cr_assert_eq(try_propose(d, &GREEDY, 4, 0, 0.0f, &none), SD_OK);
    cr_assert_eq(none.n, 0);
    sd_drafter_free(d);
    sd_model_free(draft);
    sd_model_free(target);
}

/* ---- early stop ---------------------------------------------------------------------- */

/* Expected count under the rule: stop before token i >= 1 whose top probability < thr. */
static int expected_stop(const hand_chain_t *h, int k, float thr)
{
    for (int i = 1; i < k; i++)
        if (h->top[i] < thr)
            return i;
    return k;
}

static void check_min_confidence(const sd_sampler_params_t *sp)
{
    sd_model_t *target = load(1, 2, 0), *draft = load(99, 1, 0);
    int32_t ctx[10];
    make_context(ctx, 10, 7);
    hand_chain_t h;
    run_by_hand(draft, sp, ctx, 10, K_MAX, &h);
    sd_drafter_t *d = make(draft, target);
    begin(d, ctx, 10);
    float thresholds[K_MAX + 2];
    for (int i = 0; i < K_MAX; i++)
        thresholds[i] = h.top[i];
    thresholds[K_MAX] = 1.01f;          /* above every probability: one token only */
    thresholds[K_MAX + 1] = 1e-30f;     /* below every probability: never stops */
    int stops_early = 0;
    for (int t = 0; t < K_MAX + 2; t++) {
        proposal_t p;
        propose(d, sp, K_MAX, 10, thresholds[t], &p);
        int want = expected_stop(&h, K_MAX, thresholds[t]);
        cr_assert_eq(p.n, want, "threshold %g: %d tokens, want %d", thresholds[t], p.n, want);
        for (int i = 0; i < p.n; i++)
            cr_assert_eq(p.tokens[i], h.tokens[i]);
        stops_early += want > 1 && want < K_MAX;
    }
    cr_assert_gt(stops_early, 0, "no threshold stopped mid-draft: the test shows nothing");
    sd_drafter_free(d);
    sd_model_free(draft);
    sd_model_free(target);
}

Test(draft_model, min_confidence_greedy, .timeout = 120) { check_min_confidence(&GREEDY); }
Test(draft_model, min_confidence_sampled, .timeout = 120) { check_min_confidence(&SAMPLE); }

/* ---- limits and errors --------------------------------------------------------------- */

Test(draft_model, context_full, .timeout = 60)
{
    sd_model_t *target = load(1, 2, 0), *draft = load(99, 1, 16);
    sd_drafter_t *d = make(draft, target);
    int32_t ctx[20];
    make_context(ctx, 20, 8);
    cr_assert_eq(sd_drafter_begin(d, ctx, 17), SD_ERR_CONTEXT_FULL);
    cr_assert(strstr(sd_last_error(), "17") && strstr(sd_last_error(), "16"), "%s", sd_last_error());
    begin(d, ctx, 14);
    proposal_t p;
    propose(d, &GREEDY, K_MAX, 14, 0.0f, &p);
    cr_assert_eq(p.n, 3, "capped at n_ctx - len + 1: %d", p.n); /* d0, d1 fed: 16 positions */
    cr_assert_eq(sd_drafter_accept(d, 3, 1), SD_OK, "%s", sd_last_error());
    cr_assert_eq(try_propose(d, &GREEDY, K_MAX, 18, 0.0f, &p), SD_ERR_CONTEXT_FULL);
    cr_assert(strstr(sd_last_error(), "18") && strstr(sd_last_error(), "16"), "%s", sd_last_error());
    /* Nothing lost: roll back into the context and draft again, as a fresh drafter would. */
    int32_t committed[18];
    memcpy(committed, ctx, 14 * sizeof *ctx);
    cr_assert_eq(sd_drafter_rollback(d, 12), SD_OK);
    proposal_t got, want;
    propose(d, &GREEDY, K_MAX, 12, 0.0f, &got);
    fresh_proposal(draft, target, committed, 12, &GREEDY, K_MAX, &want);
    assert_same(&got, &want, "after context full");
    cr_assert_eq(got.n, 5);
    sd_drafter_free(d);
    sd_model_free(draft);
    sd_model_free(target);
}

Test(draft_model, bad_arguments, .timeout = 60)
{
    sd_model_t *target = load(1, 2, 0), *draft = load(99, 1, 0);
    sd_drafter_t *d = NULL;
    cr_assert_eq(sd_drafter_model_new(NULL, target, &d), SD_ERR_INVALID_ARG);
    cr_assert_eq(sd_drafter_model_new(draft, NULL, &d), SD_ERR_INVALID_ARG);
    cr_assert_eq(sd_drafter_model_new(draft, target, NULL), SD_ERR_INVALID_ARG);
    cr_assert_eq(sd_drafter_model_forwards(NULL), 0);
    d = make(draft, target);
    int32_t ctx[8];
    make_context(ctx, 8, 9);
    int32_t bad[2] = {3, N_VOCAB};
    cr_assert_eq(sd_drafter_begin(d, bad, 2), SD_ERR_INVALID_ARG);
    cr_assert(strstr(sd_last_error(), "context token [1] = 320"), "%s", sd_last_error());
    begin(d, ctx, 8);
    proposal_t p;
    cr_assert_eq(try_propose(d, &GREEDY, K_MAX, 7, 0.0f, &p), SD_ERR_INVALID_ARG, "pos0 != length");
    cr_assert_eq(try_propose(d, &GREEDY, 0, 8, 0.0f, &p), SD_ERR_INVALID_ARG, "k = 0");
    sd_sampler_params_t hot = SAMPLE;
    hot.top_p = 2.0f;
    cr_assert_eq(try_propose(d, &hot, K_MAX, 8, 0.0f, &p), SD_ERR_INVALID_ARG, "top_p 2");
    int32_t toks[K_MAX];
    sd_draft_request_t req = {.k = 4, .params = &SAMPLE, .seed = 1, .pos0 = 8};
    sd_draft_out_t no_q = {.tokens = toks, .q = NULL, .n_vocab = N_VOCAB};
    cr_assert_eq(sd_drafter_propose(d, &req, &no_q), SD_ERR_INVALID_ARG, "sampling without q");
    propose(d, &GREEDY, 4, 8, 0.0f, &p);
    cr_assert_eq(sd_drafter_accept(d, 5, 1), SD_ERR_INVALID_ARG, "more accepted than proposed");
    cr_assert_eq(sd_drafter_accept(d, 1, -1), SD_ERR_INVALID_ARG, "negative next token");
    cr_assert_eq(sd_drafter_accept(d, 1, N_VOCAB), SD_ERR_INVALID_ARG, "next outside vocab");
    /* The failed accepts changed nothing: a good one still commits the proposal. */
    cr_assert_eq(sd_drafter_accept(d, 4, 2), SD_OK, "%s", sd_last_error());
    cr_assert_eq(sd_drafter_accept(d, 1, 2), SD_ERR_INVALID_ARG, "the proposal is forgotten");
    propose(d, &GREEDY, 4, 13, 0.0f, &p);
    sd_drafter_free(d);
    sd_model_free(draft);
    sd_model_free(target);
}
