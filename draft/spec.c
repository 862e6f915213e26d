/* What the registry (draft/registry.h) answers about an sd_spec_config_t: the row of a
 * kind, the --draft parser, the text of a spec and the help line; and the default spec.
 *
 * Defaults (sd_spec_config_default): no drafter, n-gram lengths 1..3, k = 4, adaptive on
 * with min_confidence 0.3, layerskip_layers 0 (a layer-skip drafter then runs n_layer / 2). */
#include <errno.h>
#include <limits.h>
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
    config->tree_sample = SD_TREE_SAMPLE_TOP;
}

int sd_spec_tree_nodes(const sd_spec_config_t *spec)
{
    if (spec->tree_levels <= 0) return spec->tree_budget > 0 ? spec->tree_budget : 0;
    long total = 0, level = 1;
    for (int d = 0; d < spec->tree_levels && d < SD_SPEC_MAX_K; d++) {
        level *= spec->tree_width[d] > 0 ? spec->tree_width[d] : 0;
        level = level < INT_MAX / 2 ? level : INT_MAX / 2;
        total += level;
        total = total < INT_MAX / 2 ? total : INT_MAX / 2;
    }
    return (int)total;
}

/* "dynamic:N" into *budget; SD_ERR_INVALID_ARG naming N. */
static sd_status_t parse_dynamic(const char *text, const char *n, int *budget)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(n, &end, 10);
    if (*n < '0' || *n > '9' || *end != '\0' || errno != 0 || v < 1 || v > SD_SPEC_TREE_MAX_NODES)
        return sd_set_error(SD_ERR_INVALID_ARG, "--tree '%s': node budget '%s' must be in [1, %d]",
                            text, n, SD_SPEC_TREE_MAX_NODES);
    *budget = (int)v;
    return SD_OK;
}

sd_status_t sd_spec_parse_tree(const char *text, sd_spec_config_t *spec)
{
    if (text == NULL || spec == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG, "sd_spec_parse_tree: NULL argument");
    sd_spec_config_t t = *spec;
    t.tree_levels = t.tree_budget = 0;
    memset(t.tree_width, 0, sizeof t.tree_width);
    if (!strcmp(text, "chain")) {
        *spec = t;
        return SD_OK;
    }
    if (!strncmp(text, "dynamic:", 8)) {
        SD_CHECK(parse_dynamic(text, text + 8, &t.tree_budget));
        *spec = t;
        return SD_OK;
    }
    for (const char *p = text;;) {
        char *end = NULL;
        errno = 0;
        long w = strtol(p, &end, 10);
        if (*p < '0' || *p > '9' || end == p || errno != 0 || w < 1 || w > SD_SPEC_TREE_MAX_NODES)
            return sd_set_error(SD_ERR_INVALID_ARG, "--tree '%s': width '%.*s' at level %d must be "
                                "in [1, %d] (shapes: WxWx..., e.g. 4x2x2x1; dynamic:N; chain)",
                                text, (int)strcspn(p, "x"), p, t.tree_levels + 1,
                                SD_SPEC_TREE_MAX_NODES);
        if (t.tree_levels == SD_SPEC_MAX_K)
            return sd_set_error(SD_ERR_INVALID_ARG, "--tree '%s': more than %d levels", text,
                                SD_SPEC_MAX_K);
        t.tree_width[t.tree_levels++] = (int)w;
        if (*end == '\0') break;
        if (*end != 'x')
            return sd_set_error(SD_ERR_INVALID_ARG, "--tree '%s': '%c' where 'x' or the end was "
                                "expected", text, *end);
        p = end + 1;
    }
    int nodes = sd_spec_tree_nodes(&t);
    if (nodes > SD_SPEC_TREE_MAX_NODES)
        return sd_set_error(SD_ERR_INVALID_ARG, "--tree '%s' has %d nodes, more than %d", text,
                            nodes, SD_SPEC_TREE_MAX_NODES);
    *spec = t;
    return SD_OK;
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
