/* The parts of fuzz_cli: each fuzz_cli_<command>.c includes that command's source (its
 * option parser is static) and checks one parse of argv; fuzz_cli.c dispatches. */
#ifndef SPECDEC_TESTS_FUZZ_FUZZ_CLI_H
#define SPECDEC_TESTS_FUZZ_FUZZ_CLI_H

#include <stdint.h>

/* Each returns 1 when the parser accepted argv (its values then checked), 0 when refused. */
int fuzz_cli_bench(int argc, char **argv);
int fuzz_cli_commbench(int argc, char **argv);
int fuzz_cli_hangtest(int argc, char **argv);
int fuzz_cli_launch(int argc, char **argv);
int fuzz_cli_serve(int argc, char **argv);

/* The value the last `flag VALUE` pair (flag or its alias, which may be NULL) of argv[2..]
 * gives, or NULL. Options that take no value are listed in no_value (NULL-terminated) so they
 * are skipped, as the parsers skip them. */
const char *fuzz_cli_last(int argc, char **argv, const char *flag, const char *alias,
                          const char *const *no_value);
/* A strict reading of a decimal integer: optional '-', then digits only, in [lo, hi]. */
int fuzz_cli_strict_int(const char *v, long long lo, long long hi, long long *out);

#endif
