/* Option parsing, default model lookup and streamed generation shared by run and chat. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "comm/comm.h"
#include "core/unicode.h"

/* Return s from a cli_* loader that has already printed its error line. */
#define SD_CLI_CHECK(call)                                                                       \
    do {                                                                                         \
        sd_status_t cli_check_status_ = (call);                                                  \
        if (cli_check_status_ != SD_OK) return cli_check_status_;                                \
    } while (0)

int cli_exit_code(sd_status_t s)
{
    switch (s) {
    case SD_OK: return CLI_EXIT_OK;
    case SD_ERR_COMM_TIMEOUT: return CLI_EXIT_TIMEOUT;
    case SD_ERR_RANK_DIVERGENCE: return CLI_EXIT_DIVERGENCE;
    case SD_ERR_PEER_LOST: return CLI_EXIT_PEER_LOST;
    default: return CLI_EXIT_ERROR;
    }
}

int cli_fail(const char *what, sd_status_t s)
{
    const char *detail = sd_last_error();
    fprintf(stderr, "specdec: error: %s: %s%s%s\n", what, sd_status_string(s),
            detail[0] ? ": " : "", detail);
    return cli_exit_code(s);
}

/* A number is written as digits (after a '-' for a negative one): strtol alone would also
 * take leading spaces and a '+', and strtoull would wrap " -1" to 2^64 - 1. */
static int digits_first(const char *v, int sign_ok)
{
    const char *d = v + (sign_ok && v[0] == '-');
    return *d >= '0' && *d <= '9';
}

int cli_parse_int(const char *flag, const char *v, long lo, long hi, int *out)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (!digits_first(v, 1) || errno || end == v || *end || x < lo || x > hi) {
        fprintf(stderr, "specdec: error: %s expects an integer in [%ld, %ld], got '%s'\n", flag,
                lo, hi, v);
        return 0;
    }
    *out = (int)x;
    return 1;
}

int cli_parse_float(const char *flag, const char *v, float lo, float hi, float *out)
{
    char *end;
    float x = strtof(v, &end);
    if (end == v || *end || isnan(x) || x < lo || x > hi) {
        fprintf(stderr, "specdec: error: %s expects a number in [%g, %g], got '%s'\n", flag,
                (double)lo, (double)hi, v);
        return 0;
    }
    *out = x;
    return 1;
}

int cli_parse_seed(const char *v, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (!digits_first(v, 0) || errno || end == v || *end) {
        fprintf(stderr, "specdec: error: --seed expects a non-negative integer, got '%s'\n", v);
        return 0;
    }
    *out = x;
    return 1;
}

int cli_parse_draft(const char *v, sd_spec_config_t *spec, const char **model_path)
{
    if (sd_spec_parse_drafter(v, spec, model_path) == SD_OK) return 1;
    fprintf(stderr, "specdec: error: --draft: %s\n", sd_last_error());
    return 0;
}

int cli_parse_tree(const char *v, sd_spec_config_t *spec)
{
    if (sd_spec_parse_tree(v, spec) == SD_OK) return 1;
    fprintf(stderr, "specdec: error: %s\n", sd_last_error());
    return 0;
}

int cli_parse_tree_sample(const char *v, sd_tree_sample_t *out)
{
    if (!strcmp(v, "q") || !strcmp(v, "top")) return *out = v[0] == 'q' ? SD_TREE_SAMPLE_Q : SD_TREE_SAMPLE_TOP, 1;
    fprintf(stderr, "specdec: error: --tree-sample expects q or top, got '%s'\n", v);
    return 0;
}

void cli_fprint_usage(FILE *f, const char *usage)
{
    char forms[256];
    sd_spec_drafter_usage(forms, sizeof forms);
    fprintf(f, usage, forms);
}

void cli_print_usage(const char *usage) { cli_fprint_usage(stdout, usage); }

/* One option with its value; returns 0 on error, 1 on success. */
static int parse_one(const char *flag, const char *v, cli_gen_opts_t *o)
{
    sd_gen_config_t *g = &o->gen;
    if (!strcmp(flag, "-m") || !strcmp(flag, "--model")) return o->model_path = v, 1;
    if (!strcmp(flag, "-p") || !strcmp(flag, "--prompt")) return o->prompt = v, 1;
    if (!strcmp(flag, "-n") || !strcmp(flag, "--n-predict"))
        return cli_parse_int(flag, v, 1, INT_MAX, &g->max_tokens);
    if (!strcmp(flag, "-t") || !strcmp(flag, "--threads"))
        return cli_parse_int(flag, v, 0, 1024, &o->n_threads);
    if (!strcmp(flag, "-c") || !strcmp(flag, "--ctx")) return cli_parse_int(flag, v, 0, 1 << 20, &o->n_ctx);
    if (!strcmp(flag, "--device")) return o->device = v, 1; /* checked by the model loader */
    if (!strcmp(flag, "--temp")) return cli_parse_float(flag, v, 0.0f, 100.0f, &g->temperature);
    if (!strcmp(flag, "--top-k")) return cli_parse_int(flag, v, 0, INT_MAX, &g->top_k);
    if (!strcmp(flag, "--top-p")) return cli_parse_float(flag, v, 0.0f, 1.0f, &g->top_p);
    if (!strcmp(flag, "--min-p")) return cli_parse_float(flag, v, 0.0f, 1.0f, &g->min_p);
    if (!strcmp(flag, "--seed")) return cli_parse_seed(v, &g->seed);
    if (!strcmp(flag, "--draft")) return cli_parse_draft(v, &o->spec, &o->draft_path);
    if (!strcmp(flag, "--k")) return cli_parse_int(flag, v, 1, SD_SPEC_MAX_K, &o->spec.k);
    if (!strcmp(flag, "--tree")) return cli_parse_tree(v, &o->spec);
    if (!strcmp(flag, "--tree-sample")) return cli_parse_tree_sample(v, &o->spec.tree_sample);
    if (!strcmp(flag, "--logprobs")) {
        g->logprobs = 1;
        return cli_parse_int(flag, v, 0, SD_MAX_TOP_LOGPROBS, &g->top_logprobs);
    }
    if (!strcmp(flag, "--logprobs-file")) return o->logprobs_file = v, 1;
    if (!strcmp(flag, "--draft-ranks"))
        return cli_parse_int(flag, v, 1, 4096, &o->spec.draft_ranks);
    if (!strcmp(flag, "--trace")) return o->trace_path = v, 1;
    if (!strcmp(flag, "--stop")) {
        if (g->n_stop_strings == sizeof o->stops / sizeof o->stops[0]) {
            fprintf(stderr, "specdec: error: at most %zu --stop strings\n", g->n_stop_strings);
            return 0;
        }
        o->stops[g->n_stop_strings++] = v;
        return 1;
    }
    fprintf(stderr, "specdec: error: unknown option '%s' (see specdec --help)\n", flag);
    return 0;
}

int cli_parse_gen_opts(int argc, char **argv, int first, cli_gen_opts_t *o)
{
    memset(o, 0, sizeof *o);
    sd_gen_config_default(&o->gen);
    o->gen.max_tokens = 128;
    o->gen.stop_strings = o->stops;
    sd_spec_config_default(&o->spec);
    for (int i = first; i < argc; i++) {
        const char *flag = argv[i];
        if (!strcmp(flag, "--special")) { o->parse_special = 1; continue; }
        if (!strcmp(flag, "--ignore-eos")) { o->gen.ignore_eos = 1; continue; }
        if (!strcmp(flag, "--no-adaptive")) { o->spec.adaptive = 0; continue; }
        if (!strcmp(flag, "--stats")) { o->stats = 1; continue; }
        if (i + 1 >= argc) {
            fprintf(stderr, "specdec: error: option '%s' needs a value\n", flag);
            return 0;
        }
        if (!parse_one(flag, argv[++i], o)) return 0;
    }
    if (o->logprobs_file && !o->gen.logprobs) {
        fprintf(stderr, "specdec: error: --logprobs-file needs --logprobs N\n");
        return 0;
    }
    return 1;
}

sd_status_t cli_join_world(cli_gen_opts_t *o)
{
    const char *ws = getenv("SPECDEC_WORLD_SIZE");
    int launched = (ws && strcmp(ws, "1") != 0) || getenv("OMPI_COMM_WORLD_SIZE") ||
                   getenv("PMI_SIZE");
    if (!launched || o->world) return SD_OK;
    sd_status_t s = sd_comm_init_device(&o->world, o->device);
    if (s != SD_OK) return cli_fail("join the ranks", s), s;
    if (sd_comm_size(o->world) == 1) {
        sd_comm_free(o->world);
        o->world = NULL;
    }
    return SD_OK;
}

sd_status_t cli_load_model(cli_gen_opts_t *o, sd_model_t **out)
{
    SD_CLI_CHECK(cli_join_world(o));
    char path[4096];
    if (o->model_path) {
        snprintf(path, sizeof path, "%s", o->model_path);
    } else {
        const char *cache = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
        if (cache && cache[0]) snprintf(path, sizeof path, "%s/specdec", cache);
        else snprintf(path, sizeof path, "%s/.cache/specdec", home ? home : ".");
        strncat(path, "/SmolLM2-135M-Instruct.Q4_1.gguf", sizeof path - strlen(path) - 1);
        if (access(path, R_OK) != 0) {
            fprintf(stderr, "specdec: error: no -m given and the default model %s is missing; "
                            "fetch it with scripts/fetch-model.sh\n", path);
            return SD_ERR_IO;
        }
    }
    sd_model_params_t p;
    sd_model_params_default(&p);
    p.path = path;
    p.n_threads = o->n_threads;
    p.n_ctx = o->n_ctx;
    p.device = o->device;
    p.comm = o->world;
    sd_status_t s = sd_model_load(&p, out);
    if (s != SD_OK) cli_fail("load model", s);
    return s;
}

sd_status_t cli_load_draft(cli_gen_opts_t *o)
{
    if (o->draft_path == NULL) {
        if (o->spec.draft_ranks > 0) {
            fprintf(stderr, "specdec: error: --draft-ranks needs --draft PATH (a draft model)\n");
            return SD_ERR_INVALID_ARG;
        }
        return SD_OK;
    }
    int size = sd_comm_size(o->world), d = o->spec.draft_ranks;
    if (d > size) {
        fprintf(stderr, "specdec: error: --draft-ranks %d exceeds the %d ranks of this run\n", d,
                size);
        return SD_ERR_INVALID_ARG;
    }
    sd_model_params_t p;
    sd_model_params_default(&p);
    p.path = o->draft_path;
    p.n_threads = o->n_threads;
    p.n_ctx = o->n_ctx;
    p.device = o->device;
    p.comm = o->world; /* no --draft-ranks: the draft model is split like the target */
    if (d > 0 && size > 1) {
        sd_status_t s = d > 1 ? sd_comm_split_first(o->world, d, &o->draft_comm) : SD_OK;
        if (s != SD_OK) return cli_fail("form the draft group", s), s;
        if (sd_comm_rank(o->world) >= d) return SD_OK; /* drafts arrive by broadcast */
        p.comm = o->draft_comm;
    }
    sd_status_t s = sd_model_load(&p, &o->spec.draft_model);
    if (s != SD_OK) cli_fail("load draft model", s);
    return s;
}

int cli_start_trace(cli_gen_opts_t *o, const sd_model_t *m)
{
    if (!cli_trace_open(&o->trace, o->trace_path, sd_comm_rank(o->world))) return 0;
    char drafter[256] = "none";
    if (o->spec.drafter != SD_DRAFTER_NONE && sd_spec_drafter_text(&o->spec, m, drafter,
                                                                   sizeof drafter) != SD_OK)
        snprintf(drafter, sizeof drafter, "%s", sd_drafter_kind_name(o->spec.drafter));
    cli_trace_label(&o->trace, NULL, drafter, o->spec.drafter ? o->spec.k : 0, -1);
    cli_trace_attach(&o->trace, &o->spec);
    return 1;
}

int cli_stop_trace(cli_gen_opts_t *o, int rc)
{
    return !cli_trace_close(&o->trace) && rc == 0 ? CLI_EXIT_ERROR : rc;
}

void cli_release(cli_gen_opts_t *o)
{
    cli_trace_close(&o->trace);
    sd_model_free(o->spec.draft_model);
    o->spec.draft_model = NULL;
    sd_comm_free(o->draft_comm);
    sd_comm_free(o->world);
    o->draft_comm = o->world = NULL;
}

static int stream_to_stdout(void *user, int32_t token, const char *text, size_t len)
{
    (void)user, (void)token;
    if (len) {
        fwrite(text, 1, len, stdout);
        fflush(stdout);
    }
    return 0;
}

static void print_stats(const sd_gen_result_t *r)
{
    double pre = r->prefill_seconds > 0 ? r->n_prompt / r->prefill_seconds : 0;
    double dec = r->decode_seconds > 0 ? r->n_tokens / r->decode_seconds : 0;
    fprintf(stderr, "\nspecdec: prefill %zu tokens in %.3f s (%.1f tok/s); decode %zu tokens in "
                    "%.3f s (%.1f tok/s); stop: %s\n",
            r->n_prompt, r->prefill_seconds, pre, r->n_tokens, r->decode_seconds, dec,
            sd_stop_reason_string(r->stop_reason));
}

static void print_spec_stats(const cli_gen_opts_t *o, const sd_gen_stats_t *s)
{
    fprintf(stderr, "specdec: drafter %s, k %d%s: %llu steps, %llu tokens; drafted %llu, "
                    "accepted %llu, acceptance %.1f%%, mean accepted length %.2f tokens/step\n",
            sd_drafter_kind_name(o->spec.drafter), o->spec.drafter ? o->spec.k : 0,
            o->spec.drafter && o->spec.adaptive ? " (adaptive)" : "",
            (unsigned long long)s->steps, (unsigned long long)s->tokens_generated,
            (unsigned long long)s->drafted, (unsigned long long)s->accepted,
            100.0 * s->acceptance_rate, s->mean_accepted_len);
    fprintf(stderr, "specdec: target forwards %llu, draft forwards %llu; accepted per step:",
            (unsigned long long)s->target_forwards, (unsigned long long)s->draft_forwards);
    int top = SD_SPEC_MAX_K;
    while (top > 0 && s->accepted_hist[top] == 0) top--;
    for (int i = 0; i <= top; i++)
        fprintf(stderr, " %d:%llu", i, (unsigned long long)s->accepted_hist[i]);
    fprintf(stderr, "\nspecdec: decode time: draft %.3f s, verify %.3f s (of which the check %.3f s), other %.3f s\n",
            s->draft_seconds, s->verify_seconds, s->check_seconds, s->other_seconds);
}

/* s[len] as a JSON string: quotes, backslashes and control characters escaped, bytes that
 * are not UTF-8 written as U+FFFD. */
static void json_string(FILE *f, const char *s, size_t len)
{
    fputc('"', f);
    size_t adv;
    for (size_t i = 0; i < len; i += adv) {
        unsigned char c = (unsigned char)s[i];
        uint32_t cp = sd_utf8_decode((const uint8_t *)s + i, len - i, &adv);
        if (cp >= SD_UTF8_INVALID) fputs("\\ufffd", f);
        else if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fwrite(s + i, 1, adv, f);
    }
    fputc('"', f);
}

/* "id": t, "token": its text, "logprob": lp (-inf and below -9999 as -9999, like the server). */
static void json_token(FILE *f, const sd_model_t *m, int32_t t, float lp)
{
    char buf[256];
    size_t len = 0;
    if (sd_detokenize(m, &t, 1, buf, sizeof buf, &len) != SD_OK) len = 0;
    fprintf(f, "\"id\":%d,\"token\":", (int)t);
    json_string(f, buf, len);
    fprintf(f, ",\"logprob\":%.9g", lp > -9999.0f ? (double)lp : -9999.0);
}

/* --logprobs: one JSON line per generation, {"prompt_tokens", "tokens": [{"id", "token",
 * "logprob", "top_logprobs": [{"id", "token", "logprob"}]}]}, to the file or stderr. */
static int write_logprobs(const sd_model_t *m, const cli_gen_opts_t *o, const sd_gen_result_t *r)
{
    FILE *f = o->logprobs_file ? fopen(o->logprobs_file, "a") : stderr;
    if (!f) {
        fprintf(stderr, "specdec: error: --logprobs-file %s: cannot open it for writing\n",
                o->logprobs_file);
        return 1;
    }
    fprintf(f, "{\"prompt_tokens\":%zu,\"tokens\":[", r->n_prompt);
    for (size_t i = 0; i < r->n_tokens; i++) {
        fputs(i ? ",{" : "{", f);
        json_token(f, m, r->tokens[i], r->logprobs[i]);
        fputs(",\"top_logprobs\":[", f);
        for (int j = 0; j < r->n_top; j++) {
            fputs(j ? ",{" : "{", f);
            size_t at = i * (size_t)r->n_top + (size_t)j;
            json_token(f, m, r->top_tokens[at], r->top_logprobs[at]);
            fputc('}', f);
        }
        fputs("]}", f);
    }
    fputs("]}\n", f);
    int failed = ferror(f);
    if (o->logprobs_file) failed |= fclose(f) != 0;
    if (failed) fprintf(stderr, "specdec: error: writing the log-probabilities failed\n");
    return failed ? 1 : 0;
}

int cli_generate_text(sd_model_t *m, const char *text, int flags, const cli_gen_opts_t *o,
                      char **reply)
{
    size_t len = strlen(text), n = 0;
    size_t cap = len + 8;
    int32_t *ids = malloc(cap * sizeof *ids);
    if (!ids) return fprintf(stderr, "specdec: error: out of memory\n"), 1;
    sd_status_t s = sd_tokenize(m, text, len, flags, ids, cap, &n);
    int rc = s == SD_OK ? cli_generate_ids(m, ids, n, o, reply) : cli_fail("tokenize", s);
    free(ids);
    return rc;
}

int cli_generate_ids(sd_model_t *m, const int32_t *ids, size_t n, const cli_gen_opts_t *o,
                     char **reply)
{
    sd_gen_result_t r;
    /* every rank generates the same text; only rank 0 writes it (also under mpirun) */
    sd_token_callback out = sd_comm_rank(o->world) == 0 ? stream_to_stdout : NULL;
    sd_status_t s = sd_generate_speculative(m, ids, n, &o->gen, &o->spec, out, NULL, &r);
    if (s != SD_OK) {
        if (r.n_tokens) fprintf(stderr, "\nspecdec: generation failed after %zu tokens\n", r.n_tokens);
        sd_gen_result_free(&r);
        return cli_fail("generate", s);
    }
    if (out && isatty(STDOUT_FILENO)) putchar('\n');
    fflush(stdout);
    print_stats(&r);
    if (o->stats) print_spec_stats(o, &r.stats);
    int rc = o->gen.logprobs && out ? write_logprobs(m, o, &r) : 0;
    if (reply) *reply = strdup(r.text);
    sd_gen_result_free(&r);
    return rc;
}
