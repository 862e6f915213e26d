/* `specdec hangtest`: the hang-regression harness. It drives the seeded speculative loop
 * over N ranks for S steps and fails loudly — never hangs — when a collective stalls, a
 * rank dies or the ranks disagree.
 *
 *   specdec hangtest --ranks N --steps S [--draft-ranks D] [--comm intra|mpi|nccl|cuda_ipc]
 *                    [--device cpu|cuda|cuda:N] [--seed X] [-m TARGET] [--draft PATH|ngram[:n]|layerskip:L]
 *                    [-t THREADS] [--json] [--no-payload]
 *
 * The parent forks the N ranks itself (apps/cli/launch.c) and reports; under mpirun the
 * ranks exist already. Every rank:
 *   - joins the world (SPECDEC_COMM picks the backend), agrees on the run's seed (random
 *     per run unless --seed is given; printed so a failure can be replayed) — one seed per
 *     run and no reseeding;
 *   - loads the target split over all ranks: -m TARGET, or a random model written by the
 *     project's GGUF writer (24 heads, so any N dividing 24 works), and the drafter:
 *     --draft (default: a 1-layer random draft model sharing the target's first layer,
 *     so some drafts are accepted and some are not) on the first D ranks;
 *   - generates request after request (random prompts; greedy and sampled requests
 *     alternate, so acceptance and message sizes depend on the data) until S steps ran;
 *   - after every step, allreduces a payload whose size is drawn from that step's tokens
 *     (4 B .. 256 KiB, across the intra backend's one-shot/two-shot threshold) and checks
 *     the sum against the rank-order reference every rank can compute.
 * Rank 0 prints steps/s, tokens/s and the worst step latency (--no-payload leaves the
 * payload out, to time the speculative loop alone). On a hang the comm layer
 * prints the flight record; exit codes: 0 clean, 3 timeout, 4 divergence, 5 peer death
 * (apps/cli/cli.h), 1 anything else. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/clock.h"
#include "apps/cli/cli.h"
#include "apps/cli/hangtest.h"
#include "comm/comm.h"
#include "engine/speculative.h"
#include "gguf/synthetic.h"

#define HT_PAYLOAD_MAX (64 * 1024) /* floats: 256 KiB */

typedef struct ht_opts {
    int ranks, steps, draft_ranks, n_threads, json;
    int no_payload; /* --no-payload: time the speculative loop alone (benchmarks) */
    const char *comm, *model_path;
    const char *device;      /* --device cpu|cuda|cuda:N (NULL: SPECDEC_DEVICE, else cpu) */
    sd_spec_config_t draft;  /* --draft as parsed (default: a random draft model) */
    const char *draft_path;  /* a draft model file, or NULL */
    uint64_t seed;
    int seed_given;
} ht_opts_t;

typedef struct ht_run {
    ht_opts_t o;
    sd_comm_t *world, *draft_comm;
    sd_model_t *target, *draft_model;
    sd_spec_config_t spec;
    int rank, size;
    uint64_t steps_done, tokens_done, payload_bytes;
    double t_last, max_step, t_start;
    float *payload, *expect; /* [HT_PAYLOAD_MAX] */
} ht_run_t;

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

/* ---- options ---------------------------------------------------------------------------- */

static int ht_parse(int argc, char **argv, ht_opts_t *o)
{
    *o = (ht_opts_t){.ranks = 2, .steps = 2000, .draft_ranks = 1, .n_threads = 1};
    sd_spec_config_default(&o->draft);
    o->draft.drafter = SD_DRAFTER_MODEL; /* no --draft: the random draft model */
    for (int i = 2; i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "--json")) { o->json = 1; continue; }
        if (!strcmp(f, "--no-payload")) { o->no_payload = 1; continue; }
        if (i + 1 >= argc)
            return fprintf(stderr, "specdec: error: option '%s' needs a value\n", f), 0;
        const char *v = argv[++i];
        int ok = 1;
        if (!strcmp(f, "--ranks")) ok = cli_parse_int(f, v, 1, 256, &o->ranks);
        else if (!strcmp(f, "--steps")) ok = cli_parse_int(f, v, 1, 1 << 30, &o->steps);
        else if (!strcmp(f, "--draft-ranks")) ok = cli_parse_int(f, v, 1, 256, &o->draft_ranks);
        else if (!strcmp(f, "-t") || !strcmp(f, "--threads")) ok = cli_parse_int(f, v, 1, 1024, &o->n_threads);
        else if (!strcmp(f, "--seed")) ok = cli_parse_seed(v, &o->seed), o->seed_given = 1;
        else if (!strcmp(f, "--comm")) o->comm = v;
        else if (!strcmp(f, "--device")) o->device = v;
        else if (!strcmp(f, "-m") || !strcmp(f, "--model")) o->model_path = v;
        else if (!strcmp(f, "--draft")) ok = cli_parse_draft(v, &o->draft, &o->draft_path);
        else return fprintf(stderr, "specdec: error: hangtest: unknown option '%s'\n", f), 0;
        if (!ok) return 0;
    }
    if (o->draft_ranks > o->ranks)
        return fprintf(stderr, "specdec: error: --draft-ranks %d exceeds --ranks %d\n",
                       o->draft_ranks, o->ranks), 0;
    const char *backend;
    if (o->comm && (setenv("SPECDEC_COMM", o->comm, 1) != 0 ||
                    sd_comm_select(o->ranks, o->device && !strncmp(o->device, "cuda", 4),
                                   &backend) != SD_OK))
        return fprintf(stderr, "specdec: error: --comm %s: %s\n", o->comm, sd_last_error()), 0;
    return 1;
}

/* ---- models ----------------------------------------------------------------------------- */

/* The random target (24 heads: splits over any N dividing 24) or its 1-layer draft. */
static sd_synth_spec_t ht_synth_spec(int draft)
{
    sd_synth_spec_t s;
    sd_synth_spec_default(&s);
    s.n_layer = draft ? 1 : 2;
    s.n_head = 24;
    s.n_head_kv = 24;
    s.head_dim = 8;
    s.n_embd = 192;
    s.n_ff = 384;
    s.n_ctx = 512;
    s.weight_scale = 0.08f;
    s.seed = 7;
    return s;
}

/* Write this rank's copy of a random model and load it over `comm`. */
static sd_status_t ht_load_synth(ht_run_t *h, int draft, sd_comm_t *comm, sd_model_t **out)
{
    char path[256];
    const char *dir = getenv("TMPDIR");
    snprintf(path, sizeof path, "%s/specdec-hangtest-%d-%d-%s.gguf", dir && dir[0] ? dir : "/tmp",
             (int)getpid(), h->rank, draft ? "draft" : "target");
    sd_synth_spec_t s = ht_synth_spec(draft);
    SD_CHECK(sd_synth_write_file(&s, path));
    sd_model_params_t p;
    sd_model_params_default(&p);
    p.path = path;
    p.n_threads = h->o.n_threads;
    p.comm = comm;
    p.device = h->o.device;
    sd_status_t st = sd_model_load(&p, out);
    unlink(path); /* the mapping keeps the data */
    return st;
}

static sd_status_t ht_load_path(ht_run_t *h, const char *path, sd_comm_t *comm, sd_model_t **out)
{
    sd_model_params_t p;
    sd_model_params_default(&p);
    p.path = path;
    p.n_threads = h->o.n_threads;
    p.comm = comm;
    p.device = h->o.device;
    return sd_model_load(&p, out);
}

/* The --draft drafter; a draft model (a file, or the random one) is loaded here. */
static sd_status_t ht_setup_drafter(ht_run_t *h)
{
    sd_spec_config_t *s = &h->spec;
    *s = h->o.draft;
    s->k = 6;
    if (s->drafter != SD_DRAFTER_MODEL) return SD_OK; /* runs on the target alone */
    const char *d = h->o.draft_path;
    int dr = h->o.draft_ranks;
    s->draft_ranks = h->size > 1 ? dr : 0;
    if (h->size > 1 && dr > 1) SD_CHECK(sd_comm_split_first(h->world, dr, &h->draft_comm));
    if (h->size > 1 && h->rank >= dr) return SD_OK; /* drafts arrive by broadcast */
    sd_comm_t *c = dr > 1 ? h->draft_comm : NULL;
    return d ? ht_load_path(h, d, c, &h->draft_model) : ht_load_synth(h, 1, c, &h->draft_model);
}

/* ---- the per-step payload --------------------------------------------------------------- */

/* Rank r's value at element i of step `step`: small integers, so every sum is exact. */
static float ht_value(uint64_t seed, uint64_t step, int r, size_t i)
{
    return (float)((int)(mix64(seed ^ (step * 1315423911u) ^ ((uint64_t)r << 40) ^ i) % 2001) - 1000);
}

/* Allreduce a payload whose size comes from the step's tokens; check every element. */
static sd_status_t ht_payload(ht_run_t *h, const sd_spec_step_view_t *v)
{
    uint64_t x = h->o.seed ^ mix64(h->steps_done);
    for (size_t i = 0; i < v->n_tokens; i++) x = mix64(x ^ (uint64_t)(uint32_t)v->tokens[i]);
    x = mix64(x ^ (uint64_t)v->n_accepted);
    size_t n = 1 + (size_t)(x % HT_PAYLOAD_MAX);
    for (size_t i = 0; i < n; i++) {
        h->payload[i] = ht_value(h->o.seed, h->steps_done, h->rank, i);
        float sum = 0.0f;
        for (int r = 0; r < h->size; r++) sum += ht_value(h->o.seed, h->steps_done, r, i);
        h->expect[i] = sum;
    }
    SD_CHECK(sd_comm_allreduce_sum(h->world, h->payload, n, SD_COMM_F32));
    h->payload_bytes += n * sizeof(float);
    if (memcmp(h->payload, h->expect, n * sizeof(float)) != 0)
        return sd_set_error(SD_ERR_RANK_DIVERGENCE,
                            "step %llu: allreduce of %zu floats differs from the reference",
                            (unsigned long long)h->steps_done, n);
    return SD_OK;
}

static sd_status_t ht_hook(void *user, const sd_spec_step_view_t *v)
{
    ht_run_t *h = user;
    h->steps_done++;
    h->tokens_done += (uint64_t)v->n_accepted + 1;
    if (h->world != NULL && !h->o.no_payload) SD_CHECK(ht_payload(h, v));
    double t = sd_now();
    if (t - h->t_last > h->max_step) h->max_step = t - h->t_last;
    h->t_last = t;
    if (h->steps_done >= (uint64_t)h->o.steps) return SD_ERR_CANCELLED; /* enough: stop */
    return SD_OK;
}

/* ---- the loop --------------------------------------------------------------------------- */

/* Request `req`: a random prompt of 8..39 tokens; greedy and sampled requests alternate. */
static sd_status_t ht_request(ht_run_t *h, uint64_t req)
{
    int32_t prompt[40];
    uint64_t x = mix64(h->o.seed ^ (req * 0x9e3779b97f4a7c15ull));
    int n = 8 + (int)(x % 32), vocab = h->target->hp.n_vocab;
    for (int i = 0; i < n; i++) prompt[i] = (int32_t)(mix64(x + (uint64_t)i) % (uint64_t)vocab);
    sd_gen_config_t g;
    sd_gen_config_default(&g);
    g.max_tokens = 256;
    g.ignore_eos = 1;
    g.seed = mix64(x);
    g.temperature = (req & 1) ? 0.8f : 0.0f;
    sd_gen_options_t opts = {.hook = ht_hook, .hook_user = h};
    sd_gen_result_t r;
    sd_status_t st = sd_generate_ex(h->target, prompt, (size_t)n, &g, &h->spec, &opts, NULL,
                                    NULL, &r);
    sd_gen_result_free(&r);
    return st == SD_ERR_CANCELLED ? SD_OK : st;
}

static sd_status_t ht_agree_seed(ht_run_t *h)
{
    if (!h->o.seed_given) {
        FILE *f = fopen("/dev/urandom", "rb");
        if (f == NULL || fread(&h->o.seed, sizeof h->o.seed, 1, f) != 1)
            h->o.seed = mix64((uint64_t)time(NULL) ^ (uint64_t)getpid());
        if (f) fclose(f);
    }
    return h->world ? sd_comm_broadcast(h->world, &h->o.seed, sizeof h->o.seed, 0) : SD_OK;
}

static sd_status_t ht_setup(ht_run_t *h)
{
    SD_CHECK(sd_comm_init_device(&h->world, h->o.device));
    h->rank = sd_comm_rank(h->world);
    h->size = sd_comm_size(h->world);
    if (h->size != h->o.ranks)
        return sd_set_error(SD_ERR_INVALID_ARG, "hangtest --ranks %d, but the world has %d ranks",
                            h->o.ranks, h->size);
    SD_CHECK(ht_agree_seed(h));
    sd_comm_t *tp = h->size > 1 ? h->world : NULL;
    if (h->o.model_path) SD_CHECK(ht_load_path(h, h->o.model_path, tp, &h->target));
    else SD_CHECK(ht_load_synth(h, 0, tp, &h->target));
    SD_CHECK(ht_setup_drafter(h));
    h->spec.draft_model = h->draft_model;
    h->payload = malloc(HT_PAYLOAD_MAX * sizeof(float));
    h->expect = malloc(HT_PAYLOAD_MAX * sizeof(float));
    SD_ALLOC_CHECK(h->payload && h->expect ? h->payload : NULL, 2 * HT_PAYLOAD_MAX * sizeof(float),
                   "hangtest payload");
    return SD_OK;
}

static void ht_report(const ht_run_t *h, double seconds)
{
    if (h->rank != 0) return;
    double sps = seconds > 0 ? (double)h->steps_done / seconds : 0.0;
    const char *comm = sd_comm_backend(h->world);
    if (h->o.json) {
        printf("{\"ranks\": %d, \"draft_ranks\": %d, \"comm\": \"%s\", \"seed\": %llu, "
               "\"steps\": %llu, \"tokens\": %llu, \"seconds\": %.3f, \"steps_per_s\": %.1f, "
               "\"tokens_per_s\": %.1f, \"max_step_ms\": %.3f, \"payload_bytes\": %llu, "
               "\"result\": \"ok\"}\n",
               h->size, h->o.draft_ranks, comm, (unsigned long long)h->o.seed,
               (unsigned long long)h->steps_done, (unsigned long long)h->tokens_done, seconds,
               sps, seconds > 0 ? (double)h->tokens_done / seconds : 0.0, 1e3 * h->max_step,
               (unsigned long long)h->payload_bytes);
        return;
    }
    printf("hangtest: %d ranks (draft ranks %d), comm %s, seed %llu: %llu steps in %.2f s "
           "(%.1f steps/s, %.1f tokens/s), max step latency %.2f ms, %llu payload bytes "
           "allreduced: ok\n",
           h->size, h->o.draft_ranks, comm, (unsigned long long)h->o.seed,
           (unsigned long long)h->steps_done, seconds, sps,
           seconds > 0 ? (double)h->tokens_done / seconds : 0.0, 1e3 * h->max_step,
           (unsigned long long)h->payload_bytes);
}

static void ht_free(ht_run_t *h)
{
    sd_model_free(h->target);
    sd_model_free(h->draft_model);
    sd_comm_free(h->draft_comm);
    sd_comm_free(h->world);
    free(h->payload);
    free(h->expect);
}

/* One rank's whole run. */
static int ht_rank_main(const ht_opts_t *o)
{
    ht_run_t h = {.o = *o};
    sd_status_t st = ht_setup(&h);
    h.t_start = h.t_last = sd_now();
    for (uint64_t req = 0; st == SD_OK && h.steps_done < (uint64_t)o->steps; req++)
        st = ht_request(&h, req);
    if (st == SD_OK) ht_report(&h, sd_now() - h.t_start);
    else if (h.rank == 0 || st != SD_ERR_INVALID_ARG)
        fprintf(stderr, "specdec: hangtest failed after %llu steps (seed %llu): %s: %s\n",
                (unsigned long long)h.steps_done, (unsigned long long)h.o.seed,
                sd_status_string(st), sd_last_error());
    fflush(stdout);
    ht_free(&h);
    return cli_exit_code(st);
}

/* Parent: run `specdec launch -n N -- specdec hangtest ARGS --seed X` and map what the
 * launcher reports (the first failing rank's exit code, 128 + signal for a killed rank). */
static int ht_launch(int argc, char **argv, ht_opts_t *o)
{
    if (!o->seed_given) {
        ht_run_t tmp = {.o = *o};
        (void)ht_agree_seed(&tmp); /* no world yet: just draws the seed */
        o->seed = tmp.o.seed;
    }
    char n[16], seed[32];
    snprintf(n, sizeof n, "%d", o->ranks);
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)o->seed);
    char **args = calloc((size_t)argc + 10, sizeof *args);
    if (args == NULL) return fprintf(stderr, "specdec: error: out of memory\n"), CLI_EXIT_ERROR;
    int a = 0;
    args[a++] = argv[0];
    args[a++] = "launch";
    args[a++] = "-n";
    args[a++] = n;
    args[a++] = "--";
    args[a++] = "/proc/self/exe";
    for (int i = 1; i < argc; i++) args[a++] = argv[i];
    args[a++] = "--seed";
    args[a++] = seed;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        /* a failed rank usually means the others are stuck in a collective: reap fast */
        setenv("SPECDEC_LAUNCH_GRACE_MS", "2000", 0);
        execv("/proc/self/exe", args);
        _exit(127);
    }
    free(args);
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) < 0)
        return fprintf(stderr, "specdec: error: hangtest could not start the ranks\n"), 1;
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (code == 0 || code == CLI_EXIT_TIMEOUT || code == CLI_EXIT_DIVERGENCE ||
        code == CLI_EXIT_PEER_LOST || code == CLI_EXIT_USAGE)
        return code;
    if (code > 128) {
        fprintf(stderr, "specdec: hangtest: a rank died (code %d); seed %llu\n", code,
                (unsigned long long)o->seed);
        return CLI_EXIT_PEER_LOST;
    }
    return CLI_EXIT_ERROR;
}

int cmd_hangtest(int argc, char **argv)
{
    ht_opts_t o;
    if (!ht_parse(argc, argv, &o)) return CLI_EXIT_USAGE;
    int is_rank = getenv("SPECDEC_RANK") || getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE");
    if (is_rank || o.ranks == 1) return ht_rank_main(&o);
    if (o.comm && strcmp(o.comm, "mpi") == 0) /* forked ranks have no MPI world to join */
        return fprintf(stderr, "specdec: error: --comm mpi needs MPI's launcher: mpirun -n %d "
                               "specdec hangtest --ranks %d --comm mpi ...\n", o.ranks, o.ranks),
               CLI_EXIT_USAGE;
    return ht_launch(argc, argv, &o);
}
