/* `specdec launch` (N ranks of a command on this node) and `specdec commbench` (allreduce
 * latency and bus bandwidth of the chosen comm backend). */
#ifndef SPECDEC_APPS_LAUNCH_H
#define SPECDEC_APPS_LAUNCH_H

#include "core/check.h"

/* argv[1] is "launch". Exit codes: 0 every rank exited 0; the first failing rank's exit
 * code (128 + signal when it was killed; 128 + signal also when the launcher was
 * interrupted and every rank exited 0); 2 bad flags or run under mpirun; 1 the launcher
 * itself failed (fork, pipe). */
int cmd_launch(int argc, char **argv);

/* argv[1] is "commbench". Exit codes: 0 ok, 1 a result that differs from the rank-order
 * reference (MISMATCH; every rank exits 1), 2 bad flags, cli_exit_code() of a failed
 * collective (3 timeout, 5 peer lost, 1 other). */
int cmd_commbench(int argc, char **argv);

/* One "specdec: error: <fmt>" line on stderr; returns 0. */
int cli_error(const char *fmt, ...) SD_PRINTF(1, 2);

#endif
