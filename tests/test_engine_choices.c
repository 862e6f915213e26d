/* n choices of one request (sd_engine_submit_choices): choice i equals the same request
 * submitted alone with seed sd_choice_seed(seed, i) — tokens, text and log-probabilities —
 * choice 0 being the n = 1 request unchanged; the seeds are distinct, below 2^53 and a fixed
 * function; the choices queue all or none; bad n is refused. */
#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "specdec/specdec.h"
#include "support/synth_model.h"

static sd_model_t *synth(void)
{
    sd_synth_spec_t s;
    sd_synth_spec_default(&s);
    s.weight_scale = 0.08f;
    return sd_test_synth_model(&s, 2, 256);
}

static sd_engine_t *engine(sd_model_t *m, sd_drafter_kind_t drafter, int max_active,
                           int max_queued)
{
    sd_engine_params_t p;
    sd_engine_params_default(&p);
    p.model = m;
    p.spec.drafter = drafter;
    p.max_active = max_active;
    p.max_queued = max_queued;
    sd_engine_t *e = NULL;
    cr_assert_eq(sd_engine_create(&p, &e), SD_OK, "%s", sd_last_error());
    return e;
}

static const int32_t prompt[] = {40, 41, 42, 43, 40, 41, 42, 43, 40, 41, 50, 51};
#define N_PROMPT (sizeof prompt / sizeof prompt[0])

static sd_gen_config_t config(float temperature, uint64_t seed)
{
    sd_gen_config_t c;
    sd_gen_config_default(&c);
    c.max_tokens = 24;
    c.ignore_eos = 1;
    c.temperature = temperature;
    c.seed = seed;
    c.logprobs = 1;
    c.top_logprobs = 2;
    return c;
}

static void assert_same(const sd_gen_result_t *a, const sd_gen_result_t *b, int i)
{
    cr_assert_eq(a->n_tokens, b->n_tokens, "choice %d", i);
    cr_assert_arr_eq(a->tokens, b->tokens, a->n_tokens * sizeof(int32_t), "choice %d", i);
    cr_assert_str_eq(a->text, b->text, "choice %d", i);
    cr_assert_arr_eq(a->logprobs, b->logprobs, a->n_tokens * sizeof(float), "choice %d", i);
    cr_assert_arr_eq(a->top_logprobs, b->top_logprobs, a->n_tokens * 2 * sizeof(float), "choice %d", i);
}

static int count_token(void *user, int32_t token, const char *text, size_t len)
{
    (*(int *)user) += token >= 0;
    return 0;
}

/* 6 choices, sampled, with the n-gram drafter, in an engine of 4 slots (so they run in two
 * waves): each equals sd_generate_speculative alone with its derived seed; the callback's
 * user is the choice's. */
Test(engine_choices, each_choice_equals_its_seed_alone, .timeout = 300)
{
    sd_model_t *m = synth();
    sd_engine_t *e = engine(m, SD_DRAFTER_NGRAM, 4, 8);
    enum { N = 6 };
    sd_gen_config_t c = config(0.9f, 4242);
    sd_request_t *rq[N];
    int counts[N] = {0};
    void *users[N];
    for (int i = 0; i < N; i++) users[i] = &counts[i];
    cr_assert_eq(sd_engine_submit_choices(e, prompt, N_PROMPT, &c, N, count_token, users, rq),
                 SD_OK, "%s", sd_last_error());
    sd_spec_config_t spec;
    sd_spec_config_default(&spec);
    spec.drafter = SD_DRAFTER_NGRAM;
    int distinct = 0;
    sd_gen_result_t first = {0};
    for (int i = 0; i < N; i++) {
        sd_gen_result_t got, want;
        cr_assert_eq(sd_request_wait(rq[i], -1, &got), SD_OK, "%s", sd_last_error());
        sd_request_free(rq[i]);
        sd_gen_config_t alone = c;
        alone.seed = sd_choice_seed(c.seed, i);
        cr_assert_eq(sd_generate_speculative(m, prompt, N_PROMPT, &alone, &spec, NULL, NULL, &want),
                     SD_OK, "%s", sd_last_error());
        assert_same(&got, &want, i);
        cr_expect_eq(counts[i], (int)got.n_tokens, "choice %d's callback got its own tokens", i);
        if (i == 0) first = got;
        else {
            distinct += got.n_tokens != first.n_tokens ||
                        memcmp(got.tokens, first.tokens, got.n_tokens * sizeof(int32_t)) != 0;
            sd_gen_result_free(&got);
        }
        sd_gen_result_free(&want);
    }
    cr_expect_gt(distinct, 0, "sampled choices with different seeds differ");
    /* choice 0 is the plain request, n = 1 semantics unchanged */
    sd_request_t *one;
    sd_gen_result_t single;
    cr_assert_eq(sd_engine_submit(e, prompt, N_PROMPT, &c, NULL, NULL, &one), SD_OK);
    cr_assert_eq(sd_request_wait(one, -1, &single), SD_OK);
    assert_same(&single, &first, 0);
    sd_request_free(one);
    sd_gen_result_free(&single);
    sd_gen_result_free(&first);
    sd_engine_free(e);
    sd_model_free(m);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

Test(engine_choices, seeds_are_a_fixed_function, .timeout = 10)
{
    cr_assert_eq(sd_choice_seed(77, 0), 77);
    cr_assert_eq(sd_choice_seed(0xFFFFFFFFFFFFFFFFull, 0), 0xFFFFFFFFFFFFFFFFull);
    /* pinned: a change here changes every reproduced choice (docs/serve.md gives the formula) */
    cr_assert_eq(sd_choice_seed(3, 1), 1021869836427313ull);
    for (uint64_t seed = 0; seed < 50; seed++) {
        uint64_t all[SD_MAX_CHOICES];
        for (int i = 0; i < SD_MAX_CHOICES; i++) {
            all[i] = sd_choice_seed(seed, i);
            cr_assert(i == 0 || all[i] < (1ull << 53), "seed %llu choice %d: not below 2^53",
                      (unsigned long long)seed, i);
        }
        qsort(all, SD_MAX_CHOICES, sizeof *all, cmp_u64);
        for (int i = 1; i < SD_MAX_CHOICES; i++)
            cr_assert_neq(all[i], all[i - 1], "seed %llu: two choices share a seed",
                          (unsigned long long)seed);
    }
}

static atomic_int release_hold, holding;

/* Blocks the scheduler at the request's first token until the test lets it go. */
static int hold_token(void *user, int32_t token, const char *text, size_t len)
{
    atomic_store(&holding, 1);
    while (!atomic_load(&release_hold)) usleep(1000);
    return 0;
}

/* All or none: a group that does not fit the queue is SD_ERR_BUSY with nothing queued; n
 * outside [1, 128] or above max_active + max_queued is SD_ERR_INVALID_ARG naming n. */
Test(engine_choices, bad_n_and_a_full_queue, .timeout = 120)
{
    sd_model_t *m = synth();
    sd_engine_t *e = engine(m, SD_DRAFTER_NONE, 1, 2);
    sd_gen_config_t c = config(0.0f, 1);
    sd_request_t *rq[SD_MAX_CHOICES + 1];
    static const struct {
        int n;
        const char *want;
    } bad[] = {{0, "n = 0 outside [1, 128]"}, {129, "n = 129 outside [1, 128]"},
               {-3, "n = -3"}, {4, "n = 4 exceeds what the engine queues at once"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(sd_engine_submit_choices(e, prompt, N_PROMPT, &c, bad[i].n, NULL, NULL, rq),
                     SD_ERR_INVALID_ARG, "n = %d", bad[i].n);
        cr_expect(strstr(sd_last_error(), bad[i].want), "%s", sd_last_error());
    }
    /* a request held at its first token keeps the slot; 2 more fit the queue, 3 do not */
    sd_request_t *hold;
    cr_assert_eq(sd_engine_submit(e, prompt, N_PROMPT, &c, hold_token, NULL, &hold), SD_OK);
    /* admitted and held (the queue's count would change if it were admitted between the
     * two snapshots below) */
    for (int ms = 0; !atomic_load(&holding); ms++) {
        cr_assert_lt(ms, 60000, "the held request never reached its first token");
        usleep(1000);
    }
    sd_engine_metrics_t before, after;
    sd_engine_get_metrics(e, &before);
    cr_assert_eq(sd_engine_submit_choices(e, prompt, N_PROMPT, &c, 3, NULL, NULL, rq), SD_ERR_BUSY);
    sd_engine_get_metrics(e, &after);
    cr_expect_eq(after.submitted, before.submitted, "nothing of the refused group was queued");
    cr_expect_eq(after.queued, before.queued);
    cr_assert_eq(sd_engine_submit_choices(e, prompt, N_PROMPT, &c, 2, NULL, NULL, rq), SD_OK);
    atomic_store(&release_hold, 1);
    for (int i = 0; i < 2; i++) {
        sd_gen_result_t r;
        cr_assert_eq(sd_request_wait(rq[i], -1, &r), SD_OK);
        sd_request_free(rq[i]);
        sd_gen_result_free(&r);
    }
    sd_request_free(hold);
    sd_engine_free(e);
    sd_model_free(m);
}
