/* The server's route table (apps/serve/routes.h) without a server: every row is complete
 * and reachable, and the lookup picks the row, a 404 or a 405 (with the Allow list). */
#include <criterion/criterion.h>
#include <string.h>

#include "apps/serve/routes.h"

Test(serve_routes, rows_are_complete, .timeout = 10)
{
    cr_assert_gt(serve_n_routes, 0);
    for (size_t i = 0; i < serve_n_routes; i++) {
        const serve_route_t *r = &serve_routes[i];
        cr_assert_not_null(r->method, "row %zu has no method", i);
        cr_assert_not_null(r->path, "row %zu (%s) has no path", i, r->method);
        cr_assert_not_null(r->handler, "row %zu (%s %s) has no handler", i, r->method, r->path);
        cr_assert(r->method[0] != '\0', "row %zu (%s) has an empty method", i, r->path);
        cr_assert_eq(r->path[0], '/', "row %zu: path '%s' does not start with /", i, r->path);
        cr_assert(r->auth >= SERVE_AUTH_OPEN && r->auth <= SERVE_AUTH_METRICS,
                  "row %zu (%s %s) names no auth class", i, r->method, r->path);
    }
}

Test(serve_routes, method_and_path_are_unique, .timeout = 10)
{
    for (size_t i = 0; i < serve_n_routes; i++)
        for (size_t j = i + 1; j < serve_n_routes; j++)
            cr_assert(strcmp(serve_routes[i].path, serve_routes[j].path) != 0 ||
                          strcmp(serve_routes[i].method, serve_routes[j].method) != 0,
                      "rows %zu and %zu are both %s %s", i, j, serve_routes[i].method,
                      serve_routes[i].path);
}

Test(serve_routes, every_row_is_found_by_its_method_and_path, .timeout = 10)
{
    for (size_t i = 0; i < serve_n_routes; i++) {
        const serve_route_t *r = &serve_routes[i], *found = NULL;
        cr_assert_eq(serve_route_find(r->method, r->path, &found), SERVE_ROUTE_FOUND, "%s %s",
                     r->method, r->path);
        cr_assert_eq(found, r, "%s %s found row %td, not %zu", r->method, r->path,
                     found - serve_routes, i);
    }
}

/* The served endpoints and their per-route facts, as docs/serve.md lists them. */
Test(serve_routes, the_endpoints, .timeout = 10)
{
    static const struct {
        const char *method, *path;
        serve_auth_t auth;
        int needs_model, reads_body;
        oai_endpoint_t endpoint;
    } want[] = {
        {"GET", "/health", SERVE_AUTH_OPEN, 0, 0, 0},
        {"GET", "/metrics", SERVE_AUTH_METRICS, 0, 0, 0},
        {"GET", "/v1/models", SERVE_AUTH_API, 1, 0, 0},
        {"POST", "/v1/chat/completions", SERVE_AUTH_API, 1, 1, OAI_CHAT},
        {"POST", "/v1/completions", SERVE_AUTH_API, 1, 1, OAI_COMPLETIONS},
        {"POST", "/tokenize", SERVE_AUTH_API, 1, 1, 0},
        {"POST", "/detokenize", SERVE_AUTH_API, 1, 1, 0},
    };
    cr_assert_eq(serve_n_routes, sizeof want / sizeof want[0]);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const serve_route_t *r = NULL;
        cr_assert_eq(serve_route_find(want[i].method, want[i].path, &r), SERVE_ROUTE_FOUND,
                     "%s %s", want[i].method, want[i].path);
        cr_expect_eq(r->auth, want[i].auth, "%s auth", want[i].path);
        cr_expect_eq(r->needs_model, want[i].needs_model, "%s needs_model", want[i].path);
        cr_expect_eq(r->reads_body, want[i].reads_body, "%s reads_body", want[i].path);
        if (r->reads_body)
            cr_expect_eq(r->endpoint, want[i].endpoint, "%s endpoint", want[i].path);
    }
}

Test(serve_routes, unknown_paths_are_not_found, .timeout = 10)
{
    static const char *const paths[] = {"/v1/nothing", "/", "", "/health/", "/v1/models/",
                                        "/HEALTH", "/v1/chat/completions/x", "health"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        const serve_route_t *r = &serve_routes[0];
        cr_expect_eq(serve_route_find("GET", paths[i], &r), SERVE_ROUTE_NOT_FOUND, "'%s'",
                     paths[i]);
        cr_expect_null(r, "'%s' left a row", paths[i]);
        char allow[32] = "x";
        serve_route_allow(paths[i], allow, sizeof allow);
        cr_expect_str_empty(allow, "'%s' allows '%s'", paths[i], allow);
    }
}

Test(serve_routes, known_path_with_another_method_is_not_allowed, .timeout = 10)
{
    static const struct {
        const char *method, *path, *allow;
    } rows[] = {
        {"POST", "/health", "GET"},
        {"HEAD", "/health", "GET"},
        {"get", "/metrics", "GET"},
        {"DELETE", "/v1/models", "GET"},
        {"GET", "/v1/chat/completions", "POST"},
        {"PUT", "/v1/completions", "POST"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        const serve_route_t *r = &serve_routes[0];
        cr_expect_eq(serve_route_find(rows[i].method, rows[i].path, &r), SERVE_ROUTE_BAD_METHOD,
                     "%s %s", rows[i].method, rows[i].path);
        cr_expect_null(r, "%s %s left a row", rows[i].method, rows[i].path);
        char allow[32];
        serve_route_allow(rows[i].path, allow, sizeof allow);
        cr_expect_str_eq(allow, rows[i].allow, "%s", rows[i].path);
    }
}

Test(serve_routes, allow_list_is_cut_to_fit, .timeout = 10)
{
    char allow[3] = "xx";
    serve_route_allow("/v1/completions", allow, sizeof allow);
    cr_expect_str_eq(allow, "PO");
    serve_route_allow("/v1/completions", allow, 1);
    cr_expect_str_empty(allow);
}
