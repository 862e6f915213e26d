/* --trace FILE.jsonl (run, chat, bench): every step of every generation as one JSON object
 * per line, written from sd_spec_config_t.on_step on rank 0 (the record: docs/python.md,
 * "Traces"; specdec.trace reads it). */
#ifndef SPECDEC_APPS_CLI_TRACE_H
#define SPECDEC_APPS_CLI_TRACE_H

#include <stdint.h>
#include <stdio.h>

#include "specdec/specdec.h"

typedef struct cli_trace {
    FILE *f;          /* NULL: not tracing (no --trace, or a rank > 0) */
    const char *path;
    int64_t gen;      /* the generation being traced: 0, 1, ... (steps restart at 0) */
    char run[512];    /* JSON members naming the run, each followed by a comma, or "" */
} cli_trace_t;

/* Open path (truncated) when rank is 0; 1 on success, else prints the error and returns 0.
 * path NULL: not tracing. */
int cli_trace_open(cli_trace_t *t, const char *path, int rank);
/* Point spec's on_step at the trace (nothing when not tracing). */
void cli_trace_attach(cli_trace_t *t, sd_spec_config_t *spec);
/* Members every following record carries: the prompt's name (NULL: none), the drafter's
 * --draft text, its k (0: none) and the repeat (-1: none). */
void cli_trace_label(cli_trace_t *t, const char *prompt, const char *drafter, int k, int repeat);
/* Close; 1 when every record was written, else prints the error and returns 0. */
int cli_trace_close(cli_trace_t *t);

/* s as a JSON string (quotes and escapes) into f. */
void cli_json_str(FILE *f, const char *s);

#endif
