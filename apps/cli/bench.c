/* `specdec bench`: decode speed of target-only vs speculative decoding on a prompt set
 * (bench/README.md: prompt files, schedule, aggregates, the exactness check). A prompt's
 * leading blank lines and trailing white space are dropped; the untimed warm-up reads every
 * model's weights once before any timing. */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "cli.h"
#include "core/escape.h"

enum {
    MAX_PROMPTS = 64,
    MAX_DRAFTERS = 8,
    MAX_KS = SD_SPEC_MAX_K,
    MAX_REPEATS = 16,
    MAX_CATS = 16,
    NAME_LEN = 64,
};

typedef struct bench_drafter {
    char label[NAME_LEN];  /* "ngram", "ngram:4", "layerskip:15", "model:FILE" */
    sd_spec_config_t spec; /* k and adaptive are set per run */
    const char *path;      /* draft model file, or NULL */
    char tree[NAME_LEN];   /* "+tree=SHAPE" when the drafter proposes trees, else "" */
} bench_drafter_t;

typedef struct bench_opts {
    const char *model_path, *prompts_dir, *json_path, *device, *trace_path;
    int n_threads, n_ctx, repeats, adaptive;
    sd_tree_sample_t tree_sample; /* --tree-sample, for every drafter */
    sd_gen_config_t gen;
    int ks[MAX_KS], n_ks;
    bench_drafter_t drafters[MAX_DRAFTERS];
    int n_drafters;
} bench_opts_t;

typedef struct bench_prompt {
    char name[NAME_LEN]; /* file name without ".txt" */
    char category[NAME_LEN];
    int32_t *ids;        /* the rendered prompt, tokenized [n_ids] */
    size_t n_ids;
} bench_prompt_t;

/* One (prompt, configuration); configuration 0 is target-only, then drafter-major, k-minor. */
typedef struct bench_run {
    double decode_s[MAX_REPEATS], prefill_s[MAX_REPEATS];
    sd_gen_stats_t stats[MAX_REPEATS];
    int32_t *tokens; /* repeat 0's output [n_tokens] */
    size_t n_tokens;
    int median;      /* index of the repeat with the median decode time */
    int exact;       /* 1 equal to target-only, 0 not, -1 not checked */
} bench_run_t;

typedef struct bench {
    bench_opts_t o;
    char **argv;
    int argc;
    FILE *json;
    cli_trace_t trace;  /* --trace: every timed run's steps */
    int rank;           /* this process's rank (0 alone) */
    sd_model_t *model;
    sd_model_info_t info;
    bench_prompt_t prompts[MAX_PROMPTS];
    int n_prompts;
    char cats[MAX_CATS][NAME_LEN];
    int n_cats;
    bench_run_t *runs; /* [n_prompts, n_configs] */
    int n_configs, mismatches;
} bench_t;

static const char bench_usage[] =
    "usage: specdec bench [-m MODEL] [options]\n"
    "  target-only vs speculative decode speed on a prompt set, per drafter and k\n"
    "  -m, --model PATH     target GGUF model (default: SmolLM2-135M-Instruct Q4_1 from the cache)\n"
    "  --draft D            drafter, repeatable: %s (a draft model);\n"
    "                       D+tree=SHAPE: token trees (--tree of run; k: dynamic trees' depth)\n"
    "                       default: ngram and layerskip:L with L = n_layer / 2\n"
    "  --k LIST             draft lengths, comma-separated (default 1,2,4,8)\n"
    "  --no-adaptive        draft exactly k tokens per step (default: adaptive, k the maximum)\n"
    "  -n N                 tokens to generate per prompt (default 128)\n"
    "  --ignore-eos         always generate N tokens\n"
    "  -t, --threads N      CPU threads (default: all cores)\n"
    "  -c, --ctx N          context length (default: min(model, 4096))\n"
    "  --device D           cpu, cuda, cuda:N or auto (as for run)\n"
    "  --prompts DIR        prompt set (default: bench/prompts)\n"
    "  --repeats R          timed runs per configuration, median kept (default 1)\n"
    "  --temp T, --seed S   sampling (default greedy; outputs are compared only when greedy)\n"
    "  --tree-sample M      sampled trees: top (default) or q (as for run)\n"
    "  --json FILE          machine-readable results to FILE ('-': stdout, table to stderr)\n"
    "  --trace FILE         every step of every timed run as a JSON line (prompt, drafter,\n"
    "                       k, repeat; drafts, accepted, timings)\n";

/* ---- options ------------------------------------------------------------------------ */

static int bad_value(const char *flag, const char *want, const char *v)
{
    fprintf(stderr, "specdec: error: %s expects %s, got '%s'\n", flag, want, v);
    return 0;
}

/* --k 1,2,4,8: distinct values in [1, SD_SPEC_MAX_K]. */
static int parse_k_list(const char *v, bench_opts_t *o)
{
    char want[80];
    snprintf(want, sizeof want, "distinct comma-separated integers in [1, %d]", SD_SPEC_MAX_K);
    o->n_ks = 0;
    for (const char *p = v;;) {
        char *end;
        errno = 0;
        long k = strtol(p, &end, 10);
        if (errno || end == p || k < 1 || k > SD_SPEC_MAX_K || (*end && *end != ','))
            return bad_value("--k", want, v);
        for (int i = 0; i < o->n_ks; i++)
            if (o->ks[i] == k)
                return bad_value("--k", want, v);
        o->ks[o->n_ks++] = (int)k; /* distinct and in range: at most MAX_KS of them */
        if (*end == '\0')
            return 1;
        p = end + 1;
    }
}

/* --draft D (sd_spec_parse_drafter); the label is D, or KIND:FILE for a draft model
 * ("model:FILE", "xvocab:FILE"). */
static int parse_draft(const char *v, bench_opts_t *o)
{
    if (o->n_drafters == MAX_DRAFTERS) {
        fprintf(stderr, "specdec: error: at most %d --draft options\n", MAX_DRAFTERS);
        return 0;
    }
    bench_drafter_t *d = &o->drafters[o->n_drafters++];
    memset(d, 0, sizeof *d);
    sd_spec_config_default(&d->spec);
    const char *tree = strstr(v, "+tree=");
    if (tree != NULL) {
        snprintf(d->tree, sizeof d->tree, "%s", tree);
        if (!cli_parse_tree(tree + 6, &d->spec)) return 0;
        static char heads[MAX_DRAFTERS][NAME_LEN * 4]; /* the drafter part, kept for d->path */
        char *head = heads[o->n_drafters - 1];
        size_t len = (size_t)(tree - v) < sizeof heads[0] - 1 ? (size_t)(tree - v) : sizeof heads[0] - 1;
        memcpy(head, v, len);
        head[len] = '\0';
        v = head;
    }
    if (!cli_parse_draft(v, &d->spec, &d->path)) return 0;
    const char *base = d->path ? strrchr(d->path, '/') : NULL;
    char tree_sfx[NAME_LEN];
    memcpy(tree_sfx, d->tree, sizeof tree_sfx);
    if (d->path)
        snprintf(d->label, sizeof d->label, "%s:%s%s", sd_drafter_kind_name(d->spec.drafter),
                 base ? base + 1 : d->path, tree_sfx);
    else snprintf(d->label, sizeof d->label, "%s%s", v, tree_sfx);
    return 1;
}

static int parse_one(const char *flag, const char *v, bench_opts_t *o)
{
    if (!strcmp(flag, "-m") || !strcmp(flag, "--model")) return o->model_path = v, 1;
    if (!strcmp(flag, "--draft")) return parse_draft(v, o);
    if (!strcmp(flag, "--k")) return parse_k_list(v, o);
    if (!strcmp(flag, "-n")) return cli_parse_int(flag, v, 1, 1 << 20, &o->gen.max_tokens);
    if (!strcmp(flag, "-t") || !strcmp(flag, "--threads"))
        return cli_parse_int(flag, v, 0, 1024, &o->n_threads);
    if (!strcmp(flag, "-c") || !strcmp(flag, "--ctx")) return cli_parse_int(flag, v, 0, 1 << 20, &o->n_ctx);
    if (!strcmp(flag, "--device")) return o->device = v, 1;
    if (!strcmp(flag, "--prompts")) return o->prompts_dir = v, 1;
    if (!strcmp(flag, "--json")) return o->json_path = v, 1;
    if (!strcmp(flag, "--trace")) return o->trace_path = v, 1;
    if (!strcmp(flag, "--repeats")) return cli_parse_int(flag, v, 1, MAX_REPEATS, &o->repeats);
    if (!strcmp(flag, "--temp")) return cli_parse_float(flag, v, 0.0f, 100.0f, &o->gen.temperature);
    if (!strcmp(flag, "--seed")) return cli_parse_seed(v, &o->gen.seed);
    if (!strcmp(flag, "--tree-sample")) return cli_parse_tree_sample(v, &o->tree_sample);
    fprintf(stderr, "specdec: error: unknown bench option '%s' (see specdec bench --help)\n", flag);
    return 0;
}

static void opts_default(bench_opts_t *o)
{
    static const int default_ks[] = {1, 2, 4, 8};
    memset(o, 0, sizeof *o);
    sd_gen_config_default(&o->gen);
    o->gen.max_tokens = 128;
    o->gen.temperature = 0.0f;
    o->prompts_dir = "bench/prompts";
    o->repeats = 1;
    o->adaptive = 1;
    o->n_ks = (int)(sizeof default_ks / sizeof default_ks[0]);
    memcpy(o->ks, default_ks, sizeof default_ks);
}

/* Returns 1 on success, 0 after printing the error line. */
static int parse_opts(int argc, char **argv, bench_opts_t *o)
{
    opts_default(o);
    int ks_given = 0;
    for (int i = 2; i < argc; i++) {
        const char *flag = argv[i];
        if (!strcmp(flag, "--no-adaptive")) { o->adaptive = 0; continue; }
        if (!strcmp(flag, "--ignore-eos")) { o->gen.ignore_eos = 1; continue; }
        if (i + 1 >= argc) {
            fprintf(stderr, "specdec: error: option '%s' needs a value\n", flag);
            return 0;
        }
        if (!strcmp(flag, "--k") && ks_given++) {
            fprintf(stderr, "specdec: error: give --k once, as a list: --k 1,2,4\n");
            return 0;
        }
        if (!parse_one(flag, argv[++i], o)) return 0;
    }
    if (o->n_drafters == 0) {
        parse_draft("ngram", o);
        parse_draft("layerskip", o);
    }
    for (int i = 0; i < o->n_drafters; i++) o->drafters[i].spec.tree_sample = o->tree_sample;
    return 1;
}

/* ---- models ------------------------------------------------------------------------- */

/* Load the target and the draft models; resolve layerskip L. Returns the exit code. */
static int load_models(bench_t *b)
{
    cli_gen_opts_t c;
    memset(&c, 0, sizeof c);
    c.model_path = b->o.model_path;
    c.n_threads = b->o.n_threads;
    c.n_ctx = b->o.n_ctx;
    c.device = b->o.device;
    if (cli_load_model(&c, &b->model) != SD_OK) return 1;
    b->rank = sd_comm_rank(c.world);
    sd_status_t s = sd_model_get_info(b->model, &b->info);
    if (s != SD_OK) return cli_fail("model info", s);
    for (int i = 0; i < b->o.n_drafters; i++) {
        bench_drafter_t *d = &b->o.drafters[i];
        if (d->path == NULL) { /* the label with what the target decides ("layerskip:15") */
            char text[NAME_LEN];
            if (sd_spec_drafter_text(&d->spec, b->model, text, sizeof text) != SD_OK) {
                fprintf(stderr, "specdec: error: --draft %s: %s\n", d->label, sd_last_error());
                return 2;
            }
            snprintf(d->label, sizeof d->label, "%s%s", text, d->tree);
            continue;
        }
        sd_model_params_t p;
        sd_model_params_default(&p);
        p.path = d->path;
        p.n_threads = b->o.n_threads;
        p.n_ctx = b->o.n_ctx;
        p.device = b->o.device;
        if ((s = sd_model_load(&p, &d->spec.draft_model)) != SD_OK)
            return cli_fail("load draft model", s);
    }
    return 0;
}

/* ---- prompts ------------------------------------------------------------------------ */

static char *read_text_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    size_t len = 0, cap = 0, got;
    do {
        if (len + 4096 + 1 > cap) {
            char *nb = realloc(buf, cap = 2 * cap + 4096 + 1);
            if (!nb) return free(buf), fclose(f), NULL;
            buf = nb;
        }
        got = fread(buf + len, 1, cap - len - 1, f);
        len += got;
    } while (got > 0);
    int err = ferror(f);
    fclose(f);
    if (err) return free(buf), NULL;
    buf[len] = '\0';
    return buf;
}

/* Split "category: NAME\n\nTEXT" in place: *category and *text point into buf. */
static int split_prompt(char *buf, char **category, char **text)
{
    static const char key[] = "category:";
    if (strncmp(buf, key, sizeof key - 1)) return 0;
    char *c = buf + sizeof key - 1, *eol = strchr(c, '\n');
    if (!eol) return 0;
    *eol = '\0';
    c += strspn(c, " \t");
    c[strcspn(c, " \t\r")] = '\0';
    char *t = eol + 1;
    t += strspn(t, " \t\r\n");
    size_t n = strlen(t);
    while (n > 0 && strchr(" \t\r\n", t[n - 1])) t[--n] = '\0';
    *category = c, *text = t;
    return c[0] != '\0' && t[0] != '\0' && strlen(c) < NAME_LEN;
}

/* The prompt as one chat-templated user turn, tokenized into p->ids. */
static sd_status_t render_prompt(sd_model_t *m, const char *text, bench_prompt_t *p)
{
    sd_chat_message_t msg = {"user", text};
    size_t len = 0, n = 0;
    sd_status_t s = sd_chat_apply(m, &msg, 1, 1, NULL, 0, &len);
    if (s != SD_OK && s != SD_ERR_BUFFER_TOO_SMALL) return s;
    char *chat = malloc(len + 1);
    p->ids = malloc((len + 8) * sizeof *p->ids);
    if (!chat || !p->ids) return free(chat), SD_ERR_OUT_OF_MEMORY;
    s = sd_chat_apply(m, &msg, 1, 1, chat, len + 1, &len);
    if (s == SD_OK)
        s = sd_tokenize(m, chat, len, SD_TOKENIZE_ADD_BOS | SD_TOKENIZE_PARSE_SPECIAL, p->ids,
                        len + 8, &n);
    free(chat);
    p->n_ids = n;
    return s;
}

static int add_category(bench_t *b, const char *cat)
{
    for (int i = 0; i < b->n_cats; i++)
        if (!strcmp(b->cats[i], cat)) return 1;
    if (b->n_cats == MAX_CATS) return 0;
    snprintf(b->cats[b->n_cats++], NAME_LEN, "%s", cat);
    return 1;
}

/* One prompt file into b->prompts[b->n_prompts++]. Returns the exit code. */
static int load_prompt(bench_t *b, const char *dir, const char *file)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    char *buf = read_text_file(path), *cat, *text;
    if (!buf)
        return fprintf(stderr, "specdec: error: cannot read prompt %s: %s\n", path, strerror(errno)), 1;
    bench_prompt_t *p = &b->prompts[b->n_prompts];
    if (!split_prompt(buf, &cat, &text) || !add_category(b, cat)) {
        fprintf(stderr, "specdec: error: prompt %s: expected a first line 'category: NAME' (at most "
                        "%d categories) followed by the prompt text\n", path, MAX_CATS);
        return free(buf), 1;
    }
    snprintf(p->name, sizeof p->name, "%.*s", (int)(strlen(file) - 4), file);
    snprintf(p->category, sizeof p->category, "%s", cat);
    sd_status_t s = render_prompt(b->model, text, p);
    free(buf);
    b->n_prompts++;
    if (s == SD_OK) return 0;
    char what[NAME_LEN + 32];
    snprintf(what, sizeof what, "prompt %s", p->name);
    return cli_fail(what, s);
}

static int is_prompt_file(const struct dirent *e)
{
    size_t n = strlen(e->d_name);
    return n > 4 && e->d_name[0] != '.' && !strcmp(e->d_name + n - 4, ".txt");
}

static int load_prompts(bench_t *b)
{
    struct dirent **list;
    const char *dir = b->o.prompts_dir;
    int n = scandir(dir, &list, is_prompt_file, alphasort), rc = 0;
    if (n < 0)
        return fprintf(stderr, "specdec: error: cannot open --prompts %s: %s\n", dir, strerror(errno)), 1;
    if (n == 0 || n > MAX_PROMPTS) {
        fprintf(stderr, "specdec: error: %d .txt prompts in %s, need 1 to %d\n", n, dir, MAX_PROMPTS);
        rc = 1;
    }
    for (int i = 0; i < n; i++) {
        if (rc == 0) rc = load_prompt(b, dir, list[i]->d_name);
        free(list[i]);
    }
    free(list);
    return rc;
}

/* ---- runs --------------------------------------------------------------------------- */

static bench_run_t *run_at(const bench_t *b, int p, int c)
{
    return &b->runs[(size_t)p * b->n_configs + c];
}

static const bench_drafter_t *config_drafter(const bench_t *b, int c)
{
    return c == 0 ? NULL : &b->o.drafters[(c - 1) / b->o.n_ks];
}

static int config_k(const bench_t *b, int c)
{
    return c == 0 ? 0 : b->o.ks[(c - 1) % b->o.n_ks];
}

static void config_label(const bench_t *b, int c, char *buf, size_t cap)
{
    if (c == 0) snprintf(buf, cap, "target-only");
    else snprintf(buf, cap, "%s k=%d", config_drafter(b, c)->label, config_k(b, c));
}

static sd_spec_config_t config_spec(const bench_t *b, int c)
{
    sd_spec_config_t spec;
    sd_spec_config_default(&spec);
    if (c == 0) return spec;
    spec = config_drafter(b, c)->spec;
    spec.k = config_k(b, c);
    spec.adaptive = b->o.adaptive;
    return spec;
}

/* Print MISMATCH when got[n_got] differs from want[n_want]; returns 1 if it did. */
static int mismatch(const bench_t *b, int p, int c, const char *against, const int32_t *want,
                    size_t n_want, const int32_t *got, size_t n_got)
{
    size_t i = 0;
    while (i < n_want && i < n_got && want[i] == got[i]) i++;
    if (i == n_want && i == n_got) return 0;
    char label[NAME_LEN + 16];
    config_label(b, c, label, sizeof label);
    if (i < n_want && i < n_got)
        fprintf(stderr, "specdec: MISMATCH: prompt %s, %s: token %zu is %d, %s has %d\n",
                b->prompts[p].name, label, i, got[i], against, want[i]);
    else
        fprintf(stderr, "specdec: MISMATCH: prompt %s, %s: %zu tokens, %s has %zu\n",
                b->prompts[p].name, label, n_got, against, n_want);
    return 1;
}

/* Record repeat r of (p, c) and check its tokens. */
static void record(bench_t *b, int p, int c, int r, const sd_gen_result_t *res)
{
    bench_run_t *run = run_at(b, p, c);
    run->decode_s[r] = res->decode_seconds;
    run->prefill_s[r] = res->prefill_seconds;
    run->stats[r] = res->stats;
    if (r > 0) {
        b->mismatches += mismatch(b, p, c, "repeat 1", run->tokens, run->n_tokens, res->tokens,
                                  res->n_tokens);
        return;
    }
    run->n_tokens = res->n_tokens < (size_t)b->o.gen.max_tokens ? res->n_tokens
                                                                : (size_t)b->o.gen.max_tokens;
    memcpy(run->tokens, res->tokens, run->n_tokens * sizeof *res->tokens);
    run->exact = -1;
    if (c == 0 || b->o.gen.temperature > 0.0f) return;
    const bench_run_t *base = run_at(b, p, 0);
    run->exact = !mismatch(b, p, c, "target-only", base->tokens, base->n_tokens, run->tokens,
                           run->n_tokens);
    b->mismatches += !run->exact;
}

/* One generation of prompt p with configuration c (r < 0: untimed warm-up). */
static int run_one(bench_t *b, int p, int c, int r, int max_tokens)
{
    const bench_prompt_t *pr = &b->prompts[p];
    sd_spec_config_t spec = config_spec(b, c);
    sd_gen_config_t gen = b->o.gen;
    gen.max_tokens = max_tokens;
    if (r >= 0) { /* warm-up runs are not traced */
        const bench_drafter_t *d = c ? config_drafter(b, c) : NULL;
        cli_trace_label(&b->trace, pr->name, d ? d->label : "none", c ? spec.k : 0, r);
        cli_trace_attach(&b->trace, &spec);
    }
    sd_gen_result_t res;
    sd_status_t s = sd_generate_speculative(b->model, pr->ids, pr->n_ids, &gen, &spec, NULL, NULL,
                                            &res);
    if (s != SD_OK) {
        sd_gen_result_free(&res);
        char label[NAME_LEN + 16], what[3 * NAME_LEN];
        config_label(b, c, label, sizeof label);
        snprintf(what, sizeof what, "generate (prompt %s, %s)", pr->name, label);
        return cli_fail(what, s);
    }
    if (r >= 0) record(b, p, c, r, &res);
    sd_gen_result_free(&res);
    return 0;
}

static double tok_s(size_t tokens, double seconds)
{
    return seconds > 0.0 ? (double)tokens / seconds : 0.0;
}

/* One progress line per (repeat, prompt) on stderr. */
static void progress(const bench_t *b, int p, int r)
{
    const bench_run_t *base = run_at(b, p, 0);
    double t0 = tok_s(base->n_tokens, base->decode_s[r]), best = 0.0;
    int best_c = 0;
    for (int c = 1; c < b->n_configs; c++) {
        const bench_run_t *run = run_at(b, p, c);
        double x = tok_s(run->n_tokens, run->decode_s[r]);
        if (x > best) best = x, best_c = c;
    }
    char label[NAME_LEN + 16];
    config_label(b, best_c, label, sizeof label);
    fprintf(stderr, "bench: repeat %d/%d, prompt %d/%d %s (%zu prompt tokens, %zu generated): "
                    "target-only %.1f tok/s, best %s %.2fx\n",
            r + 1, b->o.repeats, p + 1, b->n_prompts, b->prompts[p].name, b->prompts[p].n_ids,
            base->n_tokens, t0, label, t0 > 0.0 ? best / t0 : 0.0);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void pick_median(bench_run_t *run, int repeats)
{
    double sorted[MAX_REPEATS];
    memcpy(sorted, run->decode_s, repeats * sizeof *sorted);
    qsort(sorted, repeats, sizeof *sorted, cmp_double);
    double m = sorted[(repeats - 1) / 2];
    for (run->median = 0; run->decode_s[run->median] != m; run->median++) {}
}

static int run_all(bench_t *b)
{
    int n = b->o.gen.max_tokens, rc = 0;
    for (int c = 0; rc == 0 && c < b->n_configs; c++) /* every model's weights read once */
        rc = run_one(b, 0, c, -1, n < 8 ? n : 8);
    for (int r = 0; rc == 0 && r < b->o.repeats; r++)
        for (int p = 0; rc == 0 && p < b->n_prompts; p++) {
            for (int c = 0; rc == 0 && c < b->n_configs; c++) rc = run_one(b, p, c, r, n);
            if (rc == 0) progress(b, p, r);
        }
    for (int i = 0; rc == 0 && i < b->n_prompts * b->n_configs; i++)
        pick_median(&b->runs[i], b->o.repeats);
    return rc;
}

/* ---- aggregates --------------------------------------------------------------------- */

typedef struct bench_agg {
    double tok_s, speedup, acceptance, mean_len;
    int n_prompts;
} bench_agg_t;

/* Configuration c over the prompts of category cat (NULL: all). */
static bench_agg_t aggregate(const bench_t *b, int c, const char *cat)
{
    double tokens = 0, secs = 0, base_tokens = 0, base_secs = 0;
    uint64_t drafted = 0, accepted = 0, steps = 0;
    bench_agg_t a = {0};
    for (int p = 0; p < b->n_prompts; p++) {
        if (cat && strcmp(cat, b->prompts[p].category)) continue;
        const bench_run_t *run = run_at(b, p, c), *base = run_at(b, p, 0);
        const sd_gen_stats_t *s = &run->stats[run->median];
        tokens += run->n_tokens, secs += run->decode_s[run->median];
        base_tokens += base->n_tokens, base_secs += base->decode_s[base->median];
        drafted += s->drafted, accepted += s->accepted, steps += s->steps;
        a.n_prompts++;
    }
    a.tok_s = secs > 0 ? tokens / secs : 0;
    double base = base_secs > 0 ? base_tokens / base_secs : 0;
    a.speedup = base > 0 ? a.tok_s / base : 0;
    a.acceptance = drafted ? (double)accepted / drafted : 0;
    a.mean_len = steps ? (double)(accepted + steps) / steps : 0;
    return a;
}

/* ---- the table ---------------------------------------------------------------------- */

static void table_row(FILE *f, const bench_t *b, int c, const char *cat)
{
    bench_agg_t a = aggregate(b, c, cat);
    const bench_drafter_t *d = config_drafter(b, c);
    char k[8] = "-", acc[16] = "-";
    if (c > 0) {
        snprintf(k, sizeof k, "%d", config_k(b, c));
        snprintf(acc, sizeof acc, "%.1f%%", 100.0 * a.acceptance);
    }
    fprintf(f, "%-18s %3s  %-12s %8.1f %7.2fx %7s %9.2f\n", d ? d->label : "target-only", k,
            cat ? cat : "all", a.tok_s, a.speedup, acc, a.mean_len);
}

static void print_table(FILE *f, const bench_t *b)
{
    const bench_opts_t *o = &b->o;
    fprintf(f, "specdec bench: %s (%s, %d layers) on %s, %d prompts, n = %d, %d threads, %s, "
               "%s k, %d repeat%s (median)\n",
            b->info.name[0] ? SD_ESC_STR(b->info.name) : "model", b->info.arch, b->info.n_layer,
            b->info.device, b->n_prompts, o->gen.max_tokens, o->n_threads ? o->n_threads : (int)sysconf(_SC_NPROCESSORS_ONLN),
            o->gen.temperature > 0 ? "sampling" : "greedy", o->adaptive ? "adaptive" : "fixed",
            o->repeats, o->repeats == 1 ? "" : "s");
    fprintf(f, "%-18s %3s  %-12s %8s %8s %7s %9s\n", "drafter", "k", "category", "tok/s",
            "speedup", "accept", "mean len");
    for (int c = 0; c < b->n_configs; c++) {
        for (int i = 0; i < b->n_cats; i++) table_row(f, b, c, b->cats[i]);
        table_row(f, b, c, NULL);
    }
    if (o->gen.temperature > 0)
        fprintf(f, "outputs not compared (temperature %g > 0)\n", (double)o->gen.temperature);
    else if (b->mismatches)
        fprintf(f, "MISMATCH: %d outputs differ (see stderr)\n", b->mismatches);
    else
        fprintf(f, "exact: every speculative output equals the target-only output\n");
}

/* ---- JSON --------------------------------------------------------------------------- */

/* argv as one shell-quoted line. */
static void json_command(FILE *f, int argc, char **argv)
{
    size_t cap = 1;
    for (int i = 0; i < argc; i++) cap += 4 * strlen(argv[i]) + 3;
    char *line = malloc(cap), *w = line;
    if (!line) return cli_json_str(f, "");
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        int plain = a[0] && strspn(a, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                      "0123456789_./:=,+-@%") == strlen(a);
        if (i) *w++ = ' ';
        if (!plain) *w++ = '\'';
        for (; *a; a++) {
            if (*a == '\'' && !plain) w += sprintf(w, "'\\''");
            else *w++ = *a;
        }
        if (!plain) *w++ = '\'';
    }
    *w = '\0';
    cli_json_str(f, line);
    free(line);
}

static void cpu_model(char *buf, size_t cap)
{
    snprintf(buf, cap, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        char *colon = strchr(line, ':');
        if (colon && !strncmp(line, "model name", 10)) {
            colon += 1 + strspn(colon + 1, " \t");
            colon[strcspn(colon, "\n")] = '\0';
            snprintf(buf, cap, "%s", colon);
            break;
        }
    }
    fclose(f);
}

static void json_header(FILE *f, const bench_t *b)
{
    const bench_opts_t *o = &b->o;
    char cpu[256], date[32];
    cpu_model(cpu, sizeof cpu);
    time_t now = time(NULL);
    struct tm tm;
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&now, &tm));
    int cores = (int)sysconf(_SC_NPROCESSORS_ONLN);
    fprintf(f, "{\n  \"device\": {\"kind\": ");
    cli_json_str(f, b->info.device);
    fprintf(f, ", \"cpu\": ");
    cli_json_str(f, cpu);
    fprintf(f, ", \"cores\": %d, \"threads\": %d},\n  \"date\": \"%s\",\n  \"command\": ", cores,
            o->n_threads ? o->n_threads : cores, date);
    json_command(f, b->argc, b->argv);
    fprintf(f, ",\n  \"target\": {\"name\": ");
    cli_json_str(f, b->info.name);
    fprintf(f, ", \"arch\": ");
    cli_json_str(f, b->info.arch);
    fprintf(f, ", \"n_layer\": %d, \"n_vocab\": %d},\n  \"drafters\": [", b->info.n_layer,
            b->info.n_vocab);
    for (int i = 0; i < o->n_drafters; i++) {
        fprintf(f, "%s", i ? ", " : "");
        cli_json_str(f, o->drafters[i].label);
    }
    fprintf(f, "],\n  \"k\": [");
    for (int i = 0; i < o->n_ks; i++) fprintf(f, "%s%d", i ? ", " : "", o->ks[i]);
    fprintf(f, "],\n  \"config\": {\"max_tokens\": %d, \"ignore_eos\": %s, \"temperature\": %g, "
               "\"seed\": %llu, \"adaptive\": %s, \"repeats\": %d},\n",
            o->gen.max_tokens, o->gen.ignore_eos ? "true" : "false", (double)o->gen.temperature,
            (unsigned long long)o->gen.seed, o->adaptive ? "true" : "false", o->repeats);
}

static void json_config_id(FILE *f, const bench_t *b, int c)
{
    const bench_drafter_t *d = config_drafter(b, c);
    fprintf(f, "\"drafter\": ");
    cli_json_str(f, d ? d->label : "none");
    fprintf(f, ", \"k\": %d", config_k(b, c));
}

static void json_run(FILE *f, const bench_t *b, int p, int c)
{
    const bench_run_t *run = run_at(b, p, c), *base = run_at(b, p, 0);
    const sd_gen_stats_t *s = &run->stats[run->median];
    double rate = tok_s(run->n_tokens, run->decode_s[run->median]);
    double base_rate = tok_s(base->n_tokens, base->decode_s[base->median]);
    fprintf(f, "        {");
    json_config_id(f, b, c);
    fprintf(f, ", \"tokens\": %zu, \"decode_seconds\": %.6f, \"prefill_seconds\": %.6f, "
               "\"tok_s\": %.3f, \"speedup\": %.4f, \"acceptance_rate\": %.4f, "
               "\"mean_accepted_len\": %.4f, \"steps\": %llu, \"drafted\": %llu, "
               "\"accepted\": %llu, \"draft_seconds\": %.6f, \"verify_seconds\": %.6f, "
               "\"check_seconds\": %.6f, \"exact\": %s,\n         \"decode_seconds_all\": [",
            run->n_tokens, run->decode_s[run->median], run->prefill_s[run->median], rate,
            base_rate > 0 ? rate / base_rate : 0.0, s->acceptance_rate, s->mean_accepted_len,
            (unsigned long long)s->steps, (unsigned long long)s->drafted,
            (unsigned long long)s->accepted, s->draft_seconds, s->verify_seconds, s->check_seconds,
            run->exact < 0 ? "null" : run->exact ? "true" : "false");
    for (int r = 0; r < b->o.repeats; r++) fprintf(f, "%s%.6f", r ? ", " : "", run->decode_s[r]);
    fprintf(f, "], \"accepted_hist\": [");
    for (int i = 0; i <= SD_SPEC_MAX_K; i++)
        fprintf(f, "%s%llu", i ? ", " : "", (unsigned long long)s->accepted_hist[i]);
    fprintf(f, "]}");
}

static void json_prompts(FILE *f, const bench_t *b)
{
    fprintf(f, "  \"prompts\": [\n");
    for (int p = 0; p < b->n_prompts; p++) {
        fprintf(f, "    {\"name\": ");
        cli_json_str(f, b->prompts[p].name);
        fprintf(f, ", \"category\": ");
        cli_json_str(f, b->prompts[p].category);
        fprintf(f, ", \"prompt_tokens\": %zu, \"runs\": [\n", b->prompts[p].n_ids);
        for (int c = 0; c < b->n_configs; c++) {
            json_run(f, b, p, c);
            fprintf(f, "%s\n", c + 1 < b->n_configs ? "," : "");
        }
        fprintf(f, "    ]}%s\n", p + 1 < b->n_prompts ? "," : "");
    }
    fprintf(f, "  ],\n");
}

static void json_summary_row(FILE *f, const bench_t *b, int c, const char *cat, int last)
{
    bench_agg_t a = aggregate(b, c, cat);
    fprintf(f, "    {");
    json_config_id(f, b, c);
    fprintf(f, ", \"category\": ");
    cli_json_str(f, cat ? cat : "all");
    fprintf(f, ", \"prompts\": %d, \"tok_s\": %.3f, \"speedup\": %.4f, \"acceptance_rate\": %.4f, "
               "\"mean_accepted_len\": %.4f}%s\n",
            a.n_prompts, a.tok_s, a.speedup, a.acceptance, a.mean_len, last ? "" : ",");
}

static void print_json(FILE *f, const bench_t *b)
{
    json_header(f, b);
    json_prompts(f, b);
    fprintf(f, "  \"summary\": [\n");
    for (int c = 0; c < b->n_configs; c++) {
        for (int i = 0; i < b->n_cats; i++) json_summary_row(f, b, c, b->cats[i], 0);
        json_summary_row(f, b, c, NULL, c + 1 == b->n_configs);
    }
    fprintf(f, "  ],\n  \"mismatches\": %d\n}\n", b->mismatches);
}

/* ---- the command -------------------------------------------------------------------- */

static int alloc_runs(bench_t *b)
{
    b->n_configs = 1 + b->o.n_drafters * b->o.n_ks;
    size_t n = (size_t)b->n_prompts * b->n_configs;
    b->runs = calloc(n, sizeof *b->runs);
    if (!b->runs) return fprintf(stderr, "specdec: error: out of memory\n"), 1;
    for (size_t i = 0; i < n; i++)
        if (!(b->runs[i].tokens = malloc((size_t)b->o.gen.max_tokens * sizeof(int32_t))))
            return fprintf(stderr, "specdec: error: out of memory\n"), 1;
    return 0;
}

static int open_json(bench_t *b)
{
    const char *path = b->o.json_path;
    if (!path) return 0;
    b->json = strcmp(path, "-") ? fopen(path, "w") : stdout;
    if (!b->json)
        return fprintf(stderr, "specdec: error: cannot write --json %s: %s\n", path, strerror(errno)), 1;
    return 0;
}

static int report(bench_t *b)
{
    if (!cli_trace_close(&b->trace)) return 1;
    print_table(b->json == stdout ? stderr : stdout, b);
    if (b->json) {
        print_json(b->json, b);
        if (b->json != stdout ? fclose(b->json) != 0 : fflush(stdout) != 0)
            return fprintf(stderr, "specdec: error: writing --json %s failed\n", b->o.json_path), 1;
        b->json = NULL;
    }
    if (b->mismatches == 0) return 0;
    fprintf(stderr, "specdec: error: %d speculative outputs differ from target-only (MISMATCH)\n",
            b->mismatches);
    return 1;
}

static void bench_free(bench_t *b)
{
    if (b->json && b->json != stdout) fclose(b->json);
    cli_trace_close(&b->trace);
    for (int i = 0; b->runs && i < b->n_prompts * b->n_configs; i++) free(b->runs[i].tokens);
    free(b->runs);
    for (int p = 0; p < b->n_prompts; p++) free(b->prompts[p].ids);
    for (int i = 0; i < b->o.n_drafters; i++) sd_model_free(b->o.drafters[i].spec.draft_model);
    sd_model_free(b->model);
    free(b);
}

int cmd_bench(int argc, char **argv)
{
    if (argc > 2 && (!strcmp(argv[2], "-h") || !strcmp(argv[2], "--help")))
        return cli_print_usage(bench_usage), 0;
    bench_t *b = calloc(1, sizeof *b);
    if (!b) return fprintf(stderr, "specdec: error: out of memory\n"), 1;
    b->argc = argc, b->argv = argv;
    int rc = parse_opts(argc, argv, &b->o) ? 0 : 2;
    if (rc == 0) rc = open_json(b);
    if (rc == 0) rc = load_models(b);
    if (rc == 0) rc = cli_trace_open(&b->trace, b->o.trace_path, b->rank) ? 0 : 1;
    if (rc == 0) rc = load_prompts(b);
    if (rc == 0) rc = alloc_runs(b);
    if (rc == 0) rc = run_all(b);
    if (rc == 0) rc = report(b);
    bench_free(b);
    return rc;
}
