/* fuzz_cli: `specdec serve` options (apps/serve/serve_main.c, included for its parser). */
#define cmd_serve fuzz_cli_unused_cmd_serve
#include "apps/serve/serve_main.c"

#include "fuzz/fuzz.h"
#include "fuzz/fuzz_cli.h"

static int check_serve(const serve_options_t *o)
{
    FUZZ_CHECK(o->port >= 0 && o->port <= 65535, "--port %d", o->port);
    FUZZ_CHECK(o->max_active >= 1 && o->max_queued >= 0 && o->max_batch_rows >= 1 &&
                   o->max_body_bytes >= 1 && o->grace_seconds >= 0 &&
                   o->request_timeout >= 0.1f && o->request_timeout <= 3600.0f &&
                   o->max_connections >= 1 && o->max_connections <= 1 << 16 &&
                   o->max_client_connections >= 1 && o->max_client_connections <= 1 << 16,
               "serve limits");
    FUZZ_CHECK(o->gen.model_path != NULL, "serve accepted without -m");
    serve_t s;
    serve_init(&s, o);
    if (o->model_id)
        FUZZ_CHECK(!strcmp(s.model_id, o->model_id), "--model-id '%.40s...' (%zu bytes) became '%.40s...'",
                   o->model_id, strlen(o->model_id), s.model_id);
    pthread_mutex_destroy(&s.lock);
    pthread_cond_destroy(&s.idle);
    return 1;
}

int fuzz_cli_serve(int argc, char **argv)
{
    serve_options_t o;
    char **gen_argv = calloc((size_t)argc, sizeof *gen_argv);
    if (!gen_argv) abort();
    /* --help prints the usage to stdout and is an acceptance */
    int parsed = parse_options(argc, argv, &o, gen_argv);
    free(gen_argv);
    int accepted = parsed < 0 || (parsed > 0 && check_serve(&o));
    free(o.owned[0]), free(o.owned[1]); /* keys read from --api-key-file, --metrics-key-file */
    return accepted;
}
