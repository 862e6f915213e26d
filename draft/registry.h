/* The drafter registry: one row per drafter kind (the table: draft/registry.c; each row's
 * functions: that drafter's own file). docs/design-notes.md, "Drafters: one registry row each". */
#ifndef SPECDEC_DRAFT_REGISTRY_H
#define SPECDEC_DRAFT_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include "core/check.h"
#include "draft/drafter.h"
#include "model/model.h"
#include "specdec/specdec.h"

#define SD_DRAFTER_HASH_WORDS 4 /* the most words a row adds to a request's hash */

typedef struct sd_drafter_row {
    const char *name;       /* the --draft word: "ngram" */
    sd_drafter_kind_t kind; /* its spec->drafter value */
    const char *usage;      /* its --draft forms for help texts: "ngram[:N]" */
    int takes_any_text;     /* 1 for the one row that takes --draft text naming no drafter
                               as its argument (a draft model's path) */
    /* text: the whole --draft text (for messages); arg: what follows "name:", or NULL for
     * the bare name (the whole text for takes_any_text). Sets spec->drafter and this
     * drafter's fields, and *model_path (NULL unless a file is to be loaded).
     * SD_ERR_INVALID_ARG naming text. */
    sd_status_t (*parse)(const char *text, const char *arg, sd_spec_config_t *spec,
                         const char **model_path);
    /* This drafter's fields of spec; SD_ERR_INVALID_ARG naming the field. */
    sd_status_t (*check)(const sd_spec_config_t *spec);
    /* The drafter spec asks for, begun on nothing; collective over target->comm when the
     * drafter is (a draft group). Errors as the drafter's constructor. */
    sd_status_t (*make)(sd_model_t *target, const sd_spec_config_t *spec, sd_drafter_t **out);
    /* This drafter's fields of spec as words[0 .. return) for a request's hash. */
    int (*hash_words)(const sd_spec_config_t *spec, int32_t words[SD_DRAFTER_HASH_WORDS]);
    /* The --draft text giving spec (sd_spec_drafter_text) into buf[cap]. */
    sd_status_t (*text)(const sd_spec_config_t *spec, const sd_model_t *target, char *buf,
                        size_t cap);
    /* 1 when its drafters propose without running a model (their ops' proposes_cheaply). */
    int proposes_cheaply;
    /* Runs a model (NULL: it runs none): the model and layer count (0: all) a batched draft
     * forward runs for spec over target, or NULL when its drafters propose one request
     * at a time (a draft model on a draft group). */
    const sd_model_t *(*batch_model)(const sd_model_t *target, const sd_spec_config_t *spec,
                                     int *n_layers);
} sd_drafter_row_t;

extern const sd_drafter_row_t sd_drafter_registry[];
extern const int sd_drafter_registry_len;

/* The row of kind, or NULL (SD_DRAFTER_NONE, unknown values). */
const sd_drafter_row_t *sd_drafter_row_for(sd_drafter_kind_t kind);
/* The same as a status: SD_ERR_INVALID_ARG naming kind when it has no row. */
sd_status_t sd_drafter_row_get(sd_drafter_kind_t kind, const sd_drafter_row_t **row);

/* For row parsers: arg as a decimal integer in [lo, hi] into *out, else SD_ERR_INVALID_ARG
 * "drafter 'text': what must be an integer in [lo, hi]". */
sd_status_t sd_drafter_parse_int(const char *text, const char *arg, const char *what, long lo,
                                 long hi, int *out);

#endif
