/* The HTTP endpoints as one table (routes.c): a row per method and path with its handler and
 * what the dispatcher in http.c does before calling it. An endpoint is a handler plus a row. */
#ifndef SPECDEC_APPS_SERVE_ROUTES_H
#define SPECDEC_APPS_SERVE_ROUTES_H

#include <stddef.h>

#include "http.h"

typedef struct serve_route serve_route_t;

/* Answer one request by queueing one response (http_respond*). body[len] is the request
 * body for rows that read one, else "" and 0. */
typedef enum MHD_Result (*serve_route_fn)(serve_t *s, struct MHD_Connection *c,
                                          const serve_route_t *route, const char *body,
                                          size_t len);

/* Who may use a route. Every row names one (0 is no value), so a row cannot forget it. */
typedef enum serve_auth {
    SERVE_AUTH_OPEN = 1, /* anyone (/health) */
    SERVE_AUTH_API,      /* Authorization: Bearer --api-key, when the server has one */
    SERVE_AUTH_METRICS,  /* Authorization: Bearer --metrics-key, when the server has one */
} serve_auth_t;

struct serve_route {
    const char *method;      /* MHD_HTTP_METHOD_GET, ...: compared exactly */
    const char *path;        /* starts with "/": compared exactly (MHD strips the query) */
    serve_route_fn handler;
    serve_auth_t auth;       /* checked before anything else, the body included */
    int needs_model;         /* 503 model_loading / shutting_down unless the server is ready */
    int reads_body;          /* call the handler with the body (at most --max-body-bytes) */
    oai_endpoint_t endpoint; /* what a generation row parses (chat or completions) */
};

extern const serve_route_t serve_routes[];
extern const size_t serve_n_routes;

typedef enum serve_route_match {
    SERVE_ROUTE_FOUND,       /* *row is the row for method and path */
    SERVE_ROUTE_NOT_FOUND,   /* no row has the path: 404 */
    SERVE_ROUTE_BAD_METHOD,  /* rows have the path, none the method: 405 */
} serve_route_match_t;

/* Look up method and path in serve_routes; *row is set for SERVE_ROUTE_FOUND, else NULL. */
serve_route_match_t serve_route_find(const char *method, const char *path,
                                     const serve_route_t **row);
/* The methods path's rows take, as an Allow header lists them ("GET", "GET, POST"), into
 * allow[size] (NUL-terminated, cut to fit); "" for a path no row has. */
void serve_route_allow(const char *path, char *allow, size_t size);

#endif
