/* The part of Criterion 2.4's API the multi-threaded test suites use, for the
 * ThreadSanitizer build only: Criterion cannot start under TSan (its inheritable arena lands
 * in TSan's reserved memory, Criterion issue #274), so that build puts this folder first on
 * the include path and links tests/support/runner/runner.c instead of libcriterion. The
 * same test sources compile against either.
 *
 * Provided: Test, TestSuite, ParameterizedTestParameters / ParameterizedTest with
 * cr_make_param_array; options .init, .fini, .timeout (seconds); cr_assert* (fatal: the
 * test stops, .fini still runs) and cr_expect* (the test goes on, and fails) in the forms
 * plain, _not, _eq, _neq, _lt, _leq, _gt, _geq, _null, _not_null, _str_eq, _str_neq,
 * _float_eq, _arr_eq; cr_assert_fail, cr_skip_test, cr_log_info. A message is optional and
 * must be a string literal (printf format). The runner: every test (every parameter) in a
 * forked child of its own, killed at its timeout; `--filter GLOB` on "suite/name". */
#ifndef SPECDEC_TESTS_RUNNER_CRITERION_H
#define SPECDEC_TESTS_RUNNER_CRITERION_H

#include <math.h>
#include <stddef.h>
#include <string.h>

/* Options of a test or suite; the first member only lets `{0, __VA_ARGS__}` be empty. */
typedef struct sdt_opts {
    int unused_;
    void (*init)(void);
    void (*fini)(void);
    double timeout;
} sdt_opts_t;

struct criterion_test_params {
    size_t size;   /* bytes of one parameter */
    void *params;  /* [length] */
    size_t length;
};

typedef struct sdt_test {
    const char *suite, *name;
    void (*fn)(void);                            /* a plain test */
    void (*pfn)(void *param);                    /* a parameterized test */
    struct criterion_test_params (*params)(void);
    sdt_opts_t opts;
    struct sdt_test *next;
} sdt_test_t;

void sdt_register_test(sdt_test_t *t);
void sdt_register_suite(const char *suite, const sdt_opts_t *opts);
/* An assertion failed: print it; fatal: end the test (its .fini runs). fmt starts with one
 * space (the macros' " " __VA_ARGS__: a message is optional), left out when printed. */
void sdt_fail(int fatal, const char *file, int line, const char *expr, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
void sdt_skip(const char *fmt, ...) /* fmt: as sdt_fail's */ __attribute__((format(printf, 1, 2), noreturn));
void sdt_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define cr_make_param_array(type, arr, len) \
    ((struct criterion_test_params){sizeof(type), (void *)(arr), (size_t)(len)})

#define SDT_REGISTER(suite, name, fn, pfn, params, ...)                                         \
    static sdt_test_t sdt_test_##suite##_##name = {#suite, #name, fn, pfn, params,             \
                                                   {0, __VA_ARGS__}, NULL};                   \
    __attribute__((constructor)) static void sdt_register_##suite##_##name(void)             \
    {                                                                                        \
        sdt_register_test(&sdt_test_##suite##_##name);                                       \
    }

#define Test(suite, name, ...)                                                                \
    static void sdt_fn_##suite##_##name(void);                                               \
    SDT_REGISTER(suite, name, sdt_fn_##suite##_##name, NULL, NULL, __VA_ARGS__)              \
    static void sdt_fn_##suite##_##name(void)

#define TestSuite(suite, ...)                                                                 \
    static const sdt_opts_t sdt_suite_##suite = {0, __VA_ARGS__};                            \
    __attribute__((constructor)) static void sdt_register_suite_##suite(void)                \
    {                                                                                        \
        sdt_register_suite(#suite, &sdt_suite_##suite);                                      \
    }

#define ParameterizedTestParameters(suite, name)                                              \
    static struct criterion_test_params sdt_params_##suite##_##name(void)

#define ParameterizedTest(param, suite, name, ...)                                            \
    static void sdt_pfn_##suite##_##name(param);                                             \
    static void sdt_pwrap_##suite##_##name(void *p) { sdt_pfn_##suite##_##name(p); }         \
    SDT_REGISTER(suite, name, NULL, sdt_pwrap_##suite##_##name, sdt_params_##suite##_##name,  \
                 __VA_ARGS__)                                                                \
    static void sdt_pfn_##suite##_##name(param)

/* ---- assertions --------------------------------------------------------------------- */

#define SDT_CHECK(fatal, cond, expr, ...)                                                     \
    do {                                                                                     \
        if (!(cond)) sdt_fail(fatal, __FILE__, __LINE__, expr, " " __VA_ARGS__);             \
    } while (0)

static inline int sdt_str_eq(const char *a, const char *b)
{
    return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

#define cr_assert(cond, ...) SDT_CHECK(1, cond, #cond, __VA_ARGS__)
#define cr_expect(cond, ...) SDT_CHECK(0, cond, #cond, __VA_ARGS__)
#define cr_assert_not(cond, ...) SDT_CHECK(1, !(cond), "!(" #cond ")", __VA_ARGS__)
#define cr_expect_not(cond, ...) SDT_CHECK(0, !(cond), "!(" #cond ")", __VA_ARGS__)
#define SDT_CMP(fatal, a, op, b, ...) SDT_CHECK(fatal, (a) op (b), #a " " #op " " #b, __VA_ARGS__)
#define cr_assert_eq(a, b, ...) SDT_CMP(1, a, ==, b, __VA_ARGS__)
#define cr_expect_eq(a, b, ...) SDT_CMP(0, a, ==, b, __VA_ARGS__)
#define cr_assert_neq(a, b, ...) SDT_CMP(1, a, !=, b, __VA_ARGS__)
#define cr_expect_neq(a, b, ...) SDT_CMP(0, a, !=, b, __VA_ARGS__)
#define cr_assert_lt(a, b, ...) SDT_CMP(1, a, <, b, __VA_ARGS__)
#define cr_expect_lt(a, b, ...) SDT_CMP(0, a, <, b, __VA_ARGS__)
#define cr_assert_leq(a, b, ...) SDT_CMP(1, a, <=, b, __VA_ARGS__)
#define cr_expect_leq(a, b, ...) SDT_CMP(0, a, <=, b, __VA_ARGS__)
#define cr_assert_gt(a, b, ...) SDT_CMP(1, a, >, b, __VA_ARGS__)
#define cr_expect_gt(a, b, ...) SDT_CMP(0, a, >, b, __VA_ARGS__)
#define cr_assert_geq(a, b, ...) SDT_CMP(1, a, >=, b, __VA_ARGS__)
#define cr_expect_geq(a, b, ...) SDT_CMP(0, a, >=, b, __VA_ARGS__)
#define cr_assert_null(p, ...) SDT_CHECK(1, (p) == NULL, #p " == NULL", __VA_ARGS__)
#define cr_expect_null(p, ...) SDT_CHECK(0, (p) == NULL, #p " == NULL", __VA_ARGS__)
#define cr_assert_not_null(p, ...) SDT_CHECK(1, (p) != NULL, #p " != NULL", __VA_ARGS__)
#define cr_expect_not_null(p, ...) SDT_CHECK(0, (p) != NULL, #p " != NULL", __VA_ARGS__)
#define cr_assert_str_eq(a, b, ...) SDT_CHECK(1, sdt_str_eq(a, b), #a " equals " #b, __VA_ARGS__)
#define cr_expect_str_eq(a, b, ...) SDT_CHECK(0, sdt_str_eq(a, b), #a " equals " #b, __VA_ARGS__)
#define cr_assert_str_neq(a, b, ...) SDT_CHECK(1, !sdt_str_eq(a, b), #a " differs from " #b, __VA_ARGS__)
#define cr_expect_str_neq(a, b, ...) SDT_CHECK(0, !sdt_str_eq(a, b), #a " differs from " #b, __VA_ARGS__)
#define SDT_NEAR(a, b, eps) (fabs((double)(a) - (double)(b)) <= (double)(eps))
#define cr_assert_float_eq(a, b, eps, ...) \
    SDT_CHECK(1, SDT_NEAR(a, b, eps), #a " == " #b " within " #eps, __VA_ARGS__)
#define cr_expect_float_eq(a, b, eps, ...) \
    SDT_CHECK(0, SDT_NEAR(a, b, eps), #a " == " #b " within " #eps, __VA_ARGS__)
#define cr_assert_arr_eq(a, b, size, ...) \
    SDT_CHECK(1, memcmp(a, b, size) == 0, #a " equals " #b " (" #size " bytes)", __VA_ARGS__)
#define cr_expect_arr_eq(a, b, size, ...) \
    SDT_CHECK(0, memcmp(a, b, size) == 0, #a " equals " #b " (" #size " bytes)", __VA_ARGS__)
#define cr_assert_fail(...) sdt_fail(1, __FILE__, __LINE__, "cr_assert_fail", " " __VA_ARGS__)
#define cr_skip_test(...) sdt_skip(" " __VA_ARGS__)
#define cr_log_info(...) sdt_log(__VA_ARGS__)

#endif
