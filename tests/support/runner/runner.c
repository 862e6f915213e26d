/* The test runner of the ThreadSanitizer build (tests/support/runner/criterion/criterion.h
 * says why and what it provides). Every test, and every parameter of a parameterized test,
 * runs in a forked child that is its own process group: .init, the test, .fini; a failed
 * cr_assert jumps to .fini. The parent waits at most the test's timeout (times
 * SPECDEC_TEST_TIMEOUT_SCALE, for the sanitizer's slowdown; no timeout: 600 s), then kills
 * the group; after every test it kills whatever the test left in its group (servers, ranks).
 * Exit codes: 0 when nothing failed (skips are listed with their reasons), 1 otherwise.
 *   test_x [--filter GLOB] [--list] [--jobs N (ignored: one test at a time)] */
#include <criterion/criterion.h>

#include <errno.h>
#include <fnmatch.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"

#define SKIP_EXIT 77
#define DEFAULT_TIMEOUT_S 600.0
#define MAX_SUITES 64

/* ThreadSanitizer's settings for the test binaries (TSAN_OPTIONS adds to them): stop at the
 * first report with exit code 66, so the runner sees it as the test's failure, and read
 * the suppressions, each justified in that file. */
const char *__tsan_default_options(void);
const char *__tsan_default_options(void)
{
    return "halt_on_error=1:exitcode=66:second_deadlock_stack=1:"
           "suppressions=" SPECDEC_SOURCE_DIR "/tests/tsan.supp";
}

static sdt_test_t *g_first, *g_last;
static struct {
    const char *name;
    const sdt_opts_t *opts;
} g_suites[MAX_SUITES];
static int g_n_suites;

/* the running test (child side) */
static jmp_buf g_abort;
static pthread_t g_main_thread;
static pid_t g_test_pid;
static int g_failed;
static const sdt_test_t *g_current;

void sdt_register_test(sdt_test_t *t)
{
    if (g_last) g_last->next = t;
    else g_first = t;
    g_last = t;
}

void sdt_register_suite(const char *suite, const sdt_opts_t *opts)
{
    if (g_n_suites == MAX_SUITES) {
        fprintf(stderr, "runner: more than %d suites\n", MAX_SUITES);
        exit(2);
    }
    g_suites[g_n_suites].name = suite;
    g_suites[g_n_suites++].opts = opts;
}

static const sdt_opts_t *suite_opts(const char *suite)
{
    for (int i = 0; i < g_n_suites; i++)
        if (strcmp(g_suites[i].name, suite) == 0) return g_suites[i].opts;
    return NULL;
}

/* A test's own option, else its suite's. */
static sdt_opts_t opts_of(const sdt_test_t *t)
{
    sdt_opts_t o = t->opts;
    const sdt_opts_t *s = suite_opts(t->suite);
    if (s != NULL) {
        if (o.init == NULL) o.init = s->init;
        if (o.fini == NULL) o.fini = s->fini;
        if (o.timeout <= 0) o.timeout = s->timeout;
    }
    return o;
}

void sdt_fail(int fatal, const char *file, int line, const char *expr, const char *fmt, ...)
{
    char msg[4096] = "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const char *text = msg[0] == ' ' ? msg + 1 : msg; /* the macros' leading space */
    fprintf(stderr, "[----] %s:%d: %s Failed\n", file, line, fatal ? "Assertion" : "Expectation");
    if (text[0]) fprintf(stderr, "[----]   %s\n", text);
    else fprintf(stderr, "[----]   The expression %s is false.\n", expr);
    fflush(stderr);
    g_failed = 1;
    if (!fatal) return;
    if (getpid() != g_test_pid || !pthread_equal(pthread_self(), g_main_thread))
        _exit(1); /* a forked helper or another thread: the runner cleans the group up */
    longjmp(g_abort, 1);
}

void sdt_skip(const char *fmt, ...)
{
    char msg[1024] = "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "[SKIP] %s::%s: %s\n", g_current->suite, g_current->name,
            msg[0] == ' ' ? msg + 1 : msg);
    fflush(stderr);
    _exit(SKIP_EXIT);
}

void sdt_log(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("[----] ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    fflush(stderr);
    va_end(ap);
}

/* ---- running ------------------------------------------------------------------------- */

/* The child: init, the test (parameter i), fini; exits 0 or 1. */
static void run_child(const sdt_test_t *t, size_t i)
{
    setpgid(0, 0);
    g_current = t;
    g_test_pid = getpid();
    g_main_thread = pthread_self();
    sdt_opts_t o = opts_of(t);
    volatile int phase = 0; /* 0 init, 1 test, 2 fini */
    if (setjmp(g_abort) == 0) {
        if (o.init) o.init();
        phase = 1;
        if (t->fn) {
            t->fn();
        } else {
            struct criterion_test_params p = t->params();
            t->pfn((char *)p.params + i * p.size);
        }
    }
    if (phase >= 1 && phase < 2 && o.fini) { /* after the test, also a failed one */
        phase = 2;
        if (setjmp(g_abort) == 0) o.fini();
    }
    fflush(NULL);
    exit(g_failed ? 1 : 0);
}

/* Waits for the child until the deadline; kills its group then. *status: its wait status,
 * or -1 after a timeout. */
static void wait_child(pid_t pid, double deadline, int *status)
{
    for (;;) {
        pid_t got = waitpid(pid, status, WNOHANG);
        if (got == pid) break;
        if (got < 0 && errno != EINTR) {
            *status = -2;
            break;
        }
        if (sd_now() > deadline) {
            kill(-pid, SIGKILL);
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            *status = -1;
            break;
        }
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    kill(-pid, SIGKILL); /* what the test left running in its group */
}

typedef struct tally {
    int tested, passed, failed, skipped, crashed;
} tally_t;

static void run_one(const sdt_test_t *t, size_t i, size_t n_params, double scale, tally_t *tl)
{
    char label[256];
    if (t->pfn) snprintf(label, sizeof label, "%s::%s [param %zu of %zu]", t->suite, t->name, i, n_params);
    else snprintf(label, sizeof label, "%s::%s", t->suite, t->name);
    sdt_opts_t o = opts_of(t);
    double limit = (o.timeout > 0 ? o.timeout : DEFAULT_TIMEOUT_S) * scale;
    fflush(NULL);
    double t0 = sd_now();
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "[FAIL] %s: fork: %s\n", label, strerror(errno));
        tl->tested++, tl->failed++;
        return;
    }
    if (pid == 0) run_child(t, i);
    setpgid(pid, pid); /* also here: no race with the child's own call */
    int st = 0;
    wait_child(pid, t0 + limit, &st);
    double secs = sd_now() - t0;
    tl->tested++;
    if (st == -1) {
        fprintf(stderr, "[FAIL] %s: timed out after %.1f s\n", label, limit);
        tl->failed++;
    } else if (st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0) {
        fprintf(stderr, "[PASS] %s: (%.2fs)\n", label, secs);
        tl->passed++;
    } else if (st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == SKIP_EXIT) {
        tl->skipped++; /* the child printed why */
    } else if (st >= 0 && WIFEXITED(st)) {
        fprintf(stderr, "[FAIL] %s: exit %d%s (%.2fs)\n", label, WEXITSTATUS(st),
                WEXITSTATUS(st) == 66 ? ", a ThreadSanitizer report" : "", secs);
        tl->failed++;
    } else {
        fprintf(stderr, "[FAIL] %s: crashed (%s) after %.2fs\n", label,
                st >= 0 && WIFSIGNALED(st) ? strsignal(WTERMSIG(st)) : "lost", secs);
        tl->crashed++;
    }
}

int main(int argc, char **argv)
{
    const char *filter = NULL;
    int list = 0;
    for (int a = 1; a < argc; a++) {
        if (strcmp(argv[a], "--filter") == 0 && a + 1 < argc) filter = argv[++a];
        else if (strncmp(argv[a], "--filter=", 9) == 0) filter = argv[a] + 9;
        else if (strcmp(argv[a], "--list") == 0) list = 1;
        else if (strcmp(argv[a], "--jobs") == 0 && a + 1 < argc) a++;
        else if (strcmp(argv[a], "--verbose") != 0) {
            fprintf(stderr, "usage: %s [--filter GLOB] [--list] [--jobs N]\n", argv[0]);
            return 2;
        }
    }
    const char *sc = getenv("SPECDEC_TEST_TIMEOUT_SCALE");
    double scale = sc && atof(sc) > 0 ? atof(sc) : 1.0;
    tally_t tl = {0};
    for (const sdt_test_t *t = g_first; t; t = t->next) {
        char full[256];
        snprintf(full, sizeof full, "%s/%s", t->suite, t->name);
        if (filter && fnmatch(filter, full, 0) != 0) continue;
        if (list) {
            printf("%s\n", full);
            continue;
        }
        size_t n = t->pfn ? t->params().length : 1;
        for (size_t i = 0; i < n; i++) run_one(t, i, n, scale, &tl);
    }
    if (!list)
        fprintf(stderr, "[====] Synthesis: Tested: %d | Passing: %d | Failing: %d | Crashing: %d | "
                        "Skipped: %d\n", tl.tested, tl.passed, tl.failed, tl.crashed, tl.skipped);
    return tl.failed || tl.crashed ? 1 : 0;
}
