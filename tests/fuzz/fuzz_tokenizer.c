/* Fuzz target: the tokenizers (tokenizer/) through the public calls — sd_tokenize,
 * sd_detokenize and the streaming decoder sd_text_stream_* (engine/generate_text.c).
 *
 * Input: byte 0 picks the tokenizer and flags, the rest is the text (or token ids):
 *   bits 0-1: 0 SmolLM2 (the real 49,152-token vocabulary; byte-level BPE, "smollm"
 *             pre-tokenizer), 1 a synthetic qwen2 byte-level BPE ("qwen2" pre-tokenizer),
 *             2 a synthetic SentencePiece vocabulary (byte fallback, space prefix),
 *             3 decode only: the rest is little-endian u16 token ids for SmolLM2;
 *   bit 2: SD_TOKENIZE_PARSE_SPECIAL; bit 3: SD_TOKENIZE_ADD_BOS.
 * Properties:
 *   - every id is in the vocabulary; without PARSE_SPECIAL no id is a control token (text
 *     is data: "<|im_end|>" typed by a user stays text);
 *   - decoding gives the text back: byte for byte for byte-level BPE (control tokens
 *     decode to their text) but for the bytes the vocabulary has no token for, which are
 *     dropped as HF tokenizers drops them; with the space prefix and U+2581 -> ' ' for
 *     SentencePiece;
 *   - the streamed decode, token by token, concatenates to sd_detokenize's bytes, never
 *     releases part of a character that the following bytes complete and never holds more
 *     than 3 bytes back;
 *   - a buffer one short gives SD_ERR_BUFFER_TOO_SMALL with the size needed.
 * Agreement with HF `tokenizers` on this corpus is tests/fuzz/tokenizer_hf.py (modes 0, 1). */
#include "fuzz/fuzz.h"
#include "fuzz/fuzz_model.h"
#include "model/model.h"
#include "tokenizer/tokenizer_impl.h"

static sd_model_t *models[3];

static sd_model_t *synth(const char *arch, sd_synth_tokenizer_t tok)
{
    sd_synth_spec_t s;
    sd_synth_spec_default(&s);
    s.arch = arch;
    s.tokenizer = tok;
    s.n_vocab = 320; /* the vocabulary tests/reference's `sd_ref_dump synth` writes */
    return fuzz_synth_model(&s);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    setenv("SPECDEC_LOG", "error", 1);
    models[0] = fuzz_smollm_model();
    models[1] = synth("qwen2", SD_SYNTH_TOKENIZER_GPT2);
    models[2] = synth("llama", SD_SYNTH_TOKENIZER_LLAMA);
    return 0;
}

static char *detok(const sd_model_t *m, const int32_t *ids, size_t n, size_t *len)
{
    size_t need = 0;
    sd_status_t s = sd_detokenize(m, ids, n, NULL, 0, &need);
    FUZZ_CHECK(s == SD_OK || s == SD_ERR_BUFFER_TOO_SMALL, "detokenize size: %s", sd_last_error());
    char *out = malloc(need + 1);
    if (!out) abort();
    s = sd_detokenize(m, ids, n, out, need + 1, len);
    FUZZ_CHECK(s == SD_OK && *len == need, "detokenize: %s (%zu vs %zu bytes)", sd_last_error(),
               *len, need);
    if (need > 0) {
        size_t again = 0;
        s = sd_detokenize(m, ids, n, out, need - 1, &again);
        FUZZ_CHECK(s == SD_ERR_BUFFER_TOO_SMALL && again == need,
                   "a buffer one short: %s, %zu needed, %zu reported", sd_status_string(s), need,
                   again);
    }
    return out;
}

/* 1 when whole[0..len) has a valid UTF-8 sequence (RFC 3629) starting before `cut` and
 * ending after it: releasing text up to `cut` would split a character. */
static int splits_char(const char *whole, size_t len, size_t cut)
{
    const uint8_t *u = (const uint8_t *)whole;
    size_t lead = cut;
    for (int k = 0; k < 4 && lead > 0; k++) {
        lead--;
        if ((u[lead] & 0xC0) != 0x80) break;
    }
    if (lead == cut || (u[lead] & 0xC0) == 0x80) return 0;
    size_t need = u[lead] >= 0xC2 && u[lead] <= 0xDF ? 2 : u[lead] >= 0xE0 && u[lead] <= 0xEF ? 3
                : u[lead] >= 0xF0 && u[lead] <= 0xF4 ? 4 : 0;
    if (need == 0 || lead + need <= cut || lead + need > len) return 0;
    uint8_t lo = u[lead] == 0xE0 ? 0xA0 : u[lead] == 0xF0 ? 0x90 : 0x80;
    uint8_t hi = u[lead] == 0xED ? 0x9F : u[lead] == 0xF4 ? 0x8F : 0xBF;
    if (u[lead + 1] < lo || u[lead + 1] > hi) return 0;
    for (size_t i = lead + 2; i < lead + need; i++)
        if ((u[i] & 0xC0) != 0x80) return 0;
    return 1;
}

/* The streamed decode equals the whole decode; no push releases part of a character the
 * following bytes complete, and none holds back more than 3 bytes. */
static void check_stream(const sd_model_t *m, const int32_t *ids, size_t n, const char *whole,
                         size_t whole_len)
{
    sd_text_stream_t *st;
    FUZZ_CHECK(sd_text_stream_new(m, &st) == SD_OK, "%s", sd_last_error());
    char *acc = malloc(whole_len + 1), piece[512];
    if (!acc) abort();
    size_t got = 0, len, pushed = 0;
    for (size_t i = 0; i <= n; i++) {
        sd_status_t s = i < n ? sd_text_stream_push(st, ids[i], piece, sizeof piece, &len)
                              : sd_text_stream_flush(st, piece, sizeof piece, &len);
        FUZZ_CHECK(s == SD_OK, "stream %s %zu: %s", i < n ? "push" : "flush", i, sd_last_error());
        FUZZ_CHECK(got + len <= whole_len, "streamed %zu bytes, the whole decode has %zu",
                   got + len, whole_len);
        memcpy(acc + got, piece, len);
        got += len;
        if (i < n) {
            size_t pl = 0;
            sd_tokenizer_piece(m->tokenizer, ids[i], NULL, 0, &pl);
            pushed += pl;
            FUZZ_CHECK(!splits_char(whole, whole_len, got),
                       "push %zu released part of a character (at byte %zu)", i, got);
            FUZZ_CHECK(got <= pushed && pushed - got <= 3, "push %zu holds %zu bytes", i,
                       pushed - got);
        }
    }
    FUZZ_CHECK(got == whole_len && memcmp(acc, whole, got) == 0,
               "the streamed decode (%zu bytes) differs from sd_detokenize (%zu bytes)", got,
               whole_len);
    free(acc);
    sd_text_stream_free(st);
}

static void decode_only(const uint8_t *p, size_t n)
{
    const sd_model_t *m = models[0];
    int nv = m->tokenizer->n_vocab;
    size_t k = n / 2;
    int32_t *ids = malloc((k + 1) * sizeof *ids);
    if (!ids) abort();
    for (size_t i = 0; i < k; i++) ids[i] = (int32_t)((p[2 * i] | p[2 * i + 1] << 8) % nv);
    size_t len;
    char *whole = detok(m, ids, k, &len);
    check_stream(m, ids, k, whole, len);
    free(whole);
    free(ids);
}

/* What SentencePiece decoding of text gives back: the space prefix, U+2581 read as ' '. */
static char *spm_expected(const sd_tokenizer_t *t, const char *text, size_t n, size_t *out_len)
{
    char *e = malloc(n + 2), *o = e;
    if (!e) abort();
    if (t->add_space_prefix && n > 0) *o++ = ' ';
    for (size_t i = 0; i < n; i++) {
        if (i + 3 <= n && memcmp(text + i, "\xE2\x96\x81", 3) == 0) *o++ = ' ', i += 2;
        else *o++ = text[i];
    }
    *out_len = (size_t)(o - e);
    return e;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) return 0;
    int mode = data[0] & 3;
    int flags = (data[0] & 4 ? SD_TOKENIZE_PARSE_SPECIAL : 0) | (data[0] & 8 ? SD_TOKENIZE_ADD_BOS : 0);
    const char *text = (const char *)data + 1;
    size_t n = size - 1;
    if (mode == 3) return decode_only(data + 1, n), 0;
    const sd_model_t *m = models[mode];
    const sd_tokenizer_t *t = m->tokenizer;
    size_t need = 0;
    sd_status_t s = sd_tokenize(m, text, n, flags, NULL, 0, &need);
    FUZZ_CHECK(s == SD_OK || s == SD_ERR_BUFFER_TOO_SMALL, "tokenize size: %s: %s",
               sd_status_string(s), sd_last_error());
    int32_t *ids = malloc((need + 1) * sizeof *ids);
    if (!ids) abort();
    size_t n_ids = 0;
    s = sd_tokenize(m, text, n, flags, ids, need, &n_ids);
    FUZZ_CHECK(s == SD_OK && n_ids == need, "tokenize: %s (%zu vs %zu)", sd_last_error(), n_ids, need);
    if (need > 0) {
        size_t again = 0;
        s = sd_tokenize(m, text, n, flags, ids, need - 1, &again);
        FUZZ_CHECK(s == SD_ERR_BUFFER_TOO_SMALL && again == need, "a buffer one short: %s",
                   sd_status_string(s));
        s = sd_tokenize(m, text, n, flags, ids, need, &n_ids);
    }
    size_t first = 0; /* the BOS added by ADD_BOS, not part of the text */
    if ((flags & SD_TOKENIZE_ADD_BOS) && n_ids > 0 && t->add_bos && ids[0] == t->bos) first = 1;
    for (size_t i = 0; i < n_ids; i++) {
        FUZZ_CHECK(ids[i] >= 0 && ids[i] < t->n_vocab, "id %d out of the vocabulary", ids[i]);
        if (!(flags & SD_TOKENIZE_PARSE_SPECIAL) && i >= first)
            FUZZ_CHECK(t->type[ids[i]] != SD_TOKTYPE_CONTROL,
                       "plain text became control token %d (mode %d)", ids[i], mode);
    }
    size_t len;
    char *whole = detok(m, ids + first, n_ids - first, &len);
    if (t->kind == SD_TOK_BPE) {
        /* bytes without a byte-level token (SmolLM2 lacks 21) are dropped, as HF does */
        char *want = malloc(n + 1);
        size_t want_len = 0;
        if (!want) abort();
        for (size_t i = 0; i < n; i++)
            if (t->byte_tok[(uint8_t)text[i]] >= 0) want[want_len++] = text[i];
        FUZZ_CHECK(len == want_len && memcmp(whole, want, len) == 0,
                   "byte-level BPE round trip (mode %d, flags %d): %zu bytes in, %zu out, %zu "
                   "expected", mode, flags, n, len, want_len);
        free(want);
    } else if (!(flags & SD_TOKENIZE_PARSE_SPECIAL)) {
        size_t want_len;
        char *want = spm_expected(t, text, n, &want_len);
        FUZZ_CHECK(len == want_len && memcmp(whole, want, len) == 0,
                   "SentencePiece round trip: %zu bytes in, %zu out, %zu expected", n, len, want_len);
        free(want);
    }
    check_stream(m, ids + first, n_ids - first, whole, len);
    free(whole);
    free(ids);
    return 0;
}
