/* The cross-vocabulary drafter's translation (draft/xvocab.h), around an oracle drafter in
 * the draft vocabulary that proposes the draft tokenizer's encoding of the text still to
 * come: the draft context it is given always spells the target context's text (long
 * contexts, rollbacks and the fixed/re-encoded boundary included), and its proposals come
 * back as the target tokenizer's own tokens of that text, across byte-level BPE and
 * SentencePiece vocabularies. Special tokens map by their text; text that spells one stays
 * text. The registry row and the exact-id drafter's hint. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "draft/drafter_impl.h"
#include "draft/model_drafter.h"
#include "draft/registry.h"
#include "draft/xvocab.h"
#include "gguf/synthetic.h"
#include "model/model.h"
#include "support/test_util.h"
#include "tokenizer/tokenizer.h"
#include "verify/tree.h"

#define MAX_CTX 8192

static sd_model_t *synth(sd_synth_tokenizer_t tok, int n_vocab)
{
    sd_synth_spec_t s;
    sd_synth_spec_default(&s);
    s.n_layer = 1;
    s.n_vocab = n_vocab;
    s.tokenizer = tok;
    s.n_ctx = 64;
    char path[512];
    sd_test_tmp_path(path, sizeof path, "xvocab");
    cr_assert_eq(sd_synth_write_file(&s, path), SD_OK, "synth: %s", sd_last_error());
    sd_model_params_t p;
    sd_model_params_default(&p);
    p.path = path;
    p.n_threads = 1;
    sd_model_t *m = NULL;
    sd_status_t st = sd_model_load(&p, &m);
    remove(path);
    cr_assert_eq(st, SD_OK, "load: %s", sd_last_error());
    return m;
}

static size_t encode(const sd_model_t *m, const char *text, size_t len, int flags, int32_t *out,
                     size_t cap)
{
    size_t n = 0;
    sd_status_t st = sd_tokenizer_encode(m->tokenizer, text, len, flags, out, cap, &n);
    cr_assert_eq(st, SD_OK, "encode: %s", sd_last_error());
    return n;
}

/* The text tokens[n] spell: special tokens left out, and the space a SentencePiece space
 * prefix puts at the start of each text after one (or at the start) removed. */
static size_t text_of(const sd_tokenizer_t *t, const int32_t *tokens, size_t n, char *buf,
                      size_t cap)
{
    size_t len = 0;
    int seg_start = 1;
    for (size_t i = 0; i < n; i++) {
        if (sd_tokenizer_is_special(t, tokens[i])) {
            seg_start = 1;
            continue;
        }
        size_t piece = 0;
        cr_assert_eq(sd_tokenizer_piece(t, tokens[i], buf + len, cap - len, &piece), SD_OK);
        if (seg_start && sd_tokenizer_space_prefix(t) && piece > 0 && buf[len] == ' ')
            memmove(buf + len, buf + len + 1, --piece);
        len += piece;
        seg_start = 0;
    }
    return len;
}

/* ---- the oracle: a drafter of the draft vocabulary that knows the text to come ------- */

typedef struct oracle {
    sd_drafter_t base;
    const sd_model_t *m;    /* its vocabulary */
    const char *ref;        /* the text the context spells a prefix of */
    size_t ref_len;
    const int32_t *fixed;   /* instead: always propose these */
    int n_fixed;
    int32_t ctx[MAX_CTX];
    int len;
    int32_t prop[64];
    int prop_n;
    int proposals;
    int deepest_cut; /* the most context tokens one rollback dropped */
} oracle_t;

static sd_status_t o_begin(sd_drafter_t *d, const int32_t *tokens, int n)
{
    oracle_t *o = (oracle_t *)d;
    cr_assert_leq(n, MAX_CTX);
    if (n > 0) memcpy(o->ctx, tokens, (size_t)n * sizeof *tokens);
    o->len = n;
    o->prop_n = 0;
    return SD_OK;
}

static sd_status_t o_propose(sd_drafter_t *d, const sd_draft_request_t *req, sd_draft_out_t *out)
{
    oracle_t *o = (oracle_t *)d;
    cr_assert_eq(req->pos0, o->len, "asked at %lld, context %d", (long long)req->pos0, o->len);
    cr_assert_eq(req->params->temperature, 0.0f, "the inner drafter drafts greedily");
    o->proposals++;
    int n = 0;
    if (o->fixed) {
        n = o->n_fixed < req->k ? o->n_fixed : req->k;
        memcpy(o->prop, o->fixed, (size_t)n * sizeof *o->fixed);
    } else {
        static char text[MAX_CTX * 8];
        size_t len = text_of(o->m->tokenizer, o->ctx, (size_t)o->len, text, sizeof text);
        cr_assert(len <= o->ref_len && memcmp(text, o->ref, len) == 0,
                  "the draft context spells '%.*s', not a prefix of '%.*s'", (int)len, text,
                  (int)(len < o->ref_len ? len : o->ref_len), o->ref);
        size_t rest = o->ref_len - len < 48 ? o->ref_len - len : 48;
        int cont = o->len > 0 && !sd_tokenizer_is_special(o->m->tokenizer, o->ctx[o->len - 1]);
        int32_t toks[64];
        size_t nt = encode(o->m, o->ref + len, rest, cont ? SD_TOKENIZE_CONTINUATION : 0, toks, 64);
        n = (int)nt < req->k ? (int)nt : req->k;
        memcpy(o->prop, toks, (size_t)n * sizeof *toks);
    }
    memcpy(out->tokens, o->prop, (size_t)n * sizeof *o->prop);
    o->prop_n = n;
    out->n = n;
    out->has_q = 0;
    return SD_OK;
}

static sd_status_t o_accept(sd_drafter_t *d, int a, int32_t next)
{
    oracle_t *o = (oracle_t *)d;
    cr_assert(a >= 0 && a <= o->prop_n, "accept %d of %d", a, o->prop_n);
    cr_assert_lt(o->len + a + 1, MAX_CTX);
    memcpy(o->ctx + o->len, o->prop, (size_t)a * sizeof *o->prop);
    o->len += a;
    o->ctx[o->len++] = next;
    o->prop_n = 0;
    return SD_OK;
}

static sd_status_t o_rollback(sd_drafter_t *d, int n)
{
    oracle_t *o = (oracle_t *)d;
    cr_assert(n >= 0 && n <= o->len, "rollback to %d of %d", n, o->len);
    if (o->len - n > o->deepest_cut) o->deepest_cut = o->len - n;
    o->len = n;
    o->prop_n = 0;
    return SD_OK;
}

#define ALT " zebra crossing the river"

/* A tree of two paths (shape->levels deep): the oracle's chain proposal and the draft
 * encoding of ALT continuing the context. */
static sd_status_t o_propose_tree(sd_drafter_t *d, const sd_draft_request_t *req,
                                  const sd_tree_shape_t *shape, sd_draft_tree_t *out)
{
    oracle_t *o = (oracle_t *)d;
    sd_draft_request_t r = *req;
    r.k = shape->levels;
    int32_t chain[64], alt[64];
    sd_draft_out_t c = {.tokens = chain};
    o_propose(d, &r, &c);
    int cont = o->len > 0 && !sd_tokenizer_is_special(o->m->tokenizer, o->ctx[o->len - 1]);
    int na = (int)encode(o->m, ALT, strlen(ALT), cont ? SD_TOKENIZE_CONTINUATION : 0, alt, 64);
    out->n = 0;
    for (int i = 0; i < c.n; i++, out->n++) {
        out->tokens[out->n] = chain[i];
        out->parent[out->n] = i > 0 ? out->n - 1 : -1;
    }
    for (int i = 0; i < na && i < shape->levels; i++, out->n++) {
        out->tokens[out->n] = alt[i];
        out->parent[out->n] = i > 0 ? out->n - 1 : -1;
    }
    o->prop_n = 0;
    return SD_OK;
}

static sd_status_t o_accept_path(sd_drafter_t *d, const int32_t *t, int n, int32_t next)
{
    (void)d, (void)t, (void)n, (void)next;
    cr_assert_fail("the xvocab drafter translates its context again instead");
    return SD_OK;
}

static void o_reset(sd_drafter_t *d) { ((oracle_t *)d)->len = 0; }
static void o_destroy(sd_drafter_t *d) { free(d); }

static const sd_drafter_ops_t oracle_ops = {
    .name = "oracle",
    .begin = o_begin,
    .propose = o_propose,
    .accept = o_accept,
    .rollback = o_rollback,
    .reset = o_reset,
    .destroy = o_destroy,
    .propose_tree = o_propose_tree,
    .accept_path = o_accept_path,
};

/* The xvocab drafter over an oracle of draft's vocabulary (*oracle: to inspect it). */
static sd_drafter_t *xvocab_over_oracle(const sd_model_t *draft, const sd_model_t *target,
                                        const char *ref, oracle_t **oracle)
{
    oracle_t *o = calloc(1, sizeof *o);
    cr_assert_not_null(o);
    o->base.ops = &oracle_ops;
    o->m = draft;
    o->ref = ref;
    o->ref_len = ref ? strlen(ref) : 0;
    sd_drafter_t *d = NULL;
    cr_assert_eq(sd_drafter_xvocab_wrap(&o->base, draft, target, &d), SD_OK, "%s", sd_last_error());
    if (oracle) *oracle = o;
    return d;
}

static int propose(sd_drafter_t *d, int64_t pos0, int k, int32_t *out)
{
    sd_sampler_params_t greedy = {.temperature = 0.0f, .top_p = 1.0f};
    sd_draft_request_t req = {.k = k, .params = &greedy, .pos0 = pos0};
    sd_draft_out_t o = {.tokens = out};
    cr_assert_eq(sd_drafter_propose(d, &req, &o), SD_OK, "propose: %s", sd_last_error());
    cr_assert_eq(o.has_q, 0, "proposals are deterministic");
    cr_assert(o.n >= 0 && o.n <= k, "%d proposed of k = %d", o.n, k);
    return o.n;
}

static const char *const TEXTS[] = {
    "the small model drafts a few tokens, and the large one checks them all in one pass.",
    "x = 42;\n    if (x  >  3)   return x * 3.14;\n\n// done: don't stop, it's fine",
    "def f(items):\n\treturn [len(s) for s in items if s.startswith('(the')]  # (ok)",
    "na\xc3\xafve caf\xc3\xa9 \xe2\x80\x94 \xe6\x9d\xb1\xe4\xba\xac \xf0\x9f\x99\x82 the end",
};
#define N_TEXTS (sizeof TEXTS / sizeof TEXTS[0])

typedef struct pair {
    sd_synth_tokenizer_t target, draft;
    int target_vocab, draft_vocab;
} pair_t;

static const pair_t PAIRS[] = {
    {SD_SYNTH_TOKENIZER_GPT2, SD_SYNTH_TOKENIZER_LLAMA, 320, 400},
    {SD_SYNTH_TOKENIZER_LLAMA, SD_SYNTH_TOKENIZER_GPT2, 400, 320},
    {SD_SYNTH_TOKENIZER_GPT2, SD_SYNTH_TOKENIZER_GPT2, 320, 500},
};
#define N_PAIRS (sizeof PAIRS / sizeof PAIRS[0])

/* ---- proposals ----------------------------------------------------------------------- */

/* After every prefix of a text's target tokens (the empty one too), the proposal of an
 * oracle that knows the rest is exactly the target tokenizer's continuation, and is
 * nearly always made (the draft's k + 2 tokens reach past one word). */
static void check_proposals(const sd_model_t *target, const sd_model_t *draft, const char *what)
{
    for (size_t t = 0; t < N_TEXTS; t++) {
        int32_t ref[512];
        size_t n = encode(target, TEXTS[t], strlen(TEXTS[t]), SD_TOKENIZE_ADD_BOS, ref, 512);
        size_t first_right = 0, tried = 0;
        for (size_t m = sd_tokenizer_is_special(target->tokenizer, ref[0]); m + 1 < n; m++) {
            sd_drafter_t *d = xvocab_over_oracle(draft, target, TEXTS[t], NULL);
            cr_assert_eq(sd_drafter_begin(d, ref, (int)m), SD_OK, "%s", sd_last_error());
            int32_t out[8];
            int got = propose(d, (int64_t)m, 6, out);
            for (int i = 0; i < got; i++)
                cr_assert_eq(out[i], ref[m + i],
                             "%s, text %zu after %zu tokens: proposal %d is %d, the target's "
                             "token is %d", what, t, m, i, out[i], ref[m + i]);
            tried++;
            first_right += got > 0 && out[0] == ref[m];
            sd_drafter_free(d);
        }
        cr_assert_geq(first_right * 10, tried * 9, "%s, text %zu: the first proposal right "
                      "after only %zu of %zu prefixes", what, t, first_right, tried);
    }
}

Test(draft_xvocab, proposals_are_the_targets_own_tokens, .timeout = 120)
{
    for (size_t p = 0; p < N_PAIRS; p++) {
        sd_model_t *target = synth(PAIRS[p].target, PAIRS[p].target_vocab);
        sd_model_t *draft = synth(PAIRS[p].draft, PAIRS[p].draft_vocab);
        char what[64];
        snprintf(what, sizeof what, "pair %zu", p);
        check_proposals(target, draft, what);
        sd_model_free(draft);
        sd_model_free(target);
    }
}

/* The same with the real SmolLM2 tokenizer (byte-level BPE with its own pre-tokenizer,
 * where punctuation joins the word after it) on the target side, and on the draft side. */
Test(draft_xvocab, proposals_with_a_real_tokenizer, .timeout = 120)
{
    const char *path = sd_test_real_model();
    if (path == NULL) cr_skip_test("SmolLM2 is not cached (scripts/fetch-model.sh fetches it)");
    sd_model_params_t p;
    sd_model_params_default(&p);
    p.path = path;
    p.n_threads = 1;
    p.n_ctx = 64;
    sd_model_t *real = NULL;
    cr_assert_eq(sd_model_load(&p, &real), SD_OK, "%s", sd_last_error());
    sd_model_t *spm = synth(SD_SYNTH_TOKENIZER_LLAMA, 400);
    sd_model_t *bpe = synth(SD_SYNTH_TOKENIZER_GPT2, 320);
    check_proposals(real, spm, "SmolLM2 target, SentencePiece draft");
    check_proposals(real, bpe, "SmolLM2 target, BPE draft");
    check_proposals(spm, real, "SentencePiece target, SmolLM2 draft");
    sd_model_free(bpe);
    sd_model_free(spm);
    sd_model_free(real);
}

/* Trees: the oracle's two paths (the text to come, and ALT) come back merged into one trie
 * of target tokens, within the shape's depth and nodes: the first path exactly the chain
 * proposal's target tokens, ALT a second branch. */
Test(draft_xvocab, tree_paths_merge_into_a_target_trie, .timeout = 120)
{
    sd_tree_shape_t shape = {.levels = 4, .width = {2, 1, 1, 1}};
    for (size_t p = 0; p < N_PAIRS; p++) {
        sd_model_t *target = synth(PAIRS[p].target, PAIRS[p].target_vocab);
        sd_model_t *draft = synth(PAIRS[p].draft, PAIRS[p].draft_vocab);
        for (size_t t = 0; t < N_TEXTS; t++) {
            int32_t ref[512];
            size_t n = encode(target, TEXTS[t], strlen(TEXTS[t]), SD_TOKENIZE_ADD_BOS, ref, 512);
            size_t branched = 0, tried = 0;
            for (size_t m = 1; m + 1 < n; m++) {
                sd_drafter_t *d = xvocab_over_oracle(draft, target, TEXTS[t], NULL);
                cr_assert_eq(sd_drafter_begin(d, ref, (int)m), SD_OK, "%s", sd_last_error());
                int32_t chain[8];
                int got = propose(d, (int64_t)m, 4, chain);
                sd_drafter_reset(d);
                cr_assert_eq(sd_drafter_begin(d, ref, (int)m), SD_OK, "%s", sd_last_error());
                sd_sampler_params_t greedy = {.temperature = 0.0f, .top_p = 1.0f};
                sd_draft_request_t req = {.k = 1, .params = &greedy, .pos0 = (int64_t)m};
                sd_draft_tree_t tree = {0};
                cr_assert_eq(sd_drafter_propose_tree(d, &req, &shape, &tree), SD_OK, "%s",
                             sd_last_error());
                sd_token_tree_t tt = {tree.n, tree.tokens, tree.parent};
                int32_t depth[SD_SPEC_TREE_MAX_NODES];
                cr_assert_eq(sd_tree_check(&tt, target->hp.n_vocab, depth), SD_OK, "%s",
                             sd_last_error());
                cr_assert_leq(tree.n, 8, "pair %zu, text %zu at %zu: %d nodes", p, t, m, tree.n);
                int node = -1, matched = 0, roots = 0;
                for (int i = 0; i < tree.n; i++) {
                    cr_assert_leq(depth[i], 4);
                    roots += tree.parent[i] == -1;
                    if (matched < got && tree.parent[i] == node && tree.tokens[i] == chain[matched])
                        node = i, matched++;
                }
                cr_assert_eq(matched, got, "pair %zu, text %zu at %zu: the chain's %d tokens are "
                             "not a path of the tree (%d are)", p, t, m, got, matched);
                branched += roots > 1;
                tried++;
                sd_drafter_free(d);
            }
            cr_assert_geq(branched * 2, tried, "pair %zu, text %zu: ALT branched off at the root "
                          "in only %zu of %zu trees", p, t, branched, tried);
        }
        sd_model_free(draft);
        sd_model_free(target);
    }
}

/* A long generation with the oracle: the context passes the fixed/re-encoded boundary
 * many times and rolls back across it; the draft context always spells the target's text
 * (the oracle checks it at each proposal) and nearly every proposal is accepted. */
Test(draft_xvocab, long_contexts_keep_their_text, .timeout = 120)
{
    static char ref_text[16384];
    size_t len = 0;
    for (int rep = 0; len + 200 < sizeof ref_text / 2; rep++)
        len += (size_t)snprintf(ref_text + len, sizeof ref_text - len, "%s %d\n",
                                TEXTS[rep % N_TEXTS], rep);
    for (size_t p = 0; p < N_PAIRS; p++) {
        sd_model_t *target = synth(PAIRS[p].target, PAIRS[p].target_vocab);
        sd_model_t *draft = synth(PAIRS[p].draft, PAIRS[p].draft_vocab);
        static int32_t ref[MAX_CTX];
        size_t n = encode(target, ref_text, len, SD_TOKENIZE_ADD_BOS, ref, MAX_CTX);
        cr_assert_gt(n, 600, "a context well past the re-encoded window: %zu tokens", n);
        oracle_t *o;
        sd_drafter_t *d = xvocab_over_oracle(draft, target, ref_text, &o);
        size_t m = 150;
        cr_assert_eq(sd_drafter_begin(d, ref, (int)m), SD_OK, "%s", sd_last_error());
        size_t drafted = 0, accepted = 0, steps = 0;
        int rolled_back = 0;
        while (m + 8 < n) {
            int32_t out[8];
            int got = propose(d, (int64_t)m, 5, out);
            if (rolled_back == 1) { /* that proposal dropped what the rollback asked */
                o->deepest_cut = 0;
                rolled_back = 2;
            }
            int a = 0;
            while (a < got && out[a] == ref[m + a]) a++;
            cr_assert_eq(sd_drafter_accept(d, a, ref[m + a]), SD_OK, "%s", sd_last_error());
            drafted += (size_t)got;
            accepted += (size_t)a;
            m += (size_t)a + 1;
            steps++;
            if (!rolled_back && m > n / 2) { /* back across the fixed part */
                m = n / 4;
                cr_assert_eq(sd_drafter_rollback(d, (int)m), SD_OK, "%s", sd_last_error());
                rolled_back = 1;
            }
        }
        cr_assert_geq(accepted * 10, drafted * 8, "pair %zu: %zu of %zu drafts accepted over "
                      "%zu steps", p, accepted, drafted, steps);
        cr_assert_leq(o->deepest_cut, 48, "pair %zu: a step dropped %d tokens of the draft "
                      "context (the translation is incremental)", p, o->deepest_cut);
        cr_assert_eq(o->proposals, (int)steps);
        size_t dn;
        sd_drafter_xvocab_draft_context(d, &dn);
        cr_assert_gt(dn, 0);
        sd_drafter_free(d);
        sd_model_free(draft);
        sd_model_free(target);
    }
}

/* ---- special tokens ------------------------------------------------------------------ */

static int contains(const int32_t *t, size_t n, int32_t id)
{
    for (size_t i = 0; i < n; i++)
        if (t[i] == id) return 1;
    return 0;
}

/* ChatML markup maps to the draft's own special tokens, and a special token the draft
 * proposes to the target's; a user's text that spells "<|im_start|>" stays text. */
Test(draft_xvocab, special_tokens_map_and_text_stays_text, .timeout = 60)
{
    sd_model_t *target = synth(SD_SYNTH_TOKENIZER_GPT2, 320);
    sd_model_t *draft = synth(SD_SYNTH_TOKENIZER_GPT2, 500);
    int32_t t_start, t_end, d_start, d_end;
    cr_assert_eq(encode(target, "<|im_start|>", 12, SD_TOKENIZE_PARSE_SPECIAL, &t_start, 1), 1);
    cr_assert_eq(encode(target, "<|im_end|>", 10, SD_TOKENIZE_PARSE_SPECIAL, &t_end, 1), 1);
    cr_assert_eq(encode(draft, "<|im_start|>", 12, SD_TOKENIZE_PARSE_SPECIAL, &d_start, 1), 1);
    cr_assert_eq(encode(draft, "<|im_end|>", 10, SD_TOKENIZE_PARSE_SPECIAL, &d_end, 1), 1);
    cr_assert_neq(t_start, d_start, "the two vocabularies number their specials apart");

    const char *chat = "<|im_start|>user\nsay <|im_start|> twice<|im_end|>\n<|im_start|>assistant\n";
    int32_t ctx[256];
    /* the markup parsed as special tokens, the user's "<|im_start|>" as text */
    size_t n = encode(target, chat, 17, SD_TOKENIZE_PARSE_SPECIAL, ctx, 256);
    n += encode(target, chat + 17, 12, 0, ctx + n, 256 - n);
    n += encode(target, chat + 29, strlen(chat) - 29, SD_TOKENIZE_PARSE_SPECIAL, ctx + n, 256 - n);
    int32_t draft_reply[] = {d_end};
    oracle_t *o;
    sd_drafter_t *d = xvocab_over_oracle(draft, target, NULL, &o);
    o->fixed = draft_reply;
    o->n_fixed = 1;
    cr_assert_eq(sd_drafter_begin(d, ctx, (int)n), SD_OK, "%s", sd_last_error());
    int32_t out[4];
    int got = propose(d, (int64_t)n, 3, out);
    cr_assert(got == 1 && out[0] == t_end, "the draft's <|im_end|> proposes the target's %d "
              "(got %d tokens, first %d)", t_end, got, got ? out[0] : -1);
    size_t dn;
    const int32_t *dctx = sd_drafter_xvocab_draft_context(d, &dn);
    int starts = 0;
    for (size_t i = 0; i < dn; i++) starts += dctx[i] == d_start;
    cr_assert_eq(starts, 2, "the two markup <|im_start|> map to the draft's; the user's text "
                 "stays text (%d special starts)", starts);
    cr_assert(contains(dctx, dn, d_end), "the markup <|im_end|> maps to the draft's");
    cr_assert_not(contains(dctx, dn, t_start) && t_start != d_start);
    sd_drafter_free(d);
    sd_model_free(draft);
    sd_model_free(target);
}

/* ---- errors and the registry row ----------------------------------------------------- */

Test(draft_xvocab, refusals_name_the_problem, .timeout = 60)
{
    sd_model_t *target = synth(SD_SYNTH_TOKENIZER_GPT2, 320);
    sd_model_t *draft = synth(SD_SYNTH_TOKENIZER_LLAMA, 400);
    sd_model_t *bare = synth(SD_SYNTH_TOKENIZER_NONE, 320);
    sd_drafter_t *d = NULL;
    cr_assert_eq(sd_drafter_xvocab_new(bare, target, &d), SD_ERR_NO_TOKENIZER);
    cr_assert(strstr(sd_last_error(), "draft model"), "%s", sd_last_error());
    cr_assert_eq(sd_drafter_xvocab_new(draft, bare, &d), SD_ERR_NO_TOKENIZER);
    cr_assert(strstr(sd_last_error(), "target model"), "%s", sd_last_error());
    cr_assert_eq(sd_drafter_xvocab_new(NULL, target, &d), SD_ERR_INVALID_ARG);

    /* the exact-id drafter refuses, and says how to ask for translation */
    cr_assert_eq(sd_drafter_model_new(draft, target, &d), SD_ERR_VOCAB_MISMATCH);
    cr_assert(strstr(sd_last_error(), "--draft xvocab:PATH"), "%s", sd_last_error());

    cr_assert_eq(sd_drafter_xvocab_new(draft, target, &d), SD_OK, "%s", sd_last_error());
    cr_assert_str_eq(sd_drafter_name(d), "xvocab");
    int32_t ctx[] = {5, 6, 7};
    cr_assert_eq(sd_drafter_begin(d, ctx, 3), SD_OK, "%s", sd_last_error());
    int32_t out[4];
    sd_sampler_params_t greedy = {.temperature = 0.0f, .top_p = 1.0f};
    sd_draft_request_t req = {.k = 2, .params = &greedy, .pos0 = 2};
    sd_draft_out_t o = {.tokens = out};
    cr_assert_eq(sd_drafter_propose(d, &req, &o), SD_ERR_INVALID_ARG);
    cr_assert(strstr(sd_last_error(), "position 2") && strstr(sd_last_error(), "length 3"), "%s",
              sd_last_error());
    cr_assert_eq(sd_drafter_accept(d, 3, 5), SD_ERR_INVALID_ARG);
    cr_assert_eq(sd_drafter_accept(d, 0, 320), SD_ERR_INVALID_ARG);
    cr_assert(strstr(sd_last_error(), "token 320"), "%s", sd_last_error());
    cr_assert_eq(sd_drafter_rollback(d, 4), SD_ERR_INVALID_ARG);
    int32_t bad[] = {1, 400};
    cr_assert_eq(sd_drafter_begin(d, bad, 2), SD_ERR_INVALID_ARG);
    sd_drafter_free(d);

    sd_spec_config_t s;
    sd_spec_config_default(&s);
    const char *path = NULL;
    cr_assert_eq(sd_spec_parse_drafter("xvocab:/m/d.gguf", &s, &path), SD_OK, "%s", sd_last_error());
    cr_assert_eq(s.drafter, SD_DRAFTER_XVOCAB);
    cr_assert_str_eq(path, "/m/d.gguf");
    cr_assert_eq(sd_spec_parse_drafter("xvocab:", &s, &path), SD_ERR_INVALID_ARG);
    cr_assert(strstr(sd_last_error(), "xvocab:PATH"), "%s", sd_last_error());
    const sd_drafter_row_t *row = sd_drafter_row_for(SD_DRAFTER_XVOCAB);
    cr_assert_eq(row->check(&s), SD_ERR_INVALID_ARG, "no draft model loaded yet");
    s.draft_model = draft;
    cr_assert_eq(row->make(target, &s, &d), SD_OK, "%s", sd_last_error());
    sd_drafter_free(d);
    sd_model_free(bare);
    sd_model_free(draft);
    sd_model_free(target);
}
