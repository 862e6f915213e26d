/* Server-Sent Events for "stream": true. Three threads meet in a stream_t — the scheduler's
 * callbacks (on_logprobs and on_token append under the lock, never wait otherwise), a waiter
 * in sd_request_wait and the connection's content reader (events; a keep-alive after 1 s
 * idle): docs/serve.md, "Threads". A request of n choices is n engine requests, each with its
 * own choice_t; their chunks interleave, each naming its index. MHD calls free_stream once
 * the response is sent or the client has gone: it cancels the requests still running, joins
 * the waiter and frees everything. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http.h"

/* Log-probabilities of consecutive tokens, in sd_gen_result_t's layout. */
typedef struct entries {
    int32_t *tokens, *top_tokens; /* [cap], [cap * n_top] */
    float *lps, *top_lps;
    size_t n, cap;
    int n_top;
} entries_t;

/* Text pieces as the token callback delivered them: text[ends[i-1]..ends[i]), with the
 * log-probabilities of the tokens that released them: entries[entry_ends[i-1]..entry_ends[i]). */
typedef struct pieces {
    char *text;
    size_t len, cap;
    size_t *ends, *entry_ends;
    size_t n, n_cap;
    entries_t entries;
} pieces_t;

struct stream;

/* One choice: its engine request and what it has produced. */
typedef struct choice {
    struct stream *st;
    int index;
    sd_request_t *request;
    pieces_t pending;        /* on_token appends (lock); the reader swaps it with `taken` */
    entries_t open;          /* the scheduler's: tokens whose text is not out yet; the reader's
                                once the choice finished (the final chunk carries them) */
    int open_failed;         /* an entry could not be stored (scheduler thread) */
    int finished;            /* set by the waiter with status and result (lock) */
    sd_status_t status;
    sd_gen_result_t result;
    /* The connection thread's side. */
    pieces_t taken;
    int ended;               /* its final chunk (or error event) is out */
    oai_text_offset_t offset;
} choice_t;

typedef struct stream {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    int failed;              /* a piece could not be stored (out of memory) */
    int n_finished;          /* choices the waiter has finished (lock) */
    int n;
    choice_t *choices;       /* [n] */
    pthread_t waiter;
    int has_waiter;
    /* The connection thread's side. */
    oai_reply_t reply;
    int include_usage;
    int n_ended, errors;
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

static int entries_reserve(entries_t *e, size_t need)
{
    if (need <= e->cap) return 1;
    size_t c = e->cap ? e->cap : 64, k = (size_t)e->n_top;
    while (c < need) c *= 2;
    int32_t *t = realloc(e->tokens, c * sizeof *t);
    if (t) e->tokens = t;
    float *l = t ? realloc(e->lps, c * sizeof *l) : NULL;
    if (l) e->lps = l;
    int32_t *tt = l && k ? realloc(e->top_tokens, c * k * sizeof *tt) : NULL;
    if (tt) e->top_tokens = tt;
    float *tl = tt ? realloc(e->top_lps, c * k * sizeof *tl) : NULL;
    if (tl) e->top_lps = tl;
    if (!l || (k && !tl)) return 0;
    e->cap = c;
    return 1;
}

/* Append src.tokens[from..to) to e. */
static int entries_append(entries_t *e, const entries_t *src, size_t from, size_t to)
{
    size_t m = to - from, k = (size_t)e->n_top;
    if (m == 0) return 1;
    if (!entries_reserve(e, e->n + m)) return 0;
    memcpy(e->tokens + e->n, src->tokens + from, m * sizeof *e->tokens);
    memcpy(e->lps + e->n, src->lps + from, m * sizeof *e->lps);
    if (k) memcpy(e->top_tokens + e->n * k, src->top_tokens + from * k, m * k * sizeof(int32_t));
    if (k) memcpy(e->top_lps + e->n * k, src->top_lps + from * k, m * k * sizeof(float));
    e->n += m;
    return 1;
}

static void entries_free(entries_t *e)
{
    free(e->tokens), free(e->lps), free(e->top_tokens), free(e->top_lps);
}

/* The oai_logprobs_t of e's entries [from, to), the choice's text offset advancing. */
static oai_logprobs_t entries_view(const entries_t *e, size_t from, size_t to, choice_t *ch)
{
    size_t k = (size_t)e->n_top;
    if (to == from) return (oai_logprobs_t){.n_top = e->n_top, .offset = &ch->offset};
    return (oai_logprobs_t){to - from, e->tokens + from, e->lps + from, e->n_top,
                            k ? e->top_tokens + from * k : NULL, k ? e->top_lps + from * k : NULL,
                            &ch->offset};
}

/* A piece text[len] with the open entries (all of them move into p). */
static int pieces_push(pieces_t *p, const char *text, size_t len, entries_t *open)
{
    if (p->n == p->n_cap) {
        size_t c = p->n_cap ? 2 * p->n_cap : 16;
        size_t *ends = realloc(p->ends, c * sizeof *ends);
        if (!ends) return 0;
        p->ends = ends;
        size_t *entry_ends = realloc(p->entry_ends, c * sizeof *entry_ends);
        if (!entry_ends) return 0;
        p->entry_ends = entry_ends;
        p->n_cap = c;
    }
    if (!grow((void **)&p->text, &p->cap, p->len + len, 1) ||
        !entries_append(&p->entries, open, 0, open->n))
        return 0;
    open->n = 0;
    if (len) memcpy(p->text + p->len, text, len);
    p->len += len;
    p->ends[p->n] = p->len;
    p->entry_ends[p->n++] = p->entries.n;
    return 1;
}

static void pieces_free(pieces_t *p)
{
    free(p->text), free(p->ends), free(p->entry_ends);
    entries_free(&p->entries);
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

/* Scheduler thread: a kept token's log-probabilities wait in `open` for its text. */
static void on_logprobs(void *user, const sd_token_logprobs_t *lp)
{
    choice_t *ch = user;
    entries_t one = {(int32_t *)&lp->token, (int32_t *)lp->top_tokens, (float *)&lp->logprob,
                     (float *)lp->top_logprobs, 1, 1, ch->open.n_top};
    if (!entries_append(&ch->open, &one, 0, 1)) ch->open_failed = 1;
}

static int on_token(void *user, int32_t token, const char *text, size_t len)
{
    choice_t *ch = user;
    stream_t *st = ch->st;
    if (len == 0 && !ch->open_failed) return 0;
    pthread_mutex_lock(&st->lock);
    if (ch->open_failed || !pieces_push(&ch->pending, text, len, &ch->open)) st->failed = 1;
    int stop = st->failed;
    pthread_cond_signal(&st->wake);
    pthread_mutex_unlock(&st->lock);
    return stop;
}

static void *wait_for_end(void *arg)
{
    stream_t *st = arg;
    for (int i = 0; i < st->n; i++) {
        choice_t *ch = &st->choices[i];
        sd_gen_result_t res = {0};
        sd_status_t status = sd_request_wait(ch->request, -1.0, &res);
        pthread_mutex_lock(&st->lock);
        ch->result = res;
        ch->status = status;
        ch->finished = 1;
        st->n_finished++;
        pthread_cond_signal(&st->wake);
        pthread_mutex_unlock(&st->lock);
    }
    return NULL;
}

/* The closing event of a finished choice: its final chunk (with the log-probabilities of
 * tokens that released no text), or an error event. */
static int out_choice_end(stream_t *st, choice_t *ch)
{
    ch->ended = 1;
    st->n_ended++;
    if (ch->status == SD_OK || ch->status == SD_ERR_CANCELLED) {
        oai_logprobs_t lp = entries_view(&ch->open, 0, ch->open.n, ch);
        return out_event(st, oai_final_chunk_json(&st->reply, ch->index, ch->result.stop_reason,
                                                  ch->open.n ? &lp : NULL));
    }
    st->errors++;
    oai_error_t e;
    oai_error_from_status(ch->status, "the generation failed", &e);
    return out_event(st, oai_error_json(&e));
}

/* Every choice has ended: the usage chunk when asked (and nothing failed), then [DONE]. */
static int out_end(stream_t *st)
{
    int ok = 1;
    if (st->include_usage && !st->errors) {
        sd_gen_result_t *res = malloc((size_t)st->n * sizeof *res);
        for (int i = 0; res && i < st->n; i++) res[i] = st->choices[i].result;
        ok = res && out_event(st, oai_usage_chunk_json(&st->reply, res, st->n));
        free(res);
    }
    st->done = 1;
    return ok && out_append(st, done_event, sizeof done_event - 1);
}

/* The events of one choice's taken pieces, then its end once finished. */
static int out_choice(stream_t *st, choice_t *ch, int finished)
{
    int ok = 1;
    const pieces_t *p = &ch->taken;
    for (size_t i = 0, start = 0, e0 = 0; ok && i < p->n; start = p->ends[i], e0 = p->entry_ends[i], i++) {
        oai_logprobs_t lp = entries_view(&p->entries, e0, p->entry_ends[i], ch);
        ok = out_event(st, oai_chunk_json(&st->reply, ch->index, p->text + start,
                                          p->ends[i] - start, 0, st->reply.logprobs ? &lp : NULL));
    }
    ch->taken.len = ch->taken.n = ch->taken.entries.n = 0;
    if (ok && finished && !ch->ended) ok = out_choice_end(st, ch);
    return ok;
}

/* Wait (at most 1 s) for pieces or a choice's end and put their events into out; a
 * keep-alive comment when neither came. 0 when out of memory. */
static int fill(stream_t *st)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 1;
    int finished[SD_MAX_CHOICES];
    pthread_mutex_lock(&st->lock);
    for (;;) {
        int any = st->failed || st->n_finished > st->n_ended;
        for (int i = 0; i < st->n && !any; i++) any = st->choices[i].pending.n > 0;
        if (any || pthread_cond_timedwait(&st->wake, &st->lock, &until) == ETIMEDOUT) break;
    }
    for (int i = 0; i < st->n; i++) {
        choice_t *ch = &st->choices[i];
        pieces_t swap = ch->pending;
        ch->pending = ch->taken;
        ch->taken = swap;
        finished[i] = ch->finished;
    }
    int failed = st->failed;
    pthread_mutex_unlock(&st->lock);

    st->out_len = st->out_off = 0;
    int ok = !failed;
    for (int i = 0; ok && i < st->n; i++) ok = out_choice(st, &st->choices[i], finished[i]);
    if (ok && st->n_ended == st->n) return out_end(st);
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
    for (int i = 0; i < st->n; i++) sd_request_cancel(st->choices[i].request); /* no effect once finished */
    if (st->has_waiter) pthread_join(st->waiter, NULL);
    for (int i = 0; i < st->n; i++) {
        choice_t *ch = &st->choices[i];
        sd_request_free(ch->request);
        sd_gen_result_free(&ch->result);
        pieces_free(&ch->pending);
        pieces_free(&ch->taken);
        entries_free(&ch->open);
    }
    free(st->choices);
    free(st->out);
    pthread_cond_destroy(&st->wake);
    pthread_mutex_destroy(&st->lock);
    free(st);
}

/* A stream of n choices with their opening chunks (chat: the assistant role) already in out;
 * n_top: the alternatives per token when the request asked for log-probabilities. */
static stream_t *stream_new(const oai_reply_t *reply, int include_usage, int n, int n_top)
{
    stream_t *st = calloc(1, sizeof *st);
    if (!st) return NULL;
    pthread_mutex_init(&st->lock, NULL);
    pthread_cond_init(&st->wake, NULL);
    st->reply = *reply;
    st->include_usage = include_usage;
    st->choices = calloc((size_t)n, sizeof *st->choices);
    if (!st->choices) return free_stream(st), NULL;
    st->n = n;
    for (int i = 0; i < n; i++) {
        choice_t *ch = &st->choices[i];
        *ch = (choice_t){.st = st, .index = i};
        ch->pending.entries.n_top = ch->taken.entries.n_top = ch->open.n_top = n_top;
        if (reply->endpoint == OAI_CHAT && !out_event(st, oai_chunk_json(reply, i, "", 0, 1, NULL)))
            return free_stream(st), NULL;
    }
    return st;
}

enum MHD_Result http_stream_generation(serve_t *s, struct MHD_Connection *c,
                                       const oai_request_t *req, const oai_reply_t *reply)
{
    int n = req->n;
    stream_t *st = stream_new(reply, req->include_usage, n, req->gen.top_logprobs);
    void **users = calloc((size_t)n, sizeof *users);
    sd_request_t **rs = calloc((size_t)n, sizeof *rs);
    if (!st || !users || !rs) {
        if (st) free_stream(st);
        free(users), free(rs);
        return http_respond(s, c, 500, NULL, NULL, 0);
    }
    for (int i = 0; i < n; i++) users[i] = &st->choices[i];
    sd_gen_config_t gen = req->gen;
    gen.logprobs_callback = gen.logprobs ? on_logprobs : NULL;
    sd_status_t e = sd_engine_submit_choices(s->engine, req->prompt, req->n_prompt, &gen, n,
                                             on_token, users, rs);
    for (int i = 0; e == SD_OK && i < n; i++) st->choices[i].request = rs[i];
    free(users), free(rs);
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
