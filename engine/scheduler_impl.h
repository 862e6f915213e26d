/* Internals of the serving engine shared by engine/scheduler.c (the API, requests and the
 * step loop) and engine/scheduler_tp.c (the per-step decision rank 0 broadcasts under
 * tensor parallelism). */
#ifndef SPECDEC_ENGINE_SCHEDULER_IMPL_H
#define SPECDEC_ENGINE_SCHEDULER_IMPL_H

#include <pthread.h>
#include <stdatomic.h>

#include "comm/comm.h"
#include "engine/gen.h"
#include "model/forward.h"
#include "model/model.h"

#define ENGINE_DEFAULT_MAX_ACTIVE 16
#define ENGINE_DEFAULT_MAX_QUEUED 64
#define ENGINE_DEFAULT_BATCH_ROWS 256

/* What rank 0's scheduler decided before a step; under TP it is broadcast so every rank
 * applies the same changes to the same batch: cancel[] are indices of active requests
 * (descending, applied in order), admit[] the requests that join (in order). */
typedef struct sched_decision {
    int stop;                 /* the engine is being freed: the schedulers exit */
    int n_cancel, n_admit;
    int32_t *cancel;          /* [max_active] */
    sd_request_t **admit;     /* [max_active] */
} sched_decision_t;

struct sd_request {
    sd_engine_t *engine;
    /* the request, owned copies */
    int32_t *prompt;
    size_t n_prompt;
    sd_gen_config_t config;
    char **stops;             /* [config.n_stop_strings] */
    int32_t *stop_tokens;     /* [config.n_stop_tokens] */
    sd_token_callback callback;
    sd_logprobs_callback logprobs_callback; /* the caller's (config.logprobs_callback wraps it) */
    void *user;
    size_t kv_positions;      /* the target cache it holds once admitted */
    size_t kv_bytes;          /* its bytes, once admitted */
    /* scheduler side (engine->mu for the queue link) */
    sd_request_t *next;       /* queue link */
    sd_gen_t *gen;
    sd_gen_options_t opts;    /* its generation's options: its request number */
    atomic_int cancel;
    double t_submit, t_admit;
    int got_first_token;
    uint64_t accepted_seen;   /* stats.accepted at the last step (accepted-length histogram) */
    uint64_t steps_seen;
    sd_status_t plan_status;  /* this step's sd_gen_plan failure, if any */
    sd_draft_forward_t dfwd;  /* its drafter's next forward while drafting in rounds */
    /* completion (mu) */
    pthread_mutex_t mu;
    pthread_cond_t done_cv;
    int done, caller_released, scheduler_released;
    sd_status_t status;
    char error[512];          /* sd_last_error() of the scheduler when status != SD_OK */
    sd_gen_result_t result;
};

struct sd_engine {
    sd_engine_params_t p;
    sd_model_t *model;
    pthread_t thread;
    int thread_started;
    pthread_mutex_t mu;
    pthread_cond_t work_cv;   /* the scheduler waits for work here */
    pthread_cond_t idle_cv;   /* shutdown waits here for the queue and batch to empty */
    sd_request_t *queue_head, *queue_tail;
    sd_request_t **active;    /* [max_active], scheduler-owned order of admission */
    int n_active;             /* guarded by mu (read by metrics) */
    int n_admitting;          /* taken off the queue, generation being built (mu): counted
                                 with the active ones by submit's limit, metrics, shutdown */
    int accepting, stopping;
    double deadline;          /* shutdown: cancel everything after this (0: none) */
    sd_batch_t batch;
    sd_batch_part_t *parts;   /* [max_active] */
    sd_request_t **planned;   /* [max_active] the request of each part */
    int rotate;               /* where step planning starts */
    uint64_t n_admitted;      /* requests admitted so far (numbers them, alike on every rank) */
    /* drafters that propose in rounds (a draft model, layer-skip): their forwards of a
     * round run as one batched forward over the drafter's model (draft_batch.model: the
     * draft model, or the target through its first draft_layers layers) */
    sd_batch_t draft_batch;   /* model NULL: the drafter runs no model */
    int draft_layers;         /* 0: all */
    sd_request_t **drafting;  /* [max_active] requests with a draft forward pending */
    sd_batch_part_t *draft_parts; /* [max_active] */
    sd_engine_metrics_t m;    /* counters and histograms (mu); queued/active/kv filled on read */
    sd_kv_pool_t kv_pool;     /* the target's KV blocks (prefix cache): the scheduler thread's */
    int has_pool;
    sd_kv_pool_t draft_kv_pool; /* the draft model's, when requests run one (no TP) */
    int has_draft_pool;
    /* tensor parallelism: rank 0 decides, every rank steps */
    sd_comm_t *comm;          /* the model's TP group (size > 1), or NULL */
    int rank;
    sd_status_t failed;       /* a collective failed: every request and submit gets this */
    sched_decision_t d;       /* this iteration's decision (buffers [max_active]) */
};

/* A request with its own copies of the prompt and of config's arrays and strings. */
sd_status_t sched_request_new(const int32_t *prompt, size_t n_prompt, const sd_gen_config_t *c,
                              sd_request_t **out);
void sched_request_destroy(sd_request_t *r);

/* Rank 0: broadcast d (its admitted requests' prompts and configs included). */
sd_status_t sched_tp_send(sd_engine_t *e, const sched_decision_t *d);
/* Ranks > 0: receive rank 0's decision into d; the admitted requests are new request objects
 * owned by this rank's scheduler (no caller, no callback). */
sd_status_t sched_tp_recv(sd_engine_t *e, sched_decision_t *d);

#endif
