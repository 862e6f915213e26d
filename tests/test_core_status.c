/* sd_status_t names and the thread-local error detail. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <string.h>

#include "core/check.h"

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

/* Messages quote bytes from files and requests: what a terminal would act on is escaped, a
 * message that does not fit says so, and re-setting the current message is safe. */
Test(core_status, messages_escape_terminal_controls)
{
    sd_set_error(SD_ERR_BAD_MODEL, "key '%s'", "a\x1b]0;pwned\x07\n\x7f\xc2\x9b" "2Jb\xc3\xa9");
    cr_assert_str_eq(sd_last_error(),
                     "key 'a\\x1b]0;pwned\\x07\\x0a\\x7f\\xc2\\x9b2Jb\xc3\xa9'");
    sd_set_error(SD_ERR_BAD_MODEL, "again: %s", sd_last_error());
    cr_assert(strncmp(sd_last_error(), "again: key 'a\\x1b", 17) == 0, "%s", sd_last_error());
    char big[3000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    sd_set_error(SD_ERR_BAD_MODEL, "%s", big);
    size_t n = strlen(sd_last_error());
    cr_assert(n < 1024 && n > 1000, "%zu", n);
    cr_assert_str_eq(sd_last_error() + n - 3, "...");
}
