/* Log-probabilities of generated tokens (sd_gen_config_t.logprobs): every token's value is
 * the log-softmax of the target's own logits at its position — bit for bit the row a plain
 * sd_forward over prompt + tokens gives, and within float rounding of a double log-softmax —
 * whether the token was an accepted draft, a correction or a bonus, for every drafter,
 * greedy and sampled, on the host and through the verify kernel (logits kept on the
 * device), alone and in the serving engine; the streaming callback sees the same values
 * before each token's text; bad settings are refused naming the value. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda.h"
#include "model/forward.h"
#include "model/model.h"
#include "specdec/specdec.h"
#include "support/synth_model.h"
#include "verify/logprobs.h"

#define N_TOP 5

static sd_model_t *synth(uint64_t seed)
{
    sd_synth_spec_t s;
    sd_synth_spec_default(&s);
    s.n_layer = 3;
    s.seed = seed;
    s.weight_scale = 0.2f; /* peaked enough that drafts are sometimes accepted */
    return sd_test_synth_model(&s, 2, 256);
}

/* A prompt with repeats, so the n-gram drafter finds matches. */
static size_t prompt_of(int32_t *p, int variant)
{
    size_t n = 24;
    for (size_t i = 0; i < n; i++) p[i] = (int32_t)(40 + (i * (3 + variant)) % (7 + variant));
    return n;
}

static sd_gen_config_t config(float temperature, uint64_t seed, int max_tokens)
{
    sd_gen_config_t c;
    sd_gen_config_default(&c);
    c.max_tokens = max_tokens;
    c.ignore_eos = 1;
    c.temperature = temperature;
    c.top_k = temperature > 0 ? 20 : 0;
    c.top_p = 0.95f;
    c.min_p = 0.0f;
    c.seed = seed;
    c.logprobs = 1;
    c.top_logprobs = N_TOP;
    return c;
}

static sd_spec_config_t spec_of(sd_drafter_kind_t kind, sd_model_t *draft)
{
    sd_spec_config_t s;
    sd_spec_config_default(&s);
    s.drafter = kind;
    s.draft_model = draft;
    s.layerskip_layers = 1;
    s.k = 4;
    return s;
}

static sd_gen_result_t generate(sd_model_t *m, const int32_t *prompt, size_t n,
                                const sd_gen_config_t *c, const sd_spec_config_t *spec)
{
    sd_gen_result_t r;
    sd_status_t st = sd_generate_speculative(m, prompt, n, c, spec, NULL, NULL, &r);
    cr_assert_eq(st, SD_OK, "%s: %s", sd_status_string(st), sd_last_error());
    cr_assert_not_null(r.logprobs);
    cr_assert_eq(r.n_top, c->top_logprobs);
    return r;
}

/* The reference: forward prompt + tokens[0 .. n-1) with sd_forward in chunks and take the
 * log-softmax of the row before each token; compare bit for bit, and with a double-precision
 * log-softmax of the same row. */
static void assert_equals_forward(sd_model_t *m, const int32_t *prompt, size_t n_prompt,
                                  const sd_gen_result_t *r, const char *what)
{
    int n_vocab = m->hp.n_vocab;
    size_t total = n_prompt + r->n_tokens - 1;
    int32_t *all = malloc(total * sizeof *all);
    memcpy(all, prompt, n_prompt * sizeof *all);
    memcpy(all + n_prompt, r->tokens, (r->n_tokens - 1) * sizeof *all);
    sd_seq_t seq;
    cr_assert_eq(sd_seq_init(&seq, m, 256, 16), SD_OK, "%s", sd_last_error());
    for (size_t at = 0; at < total;) {
        int chunk = total - at < 16 ? (int)(total - at) : 16;
        cr_assert_eq(sd_forward(&seq, all + at, chunk, 0), SD_OK, "%s", sd_last_error());
        for (int row = 0; row < chunk; row++) {
            size_t pos = at + (size_t)row; /* its logits give token pos + 1 */
            if (pos + 1 < n_prompt) continue;
            size_t i = pos + 1 - n_prompt;
            const float *logits = seq.logits + (size_t)row * n_vocab;
            float lp, top_lp[N_TOP];
            int32_t top[N_TOP];
            int k = sd_logprobs_row(logits, n_vocab, r->tokens[i], r->n_top, &lp, top, top_lp);
            cr_assert_eq(k, r->n_top);
            cr_assert_eq(memcmp(&lp, &r->logprobs[i], sizeof lp), 0,
                         "%s: token %zu: %.9g, forward %.9g", what, i, r->logprobs[i], lp);
            cr_assert_arr_eq(top, r->top_tokens + i * k, (size_t)k * sizeof *top, "%s: token %zu", what, i);
            cr_assert_arr_eq(top_lp, r->top_logprobs + i * k, (size_t)k * sizeof *top_lp,
                             "%s: token %zu", what, i);
            /* independent of our arithmetic: libm's log-softmax in double */
            double mx = -INFINITY, sum = 0;
            for (int v = 0; v < n_vocab; v++) mx = logits[v] > mx ? logits[v] : mx;
            for (int v = 0; v < n_vocab; v++) sum += exp((double)logits[v] - mx);
            double want = (double)logits[r->tokens[i]] - mx - log(sum);
            cr_assert(fabs(want - lp) < 1e-5, "%s: token %zu: %.9g, double %.9g", what, i, lp, want);
        }
        at += (size_t)chunk;
    }
    sd_seq_free(&seq);
    free(all);
}

static void assert_same(const sd_gen_result_t *a, const sd_gen_result_t *b, const char *what)
{
    cr_assert_eq(a->n_tokens, b->n_tokens, "%s", what);
    cr_assert_arr_eq(a->tokens, b->tokens, a->n_tokens * sizeof(int32_t), "%s: tokens", what);
    cr_assert_arr_eq(a->logprobs, b->logprobs, a->n_tokens * sizeof(float), "%s: logprobs", what);
    size_t k = (size_t)a->n_top;
    cr_assert_arr_eq(a->top_tokens, b->top_tokens, a->n_tokens * k * sizeof(int32_t), "%s", what);
    cr_assert_arr_eq(a->top_logprobs, b->top_logprobs, a->n_tokens * k * sizeof(float), "%s", what);
}

static const sd_drafter_kind_t drafters[] = {SD_DRAFTER_NONE, SD_DRAFTER_NGRAM,
                                             SD_DRAFTER_LAYERSKIP, SD_DRAFTER_MODEL};

/* Every drafter, greedy and sampled: the logprobs are the forward's; where the tokens equal
 * target-only's (greedy, or a drafter without q), so are the logprobs, bit for bit. */
Test(engine_logprobs, every_drafter_gives_the_targets_logprobs, .timeout = 300)
{
    sd_model_t *target = synth(5), *draft = synth(6);
    int32_t prompt[32];
    size_t n = prompt_of(prompt, 0);
    uint64_t accepted = 0, rejected = 0;
    for (int sampled = 0; sampled < 2; sampled++) {
        sd_gen_config_t c = config(sampled ? 0.9f : 0.0f, 11, 40);
        sd_spec_config_t none = spec_of(SD_DRAFTER_NONE, NULL);
        sd_gen_result_t alone = generate(target, prompt, n, &c, &none);
        assert_equals_forward(target, prompt, n, &alone, "target-only");
        for (size_t d = 1; d < sizeof drafters / sizeof drafters[0]; d++) {
            sd_spec_config_t spec = spec_of(drafters[d], draft);
            sd_gen_result_t r = generate(target, prompt, n, &c, &spec);
            char what[64];
            snprintf(what, sizeof what, "%s, %s", sd_drafter_kind_name(drafters[d]),
                     sampled ? "sampled" : "greedy");
            assert_equals_forward(target, prompt, n, &r, what);
            if (!sampled || drafters[d] == SD_DRAFTER_NGRAM) assert_same(&r, &alone, what);
            accepted += r.stats.accepted;
            rejected += r.stats.drafted - r.stats.accepted;
            sd_gen_result_free(&r);
        }
        sd_gen_result_free(&alone);
    }
    /* accepted drafts, corrections and bonus tokens all occurred */
    cr_assert_gt(accepted, 0);
    cr_assert_gt(rejected, 0);
    sd_model_free(draft);
    sd_model_free(target);
}

/* Logprobs do not depend on the sampler settings: the same token at the same position has
 * the same value greedy and sampled (the raw distribution, before temperature and filters). */
Test(engine_logprobs, raw_distribution_whatever_the_sampler, .timeout = 120)
{
    sd_model_t *m = synth(5);
    int32_t prompt[32];
    size_t n = prompt_of(prompt, 1);
    sd_gen_config_t g = config(0.0f, 1, 1), t = config(1.7f, 1, 1);
    t.top_k = 3, t.top_p = 0.5f;
    sd_gen_result_t a = generate(m, prompt, n, &g, NULL), b = generate(m, prompt, n, &t, NULL);
    cr_assert_arr_eq(a.top_tokens, b.top_tokens, N_TOP * sizeof(int32_t));
    cr_assert_arr_eq(a.top_logprobs, b.top_logprobs, N_TOP * sizeof(float));
    cr_expect_eq(a.tokens[0], a.top_tokens[0], "greedy picks the most likely token");
    cr_expect_eq(a.logprobs[0], a.top_logprobs[0]);
    sd_gen_result_free(&a);
    sd_gen_result_free(&b);
    sd_model_free(m);
}

/* The verify kernel's path (its host emulation on a CPU model) keeps the verify forward's
 * logits on the device; the emitted tokens' rows are fetched, and the values are the host
 * path's. */
Test(engine_logprobs, verify_kernel_path_equals_host, .timeout = 300)
{
    if (!sd_cuda_built()) cr_skip_test("built without CUDA: no verify kernel to emulate");
    sd_model_t *target = synth(5), *draft = synth(6);
    int32_t prompt[32];
    size_t n = prompt_of(prompt, 2);
    for (int sampled = 0; sampled < 2; sampled++)
        for (size_t d = 0; d < sizeof drafters / sizeof drafters[0]; d++) {
            sd_gen_config_t c = config(sampled ? 0.8f : 0.0f, 3, 32);
            sd_spec_config_t spec = spec_of(drafters[d], draft);
            setenv("SPECDEC_VERIFY", "host", 1);
            sd_gen_result_t h = generate(target, prompt, n, &c, &spec);
            setenv("SPECDEC_VERIFY", "kernel", 1);
            sd_gen_result_t k = generate(target, prompt, n, &c, &spec);
            unsetenv("SPECDEC_VERIFY");
            assert_same(&k, &h, sd_drafter_kind_name(drafters[d]));
            sd_gen_result_free(&h);
            sd_gen_result_free(&k);
        }
    sd_model_free(draft);
    sd_model_free(target);
}

/* ---- streaming --------------------------------------------------------------------------- */

typedef struct seen {
    size_t n_lp, n_tok;
    int order_ok;
    int32_t tokens[64];
    float lps[64], top_lps[64 * N_TOP];
} seen_t;

static void on_lp(void *user, const sd_token_logprobs_t *lp)
{
    seen_t *s = user;
    if (s->n_lp != s->n_tok) s->order_ok = 0; /* one before each token's callback */
    s->tokens[s->n_lp] = lp->token;
    s->lps[s->n_lp] = lp->logprob;
    memcpy(s->top_lps + s->n_lp * N_TOP, lp->top_logprobs, (size_t)lp->n_top * sizeof(float));
    s->n_lp++;
}

static int on_tok(void *user, int32_t token, const char *text, size_t len)
{
    seen_t *s = user;
    if (token < 0) return 0; /* held text, no token */
    if (s->n_lp != s->n_tok + 1 || s->tokens[s->n_tok] != token) s->order_ok = 0;
    s->n_tok++;
    return 0;
}

static void assert_seen(const seen_t *s, const sd_gen_result_t *r)
{
    cr_assert(s->order_ok, "each token's logprobs come just before its token callback");
    cr_assert_eq(s->n_lp, r->n_tokens);
    cr_assert_arr_eq(s->lps, r->logprobs, r->n_tokens * sizeof(float));
    cr_assert_arr_eq(s->top_lps, r->top_logprobs, r->n_tokens * N_TOP * sizeof(float));
}

Test(engine_logprobs, callback_streams_the_same_values, .timeout = 120)
{
    sd_model_t *m = synth(5);
    int32_t prompt[32];
    size_t n = prompt_of(prompt, 0);
    sd_gen_config_t c = config(0.7f, 5, 40);
    c.logprobs_callback = on_lp;
    sd_spec_config_t spec = spec_of(SD_DRAFTER_NGRAM, NULL);
    seen_t s = {.order_ok = 1};
    sd_gen_result_t r;
    cr_assert_eq(sd_generate_speculative(m, prompt, n, &c, &spec, on_tok, &s, &r), SD_OK, "%s",
                 sd_last_error());
    assert_seen(&s, &r);
    sd_gen_result_free(&r);
    sd_model_free(m);
}

/* ---- the serving engine ------------------------------------------------------------------- */

Test(engine_logprobs, engine_requests_equal_alone, .timeout = 300)
{
    sd_model_t *target = synth(5);
    sd_engine_params_t p;
    sd_engine_params_default(&p);
    p.model = target;
    p.spec = spec_of(SD_DRAFTER_LAYERSKIP, NULL);
    p.max_active = 4;
    sd_engine_t *e = NULL;
    cr_assert_eq(sd_engine_create(&p, &e), SD_OK, "%s", sd_last_error());
    enum { N = 4 };
    int32_t prompts[N][32];
    size_t lens[N];
    sd_gen_config_t cs[N];
    seen_t seen[N];
    sd_request_t *rq[N];
    for (int i = 0; i < N; i++) {
        lens[i] = prompt_of(prompts[i], i);
        cs[i] = config(i % 2 ? 0.9f : 0.0f, 100 + (uint64_t)i, 30);
        cs[i].logprobs_callback = on_lp;
        seen[i] = (seen_t){.order_ok = 1};
        cr_assert_eq(sd_engine_submit(e, prompts[i], lens[i], &cs[i], on_tok, &seen[i], &rq[i]),
                     SD_OK, "%s", sd_last_error());
    }
    for (int i = 0; i < N; i++) {
        sd_gen_result_t got;
        cr_assert_eq(sd_request_wait(rq[i], -1, &got), SD_OK, "%s", sd_last_error());
        sd_request_free(rq[i]);
        cs[i].logprobs_callback = NULL;
        sd_gen_result_t want = generate(target, prompts[i], lens[i], &cs[i], &p.spec);
        assert_same(&got, &want, "engine vs alone");
        assert_seen(&seen[i], &got);
        sd_gen_result_free(&got);
        sd_gen_result_free(&want);
    }
    sd_engine_free(e);
    sd_model_free(target);
}

/* ---- bad settings --------------------------------------------------------------------------- */

Test(engine_logprobs, bad_settings_are_refused_naming_the_value, .timeout = 60)
{
    sd_model_t *m = synth(5);
    int32_t prompt[32];
    size_t n = prompt_of(prompt, 0);
    static const struct {
        int logprobs, top;
        const char *want;
    } rows[] = {{2, 0, "logprobs = 2"}, {1, 21, "top_logprobs = 21 outside [0, 20]"},
                {1, -1, "top_logprobs = -1"}, {0, 3, "top_logprobs = 3 needs logprobs = 1"}};
    sd_engine_params_t p;
    sd_engine_params_default(&p);
    p.model = m;
    sd_engine_t *e = NULL;
    cr_assert_eq(sd_engine_create(&p, &e), SD_OK, "%s", sd_last_error());
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        sd_gen_config_t c = config(0.0f, 1, 4);
        c.logprobs = rows[i].logprobs;
        c.top_logprobs = rows[i].top;
        sd_gen_result_t r;
        cr_assert_eq(sd_generate(m, prompt, n, &c, NULL, NULL, &r), SD_ERR_INVALID_ARG);
        cr_expect(strstr(sd_last_error(), rows[i].want), "%s", sd_last_error());
        sd_gen_result_free(&r);
        sd_request_t *rq = NULL;
        cr_assert_eq(sd_engine_submit(e, prompt, n, &c, NULL, NULL, &rq), SD_ERR_INVALID_ARG);
        cr_expect(strstr(sd_last_error(), rows[i].want), "%s", sd_last_error());
        cr_assert_null(rq);
    }
    /* off by default: no arrays */
    sd_gen_config_t c;
    sd_gen_config_default(&c);
    c.max_tokens = 3;
    sd_gen_result_t r;
    cr_assert_eq(sd_generate(m, prompt, n, &c, NULL, NULL, &r), SD_OK);
    cr_expect_null(r.logprobs);
    cr_expect_null(r.top_tokens);
    cr_expect_eq(r.n_top, 0);
    sd_gen_result_free(&r);
    sd_engine_free(e);
    sd_model_free(m);
}
