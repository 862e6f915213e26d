/* The --trace writer (apps/cli/trace.h). */
#include <errno.h>
#include <string.h>

#include "trace.h"

void cli_json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
        else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}

int cli_trace_open(cli_trace_t *t, const char *path, int rank)
{
    memset(t, 0, sizeof *t);
    t->gen = -1;
    t->path = path;
    if (path == NULL || rank != 0) return 1;
    t->f = fopen(path, "w");
    if (t->f == NULL) {
        fprintf(stderr, "specdec: error: --trace %s: %s\n", path, strerror(errno));
        return 0;
    }
    return 1;
}

static void write_step(void *user, const sd_step_info_t *s)
{
    cli_trace_t *t = user;
    if (s->step == 0) t->gen++;
    fprintf(t->f, "{%s\"gen\":%lld,\"request\":%llu,\"step\":%llu,\"pos\":%lld,\"k\":%d,"
                  "\"drafted\":[", t->run, (long long)t->gen, (unsigned long long)s->request,
            (unsigned long long)s->step, (long long)s->pos, s->k);
    for (int i = 0; i < s->n_drafted; i++) fprintf(t->f, "%s%d", i ? "," : "", s->drafted[i]);
    fprintf(t->f, "],\"accepted\":%d,\"next\":%d,\"evidence\":%d,\"draft_ms\":%.4f,"
                  "\"verify_ms\":%.4f}\n", s->n_accepted, s->next_token, s->evidence,
            1e3 * s->draft_seconds, 1e3 * s->verify_seconds);
}

void cli_trace_attach(cli_trace_t *t, sd_spec_config_t *spec)
{
    if (t->f == NULL) return;
    spec->on_step = write_step;
    spec->on_step_user = t;
}

void cli_trace_label(cli_trace_t *t, const char *prompt, const char *drafter, int k, int repeat)
{
    if (t->f == NULL) return;
    /* the members through a memory stream, escaped like the rest */
    FILE *m = fmemopen(t->run, sizeof t->run - 1, "w");
    if (m == NULL) return;
    if (prompt) fputs("\"prompt\":", m), cli_json_str(m, prompt), fputc(',', m);
    fputs("\"drafter\":", m), cli_json_str(m, drafter), fputc(',', m);
    fprintf(m, "\"k_max\":%d,", k);
    if (repeat >= 0) fprintf(m, "\"repeat\":%d,", repeat);
    long n = ftell(m);
    fclose(m);
    t->run[n > 0 && n < (long)sizeof t->run - 1 ? n : 0] = '\0'; /* never a cut member */
}

int cli_trace_close(cli_trace_t *t)
{
    if (t->f == NULL) return 1;
    int bad = ferror(t->f);
    bad |= fclose(t->f) != 0;
    t->f = NULL;
    if (bad) fprintf(stderr, "specdec: error: --trace %s: writing failed\n", t->path);
    return !bad;
}
