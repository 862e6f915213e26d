/* Streaming UTF-8 decode of generated tokens and stop-string matching.
 *
 * sd_text_stream_*: a push returns only complete UTF-8; the bytes of a sequence that a
 * later token may complete are held. Bytes that can never become valid UTF-8 (a stray
 * continuation byte, an overlong or out-of-range lead) are passed through raw rather
 * than replaced with U+FFFD, and the flush returns a held incomplete tail raw as well, so
 * the concatenated stream output is byte-for-byte sd_detokenize of the same tokens. */
#include "engine/generate_text.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "model/model.h"

struct sd_text_stream {
    const sd_tokenizer_t *tok;
    unsigned char held[4]; /* incomplete trailing UTF-8 sequence of earlier tokens */
    size_t n_held;         /* 0..3 */
    char *buf;             /* [cap] staging: held bytes then the new token's piece */
    size_t cap;
};

/* Length of the sequence a lead byte starts; 0 for bytes that cannot start one. */
static size_t utf8_seq_len(unsigned char c)
{
    if (c >= 0xC2 && c <= 0xDF)
        return 2;
    if (c >= 0xE0 && c <= 0xEF)
        return 3;
    if (c >= 0xF0 && c <= 0xF4)
        return 4;
    return 0;
}

/* Allowed range of the byte after lead c (RFC 3629: no overlongs, surrogates, > U+10FFFF). */
static int utf8_second_ok(unsigned char c, unsigned char b)
{
    unsigned char lo = 0x80, hi = 0xBF;
    if (c == 0xE0)
        lo = 0xA0;
    else if (c == 0xED)
        hi = 0x9F;
    else if (c == 0xF0)
        lo = 0x90;
    else if (c == 0xF4)
        hi = 0x8F;
    return b >= lo && b <= hi;
}

size_t sd_utf8_incomplete_tail(const char *text, size_t n)
{
    const unsigned char *t = (const unsigned char *)text;
    size_t k = 0; /* continuation bytes at the end */
    while (k < 3 && k < n && (t[n - 1 - k] & 0xC0) == 0x80)
        k++;
    if (k == n)
        return 0;
    size_t lead = n - 1 - k, need = utf8_seq_len(t[lead]);
    if (need == 0 || k + 1 >= need)
        return 0;
    if (k >= 1 && !utf8_second_ok(t[lead], t[lead + 1]))
        return 0;
    return k + 1;
}

sd_status_t sd_text_stream_new(const sd_model_t *model, sd_text_stream_t **out)
{
    if (out == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG, "sd_text_stream_new: out is NULL");
    *out = NULL;
    if (model == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG, "sd_text_stream_new: model is NULL");
    if (model->tokenizer == NULL)
        return sd_set_error(SD_ERR_NO_TOKENIZER, "sd_text_stream_new: the model has no tokenizer");
    sd_text_stream_t *s = calloc(1, sizeof *s);
    SD_ALLOC_CHECK(s, sizeof *s, "text stream");
    s->tok = model->tokenizer;
    s->cap = 64;
    s->buf = malloc(s->cap);
    if (s->buf == NULL) {
        free(s);
        return sd_set_error(SD_ERR_OUT_OF_MEMORY, "out of memory allocating %zu bytes for %s",
                            (size_t)64, "text stream buffer");
    }
    *out = s;
    return SD_OK;
}

void sd_text_stream_free(sd_text_stream_t *s)
{
    if (s == NULL)
        return;
    free(s->buf);
    free(s);
}

/* Stage held bytes + the token's piece in s->buf; *total = their length. s->held is
 * left unchanged (stream_commit makes the step final). */
static sd_status_t stream_stage(sd_text_stream_t *s, int32_t token, size_t *total)
{
    memcpy(s->buf, s->held, s->n_held);
    size_t piece = 0;
    sd_status_t st = sd_tokenizer_piece(s->tok, token, s->buf + s->n_held, s->cap - s->n_held,
                                        &piece);
    if (st == SD_ERR_BUFFER_TOO_SMALL) {
        size_t cap = s->n_held + piece;
        char *grown = realloc(s->buf, cap);
        SD_ALLOC_CHECK(grown, cap, "text stream buffer");
        s->buf = grown;
        s->cap = cap;
        st = sd_tokenizer_piece(s->tok, token, s->buf + s->n_held, s->cap - s->n_held, &piece);
    }
    SD_CHECK(st);
    *total = s->n_held + piece;
    return SD_OK;
}

/* Keep s->buf[complete..total) as the held bytes for the next token. */
static void stream_commit(sd_text_stream_t *s, size_t complete, size_t total)
{
    s->n_held = total - complete;
    memcpy(s->held, s->buf + complete, s->n_held);
}

sd_status_t sd_text_stream_next(sd_text_stream_t *s, int32_t token, const char **text,
                                size_t *len)
{
    size_t total = 0;
    SD_CHECK(stream_stage(s, token, &total));
    size_t complete = total - sd_utf8_incomplete_tail(s->buf, total);
    stream_commit(s, complete, total);
    *text = s->buf;
    *len = complete;
    return SD_OK;
}

void sd_text_stream_take_rest(sd_text_stream_t *s, const char **text, size_t *len)
{
    memcpy(s->buf, s->held, s->n_held);
    *text = s->buf;
    *len = s->n_held;
    s->n_held = 0;
}

/* Copy text[n] to buf[cap] under the SD_ERR_BUFFER_TOO_SMALL convention. */
static sd_status_t copy_out(const char *what, const char *text, size_t n, char *buf, size_t cap,
                            size_t *len)
{
    *len = n;
    if (n > cap)
        return sd_set_error(SD_ERR_BUFFER_TOO_SMALL, "%s: %zu bytes needed, buffer holds %zu",
                            what, n, cap);
    if (n > 0)
        memcpy(buf, text, n);
    return SD_OK;
}

/* A push that does not fit leaves the stream as it was: push the same token again with
 * a buffer of *len bytes. */
sd_status_t sd_text_stream_push(sd_text_stream_t *s, int32_t token, char *buf, size_t cap,
                                size_t *len)
{
    if (s == NULL || len == NULL || (buf == NULL && cap > 0))
        return sd_set_error(SD_ERR_INVALID_ARG, "sd_text_stream_push: stream, len or buf is NULL");
    size_t total = 0;
    SD_CHECK(stream_stage(s, token, &total));
    size_t complete = total - sd_utf8_incomplete_tail(s->buf, total);
    SD_CHECK(copy_out("sd_text_stream_push", s->buf, complete, buf, cap, len));
    stream_commit(s, complete, total);
    return SD_OK;
}

/* Emits the held bytes raw; a flush that does not fit keeps them. */
sd_status_t sd_text_stream_flush(sd_text_stream_t *s, char *buf, size_t cap, size_t *len)
{
    if (s == NULL || len == NULL || (buf == NULL && cap > 0))
        return sd_set_error(SD_ERR_INVALID_ARG, "sd_text_stream_flush: stream, len or buf is NULL");
    SD_CHECK(copy_out("sd_text_stream_flush", (const char *)s->held, s->n_held, buf, cap, len));
    s->n_held = 0;
    return SD_OK;
}

/* ---- stop strings ---------------------------------------------------------------- */

static size_t find_one(const char *needle, size_t m, const char *text, size_t from, size_t n)
{
    if (m == 0 || n < m)
        return SIZE_MAX;
    for (size_t p = from; p + m <= n; p++)
        if (text[p] == needle[0] && memcmp(text + p, needle, m) == 0)
            return p;
    return SIZE_MAX;
}

size_t sd_stop_find(const char *const *stop, size_t n_stop, const char *text, size_t from,
                    size_t n)
{
    size_t best = SIZE_MAX;
    for (size_t i = 0; i < n_stop; i++) {
        size_t p = find_one(stop[i], strlen(stop[i]), text, from, n);
        if (p < best)
            best = p;
    }
    return best;
}

size_t sd_stop_hold(const char *const *stop, size_t n_stop, const char *text, size_t from,
                    size_t n)
{
    size_t longest = 0;
    for (size_t i = 0; i < n_stop; i++)
        if (strlen(stop[i]) > longest)
            longest = strlen(stop[i]);
    /* only a tail shorter than the longest stop string can be a proper prefix */
    size_t p = (n - from >= longest) ? n - longest + 1 : from;
    for (; p < n; p++)
        for (size_t i = 0; i < n_stop; i++) {
            size_t m = strlen(stop[i]);
            if (n - p < m && memcmp(text + p, stop[i], n - p) == 0)
                return p;
        }
    return n;
}
