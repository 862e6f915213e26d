/* `specdec serve`: options, the lifecycle (listen, load, serve until SIGINT/SIGTERM, drain,
 * free) and the one "serving" line on stderr that scripts and tests wait for. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "serve.h"

/* After the engine has finished every request, responses still being written get this
 * long before the connections are closed. */
#define SERVE_DRAIN_SECONDS 5.0

static const char serve_usage[] =
    "usage: specdec serve -m MODEL.gguf [options]\n"
    "  OpenAI-compatible HTTP server: POST /v1/chat/completions, /v1/completions;\n"
    "  GET /v1/models, /health, /metrics (docs/serve.md)\n"
    "  -m, --model PATH       the target model (GGUF)\n"
    "  --draft %s, --k K, --no-adaptive\n"
    "                         speculative decoding\n"
    "  --tree SHAPE           token trees: WxWx... candidates per level (e.g. 4x2x2x1) or\n"
    "                         dynamic:N (N nodes), for every request (docs/serve.md)\n"
    "  -t, --threads N, -c, --ctx N, --device D   as for `specdec run`\n"
    "  --host ADDR            address to listen on (default 127.0.0.1)\n"
    "  --port P               port (default 8080; 0 = any free port)\n"
    "  --max-active N         requests stepping together (default 16)\n"
    "  --max-queued N         requests waiting for a slot; more get 429 (default 64)\n"
    "  --max-batch-rows N     rows of one batched forward (default 128)\n"
    "  --max-body-bytes N     larger request bodies get 413 (default 1048576)\n"
    "  --grace-seconds S      on SIGINT/SIGTERM, let requests run this long (default 10)\n"
    "  --no-load-aware-drafts draft as if alone even when many requests share a step\n"
    "                         (default: cut drafts that do not pay at the batch's load)\n"
    "  --no-prefix-cache      prefill every prompt whole (default: reuse the KV of cached\n"
    "                         prompt prefixes)\n"
    "  --model-id NAME        the model name clients send (default: the file name without .gguf)\n"
    "  --api-key KEY, --api-key-file F\n"
    "                         /v1/* and /tokenize, /detokenize need 'Authorization: Bearer KEY'\n"
    "                         (F: a file holding the key; default: SPECDEC_API_KEY, else none)\n"
    "  --metrics-key KEY, --metrics-key-file F   the same for GET /metrics (default: open)\n"
    "  --special              parse special tokens such as <|im_end|> written in messages and\n"
    "                         prompts (trusted clients only; default: plain text, only the chat\n"
    "                         template's own markup becomes special tokens)\n"
    "  --request-timeout S    a request's headers and body must arrive within S seconds of\n"
    "                         connecting (default 10)\n"
    "  --max-connections N    open connections in total (default 1024)\n"
    "  --max-client-connections N  open connections from one client address (default 256)\n";

/* Longest key accepted (bytes). */
#define SERVE_MAX_KEY 4096

/* A key (from `what`) must be one token of visible ASCII: what a Bearer header carries.
 * The message never shows the key. */
static int check_key(const char *what, const char *key)
{
    size_t n = strlen(key);
    if (n == 0) return fprintf(stderr, "specdec: error: %s: the key is empty\n", what), 0;
    if (n > SERVE_MAX_KEY)
        return fprintf(stderr, "specdec: error: %s: the key is %zu bytes; at most %d\n", what, n,
                       SERVE_MAX_KEY), 0;
    for (size_t i = 0; i < n; i++)
        if (key[i] < 0x21 || key[i] > 0x7e)
            return fprintf(stderr, "specdec: error: %s: byte %zu of the key is 0x%02x; a key is "
                                   "visible ASCII without spaces\n", what, i + 1,
                           (unsigned char)key[i]), 0;
    return 1;
}

/* The key in file path (one line; a final newline is not part of it) into *out (malloc'd,
 * also kept in o->owned for freeing). */
static int read_key_file(const char *flag, const char *path, const char **out, char **owned)
{
    FILE *f = fopen(path, "rb");
    if (!f) return fprintf(stderr, "specdec: error: %s %s: %s\n", flag, path, strerror(errno)), 0;
    char *key = calloc(SERVE_MAX_KEY + 3, 1);
    size_t n = key ? fread(key, 1, SERVE_MAX_KEY + 2, f) : 0;
    fclose(f);
    if (!key) return fprintf(stderr, "specdec: error: out of memory\n"), 0;
    free(*owned);
    *owned = key;
    if (n > 0 && key[n - 1] == '\n') key[--n] = '\0';
    if (n > 0 && key[n - 1] == '\r') key[--n] = '\0';
    char what[600];
    snprintf(what, sizeof what, "%s %s", flag, path);
    if (memchr(key, '\0', n)) return fprintf(stderr, "specdec: error: %s: the key holds a NUL byte\n", what), 0;
    if (!check_key(what, key)) return 0;
    *out = key;
    return 1;
}

/* Options `specdec run` shares: passed on to cli_parse_gen_opts. */
static int is_gen_flag(const char *flag, int *takes_value)
{
    static const char *const with_value[] = {"-m", "--model", "--draft", "--k", "-t",
                                             "--threads", "-c", "--ctx", "--device",
                                             "--draft-ranks", "--tree"};
    *takes_value = 1;
    for (size_t i = 0; i < sizeof with_value / sizeof with_value[0]; i++)
        if (!strcmp(flag, with_value[i])) return 1;
    *takes_value = 0;
    return !strcmp(flag, "--no-adaptive");
}

/* One server option with its value; 0 (after printing the error) when bad or unknown. */
static int parse_serve_flag(const char *flag, const char *v, serve_options_t *o)
{
    if (!strcmp(flag, "--host")) return o->host = v, 1;
    if (!strcmp(flag, "--port")) return cli_parse_int(flag, v, 0, 65535, &o->port);
    if (!strcmp(flag, "--max-active")) return cli_parse_int(flag, v, 1, 4096, &o->max_active);
    if (!strcmp(flag, "--max-queued")) return cli_parse_int(flag, v, 0, 1 << 20, &o->max_queued);
    if (!strcmp(flag, "--max-batch-rows"))
        return cli_parse_int(flag, v, 1, 1 << 16, &o->max_batch_rows);
    if (!strcmp(flag, "--max-body-bytes"))
        return cli_parse_int(flag, v, 1, INT_MAX, &o->max_body_bytes);
    if (!strcmp(flag, "--grace-seconds"))
        return cli_parse_float(flag, v, 0.0f, 86400.0f, &o->grace_seconds);
    if (!strcmp(flag, "--model-id")) {
        if (!v[0]) return fprintf(stderr, "specdec: error: --model-id must not be empty\n"), 0;
        if (strlen(v) >= sizeof ((serve_t *)0)->model_id) /* clients must send it whole */
            return fprintf(stderr, "specdec: error: --model-id is %zu bytes; at most %zu\n",
                           strlen(v), sizeof ((serve_t *)0)->model_id - 1), 0;
        return o->model_id = v, 1;
    }
    if (!strcmp(flag, "--api-key") || !strcmp(flag, "--metrics-key")) {
        const char **key = flag[2] == 'a' ? &o->api_key : &o->metrics_key;
        if (*key) return fprintf(stderr, "specdec: error: %s: a key is already given\n", flag), 0;
        return check_key(flag, v) ? (*key = v, 1) : 0;
    }
    if (!strcmp(flag, "--api-key-file") || !strcmp(flag, "--metrics-key-file")) {
        int api = flag[2] == 'a';
        const char **key = api ? &o->api_key : &o->metrics_key;
        if (*key) return fprintf(stderr, "specdec: error: %s: a key is already given\n", flag), 0;
        return read_key_file(flag, v, key, &o->owned[api ? 0 : 1]);
    }
    if (!strcmp(flag, "--request-timeout"))
        return cli_parse_float(flag, v, 0.1f, 3600.0f, &o->request_timeout);
    if (!strcmp(flag, "--max-connections"))
        return cli_parse_int(flag, v, 1, 1 << 16, &o->max_connections);
    if (!strcmp(flag, "--max-client-connections"))
        return cli_parse_int(flag, v, 1, 1 << 16, &o->max_client_connections);
    fprintf(stderr, "specdec: error: unknown serve option '%s' (see specdec serve --help)\n", flag);
    return 0;
}

/* argv[2..] -> *o. Returns 1 to serve, 0 after a one-line error, -1 after --help. */
static int parse_options(int argc, char **argv, serve_options_t *o, char **gen_argv)
{
    *o = (serve_options_t){.host = "127.0.0.1", .port = 8080, .max_active = 16,
                           .max_queued = 64, .max_batch_rows = 128,
                           .max_body_bytes = 1 << 20, .grace_seconds = 10.0f,
                           .request_timeout = 10.0f, .max_connections = 1024,
                           .max_client_connections = 256};
    int n_gen = 0, takes_value;
    for (int i = 2; i < argc; i++) {
        const char *flag = argv[i];
        if (!strcmp(flag, "-h") || !strcmp(flag, "--help")) return cli_print_usage(serve_usage), -1;
        if (!strcmp(flag, "--no-load-aware-drafts") || !strcmp(flag, "--special")) {
            *(flag[2] == 'n' ? &o->no_load_aware : &o->parse_special) = 1;
            continue;
        }
        if (!strcmp(flag, "--no-prefix-cache")) {
            o->no_prefix_cache = 1;
            continue;
        }
        int gen = is_gen_flag(flag, &takes_value);
        if (gen && !takes_value) {
            gen_argv[n_gen++] = argv[i];
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "specdec: error: option '%s' needs a value\n", flag);
            return 0;
        }
        if (gen) {
            gen_argv[n_gen++] = argv[i];
            gen_argv[n_gen++] = argv[++i];
        } else if (!parse_serve_flag(flag, argv[++i], o)) {
            return 0;
        }
    }
    if (!cli_parse_gen_opts(n_gen, gen_argv, 0, &o->gen)) return 0;
    if (!o->gen.model_path) return fprintf(stderr, "specdec: error: serve needs -m MODEL.gguf\n"), 0;
    const char *env_key = getenv("SPECDEC_API_KEY"); /* read here only (README) */
    if (!o->api_key && env_key && !check_key("SPECDEC_API_KEY", env_key)) return 0;
    if (!o->api_key) o->api_key = env_key;
    return 1;
}

/* The file name of path without a ".gguf" ending, into buf[cap]. */
static void file_stem(const char *path, char *buf, size_t cap)
{
    const char *base = strrchr(path, '/');
    snprintf(buf, cap, "%s", base ? base + 1 : path);
    size_t n = strlen(buf);
    if (n > 5 && !strcmp(buf + n - 5, ".gguf")) buf[n - 5] = '\0';
}

static void serve_init(serve_t *s, const serve_options_t *o)
{
    memset(s, 0, sizeof *s);
    s->opts = o;
    if (o->model_id) snprintf(s->model_id, sizeof s->model_id, "%s", o->model_id);
    else file_stem(o->gen.model_path, s->model_id, sizeof s->model_id);
    if (o->gen.draft_path)
        file_stem(o->gen.draft_path, s->drafter, sizeof s->drafter);
    else if (o->gen.spec.drafter != SD_DRAFTER_NONE)
        snprintf(s->drafter, sizeof s->drafter, "%s", sd_drafter_kind_name(o->gen.spec.drafter));
    atomic_init(&s->state, SERVE_LOADING);
    atomic_init(&s->next_id, 1);
    atomic_init(&s->next_seed, 1);
    for (int i = 0; i < SERVE_MAX_HTTP_STATUS; i++) atomic_init(&s->responses[i], 0);
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->idle, NULL);
    s->started = (long long)time(NULL);
}

static sd_status_t start_engine(serve_t *s, serve_options_t *o)
{
    sd_engine_params_t p;
    sd_engine_params_default(&p);
    p.model = s->model;
    p.spec = o->gen.spec;
    p.max_active = o->max_active;
    p.max_queued = o->max_queued;
    p.max_batch_rows = o->max_batch_rows;
    p.load_aware_drafts = !o->no_load_aware;
    p.prefix_cache = !o->no_prefix_cache;
    sd_status_t st = sd_engine_create(&p, &s->engine);
    if (st != SD_OK) cli_fail("start the serving engine", st);
    return st;
}

/* Load the target (and draft) model, start the engine, then turn SERVE_READY. Each
 * failure has printed its error line. */
static sd_status_t load(serve_t *s, serve_options_t *o)
{
    sd_status_t st = cli_load_model(&o->gen, &s->model);
    if (st != SD_OK) return st;
    if ((st = cli_load_draft(&o->gen)) != SD_OK) return st;
    if ((st = start_engine(s, o)) != SD_OK) return st;
    sd_model_info_t info;
    sd_model_get_info(s->model, &info);
    s->oai = (oai_model_t){.model = s->model, .id = s->model_id, .n_ctx = info.n_ctx,
                           .n_vocab = info.n_vocab, .parse_special = o->parse_special};
    atomic_store(&s->state, SERVE_READY);
    return SD_OK;
}

/* Ranks > 0 of a tensor-parallel server: no HTTP; load this rank's shard, create the
 * engine, step with rank 0 until it stops (or the group fails), free. */
static int follow_rank0(serve_t *s, serve_options_t *o)
{
    sd_status_t st = load(s, o);
    if (st == SD_OK && (st = sd_engine_wait_stopped(s->engine)) != SD_OK)
        cli_fail("serve", st);
    sd_engine_free(s->engine);
    sd_model_free(s->model);
    cli_release(&o->gen);
    return st == SD_OK ? CLI_EXIT_OK : cli_exit_code(st);
}

/* Stop accepting, let the engine finish or cancel what runs (grace period), let the
 * responses drain, close the server, free everything. */
static void shut_down(serve_t *s, serve_options_t *o)
{
    atomic_store(&s->state, SERVE_STOPPING);
    serve_http_quiesce(s);
    if (s->engine) sd_engine_shutdown(s->engine, o->grace_seconds);
    serve_http_wait_idle(s, SERVE_DRAIN_SECONDS);
    serve_http_stop(s);
    sd_engine_free(s->engine);
    sd_model_free(s->model);
    cli_release(&o->gen);
    pthread_cond_destroy(&s->idle);
    pthread_mutex_destroy(&s->lock);
}

/* Each connection takes a descriptor or two (listener.c): raise the soft limit to the hard
 * one, and say so when even that cannot hold --max-connections. */
static void raise_fd_limit(const serve_options_t *o)
{
    struct rlimit r;
    if (getrlimit(RLIMIT_NOFILE, &r) != 0) return;
    if (r.rlim_cur < r.rlim_max) {
        r.rlim_cur = r.rlim_max;
        setrlimit(RLIMIT_NOFILE, &r);
    }
    rlim_t need = 2 * (rlim_t)o->max_connections + 64;
    if (r.rlim_cur != RLIM_INFINITY && r.rlim_cur < need)
        fprintf(stderr, "specdec: warning: the open-file limit is %llu; --max-connections %d "
                        "needs about %llu (ulimit -n)\n", (unsigned long long)r.rlim_cur,
                o->max_connections, (unsigned long long)need);
}

/* Serve with the parsed options until a signal; the exit code. */
static int serve(serve_options_t *o)
{
    /* Every thread (the server's, the engine's, the kernels') inherits this mask, so the
     * signals reach only the sigwait below. */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit(o);
    serve_t s;
    serve_init(&s, o);
    /* join first, so that only rank 0 listens (the world's backend fits --device) */
    sd_status_t st = cli_join_world(&o->gen);
    if (st != SD_OK) return cli_exit_code(st);
    if (sd_comm_rank(o->gen.world) > 0) return follow_rank0(&s, o);
    st = serve_http_start(&s);
    if (st != SD_OK) {
        int rc = cli_fail("serve", st);
        cli_release(&o->gen);
        return rc;
    }
    fprintf(stderr, "specdec: serving %s on %s\n", s.model_id, s.url);
    fflush(stderr);
    st = load(&s, o);
    int sig = 0;
    if (st == SD_OK) sigwait(&stop_signals, &sig);
    if (sig) fprintf(stderr, "specdec: %s: shutting down\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    shut_down(&s, o);
    return st == SD_OK ? CLI_EXIT_OK : cli_exit_code(st);
}

int cmd_serve(int argc, char **argv)
{
    serve_options_t o;
    char **gen_argv = calloc((size_t)argc, sizeof *gen_argv);
    if (!gen_argv) return fprintf(stderr, "specdec: error: out of memory\n"), CLI_EXIT_ERROR;
    int parsed = parse_options(argc, argv, &o, gen_argv);
    free(gen_argv); /* o keeps pointers to argv's strings, not to gen_argv */
    int rc = parsed < 0 ? CLI_EXIT_OK : parsed == 0 ? CLI_EXIT_USAGE : serve(&o);
    free(o.owned[0]);
    free(o.owned[1]);
    return rc;
}
