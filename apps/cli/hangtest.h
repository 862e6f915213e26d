/* `specdec hangtest`: the hang-regression harness (apps/cli/hangtest.c). */
#ifndef SPECDEC_APPS_HANGTEST_H
#define SPECDEC_APPS_HANGTEST_H

/* argv[1] is "hangtest". Exit codes: 0 clean, 3 a collective timed out, 4 the ranks
 * diverged, 5 a rank died, 2 bad flags, 1 anything else. */
int cmd_hangtest(int argc, char **argv);

#endif
