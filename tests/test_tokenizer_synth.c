/* Tokenizers built from small in-memory GGUF vocabularies: the SentencePiece path with byte
 * fallback, a byte-level BPE with known merge ranks, and corrupt metadata. Expected ids follow
 * from the algorithms by hand (worked through in the comments). */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tokenizer.h"

#define KEY_MODEL "tokenizer.ggml.model"
#define KEY_TOKENS "tokenizer.ggml.tokens"
#define KEY_TYPES "tokenizer.ggml.token_type"
#define KEY_SCORES "tokenizer.ggml.scores"
#define KEY_MERGES "tokenizer.ggml.merges"

/* Write w to memory, open it, load the tokenizer, close the file (the tokenizer owns copies). */
static sd_status_t load_from(gguf_writer_t *w, sd_tokenizer_t **out)
{
    void *buf;
    size_t size;
    cr_assert_eq(gguf_writer_write_buffer(w, &buf, &size), SD_OK, "%s", sd_last_error());
    gguf_writer_free(w);
    gguf_file_t *f;
    cr_assert_eq(gguf_open_buffer(buf, size, &f), SD_OK, "%s", sd_last_error());
    *out = NULL;
    sd_status_t st = sd_tokenizer_load(f, out);
    gguf_close(f);
    memset(buf, 0, size); /* a tokenizer still pointing into the file would now see zeros */
    free(buf);
    return st;
}

static void expect_ids(const sd_tokenizer_t *t, const char *text, size_t len, int flags,
                       const int32_t *want, size_t n_want)
{
    int32_t ids[64];
    size_t n = 0;
    cr_assert_eq(sd_tokenizer_encode(t, text, len, flags, ids, 64, &n), SD_OK, "%s",
                 sd_last_error());
    cr_assert_eq(n, n_want, "'%s': %zu tokens, expected %zu", text, n, n_want);
    for (size_t i = 0; i < n; i++) cr_assert_eq(ids[i], want[i], "'%s' token %zu", text, i);
}

static void expect_piece(const sd_tokenizer_t *t, int32_t id, const char *want, size_t n_want)
{
    char buf[32];
    size_t len = 0;
    cr_assert_eq(sd_tokenizer_piece(t, id, buf, sizeof buf, &len), SD_OK);
    cr_assert_eq(len, n_want, "token %d", id);
    cr_assert_eq(memcmp(buf, want, len), 0, "token %d", id);
}

/* ---- SentencePiece ------------------------------------------------------------------ */

#define SPM_BYTE(b) (3 + (b)) /* <0x00>.. are ids 3..258 */
#define SPM_WORD 259

static const char *const spm_words[] = {
    "\xe2\x96\x81", "h", "e", "l", "o", "\xe2\x96\x81h", "ll", "he", "llo", "\xe2\x96\x81he",
    "\xe2\x96\x81hello", "w", "r", "d", "\xe2\x96\x81w", "or", "ld", "\xe2\x96\x81wor",
    "\xe2\x96\x81world", "a", "b", "c", "ab", "bc",
};
static const float spm_scores[] = {
    -1, -2, -2, -2, -2, -3, -1.5f, -4, -1, -2.5f, -5, -2, -2, -2, -3, -2, -2, -2.5f, -3, -2, -2,
    -2, -1, -0.5f,
};
enum { W_SPACE, W_H, W_E, W_L, W_O, W_SP_H, W_LL, W_HE, W_LLO, W_SP_HE, W_SP_HELLO, W_W, W_R,
       W_D, W_SP_W, W_OR, W_LD, W_SP_WOR, W_SP_WORLD, W_A, W_B, W_C, W_AB, W_BC, N_WORDS };

static sd_tokenizer_t *spm_tokenizer(int add_space_prefix)
{
    enum { N = SPM_WORD + N_WORDS };
    static char names[256][8];
    const char *tokens[N];
    int32_t types[N];
    float scores[N];
    tokens[0] = "<unk>", types[0] = 2, scores[0] = 0;
    tokens[1] = "<s>", types[1] = 3, scores[1] = 0;
    tokens[2] = "</s>", types[2] = 3, scores[2] = 0;
    for (int b = 0; b < 256; b++) {
        snprintf(names[b], sizeof names[b], "<0x%02X>", b);
        tokens[SPM_BYTE(b)] = names[b], types[SPM_BYTE(b)] = 6, scores[SPM_BYTE(b)] = 0;
    }
    for (int i = 0; i < N_WORDS; i++)
        tokens[SPM_WORD + i] = spm_words[i], types[SPM_WORD + i] = 1,
        scores[SPM_WORD + i] = spm_scores[i];
    gguf_writer_t *w;
    cr_assert_eq(gguf_writer_new(&w), SD_OK);
    cr_assert_eq(gguf_writer_set_str(w, KEY_MODEL, "llama"), SD_OK);
    cr_assert_eq(gguf_writer_set_arr_str(w, KEY_TOKENS, tokens, N), SD_OK);
    cr_assert_eq(gguf_writer_set_arr(w, KEY_TYPES, GGUF_TYPE_INT32, types, N), SD_OK);
    cr_assert_eq(gguf_writer_set_arr(w, KEY_SCORES, GGUF_TYPE_FLOAT32, scores, N), SD_OK);
    cr_assert_eq(gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 1), SD_OK);
    cr_assert_eq(gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 2), SD_OK);
    cr_assert_eq(gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", 0), SD_OK);
    if (!add_space_prefix)
        cr_assert_eq(gguf_writer_set_bool(w, "tokenizer.ggml.add_space_prefix", false), SD_OK);
    sd_tokenizer_t *t;
    cr_assert_eq(load_from(w, &t), SD_OK, "%s", sd_last_error());
    return t;
}

#define ID(w) (SPM_WORD + (w))

Test(spm, merges_by_score)
{
    sd_tokenizer_t *t = spm_tokenizer(1);
    /* "▁hello": ll(-1.5) -> llo(-1) -> ▁h(-3) -> ▁he(-2.5) -> ▁hello(-5); "he"(-4) goes stale */
    expect_ids(t, "hello", 5, SD_TOKENIZE_ADD_BOS, (int32_t[]){1, ID(W_SP_HELLO)}, 2);
    /* "▁world": or and ld tie at -2 (leftmost first), then ▁w, ▁wor, ▁world */
    expect_ids(t, "hello world", 11, 0, (int32_t[]){ID(W_SP_HELLO), ID(W_SP_WORLD)}, 2);
    /* bc(-0.5) beats ab(-1) and "abc" is no token: ▁ a bc */
    expect_ids(t, "abc", 3, 0, (int32_t[]){ID(W_SPACE), ID(W_A), ID(W_BC)}, 3);
    sd_tokenizer_free(t);
}

Test(spm, byte_fallback)
{
    sd_tokenizer_t *t = spm_tokenizer(1);
    expect_ids(t, "hi!", 3, 0, (int32_t[]){ID(W_SP_H), SPM_BYTE('i'), SPM_BYTE('!')}, 3);
    expect_ids(t, "\xc3\xa9", 2, 0, (int32_t[]){ID(W_SPACE), SPM_BYTE(0xC3), SPM_BYTE(0xA9)}, 3);
    expect_ids(t, "\xff", 1, 0, (int32_t[]){ID(W_SPACE), SPM_BYTE(0xFF)}, 2);
    expect_piece(t, SPM_BYTE(0xFF), "\xff", 1);
    expect_piece(t, SPM_BYTE('i'), "i", 1);
    sd_tokenizer_free(t);
}

Test(spm, special_tokens_and_space_prefix)
{
    sd_tokenizer_t *t = spm_tokenizer(1);
    /* llama.cpp prefixes "▁" to the text after a special token as well */
    expect_ids(t, "hello</s>hello", 14, SD_TOKENIZE_PARSE_SPECIAL,
               (int32_t[]){ID(W_SP_HELLO), 2, ID(W_SP_HELLO)}, 3);
    expect_ids(t, "</s>", 4, 0,
               (int32_t[]){ID(W_SPACE), SPM_BYTE('<'), SPM_BYTE('/'), SPM_BYTE('s'), SPM_BYTE('>')},
               5);
    expect_ids(t, "", 0, SD_TOKENIZE_ADD_BOS, (int32_t[]){1}, 1);
    cr_assert(sd_tokenizer_is_eog(t, 2));
    expect_piece(t, ID(W_SP_HELLO), " hello", 6);
    expect_piece(t, 2, "</s>", 4);
    sd_tokenizer_free(t);

    t = spm_tokenizer(0);
    /* no prefix: h e l l o -> h e llo -> he llo ("hello" is no token) */
    expect_ids(t, "hello", 5, 0, (int32_t[]){ID(W_HE), ID(W_LLO)}, 2);
    sd_tokenizer_free(t);
}

/* ---- byte-level BPE ----------------------------------------------------------------- */

/* GPT-2 bytes_to_unicode as UTF-8. */
static void byte_level(int b, char out[3])
{
    int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    int cp = printable ? b : 256 + (b <= 0x20 ? b : b <= 0xA0 ? 33 + b - 0x7F : 67);
    if (cp < 0x80) {
        out[0] = (char)cp, out[1] = 0;
    } else {
        out[0] = (char)(0xC0 | (cp >> 6)), out[1] = (char)(0x80 | (cp & 0x3F)), out[2] = 0;
    }
}

enum { B_HE = 256, B_LL, B_HELL, B_HELLO, B_SP_W, B_BC, B_AB, B_END, B_N };

static const char *const bpe_extra[] = {"he", "ll", "hell", "hello", "\xc4\xa0w", "bc", "ab",
                                        "<|end|>"};
static const char *const bpe_merges[] = {"b c", "a b", "h e", "l l", "he ll", "hell o",
                                         "\xc4\xa0 w"};

typedef enum mutation {
    MUT_NONE,
    MUT_MERGE_MISSING_PART,
    MUT_MERGE_NO_SPACE,
    MUT_MERGE_RESULT_MISSING,
    MUT_TYPES_COUNT,
    MUT_TYPE_VALUE,
    MUT_SCORES_COUNT,
    MUT_BOS_RANGE,
    MUT_NO_MODEL,
    MUT_UNKNOWN_MODEL,
    MUT_NO_MERGES,
    MUT_TOKENS_NOT_STRINGS,
    MUT_ADD_BOS_WITHOUT_BOS,
} mutation_t;

static void bpe_tokens(gguf_writer_t *w, mutation_t m)
{
    static char names[256][3];
    const char *tokens[B_N];
    for (int b = 0; b < 256; b++) byte_level(b, names[b]), tokens[b] = names[b];
    for (int i = B_HE; i < B_N; i++) tokens[i] = bpe_extra[i - B_HE];
    if (m == MUT_TOKENS_NOT_STRINGS) {
        int32_t ints[B_N] = {0};
        cr_assert_eq(gguf_writer_set_arr(w, KEY_TOKENS, GGUF_TYPE_INT32, ints, B_N), SD_OK);
    } else {
        cr_assert_eq(gguf_writer_set_arr_str(w, KEY_TOKENS, tokens, B_N), SD_OK);
    }
    int32_t types[B_N];
    for (int i = 0; i < B_N; i++) types[i] = i == B_END ? 3 : 1;
    if (m == MUT_TYPE_VALUE) types[5] = 9;
    uint64_t n_types = m == MUT_TYPES_COUNT ? B_N - 1 : B_N;
    cr_assert_eq(gguf_writer_set_arr(w, KEY_TYPES, GGUF_TYPE_INT32, types, n_types), SD_OK);
}

static void bpe_merges_kv(gguf_writer_t *w, mutation_t m)
{
    enum { NM = sizeof bpe_merges / sizeof bpe_merges[0] };
    const char *merges[NM + 1];
    memcpy(merges, bpe_merges, sizeof bpe_merges);
    size_t n = NM;
    if (m == MUT_MERGE_MISSING_PART) merges[n++] = "q zz";
    if (m == MUT_MERGE_NO_SPACE) merges[n++] = "hello";
    if (m == MUT_MERGE_RESULT_MISSING) merges[n++] = "x y";
    if (m != MUT_NO_MERGES) cr_assert_eq(gguf_writer_set_arr_str(w, KEY_MERGES, merges, n), SD_OK);
}

static sd_status_t bpe_load(mutation_t m, sd_tokenizer_t **out)
{
    gguf_writer_t *w;
    cr_assert_eq(gguf_writer_new(&w), SD_OK);
    if (m != MUT_NO_MODEL)
        cr_assert_eq(gguf_writer_set_str(w, KEY_MODEL, m == MUT_UNKNOWN_MODEL ? "bert" : "gpt2"),
                     SD_OK);
    cr_assert_eq(gguf_writer_set_str(w, "tokenizer.ggml.pre", "gpt2"), SD_OK);
    bpe_tokens(w, m);
    bpe_merges_kv(w, m);
    if (m == MUT_SCORES_COUNT) {
        float scores[3] = {0};
        cr_assert_eq(gguf_writer_set_arr(w, KEY_SCORES, GGUF_TYPE_FLOAT32, scores, 3), SD_OK);
    }
    if (m != MUT_ADD_BOS_WITHOUT_BOS)
        cr_assert_eq(gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id",
                                         m == MUT_BOS_RANGE ? B_N : B_END),
                     SD_OK);
    cr_assert_eq(gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", B_END), SD_OK);
    cr_assert_eq(gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token",
                                      m == MUT_ADD_BOS_WITHOUT_BOS),
                 SD_OK);
    return load_from(w, out);
}

Test(bpe, merges_by_rank)
{
    sd_tokenizer_t *t;
    cr_assert_eq(bpe_load(MUT_NONE, &t), SD_OK, "%s", sd_last_error());
    cr_assert_eq(sd_tokenizer_n_vocab(t), B_N);
    /* byte tokens have the byte's id here */
    expect_ids(t, "hello world", 11, 0, (int32_t[]){B_HELLO, B_SP_W, 'o', 'r', 'l', 'd'}, 6);
    /* "b c" has rank 0, before "a b" */
    expect_ids(t, "abc", 3, 0, (int32_t[]){'a', B_BC}, 2);
    expect_ids(t, "ab<|end|>c", 10, SD_TOKENIZE_PARSE_SPECIAL, (int32_t[]){B_AB, B_END, 'c'}, 3);
    /* add_bos_token false: no BOS even when asked */
    expect_ids(t, "ab", 2, SD_TOKENIZE_ADD_BOS, (int32_t[]){B_AB}, 1);
    expect_piece(t, B_SP_W, " w", 2);
    expect_piece(t, 0x0A, "\n", 1); /* "Ċ" */
    expect_piece(t, B_END, "<|end|>", 7);
    cr_assert(sd_tokenizer_is_eog(t, B_END));
    cr_assert_eq(sd_tokenizer_bos(t), B_END);
    cr_assert_null(sd_tokenizer_chat_template(t));
    sd_tokenizer_free(t);
}

Test(bpe, every_byte_round_trips)
{
    sd_tokenizer_t *t;
    cr_assert_eq(bpe_load(MUT_NONE, &t), SD_OK, "%s", sd_last_error());
    char text[256], back[256];
    for (int b = 0; b < 256; b++) text[b] = (char)b;
    int32_t ids[256];
    size_t n;
    cr_assert_eq(sd_tokenizer_encode(t, text, 256, 0, ids, 256, &n), SD_OK);
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len;
        cr_assert_eq(sd_tokenizer_piece(t, ids[i], back + total, sizeof back - total, &len), SD_OK);
        total += len;
    }
    cr_assert_eq(total, 256);
    cr_assert_eq(memcmp(back, text, 256), 0);
    sd_tokenizer_free(t);
}

typedef struct corrupt_case {
    mutation_t m;
    sd_status_t status;
    char needle[48]; /* must appear in sd_last_error() */
} corrupt_case_t;

ParameterizedTestParameters(bpe, corrupt_metadata)
{
    static corrupt_case_t cases[] = {
        {MUT_MERGE_MISSING_PART, SD_ERR_BAD_MODEL, "tokenizer.ggml.merges[7] 'q zz'"},
        {MUT_MERGE_NO_SPACE, SD_ERR_BAD_MODEL, "tokenizer.ggml.merges[7] 'hello'"},
        {MUT_MERGE_RESULT_MISSING, SD_ERR_BAD_MODEL, "the merged text"},
        {MUT_TYPES_COUNT, SD_ERR_BAD_MODEL, "tokenizer.ggml.token_type: 263 entries"},
        {MUT_TYPE_VALUE, SD_ERR_BAD_MODEL, "tokenizer.ggml.token_type[5] = 9"},
        {MUT_SCORES_COUNT, SD_ERR_BAD_MODEL, "tokenizer.ggml.scores: 3 entries"},
        {MUT_BOS_RANGE, SD_ERR_BAD_MODEL, "tokenizer.ggml.bos_token_id = 264"},
        {MUT_NO_MODEL, SD_ERR_NO_TOKENIZER, "tokenizer.ggml.model"},
        {MUT_UNKNOWN_MODEL, SD_ERR_BAD_MODEL, "'bert'"},
        {MUT_NO_MERGES, SD_ERR_BAD_MODEL, "tokenizer.ggml.merges"},
        {MUT_TOKENS_NOT_STRINGS, SD_ERR_BAD_MODEL, "tokenizer.ggml.tokens"},
        {MUT_ADD_BOS_WITHOUT_BOS, SD_ERR_BAD_MODEL, "add_bos_token"},
    };
    return cr_make_param_array(corrupt_case_t, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(corrupt_case_t *c, bpe, corrupt_metadata)
{
    sd_tokenizer_t *t = (sd_tokenizer_t *)&t; /* must be reset to NULL */
    cr_assert_eq(bpe_load(c->m, &t), c->status, "%s", sd_last_error());
    cr_assert_null(t);
    cr_assert(strstr(sd_last_error(), c->needle) != NULL, "'%s' does not mention '%s'",
              sd_last_error(), c->needle);
}
