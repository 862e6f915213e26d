/* `specdec serve`, an OpenAI-compatible HTTP server in front of the serving engine: its
 * options, state, HTTP lifecycle and metrics text (docs/serve.md lists the files). */
#ifndef SPECDEC_APPS_SERVE_SERVE_H
#define SPECDEC_APPS_SERVE_SERVE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "apps/cli/cli.h"
#include "openai.h"
#include "specdec/specdec.h"

int cmd_serve(int argc, char **argv);

typedef struct serve_options {
    cli_gen_opts_t gen;   /* -m, --draft, --k, --no-adaptive, -t, -c, --device */
    const char *host;     /* --host (127.0.0.1) */
    int port;             /* --port (8080; 0 = any free port) */
    int max_active;       /* --max-active: requests stepping together */
    int max_queued;       /* --max-queued: requests waiting; one more is a 429 */
    int max_batch_rows;   /* --max-batch-rows: rows of one batched forward */
    int max_body_bytes;   /* --max-body-bytes: larger request bodies get a 413 */
    float grace_seconds;  /* --grace-seconds: shutdown lets requests run this long */
    int no_load_aware;    /* --no-load-aware-drafts: engine load_aware_drafts = 0 */
    int no_prefix_cache;  /* --no-prefix-cache: engine prefix_cache = 0 */
    const char *model_id; /* --model-id; NULL = the GGUF file name without ".gguf" */
    /* Exposure (docs/serve.md, "Authentication" and "Connections"). */
    const char *api_key;     /* --api-key, --api-key-file, SPECDEC_API_KEY; NULL: none */
    const char *metrics_key; /* --metrics-key, --metrics-key-file: /metrics needs it; NULL: open */
    char *owned[2];          /* the keys read from files (freed at exit) */
    int parse_special;       /* --special: special-token text from clients is parsed */
    float request_timeout;   /* --request-timeout: seconds for a request's headers and body */
    int max_connections;     /* --max-connections: open connections, in total */
    int max_client_connections; /* --max-client-connections: open from one client address */
} serve_options_t;

typedef enum serve_state {
    SERVE_LOADING,  /* listening, model not loaded: /health and the /v1 endpoints answer 503 */
    SERVE_READY,
    SERVE_STOPPING, /* a signal came: new requests get 503 */
} serve_state_t;

enum { SERVE_MAX_HTTP_STATUS = 600 };

typedef struct serve {
    const serve_options_t *opts;
    char model_id[256];
    char drafter[256];     /* "" without a drafter */
    atomic_int state;      /* serve_state_t */
    /* Set before state turns SERVE_READY, read-only after. */
    sd_model_t *model;
    sd_engine_t *engine;
    oai_model_t oai;
    long long started;     /* unix seconds: the "created" of /v1/models */
    atomic_uint_fast64_t next_id;   /* response ids: chatcmpl-N, cmpl-N */
    atomic_uint_fast64_t next_seed; /* the seed of a request that gives none */
    atomic_uint_fast64_t responses[SERVE_MAX_HTTP_STATUS]; /* HTTP responses by status */
    pthread_mutex_t lock;
    pthread_cond_t idle;   /* signalled when in_flight drops */
    int in_flight;         /* requests from their first byte until their response is sent */
    struct MHD_Daemon *daemon;
    struct serve_listener *listener; /* the listening socket and the connections (listener.c) */
    char url[300];         /* http://HOST:PORT with the bound port */
} serve_t;

/* Listen on opts->host:opts->port (port 0: any free port) and start answering (503s until
 * the state is SERVE_READY); fills s->url. SD_ERR_IO / SD_ERR_INVALID_ARG naming the
 * address when it cannot listen. Warns on stderr when the address is not loopback and no
 * API key is set. */
sd_status_t serve_http_start(serve_t *s);
/* Stop accepting connections; the open ones keep being served. */
void serve_http_quiesce(serve_t *s);
/* Wait until no request is being handled, at most `seconds`. */
void serve_http_wait_idle(serve_t *s, double seconds);
/* Close every connection and stop the server's threads. */
void serve_http_stop(serve_t *s);

/* The Prometheus text exposition (format 0.0.4) of the server's and the engine's counters:
 * malloc'd, *len bytes; NULL when out of memory. */
char *serve_metrics_text(serve_t *s, size_t *len);

#endif
