/* fuzz_cli: `specdec commbench` options (apps/cli/commbench.c, included for its parser). */
#define cmd_commbench fuzz_cli_unused_cmd_commbench
#include "apps/cli/commbench.c"

#include "fuzz/fuzz.h"
#include "fuzz/fuzz_cli.h"

/* --sizes read independently: tokens split by single commas, each digits (leading zeros
 * allowed) with an optional K or M, in [1, 1 GiB]. Returns the count, or -1 where the list
 * is not that. */
static int strict_sizes(const char *v, long *out)
{
    int n = 0;
    for (const char *p = v;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        size_t digits = strspn(p, "0123456789"), zeros = strspn(p, "0");
        if (zeros == digits && zeros > 0) zeros--; /* leading zeros are fine: "0004" is 4 */
        if (digits == 0 || digits - zeros > 10 || n == MAX_SIZES) return -1;
        long mult = 1;
        if (digits + 1 == len && (p[digits] == 'K' || p[digits] == 'M'))
            mult = p[digits] == 'K' ? 1024 : 1024 * 1024;
        else if (digits != len)
            return -1;
        long x = strtol(p, NULL, 10);
        if (x < 1 || x > MAX_BYTES / mult) return -1;
        out[n++] = x * mult;
        if (!comma) return n;
        p = comma + 1;
    }
}

int fuzz_cli_commbench(int argc, char **argv)
{
    cb_opts_t o;
    if (!parse_cb_opts(argc, argv, &o)) return 0;
    size_t es = sd_comm_dtype_size(o.dt);
    FUZZ_CHECK(o.n_sizes >= 1 && o.n_sizes <= MAX_SIZES, "%d sizes", o.n_sizes);
    for (int i = 0; i < o.n_sizes; i++)
        FUZZ_CHECK(o.sizes[i] >= 1 && o.sizes[i] <= MAX_BYTES && o.sizes[i] % (long)es == 0,
                   "size %ld", o.sizes[i]);
    const char *v = fuzz_cli_last(argc, argv, "--sizes", NULL, NULL);
    if (v) {
        long want[MAX_SIZES];
        int n = strict_sizes(v, want);
        FUZZ_CHECK(n == o.n_sizes && memcmp(want, o.sizes, (size_t)n * sizeof *want) == 0,
                   "--sizes '%.80s...' (%zu characters) read as %d sizes, strictly %d", v,
                   strlen(v), o.n_sizes, n);
    }
    FUZZ_CHECK(o.iters == AUTO || (o.iters >= 1 && o.iters <= 1000000), "iters %d", o.iters);
    return 1;
}
