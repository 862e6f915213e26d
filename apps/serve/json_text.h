/* What cJSON cannot tell about a request body: cJSON keeps strings NUL-terminated, so a
 * string holding U+0000 (the escape \u0000, or a raw NUL byte) would be cut there without a
 * word. json_find_nul finds such a string in the raw text so that the request is refused
 * with a 400 naming the field instead. */
#ifndef SPECDEC_APPS_SERVE_JSON_TEXT_H
#define SPECDEC_APPS_SERVE_JSON_TEXT_H

#include <stddef.h>

/* Scan JSON text body[len] (already parsed by cJSON, so well formed) for the first string,
 * key or value, that holds U+0000. Returns 0 when there is none; else 1 with its path in
 * path[cap] ("messages[0].content"; a key: "messages[0] (a key)"; key names cut to 32
 * bytes, bytes other than printable ASCII written as '?') and, in *at, the position of
 * the NUL in the string (0-based, in characters). */
int json_find_nul(const char *body, size_t len, char *path, size_t cap, size_t *at);

#endif
