/* The serving engine: thread-safe submission and continuous batching of speculative
 * requests (include/specdec/specdec.h, "serving engine"). One scheduler thread owns every
 * generation (engine/gen.h) and is the only thread that runs the model; a step admits,
 * cancels, drafts, plans, runs one sd_forward_batch and advances each request
 * (docs/design-notes.md, "Serving", also for load-aware drafts).
 *
 * Locking: engine->mu guards the queue, the counters and the flags; each request's own
 * mutex guards its completion (done, result, references), so a request handle outlives the
 * engine. Lock order: engine->mu before a request's mu. The callback and the model run
 * without any lock held. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/check.h"
#include "core/clock.h"
#include "engine/gen.h"
#include "core/log.h"
#include "model/forward.h"
#include "model/model.h"
#include "engine/scheduler_impl.h"

/* Absolute CLOCK_REALTIME time `seconds` from now (condition variables use it). */
static struct timespec deadline_in(double seconds)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double whole = floor(seconds);
    ts.tv_sec += (time_t)whole;
    ts.tv_nsec += (long)((seconds - whole) * 1e9);
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

/* ---- histograms ------------------------------------------------------------------- */

static void hist_init(sd_histogram_t *h, const double *bounds, int n)
{
    memset(h, 0, sizeof *h);
    h->n_bounds = n;
    memcpy(h->bounds, bounds, (size_t)n * sizeof *bounds);
}

static void hist_observe(sd_histogram_t *h, double v)
{
    int i = 0;
    while (i < h->n_bounds && v > h->bounds[i]) i++;
    h->counts[i]++;
    h->sum += v;
    h->count++;
}

static void metrics_init(sd_engine_metrics_t *m)
{
    static const double step[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};
    static const double wait[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
    static const double rate[] = {0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0};
    double len[SD_SPEC_MAX_K + 1];
    for (int i = 0; i <= SD_SPEC_MAX_K; i++) len[i] = i;
    memset(m, 0, sizeof *m);
    hist_init(&m->step_seconds, step, sizeof step / sizeof step[0]);
    hist_init(&m->ttft_seconds, wait, sizeof wait / sizeof wait[0]);
    hist_init(&m->queue_seconds, wait, sizeof wait / sizeof wait[0]);
    hist_init(&m->acceptance_rate, rate, sizeof rate / sizeof rate[0]);
    hist_init(&m->accepted_len, len, SD_SPEC_MAX_K + 1);
}

/* ---- requests ----------------------------------------------------------------------- */

void sched_request_destroy(sd_request_t *r)
{
    if (r->stops != NULL) /* NULL when its allocation failed */
        for (size_t i = 0; i < r->config.n_stop_strings; i++) free(r->stops[i]);
    free(r->stops);
    free(r->stop_tokens);
    free(r->prompt);
    sd_gen_result_free(&r->result);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->done_cv);
    free(r);
}

sd_status_t sched_request_new(const int32_t *prompt, size_t n_prompt, const sd_gen_config_t *c,
                              sd_request_t **out)
{
    sd_request_t *r = calloc(1, sizeof *r);
    SD_ALLOC_CHECK(r, sizeof *r, "request");
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->done_cv, NULL);
    r->config = *c;
    r->prompt = malloc(n_prompt * sizeof *prompt);
    r->stops = calloc(c->n_stop_strings + 1, sizeof *r->stops);
    r->stop_tokens = malloc((c->n_stop_tokens + 1) * sizeof *r->stop_tokens);
    int ok = r->prompt && r->stops && r->stop_tokens;
    for (size_t i = 0; ok && i < c->n_stop_strings; i++)
        ok = (r->stops[i] = strdup(c->stop_strings[i])) != NULL;
    if (!ok) {
        sched_request_destroy(r);
        return sd_set_error(SD_ERR_OUT_OF_MEMORY, "out of memory copying a request of %zu tokens",
                            n_prompt);
    }
    memcpy(r->prompt, prompt, n_prompt * sizeof *prompt);
    r->n_prompt = n_prompt;
    if (c->n_stop_tokens) memcpy(r->stop_tokens, c->stop_tokens, c->n_stop_tokens * sizeof(int32_t));
    r->config.stop_strings = (const char *const *)r->stops;
    r->config.stop_tokens = r->stop_tokens;
    *out = r;
    return SD_OK;
}

/* Drop one of the request's two references (caller, scheduler); the last frees it. */
static void request_release(sd_request_t *r, int scheduler)
{
    pthread_mutex_lock(&r->mu);
    if (scheduler) r->scheduler_released = 1;
    else r->caller_released = 1;
    int last = r->scheduler_released && r->caller_released;
    pthread_mutex_unlock(&r->mu);
    if (last) sched_request_destroy(r);
}

/* The request is over: publish status and result, wake its waiters, drop the scheduler's
 * reference. */
static void request_complete(sd_request_t *r, sd_status_t st, const sd_gen_result_t *res)
{
    pthread_mutex_lock(&r->mu);
    r->status = st;
    if (st != SD_OK) snprintf(r->error, sizeof r->error, "%s", sd_last_error());
    r->result = *res;
    r->done = 1;
    pthread_cond_broadcast(&r->done_cv);
    pthread_mutex_unlock(&r->mu);
    request_release(r, 1);
}

/* The token callback every generation gets: time to first token, then the caller's. */
static int on_token(void *user, int32_t token, const char *text, size_t len)
{
    sd_request_t *r = user;
    if (!r->got_first_token && token >= 0) {
        r->got_first_token = 1;
        sd_engine_t *e = r->engine;
        pthread_mutex_lock(&e->mu);
        hist_observe(&e->m.ttft_seconds, sd_now() - r->t_submit);
        pthread_mutex_unlock(&e->mu);
    }
    return r->callback ? r->callback(r->user, token, text, len) : 0;
}

/* The log-probabilities callback a generation gets when its caller gave one. */
static void on_logprobs(void *user, const sd_token_logprobs_t *lp)
{
    sd_request_t *r = user;
    r->logprobs_callback(r->user, lp);
}

/* ---- the scheduler -------------------------------------------------------------------- */

/* The pool's block counts into the metrics (engine->mu held, on the scheduler thread, the
 * only one that touches the pool). */
static void pool_metrics(sd_engine_t *e)
{
    if (!e->has_pool) return;
    sd_kv_pool_counts(&e->kv_pool, &e->m.kv_blocks_used, &e->m.kv_blocks_cached,
                      &e->m.kv_blocks_free);
    e->m.kv_block_evictions = e->kv_pool.evictions;
}

/* End active request i (engine->mu not held): its result and counters; it leaves the batch. */
static void finish_active(sd_engine_t *e, int i, sd_status_t st, int cancelled)
{
    sd_request_t *r = e->active[i];
    size_t kv = r->kv_positions;
    if (cancelled) {
        sd_gen_cancel(r->gen);
        st = sd_set_error(SD_ERR_CANCELLED, "request cancelled after %zu tokens",
                          sd_gen_n_tokens(r->gen));
    }
    sd_gen_result_t res;
    st = sd_gen_finish(r->gen, st, &res);
    r->gen = NULL;
    pthread_mutex_lock(&e->mu);
    e->m.finished[res.stop_reason]++;
    e->m.generated_tokens += res.n_tokens;
    e->m.drafted += res.stats.drafted;
    e->m.accepted += res.stats.accepted;
    if (res.stats.drafted > 0) hist_observe(&e->m.acceptance_rate, res.stats.acceptance_rate);
    e->m.kv_positions_used -= kv;
    e->m.kv_bytes_used -= r->kv_bytes;
    e->m.cached_prompt_tokens += res.n_cached;
    pool_metrics(e);
    memmove(&e->active[i], &e->active[i + 1], (size_t)(e->n_active - i - 1) * sizeof *e->active);
    e->n_active--;
    request_complete(r, st, &res); /* done before shutdown can see the batch empty */
    if (e->n_active == 0 && e->n_admitting == 0 && e->queue_head == NULL)
        pthread_cond_broadcast(&e->idle_cv);
    pthread_mutex_unlock(&e->mu);
}

/* A queued request cancelled or refused before it ran (engine->mu held). */
static void finish_queued(sd_engine_t *e, sd_request_t *r, sd_status_t st)
{
    sd_gen_result_t res = {.stop_reason = st == SD_ERR_CANCELLED ? SD_STOP_CANCELLED : SD_STOP_ERROR,
                           .n_prompt = r->n_prompt};
    e->m.finished[res.stop_reason]++;
    request_complete(r, st, &res);
}

/* Rank 0: pop the queued requests that fit — a free slot each and their KV positions —
 * into d->admit, FIFO (engine->mu held, after this iteration's cancellations). */
static void pop_admissions(sd_engine_t *e, sched_decision_t *d)
{
    size_t kv = e->m.kv_positions_used;
    sd_request_t *r;
    d->n_admit = 0;
    while ((r = e->queue_head) != NULL && e->n_active + d->n_admit < e->p.max_active &&
           kv + r->kv_positions <= e->m.kv_positions_cap) {
        e->queue_head = r->next;
        if (e->queue_head == NULL) e->queue_tail = NULL;
        r->t_admit = sd_now();
        hist_observe(&e->m.queue_seconds, r->t_admit - r->t_submit);
        kv += r->kv_positions;
        d->admit[d->n_admit++] = r;
    }
    e->n_admitting += d->n_admit;
}

/* Remove cancelled requests from the queue; past the shutdown deadline, all of them
 * (engine->mu held). Queued requests live on rank 0 only. */
static void sweep_queue(sd_engine_t *e, int expire_all)
{
    sd_request_t **link = &e->queue_head, *last = NULL;
    while (*link != NULL) {
        sd_request_t *r = *link;
        if (expire_all || atomic_load(&r->cancel)) {
            *link = r->next;
            finish_queued(e, r, sd_set_error(SD_ERR_CANCELLED, "request cancelled while queued"));
        } else {
            last = r;
            link = &r->next;
        }
    }
    e->queue_tail = last;
}

/* Give each admitted request its generation (created without the lock: under TP it is
 * collective; a failure, e.g. out of memory, ends that request with its status) and a slot. */
static void admit_requests(sd_engine_t *e, sd_request_t *const *list, int n)
{
    for (int i = 0; i < n; i++) {
        sd_request_t *r = list[i];
        r->opts.request = ++e->n_admitted;
        r->opts.kv_pool = e->has_pool ? &e->kv_pool : NULL;
        r->opts.draft_kv_pool = e->has_draft_pool ? &e->draft_kv_pool : NULL;
        sd_status_t st = sd_gen_new(e->model, r->prompt, r->n_prompt, &r->config, &e->p.spec,
                                    &r->opts, on_token, r, 1, &r->gen);
        pthread_mutex_lock(&e->mu);
        e->n_admitting--;
        e->m.prompt_tokens += r->n_prompt;
        if (st != SD_OK) {
            finish_queued(e, r, st);
        } else {
            e->active[e->n_active++] = r;
            r->kv_bytes = sd_gen_kv_bytes(r->gen);
            e->m.kv_positions_used += r->kv_positions;
            e->m.kv_bytes_used += r->kv_bytes;
        }
        pool_metrics(e);
        pthread_mutex_unlock(&e->mu);
    }
}

/* End the active requests d->cancel names (descending indices). */
static void apply_cancellations(sd_engine_t *e, const sched_decision_t *d)
{
    for (int j = 0; j < d->n_cancel; j++) finish_active(e, d->cancel[j], SD_OK, 1);
}

/* Rank 0: the active requests to cancel this iteration (flagged, or all of them past the
 * shutdown deadline), descending. */
static void pick_cancellations(sd_engine_t *e, int expire_all, sched_decision_t *d)
{
    d->n_cancel = 0;
    for (int i = e->n_active - 1; i >= 0; i--)
        if (expire_all || atomic_load(&e->active[i]->cancel)) d->cancel[d->n_cancel++] = i;
}

/* Run the pending draft forwards of drafting[0 .. n) (each with its dfwd) as batched
 * forwards of the drafter's model, as many parts as fit the draft batch's rows at a time,
 * then let each drafter go on. A failure ends that request's step (plan_status). */
static void run_draft_round(sd_engine_t *e, int n)
{
    for (int first = 0; first < n;) {
        int m = 0, rows = 0;
        while (first + m < n && rows + e->drafting[first + m]->dfwd.n <= e->draft_batch.max_rows) {
            sd_draft_forward_t *f = &e->drafting[first + m]->dfwd;
            e->draft_parts[m++] = (sd_batch_part_t){f->seq, f->tokens, f->n, 1, NULL};
            rows += f->n;
        }
        if (m == 0) { /* one forward larger than the whole draft batch: refuse, never spin */
            sd_request_t *r = e->drafting[first++];
            r->plan_status = sd_set_error(SD_ERR_BATCH_TOO_LARGE,
                                          "a draft forward of %d rows exceeds the draft batch "
                                          "of %d rows", r->dfwd.n, e->draft_batch.max_rows);
            r->dfwd.n = 0;
            continue;
        }
        sd_status_t st = sd_forward_batch_layers(&e->draft_batch, e->draft_parts, m, e->draft_layers);
        pthread_mutex_lock(&e->mu);
        e->m.draft_forwards++;
        e->m.draft_rows += (uint64_t)rows;
        pthread_mutex_unlock(&e->mu);
        for (int j = first; j < first + m; j++) {
            sd_request_t *r = e->drafting[j];
            r->plan_status = st == SD_OK ? sd_gen_draft_resume(r->gen, &r->dfwd) : st;
            if (r->plan_status != SD_OK) r->dfwd.n = 0;
        }
        first += m;
    }
}

/* Draft in rounds for every decoding request whose drafter runs a model: all their draft
 * forwards of one round (the pending context, then one token per draft) in one batched
 * forward, round after round until every draft is complete. */
static void draft_in_rounds(sd_engine_t *e, double row_cost)
{
    if (e->draft_batch.model == NULL) return;
    int n = 0;
    for (int i = 0; i < e->n_active; i++) {
        sd_request_t *r = e->active[i];
        if (r->gen == NULL || !sd_gen_drafts_in_rounds(r->gen)) continue;
        r->plan_status = sd_gen_draft_begin(r->gen, sd_gen_max_step_rows(r->gen), row_cost, &r->dfwd);
        if (r->plan_status == SD_OK && r->dfwd.n > 0) e->drafting[n++] = r;
    }
    while (n > 0) {
        run_draft_round(e, n);
        int left = 0;
        for (int j = 0; j < n; j++)
            if (e->drafting[j]->dfwd.n > 0) e->drafting[left++] = e->drafting[j];
        n = left;
    }
}

/* Plan the step: decoding requests first (rows with logits), then prompt chunks; returns
 * the number of parts. A request whose plan fails ends with that status. */
static int plan_step(sd_engine_t *e)
{
    int rows_left = e->batch.max_rows, n_parts = 0, n = e->n_active, n_decoding = 0;
    int start = n > 0 ? e->rotate % n : 0;
    for (int i = 0; i < n; i++) n_decoding += e->active[i]->gen && !sd_gen_prefilling(e->active[i]->gen);
    double row_cost = e->p.load_aware_drafts && n_decoding > 1 ? sd_spec_batch_row_cost(n_decoding)
                                                               : 0.0;
    draft_in_rounds(e, row_cost);
    for (int pass = 0; pass < 2; pass++)
        for (int j = 0; j < n; j++) {
            sd_request_t *r = e->active[(start + j) % n];
            if (r->gen == NULL || r->plan_status != SD_OK || sd_gen_prefilling(r->gen) != pass)
                continue;
            int need = pass == 0 ? sd_gen_max_step_rows(r->gen) : 1;
            if (rows_left < need) continue; /* waits for the next step */
            sd_gen_plan_t plan;
            sd_status_t st = sd_gen_plan(r->gen, pass == 0 ? need : rows_left, row_cost, &plan);
            if (st != SD_OK) {
                r->plan_status = st; /* ended before the forward: see run_step */
                continue;
            }
            e->parts[n_parts] = (sd_batch_part_t){plan.seq, plan.tokens, plan.n, plan.want_logits,
                                                  plan.parent}; /* a tree, or a chain */
            e->planned[n_parts++] = r;
            rows_left -= plan.n;
        }
    e->rotate++;
    return n_parts;
}

/* Index of r among the active requests. */
static int active_index(const sd_engine_t *e, const sd_request_t *r)
{
    for (int i = 0; i < e->n_active; i++)
        if (e->active[i] == r) return i;
    return -1;
}

/* Advance every planned request after the forward (status st of the forward). */
static void advance_planned(sd_engine_t *e, int n_parts, sd_status_t st)
{
    for (int p = 0; p < n_parts; p++) {
        sd_request_t *r = e->planned[p];
        int done = 0;
        sd_status_t rs = st == SD_OK ? sd_gen_advance(r->gen, &done) : st;
        const sd_gen_stats_t *s = sd_gen_stats(r->gen);
        if (s->steps > r->steps_seen) {
            pthread_mutex_lock(&e->mu);
            hist_observe(&e->m.accepted_len, (double)(s->accepted - r->accepted_seen));
            pthread_mutex_unlock(&e->mu);
            r->steps_seen = s->steps;
            r->accepted_seen = s->accepted;
        }
        if (rs != SD_OK || done) finish_active(e, active_index(e, r), rs, 0);
    }
}

/* One step over the active requests. */
static void run_step(sd_engine_t *e)
{
    double t0 = sd_now();
    for (int i = 0; i < e->n_active; i++) e->active[i]->plan_status = SD_OK;
    int n_parts = plan_step(e);
    for (int i = e->n_active - 1; i >= 0; i--) /* plans that failed */
        if (e->active[i]->plan_status != SD_OK) finish_active(e, i, e->active[i]->plan_status, 0);
    if (n_parts == 0) return;
    sd_status_t st = sd_forward_batch(&e->batch, e->parts, n_parts);
    int rows = 0;
    for (int p = 0; p < n_parts; p++) rows += e->parts[p].n;
    advance_planned(e, n_parts, st);
    pthread_mutex_lock(&e->mu);
    e->m.steps++;
    e->m.batch_rows += (uint64_t)rows;
    pool_metrics(e);
    hist_observe(&e->m.step_seconds, sd_now() - t0);
    pthread_mutex_unlock(&e->mu);
}

/* Rank 0: wait for work (engine->mu held); returns 0 when the scheduler should stop.
 * Under TP an idle wait ends after SCHED_HEARTBEAT_SECONDS so the other ranks, blocked in
 * the decision broadcast, hear from rank 0 well within their collective deadline. */
#define SCHED_HEARTBEAT_SECONDS 1.0
static int wait_for_work(sd_engine_t *e)
{
    while (e->n_active == 0) {
        if (e->stopping && e->queue_head == NULL) return 0;
        if (e->queue_head != NULL && e->m.kv_positions_used + e->queue_head->kv_positions <=
                                             e->m.kv_positions_cap)
            return 1;
        if (e->deadline > 0.0 && e->queue_head != NULL) return 1; /* expire them */
        if (e->comm == NULL) {
            pthread_cond_wait(&e->work_cv, &e->mu);
            continue;
        }
        struct timespec beat = deadline_in(SCHED_HEARTBEAT_SECONDS);
        if (pthread_cond_timedwait(&e->work_cv, &e->mu, &beat) == ETIMEDOUT) return 1;
    }
    return 1;
}

/* Rank 0: this iteration's decision (cancellations applied here, admissions popped). */
static void leader_decide(sd_engine_t *e, sched_decision_t *d)
{
    pthread_mutex_lock(&e->mu);
    d->stop = !wait_for_work(e);
    int expire = e->deadline > 0.0 && sd_now() >= e->deadline;
    sweep_queue(e, expire);
    pthread_mutex_unlock(&e->mu);
    pick_cancellations(e, expire, d);
    apply_cancellations(e, d);
    pthread_mutex_lock(&e->mu);
    if (!d->stop) pop_admissions(e, d);
    else d->n_admit = 0;
    if (e->queue_head == NULL && e->n_active == 0 && d->n_admit == 0)
        pthread_cond_broadcast(&e->idle_cv);
    pthread_mutex_unlock(&e->mu);
}

/* A collective failed: every active and queued request ends with st, and so will every
 * later submit (the group cannot step any more). */
static void fail_everything(sd_engine_t *e, sd_status_t st)
{
    char msg[512];
    snprintf(msg, sizeof msg, "%s", sd_last_error());
    pthread_mutex_lock(&e->mu);
    e->failed = st;
    e->accepting = 0;
    while (e->queue_head != NULL) {
        sd_request_t *r = e->queue_head;
        e->queue_head = r->next;
        finish_queued(e, r, sd_set_error(st, "%s", msg));
    }
    e->queue_tail = NULL;
    pthread_mutex_unlock(&e->mu);
    for (int i = e->n_active - 1; i >= 0; i--) finish_active(e, i, sd_set_error(st, "%s", msg), 0);
    pthread_mutex_lock(&e->mu);
    pthread_cond_broadcast(&e->idle_cv);
    pthread_mutex_unlock(&e->mu);
}

/* Ranks > 0: rank 0's decision fits this rank's batch (cancelled indices descending and
 * active here: the batches are the same, so anything else is divergence); the admitted
 * requests get the KV positions rank 0 counted for them. */
static sd_status_t follower_accept(sd_engine_t *e, sched_decision_t *d)
{
    for (int j = 0; j < d->n_cancel; j++)
        if (d->cancel[j] < 0 || d->cancel[j] >= e->n_active || (j > 0 && d->cancel[j] >= d->cancel[j - 1])) {
            for (int i = 0; i < d->n_admit; i++) sched_request_destroy(d->admit[i]);
            return sd_set_error(SD_ERR_RANK_DIVERGENCE,
                                "rank %d: rank 0 cancels active request %d of %d here", e->rank,
                                d->cancel[j], e->n_active);
        }
    for (int i = 0; i < d->n_admit; i++) {
        sd_request_t *r = d->admit[i];
        r->kv_positions = sd_gen_kv_positions_for(e->model, r->n_prompt, &r->config);
        r->t_submit = r->t_admit = sd_now();
    }
    pthread_mutex_lock(&e->mu);
    e->n_admitting += d->n_admit;
    pthread_mutex_unlock(&e->mu);
    return SD_OK;
}

/* One iteration on every rank: rank 0 decides (and broadcasts under TP), the others
 * receive; then all apply the same admissions and run the same step. 0: stop. */
static int iterate(sd_engine_t *e)
{
    sched_decision_t *d = &e->d;
    sd_status_t st = SD_OK;
    if (e->rank == 0) {
        leader_decide(e, d);
        if (e->comm != NULL) st = sched_tp_send(e, d);
    } else {
        st = sched_tp_recv(e, d);
        if (st == SD_OK) st = follower_accept(e, d);
        if (st == SD_OK) apply_cancellations(e, d);
    }
    if (st != SD_OK) {
        if (e->rank == 0) { /* popped for admission, not yet admitted */
            pthread_mutex_lock(&e->mu);
            e->n_admitting -= d->n_admit;
            for (int i = 0; i < d->n_admit; i++) finish_queued(e, d->admit[i], st);
            pthread_mutex_unlock(&e->mu);
        }
        fail_everything(e, st);
        return 0;
    }
    if (d->stop) return 0;
    admit_requests(e, d->admit, d->n_admit);
    run_step(e);
    return 1;
}

static void *scheduler_main(void *arg)
{
    sd_engine_t *e = arg;
    while (iterate(e)) {
    }
    return NULL;
}

/* ---- the API ---------------------------------------------------------------------------- */

void sd_engine_params_default(sd_engine_params_t *p)
{
    if (p == NULL) return;
    memset(p, 0, sizeof *p);
    sd_spec_config_default(&p->spec);
    p->max_active = ENGINE_DEFAULT_MAX_ACTIVE;
    p->max_queued = ENGINE_DEFAULT_MAX_QUEUED;
    p->max_batch_rows = ENGINE_DEFAULT_BATCH_ROWS;
    p->load_aware_drafts = 1;
    p->prefix_cache = 1;
}

static sd_status_t check_params(const sd_engine_params_t *p)
{
    if (p->model == NULL) return sd_set_error(SD_ERR_INVALID_ARG, "engine: model is NULL");
    if (p->max_active < 1 || p->max_active > 4096)
        return sd_set_error(SD_ERR_INVALID_ARG, "engine: max_active = %d outside [1, 4096]",
                            p->max_active);
    if (p->max_queued < 0)
        return sd_set_error(SD_ERR_INVALID_ARG, "engine: max_queued = %d must be >= 0",
                            p->max_queued);
    SD_CHECK(sd_spec_check(&p->spec, 0));
    int nodes = sd_spec_tree_nodes(&p->spec);
    int k_rows = p->spec.drafter == SD_DRAFTER_NONE ? 1 : (nodes > 0 ? nodes : p->spec.k) + 1;
    if (p->max_batch_rows < k_rows || p->max_batch_rows > (1 << 16))
        return sd_set_error(SD_ERR_INVALID_ARG,
                            "engine: max_batch_rows = %d outside [%d (one step of %s %d), 65536]",
                            p->max_batch_rows, k_rows, nodes > 0 ? "a tree of" : "k =",
                            k_rows - 1);
    /* the drafter every request will build, built once now: a bad layer count or a draft
     * model with another vocabulary is refused here, not at every submit (collective under
     * TP, like engine creation itself) */
    sd_drafter_t *probe = NULL;
    SD_CHECK(sd_spec_make_drafter(p->model, &p->spec, &probe));
    sd_drafter_free(probe);
    return SD_OK;
}

/* The draft batch for a drafter that runs a model: the draft model, or the target's
 * first L layers (layer-skip); rows for at least one drafter's longest forward (a context
 * chunk of SD_PREFILL_CHUNK tokens). Nothing for the n-gram drafter or under a draft group. */
static sd_status_t draft_batch_init(sd_engine_t *e)
{
    const sd_model_t *m = sd_spec_batch_model(e->model, &e->p.spec, &e->draft_layers);
    if (m == NULL) return SD_OK;
    int na = e->p.max_active;
    int rows = e->p.max_batch_rows > SD_PREFILL_CHUNK ? e->p.max_batch_rows : SD_PREFILL_CHUNK;
    e->drafting = calloc((size_t)na, sizeof *e->drafting);
    e->draft_parts = calloc((size_t)na, sizeof *e->draft_parts);
    if (e->drafting == NULL || e->draft_parts == NULL)
        return sd_set_error(SD_ERR_OUT_OF_MEMORY, "engine: out of memory for %d draft slots", na);
    return sd_batch_init(&e->draft_batch, m, rows, na < rows ? na : rows);
}

/* With the prefix cache, the target's KV pool: blocks for max_kv_positions (each request
 * rounds up to whole blocks, hence one more block per slot), so an admitted request always
 * finds its blocks; what running requests do not hold keeps cached prefixes. Without it,
 * each request allocates its own cache at admission, as big as it may grow. */
static sd_status_t kv_pool_init(sd_engine_t *e)
{
    if (!e->p.prefix_cache) return SD_OK;
    size_t blocks = (e->m.kv_positions_cap + SD_KV_BLOCK - 1) / SD_KV_BLOCK + (size_t)e->p.max_active;
    if (blocks > (size_t)(INT32_MAX / SD_KV_BLOCK))
        return sd_set_error(SD_ERR_INVALID_ARG, "engine: max_kv_positions = %zu is too large for "
                            "a KV pool", e->m.kv_positions_cap);
    SD_CHECK(sd_kv_pool_init(&e->kv_pool, e->model, (int)blocks, 1));
    e->has_pool = 1;
    pool_metrics(e);
    /* a draft model's context runs k positions past the target's: two blocks more a slot;
     * a draft tree's scratch rows (draft/seq_drafter.c: at most 8 a level and the proposal's
     * nodes) are one proposal's at a time, given back after it */
    const sd_spec_config_t *sp = &e->p.spec;
    if (sp->drafter != SD_DRAFTER_MODEL || sp->draft_model == NULL || e->comm != NULL)
        return SD_OK;
    int tree_blocks = sd_spec_tree_nodes(sp) > 0
                          ? (8 * SD_SPEC_MAX_K + SD_SPEC_TREE_MAX_NODES) / SD_KV_BLOCK + 1 : 0;
    SD_CHECK(sd_kv_pool_init(&e->draft_kv_pool, sp->draft_model,
                             (int)blocks + 2 * e->p.max_active + tree_blocks, 1));
    e->has_draft_pool = 1;
    return SD_OK;
}

static void engine_destroy(sd_engine_t *e)
{
    sd_batch_free(&e->batch);
    sd_batch_free(&e->draft_batch);
    if (e->has_pool) sd_kv_pool_free(&e->kv_pool); /* every generation has ended */
    if (e->has_draft_pool) sd_kv_pool_free(&e->draft_kv_pool);
    free(e->drafting);
    free(e->draft_parts);
    free(e->active);
    free(e->parts);
    free(e->planned);
    free(e->d.cancel);
    free(e->d.admit);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->work_cv);
    pthread_cond_destroy(&e->idle_cv);
    free(e);
}

sd_status_t sd_engine_create(const sd_engine_params_t *params, sd_engine_t **out)
{
    if (out == NULL || params == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG, "sd_engine_create: %s is NULL",
                            out == NULL ? "out" : "params");
    *out = NULL;
    SD_CHECK(check_params(params));
    sd_engine_t *e = calloc(1, sizeof *e);
    SD_ALLOC_CHECK(e, sizeof *e, "engine");
    e->p = *params;
    e->model = params->model;
    e->comm = sd_comm_size(params->model->comm) > 1 ? params->model->comm : NULL;
    e->rank = sd_comm_rank(e->comm);
    e->accepting = e->rank == 0;
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->work_cv, NULL);
    pthread_cond_init(&e->idle_cv, NULL);
    metrics_init(&e->m);
    size_t n_ctx = (size_t)e->model->n_ctx;
    e->m.kv_positions_cap = params->max_kv_positions ? params->max_kv_positions
                                                     : (size_t)params->max_active * n_ctx;
    int na = params->max_active;
    e->active = calloc((size_t)na, sizeof *e->active);
    e->parts = calloc((size_t)na, sizeof *e->parts);
    e->planned = calloc((size_t)na, sizeof *e->planned);
    e->d.cancel = calloc((size_t)na, sizeof *e->d.cancel);
    e->d.admit = calloc((size_t)na, sizeof *e->d.admit);
    sd_status_t st = e->active && e->parts && e->planned && e->d.cancel && e->d.admit
                         ? SD_OK
                         : sd_set_error(SD_ERR_OUT_OF_MEMORY, "engine: out of memory for %d slots", na);
    int max_seqs = na < params->max_batch_rows ? na : params->max_batch_rows;
    if (st == SD_OK) st = sd_batch_init(&e->batch, e->model, params->max_batch_rows, max_seqs);
    if (st == SD_OK) st = draft_batch_init(e);
    if (st == SD_OK) st = kv_pool_init(e);
    if (st == SD_OK && pthread_create(&e->thread, NULL, scheduler_main, e) != 0)
        st = sd_set_error(SD_ERR_INTERNAL, "engine: cannot start the scheduler thread");
    if (st != SD_OK) {
        engine_destroy(e);
        return st;
    }
    e->thread_started = 1;
    *out = e;
    return SD_OK;
}

/* Queue rs[n] together or refuse them all with SD_ERR_BUSY (engine->mu held). */
static sd_status_t enqueue(sd_engine_t *e, sd_request_t *const *rs, int n)
{
    if (e->failed != SD_OK)
        return sd_set_error(e->failed, "the engine's tensor-parallel group failed (%s); it "
                            "accepts no requests", sd_status_string(e->failed));
    if (!e->accepting)
        return sd_set_error(SD_ERR_BUSY, "the engine is shutting down and accepts no requests");
    int waiting = 0;
    for (sd_request_t *q = e->queue_head; q != NULL; q = q->next) waiting++;
    int active = e->n_active + e->n_admitting;
    if (waiting + active + n > e->p.max_active + e->p.max_queued)
        return sd_set_error(SD_ERR_BUSY, "%d requests active and %d queued: the queue (max_queued "
                            "= %d) cannot take %d more", active, waiting, e->p.max_queued, n);
    double now = sd_now();
    for (int i = 0; i < n; i++) {
        sd_request_t *r = rs[i];
        r->t_submit = now;
        if (e->queue_tail) e->queue_tail->next = r;
        else e->queue_head = r;
        e->queue_tail = r;
    }
    e->m.submitted += (uint64_t)n;
    pthread_cond_signal(&e->work_cv);
    return SD_OK;
}

/* Validate a submission of n generations (the caller named in messages) and make request i
 * of rs[n] with the seed sd_choice_seed(config->seed, i) and user users[i]; a refusal is
 * counted as invalid. */
static sd_status_t make_requests(sd_engine_t *e, const char *caller, const int32_t *prompt,
                                 size_t n_prompt, const sd_gen_config_t *config, int n,
                                 sd_token_callback callback, void *const *users,
                                 sd_request_t **rs)
{
    sd_status_t st = sd_gen_check(caller, e->model, prompt, n_prompt, config, &e->p.spec, 0);
    size_t kv = st == SD_OK ? sd_gen_kv_positions_for(e->model, n_prompt, config) : 0;
    if (st == SD_OK && kv > e->m.kv_positions_cap)
        st = sd_set_error(SD_ERR_CONTEXT_FULL,
                          "request needs %zu KV positions (%zu prompt + %d max_tokens) but the "
                          "engine holds at most %zu", kv, n_prompt, config->max_tokens,
                          e->m.kv_positions_cap);
    int made = 0;
    for (; st == SD_OK && made < n; made++) {
        sd_request_t *r = NULL;
        st = sched_request_new(prompt, n_prompt, config, &r);
        if (st != SD_OK) break;
        r->config.seed = sd_choice_seed(config->seed, made);
        r->engine = e;
        r->callback = callback;
        r->logprobs_callback = config->logprobs_callback;
        r->config.logprobs_callback = config->logprobs_callback ? on_logprobs : NULL;
        r->user = users ? users[made] : NULL;
        r->kv_positions = kv;
        rs[made] = r;
    }
    if (st == SD_OK) return SD_OK;
    while (made > 0) sched_request_destroy(rs[--made]);
    pthread_mutex_lock(&e->mu);
    e->m.rejected_invalid++;
    pthread_mutex_unlock(&e->mu);
    return st;
}

/* The checks every submit makes before anything else. */
static sd_status_t check_submit(const sd_engine_t *e, const char *caller, const void *out)
{
    if (e == NULL || out == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG, "%s: %s is NULL", caller,
                            e == NULL ? "engine" : "out");
    if (e->rank != 0)
        return sd_set_error(SD_ERR_INVALID_ARG, "%s on rank %d: requests are submitted on rank "
                            "0 of a tensor-parallel engine", caller, e->rank);
    return SD_OK;
}

/* Queue rs[n] (made by make_requests) or destroy them with the refusal. */
static sd_status_t submit_requests(sd_engine_t *e, sd_request_t **rs, int n)
{
    pthread_mutex_lock(&e->mu);
    sd_status_t st = enqueue(e, rs, n);
    if (st != SD_OK) e->m.rejected_busy++;
    pthread_mutex_unlock(&e->mu);
    if (st != SD_OK)
        for (int i = 0; i < n; i++) sched_request_destroy(rs[i]);
    return st;
}

sd_status_t sd_engine_submit(sd_engine_t *e, const int32_t *prompt, size_t n_prompt,
                             const sd_gen_config_t *config, sd_token_callback callback,
                             void *user, sd_request_t **out)
{
    if (out != NULL) *out = NULL;
    SD_CHECK(check_submit(e, "sd_engine_submit", out));
    sd_request_t *r = NULL;
    void *users[1] = {user};
    SD_CHECK(make_requests(e, "sd_engine_submit", prompt, n_prompt, config, 1, callback, users, &r));
    SD_CHECK(submit_requests(e, &r, 1));
    *out = r;
    return SD_OK;
}

uint64_t sd_choice_seed(uint64_t seed, int i)
{
    if (i == 0) return seed;
    uint64_t z = seed + (uint64_t)i * 0x9E3779B97F4A7C15ull; /* splitmix64 */
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return (z ^ (z >> 31)) >> 11;
}

sd_status_t sd_engine_submit_choices(sd_engine_t *e, const int32_t *prompt, size_t n_prompt,
                                     const sd_gen_config_t *config, int n,
                                     sd_token_callback callback, void *const *users,
                                     sd_request_t **out)
{
    const char *caller = "sd_engine_submit_choices";
    for (int i = 0; out != NULL && i < n && i < SD_MAX_CHOICES; i++) out[i] = NULL;
    SD_CHECK(check_submit(e, caller, out));
    if (n < 1 || n > SD_MAX_CHOICES)
        return sd_set_error(SD_ERR_INVALID_ARG, "%s: n = %d outside [1, %d]", caller, n,
                            SD_MAX_CHOICES);
    if (n > e->p.max_active + e->p.max_queued)
        return sd_set_error(SD_ERR_INVALID_ARG, "%s: n = %d exceeds what the engine queues at "
                            "once (max_active %d + max_queued %d)", caller, n, e->p.max_active,
                            e->p.max_queued);
    sd_request_t *rs[SD_MAX_CHOICES];
    SD_CHECK(make_requests(e, caller, prompt, n_prompt, config, n, callback, users, rs));
    SD_CHECK(submit_requests(e, rs, n));
    memcpy(out, rs, (size_t)n * sizeof *rs);
    return SD_OK;
}

void sd_request_cancel(sd_request_t *r)
{
    if (r == NULL) return;
    atomic_store(&r->cancel, 1);
    pthread_mutex_lock(&r->mu);
    int done = r->done;
    pthread_mutex_unlock(&r->mu);
    if (done) return;
    sd_engine_t *e = r->engine;
    pthread_mutex_lock(&e->mu);
    pthread_cond_signal(&e->work_cv);
    pthread_mutex_unlock(&e->mu);
}

int sd_request_done(const sd_request_t *r)
{
    if (r == NULL) return 1;
    sd_request_t *w = (sd_request_t *)r;
    pthread_mutex_lock(&w->mu);
    int done = w->done;
    pthread_mutex_unlock(&w->mu);
    return done;
}

sd_status_t sd_request_wait(sd_request_t *r, double timeout_seconds, sd_gen_result_t *out)
{
    if (out != NULL) memset(out, 0, sizeof *out);
    if (r == NULL || out == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG, "sd_request_wait: %s is NULL",
                            r == NULL ? "request" : "out");
    struct timespec until = deadline_in(timeout_seconds > 0 ? timeout_seconds : 0);
    pthread_mutex_lock(&r->mu);
    int timed_out = 0;
    while (!r->done && !timed_out) {
        if (timeout_seconds < 0) pthread_cond_wait(&r->done_cv, &r->mu);
        else timed_out = pthread_cond_timedwait(&r->done_cv, &r->mu, &until) == ETIMEDOUT;
    }
    sd_status_t st = r->status;
    int done = r->done;
    if (done) {
        *out = r->result;
        memset(&r->result, 0, sizeof r->result);
    }
    pthread_mutex_unlock(&r->mu);
    if (!done)
        return sd_set_error(SD_ERR_BUSY, "request still running after %.3f s", timeout_seconds);
    return st == SD_OK ? SD_OK : sd_set_error(st, "%s", r->error); /* the scheduler's message */
}

void sd_request_free(sd_request_t *r)
{
    if (r == NULL) return;
    sd_request_cancel(r);
    request_release(r, 0);
}

void sd_engine_shutdown(sd_engine_t *e, double grace_seconds)
{
    if (e == NULL) return;
    pthread_mutex_lock(&e->mu);
    e->accepting = 0;
    double deadline = sd_now() + (grace_seconds > 0 ? grace_seconds : 0);
    if (e->deadline == 0.0 || deadline < e->deadline) e->deadline = deadline;
    pthread_cond_signal(&e->work_cv);
    while (e->n_active > 0 || e->n_admitting > 0 || e->queue_head != NULL) {
        struct timespec tick = deadline_in(0.05); /* the scheduler may be mid-step */
        pthread_cond_signal(&e->work_cv);
        pthread_cond_timedwait(&e->idle_cv, &e->mu, &tick);
    }
    pthread_mutex_unlock(&e->mu);
}

sd_status_t sd_engine_wait_stopped(sd_engine_t *e)
{
    if (e == NULL || e->rank == 0)
        return sd_set_error(SD_ERR_INVALID_ARG, "sd_engine_wait_stopped: %s",
                            e == NULL ? "engine is NULL" : "only ranks > 0 follow rank 0's engine");
    if (e->thread_started) pthread_join(e->thread, NULL);
    e->thread_started = 0;
    return e->failed == SD_OK ? SD_OK
                              : sd_set_error(e->failed, "the tensor-parallel group failed: %s",
                                             sd_status_string(e->failed));
}

void sd_engine_free(sd_engine_t *e)
{
    if (e == NULL) return;
    if (e->rank != 0) {
        (void)sd_engine_wait_stopped(e);
        engine_destroy(e);
        return;
    }
    sd_engine_shutdown(e, 0);
    pthread_mutex_lock(&e->mu);
    e->stopping = 1;
    pthread_cond_signal(&e->work_cv);
    pthread_mutex_unlock(&e->mu);
    if (e->thread_started) pthread_join(e->thread, NULL);
    engine_destroy(e);
}

sd_status_t sd_engine_get_metrics(sd_engine_t *e, sd_engine_metrics_t *out)
{
    if (e == NULL || out == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG, "sd_engine_get_metrics: %s is NULL",
                            e == NULL ? "engine" : "out");
    pthread_mutex_lock(&e->mu);
    *out = e->m;
    out->active = e->n_active + e->n_admitting;
    out->queued = 0;
    for (sd_request_t *q = e->queue_head; q != NULL; q = q->next) out->queued++;
    pthread_mutex_unlock(&e->mu);
    return SD_OK;
}
