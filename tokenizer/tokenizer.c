/* Tokenizer public entry points: load, accessors, encode (special-token partition, then the
 * model's algorithm per text segment) and per-token decode. */
#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "tokenizer/tokenizer_impl.h"
#include "core/unicode.h"

sd_status_t sd_tok_reserve(void **p, size_t *cap, size_t n, size_t elem, const char *what)
{
    if (n <= *cap) return SD_OK;
    size_t want = n < 64 ? 64 : n + n / 2;
    void *q = realloc(*p, want * elem);
    SD_ALLOC_CHECK(q, want * elem, what);
    *p = q;
    *cap = want;
    return SD_OK;
}

sd_status_t sd_tokenizer_load(const gguf_file_t *f, sd_tokenizer_t **out)
{
    if (f == NULL || out == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG, "sd_tokenizer_load: NULL argument");
    *out = NULL;
    sd_tokenizer_t *t = calloc(1, sizeof *t);
    SD_ALLOC_CHECK(t, sizeof *t, "the tokenizer");
    sd_status_t st;
    SD_CHECK_GOTO(sd_tokenizer_load_vocab(f, t), st, fail);
    *out = t;
    return SD_OK;
fail:
    sd_tokenizer_free(t);
    return st;
}

void sd_tokenizer_free(sd_tokenizer_t *t)
{
    if (t == NULL) return;
    sd_text_map_free(&t->vocab);
    sd_pair_map_free(&t->merges);
    free(t->blob);
    free(t->off);
    free(t->len);
    free(t->score);
    free(t->type);
    free(t->is_eog);
    free(t->specials);
    free(t->chat_template);
    free(t);
}

int sd_tokenizer_n_vocab(const sd_tokenizer_t *t) { return t->n_vocab; }
int32_t sd_tokenizer_bos(const sd_tokenizer_t *t) { return t->bos; }
int32_t sd_tokenizer_eos(const sd_tokenizer_t *t) { return t->eos; }
const char *sd_tokenizer_chat_template(const sd_tokenizer_t *t) { return t->chat_template; }

int sd_tokenizer_is_eog(const sd_tokenizer_t *t, int32_t token)
{
    return token >= 0 && token < t->n_vocab && t->is_eog[token];
}

const char *sd_tokenizer_token_text(const sd_tokenizer_t *t, int32_t token, size_t *len)
{
    if (token < 0 || token >= t->n_vocab) return NULL;
    if (len) *len = t->len[token];
    return t->blob + t->off[token];
}

int sd_tokenizer_is_special(const sd_tokenizer_t *t, int32_t token)
{
    if (token < 0 || token >= t->n_vocab) return 0;
    uint8_t ty = t->type[token];
    return ty == SD_TOKTYPE_CONTROL || (t->kind == SD_TOK_BPE && ty == SD_TOKTYPE_USER_DEFINED);
}

int sd_tokenizer_space_prefix(const sd_tokenizer_t *t)
{
    return t->kind == SD_TOK_SPM && t->add_space_prefix;
}

/* 1 when text[p, p + n) may hold a special token: no mask (every byte may), or every byte
 * of it marked. */
static int special_allowed(const uint8_t *special_ok, size_t p, size_t n)
{
    if (special_ok == NULL) return 1;
    for (size_t i = p; i < p + n; i++)
        if (!special_ok[i]) return 0;
    return 1;
}

/* Leftmost special-token occurrence in text[from..len) where special_ok allows one, longest
 * text on ties. Returns its start (len if none) and the token in *id. */
static size_t find_special(const sd_tokenizer_t *t, const char *text, size_t from, size_t len,
                           const uint8_t *special_ok, int32_t *id)
{
    for (size_t p = from; p < len; p++) {
        if (!t->special_first[(uint8_t)text[p]]) continue;
        for (size_t k = 0; k < t->n_specials; k++) {
            int32_t s = t->specials[k];
            if (t->len[s] <= len - p && memcmp(text + p, t->blob + t->off[s], t->len[s]) == 0 &&
                special_allowed(special_ok, p, t->len[s])) {
                *id = s;
                return p;
            }
        }
    }
    return len;
}

static sd_status_t encode_segment(const sd_tokenizer_t *t, sd_tok_scratch_t *s, const char *text,
                                  size_t len, bool after_special, sd_tok_out_t *o)
{
    if (len == 0) return SD_OK;
    if (t->kind == SD_TOK_BPE) return sd_bpe_encode(t, s, (const uint8_t *)text, len, o);
    return sd_spm_encode(t, s, (const uint8_t *)text, len, t->add_space_prefix && after_special, o);
}

static sd_status_t encode_all(const sd_tokenizer_t *t, sd_tok_scratch_t *s, const char *text,
                              size_t len, int flags, const uint8_t *special_ok, sd_tok_out_t *o)
{
    if ((flags & SD_TOKENIZE_ADD_BOS) && t->add_bos) sd_tok_emit(o, t->bos);
    /* SPM: a space prefix starts the text (unless it continues one) and follows specials */
    bool after_special = !(flags & SD_TOKENIZE_CONTINUATION);
    size_t pos = 0;
    while (pos < len) {
        int32_t id = -1;
        size_t at = (flags & SD_TOKENIZE_PARSE_SPECIAL)
                        ? find_special(t, text, pos, len, special_ok, &id)
                        : len;
        SD_CHECK(encode_segment(t, s, text + pos, at - pos, after_special, o));
        if (at == len) break;
        sd_tok_emit(o, id);
        after_special = true;
        pos = at + t->len[id]; /* special texts are never empty */
    }
    return SD_OK;
}

sd_status_t sd_tokenizer_encode(const sd_tokenizer_t *t, const char *text, size_t len, int flags,
                                int32_t *out, size_t cap, size_t *n_out)
{
    return sd_tokenizer_encode_marked(t, text, len, flags, NULL, out, cap, n_out);
}

sd_status_t sd_tokenizer_encode_marked(const sd_tokenizer_t *t, const char *text, size_t len,
                                       int flags, const uint8_t *special_ok, int32_t *out,
                                       size_t cap, size_t *n_out)
{
    if (t == NULL || n_out == NULL || (text == NULL && len > 0) || (out == NULL && cap > 0))
        return sd_set_error(SD_ERR_INVALID_ARG, "sd_tokenizer_encode: NULL argument");
    sd_tok_scratch_t s = {0};
    sd_tok_out_t o = {out, cap, 0};
    sd_status_t st = encode_all(t, &s, text, len, flags, special_ok, &o);
    free(s.cps);
    free(s.offs);
    free(s.cls);
    free(s.syms);
    free(s.heap);
    free(s.text);
    if (st != SD_OK) return st;
    *n_out = o.n;
    if (o.n > cap)
        return sd_set_error(SD_ERR_BUFFER_TOO_SMALL, "%zu tokens do not fit in a buffer of %zu",
                            o.n, cap);
    return SD_OK;
}

/* ---- decode ------------------------------------------------------------ */

typedef struct byte_out {
    char *buf;
    size_t cap, n;
} byte_out_t;

static void put(byte_out_t *b, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++, b->n++)
        if (b->n < b->cap) b->buf[b->n] = s[i];
}

/* Byte-level text back to bytes; a code point outside the byte map is copied as UTF-8. */
static void piece_bpe(const sd_tokenizer_t *t, const char *s, size_t n, byte_out_t *b)
{
    for (size_t pos = 0; pos < n;) {
        size_t adv;
        uint32_t cp = sd_utf8_decode((const uint8_t *)s + pos, n - pos, &adv);
        if (cp < sizeof t->unbyte / sizeof t->unbyte[0] && t->unbyte[cp] >= 0) {
            char c = (char)t->unbyte[cp];
            put(b, &c, 1);
        } else {
            put(b, s + pos, adv);
        }
        pos += adv;
    }
}

/* "▁" -> " "; <0xXX> byte tokens -> the byte. */
static void piece_spm(const sd_tokenizer_t *t, int32_t token, const char *s, size_t n,
                      byte_out_t *b)
{
    if (t->type[token] == SD_TOKTYPE_BYTE && n == 6 && memcmp(s, "<0x", 3) == 0) {
        char c = (char)strtol(s + 3, NULL, 16);
        put(b, &c, 1);
        return;
    }
    for (size_t i = 0; i < n;) {
        if (n - i >= 3 && memcmp(s + i, "\xE2\x96\x81", 3) == 0) {
            put(b, " ", 1);
            i += 3;
        } else {
            put(b, s + i, 1);
            i++;
        }
    }
}

sd_status_t sd_tokenizer_piece(const sd_tokenizer_t *t, int32_t token, char *buf, size_t cap,
                               size_t *len)
{
    if (t == NULL || len == NULL || (buf == NULL && cap > 0))
        return sd_set_error(SD_ERR_INVALID_ARG, "sd_tokenizer_piece: NULL argument");
    if (token < 0 || token >= t->n_vocab)
        return sd_set_error(SD_ERR_INVALID_ARG, "token id %d is out of range (vocabulary of %d)",
                            token, t->n_vocab);
    const char *s = t->blob + t->off[token];
    size_t n = t->len[token];
    byte_out_t b = {buf, cap, 0};
    if (sd_tokenizer_is_special(t, token))
        put(&b, s, n);
    else if (t->kind == SD_TOK_BPE)
        piece_bpe(t, s, n, &b);
    else
        piece_spm(t, token, s, n, &b);
    *len = b.n;
    if (b.n > cap)
        return sd_set_error(SD_ERR_BUFFER_TOO_SMALL, "token %d needs %zu bytes, buffer has %zu",
                            token, b.n, cap);
    return SD_OK;
}

static int cand_before(const sd_merge_cand_t *a, const sd_merge_cand_t *b)
{
    return a->key < b->key || (a->key == b->key && a->left < b->left);
}

void sd_merge_heap_push(sd_merge_cand_t *h, size_t *n, sd_merge_cand_t c)
{
    size_t i = (*n)++;
    while (i > 0 && cand_before(&c, &h[(i - 1) / 2])) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = c;
}

sd_merge_cand_t sd_merge_heap_pop(sd_merge_cand_t *h, size_t *n)
{
    sd_merge_cand_t top = h[0], last = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && cand_before(&h[c + 1], &h[c])) c++;
        if (!cand_before(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = last;
    return top;
}
