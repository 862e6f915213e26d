/* The endpoints: the GET ones and non-streaming generations (streaming lives in
 * http_stream.c), and serve_routes[], the one table http.c dispatches from. */
#define _GNU_SOURCE /* POLLRDHUP */
#include "routes.h"

#include "tokenize_api.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/check.h"

/* ---- GET endpoints ----------------------------------------------------------------------- */

static enum MHD_Result get_health(serve_t *s, struct MHD_Connection *c,
                                  const serve_route_t *route, const char *body, size_t len)
{
    static const char *const bodies[] = {[SERVE_LOADING] = "{\"status\":\"loading\"}",
                                         [SERVE_READY] = "{\"status\":\"ok\"}",
                                         [SERVE_STOPPING] = "{\"status\":\"stopping\"}"};
    int state = atomic_load(&s->state);
    return http_respond_json(s, c, state == SERVE_READY ? 200 : 503, strdup(bodies[state]));
}

static enum MHD_Result get_models(serve_t *s, struct MHD_Connection *c,
                                  const serve_route_t *route, const char *body, size_t len)
{
    return http_respond_json(s, c, 200, oai_models_json(s->model_id, s->started));
}

static enum MHD_Result get_metrics(serve_t *s, struct MHD_Connection *c,
                                   const serve_route_t *route, const char *body, size_t len)
{
    size_t n = 0;
    char *text = serve_metrics_text(s, &n);
    return http_respond(s, c, 200, "text/plain; version=0.0.4; charset=utf-8", text, n);
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

/* The response to a request whose choice failed with st (results[i] its result). */
static enum MHD_Result failed_generation(serve_t *s, struct MHD_Connection *c, sd_status_t st,
                                         const sd_gen_result_t *res)
{
    if (st == SD_ERR_CANCELLED)
        return http_respond_errorf(s, c, 503, "server_error", "cancelled",
                                   "the request was cancelled after %zu tokens (server shutting "
                                   "down or client gone)", res->n_tokens);
    return http_respond_submit_error(s, c, st);
}

static enum MHD_Result blocking_generation(serve_t *s, struct MHD_Connection *c,
                                           const oai_request_t *req, const oai_reply_t *reply)
{
    int n = req->n, failed = -1;
    sd_request_t **r = calloc((size_t)n, sizeof *r);
    sd_gen_result_t *res = calloc((size_t)n, sizeof *res);
    sd_status_t st = r && res ? sd_engine_submit_choices(s->engine, req->prompt, req->n_prompt,
                                                         &req->gen, n, NULL, NULL, r)
                              : sd_set_error(SD_ERR_OUT_OF_MEMORY, "%d choices", n);
    if (st != SD_OK) return free(r), free(res), http_respond_submit_error(s, c, st);
    for (int i = 0; i < n; i++) {
        sd_status_t ci = wait_result(c, r[i], &res[i]);
        if (ci != SD_OK && failed < 0) {
            failed = i, st = ci;
            for (int j = i + 1; j < n; j++) sd_request_cancel(r[j]); /* the answer is an error */
        }
    }
    enum MHD_Result ok = failed < 0 ? http_respond_json(s, c, 200, oai_response_json(reply, res, n))
                                    : failed_generation(s, c, st, &res[failed]);
    for (int i = 0; i < n; i++) {
        sd_request_free(r[i]);
        sd_gen_result_free(&res[i]);
    }
    free(r), free(res);
    return ok;
}

static void make_reply(serve_t *s, const oai_request_t *req, oai_reply_t *reply)
{
    unsigned long long n = atomic_fetch_add(&s->next_id, 1);
    *reply = (oai_reply_t){.endpoint = req->endpoint, .created = (long long)time(NULL),
                           .model_id = s->model_id, .seed = req->gen.seed,
                           .drafter = s->drafter[0] ? s->drafter : NULL,
                           .k = s->drafter[0] ? s->opts->gen.spec.k : 0,
                           .logprobs = req->gen.logprobs, .model = s->model};
    snprintf(reply->id, sizeof reply->id, "%s-%llu",
             req->endpoint == OAI_CHAT ? "chatcmpl" : "cmpl", n);
}

static enum MHD_Result post_generation(serve_t *s, struct MHD_Connection *c,
                                       const serve_route_t *route, const char *body, size_t len)
{
    oai_request_t req;
    oai_error_t err;
    sd_status_t st = oai_parse_request(&s->oai, route->endpoint, body, len, &req, &err);
    enum MHD_Result ok;
    int most = s->opts->max_active + s->opts->max_queued; /* sd_engine_submit_choices' limit */
    if (st == SD_OK && req.n > most) {
        oai_error_set(&err, 400, "invalid_request_error", "n", NULL, "n = %d exceeds the %d "
                      "requests this server holds at once (--max-active %d + --max-queued %d)",
                      req.n, most, s->opts->max_active, s->opts->max_queued);
        st = SD_ERR_INVALID_ARG;
    }
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

/* ---- token ids (llama-server's /tokenize and /detokenize) ------------------------------------ */

static enum MHD_Result post_tokenize(serve_t *s, struct MHD_Connection *c,
                                     const serve_route_t *route, const char *body, size_t len)
{
    oai_error_t err;
    char *out = tokenize_api_tokenize(&s->oai, body, len, &err);
    return out ? http_respond_json(s, c, 200, out) : http_respond_error(s, c, &err);
}

static enum MHD_Result post_detokenize(serve_t *s, struct MHD_Connection *c,
                                       const serve_route_t *route, const char *body, size_t len)
{
    oai_error_t err;
    char *out = tokenize_api_detokenize(&s->oai, body, len, &err);
    return out ? http_respond_json(s, c, 200, out) : http_respond_error(s, c, &err);
}

/* ---- the table ----------------------------------------------------------------------------- */

const serve_route_t serve_routes[] = {
    {.method = MHD_HTTP_METHOD_GET, .path = "/health", .handler = get_health,
     .auth = SERVE_AUTH_OPEN},
    {.method = MHD_HTTP_METHOD_GET, .path = "/metrics", .handler = get_metrics,
     .auth = SERVE_AUTH_METRICS},
    {.method = MHD_HTTP_METHOD_GET, .path = "/v1/models", .handler = get_models,
     .auth = SERVE_AUTH_API, .needs_model = 1},
    {.method = MHD_HTTP_METHOD_POST, .path = "/v1/chat/completions", .handler = post_generation,
     .auth = SERVE_AUTH_API, .needs_model = 1, .reads_body = 1, .endpoint = OAI_CHAT},
    {.method = MHD_HTTP_METHOD_POST, .path = "/v1/completions", .handler = post_generation,
     .auth = SERVE_AUTH_API, .needs_model = 1, .reads_body = 1, .endpoint = OAI_COMPLETIONS},
    {.method = MHD_HTTP_METHOD_POST, .path = "/tokenize", .handler = post_tokenize,
     .auth = SERVE_AUTH_API, .needs_model = 1, .reads_body = 1},
    {.method = MHD_HTTP_METHOD_POST, .path = "/detokenize", .handler = post_detokenize,
     .auth = SERVE_AUTH_API, .needs_model = 1, .reads_body = 1},
};
const size_t serve_n_routes = sizeof serve_routes / sizeof serve_routes[0];

serve_route_match_t serve_route_find(const char *method, const char *path,
                                     const serve_route_t **row)
{
    serve_route_match_t match = SERVE_ROUTE_NOT_FOUND;
    *row = NULL;
    for (size_t i = 0; i < serve_n_routes; i++) {
        if (strcmp(path, serve_routes[i].path) != 0) continue;
        if (strcmp(method, serve_routes[i].method) == 0)
            return *row = &serve_routes[i], SERVE_ROUTE_FOUND;
        match = SERVE_ROUTE_BAD_METHOD;
    }
    return match;
}

void serve_route_allow(const char *path, char *allow, size_t size)
{
    size_t n = 0;
    allow[0] = '\0';
    for (size_t i = 0; i < serve_n_routes && n < size; i++)
        if (strcmp(path, serve_routes[i].path) == 0)
            n += (size_t)snprintf(allow + n, size - n, "%s%s", n ? ", " : "",
                                  serve_routes[i].method);
}
