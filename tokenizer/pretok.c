/* Pre-tokenizer splits, written as hand matchers over code points (no regex library).
 *
 * gpt2:   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * smollm: every \p{N} split off as its own piece first, then gpt2 on the rest
 * qwen2:  (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}
 *         | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 *
 * Each matcher returns the end (exclusive) of the leftmost-first match at i, within [i, n). */
#include <stdlib.h>

#include "core/check.h"
#include "tokenizer/tokenizer_impl.h"
#include "core/unicode.h"

typedef struct cps {
    const uint32_t *cp; /* [n] */
    const uint8_t *cls; /* [n] SD_UNI_* */
    size_t n;
} cps_t;

static int is_l(const cps_t *c, size_t i) { return i < c->n && (c->cls[i] & SD_UNI_L); }
static int is_n(const cps_t *c, size_t i) { return i < c->n && (c->cls[i] & SD_UNI_N); }
static int is_ws(const cps_t *c, size_t i) { return i < c->n && (c->cls[i] & SD_UNI_WS); }
/* [^\s\p{L}\p{N}] (invalid-byte units included) */
static int is_other(const cps_t *c, size_t i) { return i < c->n && c->cls[i] == 0; }
static int is_nl(const cps_t *c, size_t i) { return i < c->n && (c->cp[i] == '\r' || c->cp[i] == '\n'); }

static size_t run(const cps_t *c, size_t i, int (*pred)(const cps_t *, size_t))
{
    while (pred(c, i)) i++;
    return i;
}

/* Simple case folding of the contraction letters (ASCII, and U+017F long s -> s). */
static uint32_t fold(uint32_t cp, int icase)
{
    if (!icase) return cp;
    if (cp >= 'A' && cp <= 'Z') return cp + 32;
    return cp == 0x17F ? 's' : cp;
}

/* 's|'t|'re|'ve|'m|'ll|'d: end of the match at i, or 0. */
static size_t contraction(const cps_t *c, size_t i, int icase)
{
    if (c->cp[i] != '\'' || i + 1 >= c->n) return 0;
    uint32_t a = fold(c->cp[i + 1], icase);
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
    if (i + 2 >= c->n) return 0;
    uint32_t b = fold(c->cp[i + 2], icase);
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
    return 0;
}

/* \s+(?!\S)|\s+ at a whitespace code point. */
static size_t ws_tail(const cps_t *c, size_t i)
{
    size_t k = run(c, i, is_ws);
    if (k < c->n && k - i >= 2) return k - 1; /* leave the last space to the next word */
    return k;
}

static size_t match_gpt2(const cps_t *c, size_t i)
{
    size_t e = contraction(c, i, 0);
    if (e) return e;
    size_t j = i + (c->cp[i] == ' ');
    if (is_l(c, j)) return run(c, j, is_l);
    if (is_n(c, j)) return run(c, j, is_n);
    if (is_other(c, j)) return run(c, j, is_other);
    if (is_ws(c, i)) return ws_tail(c, i);
    return i + 1; /* unreachable: every unit is L, N, whitespace or other */
}

static size_t match_qwen2(const cps_t *c, size_t i)
{
    size_t e = contraction(c, i, 1);
    if (e) return e;
    if (is_l(c, i)) return run(c, i, is_l);
    if (!is_n(c, i) && !is_nl(c, i) && is_l(c, i + 1)) return run(c, i + 1, is_l);
    if (is_n(c, i)) return i + 1;
    size_t j = i + (c->cp[i] == ' ');
    if (is_other(c, j)) return run(c, run(c, j, is_other), is_nl);
    if (!is_ws(c, i)) return i + 1; /* unreachable */
    size_t k = run(c, i, is_ws);
    for (size_t p = k; p > i; p--)
        if (is_nl(c, p - 1)) return p; /* \s*[\r\n]+ */
    return ws_tail(c, i);
}

/* Split c[i..end) with `match`, reporting byte ranges. */
static sd_status_t split(const cps_t *c, size_t i, size_t end, const uint32_t *offs,
                         size_t (*match)(const cps_t *, size_t), sd_piece_fn fn, void *ctx)
{
    cps_t sub = {c->cp, c->cls, end};
    while (i < end) {
        size_t e = match(&sub, i);
        SD_CHECK(fn(ctx, offs[i], offs[e]));
        i = e;
    }
    return SD_OK;
}

static sd_status_t split_smollm(const cps_t *c, const uint32_t *offs, sd_piece_fn fn, void *ctx)
{
    size_t i = 0;
    while (i < c->n) {
        if (is_n(c, i)) {
            SD_CHECK(fn(ctx, offs[i], offs[i + 1]));
            i++;
            continue;
        }
        size_t k = i;
        while (k < c->n && !is_n(c, k)) k++;
        SD_CHECK(split(c, i, k, offs, match_gpt2, fn, ctx));
        i = k;
    }
    return SD_OK;
}

static sd_status_t reserve_cps(sd_tok_scratch_t *s, size_t n)
{
    if (n <= s->cap_cps) return SD_OK;
    size_t cap = n < 256 ? 256 : n + n / 2;
    uint32_t *cps = realloc(s->cps, cap * sizeof *cps);
    SD_ALLOC_CHECK(cps, cap * sizeof *cps, "code points");
    s->cps = cps;
    uint32_t *offs = realloc(s->offs, cap * sizeof *offs);
    SD_ALLOC_CHECK(offs, cap * sizeof *offs, "code point offsets");
    s->offs = offs;
    uint8_t *cls = realloc(s->cls, cap);
    SD_ALLOC_CHECK(cls, cap, "code point classes");
    s->cls = cls;
    s->cap_cps = cap;
    return SD_OK;
}

/* Decode text into the scratch code-point, offset and class arrays. */
static sd_status_t decode(const uint8_t *text, size_t len, sd_tok_scratch_t *s, size_t *n_out)
{
    SD_CHECK(reserve_cps(s, len + 1));
    size_t n = 0;
    for (size_t pos = 0; pos < len; n++) {
        size_t adv;
        uint32_t cp = sd_utf8_decode(text + pos, len - pos, &adv);
        s->cps[n] = cp;
        s->offs[n] = (uint32_t)pos;
        s->cls[n] = (uint8_t)sd_unicode_flags(cp);
        pos += adv;
    }
    s->offs[n] = (uint32_t)len;
    *n_out = n;
    return SD_OK;
}

sd_status_t sd_pretokenize(sd_pretok_t kind, const uint8_t *text, size_t len,
                           sd_tok_scratch_t *s, sd_piece_fn fn, void *ctx)
{
    if (len > UINT32_MAX - 1)
        return sd_set_error(SD_ERR_INVALID_ARG, "text of %zu bytes is too long to tokenize", len);
    size_t n;
    SD_CHECK(decode(text, len, s, &n));
    cps_t c = {s->cps, s->cls, n};
    switch (kind) {
    case SD_PRE_SMOLLM: return split_smollm(&c, s->offs, fn, ctx);
    case SD_PRE_QWEN2: return split(&c, 0, n, s->offs, match_qwen2, fn, ctx);
    case SD_PRE_GPT2: break;
    }
    return split(&c, 0, n, s->offs, match_gpt2, fn, ctx);
}
