/* fuzz_cli: `specdec launch` options (apps/cli/launch.c, included for its parser). */
#define cmd_launch fuzz_cli_unused_cmd_launch
#define cli_error fuzz_cli_launch_cli_error
#include "apps/cli/launch.c"

#include "fuzz/fuzz.h"
#include "fuzz/fuzz_cli.h"

int fuzz_cli_launch(int argc, char **argv)
{
    launch_t l;
    memset(&l, 0, sizeof l);
    if (!parse_launch_args(argc, argv, &l)) return 0;
    FUZZ_CHECK(l.n >= 1 && l.n <= LAUNCH_MAX_RANKS, "-n %d", l.n);
    FUZZ_CHECK(l.cmd > argv + 1 && l.cmd < argv + argc && l.cmd[0] != NULL, "no command");
    return 1;
}
