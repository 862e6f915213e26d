/* The serve test harness (serve_harness.h). */
#include "serve_harness.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "gguf/synthetic.h"
#include "support/test_util.h"

extern char **environ;

#define SPECDEC_BIN SPECDEC_BINARY_DIR "/bin/specdec"
#define MAX_LIVE 8

/* Servers started and not yet stopped, by pid: a failed assertion leaves a test's own
 * sh_server_t out of scope, so sh_kill_all must not read it. */
static pid_t live[MAX_LIVE];

static void sleep_ms(int ms)
{
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

const char *sh_log(const sh_server_t *s, char *text)
{
    text[0] = '\0';
    FILE *f = fopen(s->log, "r");
    if (!f) return text;
    size_t n = fread(text, 1, 8191, f);
    fclose(f);
    text[n] = '\0';
    return text;
}

static void dump_log(const sh_server_t *s)
{
    char text[8192];
    fprintf(stderr, "---- server log %s ----\n%s\n----\n", s->log, sh_log(s, text));
}

/* environ plus env[], in a static array. */
static char *const *with_env(const char *const *env)
{
    static char *all[512];
    size_t n = 0;
    for (char **e = environ; *e && n < 480; e++) all[n++] = *e;
    for (size_t i = 0; env && env[i] && n < 511; i++) all[n++] = (char *)env[i];
    all[n] = NULL;
    return all;
}

/* specdec serve -m model --port 0 -t 1 --model-id synth EXTRA..., under `specdec launch -n
 * RANKS --` when ranks > 1; stderr to s->log, stdout to /dev/null (a server left running
 * must not hold CTest's pipe open). */
static void spawn(sh_server_t *s, int ranks, const char *model, const char *const *extra,
                  const char *const *env)
{
    char n[16];
    snprintf(n, sizeof n, "%d", ranks);
    const char *argv[72] = {SPECDEC_BIN, "launch", "-n", n, "--"};
    int argc = ranks > 1 ? 5 : 0;
    const char *const serve[] = {SPECDEC_BIN, "serve", "-m", model, "--port", "0", "-t", "1",
                                 "--model-id", "synth", NULL};
    for (int i = 0; serve[i]; i++) argv[argc++] = serve[i];
    for (int i = 0; extra && extra[i] && argc < 71; i++) argv[argc++] = extra[i];
    argv[argc] = NULL;
    static int n_started;
    snprintf(s->log, sizeof s->log, "%s.%d.%d.log", model, (int)getpid(), n_started++);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 2, s->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    int rc = posix_spawn(&s->pid, SPECDEC_BIN, &fa, NULL, (char *const *)argv, with_env(env));
    posix_spawn_file_actions_destroy(&fa);
    cr_assert_eq(rc, 0, "posix_spawn %s: %s", SPECDEC_BIN, strerror(rc));
    for (int i = 0; i < MAX_LIVE; i++)
        if (!live[i]) {
            live[i] = s->pid;
            break;
        }
}

static void forget(sh_server_t *s)
{
    for (int i = 0; i < MAX_LIVE; i++)
        if (live[i] == s->pid) live[i] = 0;
}

void sh_start(sh_server_t *s, const char *model, const char *const *extra, const char *const *env)
{
    sh_start_ranks(s, 1, model, extra, env);
}

void sh_start_ranks(sh_server_t *s, int ranks, const char *model, const char *const *extra,
                    const char *const *env)
{
    spawn(s, ranks, model, extra, env);
    double until = sd_now() + 60;
    char text[8192];
    const char *line = NULL;
    while (!(line = strstr(sh_log(s, text), "specdec: serving synth on http://")) &&
           sd_now() < until) {
        if (waitpid(s->pid, NULL, WNOHANG) == s->pid) break;
        sleep_ms(10);
    }
    if (!line) dump_log(s);
    cr_assert(line, "no 'serving' line from the server");
    s->port = atoi(strchr(line + strlen("specdec: serving synth on http://"), ':') + 1);
    cr_assert_gt(s->port, 0);
    for (;;) {
        sh_reply_t r = sh_http(s->port, NULL, "GET", "/health", NULL, NULL);
        long status = r.status;
        sh_reply_free(&r);
        if (status == 200) break;
        cr_assert(status == 503 || status == 0, "/health while loading: %ld", status);
        cr_assert(sd_now() < until, "the server never became ready");
        sleep_ms(10);
    }
}

void sh_run_expect_exit(const char *model, const char *const *extra, const char *const *env,
                        int status, char *log_text)
{
    sh_server_t s = {0};
    spawn(&s, 1, model, extra, env);
    int got = 0;
    pid_t done = 0;
    for (double until = sd_now() + 30; !(done = waitpid(s.pid, &got, WNOHANG)) && sd_now() < until;)
        sleep_ms(10);
    forget(&s);
    if (!done) kill(s.pid, SIGKILL), waitpid(s.pid, NULL, 0);
    sh_log(&s, log_text);
    remove(s.log);
    cr_assert(done, "the server did not exit by itself: %s", log_text);
    cr_assert(WIFEXITED(got) && WEXITSTATUS(got) == status, "exit status %d, want exit(%d): %s",
              got, status, log_text);
}

void sh_stop_expect(sh_server_t *s, int want)
{
    forget(s);
    kill(s->pid, SIGTERM);
    int status = 0;
    pid_t got = 0;
    for (double until = sd_now() + 60; !(got = waitpid(s->pid, &status, WNOHANG)) &&
                                            sd_now() < until;)
        sleep_ms(10);
    if (!got) kill(s->pid, SIGKILL), waitpid(s->pid, &status, 0);
    s->pid = 0;
    char text[8192];
    int ok = got && WIFEXITED(status) && WEXITSTATUS(status) == want &&
             !strstr(sh_log(s, text), "specdec launch: rank"); /* a rank failed */
    if (!ok) dump_log(s);
    cr_assert(got, "the server did not exit within 60 s of SIGTERM");
    cr_assert(ok, "exit status %d, want exit(%d)", status, want);
    remove(s->log); /* kept when a check failed */
}

void sh_stop(sh_server_t *s)
{
    sh_stop_expect(s, 0);
}

void sh_kill_all(void)
{
    for (int i = 0; i < MAX_LIVE; i++)
        if (live[i] > 0) kill(live[i], SIGKILL), waitpid(live[i], NULL, 0), live[i] = 0;
}

/* ---- HTTP ------------------------------------------------------------------------------------ */

size_t sh_collect(char *data, size_t size, size_t n, void *user)
{
    sh_reply_t *r = user;
    char *b = realloc(r->body, r->len + size * n + 1);
    if (!b) return 0;
    memcpy(b + r->len, data, size * n);
    r->body = b;
    r->len += size * n;
    r->body[r->len] = '\0';
    return size * n;
}

static size_t collect_header(char *data, size_t size, size_t n, void *user)
{
    sh_reply_t *r = user;
    size_t have = strlen(r->headers), add = size * n;
    if (have + add < sizeof r->headers) memcpy(r->headers + have, data, add), r->headers[have + add] = 0;
    return size * n;
}

sh_reply_t sh_http(int port, const char *from, const char *method, const char *path,
                   const char *body, const char *const *headers)
{
    return sh_http_bytes(port, from, method, path, body, body ? strlen(body) : 0, headers);
}

sh_reply_t sh_http_bytes(int port, const char *from, const char *method, const char *path,
                         const char *body, size_t body_len, const char *const *headers)
{
    sh_reply_t r = {0};
    char url[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    CURL *c = curl_easy_init();
    cr_assert(c);
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    for (size_t i = 0; headers && headers[i]; i++) h = curl_slist_append(h, headers[i]);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 120L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sh_collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, collect_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &r);
    if (from) curl_easy_setopt(c, CURLOPT_INTERFACE, from);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)body_len);
    }
    double t0 = sd_now();
    r.curl_code = (int)curl_easy_perform(c);
    r.seconds = sd_now() - t0;
    if (r.curl_code == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    if (!r.body) r.body = calloc(1, 1);
    return r;
}

void sh_reply_free(sh_reply_t *r)
{
    free(r->body);
    r->body = NULL;
}

/* ---- raw sockets ------------------------------------------------------------------------------- */

int sh_connect(int port, const char *from)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct sockaddr_in src = {.sin_family = AF_INET}, dst = {.sin_family = AF_INET,
                                                             .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, from ? from : "127.0.0.1", &src.sin_addr);
    inet_pton(AF_INET, "127.0.0.1", &dst.sin_addr);
    if (bind(fd, (struct sockaddr *)&src, sizeof src) != 0 ||
        connect(fd, (struct sockaddr *)&dst, sizeof dst) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

long sh_raw(int port, const char *from, const void *data, size_t n, double timeout, char **out)
{
    *out = calloc(1, 1);
    int fd = sh_connect(port, from);
    if (fd < 0) return -1;
    size_t sent = 0;
    while (sent < n) {
        ssize_t k = send(fd, (const char *)data + sent, n - sent, MSG_NOSIGNAL);
        if (k <= 0) break;
        sent += (size_t)k;
    }
    size_t len = 0;
    for (double until = sd_now() + timeout; sd_now() < until;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0) continue;
        char buf[4096];
        ssize_t k = recv(fd, buf, sizeof buf, 0);
        if (k <= 0) break;
        char *grown = realloc(*out, len + (size_t)k + 1);
        if (!grown) break;
        *out = grown;
        memcpy(*out + len, buf, (size_t)k);
        len += (size_t)k;
        (*out)[len] = '\0';
    }
    close(fd);
    return (long)len;
}

double sh_metric(int port, const char *name, const char *const *headers)
{
    sh_reply_t r = sh_http(port, NULL, "GET", "/metrics", NULL, headers);
    /* closed at once while a tight cap still counts a finished connection: retry */
    for (double until = sd_now() + 10; r.status == 0 && sd_now() < until; sleep_ms(20)) {
        sh_reply_free(&r);
        r = sh_http(port, NULL, "GET", "/metrics", NULL, headers);
    }
    cr_assert_eq(r.status, 200, "/metrics: %ld %s", r.status, r.body);
    size_t n = strlen(name);
    const char *line = r.body;
    while ((line = strstr(line, name)) &&
           ((line != r.body && line[-1] != '\n') || (line[n] != ' ' && line[n] != '{')))
        line += n;
    cr_assert(line, "no metric %s", name);
    const char *value = strchr(line, ' ');
    double v = atof(value);
    sh_reply_free(&r);
    return v;
}

void sh_write_model(char *path, size_t cap, int n_ctx)
{
    sd_synth_spec_t spec;
    sd_synth_spec_default(&spec);
    spec.n_embd = 128, spec.n_layer = 2, spec.n_ff = 256, spec.n_ctx = n_ctx;
    sd_test_tmp_path(path, cap, "serve-model");
    cr_assert_eq(sd_synth_write_file(&spec, path), SD_OK, "%s", sd_last_error());
}
