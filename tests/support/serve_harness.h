/* Driving `specdec serve` from a test: spawn the binary on a model with extra options and
 * environment, wait for its "serving" line, talk HTTP to it with libcurl (from a chosen
 * loopback source address, with extra headers) or with raw bytes over a socket, and stop it
 * with SIGTERM expecting an exit status. Linked only into the test_serve_http* tests (it
 * needs libcurl), not into tests/support's library. */
#ifndef SPECDEC_TESTS_SERVE_HARNESS_H
#define SPECDEC_TESTS_SERVE_HARNESS_H

#include <stddef.h>
#include <sys/types.h>

typedef struct sh_server {
    pid_t pid;
    int port;
    char log[600]; /* its stderr */
} sh_server_t;

typedef struct sh_reply {
    long status;       /* 0: no HTTP response (the connection closed or failed) */
    int curl_code;     /* CURLE_* */
    char *body;        /* NUL-terminated */
    size_t len;
    char headers[2048]; /* the response headers, as received (cut to fit) */
    double seconds;    /* request to complete response */
} sh_reply_t;

/* specdec serve -m model --port 0 -t 1 --model-id synth EXTRA..., with env[] ("NAME=value",
 * NULL-terminated; NULL: none) added to the environment. Returns once the serving line
 * shows and /health answers (ready: 200), or asserts. */
void sh_start(sh_server_t *s, const char *model, const char *const *extra, const char *const *env);
/* As sh_start, under `specdec launch -n ranks --` when ranks > 1. */
void sh_start_ranks(sh_server_t *s, int ranks, const char *model, const char *const *extra,
                    const char *const *env);
/* Start and expect the process to exit by itself with `status` within 30 s; its stderr
 * (first 8 KiB) into log_text[8192]. For bad command lines. */
void sh_run_expect_exit(const char *model, const char *const *extra, const char *const *env,
                        int status, char *log_text);
/* SIGTERM, then assert the exit status within 60 s and no failed rank in the log (the log
 * is kept when a check fails). */
void sh_stop_expect(sh_server_t *s, int status);
void sh_stop(sh_server_t *s); /* exit status 0 */
/* Kill every server still running (a suite's .fini after a failed assertion). */
void sh_kill_all(void);
/* The first 8 KiB of the server's stderr into text[8192]. */
const char *sh_log(const sh_server_t *s, char *text);

/* An HTTP request from source address `from` (NULL: 127.0.0.1) with extra header lines
 * (NULL-terminated; NULL: none). A failed transfer is not an assertion: see curl_code. */
sh_reply_t sh_http(int port, const char *from, const char *method, const char *path,
                   const char *body, const char *const *headers);
/* As sh_http with a body of body_len bytes (may hold NULs). */
sh_reply_t sh_http_bytes(int port, const char *from, const char *method, const char *path,
                         const char *body, size_t body_len, const char *const *headers);
void sh_reply_free(sh_reply_t *r);
/* A libcurl write callback appending to the sh_reply_t `reply` (body kept NUL-terminated). */
size_t sh_collect(char *data, size_t size, size_t n, void *reply);

/* Raw bytes to the server from `from`; reads until the server closes or `timeout` seconds
 * pass. The received bytes (malloc'd, NUL-terminated) in *out, their count returned; -1
 * when the connection could not be made. */
long sh_raw(int port, const char *from, const void *data, size_t n, double timeout, char **out);
/* A connected TCP socket from `from` to the server (blocking), or -1. */
int sh_connect(int port, const char *from);

/* The value of the /metrics line starting with `name ` or `name{labels} ` (a connection
 * closed at once, as a full cap does, is retried for up to 10 s). */
double sh_metric(int port, const char *name, const char *const *headers);

/* A small synthetic model (GPT-2 tokenizer, ChatML template) at a fresh temp path. */
void sh_write_model(char *path, size_t cap, int n_ctx);

#endif
