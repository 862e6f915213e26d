/* sd_status_t names, the thread-local error detail, and escaping untrusted bytes for messages. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "core/escape.h"

Test(core_status, every_code_has_a_name)
{
    for (int s = 0; s < SD_STATUS_COUNT; s++) {
        const char *name = sd_status_string((sd_status_t)s);
        cr_assert(strncmp(name, "SD_", 3) == 0, "status %d has name '%s'", s, name);
        cr_assert(strcmp(name, "SD_ERR_UNKNOWN_STATUS") != 0, "status %d unnamed", s);
    }
    cr_assert_str_eq(sd_status_string(SD_ERR_BAD_MODEL), "SD_ERR_BAD_MODEL");
    cr_assert_str_eq(sd_status_string((sd_status_t)999), "SD_ERR_UNKNOWN_STATUS");
}

static sd_status_t failing_inner(void) { return sd_set_error(SD_ERR_IO, "cannot open '%s'", "x.gguf"); }
static sd_status_t failing_outer(void)
{
    SD_CHECK(failing_inner());
    return SD_OK;
}

Test(core_status, check_propagates_status_and_message)
{
    sd_clear_error();
    cr_assert_eq(failing_outer(), SD_ERR_IO);
    cr_assert_str_eq(sd_last_error(), "cannot open 'x.gguf'");
}

static void *other_thread(void *arg)
{
    (void)arg;
    sd_set_error(SD_ERR_INTERNAL, "from the other thread");
    return NULL;
}

Test(core_status, last_error_is_thread_local)
{
    sd_set_error(SD_ERR_INVALID_ARG, "mine");
    pthread_t t;
    pthread_create(&t, NULL, other_thread, NULL);
    pthread_join(t, NULL);
    cr_assert_str_eq(sd_last_error(), "mine");
}

/* ---- escaping untrusted bytes (core/escape.h) ------------------------------------------- */

static const char *esc(const char *s, size_t n, char *buf, size_t cap)
{
    return sd_escape(s, n, buf, cap);
}

Test(core_status, escape_keeps_text_and_escapes_controls)
{
    static const struct {
        const char *in;
        size_t len;
        const char *want;
    } cases[] = {
        {"plain key.name-1", 16, "plain key.name-1"},
        {"\x1b[31mred\x1b[0m", 12, "\\x1b[31mred\\x1b[0m"},
        {"tab\there\nnl\x7f", 12, "tab\\x09here\\x0anl\\x7f"},
        {"a\0b", 3, "a\\x00b"},                                  /* not cut at a NUL */
        {"caf\xc3\xa9 \xe4\xb8\xad", 9, "caf\xc3\xa9 \xe4\xb8\xad"}, /* UTF-8 kept */
        {"\xc2\x9b" "2J", 4, "\\xc2\\x9b2J"},                      /* C1 CSI */
        {"ab\xe2\x80\xae" "cd", 7, "ab\\xe2\\x80\\xaecd"},         /* bidi override */
        {"bad \xff\xc3", 6, "bad \\xff\\xc3"},                     /* not UTF-8 */
        {"back\\slash", 10, "back\\slash"},
    };
    char buf[SD_ESCAPE_BUF], again[SD_ESCAPE_BUF];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        esc(cases[i].in, cases[i].len, buf, sizeof buf);
        cr_assert_str_eq(buf, cases[i].want, "case %zu", i);
        esc(buf, strlen(buf), again, sizeof again);
        cr_assert_str_eq(again, buf, "case %zu: escaping escaped text changed it", i);
    }
}

Test(core_status, escape_says_what_it_left_out)
{
    char in[300], buf[64];
    memset(in, 'x', sizeof in);
    in[0] = '\x1b';
    esc(in, sizeof in, buf, sizeof buf);
    cr_assert_lt(strlen(buf), sizeof buf);
    const char *mark = strstr(buf, "...(+");
    cr_assert(mark != NULL && strncmp(buf, "\\x1b", 4) == 0, "'%s'", buf);
    size_t left = strtoul(mark + 5, NULL, 10), shown = (size_t)(mark - buf) - 4 + 1;
    cr_assert_eq(shown + left, sizeof in, "'%s': %zu shown + %zu left out", buf, shown, left);
    esc(in, 10, buf, sizeof buf); /* fits: no mark */
    cr_assert_null(strstr(buf, "..."), "'%s'", buf);
}

Test(core_status, messages_carry_no_control_bytes)
{
    sd_set_error(SD_ERR_BAD_MODEL, "key '%s' in line\n", "\x1b]0;owned\x07");
    cr_assert_str_eq(sd_last_error(), "key '\\x1b]0;owned\\x07' in line\\x0a");
    /* the message may name the previous one (a common way to add context) */
    sd_set_error(SD_ERR_IO, "outer: %s", sd_last_error());
    cr_assert_str_eq(sd_last_error(), "outer: key '\\x1b]0;owned\\x07' in line\\x0a");
}

/* A message longer than its buffer says how much of it was left out (fuzz_chat found a
 * cut message that no longer said why: 47a8932). */
Test(core_status, a_cut_message_says_so)
{
    char big[3000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    sd_set_error(SD_ERR_BAD_MODEL, "key %s", big);
    const char *msg = sd_last_error(), *mark = strstr(msg, "...(+");
    cr_assert(mark != NULL, "a %zu-byte message without a mark", strlen(msg));
    size_t shown = (size_t)(mark - msg), left = strtoul(mark + 5, NULL, 10);
    cr_assert_eq(shown + left, strlen("key ") + sizeof big - 1, "%zu shown + %zu left out", shown,
                 left);
    cr_assert_str_eq(mark + strcspn(mark, ")"), ")");
}
