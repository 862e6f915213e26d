/* fuzz_cli: `specdec hangtest` options (apps/cli/hangtest.c, included for its parser). */
#define cmd_hangtest fuzz_cli_unused_cmd_hangtest
#include "apps/cli/hangtest.c"

#include "fuzz/fuzz.h"
#include "fuzz/fuzz_cli.h"

int fuzz_cli_hangtest(int argc, char **argv)
{
    ht_opts_t o;
    int ok = ht_parse(argc, argv, &o);
    unsetenv("SPECDEC_COMM"); /* --comm sets it for the ranks */
    if (!ok) return 0;
    FUZZ_CHECK(o.ranks >= 1 && o.ranks <= 256, "--ranks %d", o.ranks);
    FUZZ_CHECK(o.draft_ranks >= 1 && o.draft_ranks <= o.ranks, "--draft-ranks %d of %d",
               o.draft_ranks, o.ranks);
    FUZZ_CHECK(o.steps >= 1 && o.steps <= 1 << 30, "--steps %d", o.steps);
    FUZZ_CHECK(o.n_threads >= 1 && o.n_threads <= 1024, "-t %d", o.n_threads);
    static const char *const no_value[] = {"--json", "--no-payload", NULL};
    const char *seed = fuzz_cli_last(argc, argv, "--seed", NULL, no_value);
    if (seed)
        FUZZ_CHECK(strspn(seed, "0123456789") == strlen(seed) && strtoull(seed, NULL, 10) == o.seed,
                   "--seed '%s' read as %llu", seed, (unsigned long long)o.seed);
    return 1;
}
