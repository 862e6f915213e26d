/* Server-Sent Events for "stream": true. Three threads meet in a stream_t — the scheduler's
 * on_token (appends under the lock, never waits otherwise), a waiter in sd_request_wait and
 * the connection's content reader (events; a keep-alive after 1 s idle): docs/serve.md,
 * "Threads". MHD calls free_stream once the response is sent or the client has gone: it
 * cancels the request if it still runs, joins the waiter and frees everything. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http.h"

/* Text pieces as the token callback delivered them: text[ends[i-1]..ends[i]). */
typedef struct pieces {
    char *text;
    size_t len, cap;
    size_t *ends;
    size_t n, n_cap;
} pieces_t;

typedef struct stream {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pieces_t pending;        /* on_token appends; the reader swaps it with `taken` */
    int failed;              /* a piece could not be stored (out of memory) */
    int finished;            /* set by the waiter with status and result */
    sd_status_t status;
    sd_gen_result_t result;
    sd_request_t *request;
    pthread_t waiter;
    int has_waiter;
    /* The connection thread's side. */
    pieces_t taken;
    oai_reply_t reply;
    int include_usage;
    char *out; /* SSE bytes [out_off, out_len) not yet handed to MHD */
    size_t out_len, out_off, out_cap;
    int done;  /* "data: [DONE]" is in out */
} stream_t;

static const char keep_alive[] = ": keep-alive\n\n";
static const char done_event[] = "data: [DONE]\n\n";

static int grow(void **buf, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return 1;
    size_t c = *cap ? *cap : 256;
    while (c < need) c *= 2;
    void *b = realloc(*buf, c * elem);
    if (!b) return 0;
    *buf = b, *cap = c;
    return 1;
}

static int pieces_push(pieces_t *p, const char *text, size_t len)
{
    if (!grow((void **)&p->text, &p->cap, p->len + len, 1) ||
        !grow((void **)&p->ends, &p->n_cap, p->n + 1, sizeof *p->ends))
        return 0;
    memcpy(p->text + p->len, text, len);
    p->len += len;
    p->ends[p->n++] = p->len;
    return 1;
}

static int out_append(stream_t *st, const char *data, size_t n)
{
    if (!grow((void **)&st->out, &st->out_cap, st->out_len + n, 1)) return 0;
    memcpy(st->out + st->out_len, data, n);
    st->out_len += n;
    return 1;
}

/* "data: JSON\n\n" (json malloc'd, taken; NULL = out of memory). */
static int out_event(stream_t *st, char *json)
{
    int ok = json && out_append(st, "data: ", 6) && out_append(st, json, strlen(json)) &&
             out_append(st, "\n\n", 2);
    free(json);
    return ok;
}

/* ---- the three threads ---------------------------------------------------------------- */

static int on_token(void *user, int32_t token, const char *text, size_t len)
{
    stream_t *st = user;
    if (len == 0) return 0;
    pthread_mutex_lock(&st->lock);
    if (!pieces_push(&st->pending, text, len)) st->failed = 1;
    int stop = st->failed;
    pthread_cond_signal(&st->wake);
    pthread_mutex_unlock(&st->lock);
    return stop;
}

static void *wait_for_end(void *arg)
{
    stream_t *st = arg;
    sd_gen_result_t res = {0};
    sd_status_t status = sd_request_wait(st->request, -1.0, &res);
    pthread_mutex_lock(&st->lock);
    st->result = res;
    st->status = status;
    st->finished = 1;
    pthread_cond_signal(&st->wake);
    pthread_mutex_unlock(&st->lock);
    return NULL;
}

/* The closing events: the final chunk (and usage), or an error event; then [DONE]. */
static int out_end(stream_t *st)
{
    int ok;
    if (st->status == SD_OK || st->status == SD_ERR_CANCELLED) {
        ok = out_event(st, oai_final_chunk_json(&st->reply, st->result.stop_reason));
        if (ok && st->include_usage) ok = out_event(st, oai_usage_chunk_json(&st->reply, &st->result));
    } else {
        oai_error_t e;
        oai_error_from_status(st->status, "the generation failed", &e);
        ok = out_event(st, oai_error_json(&e));
    }
    st->done = 1;
    return ok && out_append(st, done_event, sizeof done_event - 1);
}

/* Wait (at most 1 s) for pieces or the end and put their events into out; a keep-alive
 * comment when neither came. 0 when out of memory. */
static int fill(stream_t *st)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 1;
    pthread_mutex_lock(&st->lock);
    while (!st->pending.n && !st->finished && !st->failed)
        if (pthread_cond_timedwait(&st->wake, &st->lock, &until) == ETIMEDOUT) break;
    pieces_t swap = st->pending;
    st->pending = st->taken;
    st->taken = swap;
    int finished = st->finished, failed = st->failed;
    pthread_mutex_unlock(&st->lock);

    st->out_len = st->out_off = 0;
    int ok = !failed;
    const pieces_t *p = &st->taken;
    for (size_t i = 0, start = 0; ok && i < p->n; start = p->ends[i++])
        ok = out_event(st, oai_chunk_json(&st->reply, p->text + start, p->ends[i] - start, 0));
    st->taken.len = st->taken.n = 0;
    if (ok && finished) return out_end(st);
    if (ok && st->out_len == 0) return out_append(st, keep_alive, sizeof keep_alive - 1);
    return ok;
}

static ssize_t read_stream(void *cls, uint64_t pos, char *buf, size_t max)
{
    stream_t *st = cls;
    if (st->out_off == st->out_len) {
        if (st->done) return MHD_CONTENT_READER_END_OF_STREAM;
        if (!fill(st)) return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    size_t n = st->out_len - st->out_off < max ? st->out_len - st->out_off : max;
    memcpy(buf, st->out + st->out_off, n);
    st->out_off += n;
    return (ssize_t)n;
}

static void free_stream(void *cls)
{
    stream_t *st = cls;
    if (st->request) sd_request_cancel(st->request); /* no effect once finished */
    if (st->has_waiter) pthread_join(st->waiter, NULL);
    sd_request_free(st->request);
    sd_gen_result_free(&st->result);
    free(st->pending.text), free(st->pending.ends);
    free(st->taken.text), free(st->taken.ends);
    free(st->out);
    pthread_cond_destroy(&st->wake);
    pthread_mutex_destroy(&st->lock);
    free(st);
}

/* A stream with its opening chunk (chat: the assistant role) already in out. */
static stream_t *stream_new(const oai_reply_t *reply, int include_usage)
{
    stream_t *st = calloc(1, sizeof *st);
    if (!st) return NULL;
    pthread_mutex_init(&st->lock, NULL);
    pthread_cond_init(&st->wake, NULL);
    st->reply = *reply;
    st->include_usage = include_usage;
    if (reply->endpoint == OAI_CHAT && !out_event(st, oai_chunk_json(reply, "", 0, 1)))
        return free_stream(st), NULL;
    return st;
}

enum MHD_Result http_stream_generation(serve_t *s, struct MHD_Connection *c,
                                       const oai_request_t *req, const oai_reply_t *reply)
{
    stream_t *st = stream_new(reply, req->include_usage);
    if (!st) return http_respond(s, c, 500, NULL, NULL, 0);
    sd_status_t e = sd_engine_submit(s->engine, req->prompt, req->n_prompt, &req->gen, on_token,
                                     st, &st->request);
    if (e != SD_OK) {
        enum MHD_Result ok = http_respond_submit_error(s, c, e);
        free_stream(st);
        return ok;
    }
    if (pthread_create(&st->waiter, NULL, wait_for_end, st) != 0)
        return free_stream(st), http_respond(s, c, 500, NULL, NULL, 0);
    st->has_waiter = 1;
    struct MHD_Response *r =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, read_stream, st, free_stream);
    if (!r) return free_stream(st), http_respond(s, c, 500, NULL, NULL, 0);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    return http_queue(s, c, 200, r);
}
