/* libmicrohttpd glue: one thread per connection. Routes, request bodies (size-limited,
 * never buffered past --max-body-bytes), the GET endpoints and non-streaming generations;
 * streaming lives in http_stream.c. */
#define _GNU_SOURCE /* POLLRDHUP */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/check.h"

typedef enum route {
    ROUTE_HEALTH,
    ROUTE_METRICS,
    ROUTE_MODELS,
    ROUTE_CHAT,
    ROUTE_COMPLETIONS,
    ROUTE_COUNT,
} route_t;

static const struct {
    const char *path, *method;
} routes[ROUTE_COUNT] = {
    [ROUTE_HEALTH] = {"/health", MHD_HTTP_METHOD_GET},
    [ROUTE_METRICS] = {"/metrics", MHD_HTTP_METHOD_GET},
    [ROUTE_MODELS] = {"/v1/models", MHD_HTTP_METHOD_GET},
    [ROUTE_CHAT] = {"/v1/chat/completions", MHD_HTTP_METHOD_POST},
    [ROUTE_COMPLETIONS] = {"/v1/completions", MHD_HTTP_METHOD_POST},
};

/* One HTTP request, from its headers until its response is sent (MHD's con_cls). */
typedef struct exchange {
    route_t route;
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

enum MHD_Result http_respond(serve_t *s, struct MHD_Connection *c, int status,
                             const char *content_type, char *body, size_t len)
{
    static char oom[] = "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\","
                        "\"param\":null,\"code\":null}}";
    struct MHD_Response *r;
    if (body) {
        r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
        if (!r) free(body);
    } else {
        status = 500, content_type = json_type;
        r = MHD_create_response_from_buffer(strlen(oom), oom, MHD_RESPMEM_PERSISTENT);
    }
    if (r) MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    return http_queue(s, c, status, r);
}

enum MHD_Result http_respond_error(serve_t *s, struct MHD_Connection *c, const oai_error_t *err)
{
    char *body = oai_error_json(err);
    return http_respond(s, c, err->http_status, json_type, body, body ? strlen(body) : 0);
}

static enum MHD_Result respond_errorf(serve_t *s, struct MHD_Connection *c, int status,
                                      const char *type, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static enum MHD_Result respond_errorf(serve_t *s, struct MHD_Connection *c, int status,
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
    return respond_errorf(s, c, 503, "server_error", loading ? "model_loading" : "shutting_down",
                          loading ? "the model '%s' is still loading" : "the server is shutting "
                                                                        "down ('%s')",
                          s->model_id);
}

enum MHD_Result http_respond_submit_error(serve_t *s, struct MHD_Connection *c, sd_status_t st)
{
    if (atomic_load(&s->state) != SERVE_READY) return respond_unavailable(s, c);
    oai_error_t e;
    oai_error_from_status(st, sd_last_error(), &e);
    return http_respond_error(s, c, &e);
}

/* ---- GET endpoints ----------------------------------------------------------------------- */

static enum MHD_Result get_health(serve_t *s, struct MHD_Connection *c)
{
    static const char *const bodies[] = {[SERVE_LOADING] = "{\"status\":\"loading\"}",
                                         [SERVE_READY] = "{\"status\":\"ok\"}",
                                         [SERVE_STOPPING] = "{\"status\":\"stopping\"}"};
    int state = atomic_load(&s->state);
    char *body = strdup(bodies[state]);
    return http_respond(s, c, state == SERVE_READY ? 200 : 503, json_type, body,
                        body ? strlen(body) : 0);
}

static enum MHD_Result get_models(serve_t *s, struct MHD_Connection *c)
{
    if (atomic_load(&s->state) != SERVE_READY) return respond_unavailable(s, c);
    char *body = oai_models_json(s->model_id, s->started);
    return http_respond(s, c, 200, json_type, body, body ? strlen(body) : 0);
}

static enum MHD_Result get_metrics(serve_t *s, struct MHD_Connection *c)
{
    size_t len = 0;
    char *body = serve_metrics_text(s, &len);
    return http_respond(s, c, 200, "text/plain; version=0.0.4; charset=utf-8", body, len);
}

/* ---- generation ------------------------------------------------------------------------ */

/* 1 when the client has closed its side of the connection. */
static int client_gone(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return 0;
    struct pollfd p = {.fd = ci->connect_fd, .events = POLLRDHUP};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

/* Wait for the request's end, checking each second whether the client left (then cancel). */
static sd_status_t wait_result(struct MHD_Connection *c, sd_request_t *r, sd_gen_result_t *out)
{
    for (;;) {
        sd_status_t st = sd_request_wait(r, 1.0, out);
        if (st != SD_ERR_BUSY) return st;
        if (client_gone(c)) sd_request_cancel(r);
    }
}

static enum MHD_Result blocking_generation(serve_t *s, struct MHD_Connection *c,
                                           const oai_request_t *req, const oai_reply_t *reply)
{
    sd_request_t *r = NULL;
    sd_status_t st = sd_engine_submit(s->engine, req->prompt, req->n_prompt, &req->gen, NULL,
                                      NULL, &r);
    if (st != SD_OK) return http_respond_submit_error(s, c, st);
    sd_gen_result_t res;
    st = wait_result(c, r, &res);
    sd_request_free(r);
    enum MHD_Result ok;
    if (st == SD_OK) {
        char *body = oai_response_json(reply, &res);
        ok = http_respond(s, c, 200, json_type, body, body ? strlen(body) : 0);
    } else if (st == SD_ERR_CANCELLED) {
        ok = respond_errorf(s, c, 503, "server_error", "cancelled",
                            "the request was cancelled after %zu tokens (server shutting down "
                            "or client gone)", res.n_tokens);
    } else {
        ok = http_respond_submit_error(s, c, st);
    }
    sd_gen_result_free(&res);
    return ok;
}

static void make_reply(serve_t *s, const oai_request_t *req, oai_reply_t *reply)
{
    unsigned long long n = atomic_fetch_add(&s->next_id, 1);
    *reply = (oai_reply_t){.endpoint = req->endpoint, .created = (long long)time(NULL),
                           .model_id = s->model_id, .seed = req->gen.seed,
                           .drafter = s->drafter[0] ? s->drafter : NULL,
                           .k = s->drafter[0] ? s->opts->gen.spec.k : 0};
    snprintf(reply->id, sizeof reply->id, "%s-%llu",
             req->endpoint == OAI_CHAT ? "chatcmpl" : "cmpl", n);
}

static enum MHD_Result post_generation(serve_t *s, struct MHD_Connection *c, exchange_t *x)
{
    if (atomic_load(&s->state) != SERVE_READY) return respond_unavailable(s, c);
    oai_request_t req;
    oai_error_t err;
    oai_endpoint_t ep = x->route == ROUTE_CHAT ? OAI_CHAT : OAI_COMPLETIONS;
    sd_status_t st = oai_parse_request(&s->oai, ep, x->body ? x->body : "", x->len, &req, &err);
    enum MHD_Result ok;
    if (st != SD_OK) {
        ok = http_respond_error(s, c, &err);
    } else {
        if (!req.has_seed) req.gen.seed = atomic_fetch_add(&s->next_seed, 1);
        oai_reply_t reply;
        make_reply(s, &req, &reply);
        ok = req.stream ? http_stream_generation(s, c, &req, &reply)
                        : blocking_generation(s, c, &req, &reply);
    }
    oai_request_free(&req);
    return ok;
}

/* ---- request bodies --------------------------------------------------------------------- */

/* size: the Content-Length, or 0 when the body came in chunks. */
static enum MHD_Result respond_too_large(serve_t *s, struct MHD_Connection *c,
                                         unsigned long long size)
{
    char told[48] = "";
    if (size) snprintf(told, sizeof told, " of %llu bytes", size);
    return respond_errorf(s, c, 413, "invalid_request_error", "request_too_large",
                          "the request body%s exceeds the limit of %d bytes (--max-body-bytes)",
                          told, s->opts->max_body_bytes);
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

/* ---- routing ------------------------------------------------------------------------------ */

static int find_route(const char *url, route_t *out)
{
    for (int r = 0; r < ROUTE_COUNT; r++)
        if (!strcmp(url, routes[r].path)) return *out = (route_t)r, 1;
    return 0;
}

/* The first call for a request: answer GETs and refusals at once, else wait for the body. */
static enum MHD_Result begin(serve_t *s, struct MHD_Connection *c, const char *url,
                             const char *method, exchange_t *x)
{
    if (!find_route(url, &x->route))
        return respond_errorf(s, c, 404, "invalid_request_error", "not_found",
                              "no endpoint %s %s", method, url);
    if (strcmp(method, routes[x->route].method) != 0)
        return respond_errorf(s, c, 405, "invalid_request_error", "method_not_allowed",
                              "%s is not allowed on %s; use %s", method, url,
                              routes[x->route].method);
    if (x->route == ROUTE_HEALTH) return get_health(s, c);
    if (x->route == ROUTE_METRICS) return get_metrics(s, c);
    if (x->route == ROUTE_MODELS) return get_models(s, c);
    if (atomic_load(&s->state) != SERVE_READY) return respond_unavailable(s, c);
    const char *length = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_CONTENT_LENGTH);
    unsigned long long size = length ? strtoull(length, NULL, 10) : 0;
    if (size > (unsigned long long)s->opts->max_body_bytes) return respond_too_large(s, c, size);
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
    if (*upload_size) {
        take_body(s, x, upload_data, *upload_size);
        *upload_size = 0;
        return MHD_YES;
    }
    if (x->too_large) return respond_too_large(s, c, 0);
    return post_generation(s, c, x);
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
