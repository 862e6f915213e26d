/* The cross-vocabulary drafter (draft/xvocab.h; docs/design-notes.md, "Drafting across
 * vocabularies"). Target context -> text -> draft tokens: a fixed part translated once and
 * a tail of at least XV_WINDOW target tokens re-encoded at every proposal, so the boundary
 * between what was fixed and what grows never splits a word the tokenizers would join.
 * Draft proposal -> text -> target tokens: the proposal's text up to its last whole word,
 * encoded as a continuation of the context's text. Text is data
 * on both sides: only special tokens map to special tokens (by their text, else BOS to BOS
 * and EOS to EOS), never a string that spells one. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "draft/drafter_impl.h"
#include "draft/group_drafter.h"
#include "draft/seq_drafter.h"
#include "draft/xvocab.h"
#include "tokenizer/tokenizer.h"
#include "verify/tree.h"

#define XV_WINDOW 64    /* target tokens at least re-encoded at each proposal (the tail) */
#define XV_LOOKAHEAD 3  /* draft tokens asked beyond k: the translation drops the last word */

typedef struct ivec {
    int32_t *v;
    size_t n, cap;
} ivec_t;

typedef struct bvec {
    char *v;
    size_t n, cap;
} bvec_t;

typedef struct xv_drafter {
    sd_drafter_t base;
    sd_drafter_t *inner;           /* the draft model's sequence drafter, in its vocabulary */
    const sd_tokenizer_t *tt, *dt; /* the target's and the draft's tokenizers */
    int t_vocab, d_vocab;
    int t_space, d_space;          /* sd_tokenizer_space_prefix of each */
    int32_t d_bos;                 /* the draft's BOS when its tokenizer adds one, else -1 */
    ivec_t ctx;                    /* the target context */
    size_t t_fixed, d_fixed;       /* ctx[0 .. t_fixed) is translated for good as dctx[0 .. d_fixed) */
    ivec_t dctx;                   /* the inner drafter's committed context */
    ivec_t dprop;                  /* the inner drafter's last proposal, until the next sync */
    ivec_t want;                   /* scratch: the draft context the target context asks for */
    ivec_t spec;                   /* scratch: special-token encodings */
    bvec_t text, dtext;            /* scratch: text */
    ivec_t prop;                   /* the last proposal, in target tokens */
    sd_draft_tree_t itree;         /* the inner drafter's last tree, in draft tokens */
    int full;                      /* the translated prompt did not fit the draft model */
    /* the proposal in flight */
    sd_sampler_params_t greedy;
    sd_draft_request_t ireq;
    sd_draft_out_t iout, *out;
    int k;
} xv_drafter_t;

static const sd_drafter_ops_t xvocab_ops;

/* ---- buffers ------------------------------------------------------------------------- */

static sd_status_t ivec_reserve(ivec_t *a, size_t n)
{
    if (n <= a->cap) return SD_OK;
    size_t cap = a->cap ? a->cap : 64;
    while (cap < n) cap *= 2;
    int32_t *v = realloc(a->v, cap * sizeof *v);
    SD_ALLOC_CHECK(v, cap * sizeof *v, "xvocab drafter tokens");
    a->v = v;
    a->cap = cap;
    return SD_OK;
}

static sd_status_t ivec_append(ivec_t *a, const int32_t *x, size_t n)
{
    SD_CHECK(ivec_reserve(a, a->n + n));
    if (n > 0) memcpy(a->v + a->n, x, n * sizeof *x);
    a->n += n;
    return SD_OK;
}

static sd_status_t bvec_reserve(bvec_t *b, size_t n)
{
    if (n <= b->cap) return SD_OK;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < n) cap *= 2;
    char *v = realloc(b->v, cap);
    SD_ALLOC_CHECK(v, cap, "xvocab drafter text");
    b->v = v;
    b->cap = cap;
    return SD_OK;
}

/* ---- tokens and text ----------------------------------------------------------------- */

/* Append the tokens of text[len] (flags as sd_tokenizer_encode) to a. */
static sd_status_t encode_append(const sd_tokenizer_t *t, const char *text, size_t len,
                                 int flags, ivec_t *a)
{
    SD_CHECK(ivec_reserve(a, a->n + len + 2)); /* at most a token per byte, and a BOS */
    size_t n = 0;
    sd_status_t st = sd_tokenizer_encode(t, text, len, flags, a->v + a->n, a->cap - a->n, &n);
    if (st == SD_ERR_BUFFER_TOO_SMALL) {
        SD_CHECK(ivec_reserve(a, a->n + n));
        st = sd_tokenizer_encode(t, text, len, flags, a->v + a->n, a->cap - a->n, &n);
    }
    SD_CHECK(st);
    a->n += n;
    return SD_OK;
}

/* Append token's bytes to b; with strip_space, without the space a SentencePiece space
 * prefix put before the first piece of a text. */
static sd_status_t piece_append(const sd_tokenizer_t *t, int32_t token, int strip_space, bvec_t *b)
{
    SD_CHECK(bvec_reserve(b, b->n + 64));
    size_t at = b->n, n = 0;
    sd_status_t st = sd_tokenizer_piece(t, token, b->v + at, b->cap - at, &n);
    if (st == SD_ERR_BUFFER_TOO_SMALL) {
        SD_CHECK(bvec_reserve(b, at + n));
        st = sd_tokenizer_piece(t, token, b->v + at, b->cap - at, &n);
    }
    SD_CHECK(st);
    if (strip_space && n > 0 && b->v[at] == ' ') memmove(b->v + at, b->v + at + 1, --n);
    b->n = at + n;
    return SD_OK;
}

/* The token of `to` standing for special token id of `from`: the special token with the
 * same text, else EOS for EOS, else BOS for BOS when to_bos >= 0; -1 when none. */
static int32_t map_special(const sd_tokenizer_t *from, const sd_tokenizer_t *to, int32_t id,
                           int32_t to_bos, ivec_t *scratch)
{
    size_t len;
    const char *s = sd_tokenizer_token_text(from, id, &len);
    scratch->n = 0;
    if (s != NULL && encode_append(to, s, len, SD_TOKENIZE_PARSE_SPECIAL, scratch) == SD_OK &&
        scratch->n == 1 && sd_tokenizer_is_special(to, scratch->v[0]))
        return scratch->v[0];
    sd_clear_error();
    if (id == sd_tokenizer_eos(from) && sd_tokenizer_eos(to) >= 0) return sd_tokenizer_eos(to);
    if (id == sd_tokenizer_bos(from)) return to_bos;
    return -1;
}

/* How many of text[n]'s bytes end on a complete UTF-8 sequence (a proposal may stop
 * inside one). */
static size_t complete_utf8(const char *text, size_t n)
{
    size_t i = n, back = 0;
    while (i > 0 && back < 4 && ((unsigned char)text[i - 1] & 0xC0) == 0x80) i--, back++;
    if (i == 0) return n;
    unsigned char lead = (unsigned char)text[i - 1];
    size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
    return need == back + 1 || lead < 0x80 ? n : i - 1;
}

/* ---- target context -> draft context ------------------------------------------------- */

static sd_status_t flush_text(xv_drafter_t *g, int seg_start, ivec_t *a)
{
    if (g->text.n == 0) return SD_OK;
    int flags = seg_start ? 0 : SD_TOKENIZE_CONTINUATION;
    SD_CHECK(encode_append(g->dt, g->text.v, g->text.n, flags, a));
    g->text.n = 0;
    return SD_OK;
}

/* Append the draft tokens of the target tokens ctx[from .. to) to a: each run of text
 * encoded whole (never parsed for special tokens), each special token mapped. */
static sd_status_t encode_context(xv_drafter_t *g, size_t from, size_t to, ivec_t *a)
{
    const int32_t *c = g->ctx.v;
    int seg_start = from == 0 || sd_tokenizer_is_special(g->tt, c[from - 1]);
    if (from == 0 && to > 0 && g->d_bos >= 0 && /* the draft model expects its BOS */
        !(sd_tokenizer_is_special(g->tt, c[0]) &&
          map_special(g->tt, g->dt, c[0], g->d_bos, &g->spec) == g->d_bos))
        SD_CHECK(ivec_append(a, &g->d_bos, 1));
    g->text.n = 0;
    for (size_t i = from; i < to; i++) {
        if (!sd_tokenizer_is_special(g->tt, c[i])) {
            SD_CHECK(piece_append(g->tt, c[i], g->t_space && seg_start && g->text.n == 0, &g->text));
            continue;
        }
        SD_CHECK(flush_text(g, seg_start, a));
        int32_t m = map_special(g->tt, g->dt, c[i], g->d_bos, &g->spec);
        if (m >= 0) SD_CHECK(ivec_append(a, &m, 1));
        seg_start = 1;
    }
    return flush_text(g, seg_start, a);
}

/* Where the fixed part may end, at or a little before hi: before a token that starts a
 * word (its text starts with a space or newline) or next to a special token, so that
 * encoding both sides apart gives what encoding them together would; else hi. */
static size_t cut_point(const xv_drafter_t *g, size_t hi)
{
    const int32_t *c = g->ctx.v;
    for (size_t i = hi; i > g->t_fixed + 1 && i + XV_WINDOW / 2 > hi; i--) {
        if (sd_tokenizer_is_special(g->tt, c[i]) || sd_tokenizer_is_special(g->tt, c[i - 1]))
            return i;
        char first[8];
        size_t n = 0;
        sd_status_t st = sd_tokenizer_piece(g->tt, c[i], first, sizeof first, &n);
        if ((st == SD_OK || st == SD_ERR_BUFFER_TOO_SMALL) && n > 0 &&
            (first[0] == ' ' || first[0] == '\n'))
            return i;
    }
    sd_clear_error();
    return hi;
}

/* g->want = the draft context for the target context: the fixed part, then the tail
 * encoded; once the tail exceeds 2 * XV_WINDOW tokens all but about XV_WINDOW of it
 * become fixed (*t_fixed, *d_fixed: the new boundary). */
static sd_status_t build_want(xv_drafter_t *g, size_t *t_fixed, size_t *d_fixed)
{
    size_t len = g->ctx.n;
    g->want.n = 0;
    SD_CHECK(ivec_append(&g->want, g->dctx.v, g->d_fixed));
    *t_fixed = g->t_fixed;
    *d_fixed = g->d_fixed;
    if (len - g->t_fixed > 2 * XV_WINDOW) {
        size_t cut = cut_point(g, len - XV_WINDOW);
        SD_CHECK(encode_context(g, g->t_fixed, cut, &g->want));
        *t_fixed = cut;
        *d_fixed = g->want.n;
    }
    return encode_context(g, *t_fixed, len, &g->want);
}

/* Bring the inner drafter from dctx (and its last proposal, whose cache it keeps) to
 * want, then dctx = want. */
static sd_status_t move_inner(xv_drafter_t *g)
{
    const ivec_t *w = &g->want;
    size_t c = 0, have = g->dctx.n + g->dprop.n;
    while (c < w->n && c < have &&
           w->v[c] == (c < g->dctx.n ? g->dctx.v[c] : g->dprop.v[c - g->dctx.n]))
        c++;
    size_t from = c;
    if (c > g->dctx.n) { /* the proposal's first c - len tokens are context now */
        int a = (int)(c - g->dctx.n);
        if (c < w->n) SD_CHECK(sd_drafter_accept(g->inner, a, w->v[from++]));
        else SD_CHECK(sd_drafter_accept(g->inner, a - 1, w->v[c - 1]));
    } else {
        SD_CHECK(sd_drafter_rollback(g->inner, (int)c));
    }
    for (size_t i = from; i < w->n; i++)
        SD_CHECK(sd_drafter_accept(g->inner, 0, w->v[i]));
    g->dprop.n = 0;
    ivec_t t = g->dctx;
    g->dctx = g->want;
    g->want = t;
    return SD_OK;
}

static void xv_reset(sd_drafter_t *d)
{
    xv_drafter_t *g = (xv_drafter_t *)d;
    g->ctx.n = g->dctx.n = g->dprop.n = g->prop.n = 0;
    g->t_fixed = g->d_fixed = 0;
    g->full = 0;
    sd_drafter_reset(g->inner);
}

/* Translate the context's new tokens for the inner drafter. A failure forgets the whole
 * translation (the next sync starts over). */
static sd_status_t sync_inner(xv_drafter_t *g)
{
    size_t t_fixed, d_fixed;
    sd_status_t st = build_want(g, &t_fixed, &d_fixed);
    if (st == SD_OK) st = move_inner(g);
    if (st != SD_OK) {
        g->t_fixed = g->d_fixed = g->dctx.n = g->dprop.n = 0;
        sd_drafter_reset(g->inner);
        return st;
    }
    g->t_fixed = t_fixed;
    g->d_fixed = d_fixed;
    return SD_OK;
}

/* ---- draft proposal -> target tokens ------------------------------------------------- */

/* Append to g->prop the target tokens of text[n] continuing the context: encoded as a
 * continuation of the context's text (no SentencePiece space prefix unless the context is
 * empty or ends with a special token). The context's tokens stay as they are: a byte-level
 * BPE tokenizer encodes what follows a token boundary of its own encoding the same alone
 * (docs/design-notes.md, "Drafting across vocabularies"). */
static sd_status_t encode_proposal(xv_drafter_t *g, const char *text, size_t n)
{
    size_t len = g->ctx.n;
    int at_start = len == 0 || sd_tokenizer_is_special(g->tt, g->ctx.v[len - 1]);
    return encode_append(g->tt, text, n, at_start ? 0 : SD_TOKENIZE_CONTINUATION, &g->prop);
}

/* Character classes for where a proposal's text may end (byte-wise; any non-ASCII byte
 * counts as a letter). */
enum { CLS_LETTER, CLS_DIGIT, CLS_SPACE, CLS_OTHER };

static int char_class(unsigned char ch)
{
    if (ch >= 0x80 || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z')) return CLS_LETTER;
    if (ch >= '0' && ch <= '9') return CLS_DIGIT;
    if (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r') return CLS_SPACE;
    return CLS_OTHER;
}

/* Where text[n] may end so that its target tokens are those of a longer text: before its
 * last run of one class, with what joins that run in a word (before letters, one space or
 * punctuation character; before punctuation, one space), and before the whitespace then
 * at its end (whose last space joins what follows). The draft may have stopped inside that
 * word. 0 when nothing else remains: a partial word is more often wrong than right. */
static size_t drop_last_run(const char *text, size_t n)
{
    if (n == 0) return 0;
    int cls = char_class((unsigned char)text[n - 1]);
    size_t p = n;
    while (p > 0 && char_class((unsigned char)text[p - 1]) == cls) p--;
    if (p > 0 && cls == CLS_LETTER && text[p - 1] != '\n' && text[p - 1] != '\r' &&
        char_class((unsigned char)text[p - 1]) != CLS_DIGIT)
        p--;
    else if (p > 0 && cls == CLS_OTHER && text[p - 1] == ' ')
        p--;
    while (p > 0 && char_class((unsigned char)text[p - 1]) == CLS_SPACE) p--;
    return p;
}

/* g->prop = the target tokens of the draft tokens d[n] (at most k): their text up to the
 * first special token, which maps to the target's (if it has one) and ends the proposal;
 * without one, up to the last complete word (drop_last_run) and UTF-8 sequence. */
static sd_status_t translate(xv_drafter_t *g, const int32_t *d, int n, int k)
{
    g->prop.n = 0;
    int seg_start = g->dctx.n == 0 || sd_tokenizer_is_special(g->dt, g->dctx.v[g->dctx.n - 1]);
    int32_t special = -1;
    int ended = 0; /* a special token ended the draft */
    bvec_t *text = &g->dtext;
    text->n = 0;
    for (int i = 0; i < n && !ended; i++) {
        if (sd_tokenizer_is_special(g->dt, d[i])) {
            special = map_special(g->dt, g->tt, d[i], -1, &g->spec);
            ended = 1;
            continue;
        }
        SD_CHECK(piece_append(g->dt, d[i], g->d_space && seg_start && text->n == 0, text));
    }
    size_t keep = complete_utf8(text->v, text->n);
    if (!ended) keep = drop_last_run(text->v, keep);
    if (keep > 0) SD_CHECK(encode_proposal(g, text->v, keep));
    if (special >= 0 && keep == text->n) SD_CHECK(ivec_append(&g->prop, &special, 1));
    if (g->prop.n > (size_t)k) g->prop.n = (size_t)k;
    return SD_OK;
}

/* ---- the ops ------------------------------------------------------------------------- */

static sd_status_t check_token(const xv_drafter_t *g, int32_t token, const char *what)
{
    return sd_drafter_check_token(&g->base, token, g->t_vocab, what);
}

static sd_status_t xv_begin(sd_drafter_t *d, const int32_t *tokens, int n)
{
    xv_drafter_t *g = (xv_drafter_t *)d;
    SD_CHECK(sd_drafter_check_tokens(d, tokens, n, g->t_vocab, "context"));
    xv_reset(d);
    SD_CHECK(ivec_append(&g->ctx, tokens, (size_t)n));
    size_t t_fixed, d_fixed;
    sd_status_t st = build_want(g, &t_fixed, &d_fixed);
    if (st == SD_OK) st = sd_drafter_begin(g->inner, g->want.v, (int)g->want.n);
    if (st == SD_ERR_CONTEXT_FULL) { /* proposals will say so: the step loop goes on without */
        sd_clear_error();
        g->full = 1;
        return SD_OK;
    }
    if (st != SD_OK) {
        xv_reset(d);
        return st;
    }
    ivec_t t = g->dctx;
    g->dctx = g->want;
    g->want = t;
    g->t_fixed = t_fixed;
    g->d_fixed = d_fixed;
    return SD_OK;
}

/* Checks, the translation synced, the inner request (k + XV_LOOKAHEAD draft tokens). */
static sd_status_t start_proposal(xv_drafter_t *g, const sd_draft_request_t *req,
                                  sd_draft_out_t *out)
{
    out->n = 0;
    out->has_q = 0;
    g->prop.n = 0;
    if (req->pos0 < 0 || (size_t)req->pos0 != g->ctx.n)
        return sd_set_error(SD_ERR_INVALID_ARG,
                            "xvocab drafter: proposal position %lld differs from the context "
                            "length %zu", (long long)req->pos0, g->ctx.n);
    if (g->full)
        return sd_set_error(SD_ERR_CONTEXT_FULL,
                            "xvocab drafter: the translated context exceeds the draft model's n_ctx");
    SD_CHECK(sync_inner(g));
    SD_CHECK(ivec_reserve(&g->dprop, (size_t)req->k + XV_LOOKAHEAD));
    g->out = out;
    g->k = req->k;
    g->ireq = (sd_draft_request_t){req->k + XV_LOOKAHEAD, &g->greedy, req->seed, (int64_t)g->dctx.n,
                                   req->min_confidence};
    g->iout = (sd_draft_out_t){.tokens = g->dprop.v, .n_vocab = g->d_vocab};
    return SD_OK;
}

/* The inner proposal is complete: translate it into the caller's out. */
static sd_status_t finish_proposal(xv_drafter_t *g)
{
    g->dprop.n = (size_t)g->iout.n;
    SD_CHECK(translate(g, g->dprop.v, g->iout.n, g->k));
    if (g->prop.n > 0) memcpy(g->out->tokens, g->prop.v, g->prop.n * sizeof *g->prop.v);
    g->out->n = (int)g->prop.n;
    g->out->has_q = 0;
    return SD_OK;
}

static sd_status_t xv_propose(sd_drafter_t *d, const sd_draft_request_t *req, sd_draft_out_t *out)
{
    xv_drafter_t *g = (xv_drafter_t *)d;
    SD_CHECK(start_proposal(g, req, out));
    SD_CHECK(sd_drafter_propose(g->inner, &g->ireq, &g->iout));
    return finish_proposal(g);
}

static sd_status_t xv_propose_begin(sd_drafter_t *d, const sd_draft_request_t *req,
                                    sd_draft_out_t *out, sd_draft_forward_t *fwd)
{
    xv_drafter_t *g = (xv_drafter_t *)d;
    fwd->n = 0;
    SD_CHECK(start_proposal(g, req, out));
    SD_CHECK(sd_drafter_propose_begin(g->inner, &g->ireq, &g->iout, fwd));
    return fwd->n > 0 ? SD_OK : finish_proposal(g);
}

static sd_status_t xv_propose_resume(sd_drafter_t *d, sd_draft_forward_t *fwd)
{
    xv_drafter_t *g = (xv_drafter_t *)d;
    SD_CHECK(sd_drafter_propose_resume(g->inner, fwd));
    return fwd->n > 0 ? SD_OK : finish_proposal(g);
}

/* The context grows by tokens[n], then next. */
static sd_status_t commit(xv_drafter_t *g, const int32_t *tokens, int n, int32_t next)
{
    SD_CHECK(check_token(g, next, "next"));
    SD_CHECK(ivec_reserve(&g->ctx, g->ctx.n + (size_t)n + 1));
    SD_CHECK(ivec_append(&g->ctx, tokens, (size_t)n));
    SD_CHECK(ivec_append(&g->ctx, &next, 1));
    g->prop.n = 0;
    return SD_OK;
}

static sd_status_t xv_accept(sd_drafter_t *d, int n_accepted, int32_t next_token)
{
    xv_drafter_t *g = (xv_drafter_t *)d;
    if (n_accepted < 0 || (size_t)n_accepted > g->prop.n)
        return sd_set_error(SD_ERR_INVALID_ARG,
                            "xvocab drafter: %d tokens accepted of a proposal of %zu",
                            n_accepted, g->prop.n);
    return commit(g, g->prop.v, n_accepted, next_token);
}

/* ---- trees ------------------------------------------------------------------------------ */
/* The draft model proposes a tree in its vocabulary, XV_LOOKAHEAD levels deeper than asked;
 * each root-to-leaf path is translated as a chain proposal is (translate: its text up to
 * the last whole word or a special token) and the translations are merged into one trie of
 * target tokens, shared prefixes once, up to the shape's depth and node count. Deepest
 * paths first, in node order (the inner drafter's best path comes first). */

/* The inner tree's shape: shape's, XV_LOOKAHEAD levels of width 1 (static) or of depth
 * (dynamic) deeper; top guesses. */
static sd_tree_shape_t inner_shape(const sd_tree_shape_t *shape)
{
    sd_tree_shape_t in = *shape;
    in.sample_q = 0;
    for (int i = 0; i < XV_LOOKAHEAD && in.levels > 0 && in.levels < SD_SPEC_MAX_K; i++)
        in.width[in.levels++] = 1;
    in.max_depth = in.max_depth + XV_LOOKAHEAD < SD_SPEC_MAX_K ? in.max_depth + XV_LOOKAHEAD
                                                               : SD_SPEC_MAX_K;
    return in;
}

/* Add path[n] below the root of t (max_nodes nodes at most), sharing its existing prefix. */
static void trie_add(sd_draft_tree_t *t, const int32_t *path, int n, int max_nodes)
{
    for (int i = 0, node = -1; i < n; i++) {
        int c = node + 1;
        while (c < t->n && !(t->parent[c] == node && t->tokens[c] == path[i])) c++;
        if (c == t->n) {
            if (t->n >= max_nodes) return;
            t->tokens[t->n] = path[i];
            t->parent[t->n++] = node;
        }
        node = c;
    }
}

/* Target nodes the shape asks for: a static shape's count, a dynamic one's budget. */
static int shape_nodes(const sd_tree_shape_t *s)
{
    if (s->levels <= 0) return s->budget;
    int total = 0;
    for (int d = 0, level = 1; d < s->levels && total <= SD_SPEC_TREE_MAX_NODES; d++)
        total += level *= s->width[d];
    return total;
}

/* Translate the inner tree's root-to-leaf paths into out. */
static sd_status_t merge_paths(xv_drafter_t *g, const sd_tree_shape_t *shape, sd_draft_tree_t *out)
{
    const sd_draft_tree_t *it = &g->itree;
    int depth[SD_SPEC_TREE_MAX_NODES], leaf[SD_SPEC_TREE_MAX_NODES], max_d = 0;
    for (int i = 0; i < it->n; i++) {
        depth[i] = it->parent[i] >= 0 ? depth[it->parent[i]] + 1 : 1;
        leaf[i] = 1;
        if (it->parent[i] >= 0) leaf[it->parent[i]] = 0;
        max_d = depth[i] > max_d ? depth[i] : max_d;
    }
    int k = shape->levels > 0 ? shape->levels : shape->max_depth;
    int nodes = shape_nodes(shape) < SD_SPEC_TREE_MAX_NODES ? shape_nodes(shape) : SD_SPEC_TREE_MAX_NODES;
    int32_t path[SD_SPEC_MAX_K];
    for (int d = max_d; d >= 1; d--)
        for (int i = 0; i < it->n; i++) {
            if (!leaf[i] || depth[i] != d) continue;
            for (int a = i, j = d - 1; a >= 0; a = it->parent[a]) path[j--] = it->tokens[a];
            SD_CHECK(translate(g, path, d, k));
            trie_add(out, g->prop.v, (int)g->prop.n, nodes);
        }
    g->prop.n = 0;
    return SD_OK;
}

static sd_status_t xv_propose_tree(sd_drafter_t *d, const sd_draft_request_t *req,
                                   const sd_tree_shape_t *shape, sd_draft_tree_t *out)
{
    xv_drafter_t *g = (xv_drafter_t *)d;
    sd_draft_out_t none = {0};
    SD_CHECK(start_proposal(g, req, &none));
    g->itree.n = 0;
    g->itree.q = NULL;
    sd_tree_shape_t in = inner_shape(shape);
    SD_CHECK(sd_drafter_propose_tree(g->inner, &g->ireq, &in, &g->itree));
    sd_token_tree_t check = {g->itree.n, g->itree.tokens, g->itree.parent};
    SD_CHECK(sd_tree_check(&check, g->d_vocab, NULL));
    out->n = 0;
    return merge_paths(g, shape, out);
}

static sd_status_t xv_accept_path(sd_drafter_t *d, const int32_t *tokens, int n, int32_t next)
{
    xv_drafter_t *g = (xv_drafter_t *)d;
    SD_CHECK(sd_drafter_check_tokens(d, tokens, n, g->t_vocab, "path"));
    return commit(g, tokens, n, next);
}

static sd_status_t xv_rollback(sd_drafter_t *d, int n)
{
    xv_drafter_t *g = (xv_drafter_t *)d;
    if (n < 0 || (size_t)n > g->ctx.n)
        return sd_set_error(SD_ERR_INVALID_ARG,
                            "xvocab drafter: rollback to %d tokens, the context holds %zu", n,
                            g->ctx.n);
    g->ctx.n = (size_t)n;
    g->prop.n = 0;
    if ((size_t)n < g->t_fixed) /* translated again from the start at the next proposal */
        g->t_fixed = g->d_fixed = 0;
    return SD_OK;
}

static void xv_destroy(sd_drafter_t *d)
{
    xv_drafter_t *g = (xv_drafter_t *)d;
    sd_drafter_free(g->inner);
    free(g->ctx.v);
    free(g->dctx.v);
    free(g->dprop.v);
    free(g->want.v);
    free(g->spec.v);
    free(g->prop.v);
    free(g->text.v);
    free(g->dtext.v);
    free(g);
}

static uint64_t xv_forwards(const sd_drafter_t *d)
{
    return sd_drafter_forwards(((const xv_drafter_t *)d)->inner);
}

static const sd_drafter_ops_t xvocab_ops = {
    .name = "xvocab",
    .begin = xv_begin,
    .propose = xv_propose,
    .accept = xv_accept,
    .rollback = xv_rollback,
    .reset = xv_reset,
    .destroy = xv_destroy,
    .proposes_cheaply = 0,
    .propose_begin = xv_propose_begin,
    .propose_resume = xv_propose_resume,
    .forwards = xv_forwards,
    .propose_tree = xv_propose_tree,
    .accept_path = xv_accept_path,
};

sd_status_t sd_drafter_xvocab_wrap(sd_drafter_t *inner, const sd_model_t *draft,
                                   const sd_model_t *target, sd_drafter_t **out)
{
    if (inner == NULL || draft == NULL || target == NULL || out == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG,
                            "xvocab drafter: inner, draft, target and out must be non-NULL");
    if (draft->tokenizer == NULL || target->tokenizer == NULL)
        return sd_set_error(SD_ERR_NO_TOKENIZER,
                            "xvocab drafter: the %s model carries no tokenizer, and drafting "
                            "across vocabularies goes through text",
                            draft->tokenizer == NULL ? "draft" : "target");
    xv_drafter_t *g = calloc(1, sizeof *g);
    SD_ALLOC_CHECK(g, sizeof *g, "xvocab drafter");
    g->base.ops = &xvocab_ops;
    g->inner = inner;
    g->tt = target->tokenizer;
    g->dt = draft->tokenizer;
    g->t_vocab = target->hp.n_vocab;
    g->d_vocab = draft->hp.n_vocab;
    g->t_space = sd_tokenizer_space_prefix(g->tt);
    g->d_space = sd_tokenizer_space_prefix(g->dt);
    g->greedy = (sd_sampler_params_t){.temperature = 0.0f, .top_p = 1.0f};
    int32_t bos = -1;
    size_t n = 0;
    g->d_bos = sd_tokenizer_encode(g->dt, "", 0, SD_TOKENIZE_ADD_BOS, &bos, 1, &n) == SD_OK && n == 1
                   ? bos : -1;
    *out = &g->base;
    return SD_OK;
}

sd_status_t sd_drafter_xvocab_new(sd_model_t *draft, const sd_model_t *target, sd_drafter_t **out)
{
    if (draft == NULL || target == NULL || out == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG,
                            "xvocab drafter: draft, target and out must be non-NULL");
    sd_drafter_t *inner = NULL;
    SD_CHECK(sd_seq_drafter_new(SD_SEQ_DRAFTER_MODEL, draft, 0, &inner));
    sd_status_t st = sd_drafter_xvocab_wrap(inner, draft, target, out);
    if (st != SD_OK) sd_drafter_free(inner);
    return st;
}

const int32_t *sd_drafter_xvocab_draft_context(const sd_drafter_t *d, size_t *n)
{
    if (d == NULL || d->ops != &xvocab_ops) {
        *n = 0;
        return NULL;
    }
    const xv_drafter_t *g = (const xv_drafter_t *)d;
    *n = g->dctx.n;
    return g->dctx.v;
}

/* ---- registry row -------------------------------------------------------------------- */

sd_status_t sd_drafter_xvocab_parse(const char *text, const char *arg, sd_spec_config_t *spec,
                                    const char **model_path)
{
    if (arg == NULL || arg[0] == '\0')
        return sd_set_error(SD_ERR_INVALID_ARG, "drafter '%s': a draft model with another "
                            "tokenizer needs a file: xvocab:PATH", text);
    spec->drafter = SD_DRAFTER_XVOCAB;
    *model_path = arg;
    return SD_OK;
}

sd_status_t sd_drafter_xvocab_make(sd_model_t *target, const sd_spec_config_t *spec,
                                   sd_drafter_t **out)
{
    return sd_drafter_make_over_draft_model(target, spec, sd_drafter_xvocab_new, out);
}

sd_status_t sd_drafter_xvocab_text(const sd_spec_config_t *spec, const sd_model_t *target,
                                   char *buf, size_t cap)
{
    snprintf(buf, cap, "xvocab");
    return SD_OK;
}
