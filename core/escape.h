/* Untrusted bytes (a GGUF key or string, a token, a user's text) made safe to show in a
 * message or on a terminal. sd_set_error and sd_log pass every message through it as well. */
#ifndef SPECDEC_CORE_ESCAPE_H
#define SPECDEC_CORE_ESCAPE_H

#include <stddef.h>
#include <string.h>

/* Room for one escaped value in a message; a longer one ends with "...(+N bytes)". */
#define SD_ESCAPE_BUF 256

/* src[len] into buf[cap] (cap >= 64), NUL-terminated: printable ASCII and valid UTF-8
 * characters are kept; control characters (C0, DEL, C1), Unicode format and bidi controls,
 * line/paragraph separators and bytes that are not valid UTF-8 become \xHH, one per byte
 * (NUL too: nothing is cut at an embedded NUL). Backslashes are kept, so escaping escaped
 * text changes nothing. What does not fit ends with "...(+N bytes)", N the source bytes
 * left out. Returns buf. */
const char *sd_escape(const void *src, size_t len, char *buf, size_t cap);

/* sd_escape into a buffer that lives until the end of the enclosing block, for a message's
 * arguments: sd_set_error(..., "key '%s'", SD_ESC(key.data, key.len)). */
#define SD_ESC(src, len) sd_escape((src), (len), (char[SD_ESCAPE_BUF]){0}, SD_ESCAPE_BUF)
#define SD_ESC_STR(s) SD_ESC((s), strlen(s))

#endif
