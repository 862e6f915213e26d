/* Shared pieces of the `specdec` command: option parsing helpers and model loading. */
#ifndef SPECDEC_APPS_CLI_H
#define SPECDEC_APPS_CLI_H

#include <stdint.h>
#include <stdio.h>

#include "specdec/specdec.h"
#include "trace.h"

/* Options common to `run` and `chat`. */
typedef struct cli_gen_opts {
    const char *model_path; /* NULL = default model */
    const char *prompt;
    int n_threads, n_ctx;
    const char *device;     /* --device cpu|cuda|cuda:N|auto; NULL = SPECDEC_DEVICE or auto */
    int parse_special;
    const char *stops[16];
    sd_gen_config_t gen;
    sd_spec_config_t spec;  /* --draft, --k, --no-adaptive */
    const char *draft_path; /* --draft PATH: a draft model, loaded by cli_load_draft */
    int stats;              /* --stats: speculative statistics to stderr */
    const char *trace_path; /* --trace FILE.jsonl: every step (cli_start_trace) */
    cli_trace_t trace;
    const char *logprobs_file; /* --logprobs-file PATH (with --logprobs N); NULL: stderr */
    /* tensor parallelism: under `specdec launch -n N` or mpirun the target is split over
     * the world; --draft-ranks D puts a draft model on the first D ranks only */
    sd_comm_t *world;       /* NULL on a single rank */
    sd_comm_t *draft_comm;  /* the draft group when D > 1 (NULL on ranks >= D) */
} cli_gen_opts_t;

/* Exit codes of the specdec command (documented in the README). */
enum {
    CLI_EXIT_OK = 0,
    CLI_EXIT_ERROR = 1,      /* any other failure */
    CLI_EXIT_USAGE = 2,      /* bad command line */
    CLI_EXIT_TIMEOUT = 3,    /* SD_ERR_COMM_TIMEOUT: a collective passed its deadline */
    CLI_EXIT_DIVERGENCE = 4, /* SD_ERR_RANK_DIVERGENCE: ranks disagreed on a token */
    CLI_EXIT_PEER_LOST = 5,  /* SD_ERR_PEER_LOST: another rank died */
};
/* The exit code for a failed status. */
int cli_exit_code(sd_status_t s);

/* Option values: on bad input print one "specdec: error: FLAG expects ..." line, return 0. */
int cli_parse_int(const char *flag, const char *v, long lo, long hi, int *out);
int cli_parse_float(const char *flag, const char *v, float lo, float hi, float *out);
int cli_parse_seed(const char *v, uint64_t *out);

/* --draft v (sd_spec_parse_drafter) into spec and *model_path; on bad input print one
 * "specdec: error: --draft: ..." line, return 0. */
int cli_parse_draft(const char *v, sd_spec_config_t *spec, const char **model_path);
/* --tree V (sd_spec_parse_tree); 0 with the error printed. */
int cli_parse_tree(const char *v, sd_spec_config_t *spec);
/* --tree-sample q|top into *out; 0 after printing the error line. */
int cli_parse_tree_sample(const char *v, sd_tree_sample_t *out);
/* printf(usage, the --draft forms of every drafter): usage has one %s and no other %. */
void cli_print_usage(const char *usage);
void cli_fprint_usage(FILE *f, const char *usage); /* the same to f */

/* Print "specdec: error: ..." for a failed call; returns cli_exit_code(s). */
int cli_fail(const char *what, sd_status_t s);
/* Parse argv[first..] into opts; prints a one-line error and returns 0 on bad input. */
int cli_parse_gen_opts(int argc, char **argv, int first, cli_gen_opts_t *opts);
/* Under `specdec launch` / mpirun, join the world (opts->world, its backend chosen for
 * opts->device) unless joined already; NULL for a single rank. Prints the error line. */
sd_status_t cli_join_world(cli_gen_opts_t *opts);
/* Load opts->model_path or the default model (fetched by scripts/fetch-model.sh); under
 * `specdec launch` / mpirun first joins the world (opts->world) and loads this rank's
 * shard. Prints the error line itself on failure. */
sd_status_t cli_load_model(cli_gen_opts_t *opts, sd_model_t **out);
/* --draft PATH: load the draft model into opts->spec.draft_model (nothing to do for other
 * drafters; with --draft-ranks D under TP only ranks < D load it, split over the first D
 * ranks); prints the error line itself on failure. */
sd_status_t cli_load_draft(cli_gen_opts_t *opts);
/* --trace: open the trace on rank 0 and attach it to opts->spec, its records naming the
 * drafter (resolved against m); prints the error line itself and returns 0 on failure. */
int cli_start_trace(cli_gen_opts_t *opts, const sd_model_t *m);
/* Close the trace: rc, or CLI_EXIT_ERROR when rc is 0 but the trace could not be written. */
int cli_stop_trace(cli_gen_opts_t *opts, int rc);
/* Free the draft model and the communicators (after the target model is freed); closes
 * a trace still open. */
void cli_release(cli_gen_opts_t *opts);
/* Generate from text, streaming to stdout; statistics to stderr. */
int cli_generate_text(sd_model_t *m, const char *text, int flags, const cli_gen_opts_t *opts,
                      char **reply);
/* The same from prompt token ids[n]. */
int cli_generate_ids(sd_model_t *m, const int32_t *ids, size_t n, const cli_gen_opts_t *opts,
                     char **reply);

int cmd_run(int argc, char **argv);
int cmd_chat(int argc, char **argv);

#endif
