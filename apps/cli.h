/* Shared pieces of the `specdec` command: option parsing helpers and model loading. */
#ifndef SPECDEC_APPS_CLI_H
#define SPECDEC_APPS_CLI_H

#include <stdint.h>

#include "specdec/specdec.h"

/* Options common to `run` and `chat`. */
typedef struct cli_gen_opts {
    const char *model_path; /* NULL = default model */
    const char *prompt;
    int n_threads, n_ctx;
    int parse_special;
    const char *stops[16];
    sd_gen_config_t gen;
    sd_spec_config_t spec;  /* --draft, --k, --no-adaptive */
    const char *draft_path; /* --draft PATH: a draft model, loaded by cli_load_draft */
    int stats;              /* --stats: speculative statistics to stderr */
} cli_gen_opts_t;

/* Option values: on bad input print one "specdec: error: FLAG expects ..." line, return 0. */
int cli_parse_int(const char *flag, const char *v, long lo, long hi, int *out);
int cli_parse_float(const char *flag, const char *v, float lo, float hi, float *out);
int cli_parse_seed(const char *v, uint64_t *out);

/* Print "specdec: error: ..." for a failed call; returns 1 (the exit code). */
int cli_fail(const char *what, sd_status_t s);
/* Parse argv[first..] into opts; prints a one-line error and returns 0 on bad input. */
int cli_parse_gen_opts(int argc, char **argv, int first, cli_gen_opts_t *opts);
/* Load opts->model_path or the default model (fetched by scripts/fetch-model.sh);
 * prints the error line itself on failure. */
sd_status_t cli_load_model(const cli_gen_opts_t *opts, sd_model_t **out);
/* --draft PATH: load the draft model into opts->spec.draft_model (nothing to do for other
 * drafters); prints the error line itself on failure. Free it with cli_free_draft. */
sd_status_t cli_load_draft(cli_gen_opts_t *opts);
void cli_free_draft(cli_gen_opts_t *opts);
/* Generate from text, streaming to stdout; statistics to stderr. */
int cli_generate_text(sd_model_t *m, const char *text, int flags, const cli_gen_opts_t *opts,
                      char **reply);

int cmd_run(int argc, char **argv);
int cmd_chat(int argc, char **argv);

#endif
