/* SentencePiece-style tokenization as llama.cpp's llm_tokenizer_spm does it: spaces become
 * U+2581 ("▁"), the text is split into UTF-8 characters, and the adjacent pair whose
 * concatenation is the vocabulary entry with the highest score (leftmost on ties) is merged
 * until none is left. A final symbol that is not a token falls back to <0xXX> byte tokens. */
#include <string.h>

#include "core/check.h"
#include "tokenizer/tokenizer_impl.h"
#include "core/unicode.h"

static const char spm_space[] = "\xE2\x96\x81"; /* U+2581 */

typedef struct spm_sym {
    uint32_t start, n; /* bytes of the escaped text; n = 0 once merged away */
    int32_t prev, next;
} spm_sym_t;


typedef struct spm_state {
    const sd_tokenizer_t *t;
    const char *text;
    spm_sym_t *sy;
    sd_merge_cand_t *heap;
    size_t n_heap;
} spm_state_t;

static void try_pair(spm_state_t *st, int32_t l, int32_t r)
{
    if (l < 0 || r < 0) return;
    uint32_t size = st->sy[l].n + st->sy[r].n;
    int32_t id = sd_text_map_get(&st->t->vocab, st->t, st->text + st->sy[l].start, size);
    if (id < 0) return;
    /* key = -score (highest score first); check[0] = bytes of both symbols when formed */
    sd_merge_heap_push(st->heap, &st->n_heap,
                       (sd_merge_cand_t){-st->t->score[id], l, r, {(int32_t)size, 0, 0}});
}

static void merge_all(spm_state_t *st, size_t n)
{
    for (size_t i = 1; i < n; i++) try_pair(st, (int32_t)i - 1, (int32_t)i);
    while (st->n_heap > 0) {
        sd_merge_cand_t p = sd_merge_heap_pop(st->heap, &st->n_heap);
        spm_sym_t *l = &st->sy[p.left], *r = &st->sy[p.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != (uint32_t)p.check[0]) continue;
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) st->sy[r->next].prev = p.left;
        try_pair(st, l->prev, p.left);
        try_pair(st, p.left, l->next);
    }
}

/* A final symbol: its token, else one byte token per byte (unknown token without those). */
static sd_status_t emit_symbol(const sd_tokenizer_t *t, const char *s, size_t n, sd_tok_out_t *o)
{
    int32_t id = sd_text_map_get(&t->vocab, t, s, n);
    if (id >= 0) {
        sd_tok_emit(o, id);
        return SD_OK;
    }
    for (size_t i = 0; i < n; i++) {
        int32_t b = t->byte_tok[(uint8_t)s[i]];
        if (b < 0) b = t->unk;
        if (b < 0)
            return sd_set_error(SD_ERR_BAD_MODEL,
                                "tokenizer: byte 0x%02X has no <0x%02X> token and there is no "
                                "tokenizer.ggml.unknown_token_id",
                                (uint8_t)s[i], (uint8_t)s[i]);
        sd_tok_emit(o, b);
    }
    return SD_OK;
}

/* Escaped text: optional "▁" prefix, every ' ' replaced by "▁". */
static sd_status_t escape(sd_tok_scratch_t *s, const uint8_t *text, size_t len, bool prefix,
                          size_t *out_len)
{
    if (len > (UINT32_MAX - 3) / 3)
        return sd_set_error(SD_ERR_INVALID_ARG, "text of %zu bytes is too long to tokenize", len);
    SD_CHECK(sd_tok_reserve((void **)&s->text, &s->cap_text, 3 * len + 3, 1, "escaped text"));
    size_t n = 0;
    if (prefix) memcpy(s->text, spm_space, 3), n = 3;
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(s->text + n, spm_space, 3);
            n += 3;
        } else {
            s->text[n++] = (char)text[i];
        }
    }
    *out_len = n;
    return SD_OK;
}

sd_status_t sd_spm_encode(const sd_tokenizer_t *t, sd_tok_scratch_t *s, const uint8_t *text,
                          size_t len, bool space_prefix, sd_tok_out_t *o)
{
    size_t n_text = 0;
    SD_CHECK(escape(s, text, len, space_prefix, &n_text));
    SD_CHECK(sd_tok_reserve(&s->syms, &s->cap_syms, n_text, sizeof(spm_sym_t), "SPM symbols"));
    SD_CHECK(sd_tok_reserve(&s->heap, &s->cap_heap, 3 * n_text, sizeof(sd_merge_cand_t), "SPM pairs"));
    spm_sym_t *sy = s->syms; /* [n_text] at most */
    size_t n = 0;
    for (size_t pos = 0; pos < n_text; n++) {
        size_t adv;
        sd_utf8_decode((const uint8_t *)s->text + pos, n_text - pos, &adv);
        sy[n] = (spm_sym_t){(uint32_t)pos, (uint32_t)adv, (int32_t)n - 1, -1};
        if (n > 0) sy[n - 1].next = (int32_t)n;
        pos += adv;
    }
    if (n == 0) return SD_OK;
    spm_state_t st = {t, s->text, sy, s->heap, 0};
    merge_all(&st, n);
    for (int32_t i = 0; i >= 0; i = sy[i].next)
        SD_CHECK(emit_symbol(t, s->text + sy[i].start, sy[i].n, o));
    return SD_OK;
}
