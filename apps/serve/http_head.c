/* http_head_screen: the request line and headers, checked the way RFC 9110/9112 define them
 * and at least as strictly as libmicrohttpd parses them (http_head.h). */
#include "http_head.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define MAX_METHOD 20

static http_head_state_t refuse(http_head_error_t *e, int status, const char *code,
                                const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static http_head_state_t refuse(http_head_error_t *e, int status, const char *code,
                                const char *fmt, ...)
{
    e->status = status;
    e->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return HTTP_HEAD_REFUSED;
}

/* s[n] for a message: printable ASCII as is, other bytes as \xHH, at most 40 bytes shown. */
static const char *shown(const char *s, size_t n, char out[200])
{
    size_t o = 0;
    for (size_t i = 0; i < n && i < 40; i++) {
        unsigned char c = (unsigned char)s[i];
        o += (size_t)snprintf(out + o, 200 - o, c >= 0x20 && c < 0x7f && c != '\\' ? "%c"
                                                                                    : "\\x%02x", c);
    }
    snprintf(out + o, 200 - o, "%s", n > 40 ? "..." : "");
    return out;
}

static int is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static int is_name(const char *s, size_t n, const char *name)
{
    return strlen(name) == n && strncasecmp(s, name, n) == 0;
}

/* METHOD SP TARGET SP HTTP/1.x; *http11 = 1 for HTTP/1.1. */
static http_head_state_t request_line(const char *l, size_t n, int *http11,
                                      http_head_error_t *e)
{
    char t[200];
    const char *sp1 = memchr(l, ' ', n);
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', n - (size_t)(sp1 + 1 - l)) : NULL;
    if (!sp1 || !sp2 || sp1 == l || sp2 == sp1 + 1)
        return refuse(e, 400, "malformed_request",
                      "the request line must be METHOD TARGET HTTP/1.1, got '%s'",
                      shown(l, n, t));
    for (const char *p = sp1 + 1; p < sp2; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
            return refuse(e, 400, "malformed_request",
                          "the request target holds the byte 0x%02x: '%s'", (unsigned char)*p,
                          shown(sp1 + 1, (size_t)(sp2 - sp1 - 1), t));
    if (sp1[1] != '/' && !(sp2 == sp1 + 2 && sp1[1] == '*'))
        return refuse(e, 400, "malformed_request", "the request target must start with /, got '%s'",
                      shown(sp1 + 1, (size_t)(sp2 - sp1 - 1), t));
    const char *v = sp2 + 1;
    size_t vn = n - (size_t)(v - l);
    if (vn == 8 && !memcmp(v, "HTTP/1.", 7) && (v[7] == '0' || v[7] == '1')) {
        *http11 = v[7] == '1';
        return HTTP_HEAD_COMPLETE;
    }
    if (vn == 8 && !memcmp(v, "HTTP/", 5) && v[5] >= '0' && v[5] <= '9' && v[6] == '.' &&
        v[7] >= '0' && v[7] <= '9')
        return refuse(e, 505, "http_version_not_supported", "%.8s is not supported; use HTTP/1.1",
                      v);
    return refuse(e, 400, "malformed_request", "the request line must end with HTTP/1.1, got '%s'",
                  shown(v, vn, t));
}

typedef struct head_facts {
    int host, n_length, chunked_or_other;
    unsigned long long length;
    char encoding[64];
} head_facts_t;

/* One header line (no CRLF): NAME ":" OWS VALUE OWS. */
static http_head_state_t header_line(const char *l, size_t n, head_facts_t *f,
                                     http_head_error_t *e)
{
    char t[200];
    if (l[0] == ' ' || l[0] == '\t')
        return refuse(e, 400, "malformed_request",
                      "a header line starts with whitespace (obsolete line folding): '%s'",
                      shown(l, n, t));
    const char *colon = memchr(l, ':', n);
    if (!colon) return refuse(e, 400, "malformed_request", "a header line has no ':': '%s'", shown(l, n, t));
    size_t name_len = (size_t)(colon - l);
    if (name_len == 0) return refuse(e, 400, "malformed_request", "a header line has no name");
    for (size_t i = 0; i < name_len; i++)
        if (!is_tchar((unsigned char)l[i]))
            return refuse(e, 400, "malformed_request", "the header name '%s' is not a token",
                          shown(l, name_len, t));
    const char *v = colon + 1, *end = l + n;
    while (v < end && (*v == ' ' || *v == '\t')) v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t')) end--;
    for (const char *p = v; p < end; p++) {
        unsigned char c = (unsigned char)*p;
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return refuse(e, 400, "malformed_request", "the header %s holds the control byte 0x%02x",
                          shown(l, name_len, t), c);
    }
    size_t vn = (size_t)(end - v);
    if (is_name(l, name_len, "host")) {
        if (f->host) return refuse(e, 400, "malformed_request", "the request has two Host headers");
        f->host = 1;
    } else if (is_name(l, name_len, "content-length")) {
        unsigned long long x = 0;
        int digits = vn > 0 && vn <= 18;
        for (size_t i = 0; digits && i < vn; i++) {
            digits = v[i] >= '0' && v[i] <= '9';
            x = x * 10 + (unsigned long long)(v[i] - '0');
        }
        if (!digits)
            return refuse(e, 400, "malformed_request", "Content-Length '%s' is not a number of bytes",
                          shown(v, vn, t));
        if (f->n_length++ && x != f->length)
            return refuse(e, 400, "malformed_request",
                          "the request has two different Content-Length headers (%llu and %llu)",
                          f->length, x);
        f->length = x;
    } else if (is_name(l, name_len, "transfer-encoding")) {
        f->chunked_or_other = 1;
        snprintf(f->encoding, sizeof f->encoding, "%s", shown(v, vn, t));
    }
    return HTTP_HEAD_COMPLETE;
}

/* What the complete head says about the body. */
static http_head_state_t body_rules(const head_facts_t *f, int http11,
                                    unsigned long long max_body, http_head_error_t *e)
{
    if (http11 && !f->host)
        return refuse(e, 400, "malformed_request", "the request has no Host header (HTTP/1.1 needs one)");
    if (f->chunked_or_other && !strcasecmp(f->encoding, "chunked"))
        return refuse(e, 411, "length_required",
                      "chunked request bodies are not accepted; send the body with Content-Length");
    if (f->chunked_or_other)
        return refuse(e, 501, "not_implemented", "Transfer-Encoding '%s' is not supported",
                      f->encoding);
    if (f->n_length && f->length > max_body)
        return refuse(e, 413, "request_too_large",
                      "the request body of %llu bytes exceeds the limit of %llu bytes "
                      "(--max-body-bytes)", f->length, max_body);
    return HTTP_HEAD_COMPLETE;
}

http_head_state_t http_head_screen(const char *buf, size_t n, unsigned long long max_body,
                                   int peer_done, unsigned long long *request_len,
                                   http_head_error_t *e)
{
    char t[200];
    /* the method so far: refuse what is not HTTP (a TLS hello, a stray protocol) at once */
    size_t m = 0;
    for (; m < n && buf[m] != ' '; m++)
        if (!is_tchar((unsigned char)buf[m]) || m == MAX_METHOD)
            return refuse(e, 400, "malformed_request",
                          "this is not an HTTP request: it starts '%s'", shown(buf, n, t));
    size_t limit = n < HTTP_HEAD_MAX_LINE ? n : HTTP_HEAD_MAX_LINE;
    const char *eol = memchr(buf, '\n', limit);
    if (!eol) {
        if (n >= HTTP_HEAD_MAX_LINE)
            return refuse(e, 414, "uri_too_long", "the request line is longer than %d bytes",
                          HTTP_HEAD_MAX_LINE);
        return peer_done ? refuse(e, 400, "malformed_request", "the request ended inside its "
                                  "request line") : HTTP_HEAD_INCOMPLETE;
    }
    size_t len = (size_t)(eol - buf);
    if (len > 0 && buf[len - 1] == '\r') len--;
    int http11 = 0;
    if (request_line(buf, len, &http11, e) == HTTP_HEAD_REFUSED) return HTTP_HEAD_REFUSED;
    head_facts_t f = {0};
    limit = n < HTTP_HEAD_MAX_BYTES ? n : HTTP_HEAD_MAX_BYTES;
    for (size_t pos = (size_t)(eol - buf) + 1;;) {
        const char *nl = pos < limit ? memchr(buf + pos, '\n', limit - pos) : NULL;
        if (!nl) {
            if (n >= HTTP_HEAD_MAX_BYTES)
                return refuse(e, 431, "headers_too_large",
                              "the request line and headers are longer than %d bytes",
                              HTTP_HEAD_MAX_BYTES);
            return peer_done ? refuse(e, 400, "malformed_request", "the request ended inside "
                                      "its headers") : HTTP_HEAD_INCOMPLETE;
        }
        len = (size_t)(nl - (buf + pos));
        if (len > 0 && buf[pos + len - 1] == '\r') len--;
        if (len == 0) {
            *request_len = (unsigned long long)(nl - buf) + 1 + f.length;
            return body_rules(&f, http11, max_body, e) == HTTP_HEAD_REFUSED ? HTTP_HEAD_REFUSED
                                                                           : HTTP_HEAD_COMPLETE;
        }
        if (header_line(buf + pos, len, &f, e) == HTTP_HEAD_REFUSED) return HTTP_HEAD_REFUSED;
        pos = (size_t)(nl - buf) + 1;
    }
}
