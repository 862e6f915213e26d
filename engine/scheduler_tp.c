/* The per-step decision rank 0's scheduler broadcasts to the other ranks of a
 * tensor-parallel engine (engine/scheduler_impl.h). Two broadcasts per step: a fixed header
 * (stop flag, counts, payload size), then the payload when there is one:
 *
 *   int32 cancel[n_cancel]                      active indices, descending
 *   per admitted request, in admission order:
 *     u64 n_prompt; i32 max_tokens, top_k, ignore_eos, logprobs, top_logprobs;
 *     f32 temperature, top_p, min_p;
 *     u64 seed; u32 n_stop_strings, n_stop_tokens; i32 prompt[n_prompt];
 *     i32 stop_tokens[n_stop_tokens]; per stop string: u32 length, bytes
 *
 * Every field is a fixed-size little-endian-as-the-host value: ranks run on one node. */
#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "engine/scheduler_impl.h"

#define STEP_MAGIC 0x54534453u /* "SDST" */

typedef struct step_header {
    uint32_t magic, stop, n_cancel, n_admit;
    uint64_t payload_bytes;
} step_header_t;

typedef struct wire {
    unsigned char *buf;
    size_t len, cap, pos; /* pos: the reader's offset */
    int bad;              /* an allocation failed (writer) or the payload ran short (reader) */
} wire_t;

static void put(wire_t *w, const void *p, size_t n)
{
    if (w->bad || n == 0) return;
    if (w->len + n > w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 4096;
        while (cap < w->len + n) cap *= 2;
        unsigned char *grown = realloc(w->buf, cap);
        if (grown == NULL) {
            w->bad = 1;
            return;
        }
        w->buf = grown;
        w->cap = cap;
    }
    memcpy(w->buf + w->len, p, n);
    w->len += n;
}

static void get(wire_t *w, void *p, size_t n)
{
    if (n == 0) return;
    if (w->bad || w->len - w->pos < n) {
        w->bad = 1;
        memset(p, 0, n);
        return;
    }
    memcpy(p, w->buf + w->pos, n);
    w->pos += n;
}

/* The request's prompt and config on the wire. */
static void put_request(wire_t *w, const sd_request_t *r)
{
    const sd_gen_config_t *c = &r->config;
    uint64_t n_prompt = r->n_prompt, seed = c->seed;
    int32_t ints[5] = {c->max_tokens, c->top_k, c->ignore_eos, c->logprobs, c->top_logprobs};
    float floats[3] = {c->temperature, c->top_p, c->min_p};
    uint32_t counts[2] = {(uint32_t)c->n_stop_strings, (uint32_t)c->n_stop_tokens};
    put(w, &n_prompt, sizeof n_prompt);
    put(w, ints, sizeof ints);
    put(w, floats, sizeof floats);
    put(w, &seed, sizeof seed);
    put(w, counts, sizeof counts);
    put(w, r->prompt, r->n_prompt * sizeof *r->prompt);
    put(w, c->stop_tokens, c->n_stop_tokens * sizeof *c->stop_tokens);
    for (size_t i = 0; i < c->n_stop_strings; i++) {
        uint32_t len = (uint32_t)strlen(c->stop_strings[i]);
        put(w, &len, sizeof len);
        put(w, c->stop_strings[i], len);
    }
}

/* A request read back from the wire (its own copies), owned by this rank's scheduler. */
static sd_status_t get_request(sd_engine_t *e, wire_t *w, sd_request_t **out)
{
    uint64_t n_prompt = 0;
    int32_t ints[5];
    float floats[3];
    uint32_t counts[2];
    sd_gen_config_t c;
    sd_gen_config_default(&c);
    get(w, &n_prompt, sizeof n_prompt);
    get(w, ints, sizeof ints);
    get(w, floats, sizeof floats);
    get(w, &c.seed, sizeof c.seed);
    get(w, counts, sizeof counts);
    if (w->bad || n_prompt > (w->len - w->pos) / sizeof(int32_t) || counts[0] > 4096 ||
        counts[1] > (w->len - w->pos) / sizeof(int32_t))
        return sd_set_error(SD_ERR_INTERNAL, "scheduler step message: request header corrupt");
    c.max_tokens = ints[0];
    c.top_k = ints[1];
    c.ignore_eos = ints[2];
    c.logprobs = ints[3]; /* computed on every rank alike; only rank 0 has a caller */
    c.top_logprobs = ints[4];
    c.temperature = floats[0];
    c.top_p = floats[1];
    c.min_p = floats[2];
    const int32_t *prompt = (const int32_t *)(w->buf + w->pos);
    w->pos += n_prompt * sizeof(int32_t);
    c.stop_tokens = (const int32_t *)(w->buf + w->pos);
    c.n_stop_tokens = counts[1];
    w->pos += counts[1] * sizeof(int32_t);
    char **stops = calloc(counts[0] + 1, sizeof *stops);
    SD_ALLOC_CHECK(stops, (counts[0] + 1) * sizeof *stops, "stop strings");
    for (uint32_t i = 0; i < counts[0] && !w->bad; i++) {
        uint32_t len = 0;
        get(w, &len, sizeof len);
        if (w->bad || len > w->len - w->pos || (stops[i] = malloc(len + 1)) == NULL) {
            w->bad = 1;
            break;
        }
        get(w, stops[i], len);
        stops[i][len] = '\0';
    }
    c.stop_strings = (const char *const *)stops;
    c.n_stop_strings = counts[0];
    sd_status_t st = w->bad ? sd_set_error(SD_ERR_INTERNAL, "scheduler step message: request corrupt")
                            : sched_request_new(prompt, n_prompt, &c, out);
    for (uint32_t i = 0; i < counts[0]; i++) free(stops[i]);
    free(stops);
    if (st != SD_OK) return st;
    sd_request_t *r = *out;
    r->engine = e;
    r->caller_released = 1; /* no caller on this rank: the scheduler's release frees it */
    return SD_OK;
}

sd_status_t sched_tp_send(sd_engine_t *e, const sched_decision_t *d)
{
    wire_t w = {0};
    put(&w, d->cancel, (size_t)d->n_cancel * sizeof *d->cancel);
    for (int i = 0; i < d->n_admit; i++) put_request(&w, d->admit[i]);
    step_header_t h = {STEP_MAGIC, (uint32_t)d->stop, (uint32_t)d->n_cancel, (uint32_t)d->n_admit,
                       w.len};
    sd_status_t st = w.bad ? sd_set_error(SD_ERR_OUT_OF_MEMORY, "scheduler step message of %zu "
                                          "bytes", w.len)
                           : SD_OK;
    if (st != SD_OK) h = (step_header_t){STEP_MAGIC, 1, 0, 0, 0}; /* stop the others cleanly */
    sd_status_t bs = sd_comm_broadcast(e->comm, &h, sizeof h, 0);
    if (bs == SD_OK && h.payload_bytes > 0) bs = sd_comm_broadcast(e->comm, w.buf, w.len, 0);
    free(w.buf);
    return st != SD_OK ? st : bs;
}

sd_status_t sched_tp_recv(sd_engine_t *e, sched_decision_t *d)
{
    step_header_t h;
    SD_CHECK(sd_comm_broadcast(e->comm, &h, sizeof h, 0));
    int limit = e->p.max_active;
    if (h.magic != STEP_MAGIC || h.n_cancel > (uint32_t)limit || h.n_admit > (uint32_t)limit ||
        h.payload_bytes > ((uint64_t)1 << 34))
        return sd_set_error(SD_ERR_RANK_DIVERGENCE,
                            "rank %d: scheduler step header from rank 0 is not one (magic %08x, "
                            "%u cancelled, %u admitted; max_active here %d)", e->rank, h.magic,
                            h.n_cancel, h.n_admit, limit);
    wire_t w = {.len = (size_t)h.payload_bytes};
    if (w.len > 0) {
        w.buf = malloc(w.len);
        SD_ALLOC_CHECK(w.buf, w.len, "scheduler step message");
        sd_status_t st = sd_comm_broadcast(e->comm, w.buf, w.len, 0);
        if (st != SD_OK) {
            free(w.buf);
            return st;
        }
    }
    d->stop = (int)h.stop;
    d->n_cancel = (int)h.n_cancel;
    get(&w, d->cancel, (size_t)d->n_cancel * sizeof *d->cancel);
    sd_status_t st = w.bad ? sd_set_error(SD_ERR_INTERNAL, "scheduler step message too short")
                           : SD_OK;
    for (d->n_admit = 0; st == SD_OK && d->n_admit < (int)h.n_admit; d->n_admit++)
        st = get_request(e, &w, &d->admit[d->n_admit]);
    free(w.buf);
    if (st != SD_OK) /* the requests read so far: nobody else holds them */
        for (int i = 0; i < d->n_admit; i++) sched_request_destroy(d->admit[i]);
    return st;
}
