/* `specdec serve` over real HTTP: each test spawns the server binary on a synthetic model
 * (--port 0; the port comes from its "serving" line), talks to it with libcurl, and ends it
 * with SIGTERM expecting exit status 0. Covers the endpoints, streaming against
 * non-streaming, stop strings, seeds, 16 concurrent clients against the same requests sent
 * alone (and, on a server drafting n-gram token trees, against target-only), the bad-input table, 429 on a full queue, a client disconnecting mid-stream
 * (cancelled, slot freed: seen in /metrics), oversized bodies and graceful shutdown. */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/unicode.h"
#include "gguf/synthetic.h"
#include "model/kv_cache.h"
#include "support/json_path.h"
#include "support/serve_harness.h"
#include "support/test_util.h"

/* The synthetic model: big enough that a 4000-token request runs for seconds (so a
 * disconnect or a shutdown lands while it runs), small enough to load in milliseconds. */
#define MODEL_CTX 4096
#define LONG_TOKENS 4000

typedef sh_server_t server_t;
typedef sh_reply_t reply_t;

static char model_path[512];
static server_t main_server;

static void sleep_ms(int ms)
{
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

/* ---- HTTP (tests/support/serve_harness.h) ----------------------------------------------- */

/* method path [body of body_len bytes] on port; extra: one more header or NULL. A failed
 * transfer is an assertion. */
static reply_t http_ex(int port, const char *method, const char *path, const char *body,
                       size_t body_len, const char *extra)
{
    const char *const headers[] = {extra, NULL};
    reply_t r = sh_http_bytes(port, NULL, method, path, body, body_len, headers);
    cr_assert_eq(r.curl_code, CURLE_OK, "%s %s: %s", method, path,
                 curl_easy_strerror((CURLcode)r.curl_code));
    return r;
}

static reply_t http(int port, const char *method, const char *path, const char *body)
{
    return http_ex(port, method, path, body, body ? strlen(body) : 0, NULL);
}

/* ---- JSON ------------------------------------------------------------------------------------ */

static cJSON *json_of(const reply_t *r)
{
    cJSON *v = cJSON_Parse(r->body);
    cr_assert(v, "not JSON (status %ld): %s", r->status, r->body);
    return v;
}

/* ---- the server process --------------------------------------------------------------------- */

/* The folder of path (a static buffer). */
static const char *dirname_of(const char *path)
{
    static char dir[512];
    snprintf(dir, sizeof dir, "%.*s", (int)(strrchr(path, '/') - path), path);
    return dir;
}

static void write_model(void)
{
    sd_synth_spec_t spec;
    sd_synth_spec_default(&spec);
    spec.n_embd = 256, spec.n_layer = 4, spec.n_ff = 512, spec.n_ctx = MODEL_CTX;
    snprintf(model_path, sizeof model_path, "%s/serve-http-%d/synth.gguf",
             getenv("SPECDEC_TEST_TMP") ? getenv("SPECDEC_TEST_TMP") : "/tmp", (int)getpid());
    mkdir(dirname_of(model_path), 0755);
    cr_assert_eq(sd_synth_write_file(&spec, model_path), SD_OK, "%s", sd_last_error());
}

/* specdec serve on the test model with -c MODEL_CTX and EXTRA..., under `specdec launch -n
 * RANKS` when ranks > 1; returns once /health answers 200. */
static void start_server_ranks(server_t *s, int ranks, const char *const *extra)
{
    char ctx[16];
    snprintf(ctx, sizeof ctx, "%d", MODEL_CTX);
    const char *all[40] = {"-c", ctx};
    int n = 2;
    for (int i = 0; extra && extra[i] && n < 39; i++) all[n++] = extra[i];
    all[n] = NULL;
    sh_start_ranks(s, ranks, model_path, all, NULL);
}

static void start_server(server_t *s, const char *const *extra)
{
    start_server_ranks(s, 1, extra);
}

/* SIGTERM and the exit status within 60 s. Every test ends with stop_server for each of its
 * servers (Criterion ignores assertions in .fini). */
static void stop_server_expect(server_t *s, int want_status)
{
    sh_stop_expect(s, want_status);
}

static void stop_server(server_t *s)
{
    sh_stop(s);
}

static void setup(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    write_model();
    start_server(&main_server, NULL);
}

static void teardown(void)
{
    sh_kill_all();
    remove(model_path);
    rmdir(dirname_of(model_path));
}

TestSuite(serve_http, .init = setup, .fini = teardown, .timeout = 240);

/* ---- request bodies ------------------------------------------------------------------------ */

static char *chat_body(uint64_t seed, int max_tokens, int stream, const char *extra)
{
    char *b = malloc(1024);
    snprintf(b, 1024, "{\"model\":\"synth\",\"messages\":[{\"role\":\"system\",\"content\":"
                      "\"You are terse.\"},{\"role\":\"user\",\"content\":\"Tell me a story "
                      "about seed %llu\"}],\"max_tokens\":%d,\"seed\":%llu,\"temperature\":1.0,"
                      "\"ignore_eos\":true,\"stream\":%s%s%s}",
             (unsigned long long)seed, max_tokens, (unsigned long long)seed,
             stream ? "true" : "false", extra ? "," : "", extra ? extra : "");
    return b;
}

/* The message content (chat) or text (completions) of a non-streaming 200 reply. */
static char *content_of(const reply_t *r)
{
    cr_assert_eq(r->status, 200, "%s", r->body);
    cJSON *v = json_of(r);
    const cJSON *c = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(v, "choices"), 0),
                                         "message");
    char *text = strdup(c ? str_at(c, "content") : str_at(v, "choices.0.text"));
    cJSON_Delete(v);
    return text;
}

/* An event stream: the joined deltas, the finish_reason, the usage chunk. */
typedef struct sse {
    char *text;
    char finish[32];
    int chunks, done, role_first;
    cJSON *usage; /* the include_usage chunk, or NULL */
} sse_t;

static void sse_event(sse_t *s, const char *data)
{
    cr_assert(!s->done, "an event after [DONE]");
    if (!strcmp(data, "[DONE]")) return (void)(s->done = 1);
    cJSON *v = cJSON_Parse(data);
    cr_assert(v, "event is not JSON: %s", data);
    const cJSON *choices = at(v, "choices");
    if (cJSON_GetArraySize(choices) == 0) return (void)(s->usage = v);
    const cJSON *ch = cJSON_GetArrayItem(choices, 0), *delta = cJSON_GetObjectItem(ch, "delta");
    const cJSON *piece = delta ? cJSON_GetObjectItem(delta, "content") : cJSON_GetObjectItem(ch, "text");
    if (s->chunks++ == 0) s->role_first = delta && cJSON_GetObjectItem(delta, "role");
    if (cJSON_IsString(piece)) {
        s->text = realloc(s->text, strlen(s->text) + strlen(piece->valuestring) + 1);
        strcat(s->text, piece->valuestring);
    }
    const cJSON *fin = cJSON_GetObjectItem(ch, "finish_reason");
    if (cJSON_IsString(fin)) snprintf(s->finish, sizeof s->finish, "%s", fin->valuestring);
    cJSON_Delete(v);
}

static sse_t sse_parse(const reply_t *r)
{
    cr_assert_eq(r->status, 200, "%s", r->body);
    sse_t s = {.text = calloc(1, 1)};
    char *body = strdup(r->body), *save = NULL;
    for (char *ev = strtok_r(body, "\n", &save); ev; ev = strtok_r(NULL, "\n", &save)) {
        if (ev[0] == ':') continue; /* a comment (keep-alive) */
        cr_assert(!strncmp(ev, "data: ", 6), "not a data line: %s", ev);
        sse_event(&s, ev + 6);
    }
    free(body);
    cr_assert(s.done, "the stream did not end with data: [DONE]");
    return s;
}

static void sse_free(sse_t *s)
{
    free(s->text);
    cJSON_Delete(s->usage);
}

/* ---- endpoints ---------------------------------------------------------------------------------- */

Test(serve_http, health_models_and_routes)
{
    int port = main_server.port;
    reply_t r = http(port, "GET", "/health", NULL);
    cr_expect_eq(r.status, 200);
    cr_expect_str_eq(r.body, "{\"status\":\"ok\"}");
    free(r.body);
    r = http(port, "GET", "/v1/models", NULL);
    cJSON *v = json_of(&r);
    cr_expect_str_eq(str_at(v, "object"), "list");
    cr_expect_str_eq(str_at(v, "data.0.id"), "synth");
    cr_expect_str_eq(str_at(v, "data.0.owned_by"), "specdec");
    cJSON_Delete(v);
    free(r.body);
    r = http(port, "GET", "/metrics", NULL);
    cr_expect_eq(r.status, 200);
    cr_expect(strstr(r.body, "# TYPE specdec_requests_total counter"));
    cr_expect(strstr(r.body, "specdec_requests_total{status=\"200\"}"));
    cr_expect(strstr(r.body, "specdec_step_seconds_bucket{le=\"+Inf\"}"));
    cr_expect(strstr(r.body, "specdec_kv_cache_positions_capacity "));
    free(r.body);
    stop_server(&main_server);
}

/* Prompt tokens the server should count for the chat_body messages (template applied). */
static size_t chat_prompt_tokens(uint64_t seed)
{
    sd_model_params_t p;
    sd_model_params_default(&p);
    p.path = model_path, p.n_threads = 1, p.n_ctx = 64, p.device = "cpu";
    sd_model_t *m = NULL;
    cr_assert_eq(sd_model_load(&p, &m), SD_OK, "%s", sd_last_error());
    char user[64], text[1024];
    snprintf(user, sizeof user, "Tell me a story about seed %llu", (unsigned long long)seed);
    sd_chat_message_t msgs[] = {{"system", "You are terse."}, {"user", user}};
    size_t len = 0, n = 0;
    cr_assert_eq(sd_chat_apply(m, msgs, 2, 1, text, sizeof text, &len), SD_OK);
    int32_t ids[512];
    cr_assert_eq(sd_tokenize(m, text, len, SD_TOKENIZE_ADD_BOS | SD_TOKENIZE_PARSE_SPECIAL, ids,
                             512, &n), SD_OK);
    sd_model_free(m);
    return n;
}

Test(serve_http, chat_and_completion)
{
    char *body = chat_body(5, 12, 0, NULL);
    reply_t r = http(main_server.port, "POST", "/v1/chat/completions", body);
    cJSON *v = json_of(&r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_expect_str_eq(str_at(v, "object"), "chat.completion");
    cr_expect(!strncmp(str_at(v, "id"), "chatcmpl-", 9));
    cr_expect_str_eq(str_at(v, "model"), "synth");
    cr_expect_str_eq(str_at(v, "choices.0.message.role"), "assistant");
    cr_expect_str_eq(str_at(v, "choices.0.finish_reason"), "length");
    cr_expect_eq(num_at(v, "usage.prompt_tokens"), chat_prompt_tokens(5),
                 "the chat template is applied before tokenizing");
    cr_expect_eq(num_at(v, "usage.completion_tokens"), 12);
    cr_expect_eq(num_at(v, "usage.total_tokens"),
                 num_at(v, "usage.prompt_tokens") + num_at(v, "usage.completion_tokens"));
    cr_expect_eq(num_at(v, "specdec.seed"), 5);
    cr_expect_eq(num_at(v, "specdec.steps"), 12);
    cr_expect_str_eq(str_at(v, "specdec.stop_reason"), "length");
    cJSON_Delete(v);
    free(r.body);
    free(body);
    r = http(main_server.port, "POST", "/v1/completions",
             "{\"model\":\"synth\",\"prompt\":\"Once upon a time\",\"max_tokens\":6}");
    v = json_of(&r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_expect_str_eq(str_at(v, "object"), "text_completion");
    cr_expect(!strncmp(str_at(v, "id"), "cmpl-", 5));
    cr_expect(cJSON_IsString(at(v, "choices.0.text")));
    double completion = num_at(v, "usage.completion_tokens");
    cr_expect(completion >= 1 && completion <= 6, "completion_tokens %g", completion);
    cr_expect_eq(num_at(v, "usage.total_tokens"), num_at(v, "usage.prompt_tokens") + completion);
    cJSON_Delete(v);
    free(r.body);
    stop_server(&main_server);
}

Test(serve_http, streaming_equals_non_streaming)
{
    char *plain = chat_body(21, 40, 0, NULL);
    char *streamed = chat_body(21, 40, 1, "\"stream_options\":{\"include_usage\":true}");
    reply_t a = http(main_server.port, "POST", "/v1/chat/completions", plain);
    reply_t b = http(main_server.port, "POST", "/v1/chat/completions", streamed);
    char *want = content_of(&a);
    sse_t s = sse_parse(&b);
    cr_expect(s.role_first, "the first chunk carries the assistant role");
    cr_expect_str_eq(s.text, want, "joined deltas equal the non-streamed content");
    cr_expect_str_eq(s.finish, "length");
    cr_assert(s.usage, "no usage chunk");
    cr_expect_eq(num_at(s.usage, "usage.completion_tokens"), 40);
    cr_expect_eq(num_at(s.usage, "specdec.seed"), 21);
    sse_free(&s);
    free(want), free(a.body), free(b.body), free(plain), free(streamed);
    /* completions stream too, without a usage chunk unless asked */
    const char *cbody = "{\"model\":\"synth\",\"prompt\":\"abc\",\"max_tokens\":9,\"seed\":4,"
                        "\"ignore_eos\":true%s}";
    char c1[256], c2[256];
    snprintf(c1, sizeof c1, cbody, "");
    snprintf(c2, sizeof c2, cbody, ",\"stream\":true");
    a = http(main_server.port, "POST", "/v1/completions", c1);
    b = http(main_server.port, "POST", "/v1/completions", c2);
    want = content_of(&a);
    s = sse_parse(&b);
    cr_expect_str_eq(s.text, want);
    cr_expect_str_eq(s.finish, "length");
    cr_expect_null(s.usage);
    sse_free(&s);
    free(want), free(a.body), free(b.body);
    stop_server(&main_server);
}

#define MAX_CHOICES 4
#define CHAT "/v1/chat/completions"
/* An event stream of up to MAX_CHOICES choices: per index the joined text, the
 * finish_reason and the log-probabilities joined over its chunks (chat: the content
 * entries; completions: each field's array), and the usage chunk. */
typedef struct sse_n {
    char *text[MAX_CHOICES];
    char finish[MAX_CHOICES][32];
    cJSON *lp[MAX_CHOICES];
    int roles[MAX_CHOICES];
    cJSON *usage;
} sse_n_t;

/* Append every item of array src to dst. */
static void append_items(cJSON *dst, const cJSON *src)
{
    cr_assert(cJSON_IsArray(src), "not an array");
    const cJSON *item;
    cJSON_ArrayForEach(item, src) cJSON_AddItemToArray(dst, cJSON_Duplicate(item, 1));
}

static void sse_n_choice(sse_n_t *s, const cJSON *ch, int chat)
{
    int i = (int)num_at(ch, "index");
    cr_assert(i >= 0 && i < MAX_CHOICES, "index %d", i);
    const cJSON *delta = cJSON_GetObjectItem(ch, "delta");
    const cJSON *piece = chat ? cJSON_GetObjectItem(delta, "content") : cJSON_GetObjectItem(ch, "text");
    if (chat && cJSON_GetObjectItem(delta, "role")) s->roles[i]++;
    if (cJSON_IsString(piece)) {
        s->text[i] = realloc(s->text[i], strlen(s->text[i]) + strlen(piece->valuestring) + 1);
        strcat(s->text[i], piece->valuestring);
    }
    const cJSON *fin = cJSON_GetObjectItem(ch, "finish_reason");
    if (cJSON_IsString(fin)) snprintf(s->finish[i], sizeof s->finish[i], "%s", fin->valuestring);
    const cJSON *lp = cJSON_GetObjectItem(ch, "logprobs");
    if (!lp || cJSON_IsNull(lp)) return;
    if (chat) return append_items(s->lp[i], cJSON_GetObjectItem(lp, "content"));
    static const char *const fields[] = {"tokens", "token_logprobs", "top_logprobs", "text_offset"};
    for (int f = 0; f < 4; f++)
        append_items(cJSON_GetObjectItem(s->lp[i], fields[f]), cJSON_GetObjectItem(lp, fields[f]));
}

static sse_n_t sse_n_parse(const reply_t *r, int chat)
{
    cr_assert_eq(r->status, 200, "%s", r->body);
    sse_n_t s = {0};
    for (int i = 0; i < MAX_CHOICES; i++) {
        s.text[i] = calloc(1, 1);
        s.lp[i] = chat ? cJSON_CreateArray() : cJSON_CreateObject();
        if (!chat)
            for (int f = 0; f < 4; f++)
                cJSON_AddItemToObject(s.lp[i], (const char *[]){"tokens", "token_logprobs",
                                                                 "top_logprobs", "text_offset"}[f],
                                      cJSON_CreateArray());
    }
    char *body = strdup(r->body), *save = NULL;
    int done = 0;
    for (char *ev = strtok_r(body, "\n", &save); ev; ev = strtok_r(NULL, "\n", &save)) {
        if (ev[0] == ':') continue;
        cr_assert(!strncmp(ev, "data: ", 6) && !done, "bad event: %s", ev);
        if (!strcmp(ev + 6, "[DONE]")) {
            done = 1;
            continue;
        }
        cJSON *v = cJSON_Parse(ev + 6);
        cr_assert(v, "not JSON: %s", ev);
        const cJSON *choices = at(v, "choices"), *ch;
        if (cJSON_GetArraySize(choices) == 0) {
            s.usage = v;
            continue;
        }
        cr_assert_eq(cJSON_GetArraySize(choices), 1, "one choice per chunk");
        cJSON_ArrayForEach(ch, choices) sse_n_choice(&s, ch, chat);
        cJSON_Delete(v);
    }
    free(body);
    cr_assert(done, "no data: [DONE]");
    return s;
}

static void sse_n_free(sse_n_t *s)
{
    for (int i = 0; i < MAX_CHOICES; i++) free(s->text[i]), cJSON_Delete(s->lp[i]);
    cJSON_Delete(s->usage);
}

/* The bytes of chat logprobs entries joined, made valid UTF-8 as the server does. */
static char *joined_bytes(const cJSON *content)
{
    size_t n = 0, cap = 4096;
    unsigned char *raw = malloc(cap);
    const cJSON *t, *b;
    cJSON_ArrayForEach(t, content) {
        cJSON_ArrayForEach(b, cJSON_GetObjectItem(t, "bytes")) {
            cr_assert(n < cap);
            raw[n++] = (unsigned char)b->valueint;
        }
    }
    char *out = malloc(3 * n + 1), *o = out;
    size_t adv;
    for (size_t i = 0; i < n; i += adv) {
        uint32_t cp = sd_utf8_decode(raw + i, n - i, &adv);
        int keep = cp != 0 && cp < SD_UTF8_INVALID;
        memcpy(o, keep ? (char *)raw + i : "\xEF\xBF\xBD", keep ? adv : 3);
        o += keep ? adv : 3;
    }
    *o = '\0';
    free(raw);
    return out;
}

/* A stop string taken from the unstopped text: generation ends right before its first
 * occurrence, streaming or not. */
Test(serve_http, stop_sequences)
{
    char *body = chat_body(33, 60, 0, NULL);
    reply_t r = http(main_server.port, "POST", "/v1/chat/completions", body);
    char *full = content_of(&r);
    free(r.body), free(body);
    char stop[3] = "";
    for (size_t i = 1; full[i] && full[i + 1] && !stop[0]; i++) {
        unsigned char a = (unsigned char)full[i], b = (unsigned char)full[i + 1];
        int plain = a >= 'a' && a <= 'z' && b >= 0x20 && b < 0x7f && b != '"' && b != '\\';
        if (plain && strstr(full, (char[]){(char)a, (char)b, 0}) - full >= 1)
            stop[0] = (char)a, stop[1] = (char)b;
    }
    cr_assert(stop[0], "no two-letter stop candidate in: %s", full);
    size_t cut = (size_t)(strstr(full, stop) - full);
    char extra[96];
    snprintf(extra, sizeof extra, "\"stop\":[\"%s\",\"never-seen-stop\"]", stop);
    for (int stream = 0; stream < 2; stream++) {
        body = chat_body(33, 60, stream, extra);
        r = http(main_server.port, "POST", "/v1/chat/completions", body);
        sse_t s = {0};
        char *got = stream ? (s = sse_parse(&r), strdup(s.text)) : content_of(&r);
        cr_expect_eq(strlen(got), cut, "stop '%s': got '%s' from '%s'", stop, got, full);
        cr_expect(!strncmp(got, full, cut), "the text before the stop is unchanged");
        if (stream) cr_expect_str_eq(s.finish, "stop");
        if (stream) sse_free(&s);
        free(got), free(r.body), free(body);
    }
    /* log-probabilities cover every generated token, also those that spelled the stop
     * (streamed: in the final chunk, as they release no text) */
    snprintf(extra, sizeof extra, "\"stop\":[\"%s\"],\"logprobs\":true", stop);
    char *plain = chat_body(33, 60, 0, extra), *streamed = chat_body(33, 60, 1, extra);
    reply_t a = http(main_server.port, "POST", CHAT, plain);
    reply_t b = http(main_server.port, "POST", CHAT, streamed);
    cJSON *v = json_of(&a);
    sse_n_t sn = sse_n_parse(&b, 1);
    cr_expect_eq(cJSON_GetArraySize(at(v, "choices.0.logprobs.content")),
                 (int)num_at(v, "usage.completion_tokens"));
    cr_expect(cJSON_Compare(sn.lp[0], at(v, "choices.0.logprobs.content"), 1),
              "streamed logprobs equal the non-streamed ones with a stop string");
    sse_n_free(&sn);
    cJSON_Delete(v);
    free(a.body), free(b.body), free(plain), free(streamed);
    free(full);
    stop_server(&main_server);
}

Test(serve_http, seeds_reproduce)
{
    char *body = chat_body(77, 24, 0, NULL);
    reply_t a = http(main_server.port, "POST", "/v1/chat/completions", body);
    reply_t b = http(main_server.port, "POST", "/v1/chat/completions", body);
    char *ta = content_of(&a), *tb = content_of(&b);
    cr_expect_str_eq(ta, tb, "same seed, same text");
    free(ta), free(tb), free(a.body), free(b.body), free(body);
    /* no seed: the server picks one, reports it, and that seed reproduces the text */
    const char *unseeded = "{\"model\":\"synth\",\"prompt\":\"xyz\",\"max_tokens\":16,"
                           "\"ignore_eos\":true}";
    a = http(main_server.port, "POST", "/v1/completions", unseeded);
    cJSON *v = json_of(&a);
    char seeded[256];
    snprintf(seeded, sizeof seeded, "{\"model\":\"synth\",\"prompt\":\"xyz\",\"max_tokens\":16,"
                                    "\"ignore_eos\":true,\"seed\":%.0f}", num_at(v, "specdec.seed"));
    b = http(main_server.port, "POST", "/v1/completions", seeded);
    ta = content_of(&a), tb = content_of(&b);
    cr_expect_str_eq(ta, tb, "the reported seed reproduces the text");
    cJSON_Delete(v);
    free(ta), free(tb), free(a.body), free(b.body);
    stop_server(&main_server);
}

/* ---- log-probabilities and n choices ------------------------------------------------------ */

/* Chat: logprobs with 3 alternatives, the same streamed and not; each entry has its bytes,
 * which join to the content, and 3 alternatives led by the most likely token. */
Test(serve_http, chat_logprobs_streamed_equal_non_streamed)
{
    const char *extra = "\"logprobs\":true,\"top_logprobs\":3";
    char *plain = chat_body(8, 30, 0, extra), *streamed = chat_body(8, 30, 1, extra);
    reply_t a = http(main_server.port, "POST", CHAT, plain);
    reply_t b = http(main_server.port, "POST", CHAT, streamed);
    cr_assert_eq(a.status, 200, "%s", a.body);
    cJSON *v = json_of(&a);
    const cJSON *content = at(v, "choices.0.logprobs.content");
    cr_assert_eq(cJSON_GetArraySize(content), 30, "one entry per completion token");
    const cJSON *t;
    cJSON_ArrayForEach(t, content) {
        const cJSON *top = at(t, "top_logprobs");
        cr_assert_eq(cJSON_GetArraySize(top), 3);
        double lp = num_at(t, "logprob"), best = num_at(top, "0.logprob");
        cr_expect(lp <= 0 && best >= lp && best >= num_at(top, "1.logprob"), "ordered");
        cr_expect(best >= num_at(top, "1.logprob") && num_at(top, "1.logprob") >= num_at(top, "2.logprob"));
    }
    char *joined = joined_bytes(content);
    cr_expect_str_eq(joined, str_at(v, "choices.0.message.content"), "the bytes join to the text");
    sse_n_t s = sse_n_parse(&b, 1);
    cr_expect_str_eq(s.text[0], str_at(v, "choices.0.message.content"));
    cr_expect(cJSON_Compare(s.lp[0], content, 1), "streamed logprobs equal the non-streamed ones");
    free(joined);
    sse_n_free(&s);
    cJSON_Delete(v);
    free(a.body), free(b.body), free(plain), free(streamed);
    stop_server(&main_server);
}

/* Completions: "logprobs": 2, streamed and not, with text_offset; a greedy request's chosen
 * token is the first alternative. */
Test(serve_http, completion_logprobs_streamed_equal_non_streamed)
{
    const char *body = "{\"model\":\"synth\",\"prompt\":\"abc\",\"max_tokens\":20,\"seed\":4,"
                       "\"temperature\":%s,\"ignore_eos\":true,\"logprobs\":2%s}";
    for (int greedy = 0; greedy < 2; greedy++) {
        char c1[256], c2[256];
        snprintf(c1, sizeof c1, body, greedy ? "0" : "1", "");
        snprintf(c2, sizeof c2, body, greedy ? "0" : "1", ",\"stream\":true");
        reply_t a = http(main_server.port, "POST", "/v1/completions", c1);
        reply_t b = http(main_server.port, "POST", "/v1/completions", c2);
        cJSON *v = json_of(&a);
        const cJSON *lp = at(v, "choices.0.logprobs");
        cr_assert_eq(cJSON_GetArraySize(at(lp, "tokens")), 20);
        cr_assert_eq(cJSON_GetArraySize(at(lp, "text_offset")), 20);
        cr_expect_eq(num_at(lp, "text_offset.0"), 0);
        for (int i = 0; i < 20; i++) {
            char path[32];
            snprintf(path, sizeof path, "top_logprobs.%d", i);
            int size = cJSON_GetArraySize(at(lp, path));
            cr_expect(size == 2 || size == 3, "2 alternatives, and the chosen token: %d", size);
            if (greedy) cr_expect_eq(size, 2, "greedy: the chosen token is among the 2 best");
        }
        sse_n_t s = sse_n_parse(&b, 0);
        cr_expect_str_eq(s.text[0], str_at(v, "choices.0.text"));
        cr_expect(cJSON_Compare(s.lp[0], lp, 1), "streamed logprobs equal the non-streamed ones");
        sse_n_free(&s);
        cJSON_Delete(v);
        free(a.body), free(b.body);
    }
    stop_server(&main_server);
}

/* n = 3: three choices whose seeds specdec reports; each equals an n = 1 request with its
 * seed (choice 0: the request's own); usage counts the prompt once; the stream carries the
 * same texts under their indices. */
Test(serve_http, n_choices_equal_single_requests)
{
    for (int chat = 0; chat < 2; chat++) {
        char body[512], streamed[512];
        const char *path = chat ? CHAT : "/v1/completions";
        if (chat) {
            char *b1 = chat_body(31, 16, 0, "\"n\":3,\"logprobs\":true");
            char *b2 = chat_body(31, 16, 1, "\"n\":3,\"logprobs\":true,\"stream_options\":"
                                            "{\"include_usage\":true}");
            snprintf(body, sizeof body, "%s", b1), snprintf(streamed, sizeof streamed, "%s", b2);
            free(b1), free(b2);
        } else {
            snprintf(body, sizeof body, "{\"model\":\"synth\",\"prompt\":\"xyz\",\"max_tokens\":16,"
                                        "\"ignore_eos\":true,\"seed\":31,\"n\":3,\"logprobs\":1}");
            snprintf(streamed, sizeof streamed, "{\"model\":\"synth\",\"prompt\":\"xyz\",\"max_tokens\":"
                     "16,\"ignore_eos\":true,\"seed\":31,\"n\":3,\"logprobs\":1,\"stream\":true,"
                     "\"stream_options\":{\"include_usage\":true}}");
        }
        reply_t a = http(main_server.port, "POST", path, body);
        reply_t b = http(main_server.port, "POST", path, streamed);
        cJSON *v = json_of(&a);
        cr_assert_eq(a.status, 200, "%s", a.body);
        cr_assert_eq(cJSON_GetArraySize(at(v, "choices")), 3);
        cr_expect_eq(num_at(v, "usage.completion_tokens"), 48, "16 tokens in each of 3 choices");
        cr_expect_eq(num_at(v, "usage.total_tokens"), num_at(v, "usage.prompt_tokens") + 48);
        cr_expect_eq(num_at(v, "specdec.seeds.0"), 31, "choice 0 has the request's seed");
        sse_n_t s = sse_n_parse(&b, chat);
        int differ = 0;
        for (int i = 0; i < 3; i++) {
            char p[64];
            snprintf(p, sizeof p, "choices.%d.index", i);
            cr_expect_eq(num_at(v, p), i);
            snprintf(p, sizeof p, chat ? "choices.%d.message.content" : "choices.%d.text", i);
            const char *text = str_at(v, p);
            cr_expect_str_eq(s.text[i], text, "choice %d streamed", i);
            if (chat) cr_expect_eq(s.roles[i], 1, "choice %d: one role chunk", i);
            cr_expect_str_eq(s.finish[i], "length");
            snprintf(p, sizeof p, "choices.%d.logprobs%s", i, chat ? ".content" : "");
            cr_expect(cJSON_Compare(s.lp[i], at(v, p), 1), "choice %d: streamed logprobs", i);
            differ += i > 0 && strcmp(text, str_at(v, chat ? "choices.0.message.content"
                                                            : "choices.0.text")) != 0;
            /* alone, with its seed */
            snprintf(p, sizeof p, "specdec.seeds.%d", i);
            char one[512], seed[40];
            snprintf(seed, sizeof seed, "\"seed\":%.0f", num_at(v, p));
            snprintf(one, sizeof one, "%s", body);
            char *at_n = strstr(one, "\"n\":3"), *at_seed = strstr(one, "\"seed\":31");
            cr_assert(at_n && at_seed);
            memcpy(at_n, "\"n\":1", 5);
            char tail[512];
            snprintf(tail, sizeof tail, "%s", at_seed + strlen("\"seed\":31"));
            snprintf(at_seed, sizeof one - (size_t)(at_seed - one), "%s%s", seed, tail);
            reply_t r1 = http(main_server.port, "POST", path, one);
            char *alone = content_of(&r1);
            cr_expect_str_eq(alone, text, "choice %d equals n = 1 with seed %s", i, seed);
            free(alone), free(r1.body);
        }
        cr_expect_gt(differ, 0, "sampled choices differ");
        cr_assert(s.usage, "no usage chunk");
        cr_expect_eq(num_at(s.usage, "usage.completion_tokens"), 48);
        sse_n_free(&s);
        cJSON_Delete(v);
        free(a.body), free(b.body);
    }
    stop_server(&main_server);
}

/* ---- concurrency ----------------------------------------------------------------------------------- */

enum { N_CLIENTS = 16 };

typedef struct client {
    int port, stream;
    uint64_t seed;
    char *text;
} client_t;

static void *run_client(void *arg)
{
    client_t *c = arg;
    char *body = chat_body(c->seed, 32, c->stream, NULL);
    reply_t r = http(c->port, "POST", "/v1/chat/completions", body);
    if (c->stream) {
        sse_t s = sse_parse(&r);
        c->text = strdup(s.text);
        sse_free(&s);
    } else {
        c->text = content_of(&r);
    }
    free(r.body), free(body);
    return NULL;
}

/* N_CLIENTS clients on port at once, client i seeded seed0 + step * i (odd ones stream). */
static void run_together(client_t *together, int port, uint64_t seed0, uint64_t step)
{
    pthread_t th[N_CLIENTS];
    for (int i = 0; i < N_CLIENTS; i++) {
        together[i] = (client_t){.port = port, .seed = seed0 + step * (uint64_t)i, .stream = i % 2};
        cr_assert_eq(pthread_create(&th[i], NULL, run_client, &together[i]), 0);
    }
    for (int i = 0; i < N_CLIENTS; i++) pthread_join(th[i], NULL);
}

Test(serve_http, sixteen_concurrent_clients_equal_alone)
{
    client_t alone[N_CLIENTS], together[N_CLIENTS];
    for (int i = 0; i < N_CLIENTS; i++) {
        alone[i] = (client_t){.port = main_server.port, .seed = 1000 + 7 * i};
        run_client(&alone[i]);
    }
    run_together(together, main_server.port, 1000, 7);
    for (int i = 0; i < N_CLIENTS; i++) {
        cr_assert(together[i].text, "client %d got no text", i);
        cr_expect_str_eq(together[i].text, alone[i].text, "client %d (seed %llu)", i,
                         (unsigned long long)alone[i].seed);
        free(alone[i].text), free(together[i].text);
    }
    stop_server(&main_server);
}

/* `--draft ngram --tree 4x2x2x1` (whole trees: load-aware drafts off) with the prefix cache
 * on and off: 16 concurrent seeded sampling clients get the target-only server's text for
 * the same request sent alone. A
 * batch too small for one tree is refused naming both. */
Test(serve_http, sixteen_concurrent_tree_clients_equal_target_only)
{
    char log[8192];
    sh_run_expect_exit(model_path, (const char *const[]){"--draft", "ngram", "--tree", "4x2x2x1",
                                                         "--max-batch-rows", "32", NULL},
                       NULL, 1, log);
    cr_expect(strstr(log, "max_batch_rows = 32 outside [45 (one step of a tree of 44)") != NULL,
              "%s", log);
    client_t alone[N_CLIENTS], together[N_CLIENTS];
    for (int i = 0; i < N_CLIENTS; i++) {
        alone[i] = (client_t){.port = main_server.port, .seed = 2000 + 5 * i};
        run_client(&alone[i]);
    }
    for (int cache = 0; cache < 2; cache++) {
        server_t trees;
        start_server(&trees, (const char *const[]){"--draft", "ngram", "--tree", "4x2x2x1",
                                                   "--no-load-aware-drafts", /* whole trees */
                                                   cache ? NULL : "--no-prefix-cache", NULL});
        run_together(together, trees.port, 2000, 5);
        for (int i = 0; i < N_CLIENTS; i++) {
            cr_assert(together[i].text, "client %d got no text", i);
            cr_expect_str_eq(together[i].text, alone[i].text, "cache %d, client %d (seed %llu)",
                             cache, i, (unsigned long long)alone[i].seed);
            free(together[i].text);
        }
        cr_expect_gt(sh_metric(trees.port, "specdec_draft_tokens_total", NULL), 0,
                     "the tree server drafted nothing");
        stop_server(&trees);
    }
    for (int i = 0; i < N_CLIENTS; i++) free(alone[i].text);
    stop_server(&main_server);
}

/* ---- bad input ---------------------------------------------------------------------------------------- */

typedef struct bad_row {
    const char *method, *path, *body;
    long status;
    const char *type, *param, *code; /* param / code NULL: JSON null */
} bad_row_t;

static void check_error(const bad_row_t *row, const reply_t *r)
{
    cr_expect_eq(r->status, row->status, "%s %s %.80s: status %ld: %s", row->method, row->path,
                 row->body ? row->body : "", r->status, r->body);
    cJSON *v = json_of(r);
    cr_expect(str_at(v, "error.message")[0], "an empty error message");
    cr_expect_str_eq(str_at(v, "error.type"), row->type);
    const cJSON *param = at(v, "error.param"), *code = at(v, "error.code");
    if (row->param) cr_expect_str_eq(param->valuestring ? param->valuestring : "(null)", row->param);
    else cr_expect(cJSON_IsNull(param), "%s: param should be null", r->body);
    if (row->code) cr_expect_str_eq(code->valuestring ? code->valuestring : "(null)", row->code);
    else cr_expect(cJSON_IsNull(code), "%s: code should be null", r->body);
    cJSON_Delete(v);
}

#define MSGS "\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]"

Test(serve_http, bad_input_table)
{
    static const bad_row_t rows[] = {
        {"POST", CHAT, "{\"model\": ", 400, "invalid_request_error", NULL, NULL},
        {"POST", CHAT, "", 400, "invalid_request_error", NULL, NULL},
        {"POST", CHAT, "{\"model\":\"synth\"," MSGS ",\"max_tokens\":\"ten\"}", 400,
         "invalid_request_error", "max_tokens", NULL},
        {"POST", CHAT, "{\"model\":\"synth\",\"messages\":{\"role\":\"user\"}}", 400,
         "invalid_request_error", "messages", NULL},
        {"POST", CHAT, "{\"model\":\"synth\",\"messages\":[{\"role\":\"user\",\"content\":[1]}]}",
         400, "invalid_request_error", "messages", NULL},
        {"POST", CHAT, "{\"model\":\"gpt-4o\"," MSGS "}", 400, "invalid_request_error", "model",
         "model_not_found"},
        {"POST", CHAT, "{\"model\":\"synth\"," MSGS ",\"max_tokens\":0}", 400,
         "invalid_request_error", "max_tokens", NULL},
        {"POST", CHAT, "{\"model\":\"synth\"," MSGS ",\"max_tokens\":1000000000}", 400,
         "invalid_request_error", "max_tokens", "context_length_exceeded"},
        {"POST", CHAT, "{\"model\":\"synth\"," MSGS ",\"n\":0}", 400, "invalid_request_error",
         "n", NULL},
        {"POST", CHAT, "{\"model\":\"synth\"," MSGS ",\"n\":129}", 400, "invalid_request_error",
         "n", NULL},
        {"POST", "/v1/completions", "{\"model\":\"synth\",\"prompt\":\"a\",\"n\":81}", 400,
         "invalid_request_error", "n", NULL}, /* above --max-active 16 + --max-queued 64 */
        {"POST", CHAT, "{\"model\":\"synth\"," MSGS ",\"logprobs\":true,\"top_logprobs\":21}",
         400, "invalid_request_error", "top_logprobs", NULL},
        {"POST", CHAT, "{\"model\":\"synth\"," MSGS ",\"top_logprobs\":2}", 400,
         "invalid_request_error", "top_logprobs", NULL},
        {"POST", "/v1/completions", "{\"model\":\"synth\",\"prompt\":\"a\",\"logprobs\":6}", 400,
         "invalid_request_error", "logprobs", NULL},
        {"POST", CHAT, "{\"model\":\"synth\"," MSGS ",\"tools\":[{\"type\":\"function\"}]}", 400,
         "invalid_request_error", "tools", "unsupported_parameter"},
        {"POST", "/v1/completions", "{\"model\":\"synth\",\"prompt\":[\"a\",\"b\"]}", 400,
         "invalid_request_error", "prompt", NULL},
        {"GET", CHAT, NULL, 405, "invalid_request_error", NULL, "method_not_allowed"},
        {"POST", "/health", "{}", 405, "invalid_request_error", NULL, "method_not_allowed"},
        {"DELETE", "/v1/models", NULL, 405, "invalid_request_error", NULL, "method_not_allowed"},
        {"GET", "/v1/nothing", NULL, 404, "invalid_request_error", NULL, "not_found"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        reply_t r = http(main_server.port, rows[i].method, rows[i].path, rows[i].body);
        check_error(&rows[i], &r);
        free(r.body);
    }
    /* a prompt longer than the context */
    size_t cap = 4 * MODEL_CTX + 128;
    char *body = malloc(cap);
    strcpy(body, "{\"model\":\"synth\",\"prompt\":\"");
    for (int i = 0; i < MODEL_CTX + 10; i++) strcat(body, " a");
    strcat(body, "\"}");
    reply_t r = http(main_server.port, "POST", "/v1/completions", body);
    bad_row_t row = {"POST", "/v1/completions", "(long prompt)", 400, "invalid_request_error",
                     "prompt", "context_length_exceeded"};
    check_error(&row, &r);
    free(r.body), free(body);
    /* the server is still fine */
    body = chat_body(1, 4, 0, NULL);
    r = http(main_server.port, "POST", CHAT, body);
    cr_expect_eq(r.status, 200);
    free(r.body), free(body);
    stop_server(&main_server);
}

Test(serve_http, body_over_the_limit_is_413)
{
    size_t n = (1 << 20) + 100;
    char *big = malloc(n);
    memset(big, ' ', n);
    memcpy(big, "{\"model\":\"synth\",\"prompt\":\"", 27);
    reply_t r = http_ex(main_server.port, "POST", "/v1/completions", big, n,
                        "Expect: 100-continue");
    bad_row_t row = {"POST", "/v1/completions", "(1 MiB + 100 bytes)", 413,
                     "invalid_request_error", NULL, "request_too_large"};
    check_error(&row, &r);
    free(r.body), free(big);
    stop_server(&main_server);
}

/* ---- overload, disconnects, shutdown --------------------------------------------------------------- */

/* A long streaming request on its own thread: `started` once bytes arrive; it hangs up
 * (aborts the transfer) when `hang_up` is set, or at once with hang_up_first. */
typedef struct long_stream {
    int port, hang_up_first;
    atomic_int started, hang_up;
    reply_t reply;
    CURLcode rc;
} long_stream_t;

static size_t long_stream_write(char *data, size_t size, size_t n, void *user)
{
    long_stream_t *ls = user;
    atomic_store(&ls->started, 1);
    if (ls->hang_up_first || atomic_load(&ls->hang_up)) return 0;
    return sh_collect(data, size, n, &ls->reply);
}

static void *run_long_stream(void *arg)
{
    long_stream_t *ls = arg;
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/completions", ls->port);
    char body[256];
    snprintf(body, sizeof body, "{\"model\":\"synth\",\"prompt\":\"go\",\"max_tokens\":%d,"
                                "\"ignore_eos\":true,\"stream\":true,\"seed\":9}", LONG_TOKENS);
    CURL *c = curl_easy_init();
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 120L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, long_stream_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, ls);
    ls->rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &ls->reply.status);
    curl_easy_cleanup(c);
    atomic_store(&ls->started, 1);
    return NULL;
}

static void wait_started(long_stream_t *ls)
{
    for (double until = sd_now() + 60; !atomic_load(&ls->started); sleep_ms(5))
        cr_assert(sd_now() < until, "the long stream never started");
}

/* The value of a metrics line starting with `name ` (or `name{labels} `). */
static double metric(int port, const char *name)
{
    reply_t r = http(port, "GET", "/metrics", NULL);
    char *line = strstr(r.body, name);
    while (line && line != r.body && line[-1] != '\n') line = strstr(line + 1, name);
    cr_assert(line, "no metric %s", name);
    double v = atof(line + strlen(name));
    free(r.body);
    return v;
}

/* A chat whose system message spans several KV blocks, greedy. */
static char *cached_chat_body(void)
{
    size_t cap = 4096, len = 0;
    char *b = malloc(cap);
    len += (size_t)snprintf(b, cap, "{\"model\":\"synth\",\"messages\":[{\"role\":\"system\","
                                    "\"content\":\"");
    for (int i = 0; i < 60; i++) len += (size_t)snprintf(b + len, cap - len, "rule %d. ", i);
    snprintf(b + len, cap - len, "\"},{\"role\":\"user\",\"content\":\"Hi\"}],\"max_tokens\":4,"
                                 "\"temperature\":0,\"ignore_eos\":true}");
    return b;
}

/* The body's reply: its text and usage.prompt_tokens_details.cached_tokens. */
static char *cached_chat(int port, const char *body, double *cached, double *prompt)
{
    reply_t r = http(port, "POST", "/v1/chat/completions", body);
    cJSON *v = json_of(&r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    *cached = num_at(v, "usage.prompt_tokens_details.cached_tokens");
    *prompt = num_at(v, "usage.prompt_tokens");
    cJSON_Delete(v);
    char *text = content_of(&r);
    free(r.body);
    return text;
}

/* The same chat twice: the second reuses the first's KV blocks (cached_tokens, /metrics)
 * and answers the same; with --no-prefix-cache nothing is cached. */
Test(serve_http, prefix_cache_reports_cached_tokens_and_metrics)
{
    char *body = cached_chat_body();
    double cached1, cached2, prompt;
    char *first = cached_chat(main_server.port, body, &cached1, &prompt);
    char *second = cached_chat(main_server.port, body, &cached2, &prompt);
    cr_expect_eq(cached1, 0, "nothing cached before the first request");
    cr_expect(cached2 >= prompt - 2 * SD_KV_BLOCK && cached2 < prompt,
              "cached_tokens %g of a repeated prompt of %g", cached2, prompt);
    cr_expect_eq((long)cached2 % SD_KV_BLOCK, 0, "whole blocks: %g", cached2);
    cr_expect_str_eq(second, first, "the cached prefix changes the reply");
    int port = main_server.port;
    cr_expect_eq(metric(port, "specdec_prompt_tokens_cached_total"), cached2);
    cr_expect_eq(metric(port, "specdec_kv_cache_blocks_used"), 0, "blocks held after the requests");
    cr_expect_geq(metric(port, "specdec_kv_cache_blocks_cached"), cached2 / SD_KV_BLOCK);
    cr_expect_gt(metric(port, "specdec_kv_cache_blocks_free"), 0);
    cr_expect_eq(metric(port, "specdec_kv_cache_block_evictions_total"), 0);
    stop_server(&main_server);

    server_t off;
    start_server(&off, (const char *const[]){"--no-prefix-cache", NULL});
    free(second);
    second = cached_chat(off.port, body, &cached1, &prompt);
    free(second);
    second = cached_chat(off.port, body, &cached2, &prompt);
    cr_expect_eq(cached1 + cached2, 0, "--no-prefix-cache cached %g, %g", cached1, cached2);
    cr_expect_str_eq(second, first, "the reply depends on the prefix cache");
    cr_expect_eq(metric(off.port, "specdec_prompt_tokens_cached_total"), 0);
    stop_server(&off);
    free(first), free(second), free(body);
}

Test(serve_http, disconnect_mid_stream_cancels)
{
    int port = main_server.port;
    double cancelled = metric(port, "specdec_requests_finished_total{reason=\"cancelled\"}");
    long_stream_t ls = {.port = port, .hang_up_first = 1};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, run_long_stream, &ls), 0);
    pthread_join(th, NULL);
    cr_expect_eq(ls.rc, CURLE_WRITE_ERROR, "the client hung up: %s", curl_easy_strerror(ls.rc));
    double until = sd_now() + 60;
    while (metric(port, "specdec_requests_active ") != 0 ||
           metric(port, "specdec_requests_finished_total{reason=\"cancelled\"}") <= cancelled) {
        cr_assert(sd_now() < until, "the request was not cancelled");
        sleep_ms(20);
    }
    cr_expect_eq(metric(port, "specdec_kv_cache_positions_used "), 0, "its KV cache is freed");
    cr_expect_eq(metric(port, "specdec_requests_finished_total{reason=\"length\"}"), 0,
                 "the request did not run to its end");
    free(ls.reply.body);
    stop_server(&main_server);
}

Test(serve_http, full_queue_is_429)
{
    server_t small = {0};
    start_server(&small, (const char *const[]){"--max-active", "1", "--max-queued", "0", NULL});
    long_stream_t ls = {.port = small.port};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, run_long_stream, &ls), 0);
    wait_started(&ls);
    char *body = chat_body(2, 4, 0, NULL);
    reply_t r = http(small.port, "POST", CHAT, body);
    bad_row_t row = {"POST", CHAT, body, 429, "requests", NULL, "rate_limit_exceeded"};
    check_error(&row, &r);
    free(r.body);
    cr_expect_geq(metric(small.port, "specdec_requests_rejected_total{reason=\"busy\"}"), 1);
    cr_expect_geq(metric(small.port, "specdec_requests_total{status=\"429\"}"), 1);
    atomic_store(&ls.hang_up, 1);
    pthread_join(th, NULL);
    free(ls.reply.body);
    /* the slot frees once the hung-up stream is cancelled */
    double until = sd_now() + 60;
    for (;;) {
        r = http(small.port, "POST", CHAT, body);
        long status = r.status;
        free(r.body);
        if (status == 200) break;
        cr_assert_eq(status, 429);
        cr_assert(sd_now() < until, "the slot never freed");
        sleep_ms(20);
    }
    free(body);
    stop_server(&small);
    stop_server(&main_server);
}

Test(serve_http, sigterm_ends_streams_and_exits_zero)
{
    server_t s = {0};
    start_server(&s, (const char *const[]){"--grace-seconds", "0", NULL});
    long_stream_t ls = {.port = s.port};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, run_long_stream, &ls), 0);
    wait_started(&ls);
    stop_server(&s); /* exit status 0 */
    pthread_join(th, NULL);
    cr_expect_eq(ls.rc, CURLE_OK, "%s", curl_easy_strerror(ls.rc));
    cr_assert(ls.reply.body, "no stream body");
    sse_t sse = sse_parse(&ls.reply); /* ends with data: [DONE] */
    cr_expect_str_eq(sse.finish, "stop", "cancelled by the shutdown, not run to its length");
    sse_free(&sse);
    free(ls.reply.body);
    stop_server(&main_server);
}

/* `specdec launch -n 2 -- specdec serve`: rank 0 serves, both ranks step together, and the
 * text equals the single-rank server's. */
Test(serve_http, tensor_parallel_two_ranks)
{
    server_t tp = {0};
    start_server_ranks(&tp, 2, NULL);
    char *body = chat_body(61, 24, 0, NULL);
    reply_t a = http(main_server.port, "POST", CHAT, body);
    reply_t b = http(tp.port, "POST", CHAT, body);
    char *ta = content_of(&a), *tb = content_of(&b);
    cr_expect_str_eq(tb, ta, "two ranks give the single-rank text");
    free(ta), free(tb), free(a.body), free(b.body), free(body);
    stop_server_expect(&tp, 128 + SIGTERM); /* launch's status when every rank exited 0 */
    stop_server(&main_server);
}
