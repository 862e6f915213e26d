/* `specdec bench`: target-only vs speculative decoding on a prompt set (bench/prompts/),
 * per drafter and draft length k; a table on stdout and a JSON record (--json). */
#ifndef SPECDEC_APPS_BENCH_H
#define SPECDEC_APPS_BENCH_H

/* argv[1] is "bench". Exit codes: 0 ok, 1 model/IO error or a speculative output that
 * differs from target-only (MISMATCH), 2 bad flags. */
int cmd_bench(int argc, char **argv);

#endif
