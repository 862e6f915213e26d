/* The screen every connection passes before libmicrohttpd sees it (listener.c): the request
 * line and headers, read without consuming them, are either incomplete, complete and
 * acceptable, or refused with the status, OpenAI error code and message the listener
 * answers with. It refuses everything libmicrohttpd would otherwise refuse itself with an
 * HTML page (a request line or header block too long, malformed lines, a missing Host, a
 * bad Content-Length, chunked bodies), so every error a client sees has the OpenAI shape. */
#ifndef SPECDEC_APPS_SERVE_HTTP_HEAD_H
#define SPECDEC_APPS_SERVE_HTTP_HEAD_H

#include <stddef.h>

#define HTTP_HEAD_MAX_LINE 8192    /* request line, CRLF included: longer is 414 */
#define HTTP_HEAD_MAX_BYTES 16384  /* request line and headers, up to the blank line: 431 */

typedef enum http_head_state {
    HTTP_HEAD_INCOMPLETE, /* acceptable so far; wait for more bytes */
    HTTP_HEAD_COMPLETE,   /* the head is whole and acceptable */
    HTTP_HEAD_REFUSED,    /* answer with the error and close */
} http_head_state_t;

typedef struct http_head_error {
    int status;        /* 400, 411, 413, 414, 431, 501, 505 */
    const char *code;  /* OpenAI error code: "malformed_request", ... */
    char message[256]; /* names what was wrong (request bytes shown escaped, cut) */
} http_head_error_t;

/* Screen the first n bytes a client sent. max_body: the largest Content-Length allowed.
 * peer_done: the client has sent all it will (then an incomplete head is refused too).
 * COMPLETE: *request_len = the head's bytes plus its Content-Length, the whole request. */
http_head_state_t http_head_screen(const char *buf, size_t n, unsigned long long max_body,
                                   int peer_done, unsigned long long *request_len,
                                   http_head_error_t *err);

#endif
