/* N-gram prompt-lookup drafter: proposals on handcrafted sequences (repeats, no match,
 * longest suffix first, most recent occurrence, overlaps, truncation at the context end),
 * accept/rollback, bad arguments, and a randomized walk of begin/propose/accept/rollback
 * checked step by step against a brute-force scan of the context (small vocabularies
 * for many matches; one run over a 20,000-token context). */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "draft/ngram.h"

#define K_CAP 64

static sd_drafter_t *make(int n_min, int n_max)
{
    sd_ngram_params_t p = {.n_min = n_min, .n_max = n_max};
    sd_drafter_t *d = NULL;
    cr_assert_eq(sd_drafter_ngram_new(&p, &d), SD_OK, "%s", sd_last_error());
    cr_assert_not_null(d);
    return d;
}

static sd_drafter_t *make_with(int n_min, int n_max, const int32_t *ctx, int n)
{
    sd_drafter_t *d = make(n_min, n_max);
    cr_assert_eq(sd_drafter_begin(d, ctx, n), SD_OK, "%s", sd_last_error());
    return d;
}

/* Propose up to k tokens at position pos0 into tokens[K_CAP]; returns the count. */
static int propose(sd_drafter_t *d, int k, int64_t pos0, int32_t *tokens)
{
    sd_sampler_params_t sp = {.temperature = 0.8f, .top_k = 0, .top_p = 1.0f, .min_p = 0.0f};
    sd_draft_request_t req = {.k = k, .params = &sp, .seed = 42, .pos0 = pos0};
    sd_draft_out_t out = {.tokens = tokens, .n = -1, .has_q = -1};
    cr_assert_eq(sd_drafter_propose(d, &req, &out), SD_OK, "%s", sd_last_error());
    cr_assert_eq(out.has_q, 0, "n-gram proposals are deterministic");
    cr_assert(out.n >= 0 && out.n <= k, "%d tokens for k = %d", out.n, k);
    return out.n;
}

static void assert_proposal(sd_drafter_t *d, int k, int64_t pos0, const int32_t *want, int n_want)
{
    int32_t got[K_CAP];
    int n = propose(d, k, pos0, got);
    cr_assert_eq(n, n_want, "k %d: %d tokens, want %d", k, n, n_want);
    for (int i = 0; i < n; i++)
        cr_assert_eq(got[i], want[i], "k %d: token %d is %d, want %d", k, i, got[i], want[i]);
}

Test(draft_ngram, ops_table, .timeout = 10)
{
    sd_drafter_t *d = make(1, 3);
    cr_assert_str_eq(sd_drafter_name(d), "ngram");
    cr_assert_eq(sd_drafter_proposes_cheaply(d), 1, "a lookup costs no model forward");
    sd_ngram_params_t p;
    sd_ngram_params_default(&p);
    cr_assert(p.n_min == 1 && p.n_max == 3);
    sd_drafter_free(d);
    sd_drafter_free(NULL);
}

Test(draft_ngram, repeated_phrase_proposes_its_continuation, .timeout = 10)
{
    const int32_t ctx[] = {1, 2, 3, 4, 5, 9, 9, 1, 2, 3};
    sd_drafter_t *d = make_with(1, 3, ctx, 10);
    assert_proposal(d, 5, 10, (int32_t[]){4, 5, 9, 9, 1}, 5);
    assert_proposal(d, 2, 10, (int32_t[]){4, 5}, 2);
    assert_proposal(d, 1, 10, (int32_t[]){4}, 1);
    /* the continuation runs to the end of the context and stops there */
    assert_proposal(d, 20, 10, (int32_t[]){4, 5, 9, 9, 1, 2, 3}, 7);
    sd_drafter_free(d);
}

Test(draft_ngram, no_match_proposes_nothing, .timeout = 10)
{
    sd_drafter_t *d = make(1, 3);
    assert_proposal(d, 4, 0, NULL, 0); /* empty context */
    cr_assert_eq(sd_drafter_begin(d, (int32_t[]){7}, 1), SD_OK);
    assert_proposal(d, 4, 1, NULL, 0);
    cr_assert_eq(sd_drafter_begin(d, (int32_t[]){1, 2, 3, 4}, 4), SD_OK);
    assert_proposal(d, 4, 4, NULL, 0);
    /* n_min = 2: a one-token match is not enough */
    sd_drafter_t *d2 = make_with(2, 3, (int32_t[]){5, 1, 6, 5}, 4);
    assert_proposal(d2, 4, 4, NULL, 0);
    sd_drafter_free(d);
    sd_drafter_free(d2);
}

Test(draft_ngram, longest_suffix_wins_then_shorter, .timeout = 10)
{
    /* index:            0  1  2  3  4  5  6  7  8 */
    const int32_t ctx[] = {7, 1, 2, 8, 5, 2, 9, 1, 2};
    sd_drafter_t *d3 = make_with(1, 3, ctx, 9); /* "1 2" ends at 3 */
    assert_proposal(d3, 3, 9, (int32_t[]){8, 5, 2}, 3);
    sd_drafter_t *d1 = make_with(1, 1, ctx, 9); /* "2": most recent earlier end is 6 */
    assert_proposal(d1, 3, 9, (int32_t[]){9, 1, 2}, 3);
    sd_drafter_free(d3);
    sd_drafter_free(d1);
}

/* The evidence of a proposal is the length of the suffix it matched (capped at the last
 * class); a proposal of nothing leaves the caller's value. */
static int evidence_of(sd_drafter_t *d, int64_t pos0)
{
    int32_t tokens[K_CAP];
    sd_draft_request_t req = {.k = 4, .pos0 = pos0};
    sd_draft_out_t out = {.tokens = tokens, .evidence = -7};
    cr_assert_eq(sd_drafter_propose(d, &req, &out), SD_OK, "%s", sd_last_error());
    return out.evidence;
}

Test(draft_ngram, evidence_is_the_matched_length, .timeout = 10)
{
    const int32_t ctx[] = {7, 1, 2, 8, 5, 2, 9, 1, 2};
    sd_drafter_t *d = make_with(1, 3, ctx, 9);
    cr_assert_eq(evidence_of(d, 9), 2, "\"1 2\" matched");
    cr_assert_eq(sd_drafter_begin(d, (int32_t[]){1, 2, 3, 4, 9, 1, 2, 3}, 8), SD_OK);
    cr_assert_eq(evidence_of(d, 8), 3, "\"1 2 3\" matched");
    cr_assert_eq(sd_drafter_begin(d, (int32_t[]){5, 1, 6, 5}, 4), SD_OK);
    cr_assert_eq(evidence_of(d, 4), 1, "\"5\" matched");
    cr_assert_eq(sd_drafter_begin(d, (int32_t[]){1, 2, 3, 4}, 4), SD_OK);
    cr_assert_eq(evidence_of(d, 4), -7, "no match: evidence untouched");
    int32_t ctx12[24];
    for (int i = 0; i < 24; i++) ctx12[i] = i % 12;
    sd_drafter_t *d12 = make_with(1, 12, ctx12, 24);
    cr_assert_eq(evidence_of(d12, 24), SD_DRAFT_EVIDENCE_CLASSES - 1, "12 tokens matched: the last class");
    sd_drafter_free(d);
    sd_drafter_free(d12);
}

Test(draft_ngram, most_recent_occurrence_and_overlaps, .timeout = 10)
{
    sd_drafter_t *d = make_with(1, 3, (int32_t[]){1, 5, 1, 6, 1}, 5);
    assert_proposal(d, 3, 5, (int32_t[]){6, 1}, 2); /* not 5: the later "1" wins */
    /* "4 4 4" overlaps its own earlier occurrence: one token left before the end */
    cr_assert_eq(sd_drafter_begin(d, (int32_t[]){4, 4, 4, 4}, 4), SD_OK);
    assert_proposal(d, 5, 4, (int32_t[]){4}, 1);
    /* period 2: "a b a" matched one period back */
    cr_assert_eq(sd_drafter_begin(d, (int32_t[]){3, 8, 3, 8, 3}, 5), SD_OK);
    assert_proposal(d, 5, 5, (int32_t[]){8, 3}, 2);
    sd_drafter_free(d);
}

Test(draft_ngram, accept_extends_the_context, .timeout = 10)
{
    const int32_t ctx[] = {1, 2, 3, 4, 5, 9, 9, 1, 2, 3};
    sd_drafter_t *d = make_with(1, 3, ctx, 10);
    int32_t got[K_CAP];
    cr_assert_eq(propose(d, 3, 10, got), 3); /* 4 5 9 */
    cr_assert_eq(sd_drafter_accept(d, 2, 7), SD_OK); /* context += 4 5 7 */
    /* "5 7" is new; "7" too: nothing to propose at 13 */
    assert_proposal(d, 3, 13, NULL, 0);
    cr_assert_eq(sd_drafter_accept(d, 0, 1), SD_OK); /* += 1: "7 1" new, "1" ends at 8 */
    const int32_t full[] = {1, 2, 3, 4, 5, 9, 9, 1, 2, 3, 4, 5, 7, 1};
    sd_drafter_t *fresh = make_with(1, 3, full, 14);
    int32_t a[K_CAP], b[K_CAP];
    int na = propose(d, 8, 14, a), nb = propose(fresh, 8, 14, b);
    cr_assert_eq(na, nb);
    cr_assert_arr_eq(a, b, (size_t)na * sizeof a[0]);
    cr_assert_eq(na, 6); /* only "1" recurs, most recently ending at 8: 2 3 4 5 7 1 */
    sd_drafter_free(d);
    sd_drafter_free(fresh);
}

Test(draft_ngram, bad_arguments, .timeout = 10)
{
    sd_drafter_t *d = NULL;
    const sd_ngram_params_t bad[] = {{0, 3}, {2, 1}, {1, SD_NGRAM_N_LIMIT + 1}, {-1, -1}};
    const char *field[] = {"n_min 0", "n_max 1", "n_max 33", "n_min -1"};
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(sd_drafter_ngram_new(&bad[i], &d), SD_ERR_INVALID_ARG, "case %d", i);
        cr_assert(strstr(sd_last_error(), field[i]), "case %d: %s", i, sd_last_error());
    }
    cr_assert_eq(sd_drafter_ngram_new(NULL, &d), SD_ERR_INVALID_ARG);
    cr_assert_null(d);

    d = make_with(1, 3, (int32_t[]){1, 2, 1, 2}, 4);
    int32_t tok[K_CAP];
    sd_draft_request_t req = {.k = 0, .pos0 = 4};
    sd_draft_out_t out = {.tokens = tok};
    cr_assert_eq(sd_drafter_propose(d, &req, &out), SD_ERR_INVALID_ARG, "k = 0");
    req.k = 2;
    out.tokens = NULL;
    cr_assert_eq(sd_drafter_propose(d, &req, &out), SD_ERR_INVALID_ARG, "no token buffer");
    out.tokens = tok;
    req.pos0 = 5;
    cr_assert_eq(sd_drafter_propose(d, &req, &out), SD_ERR_INVALID_ARG, "position past the context");
    cr_assert(strstr(sd_last_error(), "position 5"), "%s", sd_last_error());
    cr_assert_eq(sd_drafter_accept(d, 1, 3), SD_ERR_INVALID_ARG, "accept without a proposal");
    cr_assert_eq(propose(d, 2, 4, tok), 2);
    cr_assert_eq(sd_drafter_accept(d, 3, 3), SD_ERR_INVALID_ARG, "more accepted than proposed");
    cr_assert_eq(sd_drafter_accept(d, -1, 3), SD_ERR_INVALID_ARG);
    cr_assert_eq(sd_drafter_accept(d, 1, -5), SD_ERR_INVALID_ARG, "negative token");
    cr_assert_eq(sd_drafter_rollback(d, 5), SD_ERR_INVALID_ARG, "rollback past the end");
    cr_assert_eq(sd_drafter_rollback(d, -1), SD_ERR_INVALID_ARG);
    cr_assert_eq(sd_drafter_begin(d, NULL, 3), SD_ERR_INVALID_ARG);
    cr_assert_eq(sd_drafter_begin(d, (int32_t[]){1, -2}, 2), SD_ERR_INVALID_ARG);
    /* failed calls left the context alone */
    assert_proposal(d, 2, 4, (int32_t[]){1, 2}, 2);
    sd_drafter_free(d);
}

Test(draft_ngram, reset_forgets_the_request, .timeout = 10)
{
    sd_drafter_t *d = make_with(1, 3, (int32_t[]){1, 2, 1, 2}, 4);
    sd_drafter_reset(d);
    assert_proposal(d, 2, 0, NULL, 0);
    cr_assert_eq(sd_drafter_begin(d, (int32_t[]){6, 6}, 2), SD_OK);
    assert_proposal(d, 2, 2, (int32_t[]){6}, 1);
    sd_drafter_free(d);
}

/* ---- randomized walk against a brute-force reference ------------------------------- */

/* The reference: longest suffix n_max..n_min whose most recent earlier occurrence ends at
 * e < len; proposes ctx[e .. min(e + k, len)). */
static int brute_propose(const int32_t *ctx, int len, int n_min, int n_max, int k, int32_t *out)
{
    for (int n = n_max; n >= n_min; n--) {
        if (len < n)
            continue;
        for (int e = len - 1; e >= n; e--) {
            if (memcmp(ctx + e - n, ctx + len - n, (size_t)n * sizeof *ctx) != 0)
                continue;
            int m = len - e < k ? len - e : k;
            memcpy(out, ctx + e, (size_t)m * sizeof *ctx);
            return m;
        }
    }
    return 0;
}

static void check_against_brute(sd_drafter_t *d, const int32_t *ctx, int len, int n_min, int n_max,
                                int k)
{
    int32_t want[K_CAP];
    int n = brute_propose(ctx, len, n_min, n_max, k, want);
    assert_proposal(d, k, len, want, n);
}

static uint32_t lcg(uint32_t *s)
{
    *s = *s * 1664525u + 1013904223u;
    return *s >> 8;
}

/* Steps of propose/accept (with a random accepted count) and occasional rollbacks; every
 * step the drafter's proposal equals the brute-force one over the same context. */
static void random_walk(int n_min, int n_max, int vocab, int prompt_len, int steps, uint32_t seed)
{
    int cap = prompt_len + steps * (K_CAP + 1);
    int32_t *ctx = malloc((size_t)cap * sizeof *ctx);
    cr_assert_not_null(ctx);
    for (int i = 0; i < prompt_len; i++)
        ctx[i] = (int32_t)(lcg(&seed) % (uint32_t)vocab);
    sd_drafter_t *d = make_with(n_min, n_max, ctx, prompt_len);
    int len = prompt_len;
    for (int step = 0; step < steps; step++) {
        int k = 1 + (int)(lcg(&seed) % 8);
        check_against_brute(d, ctx, len, n_min, n_max, k);
        int32_t prop[K_CAP];
        int n = propose(d, k, len, prop);
        int acc = n ? (int)(lcg(&seed) % (uint32_t)(n + 1)) : 0;
        memcpy(ctx + len, prop, (size_t)acc * sizeof *ctx);
        len += acc;
        ctx[len++] = (int32_t)(lcg(&seed) % (uint32_t)vocab);
        cr_assert_eq(sd_drafter_accept(d, acc, ctx[len - 1]), SD_OK, "%s", sd_last_error());
        if (lcg(&seed) % 7 == 0) {
            len -= (int)(lcg(&seed) % (uint32_t)(len + 1) / 4);
            cr_assert_eq(sd_drafter_rollback(d, len), SD_OK, "%s", sd_last_error());
        }
    }
    check_against_brute(d, ctx, len, n_min, n_max, 8);
    sd_drafter_free(d);
    free(ctx);
}

Test(draft_ngram, random_walk_matches_brute_force, .timeout = 60)
{
    random_walk(1, 3, 3, 10, 400, 1);
    random_walk(1, 3, 6, 50, 400, 2);
    random_walk(2, 5, 2, 20, 400, 3);
    random_walk(3, 3, 4, 0, 400, 4);
    random_walk(1, 8, 5, 100, 300, 5);
}

/* Rolling back to a length gives the proposals of a drafter that only ever saw that prefix,
 * and it keeps working from there. */
Test(draft_ngram, rollback_equals_fresh_prefix, .timeout = 30)
{
    enum { N = 600 };
    int32_t ctx[N];
    uint32_t seed = 9;
    for (int i = 0; i < N; i++)
        ctx[i] = (int32_t)(lcg(&seed) % 5);
    sd_drafter_t *d = make_with(1, 4, ctx, N);
    for (int len = N; len >= 0; len -= 37) {
        cr_assert_eq(sd_drafter_rollback(d, len), SD_OK);
        sd_drafter_t *fresh = make_with(1, 4, ctx, len);
        for (int k = 1; k <= 8; k += 3) {
            int32_t a[K_CAP], b[K_CAP];
            int na = propose(d, k, len, a), nb = propose(fresh, k, len, b);
            cr_assert_eq(na, nb, "len %d k %d", len, k);
            cr_assert_arr_eq(a, b, (size_t)na * sizeof a[0], "len %d k %d", len, k);
        }
        sd_drafter_free(fresh);
    }
    sd_drafter_free(d);
}

/* A 20,000-token context over a 50-token vocabulary, then 2,000 steps: per-step work is
 * independent of the context length (brute-force checks only now and then). */
Test(draft_ngram, large_context, .timeout = 60)
{
    enum { N = 20000, STEPS = 2000 };
    int32_t *ctx = malloc((N + STEPS * (K_CAP + 1)) * sizeof *ctx);
    cr_assert_not_null(ctx);
    uint32_t seed = 77;
    for (int i = 0; i < N; i++) /* a repetitive "document": random phrases from a small pool */
        ctx[i] = i % 40 < 20 ? (int32_t)((i / 40 % 13) * 7 + i % 20) % 50
                             : (int32_t)(lcg(&seed) % 50);
    sd_drafter_t *d = make_with(1, 3, ctx, N);
    int len = N, proposed = 0;
    for (int step = 0; step < STEPS; step++) {
        if (step % 250 == 0)
            check_against_brute(d, ctx, len, 1, 3, 8);
        int32_t prop[K_CAP];
        int n = propose(d, 8, len, prop);
        proposed += n;
        int acc = n / 2;
        memcpy(ctx + len, prop, (size_t)acc * sizeof *ctx);
        len += acc;
        ctx[len++] = (int32_t)(lcg(&seed) % 50);
        cr_assert_eq(sd_drafter_accept(d, acc, ctx[len - 1]), SD_OK);
    }
    cr_assert_gt(proposed, STEPS, "repetitive text should give proposals");
    sd_drafter_free(d);
    free(ctx);
}
