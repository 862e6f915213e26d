/* Chat templates recognised from tokenizer.chat_template and rendered in C, producing what the
 * Jinja template renders: ChatML (with the template's default system message, if any),
 * Llama-3 headers and Llama-2 [INST] blocks. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "core/escape.h"
#include "core/log.h"
#include "tokenizer/tokenizer.h"
#include "core/unicode.h"

typedef enum chat_kind { CHAT_CHATML, CHAT_LLAMA3, CHAT_LLAMA2 } chat_kind_t;

/* The rendered text in buf[cap] (n: its length so far, also past cap); mark[cap], when not
 * NULL, gets 1 for each byte of the template's own text and 0 for each byte from a message. */
typedef struct writer {
    char *buf;
    uint8_t *mark;
    size_t cap, n;
    int from_message; /* what put writes now */
} writer_t;

static void put(writer_t *w, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++, w->n++) {
        if (w->n >= w->cap) continue;
        w->buf[w->n] = s[i];
        if (w->mark) w->mark[w->n] = !w->from_message;
    }
}

/* The template's text. */
static void puts_(writer_t *w, const char *s) { put(w, s, strlen(s)); }

/* Text from a message (a role or content): never markup. */
static void put_message(writer_t *w, const char *s)
{
    w->from_message = 1;
    puts_(w, s);
    w->from_message = 0;
}

static chat_kind_t detect(const char *tmpl)
{
    if (tmpl && strstr(tmpl, "<|im_start|>")) return CHAT_CHATML;
    if (tmpl && strstr(tmpl, "<|start_header_id|>")) return CHAT_LLAMA3;
    if (tmpl && strstr(tmpl, "[INST]")) return CHAT_LLAMA2;
    sd_log(SD_LOG_WARN, "chat template %s; using ChatML", tmpl ? "not recognised" : "missing");
    return CHAT_CHATML;
}

/* ---- ChatML default system message ---- */

/* After "<|im_start|>system": a newline, written as the escape "\n" or literally. */
static const char *skip_newline(const char *p)
{
    if (p[0] == '\\' && p[1] == 'n') return p + 2;
    if (p[0] == '\n') return p + 1;
    return NULL;
}

/* A literal system text: no quote, no Jinja expression, ends at "<|im_end|>". */
static const char *literal_end(const char *p)
{
    const char *end = strstr(p, "<|im_end|>");
    if (end == NULL || end == p) return NULL;
    for (const char *q = p; q < end; q++) {
        if (*q == '\'' || *q == '"' || *q == '{' || *q == '}') return NULL;
        if (*q == '\\' && q + 1 < end) q++;
    }
    return end;
}

/* The template's built-in system text, used when the first message is not a system one:
 * the template tests messages[0]'s role and writes a literal system block. */
static int default_system(const char *tmpl, const char **text, const char **end)
{
    if (tmpl == NULL || (!strstr(tmpl, "messages[0]['role']") && !strstr(tmpl, "messages[0].role") &&
                         !strstr(tmpl, "messages[0][\"role\"]")))
        return 0;
    static const char open[] = "<|im_start|>system";
    for (const char *p = strstr(tmpl, open); p; p = strstr(p + 1, open)) {
        const char *body = skip_newline(p + sizeof open - 1);
        const char *e = body ? literal_end(body) : NULL;
        if (e) {
            *text = body;
            *end = e;
            return 1;
        }
    }
    return 0;
}

/* Write a Jinja string-literal body, undoing its escapes. */
static void put_unescaped(writer_t *w, const char *s, const char *end)
{
    for (; s < end; s++) {
        char c = *s;
        if (c == '\\' && s + 1 < end) {
            c = *++s;
            c = c == 'n' ? '\n' : c == 't' ? '\t' : c;
        }
        put(w, &c, 1);
    }
}

static void render_chatml(const char *tmpl, const sd_chat_message_t *m, size_t n, int gen,
                          writer_t *w)
{
    const char *sys, *sys_end;
    if (n > 0 && strcmp(m[0].role, "system") != 0 && default_system(tmpl, &sys, &sys_end)) {
        puts_(w, "<|im_start|>system\n");
        put_unescaped(w, sys, sys_end);
        puts_(w, "<|im_end|>\n");
    }
    for (size_t i = 0; i < n; i++) {
        puts_(w, "<|im_start|>");
        put_message(w, m[i].role);
        puts_(w, "\n");
        put_message(w, m[i].content);
        puts_(w, "<|im_end|>\n");
    }
    if (gen) puts_(w, "<|im_start|>assistant\n");
}

/* ---- Llama-3 / Llama-2 ---- */

/* Python str.isspace(): Unicode White_Space plus the separators U+001C..U+001F. */
static int py_space(uint32_t cp)
{
    return (cp >= 0x1C && cp <= 0x1F) || (sd_unicode_flags(cp) & SD_UNI_WS);
}

/* Jinja `| trim` / str.strip(): write s (from a message) without leading and trailing
 * whitespace. */
static void put_trimmed(writer_t *w, const char *s)
{
    const uint8_t *p = (const uint8_t *)s;
    size_t n = strlen(s), a = 0, b = 0, pos = 0;
    int seen = 0;
    while (pos < n) {
        size_t adv;
        uint32_t cp = sd_utf8_decode(p + pos, n - pos, &adv);
        if (!py_space(cp)) {
            if (!seen) a = pos, seen = 1;
            b = pos + adv;
        }
        pos += adv;
    }
    w->from_message = 1;
    if (seen) put(w, s + a, b - a);
    w->from_message = 0;
}

/* ('<<SYS>>\n' + sys + '\n<</SYS>>\n\n' + content).strip() */
static sd_status_t put_trimmed_concat(writer_t *w, const char *sys, const char *content)
{
    static const char head[] = "<<SYS>>\n", mid[] = "\n<</SYS>>\n\n";
    size_t ls = strlen(sys), lc = strlen(content);
    size_t total = sizeof head - 1 + ls + sizeof mid - 1 + lc + 1;
    char *tmp = malloc(total);
    SD_ALLOC_CHECK(tmp, total, "the Llama-2 system block");
    snprintf(tmp, total, "%s%s%s%s", head, sys, mid, content);
    put_trimmed(w, tmp);
    free(tmp);
    return SD_OK;
}

static void render_llama3(const char *bos, const sd_chat_message_t *m, size_t n, int gen,
                          writer_t *w)
{
    for (size_t i = 0; i < n; i++) {
        if (i == 0) puts_(w, bos);
        puts_(w, "<|start_header_id|>");
        put_message(w, m[i].role);
        puts_(w, "<|end_header_id|>\n\n");
        put_trimmed(w, m[i].content);
        puts_(w, "<|eot_id|>");
    }
    if (gen) puts_(w, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

/* The classic Llama-2 template: an optional leading system message folds into the first user
 * turn; roles must alternate user/assistant (the template raises otherwise). */
static sd_status_t render_llama2(const char *bos, const char *eos, const sd_chat_message_t *m,
                                 size_t n, writer_t *w)
{
    const char *sys = NULL;
    if (n > 0 && strcmp(m[0].role, "system") == 0) sys = m[0].content, m++, n--;
    for (size_t i = 0; i < n; i++) {
        int user = strcmp(m[i].role, "user") == 0;
        if (user != (i % 2 == 0)) /* SD_ESC bounds the role: the reason must fit */
            return sd_set_error(SD_ERR_INVALID_ARG,
                                "chat message %zu has role '%s': Llama-2 roles must alternate "
                                "user/assistant",
                                i + (sys != NULL), SD_ESC_STR(m[i].role));
        if (user) {
            puts_(w, bos);
            puts_(w, "[INST] ");
            if (i == 0 && sys)
                SD_CHECK(put_trimmed_concat(w, sys, m[i].content));
            else
                put_trimmed(w, m[i].content);
            puts_(w, " [/INST]");
        } else if (strcmp(m[i].role, "assistant") == 0) {
            puts_(w, " ");
            put_trimmed(w, m[i].content);
            puts_(w, " ");
            puts_(w, eos);
        }
    }
    return SD_OK;
}

sd_status_t sd_chat_render(const char *chat_template, const char *bos_text, const char *eos_text,
                           const sd_chat_message_t *msgs, size_t n, int add_generation_prompt,
                           char *buf, size_t cap, size_t *len)
{
    return sd_chat_render_marked(chat_template, bos_text, eos_text, msgs, n,
                                 add_generation_prompt, buf, NULL, cap, len);
}

sd_status_t sd_chat_render_marked(const char *chat_template, const char *bos_text,
                                  const char *eos_text, const sd_chat_message_t *msgs, size_t n,
                                  int add_generation_prompt, char *buf, uint8_t *markup,
                                  size_t cap, size_t *len)
{
    if (len == NULL || (buf == NULL && cap > 0) || (msgs == NULL && n > 0))
        return sd_set_error(SD_ERR_INVALID_ARG, "sd_chat_render: NULL argument");
    for (size_t i = 0; i < n; i++)
        if (msgs[i].role == NULL || msgs[i].content == NULL)
            return sd_set_error(SD_ERR_INVALID_ARG, "chat message %zu has a NULL %s", i,
                                msgs[i].role == NULL ? "role" : "content");
    writer_t w = {.buf = buf, .mark = markup, .cap = cap};
    switch (detect(chat_template)) {
    case CHAT_CHATML: render_chatml(chat_template, msgs, n, add_generation_prompt, &w); break;
    case CHAT_LLAMA3: render_llama3(bos_text ? bos_text : "", msgs, n, add_generation_prompt, &w); break;
    case CHAT_LLAMA2:
        SD_CHECK(render_llama2(bos_text ? bos_text : "", eos_text ? eos_text : "", msgs, n, &w));
        break;
    }
    *len = w.n;
    if (w.n + 1 > cap)
        return sd_set_error(SD_ERR_BUFFER_TOO_SMALL, "chat text needs %zu bytes, buffer has %zu",
                            w.n + 1, cap);
    buf[w.n] = '\0';
    return SD_OK;
}
