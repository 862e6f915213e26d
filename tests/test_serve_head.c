/* The listener's screen of request heads (apps/serve/http_head.h), without sockets: what is
 * incomplete, complete, or refused with which status and OpenAI code, including everything
 * libmicrohttpd would otherwise answer with an HTML page. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apps/serve/http_head.h"

#define MAX_BODY 1000

typedef struct head_case {
    const char *raw;
    int peer_done;
    http_head_state_t want;
    int status;       /* when refused */
    const char *code; /* when refused */
    const char *says; /* in the message, when refused */
} head_case_t;

#define GOOD "GET /health HTTP/1.1\r\nHost: x\r\n"

static const head_case_t cases[] = {
    {GOOD "\r\n", 0, HTTP_HEAD_COMPLETE, 0, NULL, NULL},
    {"GET /health HTTP/1.0\r\n\r\n", 0, HTTP_HEAD_COMPLETE, 0, NULL, NULL},
    {"GET /health HTTP/1.1\nHost: x\n\n", 0, HTTP_HEAD_COMPLETE, 0, NULL, NULL},
    {"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{", 0,
     HTTP_HEAD_COMPLETE, 0, NULL, NULL},
    {"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n",
     0, HTTP_HEAD_COMPLETE, 0, NULL, NULL},
    {"get /health HTTP/1.1\r\nHost: x\r\n\r\n", 0, HTTP_HEAD_COMPLETE, 0, NULL, NULL},
    {"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", 0, HTTP_HEAD_COMPLETE, 0, NULL, NULL},
    {GOOD "X-Obs: caf\xc3\xa9\t tab\r\n\r\n", 0, HTTP_HEAD_COMPLETE, 0, NULL, NULL},
    /* incomplete: wait, unless the client is done */
    {"", 0, HTTP_HEAD_INCOMPLETE, 0, NULL, NULL},
    {"GE", 0, HTTP_HEAD_INCOMPLETE, 0, NULL, NULL},
    {"GET /health HTT", 0, HTTP_HEAD_INCOMPLETE, 0, NULL, NULL},
    {GOOD, 0, HTTP_HEAD_INCOMPLETE, 0, NULL, NULL},
    {GOOD "X-A: b\r", 0, HTTP_HEAD_INCOMPLETE, 0, NULL, NULL},
    {"GET /health HTT", 1, HTTP_HEAD_REFUSED, 400, "malformed_request", "inside its request line"},
    {GOOD, 1, HTTP_HEAD_REFUSED, 400, "malformed_request", "inside its headers"},
    /* not HTTP at all: refused at the first byte */
    {"\x16\x03\x01", 0, HTTP_HEAD_REFUSED, 400, "malformed_request", "\\x16\\x03\\x01"},
    {"GET\x01", 0, HTTP_HEAD_REFUSED, 400, "malformed_request", "not an HTTP request"},
    /* the request line */
    {"GET  /health HTTP/1.1\r\n", 0, HTTP_HEAD_REFUSED, 400, "malformed_request", "METHOD TARGET"},
    {"GET /health\r\n", 0, HTTP_HEAD_REFUSED, 400, "malformed_request", "METHOD TARGET"},
    {"GET /a b HTTP/1.1\r\n", 0, HTTP_HEAD_REFUSED, 400, "malformed_request", "end with HTTP/1.1"},
    {"GET /a\x7f HTTP/1.1\r\n", 0, HTTP_HEAD_REFUSED, 400, "malformed_request", "0x7f"},
    {"GET health HTTP/1.1\r\n", 0, HTTP_HEAD_REFUSED, 400, "malformed_request", "start with /"},
    {"GET /health HTTP/2.0\r\n", 0, HTTP_HEAD_REFUSED, 505, "http_version_not_supported", "HTTP/2.0"},
    {"GET /health HTTP/1.1x\r\n", 0, HTTP_HEAD_REFUSED, 400, "malformed_request", "HTTP/1.1x"},
    {"GET /health FOO\r\n", 0, HTTP_HEAD_REFUSED, 400, "malformed_request", "FOO"},
    /* headers */
    {GOOD " folded\r\n\r\n", 0, HTTP_HEAD_REFUSED, 400, "malformed_request", "folding"},
    {GOOD "NoColon\r\n\r\n", 0, HTTP_HEAD_REFUSED, 400, "malformed_request", "no ':'"},
    {GOOD ": empty name\r\n\r\n", 0, HTTP_HEAD_REFUSED, 400, "malformed_request", "no name"},
    {GOOD "Bad Name: v\r\n\r\n", 0, HTTP_HEAD_REFUSED, 400, "malformed_request", "not a token"},
    {GOOD "X-A: a\x01z\r\n\r\n", 0, HTTP_HEAD_REFUSED, 400, "malformed_request", "0x01"},
    {GOOD "X-A: a\rz\r\n\r\n", 0, HTTP_HEAD_REFUSED, 400, "malformed_request", "0x0d"},
    {GOOD "Host: y\r\n\r\n", 0, HTTP_HEAD_REFUSED, 400, "malformed_request", "two Host"},
    {"GET /health HTTP/1.1\r\nX: y\r\n\r\n", 0, HTTP_HEAD_REFUSED, 400, "malformed_request",
     "no Host header"},
    /* the body's framing */
    {GOOD "Content-Length: 12x\r\n\r\n", 0, HTTP_HEAD_REFUSED, 400, "malformed_request", "'12x'"},
    {GOOD "Content-Length: -1\r\n\r\n", 0, HTTP_HEAD_REFUSED, 400, "malformed_request", "'-1'"},
    {GOOD "Content-Length:\r\n\r\n", 0, HTTP_HEAD_REFUSED, 400, "malformed_request", "''"},
    {GOOD "Content-Length: 99999999999999999999\r\n\r\n", 0, HTTP_HEAD_REFUSED, 400,
     "malformed_request", "not a number"},
    {GOOD "Content-Length: 1, 1\r\n\r\n", 0, HTTP_HEAD_REFUSED, 400, "malformed_request", "'1, 1'"},
    {GOOD "Content-Length: 5\r\nContent-Length: 6\r\n\r\n", 0, HTTP_HEAD_REFUSED, 400,
     "malformed_request", "(5 and 6)"},
    {GOOD "Content-Length: 1001\r\n\r\n", 0, HTTP_HEAD_REFUSED, 413, "request_too_large",
     "1001 bytes exceeds the limit of 1000"},
    {GOOD "Transfer-Encoding: chunked\r\n\r\n", 0, HTTP_HEAD_REFUSED, 411, "length_required",
     "Content-Length"},
    {GOOD "Transfer-Encoding: gzip, chunked\r\n\r\n", 0, HTTP_HEAD_REFUSED, 501, "not_implemented",
     "'gzip, chunked'"},
    {GOOD "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 0, HTTP_HEAD_REFUSED, 411,
     "length_required", "chunked"},
};

Test(serve_head, the_table, .timeout = 10)
{
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const head_case_t *c = &cases[i];
        unsigned long long request_len = 0;
        http_head_error_t e = {0};
        http_head_state_t got = http_head_screen(c->raw, strlen(c->raw), MAX_BODY, c->peer_done,
                                                 &request_len, &e);
        cr_expect_eq(got, c->want, "case %zu '%s': state %d, want %d (%s)", i, c->raw, got,
                     c->want, e.message);
        if (got == HTTP_HEAD_COMPLETE) { /* the head, up to its blank line, and the body */
            const char *end = strstr(c->raw, "\r\n\r\n") ? strstr(c->raw, "\r\n\r\n") + 4
                                                          : strstr(c->raw, "\n\n") + 2;
            const char *length = strstr(c->raw, "Content-Length: ");
            unsigned long long body = length ? strtoull(length + 16, NULL, 10) : 0;
            cr_expect_eq(request_len, (unsigned long long)(end - c->raw) + body, "case %zu", i);
        }
        if (got != HTTP_HEAD_REFUSED || c->want != HTTP_HEAD_REFUSED) continue;
        cr_expect_eq(e.status, c->status, "case %zu '%s': %d %s", i, c->raw, e.status, e.message);
        cr_expect_str_eq(e.code, c->code, "case %zu", i);
        cr_expect(strstr(e.message, c->says), "case %zu: '%s' does not say '%s'", i, e.message,
                  c->says);
    }
}

/* The limits: a request line of 8 KiB is 414, a head of 16 KiB is 431, each decided as soon
 * as that many bytes have arrived without the end; just under them is fine. */
Test(serve_head, limits, .timeout = 10)
{
    size_t cap = HTTP_HEAD_MAX_BYTES + 64;
    unsigned long long head_len;
    char *b = malloc(cap);
    http_head_error_t e;
    /* request line */
    memcpy(b, "GET /", 5);
    memset(b + 5, 'a', HTTP_HEAD_MAX_LINE);
    cr_expect_eq(http_head_screen(b, HTTP_HEAD_MAX_LINE - 1, MAX_BODY, 0, &head_len, &e),
                 HTTP_HEAD_INCOMPLETE);
    cr_expect_eq(http_head_screen(b, HTTP_HEAD_MAX_LINE, MAX_BODY, 0, &head_len, &e),
                 HTTP_HEAD_REFUSED);
    cr_expect_eq(e.status, 414);
    cr_expect_str_eq(e.code, "uri_too_long");
    int n = HTTP_HEAD_MAX_LINE - 2 - (int)strlen(" HTTP/1.1");
    snprintf(b + n, cap - (size_t)n, " HTTP/1.1\r\nHost: x\r\n\r\n");
    cr_expect_eq(http_head_screen(b, strlen(b), MAX_BODY, 0, &head_len, &e), HTTP_HEAD_COMPLETE,
                 "%s", e.message);
    /* the whole head */
    strcpy(b, GOOD "X-Big: ");
    size_t at = strlen(b);
    memset(b + at, 'b', cap - at);
    cr_expect_eq(http_head_screen(b, HTTP_HEAD_MAX_BYTES - 1, MAX_BODY, 0, &head_len, &e),
                 HTTP_HEAD_INCOMPLETE);
    cr_expect_eq(http_head_screen(b, HTTP_HEAD_MAX_BYTES, MAX_BODY, 0, &head_len, &e),
                 HTTP_HEAD_REFUSED);
    cr_expect_eq(e.status, 431);
    cr_expect_str_eq(e.code, "headers_too_large");
    memcpy(b + HTTP_HEAD_MAX_BYTES - 4, "\r\n\r\n", 4);
    cr_expect_eq(http_head_screen(b, HTTP_HEAD_MAX_BYTES, MAX_BODY, 0, &head_len, &e),
                 HTTP_HEAD_COMPLETE, "%s", e.message);
    cr_expect_eq(head_len, HTTP_HEAD_MAX_BYTES);
    free(b);
}
