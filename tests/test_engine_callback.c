/* A drafter of the caller's own (SD_DRAFTER_CALLBACK) and the per-step observer
 * (sd_spec_config_t.on_step), through the public API only: greedy and sampled output stay
 * the target's; the callbacks see the context the step loop keeps (begin, accept,
 * rollback); each generation makes and destroys its own state, also in the serving engine;
 * a failing callback or a bad proposal ends the generation with a status naming it; every
 * step is reported once, its record adding up to the statistics. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf/synthetic.h"
#include "specdec/specdec.h"
#include "support/test_util.h"

#define MAX_CTX 1024

static sd_model_t *load_target(void)
{
    sd_synth_spec_t s;
    sd_synth_spec_default(&s);
    s.n_ctx = 512;
    s.weight_scale = 0.08f;
    char path[512];
    sd_test_tmp_path(path, sizeof path, "cbgen");
    cr_assert_eq(sd_synth_write_file(&s, path), SD_OK, "%s", sd_last_error());
    sd_model_params_t p;
    sd_model_params_default(&p);
    p.path = path;
    p.n_threads = 2;
    p.n_ctx = 256;
    sd_model_t *m = NULL;
    cr_assert_eq(sd_model_load(&p, &m), SD_OK, "%s", sd_last_error());
    remove(path);
    return m;
}

static const int32_t PROMPT[] = {40, 41, 42, 43, 40, 41, 42, 43, 40, 41, 44, 45, 40, 41};
#define N_PROMPT (sizeof PROMPT / sizeof PROMPT[0])

static sd_gen_config_t config(float temperature, int max_tokens, uint64_t seed)
{
    sd_gen_config_t c;
    sd_gen_config_default(&c);
    c.temperature = temperature;
    c.max_tokens = max_tokens;
    c.seed = seed;
    c.ignore_eos = 1;
    return c;
}

/* ---- a drafter written against the public callbacks: prompt lookup, or an oracle ----- */

typedef struct lookup {
    int32_t ctx[MAX_CTX]; /* its own copy, kept from begin / accept / rollback */
    size_t len;
    int32_t prop[SD_SPEC_MAX_K];
    int prop_n, begun;
    int evidence;         /* reported with every proposal */
    int fail_at;          /* propose fails (SD_ERR_INTERNAL) at this call (0: never) */
    int bad;              /* 1: propose k + 1 tokens; 2: a token outside the vocabulary;
                             3: evidence 9 */
    int calls;
    const int32_t *future; /* set: propose these (the output to come after the prompt of
                              n_prompt), the last of every third proposal wrong */
    size_t n_future, n_prompt;
} lookup_t;

typedef struct lookup_stats {
    int created, destroyed;
} lookup_stats_t;

static lookup_stats_t g_stats;
static lookup_t g_template; /* what create copies into a new state */

static sd_status_t lk_create(void *user, void **state)
{
    lookup_t *l = malloc(sizeof *l);
    cr_assert_not_null(l);
    *l = g_template;
    ((lookup_stats_t *)user)->created++;
    *state = l;
    return SD_OK;
}

static void lk_destroy(void *state)
{
    g_stats.destroyed++;
    free(state);
}

static sd_status_t lk_begin(void *state, const int32_t *prompt, size_t n)
{
    lookup_t *l = state;
    cr_assert_leq(n, MAX_CTX);
    memcpy(l->ctx, prompt, n * sizeof *prompt);
    l->len = n;
    l->begun = 1;
    return SD_OK;
}

/* The oracle's future, or the tokens that followed the latest earlier occurrence of the
 * last token. */
static sd_status_t lk_propose(void *state, const sd_draft_query_t *q, sd_draft_proposal_t *out)
{
    lookup_t *l = state;
    cr_assert(l->begun, "propose before begin");
    cr_assert_eq(q->n_context, l->len, "the query's context has %zu tokens, the drafter's %zu",
                 q->n_context, l->len);
    cr_assert(memcmp(q->context, l->ctx, l->len * sizeof *l->ctx) == 0,
              "the query's context differs from begin + accept + rollback");
    cr_assert(out->capacity == q->k && out->n == 0 && out->evidence == 0, "a zeroed proposal");
    if (++l->calls == l->fail_at) return SD_ERR_INTERNAL;
    int n = 0;
    size_t at = l->len - l->n_prompt;
    for (; l->future && n < q->k && at + (size_t)n < l->n_future; n++)
        out->tokens[n] = l->future[at + (size_t)n];
    if (l->future && n > 0 && l->calls % 3 == 0) out->tokens[n - 1] = (out->tokens[n - 1] + 1) % 320;
    for (size_t j = l->len - 1; !l->future && j-- > 0 && n == 0;)
        if (l->ctx[j] == l->ctx[l->len - 1])
            for (size_t t = j + 1; t < l->len && n < q->k; t++) out->tokens[n++] = l->ctx[t];
    if (l->bad == 2 && n > 0) out->tokens[0] = 320;
    l->prop_n = n;
    memcpy(l->prop, out->tokens, (size_t)n * sizeof *l->prop);
    out->n = l->bad == 1 ? q->k + 1 : n; /* (claims one more than it wrote) */
    out->evidence = l->bad == 3 ? 9 : l->evidence;
    return SD_OK;
}

static sd_status_t lk_accept(void *state, const sd_draft_outcome_t *o)
{
    lookup_t *l = state;
    cr_assert(o->n_accepted >= 0 && o->n_accepted <= l->prop_n, "accepted %d of %d", o->n_accepted,
              l->prop_n);
    cr_assert_lt(l->len + (size_t)o->n_accepted + 1, MAX_CTX);
    memcpy(l->ctx + l->len, l->prop, (size_t)o->n_accepted * sizeof *l->prop);
    l->len += (size_t)o->n_accepted;
    l->ctx[l->len++] = o->next_token;
    return SD_OK;
}

static sd_status_t lk_rollback(void *state, size_t n)
{
    lookup_t *l = state;
    cr_assert_leq(n, l->len);
    l->len = n;
    return SD_OK;
}

static const sd_callback_drafter_t LOOKUP = {
    .user = &g_stats,
    .create = lk_create,
    .begin = lk_begin,
    .propose = lk_propose,
    .accept = lk_accept,
    .rollback = lk_rollback,
    .destroy = lk_destroy,
};

static sd_spec_config_t callback_spec(const sd_callback_drafter_t *cb, int k, int adaptive)
{
    sd_spec_config_t s;
    sd_spec_config_default(&s);
    cr_assert_eq(sd_spec_parse_drafter("callback", &s, NULL), SD_OK, "%s", sd_last_error());
    s.callback = cb;
    s.k = k;
    s.adaptive = adaptive;
    return s;
}

static void reset_lookup(void)
{
    memset(&g_stats, 0, sizeof g_stats);
    memset(&g_template, 0, sizeof g_template);
}

static void assert_same(const sd_gen_result_t *a, const sd_gen_result_t *b, const char *what)
{
    cr_assert_eq(a->n_tokens, b->n_tokens, "%s: %zu tokens vs %zu", what, a->n_tokens, b->n_tokens);
    for (size_t i = 0; i < a->n_tokens; i++)
        cr_assert_eq(a->tokens[i], b->tokens[i], "%s: token %zu", what, i);
}

/* ---- the steps as on_step reports them ----------------------------------------------- */

#define MAX_STEPS 512
typedef struct step_log {
    sd_step_info_t steps[MAX_STEPS];
    int32_t drafted[MAX_STEPS][SD_SPEC_MAX_K];
    int n;
} step_log_t;

static void log_step(void *user, const sd_step_info_t *s)
{
    step_log_t *log = user;
    cr_assert_lt(log->n, MAX_STEPS);
    cr_assert(s->n_drafted >= 0 && s->n_drafted <= SD_SPEC_MAX_K);
    log->steps[log->n] = *s;
    memcpy(log->drafted[log->n], s->drafted, (size_t)s->n_drafted * sizeof *s->drafted);
    log->steps[log->n].drafted = log->drafted[log->n];
    log->n++;
}

/* The log of one generation adds up to its result. */
static void assert_log_matches(const step_log_t *log, const sd_gen_result_t *r, uint64_t request)
{
    cr_assert_eq((uint64_t)log->n, r->stats.steps, "%d steps reported, %llu made", log->n,
                 (unsigned long long)r->stats.steps);
    uint64_t drafted = 0, accepted = 0;
    int64_t pos = (int64_t)r->n_prompt;
    for (int i = 0; i < log->n; i++) {
        const sd_step_info_t *s = &log->steps[i];
        cr_assert_eq(s->step, (uint64_t)i);
        cr_assert_eq(s->request, request);
        cr_assert_eq(s->pos, pos, "step %d at position %lld, expected %lld", i, (long long)s->pos,
                     (long long)pos);
        cr_assert(s->n_accepted >= 0 && s->n_accepted <= s->n_drafted && s->n_drafted <= s->k,
                  "step %d: accepted %d of %d drafted, k %d", i, s->n_accepted, s->n_drafted, s->k);
        cr_assert(s->draft_seconds >= 0.0 && s->verify_seconds > 0.0);
        for (int j = 0; j < s->n_accepted; j++) /* kept drafts are the output */
            cr_assert_eq(s->drafted[j], r->tokens[pos - (int64_t)r->n_prompt + j]);
        if ((size_t)(pos - (int64_t)r->n_prompt + s->n_accepted) < r->n_tokens)
            cr_assert_eq(s->next_token, r->tokens[pos - (int64_t)r->n_prompt + s->n_accepted]);
        drafted += (uint64_t)s->n_drafted;
        accepted += (uint64_t)s->n_accepted;
        pos += s->n_accepted + 1;
    }
    cr_assert_eq(drafted, r->stats.drafted);
    cr_assert_eq(accepted, r->stats.accepted);
}

/* ---- tests --------------------------------------------------------------------------- */

Test(engine_callback, output_is_the_targets_and_steps_are_reported, .timeout = 120)
{
    sd_model_t *m = load_target();
    static const int ks[] = {2, 5};
    for (int temp = 0; temp < 2; temp++) {
        sd_gen_config_t c = config(temp ? 0.9f : 0.0f, 48, 5);
        sd_gen_result_t ref;
        cr_assert_eq(sd_generate(m, PROMPT, N_PROMPT, &c, NULL, NULL, &ref), SD_OK);
        for (int i = 0; i < 2; i++) {
            reset_lookup();
            g_template.evidence = 3;
            g_template.future = ref.tokens;
            g_template.n_future = ref.n_tokens;
            g_template.n_prompt = N_PROMPT;
            static step_log_t log;
            log.n = 0;
            sd_spec_config_t s = callback_spec(&LOOKUP, ks[i], i);
            s.on_step = log_step;
            s.on_step_user = &log;
            sd_gen_result_t r;
            cr_assert_eq(sd_generate_speculative(m, PROMPT, N_PROMPT, &c, &s, NULL, NULL, &r),
                         SD_OK, "%s", sd_last_error());
            assert_same(&r, &ref, temp ? "sampled" : "greedy");
            cr_assert(r.stats.accepted > 0 && r.stats.accepted < r.stats.drafted,
                      "k %d: drafts accepted and rejected (%llu of %llu)", ks[i],
                      (unsigned long long)r.stats.accepted, (unsigned long long)r.stats.drafted);
            cr_assert_eq(g_stats.created, 1);
            cr_assert_eq(g_stats.destroyed, 1, "the state is destroyed with the generation");
            assert_log_matches(&log, &r, 0);
            for (int j = 0; j < log.n; j++)
                if (log.steps[j].n_drafted > 0)
                    cr_assert_eq(log.steps[j].evidence, 3, "the callback's evidence class");
            sd_gen_result_free(&r);
        }
        sd_gen_result_free(&ref);
    }
    /* target-only: every step is a plain decode, reported with k 0 */
    static step_log_t log;
    log.n = 0;
    sd_spec_config_t none;
    sd_spec_config_default(&none);
    none.on_step = log_step;
    none.on_step_user = &log;
    sd_gen_config_t c = config(0.0f, 20, 1);
    sd_gen_result_t r;
    cr_assert_eq(sd_generate_speculative(m, PROMPT, N_PROMPT, &c, &none, NULL, NULL, &r), SD_OK);
    assert_log_matches(&log, &r, 0);
    cr_assert_eq(log.n, 20);
    for (int j = 0; j < log.n; j++) cr_assert_eq(log.steps[j].k, 0);
    sd_gen_result_free(&r);
    sd_model_free(m);
}

static void expect_failure(sd_model_t *m, const char *needle, sd_status_t want)
{
    sd_spec_config_t s = callback_spec(&LOOKUP, 4, 0);
    sd_gen_config_t c = config(0.0f, 32, 1);
    sd_gen_result_t r;
    sd_status_t st = sd_generate_speculative(m, PROMPT, N_PROMPT, &c, &s, NULL, NULL, &r);
    cr_assert_eq(st, want, "%s: %s (%s)", needle, sd_status_string(st), sd_last_error());
    cr_assert(strstr(sd_last_error(), needle), "'%s' not in: %s", needle, sd_last_error());
    cr_assert_eq(r.stop_reason, SD_STOP_ERROR);
    sd_gen_result_free(&r);
    cr_assert_eq(g_stats.destroyed, g_stats.created, "the state is destroyed on failure too");
}

Test(engine_callback, failures_end_the_generation_naming_them, .timeout = 120)
{
    sd_model_t *m = load_target();
    reset_lookup();
    g_template.fail_at = 3;
    expect_failure(m, "callback drafter: propose returned SD_ERR_INTERNAL", SD_ERR_INTERNAL);
    reset_lookup();
    g_template.bad = 1;
    expect_failure(m, "proposed n = 5 tokens, must be in [0, k = 4]", SD_ERR_INVALID_ARG);
    reset_lookup();
    g_template.bad = 2;
    expect_failure(m, "proposed token 320 (at 0) outside the vocabulary [0, 320)",
                   SD_ERR_INVALID_ARG);
    reset_lookup();
    g_template.bad = 3;
    expect_failure(m, "evidence = 9", SD_ERR_INVALID_ARG);

    sd_spec_config_t s = callback_spec(NULL, 4, 0);
    sd_gen_config_t c = config(0.0f, 8, 1);
    sd_gen_result_t r;
    cr_assert_eq(sd_generate_speculative(m, PROMPT, N_PROMPT, &c, &s, NULL, NULL, &r),
                 SD_ERR_INVALID_ARG);
    cr_assert(strstr(sd_last_error(), "not on the command line"), "%s", sd_last_error());
    sd_callback_drafter_t no_propose = LOOKUP;
    no_propose.propose = NULL;
    s.callback = &no_propose;
    cr_assert_eq(sd_generate_speculative(m, PROMPT, N_PROMPT, &c, &s, NULL, NULL, &r),
                 SD_ERR_INVALID_ARG);
    cr_assert(strstr(sd_last_error(), "callback->propose is NULL"), "%s", sd_last_error());
    cr_assert_eq(sd_spec_parse_drafter("callback:x", &s, NULL), SD_ERR_INVALID_ARG);
    cr_assert(strstr(sd_last_error(), "takes no argument"), "%s", sd_last_error());
    char text[32];
    s = callback_spec(&LOOKUP, 4, 0);
    cr_assert_eq(sd_spec_drafter_text(&s, m, text, sizeof text), SD_OK);
    cr_assert_str_eq(text, "callback");
    sd_model_free(m);
}

/* Five requests in the engine: each has its own state (create / destroy once each), the
 * tokens it gets alone, and on_step records numbered by admission. */
static step_log_t g_engine_logs[8];
static void log_engine_step(void *user, const sd_step_info_t *s)
{
    (void)user;
    cr_assert(s->request >= 1 && s->request <= 5, "request number %llu",
              (unsigned long long)s->request);
    log_step(&g_engine_logs[s->request], s);
}

Test(engine_callback, engine_requests_have_their_own_drafters, .timeout = 240)
{
    sd_model_t *m = load_target();
    reset_lookup();
    memset(g_engine_logs, 0, sizeof g_engine_logs);
    sd_engine_params_t ep;
    sd_engine_params_default(&ep);
    ep.model = m;
    ep.spec = callback_spec(&LOOKUP, 4, 1);
    ep.spec.on_step = log_engine_step;
    sd_engine_t *e = NULL;
    cr_assert_eq(sd_engine_create(&ep, &e), SD_OK, "%s", sd_last_error());
    int probe = g_stats.created; /* creating the engine checks the spec with one drafter */
    cr_assert_eq(g_stats.destroyed, probe);
    enum { N = 5 };
    sd_gen_config_t cs[N];
    sd_request_t *rq[N];
    for (int i = 0; i < N; i++) {
        cs[i] = config(i % 2 ? 0.7f : 0.0f, 30 + 4 * i, 50 + (uint64_t)i);
        cr_assert_eq(sd_engine_submit(e, PROMPT, N_PROMPT - (size_t)i, &cs[i], NULL, NULL, &rq[i]),
                     SD_OK, "%s", sd_last_error());
    }
    sd_gen_result_t got[N];
    for (int i = 0; i < N; i++) {
        cr_assert_eq(sd_request_wait(rq[i], -1, &got[i]), SD_OK, "%s", sd_last_error());
        sd_request_free(rq[i]);
    }
    sd_engine_free(e);
    cr_assert_eq(g_stats.created, probe + N, "one state per request");
    cr_assert_eq(g_stats.destroyed, g_stats.created);
    for (int i = 0; i < N; i++) {
        /* admission follows submission here: request i + 1 is submit i (FIFO) */
        assert_log_matches(&g_engine_logs[i + 1], &got[i], (uint64_t)i + 1);
        sd_gen_result_t alone;
        sd_spec_config_t s = callback_spec(&LOOKUP, 4, 1);
        cr_assert_eq(sd_generate_speculative(m, PROMPT, N_PROMPT - (size_t)i, &cs[i], &s, NULL, NULL,
                                             &alone), SD_OK, "%s", sd_last_error());
        assert_same(&got[i], &alone, "engine vs alone");
        sd_gen_result_free(&alone);
        sd_gen_result_free(&got[i]);
    }
    sd_model_free(m);
}
