/* GET /metrics: Prometheus text exposition format 0.0.4. HTTP responses are counted by the
 * server; everything else is a snapshot of sd_engine_get_metrics (zeros while loading). */
#include <stdio.h>
#include <stdlib.h>

#include "listener.h"
#include "serve.h"

static void header(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void counter(FILE *f, const char *name, const char *help, uint64_t v)
{
    header(f, name, "counter", help);
    fprintf(f, "%s %llu\n", name, (unsigned long long)v);
}

static void gauge(FILE *f, const char *name, const char *help, double v)
{
    header(f, name, "gauge", help);
    fprintf(f, "%s %.17g\n", name, v);
}

/* Cumulative buckets from the engine's per-bucket counts, then _sum and _count. */
static void histogram(FILE *f, const char *name, const char *help, const sd_histogram_t *h)
{
    header(f, name, "histogram", help);
    uint64_t below = 0;
    for (int i = 0; i < h->n_bounds; i++) {
        below += h->counts[i];
        fprintf(f, "%s_bucket{le=\"%g\"} %llu\n", name, h->bounds[i], (unsigned long long)below);
    }
    fprintf(f, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)h->count);
    fprintf(f, "%s_sum %.17g\n%s_count %llu\n", name, h->sum, name, (unsigned long long)h->count);
}

static void requests(FILE *f, serve_t *s, const sd_engine_metrics_t *m)
{
    const char *name = "specdec_requests_total";
    header(f, name, "counter", "HTTP responses sent, by status code.");
    for (int status = 100; status < SERVE_MAX_HTTP_STATUS; status++) {
        unsigned long long n = atomic_load(&s->responses[status]);
        if (n) fprintf(f, "%s{status=\"%d\"} %llu\n", name, status, n);
    }
    name = "specdec_requests_finished_total";
    header(f, name, "counter", "Generation requests finished, by stop reason.");
    for (int r = SD_STOP_MAX_TOKENS; r < SD_STOP_REASON_COUNT; r++)
        fprintf(f, "%s{reason=\"%s\"} %llu\n", name, oai_stop_reason_name((sd_stop_reason_t)r),
                (unsigned long long)m->finished[r]);
    name = "specdec_requests_rejected_total";
    header(f, name, "counter", "Generation requests the engine refused: busy (429) or invalid.");
    fprintf(f, "%s{reason=\"busy\"} %llu\n%s{reason=\"invalid\"} %llu\n", name,
            (unsigned long long)m->rejected_busy, name, (unsigned long long)m->rejected_invalid);
    counter(f, "specdec_requests_submitted_total", "Generation requests the engine accepted.",
            m->submitted);
}

static void tokens(FILE *f, const sd_engine_metrics_t *m)
{
    counter(f, "specdec_prompt_tokens_total", "Prompt tokens of admitted requests.",
            m->prompt_tokens);
    counter(f, "specdec_generation_tokens_total", "Tokens generated.", m->generated_tokens);
    counter(f, "specdec_draft_tokens_total", "Draft tokens proposed.", m->drafted);
    counter(f, "specdec_draft_accepted_tokens_total", "Draft tokens accepted by the target.",
            m->accepted);
    counter(f, "specdec_steps_total", "Batched target forwards (scheduler steps).", m->steps);
    counter(f, "specdec_batch_rows_total", "Rows over all batched forwards.", m->batch_rows);
    counter(f, "specdec_prompt_tokens_cached_total",
            "Prompt tokens served from the prefix cache (not prefilled).", m->cached_prompt_tokens);
    counter(f, "specdec_kv_cache_block_evictions_total",
            "Cached KV blocks evicted to make room.", m->kv_block_evictions);
}

static void gauges(FILE *f, const sd_engine_metrics_t *m)
{
    gauge(f, "specdec_requests_queued", "Requests waiting for a slot.", m->queued);
    gauge(f, "specdec_requests_active", "Requests stepping in the batch.", m->active);
    gauge(f, "specdec_kv_cache_positions_used", "KV-cache positions the active requests hold.",
          (double)m->kv_positions_used);
    gauge(f, "specdec_kv_cache_positions_capacity",
          "KV-cache positions all active requests may hold together.",
          (double)m->kv_positions_cap);
    gauge(f, "specdec_kv_cache_bytes_used", "Bytes of the active requests' KV caches.",
          (double)m->kv_bytes_used);
    gauge(f, "specdec_kv_cache_blocks_used", "KV blocks the active requests hold.",
          m->kv_blocks_used);
    gauge(f, "specdec_kv_cache_blocks_cached", "Unreferenced KV blocks kept for their prefix.",
          m->kv_blocks_cached);
    gauge(f, "specdec_kv_cache_blocks_free", "KV blocks holding nothing.", m->kv_blocks_free);
}

static void histograms(FILE *f, const sd_engine_metrics_t *m)
{
    histogram(f, "specdec_step_seconds", "Wall time of one scheduler step.", &m->step_seconds);
    histogram(f, "specdec_time_to_first_token_seconds", "Submit to first token.",
              &m->ttft_seconds);
    histogram(f, "specdec_queue_wait_seconds", "Submit to admission into the batch.",
              &m->queue_seconds);
    histogram(f, "specdec_request_acceptance_rate",
              "Draft acceptance rate per finished request that drafted.", &m->acceptance_rate);
    histogram(f, "specdec_accepted_length", "Draft tokens accepted per request step.",
              &m->accepted_len);
}

/* The listener's connections (docs/serve.md, "Connections"). */
static void connections(FILE *f, serve_t *s)
{
    listener_stats_t c;
    listener_get_stats(s, &c);
    gauge(f, "specdec_http_connections_open",
          "Client connections open: sending a request or being answered.", (double)c.open);
    const char *name = "specdec_http_connections_closed_total";
    header(f, name, "counter", "Connections the server closed before their request arrived.");
    fprintf(f, "%s{reason=\"timeout\"} %llu\n%s{reason=\"evicted\"} %llu\n"
               "%s{reason=\"refused\"} %llu\n%s{reason=\"bad_request\"} %llu\n",
            name, (unsigned long long)c.timed_out, name, (unsigned long long)c.evicted, name,
            (unsigned long long)c.refused, name, (unsigned long long)c.bad_request);
}

char *serve_metrics_text(serve_t *s, size_t *len)
{
    sd_engine_metrics_t m = {0};
    if (atomic_load(&s->state) != SERVE_LOADING && s->engine) sd_engine_get_metrics(s->engine, &m);
    char *text = NULL;
    FILE *f = open_memstream(&text, len);
    if (!f) return NULL;
    requests(f, s, &m);
    tokens(f, &m);
    gauges(f, &m);
    histograms(f, &m);
    connections(f, s);
    int failed = ferror(f);
    if (fclose(f) != 0 || failed) return free(text), NULL;
    return text;
}
