/* libmicrohttpd glue: one thread per connection. Responses, request bodies (size-limited,
 * never buffered past --max-body-bytes) and the dispatch of each request to its row of
 * serve_routes (routes.c), with the 404, 405, 413 and 503 the table implies. */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/check.h"
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

static void count_response(serve_t *s, int status)
{
    if (status > 0 && status < SERVE_MAX_HTTP_STATUS) atomic_fetch_add(&s->responses[status], 1);
}

enum MHD_Result http_queue(serve_t *s, struct MHD_Connection *c, int status,
                           struct MHD_Response *r)
{
    if (!r) return MHD_NO;
    if (status == 429 || status == 503) MHD_add_response_header(r, "Retry-After", "1");
    enum MHD_Result ok = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    if (ok == MHD_YES) count_response(s, status);
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

/* 1 when the route needs the model and the server is not ready (the answer is a 503). */
static int unavailable(serve_t *s, const serve_route_t *route)
{
    return route->needs_model && atomic_load(&s->state) != SERVE_READY;
}

static enum MHD_Result answer(serve_t *s, struct MHD_Connection *c, const serve_route_t *route,
                           const char *body, size_t len)
{
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

/* host:port -> *addr (first address getaddrinfo gives). */
static sd_status_t resolve(const char *host, int port, struct sockaddr_storage *addr)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    int rc = getaddrinfo(host, service, &hints, &res);
    if (rc != 0)
        return sd_set_error(SD_ERR_INVALID_ARG, "--host %s: %s", host, gai_strerror(rc));
    memcpy(addr, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return SD_OK;
}

sd_status_t serve_http_start(serve_t *s)
{
    const serve_options_t *o = s->opts;
    struct sockaddr_storage addr = {0};
    SD_CHECK(resolve(o->host, o->port, &addr));
    int v6 = addr.ss_family == AF_INET6;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                     MHD_USE_ITC | MHD_USE_ERROR_LOG | (v6 ? MHD_USE_IPv6 : 0);
    unsigned limit = (unsigned)(o->max_active + o->max_queued + 64);
    s->daemon = MHD_start_daemon(flags, (uint16_t)o->port, NULL, NULL, on_request, s,
                                 MHD_OPTION_EXTERNAL_LOGGER, log_mhd, NULL,
                                 MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
                                 MHD_OPTION_CONNECTION_LIMIT, limit,
                                 MHD_OPTION_CONNECTION_TIMEOUT, 60u,
                                 MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_END);
    if (!s->daemon)
        return sd_set_error(SD_ERR_IO, "cannot listen on %s port %d", o->host, o->port);
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    snprintf(s->url, sizeof s->url, v6 ? "http://[%s]:%u" : "http://%s:%u", o->host,
             info ? (unsigned)info->port : (unsigned)o->port);
    return SD_OK;
}

void serve_http_quiesce(serve_t *s)
{
    if (s->daemon) s->listen_fd = (int)MHD_quiesce_daemon(s->daemon);
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
    if (s->daemon) MHD_stop_daemon(s->daemon);
    if (s->listen_fd >= 0) close(s->listen_fd);
    s->daemon = NULL;
    s->listen_fd = -1;
}
