/* Pre-tokenizer splits and Unicode helpers. Expected splits were produced by HF tokenizers'
 * pre_tokenize_str with the reference pre-tokenizers (tests/reference/tokenizer_ref.py):
 * ByteLevel (gpt2), Digits(individual) + ByteLevel (smollm), Split(qwen2 regex) (qwen2). */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tokenizer_impl.h"
#include "core/unicode.h"

typedef struct pre_case {
    sd_pretok_t kind;
    char text[64];
    char want[96]; /* pieces joined by '|' */
} pre_case_t;

typedef struct joined {
    const char *text;
    char buf[256];
    size_t n;
} joined_t;

static sd_status_t collect(void *ctx, size_t start, size_t end)
{
    joined_t *j = ctx;
    if (j->n > 0) j->buf[j->n++] = '|';
    cr_assert_lt(start, end, "empty piece");
    cr_assert_lt(j->n + (end - start), sizeof j->buf);
    memcpy(j->buf + j->n, j->text + start, end - start);
    j->n += end - start;
    j->buf[j->n] = '\0';
    return SD_OK;
}

ParameterizedTestParameters(pretok, matches_reference)
{
    static pre_case_t cases[] = {
        {SD_PRE_GPT2, "Hello world", "Hello| world"},
        {SD_PRE_GPT2, "I'M here, it's 42 or 1234!", "I|'|M| here|,| it|'s| 42| or| 1234|!"},
        {SD_PRE_GPT2, "a  b\t\n\n  c", "a| | b|\t\n\n | c"},
        {SD_PRE_GPT2, "x \r\n\r\ny", "x| \r\n\r|\n|y"},
        {SD_PRE_GPT2, "ab12 3.5", "ab|12| 3|.|5"},
        {SD_PRE_GPT2, "Don'T 'S 'll", "Don|'|T| '|S| '|ll"},
        {SD_PRE_GPT2, "tail   ", "tail|   "},
        {SD_PRE_GPT2, "\303\251t\303\251 \344\270\255\346\226\207!!\n", "\303\251t\303\251| \344\270\255\346\226\207|!!|\n"},
        {SD_PRE_SMOLLM, "Hello world", "Hello| world"},
        {SD_PRE_SMOLLM, "I'M here, it's 42 or 1234!", "I|'|M| here|,| it|'s| |4|2| or| |1|2|3|4|!"},
        {SD_PRE_SMOLLM, "a  b\t\n\n  c", "a| | b|\t\n\n | c"},
        {SD_PRE_SMOLLM, "x \r\n\r\ny", "x| \r\n\r|\n|y"},
        {SD_PRE_SMOLLM, "ab12 3.5", "ab|1|2| |3|.|5"},
        {SD_PRE_SMOLLM, "Don'T 'S 'll", "Don|'|T| '|S| '|ll"},
        {SD_PRE_SMOLLM, "tail   ", "tail|   "},
        {SD_PRE_SMOLLM, "\303\251t\303\251 \344\270\255\346\226\207!!\n", "\303\251t\303\251| \344\270\255\346\226\207|!!|\n"},
        {SD_PRE_QWEN2, "Hello world", "Hello| world"},
        {SD_PRE_QWEN2, "I'M here, it's 42 or 1234!", "I|'M| here|,| it|'s| |4|2| or| |1|2|3|4|!"},
        {SD_PRE_QWEN2, "a  b\t\n\n  c", "a| | b|\t\n\n| | c"},
        {SD_PRE_QWEN2, "x \r\n\r\ny", "x| \r\n\r\n|y"},
        {SD_PRE_QWEN2, "ab12 3.5", "ab|1|2| |3|.|5"},
        {SD_PRE_QWEN2, "Don'T 'S 'll", "Don|'T| '|S| '|ll"},
        {SD_PRE_QWEN2, "tail   ", "tail|   "},
        {SD_PRE_QWEN2, "\303\251t\303\251 \344\270\255\346\226\207!!\n", "\303\251t\303\251| \344\270\255\346\226\207|!!\n"},
    };
    return cr_make_param_array(pre_case_t, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(pre_case_t *c, pretok, matches_reference)
{
    joined_t j = {.text = c->text};
    sd_tok_scratch_t s = {0};
    cr_assert_eq(sd_pretokenize(c->kind, (const uint8_t *)c->text, strlen(c->text), &s, collect, &j),
                 SD_OK);
    free(s.cps);
    free(s.offs);
    free(s.cls);
    cr_assert_str_eq(j.buf, c->want);
}

Test(pretok, invalid_utf8_bytes_stay_in_pieces)
{
    /* 0xFF and a truncated 3-byte sequence are units of their own ("other" class). */
    static const char text[] = "ab\xff\xe2\x82 cd";
    joined_t j = {.text = text};
    sd_tok_scratch_t s = {0};
    cr_assert_eq(sd_pretokenize(SD_PRE_GPT2, (const uint8_t *)text, sizeof text - 1, &s, collect, &j),
                 SD_OK);
    free(s.cps);
    free(s.offs);
    free(s.cls);
    cr_assert_str_eq(j.buf, "ab|\xff\xe2\x82| cd");
}

Test(unicode, classes_follow_unicode_categories)
{
    cr_assert_eq(sd_unicode_flags('a'), SD_UNI_L);
    cr_assert_eq(sd_unicode_flags('7'), SD_UNI_N);
    cr_assert_eq(sd_unicode_flags('\n'), SD_UNI_WS);
    cr_assert_eq(sd_unicode_flags('_'), 0);
    cr_assert_eq(sd_unicode_flags(0xE9), SD_UNI_L);    /* é */
    cr_assert_eq(sd_unicode_flags(0x1C5), SD_UNI_L);   /* ǅ, Lt */
    cr_assert_eq(sd_unicode_flags(0x4E2D), SD_UNI_L);  /* 中 */
    cr_assert_eq(sd_unicode_flags(0x663), SD_UNI_N);   /* Arabic-Indic three, Nd */
    cr_assert_eq(sd_unicode_flags(0xBD), SD_UNI_N);    /* ½, No */
    cr_assert_eq(sd_unicode_flags(0x216B), SD_UNI_N);  /* Ⅻ, Nl */
    cr_assert_eq(sd_unicode_flags(0x3000), SD_UNI_WS); /* ideographic space */
    cr_assert_eq(sd_unicode_flags(0x85), SD_UNI_WS);   /* NEL */
    cr_assert_eq(sd_unicode_flags(0x1C), 0);           /* not White_Space */
    cr_assert_eq(sd_unicode_flags(0x200B), 0);         /* zero width space: Cf */
    cr_assert_eq(sd_unicode_flags(0x1F600), 0);        /* emoji: So */
    cr_assert_eq(sd_unicode_flags(0x301), 0);          /* combining acute: Mn */
    cr_assert_eq(sd_unicode_flags(SD_UTF8_INVALID + 0xFF), 0);
}

typedef struct utf8_case {
    char bytes[5];
    size_t n;
    uint32_t cp;
    size_t adv;
} utf8_case_t;

ParameterizedTestParameters(unicode, utf8_decode)
{
    static utf8_case_t cases[] = {
        {"A", 1, 'A', 1},
        {"\xc3\xa9", 2, 0xE9, 2},
        {"\xe4\xb8\xad", 3, 0x4E2D, 3},
        {"\xf0\x9f\x98\x80", 4, 0x1F600, 4},
        {"\xc3", 1, SD_UTF8_INVALID + 0xC3, 1},              /* truncated at the end */
        {"\xe4\xb8", 2, SD_UTF8_INVALID + 0xE4, 1},          /* truncated */
        {"\xc3(", 2, SD_UTF8_INVALID + 0xC3, 1},             /* bad continuation */
        {"\x80", 1, SD_UTF8_INVALID + 0x80, 1},              /* lone continuation */
        {"\xc0\xaf", 2, SD_UTF8_INVALID + 0xC0, 1},          /* overlong */
        {"\xed\xa0\x80", 3, SD_UTF8_INVALID + 0xED, 1},      /* surrogate */
        {"\xf4\x90\x80\x80", 4, SD_UTF8_INVALID + 0xF4, 1},  /* > U+10FFFF */
        {"\xff", 1, SD_UTF8_INVALID + 0xFF, 1},
    };
    return cr_make_param_array(utf8_case_t, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(utf8_case_t *c, unicode, utf8_decode)
{
    size_t adv = 0;
    cr_assert_eq(sd_utf8_decode((const uint8_t *)c->bytes, c->n, &adv), c->cp);
    cr_assert_eq(adv, c->adv);
    if (c->cp < SD_UTF8_INVALID) {
        char out[4];
        cr_assert_eq(sd_utf8_encode(c->cp, out), c->n);
        cr_assert_eq(memcmp(out, c->bytes, c->n), 0);
    }
}
