/* Benchmark of the serving engine without HTTP: C concurrent requests (one thread each)
 * submitted to one sd_engine, for each concurrency level; reports generated tokens/s over
 * the wall time of the level, mean tokens per batched forward, and the speedup over
 * concurrency 1. Shows whether continuous batching raises throughput with concurrency.
 *
 *   engine_throughput -m MODEL [-t THREADS] [-n MAX_TOKENS] [-c 1,4,16,64]
 *                     [--draft none|ngram|layerskip:L] [--k K] [--tree SHAPE] [--rows N]
 *                     [--requests R] [--no-load-aware]
 *
 * Each level runs R requests (default: 2 x the level, at least 8) over the chat, code and
 * summarize prompts of bench/prompts (rendered with the chat template), greedy, ignore_eos,
 * so every level generates the same tokens: each request's tokens are checked against the
 * prompt's target-only generation (a mismatch fails the run). Mean accepted length: tokens
 * per request step. Built with -DSPECDEC_BENCH=ON. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "specdec/specdec.h"

enum { MAX_LEVELS = 8, N_PROMPTS = 6 };

static const char *const prompts[N_PROMPTS] = {
    "What is the capital of France, and what is it famous for? Answer in a few sentences.",
    "Explain how photosynthesis works to a ten-year-old.",
    "Rename the variable `x` to `count` in this Python function:\n\ndef f(items):\n    x = 0\n"
    "    for i in items:\n        x += i\n    return x\n",
    "Add type hints to this Python function:\n\ndef area(w, h):\n    return w * h\n",
    "Summarize in two sentences: Honey bees live in colonies with one queen, thousands of "
    "workers and some drones. Workers gather nectar and pollen, build comb and care for the "
    "young; the queen lays eggs.",
    "Why do we need sleep? Give three reasons.",
};

typedef struct job {
    sd_engine_t *engine;
    const int32_t *prompt;
    size_t n_prompt;
    sd_gen_config_t config;
    const sd_gen_result_t *want; /* the prompt's target-only generation */
    size_t n_tokens;
    uint64_t steps, accepted;
    int same;                    /* the tokens are the target-only ones */
    sd_status_t status;
} job_t;

static void *run_job(void *arg)
{
    job_t *j = arg;
    sd_request_t *r = NULL;
    sd_gen_result_t res;
    j->status = sd_engine_submit(j->engine, j->prompt, j->n_prompt, &j->config, NULL, NULL, &r);
    if (j->status == SD_OK) j->status = sd_request_wait(r, -1, &res);
    if (j->status == SD_OK) {
        j->n_tokens = res.n_tokens;
        j->steps = res.stats.steps;
        j->accepted = res.stats.accepted;
        j->same = res.n_tokens == j->want->n_tokens &&
                  memcmp(res.tokens, j->want->tokens, res.n_tokens * sizeof *res.tokens) == 0;
        sd_gen_result_free(&res);
    }
    sd_request_free(r);
    return NULL;
}

static int fail(const char *what)
{
    fprintf(stderr, "engine_throughput: %s: %s\n", what, sd_last_error());
    return 1;
}

/* Render and tokenize prompt i with the chat template. */
static int tokenize_prompt(sd_model_t *m, int i, int32_t *out, size_t cap, size_t *n)
{
    sd_chat_message_t msg = {"user", prompts[i]};
    char text[4096];
    size_t len;
    if (sd_chat_apply(m, &msg, 1, 1, text, sizeof text, &len) != SD_OK) return 0;
    return sd_tokenize(m, text, len, SD_TOKENIZE_ADD_BOS | SD_TOKENIZE_PARSE_SPECIAL, out, cap,
                       n) == SD_OK;
}

static int parse_levels(const char *v, int *levels)
{
    int n = 0;
    for (const char *p = v; *p && n < MAX_LEVELS; n++) {
        levels[n] = atoi(p);
        if (levels[n] < 1) return 0;
        p = strchr(p, ',');
        if (p == NULL) return n + 1;
        p++;
    }
    return n;
}

int main(int argc, char **argv)
{
    const char *path = NULL, *draft = "ngram", *levels_arg = "1,4,16,64", *tree = NULL;
    int threads = 2, max_tokens = 64, k = 4, requests = 0, rows = 0, load_aware = 1;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--no-load-aware")) { /* the only flag without a value */
            load_aware = 0;
            memmove(&argv[i], &argv[i + 1], (size_t)(argc - i) * sizeof *argv);
            argc--;
        }
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "-m")) path = argv[i + 1];
        else if (!strcmp(argv[i], "-t")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-n")) max_tokens = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-c")) levels_arg = argv[i + 1];
        else if (!strcmp(argv[i], "--draft")) draft = argv[i + 1];
        else if (!strcmp(argv[i], "--k")) k = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--requests")) requests = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--tree")) tree = argv[i + 1];
        else if (!strcmp(argv[i], "--rows")) rows = atoi(argv[i + 1]);
    }
    int levels[MAX_LEVELS], n_levels = parse_levels(levels_arg, levels);
    if (path == NULL || n_levels == 0) {
        fprintf(stderr, "usage: engine_throughput -m MODEL [-t T] [-n N] [-c 1,4,16,64] "
                        "[--draft none|ngram|layerskip:L] [--k K] [--tree SHAPE] [--rows N] "
                        "[--requests R] [--no-load-aware]\n");
        return 2;
    }
    sd_model_params_t mp;
    sd_model_params_default(&mp);
    mp.path = path;
    mp.n_threads = threads;
    mp.n_ctx = 1024;
    sd_model_t *m = NULL;
    if (sd_model_load(&mp, &m) != SD_OK) return fail("load");
    static int32_t toks[N_PROMPTS][1024];
    size_t n_toks[N_PROMPTS];
    for (int i = 0; i < N_PROMPTS; i++)
        if (!tokenize_prompt(m, i, toks[i], 1024, &n_toks[i])) return fail("tokenize");
    sd_gen_config_t gc;
    sd_gen_config_default(&gc);
    gc.max_tokens = max_tokens;
    gc.temperature = 0.0f;
    gc.ignore_eos = 1;
    static sd_gen_result_t want[N_PROMPTS]; /* target-only, alone */
    for (int i = 0; i < N_PROMPTS; i++)
        if (sd_generate(m, toks[i], n_toks[i], &gc, NULL, NULL, &want[i]) != SD_OK)
            return fail("target-only reference");

    printf("# engine_throughput %s, %d threads, %d tokens per request, drafter %s, k %d, "
           "tree %s, load-aware drafts %s\n", path, threads, max_tokens, draft, k,
           tree ? tree : "none (chains)", load_aware ? "on" : "off");
    printf("%-11s %8s %10s %9s %12s %9s %9s %6s\n", "concurrency", "requests", "tokens/s",
           "speedup", "rows/forward", "accepted", "mean len", "exact");
    double base = 0.0;
    for (int li = 0; li < n_levels; li++) {
        int c = levels[li], n_req = requests > 0 ? requests : (2 * c < 8 ? 8 : 2 * c);
        sd_engine_params_t ep;
        sd_engine_params_default(&ep);
        ep.model = m;
        ep.max_active = c;
        ep.max_queued = n_req;
        const char *draft_path = NULL;
        if (strcmp(draft, "none") != 0 &&
            (sd_spec_parse_drafter(draft, &ep.spec, &draft_path) != SD_OK || draft_path != NULL))
            return fail("--draft (a draft model file is not supported here)");
        ep.spec.k = k;
        if (tree != NULL && sd_spec_parse_tree(tree, &ep.spec) != SD_OK) return fail("--tree");
        if (rows > 0) ep.max_batch_rows = rows;
        ep.load_aware_drafts = load_aware;
        sd_engine_t *e = NULL;
        if (sd_engine_create(&ep, &e) != SD_OK) return fail("engine");
        job_t *jobs = calloc((size_t)n_req, sizeof *jobs);
        pthread_t *th = calloc((size_t)n_req, sizeof *th);
        double t0 = sd_now();
        for (int r = 0; r < n_req; r++) {
            jobs[r] = (job_t){.engine = e, .prompt = toks[r % N_PROMPTS],
                              .n_prompt = n_toks[r % N_PROMPTS], .config = gc,
                              .want = &want[r % N_PROMPTS]};
            pthread_create(&th[r], NULL, run_job, &jobs[r]);
        }
        size_t tokens = 0;
        uint64_t steps = 0, accepted = 0;
        int same = 1;
        for (int r = 0; r < n_req; r++) {
            pthread_join(th[r], NULL);
            if (jobs[r].status != SD_OK) return fail("request");
            tokens += jobs[r].n_tokens;
            steps += jobs[r].steps;
            accepted += jobs[r].accepted;
            same &= jobs[r].same;
        }
        double secs = sd_now() - t0, tps = (double)tokens / secs;
        if (li == 0) base = tps;
        sd_engine_metrics_t mt;
        sd_engine_get_metrics(e, &mt);
        printf("%-11d %8d %10.1f %8.2fx %12.2f %8.1f%% %9.2f %6s\n", c, n_req, tps, tps / base,
               mt.steps ? (double)mt.batch_rows / (double)mt.steps : 0.0,
               mt.drafted ? 100.0 * (double)mt.accepted / (double)mt.drafted : 0.0,
               steps ? (double)(accepted + steps) / (double)steps : 0.0, same ? "yes" : "NO");
        fflush(stdout);
        if (!same) {
            fprintf(stderr, "engine_throughput: an output differs from target-only\n");
            return 1;
        }
        sd_engine_free(e);
        free(jobs);
        free(th);
    }
    for (int i = 0; i < N_PROMPTS; i++) sd_gen_result_free(&want[i]);
    sd_model_free(m);
    return 0;
}
