/* /tokenize and /detokenize (tokenize_api.h). */
#include "tokenize_api.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/unicode.h"

/* A 400 about param (or a 500 when param is NULL); returns NULL. */
static char *fail(oai_error_t *e, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static char *fail(oai_error_t *e, const char *param, const char *fmt, ...)
{
    *e = (oai_error_t){.http_status = param ? 400 : 500,
                       .type = param ? "invalid_request_error" : "server_error", .param = param};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return NULL;
}

static char *out_of_memory(oai_error_t *e)
{
    return fail(e, NULL, "out of memory");
}

/* An optional boolean field; 0 after filling *e when it is not a boolean. */
static int get_flag(const cJSON *root, const char *name, int *out, oai_error_t *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, name);
    if (!v || cJSON_IsNull(v)) return 1;
    if (cJSON_IsBool(v)) return *out = cJSON_IsTrue(v), 1;
    char *text = cJSON_PrintUnformatted(v);
    fail(e, name, "%s must be a boolean, got %.40s", name, text ? text : "?");
    free(text);
    return 0;
}

static int whole_utf8(const char *s, size_t n)
{
    size_t adv;
    for (size_t i = 0; i < n; i += adv) {
        uint32_t cp = sd_utf8_decode((const uint8_t *)s + i, n - i, &adv);
        if (cp == 0 || cp >= SD_UTF8_INVALID) return 0;
    }
    return 1;
}

/* {"id": id, "piece": text or [bytes]} */
static cJSON *piece_item(const sd_model_t *model, int32_t id)
{
    char buf[256];
    size_t n = 0;
    if (sd_detokenize(model, &id, 1, buf, sizeof buf, &n) != SD_OK) return NULL;
    cJSON *item = cJSON_CreateObject(), *piece = NULL;
    if (whole_utf8(buf, n)) {
        piece = oai_json_text(buf, n);
    } else if ((piece = cJSON_CreateArray())) {
        for (size_t i = 0; i < n; i++)
            cJSON_AddItemToArray(piece, cJSON_CreateNumber((unsigned char)buf[i]));
    }
    if (!item || !piece) return cJSON_Delete(item), cJSON_Delete(piece), NULL;
    cJSON_AddNumberToObject(item, "id", id);
    cJSON_AddItemToObject(item, "piece", piece);
    return item;
}

static char *print(cJSON *root, oai_error_t *e)
{
    char *text = root ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    return text ? text : out_of_memory(e);
}

char *tokenize_api_tokenize(const oai_model_t *m, const char *body, size_t len, oai_error_t *e)
{
    cJSON *root = NULL;
    memset(e, 0, sizeof *e);
    if (oai_parse_json(body, len, &root, e) != SD_OK) return cJSON_Delete(root), NULL;
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(root, "content");
    int add_special = 0, parse_special = m->parse_special, with_pieces = 0;
    if (!cJSON_IsString(content))
        return cJSON_Delete(root), fail(e, "content", "content must be a string");
    if (!get_flag(root, "add_special", &add_special, e) ||
        !get_flag(root, "parse_special", &parse_special, e) ||
        !get_flag(root, "with_pieces", &with_pieces, e))
        return cJSON_Delete(root), NULL;
    size_t n_text = strlen(content->valuestring), n = 0;
    int32_t *ids = malloc((n_text + 2) * sizeof *ids); /* a token covers a byte or more */
    int flags = (add_special ? SD_TOKENIZE_ADD_BOS : 0) |
                (parse_special ? SD_TOKENIZE_PARSE_SPECIAL : 0);
    sd_status_t st = ids ? sd_tokenize(m->model, content->valuestring, n_text, flags, ids,
                                       n_text + 2, &n)
                         : SD_ERR_OUT_OF_MEMORY;
    cJSON_Delete(root);
    if (st != SD_OK) {
        free(ids);
        return fail(e, NULL, "tokenize: %s: %s", sd_status_string(st), sd_last_error());
    }
    cJSON *out = cJSON_CreateObject(), *tokens = cJSON_AddArrayToObject(out, "tokens");
    for (size_t i = 0; tokens && i < n; i++) {
        cJSON *item = with_pieces ? piece_item(m->model, ids[i]) : cJSON_CreateNumber(ids[i]);
        if (!item || !cJSON_AddItemToArray(tokens, item)) {
            cJSON_Delete(item);
            tokens = NULL;
        }
    }
    free(ids);
    if (!tokens) return cJSON_Delete(out), out_of_memory(e);
    return print(out, e);
}

char *tokenize_api_detokenize(const oai_model_t *m, const char *body, size_t len, oai_error_t *e)
{
    cJSON *root = NULL;
    memset(e, 0, sizeof *e);
    if (oai_parse_json(body, len, &root, e) != SD_OK) return cJSON_Delete(root), NULL;
    const cJSON *tokens = cJSON_GetObjectItemCaseSensitive(root, "tokens"), *t;
    if (!cJSON_IsArray(tokens))
        return cJSON_Delete(root), fail(e, "tokens", "tokens must be an array of token ids");
    size_t n = (size_t)cJSON_GetArraySize(tokens), i = 0;
    int32_t *ids = malloc((n + 1) * sizeof *ids);
    if (!ids) return cJSON_Delete(root), out_of_memory(e);
    cJSON_ArrayForEach(t, tokens) {
        if (!cJSON_IsNumber(t) || t->valuedouble != floor(t->valuedouble) || t->valuedouble < 0 ||
            t->valuedouble >= m->n_vocab) {
            char *text = cJSON_PrintUnformatted(t);
            fail(e, "tokens", "tokens[%zu] must be a token id in [0, %d), got %.40s", i,
                 m->n_vocab, text ? text : "?");
            free(text), free(ids), cJSON_Delete(root);
            return NULL;
        }
        ids[i++] = (int32_t)t->valuedouble;
    }
    cJSON_Delete(root);
    size_t bytes = 0;
    sd_status_t st = sd_detokenize(m->model, ids, n, NULL, 0, &bytes);
    char *text = (st == SD_OK || st == SD_ERR_BUFFER_TOO_SMALL) ? malloc(bytes + 1) : NULL;
    if (text) st = sd_detokenize(m->model, ids, n, text, bytes + 1, &bytes);
    free(ids);
    if (!text || st != SD_OK) {
        free(text);
        return fail(e, NULL, "detokenize: %s: %s", sd_status_string(st), sd_last_error());
    }
    cJSON *out = cJSON_CreateObject(), *content = oai_json_text(text, bytes);
    free(text);
    if (!out || !content) return cJSON_Delete(out), cJSON_Delete(content), out_of_memory(e);
    cJSON_AddItemToObject(out, "content", content);
    return print(out, e);
}
