/* `specdec serve` in a build configured without libmicrohttpd or libcjson: says so. */
#include <stdio.h>

#include "serve.h"

int cmd_serve(int argc, char **argv)
{
    (void)argc, (void)argv;
    fprintf(stderr, "specdec: error: serve: %s: this build has no HTTP server (libmicrohttpd "
                    "and libcjson were not found when it was configured; run "
                    "scripts/install-deps.sh and configure again)\n",
            sd_status_string(SD_ERR_NOT_BUILT));
    return CLI_EXIT_ERROR;
}
