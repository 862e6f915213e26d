/* fuzz_cli: `specdec bench` options (apps/cli/bench.c, included for its static parser). */
#define cmd_bench fuzz_cli_unused_cmd_bench
#include "apps/cli/bench.c"

#include "fuzz/fuzz.h"
#include "fuzz/fuzz_cli.h"

int fuzz_cli_bench(int argc, char **argv)
{
    bench_opts_t o;
    if (!parse_opts(argc, argv, &o)) return 0;
    FUZZ_CHECK(o.n_ks >= 1 && o.n_ks <= MAX_KS, "%d k values", o.n_ks);
    for (int i = 0; i < o.n_ks; i++) {
        FUZZ_CHECK(o.ks[i] >= 1 && o.ks[i] <= SD_SPEC_MAX_K, "k %d", o.ks[i]);
        for (int j = 0; j < i; j++) FUZZ_CHECK(o.ks[i] != o.ks[j], "k %d twice", o.ks[i]);
    }
    FUZZ_CHECK(o.n_drafters >= 1 && o.n_drafters <= MAX_DRAFTERS, "%d drafters", o.n_drafters);
    FUZZ_CHECK(o.repeats >= 1 && o.repeats <= MAX_REPEATS, "repeats %d", o.repeats);
    FUZZ_CHECK(o.gen.max_tokens >= 1, "-n %d", o.gen.max_tokens);
    return 1;
}
