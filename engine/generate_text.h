/* Text side of generation: the streaming UTF-8 decoder behind the public sd_text_stream
 * API, and the stop-string matcher that decides which generated text may be released. */
#ifndef SPECDEC_ENGINE_GENERATE_TEXT_H
#define SPECDEC_ENGINE_GENERATE_TEXT_H

#include <stddef.h>
#include <stdint.h>

#include "specdec/specdec.h"

/* Bytes at the end of text[n] that form an incomplete but still valid start of a UTF-8
 * sequence (0..3): the bytes a streaming decoder must hold until the next token. */
size_t sd_utf8_incomplete_tail(const char *text, size_t n);

/* Decode `token` and return the complete UTF-8 text it makes available (bytes held from
 * earlier tokens first): *text[*len], valid until the next call on `s`. */
sd_status_t sd_text_stream_next(sd_text_stream_t *s, int32_t token, const char **text,
                                size_t *len);
/* Hand back the held bytes as they are (an incomplete sequence stays raw bytes) and empty
 * the stream: *text[*len], valid until the next call on `s`. */
void sd_text_stream_take_rest(sd_text_stream_t *s, const char **text, size_t *len);

/* Start of the earliest occurrence of any stop[i] (i < n_stop) in text[from..n), or
 * SIZE_MAX when none occurs. */
size_t sd_stop_find(const char *const *stop, size_t n_stop, const char *text, size_t from,
                    size_t n);
/* Smallest p in [from, n] such that text[p..n) is a proper prefix of some stop string (text
 * that could still become a stop once more tokens arrive); n when no tail could. */
size_t sd_stop_hold(const char *const *stop, size_t n_stop, const char *text, size_t from,
                    size_t n);

#endif
