/* Fuzz target: the command-line option parsers of `specdec` (apps/cli and apps/serve/
 * serve_main.c): run/chat/info (cli_parse_gen_opts), --draft (sd_spec_parse_drafter), bench,
 * commbench, hangtest, launch and serve.
 *
 * Input: NUL-separated fields; the first names the command (run, chat, info, draft, bench,
 * commbench, hangtest, launch, serve; anything else: run), the rest are its arguments.
 * Properties (every parser):
 *   - it accepts or refuses without crashing; a refusal prints an error starting
 *     "specdec: error: " and ending in a newline on stderr, an acceptance prints nothing;
 *   - an accepted value is in its documented range and is the value written — a number is
 *     read whole (a seed "-1" or " -1" is refused, never wrapped to 2^64 - 1), a list is
 *     never cut short (commbench --sizes), a name is kept whole (serve --model-id).
 * The command-specific checks are in fuzz_cli_<command>.c. */
#include <limits.h>

#include "apps/cli/cli.h"
#include "core/check.h"
#include "fuzz/fuzz.h"
#include "fuzz/fuzz_cli.h"

#define MAX_ARGS 64

const char *fuzz_cli_last(int argc, char **argv, const char *flag, const char *alias,
                          const char *const *no_value)
{
    const char *v = NULL;
    for (int i = 2; i < argc; i++) {
        int flag_only = 0;
        for (const char *const *p = no_value; p && *p; p++) flag_only |= !strcmp(argv[i], *p);
        if (flag_only) continue;
        if (i + 1 < argc && (!strcmp(argv[i], flag) || (alias && !strcmp(argv[i], alias))))
            v = argv[i + 1];
        i++;
    }
    return v;
}

int fuzz_cli_strict_int(const char *v, long long lo, long long hi, long long *out)
{
    const char *d = v + (v[0] == '-');
    if (!*d || strspn(d, "0123456789") != strlen(d)) return 0;
    while (d[0] == '0' && d[1]) d++; /* leading zeros are fine: "007" is 7 */
    if (strlen(d) > 18) return 0;
    long long x = strtoll(d, NULL, 10) * (v[0] == '-' ? -1 : 1);
    if (x < lo || x > hi) return 0;
    *out = x;
    return 1;
}

static const char *const gen_no_value[] = {"--special", "--ignore-eos", "--no-adaptive", "--stats", NULL};

static void check_int(int argc, char **argv, const char *flag, const char *alias, long long lo,
                      long long hi, long long got)
{
    const char *v = fuzz_cli_last(argc, argv, flag, alias, gen_no_value);
    if (!v) return;
    long long x;
    FUZZ_CHECK(fuzz_cli_strict_int(v, lo, hi, &x) && x == got,
               "%s '%s' accepted as %lld (range [%lld, %lld])", flag, v, got, lo, hi);
}

static int check_gen(int argc, char **argv)
{
    cli_gen_opts_t o;
    if (!cli_parse_gen_opts(argc, argv, 2, &o)) return 0;
    const sd_gen_config_t *g = &o.gen;
    check_int(argc, argv, "-n", "--n-predict", 1, INT_MAX, g->max_tokens);
    check_int(argc, argv, "-t", "--threads", 0, 1024, o.n_threads);
    check_int(argc, argv, "-c", "--ctx", 0, 1 << 20, o.n_ctx);
    check_int(argc, argv, "--top-k", NULL, 0, INT_MAX, g->top_k);
    check_int(argc, argv, "--k", NULL, 1, SD_SPEC_MAX_K, o.spec.k);
    const char *seed = fuzz_cli_last(argc, argv, "--seed", NULL, gen_no_value);
    if (seed) {
        FUZZ_CHECK(seed[0] >= '0' && seed[0] <= '9' && strspn(seed, "0123456789") == strlen(seed),
                   "--seed '%s' accepted as %llu", seed, (unsigned long long)g->seed);
        FUZZ_CHECK(strtoull(seed, NULL, 10) == g->seed, "--seed '%s' read as %llu", seed,
                   (unsigned long long)g->seed);
    }
    FUZZ_CHECK(g->temperature >= 0 && g->temperature <= 100, "--temp %g", (double)g->temperature);
    FUZZ_CHECK(g->top_p >= 0 && g->top_p <= 1 && g->min_p >= 0 && g->min_p <= 1, "top-p/min-p");
    FUZZ_CHECK(g->n_stop_strings <= 16, "%zu stops", g->n_stop_strings);
    return 1;
}

static int check_draft(const char *v)
{
    sd_spec_config_t spec;
    sd_spec_config_default(&spec);
    const char *path = NULL;
    sd_clear_error();
    sd_status_t s = sd_spec_parse_drafter(v, &spec, &path);
    if (s != SD_OK) {
        FUZZ_CHECK(s == SD_ERR_INVALID_ARG && sd_last_error()[0], "--draft '%s': %s", v,
                   sd_status_string(s));
        return 0;
    }
    FUZZ_CHECK(spec.drafter != SD_DRAFTER_NONE, "--draft '%s' gave no drafter", v);
    FUZZ_CHECK(!path || path[0], "--draft '%s' gave an empty model path", v);
    FUZZ_CHECK(sd_drafter_kind_name(spec.drafter) != NULL, "--draft '%s'", v);
    return 1;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    setenv("SPECDEC_LOG", "error", 1);
    unsetenv("SPECDEC_LAUNCH_GRACE_MS");
    unsetenv("SPECDEC_COMM");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_in_t in = {data, size};
    char *args[MAX_ARGS + 2];
    int argc = 0;
    args[argc++] = fuzz_strndup((const uint8_t *)"specdec", 7);
    while (in.n > 0 && argc < MAX_ARGS) {
        const uint8_t *f;
        size_t len = fuzz_field(&in, 0, &f);
        args[argc++] = fuzz_strndup(f, len);
    }
    if (argc < 2) args[argc++] = fuzz_strndup((const uint8_t *)"run", 3);
    args[argc] = NULL;
    char **argv = malloc((size_t)(argc + 1) * sizeof *argv); /* parsers may keep pointers */
    if (!argv) abort();
    memcpy(argv, args, (size_t)(argc + 1) * sizeof *argv);

    char *err = NULL;
    size_t err_len = 0;
    FILE *saved = stderr, *capture = open_memstream(&err, &err_len);
    if (!capture) abort();
    stderr = capture;
    const char *cmd = argv[1];
    int ok;
    if (!strcmp(cmd, "draft")) ok = argc > 2 ? check_draft(argv[2]) : 1;
    else if (!strcmp(cmd, "bench")) ok = fuzz_cli_bench(argc, argv);
    else if (!strcmp(cmd, "commbench")) ok = fuzz_cli_commbench(argc, argv);
    else if (!strcmp(cmd, "hangtest")) ok = fuzz_cli_hangtest(argc, argv);
    else if (!strcmp(cmd, "launch")) ok = fuzz_cli_launch(argc, argv);
    else if (!strcmp(cmd, "serve")) ok = fuzz_cli_serve(argc, argv);
    else ok = check_gen(argc, argv);
    stderr = saved;
    fclose(capture);
    if (strcmp(cmd, "draft") != 0) { /* sd_spec_parse_drafter reports through sd_last_error */
        if (ok)
            FUZZ_CHECK(err_len == 0, "%s accepted its arguments but printed '%s'", cmd, err);
        else
            FUZZ_CHECK(err_len > 16 && !strncmp(err, "specdec: error: ", 16) && err[err_len - 1] == '\n',
                       "%s refused its arguments with '%s'", cmd, err);
    }
    free(err);
    for (int i = 0; i < argc; i++) free(args[i]);
    free(argv);
    return 0;
}
