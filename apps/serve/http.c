/* libmicrohttpd glue: one thread per connection, handed over by the listener (listener.c)
 * once a request's head has arrived. Responses (each closes its connection), request bodies
 * (size-limited, never buffered past --max-body-bytes), the API-key check, and the dispatch
 * of each request to its row of serve_routes (routes.c), with the 401, 404, 405, 413 and
 * 503 the table implies. */
#include "http.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/check.h"
#include "listener.h"
#include "routes.h"

/* One HTTP request, from its headers until its response is sent (MHD's con_cls). */
typedef struct exchange {
    const serve_route_t *route; /* the row whose body arrives; NULL: answered at once */
    char *body; /* [len] of [cap]; NULL once too_large */
    size_t len, cap;
    int too_large;
} exchange_t;

static const char json_type[] = "application/json";

/* ---- responses ------------------------------------------------------------------------- */

void http_count_response(serve_t *s, int status)
{
    if (status > 0 && status < SERVE_MAX_HTTP_STATUS) atomic_fetch_add(&s->responses[status], 1);
}

enum MHD_Result http_queue(serve_t *s, struct MHD_Connection *c, int status,
                           struct MHD_Response *r)
{
    listener_request_received(c); /* being answered: no deadline any more */
    if (!r) return MHD_NO;
    if (status == 429 || status == 503) MHD_add_response_header(r, "Retry-After", "1");
    if (status == 401) MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    /* One request per connection: the next one comes through the listener again, where the
     * caps and the deadline apply (docs/serve.md, "Connections"). */
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ok = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    if (ok == MHD_YES) http_count_response(s, status);
    return ok;
}

/* http_respond; allow, when not NULL, is the Allow header of a 405 (not of the 500 that
 * a NULL body becomes). */
static enum MHD_Result respond(serve_t *s, struct MHD_Connection *c, int status,
                               const char *content_type, char *body, size_t len,
                               const char *allow)
{
    static char oom[] = "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\","
                        "\"param\":null,\"code\":null}}";
    struct MHD_Response *r;
    if (body) {
        r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
        if (!r) free(body);
        if (r && allow) MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
    } else {
        status = 500, content_type = json_type;
        r = MHD_create_response_from_buffer(strlen(oom), oom, MHD_RESPMEM_PERSISTENT);
    }
    if (r) MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    return http_queue(s, c, status, r);
}

enum MHD_Result http_respond(serve_t *s, struct MHD_Connection *c, int status,
                             const char *content_type, char *body, size_t len)
{
    return respond(s, c, status, content_type, body, len, NULL);
}

enum MHD_Result http_respond_json(serve_t *s, struct MHD_Connection *c, int status, char *body)
{
    return http_respond(s, c, status, json_type, body, body ? strlen(body) : 0);
}

enum MHD_Result http_respond_error(serve_t *s, struct MHD_Connection *c, const oai_error_t *err)
{
    return http_respond_json(s, c, err->http_status, oai_error_json(err));
}

enum MHD_Result http_respond_errorf(serve_t *s, struct MHD_Connection *c, int status,
                                    const char *type, const char *code, const char *fmt, ...)
{
    oai_error_t e = {.http_status = status, .type = type, .code = code};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e.message, sizeof e.message, fmt, ap);
    va_end(ap);
    return http_respond_error(s, c, &e);
}

static enum MHD_Result respond_unavailable(serve_t *s, struct MHD_Connection *c)
{
    int loading = atomic_load(&s->state) == SERVE_LOADING;
    return http_respond_errorf(s, c, 503, "server_error",
                               loading ? "model_loading" : "shutting_down",
                               loading ? "the model '%s' is still loading"
                                       : "the server is shutting down ('%s')",
                               s->model_id);
}

enum MHD_Result http_respond_submit_error(serve_t *s, struct MHD_Connection *c, sd_status_t st)
{
    if (atomic_load(&s->state) != SERVE_READY) return respond_unavailable(s, c);
    oai_error_t e;
    oai_error_from_status(st, sd_last_error(), &e);
    return http_respond_error(s, c, &e);
}

/* ---- request bodies --------------------------------------------------------------------- */

/* size: the Content-Length, or 0 when the body came in chunks. */
static enum MHD_Result respond_too_large(serve_t *s, struct MHD_Connection *c,
                                         unsigned long long size)
{
    char told[48] = "";
    if (size) snprintf(told, sizeof told, " of %llu bytes", size);
    return http_respond_errorf(s, c, 413, "invalid_request_error", "request_too_large",
                               "the request body%s exceeds the limit of %d bytes "
                               "(--max-body-bytes)", told, s->opts->max_body_bytes);
}

/* Keep data[n] unless the body passes the limit: then drop it all and remember. */
static void take_body(serve_t *s, exchange_t *x, const char *data, size_t n)
{
    if (x->too_large) return;
    size_t need = x->len + n, max = (size_t)s->opts->max_body_bytes;
    if (need > max) {
        free(x->body);
        x->body = NULL;
        x->too_large = 1;
        return;
    }
    if (need > x->cap) {
        size_t cap = x->cap ? x->cap : 4096;
        while (cap < need) cap *= 2;
        char *b = realloc(x->body, cap);
        if (!b) return free(x->body), x->body = NULL, (void)(x->too_large = 1);
        x->body = b, x->cap = cap;
    }
    memcpy(x->body + x->len, data, n);
    x->len = need;
}

/* ---- dispatch ------------------------------------------------------------------------------ */

/* 405 naming the methods the path takes, also in the Allow header. */
static enum MHD_Result respond_bad_method(serve_t *s, struct MHD_Connection *c,
                                          const char *method, const char *url)
{
    char allow[64];
    serve_route_allow(url, allow, sizeof allow);
    oai_error_t e;
    oai_error_set(&e, 405, "invalid_request_error", NULL, "method_not_allowed",
                  "%s is not allowed on %s; use %s", method, url, allow);
    char *body = oai_error_json(&e);
    return respond(s, c, 405, json_type, body, body ? strlen(body) : 0, allow);
}

/* ---- API keys -------------------------------------------------------------------------------- */

/* given[n] == key, in a time that depends on the key's length only. */
static int same_key(const char *given, size_t n, const char *key)
{
    size_t k = strlen(key);
    volatile unsigned char diff = n != k;
    for (size_t i = 0; i < k; i++)
        diff |= (unsigned char)(key[i] ^ (i < n ? given[i] : 0));
    return diff == 0;
}

/* The key a route needs (NULL: none). */
static const char *route_key(const serve_t *s, const serve_route_t *route)
{
    if (route->auth == SERVE_AUTH_API) return s->opts->api_key;
    if (route->auth == SERVE_AUTH_METRICS) return s->opts->metrics_key;
    return NULL;
}

/* 1 when the request may use the route; else 0 with *answer the 401 it got: no key, or a
 * wrong one (never echoed). */
static int authorized(serve_t *s, struct MHD_Connection *c, const serve_route_t *route,
                      enum MHD_Result *answer)
{
    const char *key = route_key(s, route);
    if (!key) return 1;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    const char *flag = route->auth == SERVE_AUTH_API ? "--api-key" : "--metrics-key";
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) {
        *answer = http_respond_errorf(s, c, 401, "invalid_request_error", NULL,
                                      "no API key: send the header 'Authorization: Bearer KEY' "
                                      "with the server's key (%s)", flag);
        return 0;
    }
    const char *given = h + 7;
    while (*given == ' ') given++;
    size_t n = strlen(given);
    while (n > 0 && (given[n - 1] == ' ' || given[n - 1] == '\t')) n--;
    if (same_key(given, n, key)) return 1;
    *answer = http_respond_errorf(s, c, 401, "invalid_request_error", "invalid_api_key",
                                  "incorrect API key in the Authorization header (%s)", flag);
    return 0;
}

/* ---- dispatch (continued) ---------------------------------------------------------------------- */

/* 1 when the route needs the model and the server is not ready (the answer is a 503). */
static int unavailable(serve_t *s, const serve_route_t *route)
{
    return route->needs_model && atomic_load(&s->state) != SERVE_READY;
}

static enum MHD_Result answer(serve_t *s, struct MHD_Connection *c, const serve_route_t *route,
                           const char *body, size_t len)
{
    listener_request_received(c); /* the handler may wait for the engine */
    if (unavailable(s, route)) return respond_unavailable(s, c);
    return route->handler(s, c, route, body, len);
}

/* The first call for a request: answer refusals and body-less routes at once, else wait for
 * the body. */
static enum MHD_Result begin(serve_t *s, struct MHD_Connection *c, const char *url,
                             const char *method, exchange_t *x)
{
    const serve_route_t *route;
    serve_route_match_t match = serve_route_find(method, url, &route);
    if (match == SERVE_ROUTE_NOT_FOUND)
        return http_respond_errorf(s, c, 404, "invalid_request_error", "not_found",
                                   "no endpoint %s %s", method, url);
    if (match == SERVE_ROUTE_BAD_METHOD) return respond_bad_method(s, c, method, url);
    enum MHD_Result refused;
    if (!authorized(s, c, route, &refused)) return refused;
    if (!route->reads_body) return answer(s, c, route, "", 0);
    if (unavailable(s, route)) return respond_unavailable(s, c);
    const char *length = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_CONTENT_LENGTH);
    unsigned long long size = length ? strtoull(length, NULL, 10) : 0;
    if (size > (unsigned long long)s->opts->max_body_bytes) return respond_too_large(s, c, size);
    x->route = route;
    return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_size, void **con_cls)
{
    serve_t *s = cls;
    exchange_t *x = *con_cls;
    if (!x) {
        if (!(x = calloc(1, sizeof *x))) return MHD_NO;
        *con_cls = x;
        pthread_mutex_lock(&s->lock);
        s->in_flight++;
        pthread_mutex_unlock(&s->lock);
        return begin(s, c, url, method, x);
    }
    if (!x->route) return MHD_NO; /* answered by the first call */
    if (*upload_size) {
        take_body(s, x, upload_data, *upload_size);
        *upload_size = 0;
        return MHD_YES;
    }
    if (x->too_large) return respond_too_large(s, c, 0);
    return answer(s, c, x->route, x->body ? x->body : "", x->len);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    serve_t *s = cls;
    exchange_t *x = *con_cls;
    listener_request_done(c); /* every response closes its connection */
    if (!x) return;
    free(x->body);
    free(x);
    *con_cls = NULL;
    pthread_mutex_lock(&s->lock);
    s->in_flight--;
    pthread_cond_broadcast(&s->idle);
    pthread_mutex_unlock(&s->lock);
}

static void log_mhd(void *cls, const char *fmt, va_list ap)
{
    fputs("specdec: http: ", stderr);
    vfprintf(stderr, fmt, ap);
}

/* ---- the daemon ---------------------------------------------------------------------------- */

sd_status_t serve_http_start(serve_t *s)
{
    const serve_options_t *o = s->opts;
    int port = 0, loopback = 0;
    sd_status_t st = listener_open(s, &port, &loopback);
    if (st != SD_OK) return listener_free(s), st;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                     MHD_USE_POLL | MHD_USE_ITC | MHD_USE_ERROR_LOG | MHD_USE_NO_LISTEN_SOCKET;
    /* The listener keeps the count and stays below this limit (listener.c says why).
     * Memory per connection: a head of HTTP_HEAD_MAX_BYTES always fits. */
    unsigned limit = listener_mhd_limit(o);
    s->daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_request, s,
                                 MHD_OPTION_EXTERNAL_LOGGER, log_mhd, NULL,
                                 MHD_OPTION_CONNECTION_LIMIT, limit,
                                 MHD_OPTION_CONNECTION_TIMEOUT, 60u,
                                 MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(128 * 1024),
                                 MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                                 MHD_OPTION_NOTIFY_CONNECTION, listener_notify, s,
                                 MHD_OPTION_END);
    if (!s->daemon) {
        listener_free(s);
        return sd_set_error(SD_ERR_IO, "cannot start the HTTP server on %s port %d", o->host,
                            o->port);
    }
    if ((st = listener_start(s)) != SD_OK) return serve_http_stop(s), st;
    int v6 = strchr(o->host, ':') != NULL;
    snprintf(s->url, sizeof s->url, v6 ? "http://[%s]:%d" : "http://%s:%d", o->host, port);
    if (!loopback && !o->api_key)
        fprintf(stderr, "specdec: warning: listening on %s, which is not a loopback address, "
                        "without an API key: anyone who reaches port %d can use the model "
                        "(set --api-key-file FILE or SPECDEC_API_KEY)\n", o->host, port);
    return SD_OK;
}

void serve_http_quiesce(serve_t *s)
{
    listener_quiesce(s);
}

void serve_http_wait_idle(serve_t *s, double seconds)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += (time_t)seconds;
    pthread_mutex_lock(&s->lock);
    while (s->in_flight > 0)
        if (pthread_cond_timedwait(&s->idle, &s->lock, &until) == ETIMEDOUT) break;
    pthread_mutex_unlock(&s->lock);
}

void serve_http_stop(serve_t *s)
{
    listener_stop(s);
    if (s->daemon) MHD_stop_daemon(s->daemon); /* reports every close to the listener */
    s->daemon = NULL;
    listener_free(s);
}
