/* POST /tokenize and POST /detokenize in llama-server's shapes (routes.c answers with them):
 * a client can see the token ids a text becomes, and the text ids stand for. */
#ifndef SPECDEC_APPS_SERVE_TOKENIZE_API_H
#define SPECDEC_APPS_SERVE_TOKENIZE_API_H

#include <stddef.h>

#include "openai.h"

/* {"content": string, "add_special": bool (false: no BOS), "parse_special": bool (default:
 * the server's --special), "with_pieces": bool (false)} -> {"tokens": [id, ...]}, or with
 * pieces {"tokens": [{"id": id, "piece": "text"}, ...]} where a piece that is not whole
 * UTF-8 is a list of its byte values. JSON text (malloc'd), or NULL with *err (a 400 naming
 * the field, or a 500). */
char *tokenize_api_tokenize(const oai_model_t *m, const char *body, size_t len, oai_error_t *err);
/* {"tokens": [id, ...]} -> {"content": text}; bytes that are not UTF-8 become U+FFFD. */
char *tokenize_api_detokenize(const oai_model_t *m, const char *body, size_t len,
                              oai_error_t *err);

#endif
