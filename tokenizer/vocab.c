/* Vocabulary loading and validation from GGUF tokenizer.* metadata. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "core/escape.h"
#include "core/log.h"
#include "tokenizer/tokenizer_impl.h"
#include "core/unicode.h"

#define KEY_TOKENS "tokenizer.ggml.tokens"
#define KEY_TYPES "tokenizer.ggml.token_type"
#define KEY_SCORES "tokenizer.ggml.scores"
#define KEY_MERGES "tokenizer.ggml.merges"

/* Texts of tokens that end a turn in common chat formats (llama.cpp's EOG heuristics). */
static const char *const eog_texts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>",
    "<EOT>",      "<|end_of_text|>",
};

static int is_int_type(gguf_type_t ty)
{
    return ty <= GGUF_TYPE_INT32 || ty == GGUF_TYPE_UINT64 || ty == GGUF_TYPE_INT64;
}

/* Copy every token text into one NUL-separated blob. */
static sd_status_t load_texts(const gguf_kv_t *kv, sd_tokenizer_t *t)
{
    size_t total = 0;
    for (uint64_t i = 0; i < kv->arr_n; i++) total += kv->arr_strs[i].len + 1;
    if (total > UINT32_MAX)
        return sd_set_error(SD_ERR_BAD_MODEL, "%s: %zu bytes of token text is too large",
                            KEY_TOKENS, total);
    t->blob = malloc(total);
    t->off = malloc(kv->arr_n * sizeof *t->off);
    t->len = malloc(kv->arr_n * sizeof *t->len);
    SD_ALLOC_CHECK(t->blob, total, "token texts");
    SD_ALLOC_CHECK(t->off, kv->arr_n * sizeof *t->off, "token offsets");
    SD_ALLOC_CHECK(t->len, kv->arr_n * sizeof *t->len, "token lengths");
    size_t pos = 0;
    for (uint64_t i = 0; i < kv->arr_n; i++) {
        gguf_str_t s = kv->arr_strs[i];
        if (s.len) memcpy(t->blob + pos, s.data, s.len);
        t->blob[pos + s.len] = '\0';
        t->off[i] = (uint32_t)pos;
        t->len[i] = (uint32_t)s.len;
        pos += s.len + 1;
    }
    return SD_OK;
}

/* SPM byte tokens look like "<0x4F>": returns the byte, or -1. */
static int spm_byte_value(const char *s, size_t n)
{
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

static sd_status_t load_types(const gguf_file_t *f, sd_tokenizer_t *t)
{
    t->type = malloc((size_t)t->n_vocab);
    SD_ALLOC_CHECK(t->type, t->n_vocab, "token types");
    const gguf_kv_t *kv = gguf_find_kv(f, KEY_TYPES);
    if (kv == NULL) { /* llama.cpp default: normal, byte tokens recognised by their text */
        for (int32_t i = 0; i < t->n_vocab; i++) {
            int byte = spm_byte_value(t->blob + t->off[i], t->len[i]);
            t->type[i] = t->kind == SD_TOK_SPM && byte >= 0 ? SD_TOKTYPE_BYTE : SD_TOKTYPE_NORMAL;
        }
        return SD_OK;
    }
    if (kv->type != GGUF_TYPE_ARRAY || !is_int_type(kv->arr_type) || kv->arr_data == NULL)
        return sd_set_error(SD_ERR_BAD_MODEL, "%s: expected an array of integers", KEY_TYPES);
    if (kv->arr_n != (uint64_t)t->n_vocab)
        return sd_set_error(SD_ERR_BAD_MODEL, "%s: %llu entries but %s has %d", KEY_TYPES,
                            (unsigned long long)kv->arr_n, KEY_TOKENS, t->n_vocab);
    for (int32_t i = 0; i < t->n_vocab; i++) {
        int64_t v = gguf_arr_int(kv, (uint64_t)i);
        if (v < SD_TOKTYPE_UNDEFINED || v > SD_TOKTYPE_BYTE)
            return sd_set_error(SD_ERR_BAD_MODEL, "%s[%d] = %lld is not a token type (0..6)",
                                KEY_TYPES, i, (long long)v);
        t->type[i] = (uint8_t)v;
    }
    return SD_OK;
}

static sd_status_t load_scores(const gguf_file_t *f, sd_tokenizer_t *t)
{
    t->score = calloc((size_t)t->n_vocab, sizeof *t->score);
    SD_ALLOC_CHECK(t->score, (size_t)t->n_vocab * sizeof *t->score, "token scores");
    const gguf_kv_t *kv = gguf_find_kv(f, KEY_SCORES);
    if (kv == NULL) return SD_OK;
    if (kv->type != GGUF_TYPE_ARRAY ||
        (kv->arr_type != GGUF_TYPE_FLOAT32 && kv->arr_type != GGUF_TYPE_FLOAT64) ||
        kv->arr_data == NULL)
        return sd_set_error(SD_ERR_BAD_MODEL, "%s: expected an array of floats", KEY_SCORES);
    if (kv->arr_n != (uint64_t)t->n_vocab)
        return sd_set_error(SD_ERR_BAD_MODEL, "%s: %llu entries but %s has %d", KEY_SCORES,
                            (unsigned long long)kv->arr_n, KEY_TOKENS, t->n_vocab);
    for (int32_t i = 0; i < t->n_vocab; i++) t->score[i] = (float)gguf_arr_float(kv, (uint64_t)i);
    return SD_OK;
}

/* Optional token id key: -1 when absent, error when present but out of range. */
static sd_status_t load_id(const gguf_file_t *f, const char *key, const sd_tokenizer_t *t,
                           int32_t *out)
{
    *out = -1;
    if (gguf_find_kv(f, key) == NULL) return SD_OK;
    int32_t v;
    SD_CHECK(gguf_get_i32(f, key, &v));
    if (v < 0 || v >= t->n_vocab)
        return sd_set_error(SD_ERR_BAD_MODEL, "%s = %d is out of range (vocabulary of %d tokens)",
                            key, v, t->n_vocab);
    *out = v;
    return SD_OK;
}

static sd_status_t load_bool(const gguf_file_t *f, const char *key, bool dflt, bool *out)
{
    *out = dflt;
    if (gguf_find_kv(f, key) == NULL) return SD_OK;
    return gguf_get_bool(f, key, out);
}

/* GPT-2 bytes_to_unicode: printable Latin-1 bytes map to themselves; the 68 others, in
 * order (0x00-0x20, 0x7F-0xA0, 0xAD), to U+0100..U+0143. */
static uint32_t byte_to_cp(int b)
{
    if (b <= 0x20) return 256u + (uint32_t)b;
    if (b >= 0x7F && b <= 0xA0) return 256u + 33u + (uint32_t)(b - 0x7F);
    if (b == 0xAD) return 256u + 33u + 34u;
    return (uint32_t)b;
}

static void map_bytes_bpe(sd_tokenizer_t *t)
{
    for (size_t i = 0; i < sizeof t->unbyte / sizeof t->unbyte[0]; i++) t->unbyte[i] = -1;
    int missing = 0;
    for (int b = 0; b < 256; b++) {
        char u[4];
        uint32_t cp = byte_to_cp(b);
        size_t n = sd_utf8_encode(cp, u);
        t->unbyte[cp] = (int16_t)b;
        t->byte_tok[b] = sd_text_map_get(&t->vocab, t, u, n);
        missing += t->byte_tok[b] < 0;
    }
    if (missing)
        sd_log(SD_LOG_DEBUG, "tokenizer: %d bytes have no byte-level token; encode drops them",
               missing);
}

static void map_bytes_spm(sd_tokenizer_t *t)
{
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        t->byte_tok[b] = sd_text_map_get(&t->vocab, t, name, 6);
    }
}

/* One "left right" merge: both parts and their concatenation must be tokens. */
static sd_status_t load_merge(sd_tokenizer_t *t, gguf_str_t m, uint64_t i)
{
    const char *sp = m.len > 1 ? memchr(m.data + 1, ' ', m.len - 1) : NULL;
    if (sp == NULL || sp + 1 == m.data + m.len)
        return sd_set_error(SD_ERR_BAD_MODEL, "%s[%llu] '%s' is not of the form 'left right'",
                            KEY_MERGES, (unsigned long long)i, SD_ESC(m.data, m.len));
    size_t la = (size_t)(sp - m.data), lb = m.len - la - 1;
    int32_t a = sd_text_map_get(&t->vocab, t, m.data, la);
    int32_t b = sd_text_map_get(&t->vocab, t, sp + 1, lb);
    int32_t ab = -1;
    if (a >= 0 && b >= 0 && la + lb <= 1024) {
        char buf[1024];
        memcpy(buf, m.data, la);
        memcpy(buf + la, sp + 1, lb);
        ab = sd_text_map_get(&t->vocab, t, buf, la + lb);
    }
    if (a < 0 || b < 0 || ab < 0)
        return sd_set_error(SD_ERR_BAD_MODEL, "%s[%llu] '%s': %s is not a token", KEY_MERGES,
                            (unsigned long long)i, SD_ESC(m.data, m.len),
                            a < 0 ? "the left part" : b < 0 ? "the right part" : "the merged text");
    sd_pair_map_put(&t->merges, a, b, (int32_t)i, ab);
    return SD_OK;
}

static sd_status_t load_merges(const gguf_file_t *f, sd_tokenizer_t *t)
{
    const gguf_kv_t *kv;
    SD_CHECK(gguf_get_arr(f, KEY_MERGES, GGUF_TYPE_STRING, &kv));
    if (kv->arr_n > INT32_MAX)
        return sd_set_error(SD_ERR_BAD_MODEL, "%s: %llu merges is too many", KEY_MERGES,
                            (unsigned long long)kv->arr_n);
    SD_CHECK(sd_pair_map_init(&t->merges, (size_t)kv->arr_n));
    for (uint64_t i = 0; i < kv->arr_n; i++) SD_CHECK(load_merge(t, kv->arr_strs[i], i));
    return SD_OK;
}

/* Control and user-defined tokens, longest text first (ties: lower id first). */
static sd_status_t load_specials(sd_tokenizer_t *t)
{
    t->specials = malloc((size_t)t->n_vocab * sizeof *t->specials);
    SD_ALLOC_CHECK(t->specials, (size_t)t->n_vocab * sizeof *t->specials, "special tokens");
    for (int32_t i = 0; i < t->n_vocab; i++) {
        uint8_t ty = t->type[i];
        if ((ty == SD_TOKTYPE_CONTROL || ty == SD_TOKTYPE_USER_DEFINED) && t->len[i] > 0) {
            t->specials[t->n_specials++] = i;
            t->special_first[(uint8_t)t->blob[t->off[i]]] = 1;
        }
    }
    /* insertion sort: specials are few */
    for (size_t i = 1; i < t->n_specials; i++) {
        int32_t id = t->specials[i];
        size_t j = i;
        while (j > 0 && t->len[t->specials[j - 1]] < t->len[id]) {
            t->specials[j] = t->specials[j - 1];
            j--;
        }
        t->specials[j] = id;
    }
    return SD_OK;
}

static sd_status_t load_eog(sd_tokenizer_t *t)
{
    t->is_eog = calloc((size_t)t->n_vocab, 1);
    SD_ALLOC_CHECK(t->is_eog, t->n_vocab, "end-of-generation flags");
    if (t->eos >= 0) t->is_eog[t->eos] = 1;
    if (t->eot >= 0) t->is_eog[t->eot] = 1;
    for (size_t i = 0; i < sizeof eog_texts / sizeof eog_texts[0]; i++) {
        int32_t id = sd_text_map_get(&t->vocab, t, eog_texts[i], strlen(eog_texts[i]));
        if (id >= 0 && (t->type[id] == SD_TOKTYPE_CONTROL || t->type[id] == SD_TOKTYPE_USER_DEFINED))
            t->is_eog[id] = 1;
    }
    return SD_OK;
}

static sd_pretok_t pretok_of(gguf_str_t pre)
{
    static atomic_int warned;
    if (gguf_str_eq(pre, "smollm") || gguf_str_eq(pre, "starcoder")) return SD_PRE_SMOLLM;
    if (gguf_str_eq(pre, "qwen2")) return SD_PRE_QWEN2;
    if (!gguf_str_eq(pre, "gpt2") && !gguf_str_eq(pre, "gpt-2") && !gguf_str_eq(pre, "default") &&
        !atomic_exchange(&warned, 1))
        sd_log(SD_LOG_WARN, "tokenizer.ggml.pre '%s' is not known; using the GPT-2 pre-tokenizer",
               SD_ESC(pre.data, pre.len));
    return SD_PRE_GPT2;
}

static sd_status_t load_kind(const gguf_file_t *f, sd_tokenizer_t *t)
{
    if (gguf_find_kv(f, "tokenizer.ggml.model") == NULL)
        return sd_set_error(SD_ERR_NO_TOKENIZER, "the model file has no tokenizer.ggml.model");
    gguf_str_t model;
    SD_CHECK(gguf_get_str(f, "tokenizer.ggml.model", &model));
    if (gguf_str_eq(model, "gpt2")) {
        t->kind = SD_TOK_BPE;
    } else if (gguf_str_eq(model, "llama")) {
        t->kind = SD_TOK_SPM;
    } else {
        return sd_set_error(SD_ERR_BAD_MODEL,
                            "tokenizer.ggml.model '%s' is not supported (gpt2 or llama)",
                            SD_ESC(model.data, model.len));
    }
    t->pre = SD_PRE_GPT2;
    if (t->kind == SD_TOK_BPE && gguf_find_kv(f, "tokenizer.ggml.pre") != NULL) {
        gguf_str_t pre;
        SD_CHECK(gguf_get_str(f, "tokenizer.ggml.pre", &pre));
        t->pre = pretok_of(pre);
    }
    return SD_OK;
}

static sd_status_t load_options(const gguf_file_t *f, sd_tokenizer_t *t)
{
    SD_CHECK(load_id(f, "tokenizer.ggml.bos_token_id", t, &t->bos));
    SD_CHECK(load_id(f, "tokenizer.ggml.eos_token_id", t, &t->eos));
    SD_CHECK(load_id(f, "tokenizer.ggml.unknown_token_id", t, &t->unk));
    SD_CHECK(load_id(f, "tokenizer.ggml.padding_token_id", t, &t->pad));
    SD_CHECK(load_id(f, "tokenizer.ggml.eot_token_id", t, &t->eot));
    bool spm = t->kind == SD_TOK_SPM;
    SD_CHECK(load_bool(f, "tokenizer.ggml.add_bos_token", spm, &t->add_bos));
    SD_CHECK(load_bool(f, "tokenizer.ggml.add_space_prefix", spm, &t->add_space_prefix));
    if (t->add_bos && t->bos < 0)
        return sd_set_error(SD_ERR_BAD_MODEL,
                            "tokenizer.ggml.add_bos_token is set but tokenizer.ggml.bos_token_id "
                            "is missing");
    if (gguf_find_kv(f, "tokenizer.chat_template") != NULL) {
        gguf_str_t tmpl;
        SD_CHECK(gguf_get_str(f, "tokenizer.chat_template", &tmpl));
        t->chat_template = malloc(tmpl.len + 1);
        SD_ALLOC_CHECK(t->chat_template, tmpl.len + 1, "the chat template");
        if (tmpl.len) memcpy(t->chat_template, tmpl.data, tmpl.len);
        t->chat_template[tmpl.len] = '\0';
    }
    return SD_OK;
}

sd_status_t sd_tokenizer_load_vocab(const gguf_file_t *f, sd_tokenizer_t *t)
{
    SD_CHECK(load_kind(f, t));
    const gguf_kv_t *tokens;
    SD_CHECK(gguf_get_arr(f, KEY_TOKENS, GGUF_TYPE_STRING, &tokens));
    if (tokens->arr_n == 0 || tokens->arr_n > INT32_MAX)
        return sd_set_error(SD_ERR_BAD_MODEL, "%s: %llu tokens is not a usable vocabulary",
                            KEY_TOKENS, (unsigned long long)tokens->arr_n);
    t->n_vocab = (int32_t)tokens->arr_n;
    SD_CHECK(load_texts(tokens, t));
    SD_CHECK(sd_text_map_init(&t->vocab, (size_t)t->n_vocab));
    for (int32_t i = 0; i < t->n_vocab; i++) sd_text_map_put(&t->vocab, t, i);
    SD_CHECK(load_types(f, t));
    SD_CHECK(load_scores(f, t));
    SD_CHECK(load_options(f, t));
    if (t->kind == SD_TOK_BPE) {
        map_bytes_bpe(t);
        SD_CHECK(load_merges(f, t));
    } else {
        map_bytes_spm(t);
    }
    SD_CHECK(load_specials(t));
    return load_eog(t);
}
