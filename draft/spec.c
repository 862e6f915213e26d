/* What the registry (draft/registry.h) answers about an sd_spec_config_t: the row of a
 * kind, the --draft parser, the text of a spec and the help line; and the default spec.
 *
 * Defaults (sd_spec_config_default): no drafter, n-gram lengths 1..3, k = 4, adaptive on
 * with min_confidence 0.3, layerskip_layers 0 (a layer-skip drafter then runs n_layer / 2). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "draft/registry.h"

#define SPEC_MSG_LEN 512

void sd_spec_config_default(sd_spec_config_t *config)
{
    if (config == NULL)
        return;
    memset(config, 0, sizeof *config);
    config->drafter = SD_DRAFTER_NONE;
    config->ngram_min = 1;
    config->ngram_max = 3;
    config->k = 4;
    config->adaptive = 1;
    config->min_confidence = 0.3f;
}

const sd_drafter_row_t *sd_drafter_row_for(sd_drafter_kind_t kind)
{
    for (int i = 0; i < sd_drafter_registry_len; i++)
        if (sd_drafter_registry[i].kind == kind)
            return &sd_drafter_registry[i];
    return NULL;
}

sd_status_t sd_drafter_row_get(sd_drafter_kind_t kind, const sd_drafter_row_t **row)
{
    *row = sd_drafter_row_for(kind);
    if (*row == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG, "spec drafter = %d is not a drafter kind", (int)kind);
    return SD_OK;
}

sd_status_t sd_drafter_parse_int(const char *text, const char *arg, const char *what, long lo,
                                 long hi, int *out)
{
    char *end;
    errno = 0;
    long x = strtol(arg, &end, 10);
    if (errno || end == arg || *end || x < lo || x > hi)
        return sd_set_error(SD_ERR_INVALID_ARG, "drafter '%s': %s must be an integer in [%ld, %ld]",
                            text, what, lo, hi);
    *out = (int)x;
    return SD_OK;
}

const char *sd_drafter_kind_name(sd_drafter_kind_t kind)
{
    if (kind == SD_DRAFTER_NONE)
        return "none";
    const sd_drafter_row_t *row = sd_drafter_row_for(kind);
    return row ? row->name : NULL;
}

void sd_spec_drafter_usage(char *buf, size_t cap)
{
    size_t n = 0;
    buf[0] = '\0';
    for (int i = 0; i < sd_drafter_registry_len && n < cap; i++) {
        int w = snprintf(buf + n, cap - n, "%s%s", i ? " | " : "", sd_drafter_registry[i].usage);
        n += w > 0 ? (size_t)w : 0;
    }
}

/* text by the row its first word names ("ngram" in "ngram:4"), else by the row that takes
 * any text. */
static sd_status_t parse_by_row(const char *text, sd_spec_config_t *spec, const char **model_path)
{
    const char *colon = strchr(text, ':');
    size_t len = colon ? (size_t)(colon - text) : strlen(text);
    const sd_drafter_row_t *any = NULL;
    for (int i = 0; i < sd_drafter_registry_len; i++) {
        const sd_drafter_row_t *row = &sd_drafter_registry[i];
        if (strlen(row->name) == len && memcmp(row->name, text, len) == 0)
            return row->parse(text, colon ? colon + 1 : NULL, spec, model_path);
        if (row->takes_any_text)
            any = row;
    }
    if (any == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG, "drafter '%s' is not known", text);
    return any->parse(text, text, spec, model_path);
}

sd_status_t sd_spec_parse_drafter(const char *text, sd_spec_config_t *spec, const char **model_path)
{
    const char *path = NULL;
    if (text == NULL || spec == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG, "drafter text: text and spec must be non-NULL");
    sd_status_t st = text[0] ? parse_by_row(text, spec, model_path ? model_path : &path)
                             : sd_set_error(SD_ERR_INVALID_ARG, "drafter '': the text is empty");
    if (st == SD_OK)
        return SD_OK;
    char msg[SPEC_MSG_LEN], forms[SPEC_MSG_LEN / 2];
    snprintf(msg, sizeof msg, "%s", sd_last_error());
    sd_spec_drafter_usage(forms, sizeof forms);
    return sd_set_error(st, "%s (drafters: %s)", msg, forms);
}

sd_status_t sd_spec_drafter_text(const sd_spec_config_t *spec, const sd_model_t *target,
                                 char *buf, size_t cap)
{
    if (spec == NULL || buf == NULL || cap == 0)
        return sd_set_error(SD_ERR_INVALID_ARG, "drafter text: spec and a buffer are needed");
    const sd_drafter_row_t *row;
    SD_CHECK(sd_drafter_row_get(spec->drafter, &row));
    return row->text(spec, target, buf, cap);
}
