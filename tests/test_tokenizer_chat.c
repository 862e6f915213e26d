/* Chat templates: the C renderer against strings rendered by Python jinja2 from the same
 * templates (SmolLM2's own template from the GGUF, a Qwen2.5-style one, Llama-3 and Llama-2). */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <string.h>

#include "support/chat_templates.h"
#include "tokenizer/tokenizer.h"

static const sd_chat_message_t MSG_U[] = {{"user", "Hi there"}};
static const sd_chat_message_t MSG_SUA[] = {
    {"system", "Be brief."},
    {"user", "  What is 2+2?\n"},
    {"assistant", "4 "},
    {"user", "Thanks"},
};

enum { T_SMOL, T_QWEN, T_LLAMA3, T_LLAMA2 };
enum { M_NONE, M_U, M_SUA };

static const char *const templates[] = {SMOL_TMPL, QWEN_TMPL, LLAMA3_TMPL, LLAMA2_TMPL};
static const sd_chat_message_t *const msg_sets[] = {NULL, MSG_U, MSG_SUA};
static const size_t msg_counts[] = {0, 1, 4};

/* Criterion copies parameters into the test process: indices and inline text, no pointers. */
typedef struct chat_case {
    int tmpl, msgs, gen;
    char want[512]; /* rendered by jinja2 */
} chat_case_t;

ParameterizedTestParameters(chat, matches_jinja)
{
    static chat_case_t cases[] = {
        {T_SMOL, M_U, 0,
         "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n"},
        {T_SMOL, M_U, 1,
         "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"},
        {T_SMOL, M_SUA, 0,
         "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n  What is 2+2?\n<|im_end|>\n<|im_start|>assistant\n4 <|im_end|>\n<|im_start|>user\nThanks<|im_end|>\n"},
        {T_SMOL, M_SUA, 1,
         "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n  What is 2+2?\n<|im_end|>\n<|im_start|>assistant\n4 <|im_end|>\n<|im_start|>user\nThanks<|im_end|>\n<|im_start|>assistant\n"},
        {T_QWEN, M_U, 0,
         "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n"},
        {T_QWEN, M_U, 1,
         "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"},
        {T_QWEN, M_SUA, 0,
         "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n  What is 2+2?\n<|im_end|>\n<|im_start|>assistant\n4 <|im_end|>\n<|im_start|>user\nThanks<|im_end|>\n"},
        {T_QWEN, M_SUA, 1,
         "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n  What is 2+2?\n<|im_end|>\n<|im_start|>assistant\n4 <|im_end|>\n<|im_start|>user\nThanks<|im_end|>\n<|im_start|>assistant\n"},
        {T_LLAMA3, M_U, 0,
         "<s><|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"},
        {T_LLAMA3, M_U, 1,
         "<s><|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
        {T_LLAMA3, M_SUA, 0,
         "<s><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n4<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nThanks<|eot_id|>"},
        {T_LLAMA3, M_SUA, 1,
         "<s><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n4<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nThanks<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
        {T_LLAMA2, M_U, 0,
         "<s>[INST] Hi there [/INST]"},
        {T_LLAMA2, M_U, 1,
         "<s>[INST] Hi there [/INST]"},
        {T_LLAMA2, M_SUA, 0,
         "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\n  What is 2+2? [/INST] 4 </s><s>[INST] Thanks [/INST]"},
        {T_LLAMA2, M_SUA, 1,
         "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\n  What is 2+2? [/INST] 4 </s><s>[INST] Thanks [/INST]"},
        {T_SMOL, M_NONE, 1, "<|im_start|>assistant\n"},
    };
    return cr_make_param_array(chat_case_t, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(chat_case_t *c, chat, matches_jinja)
{
    char buf[1024];
    size_t len = 0;
    cr_assert_eq(sd_chat_render(templates[c->tmpl], "<s>", "</s>", msg_sets[c->msgs],
                                msg_counts[c->msgs], c->gen, buf, sizeof buf, &len),
                 SD_OK);
    cr_assert_str_eq(buf, c->want);
    cr_assert_eq(len, strlen(c->want));
}

Test(chat, unknown_template_falls_back_to_plain_chatml)
{
    char buf[256];
    size_t len;
    const char *want = "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n";
    cr_assert_eq(sd_chat_render("{{ messages }}", NULL, NULL, MSG_U, 1, 1, buf, sizeof buf, &len),
                 SD_OK);
    cr_assert_str_eq(buf, want);
    cr_assert_eq(sd_chat_render(NULL, NULL, NULL, MSG_U, 1, 1, buf, sizeof buf, &len), SD_OK);
    cr_assert_str_eq(buf, want);
}

Test(chat, buffer_too_small_reports_needed_size)
{
    const char *want = "<|im_start|>user\nHi there<|im_end|>\n";
    size_t need = strlen(want), len = 0;
    char buf[64];
    memset(buf, 'x', sizeof buf);
    cr_assert_eq(sd_chat_render("<|im_start|>", NULL, NULL, MSG_U, 1, 0, buf, need, &len),
                 SD_ERR_BUFFER_TOO_SMALL);
    cr_assert_eq(len, need);
    cr_assert_eq(buf[need], 'x', "wrote past the buffer");
    cr_assert_eq(sd_chat_render("<|im_start|>", NULL, NULL, MSG_U, 1, 0, NULL, 0, &len),
                 SD_ERR_BUFFER_TOO_SMALL);
    cr_assert_eq(len, need);
    cr_assert_eq(sd_chat_render("<|im_start|>", NULL, NULL, MSG_U, 1, 0, buf, need + 1, &len), SD_OK);
    cr_assert_str_eq(buf, want);
}

Test(chat, llama2_roles_must_alternate)
{
    static const sd_chat_message_t two_users[] = {{"user", "a"}, {"user", "b"}};
    char buf[256];
    size_t len;
    cr_assert_eq(sd_chat_render(LLAMA2_TMPL, "<s>", "</s>", two_users, 2, 0, buf, sizeof buf, &len),
                 SD_ERR_INVALID_ARG);
    cr_assert(strstr(sd_last_error(), "alternate") != NULL, "%s", sd_last_error());
}

Test(chat, rejects_null_fields)
{
    static const sd_chat_message_t bad[] = {{"user", NULL}};
    char buf[64];
    size_t len;
    cr_assert_eq(sd_chat_render(SMOL_TMPL, NULL, NULL, bad, 1, 0, buf, sizeof buf, &len),
                 SD_ERR_INVALID_ARG);
}

/* sd_chat_render_marked: the bytes marked as coming from a message, read in order, are
 * exactly the messages' roles and contents (as each template writes them: trimmed for
 * Llama-3 and Llama-2, Llama-2's system block folded into the first user turn); every
 * other byte is the template's. */
typedef struct marked_case {
    int tmpl;
    char from_messages[256];
} marked_case_t;

ParameterizedTestParameters(chat, marks_message_text)
{
    static marked_case_t cases[] = {
        {T_SMOL, "systemBe brief.user  What is 2+2?\nassistant4 userThanks"},
        {T_QWEN, "systemBe brief.user  What is 2+2?\nassistant4 userThanks"},
        {T_LLAMA3, "systemBe brief.userWhat is 2+2?assistant4userThanks"},
        {T_LLAMA2, "<<SYS>>\nBe brief.\n<</SYS>>\n\n  What is 2+2?4Thanks"},
    };
    return cr_make_param_array(marked_case_t, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(marked_case_t *c, chat, marks_message_text)
{
    char buf[1024], plain[1024], from_messages[1024];
    uint8_t markup[1024];
    size_t len = 0, plain_len = 0, k = 0;
    memset(markup, 7, sizeof markup);
    cr_assert_eq(sd_chat_render_marked(templates[c->tmpl], "<s>", "</s>", MSG_SUA, 4, 1, buf,
                                       markup, sizeof buf, &len),
                 SD_OK, "%s", sd_last_error());
    cr_assert_eq(sd_chat_render(templates[c->tmpl], "<s>", "</s>", MSG_SUA, 4, 1, plain,
                                sizeof plain, &plain_len), SD_OK);
    cr_assert_eq(len, plain_len);
    cr_assert_str_eq(buf, plain, "marking changes nothing in the text");
    for (size_t i = 0; i < len; i++) {
        cr_assert(markup[i] <= 1, "byte %zu is not marked", i);
        if (!markup[i]) from_messages[k++] = buf[i];
    }
    from_messages[k] = '\0';
    cr_assert_str_eq(from_messages, c->from_messages);
}
