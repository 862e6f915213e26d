/* Test helpers over cJSON values: the value at a dotted path ("choices.0.message.content"),
 * asserting it exists and has the expected type. Header-only: only the tests that link
 * cJSON (the serve tests) include it, while tests/support is linked into every test. */
#ifndef SPECDEC_TESTS_JSON_PATH_H
#define SPECDEC_TESTS_JSON_PATH_H

#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static inline const cJSON *at(const cJSON *v, const char *path)
{
    char buf[128];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *save = NULL, *key = strtok_r(buf, ".", &save); key; key = strtok_r(NULL, ".", &save)) {
        v = key[0] >= '0' && key[0] <= '9' ? cJSON_GetArrayItem(v, atoi(key))
                                            : cJSON_GetObjectItemCaseSensitive(v, key);
        cr_assert(v, "no %s", path);
    }
    return v;
}

static inline const char *str_at(const cJSON *v, const char *path)
{
    const cJSON *s = at(v, path);
    cr_assert(cJSON_IsString(s), "%s is not a string", path);
    return s->valuestring;
}

static inline double num_at(const cJSON *v, const char *path)
{
    const cJSON *n = at(v, path);
    cr_assert(cJSON_IsNumber(n), "%s is not a number", path);
    return n->valuedouble;
}

#endif
