/* The drafter registry (draft/registry.h): every row is complete and its name and kind are
 * its own; the --draft parser (sd_spec_parse_drafter) gives each row's forms, its text
 * reads back as the same spec, and bad text is refused naming it and listing the
 * drafters; the rows' capabilities and hash words agree with the drafters they build; bare
 * "layerskip" runs n_layer / 2 layers of a synthetic 4-layer target. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "draft/registry.h"
#include "draft/seq_drafter.h"
#include "gguf/synthetic.h"
#include "model/model.h"
#include "support/test_util.h"

#define N_LAYER 4

/* A synthetic llama target with N_LAYER layers. */
static sd_model_t *load_target(void)
{
    sd_synth_spec_t s;
    sd_synth_spec_default(&s);
    s.n_layer = N_LAYER;
    s.n_ctx = 64;
    s.seed = 7;
    char path[512];
    sd_test_tmp_path(path, sizeof path, "registry");
    cr_assert_eq(sd_synth_write_file(&s, path), SD_OK, "synth: %s", sd_last_error());
    sd_model_params_t p;
    sd_model_params_default(&p);
    p.path = path;
    p.n_threads = 1;
    sd_model_t *m = NULL;
    sd_status_t st = sd_model_load(&p, &m);
    remove(path);
    cr_assert_eq(st, SD_OK, "load: %s", sd_last_error());
    return m;
}

static const sd_drafter_row_t *row_of(sd_drafter_kind_t kind)
{
    const sd_drafter_row_t *row = sd_drafter_row_for(kind);
    cr_assert_not_null(row, "no row for kind %d", (int)kind);
    return row;
}

/* ---- the table ----------------------------------------------------------------------- */

Test(draft_registry, rows_are_complete_and_unique, .timeout = 10)
{
    cr_assert_geq(sd_drafter_registry_len, 3);
    int any_text_rows = 0;
    for (int i = 0; i < sd_drafter_registry_len; i++) {
        const sd_drafter_row_t *r = &sd_drafter_registry[i];
        cr_assert(r->name && r->name[0] && !strchr(r->name, ':'), "row %d: name", i);
        cr_assert(r->usage && strstr(r->usage, r->name), "row %s: usage names it", r->name);
        cr_assert_neq(r->kind, SD_DRAFTER_NONE, "row %s: kind", r->name);
        cr_assert(r->parse && r->check && r->make && r->hash_words && r->text,
                  "row %s: parse, check, make, hash_words and text are all set", r->name);
        cr_assert_eq(sd_drafter_row_for(r->kind), r, "row %s: found by its kind", r->name);
        cr_assert_str_eq(sd_drafter_kind_name(r->kind), r->name);
        any_text_rows += r->takes_any_text;
        for (int j = 0; j < i; j++) {
            cr_assert_str_neq(sd_drafter_registry[j].name, r->name, "name %s twice", r->name);
            cr_assert_neq(sd_drafter_registry[j].kind, r->kind, "kind of %s twice", r->name);
        }
    }
    cr_assert_eq(any_text_rows, 1, "exactly one row takes text naming no drafter");
    cr_assert_null(sd_drafter_row_for(SD_DRAFTER_NONE));
    cr_assert_null(sd_drafter_row_for((sd_drafter_kind_t)99));
    cr_assert_str_eq(sd_drafter_kind_name(SD_DRAFTER_NONE), "none");
    cr_assert_null(sd_drafter_kind_name((sd_drafter_kind_t)99));
}

Test(draft_registry, usage_lists_every_row, .timeout = 10)
{
    char forms[256];
    sd_spec_drafter_usage(forms, sizeof forms);
    for (int i = 0; i < sd_drafter_registry_len; i++)
        cr_assert(strstr(forms, sd_drafter_registry[i].usage), "'%s' lacks %s", forms,
                  sd_drafter_registry[i].usage);
    char tiny[8];
    sd_spec_drafter_usage(tiny, sizeof tiny);
    cr_assert_eq(strlen(tiny), sizeof tiny - 1, "truncated to fit: '%s'", tiny);
}

/* ---- the parser ---------------------------------------------------------------------- */

typedef struct form {
    const char *text;
    sd_drafter_kind_t kind;
    int ngram_max, layers; /* the fields the text sets */
    const char *path;      /* *model_path, or NULL */
    const char *canonical; /* sd_spec_drafter_text without a target, or NULL (a model) */
} form_t;

static const form_t FORMS[] = {
    {"ngram", SD_DRAFTER_NGRAM, 3, 0, NULL, "ngram"},
    {"ngram:5", SD_DRAFTER_NGRAM, 5, 0, NULL, "ngram:5"},
    {"ngram:1", SD_DRAFTER_NGRAM, 1, 0, NULL, "ngram:1"},
    {"ngram:32", SD_DRAFTER_NGRAM, 32, 0, NULL, "ngram:32"},
    {"ngram:3", SD_DRAFTER_NGRAM, 3, 0, NULL, "ngram"},
    {"layerskip", SD_DRAFTER_LAYERSKIP, 3, 0, NULL, "layerskip"},
    {"layerskip:15", SD_DRAFTER_LAYERSKIP, 3, 15, NULL, "layerskip:15"},
    {"model:/tmp/d.gguf", SD_DRAFTER_MODEL, 3, 0, "/tmp/d.gguf", NULL},
    {"/tmp/d.gguf", SD_DRAFTER_MODEL, 3, 0, "/tmp/d.gguf", NULL},
    {"models/a:b.gguf", SD_DRAFTER_MODEL, 3, 0, "models/a:b.gguf", NULL},
    {"ngrams.gguf", SD_DRAFTER_MODEL, 3, 0, "ngrams.gguf", NULL},
    {"xvocab:/tmp/d.gguf", SD_DRAFTER_XVOCAB, 3, 0, "/tmp/d.gguf", NULL},
    {"callback", SD_DRAFTER_CALLBACK, 3, 0, NULL, "callback"},
};
#define N_FORMS (sizeof FORMS / sizeof FORMS[0])

static sd_spec_config_t parse_ok(const char *text, const char **path)
{
    sd_spec_config_t s;
    sd_spec_config_default(&s);
    *path = "unset";
    sd_status_t st = sd_spec_parse_drafter(text, &s, path);
    cr_assert_eq(st, SD_OK, "'%s': %s", text, sd_last_error());
    return s;
}

Test(draft_registry, parser_gives_each_form_and_its_text_reads_back, .timeout = 10)
{
    for (size_t i = 0; i < N_FORMS; i++) {
        const form_t *f = &FORMS[i];
        const char *path;
        sd_spec_config_t s = parse_ok(f->text, &path);
        cr_assert_eq(s.drafter, f->kind, "'%s'", f->text);
        cr_assert_eq(s.ngram_min, 1, "'%s'", f->text);
        cr_assert_eq(s.ngram_max, f->ngram_max, "'%s'", f->text);
        cr_assert_eq(s.layerskip_layers, f->layers, "'%s'", f->text);
        if (f->path) cr_assert_str_eq(path, f->path, "'%s'", f->text);
        else cr_assert_null(path, "'%s'", f->text);
        sd_spec_config_t d;
        sd_spec_config_default(&d);
        cr_assert(s.k == d.k && s.adaptive == d.adaptive && s.draft_model == NULL,
                  "'%s' sets only the drafter's fields", f->text);
        /* a model is not loaded yet; a callback drafter's callbacks are not given */
        sd_status_t want = f->path || f->kind == SD_DRAFTER_CALLBACK ? SD_ERR_INVALID_ARG : SD_OK;
        cr_assert_eq(sd_drafter_row_for(s.drafter)->check(&s), want, "'%s': %s", f->text,
                     sd_last_error());
        char text[64];
        cr_assert_eq(sd_spec_drafter_text(&s, NULL, text, sizeof text), SD_OK, "%s", sd_last_error());
        if (f->canonical == NULL) {
            cr_assert_str_eq(text, sd_drafter_row_for(s.drafter)->name);
            continue;
        }
        cr_assert_str_eq(text, f->canonical, "'%s'", f->text);
        sd_spec_config_t back = parse_ok(text, &path);
        cr_assert(back.drafter == s.drafter && back.ngram_min == s.ngram_min &&
                  back.ngram_max == s.ngram_max && back.layerskip_layers == s.layerskip_layers,
                  "'%s' -> '%s' reads back as another spec", f->text, text);
    }
    for (int r = 0; r < sd_drafter_registry_len; r++) { /* a new row needs forms above */
        size_t i = 0;
        while (i < N_FORMS && FORMS[i].kind != sd_drafter_registry[r].kind) i++;
        cr_assert_lt(i, N_FORMS, "row %s has no form in FORMS", sd_drafter_registry[r].name);
    }
    sd_spec_config_t s;
    sd_spec_config_default(&s);
    cr_assert_eq(sd_spec_parse_drafter("ngram:4", &s, NULL), SD_OK, "model_path may be NULL");
    cr_assert_eq(s.ngram_max, 4);
}

Test(draft_registry, parser_refuses_bad_text_naming_it, .timeout = 10)
{
    static const char *const bad[] = {"", "ngram:0", "ngram:33", "ngram:x", "ngram:", "ngram:4x",
                                      "layerskip:x", "layerskip:0", "layerskip:-2", "layerskip:",
                                      "model:", "model", "xvocab", "xvocab:", "callback:x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sd_spec_config_t s, before;
        sd_spec_config_default(&s);
        s.drafter = SD_DRAFTER_NGRAM;
        s.ngram_max = 7;
        before = s;
        const char *path = "unset";
        cr_assert_eq(sd_spec_parse_drafter(bad[i], &s, &path), SD_ERR_INVALID_ARG, "'%s'", bad[i]);
        char quoted[64];
        snprintf(quoted, sizeof quoted, "'%s'", bad[i]);
        const char *msg = sd_last_error();
        cr_assert(strstr(msg, quoted), "the message names %s: %s", quoted, msg);
        for (int r = 0; r < sd_drafter_registry_len; r++)
            cr_assert(strstr(msg, sd_drafter_registry[r].usage), "'%s': no %s in: %s", bad[i],
                      sd_drafter_registry[r].usage, msg);
        cr_assert(memcmp(&s, &before, sizeof s) == 0, "'%s' changed the spec", bad[i]);
        cr_assert_str_eq(path, "unset", "'%s' set the model path", bad[i]);
    }
    sd_spec_config_t s;
    cr_assert_eq(sd_spec_parse_drafter(NULL, &s, NULL), SD_ERR_INVALID_ARG);
    cr_assert_eq(sd_spec_parse_drafter("ngram", NULL, NULL), SD_ERR_INVALID_ARG);
}

/* ---- rows against the drafters they build ------------------------------------------- */

Test(draft_registry, bare_layerskip_runs_half_the_layers, .timeout = 60)
{
    sd_model_t *target = load_target();
    const char *path;
    sd_spec_config_t s = parse_ok("layerskip", &path);
    const sd_drafter_row_t *row = row_of(s.drafter);
    sd_drafter_t *d = NULL;
    cr_assert_eq(row->make(target, &s, &d), SD_OK, "%s", sd_last_error());
    cr_assert_eq(sd_seq_drafter_seq(d)->kv.n_layer, N_LAYER / 2, "the cache of L = n_layer / 2");
    sd_drafter_free(d);
    int n_layers = -1;
    cr_assert_eq(row->batch_model(target, &s, &n_layers), target);
    cr_assert_eq(n_layers, N_LAYER / 2, "the batched draft forward runs the same L");
    char text[64];
    cr_assert_eq(sd_spec_drafter_text(&s, target, text, sizeof text), SD_OK, "%s", sd_last_error());
    cr_assert_str_eq(text, "layerskip:2");

    s.layerskip_layers = N_LAYER; /* L must stay below the target's layers */
    cr_assert_eq(sd_spec_drafter_text(&s, target, text, sizeof text), SD_ERR_INVALID_ARG);
    cr_assert(strstr(sd_last_error(), "L = 4") && strstr(sd_last_error(), "n_layer = 4"), "%s",
              sd_last_error());
    cr_assert_eq(row->make(target, &s, &d), SD_ERR_INVALID_ARG);
    s.layerskip_layers = -1;
    cr_assert_eq(row->check(&s), SD_ERR_INVALID_ARG);
    cr_assert(strstr(sd_last_error(), "layerskip_layers = -1"), "%s", sd_last_error());
    sd_model_free(target);
}

static sd_status_t propose_nothing(void *state, const sd_draft_query_t *q, sd_draft_proposal_t *out)
{
    return SD_OK;
}

/* Each row's drafter, built over target (a draft model: the target itself; a callback
 * drafter proposing nothing), proposes cheaply and runs a model exactly as the row says. */
Test(draft_registry, capabilities_match_the_drafters, .timeout = 60)
{
    sd_model_t *target = load_target();
    const int32_t ctx[] = {5, 6, 7, 5, 6, 7, 5, 6};
    for (int i = 0; i < sd_drafter_registry_len; i++) {
        const sd_drafter_row_t *row = &sd_drafter_registry[i];
        sd_spec_config_t s;
        sd_spec_config_default(&s);
        s.drafter = row->kind;
        s.draft_model = target;
        const sd_callback_drafter_t cb = {.propose = propose_nothing};
        s.callback = &cb;
        cr_assert_eq(row->check(&s), SD_OK, "%s: %s", row->name, sd_last_error());
        sd_drafter_t *d = NULL;
        cr_assert_eq(row->make(target, &s, &d), SD_OK, "%s: %s", row->name, sd_last_error());
        cr_assert_str_eq(sd_drafter_name(d), row->name);
        cr_assert_eq(sd_drafter_proposes_cheaply(d), row->proposes_cheaply, "%s", row->name);
        cr_assert_eq(sd_drafter_begin(d, ctx, 8), SD_OK, "%s", sd_last_error());
        int32_t tokens[2];
        sd_sampler_params_t greedy = {.temperature = 0.0f, .top_p = 1.0f};
        sd_draft_request_t req = {.k = 2, .params = &greedy, .pos0 = 8};
        sd_draft_out_t out = {.tokens = tokens};
        cr_assert_eq(sd_drafter_propose(d, &req, &out), SD_OK, "%s", sd_last_error());
        int runs_model = sd_drafter_forwards(d) > 0;
        cr_assert_eq(runs_model, row->batch_model != NULL, "%s: %llu forwards", row->name,
                     (unsigned long long)sd_drafter_forwards(d));
        cr_assert_eq(sd_drafter_has_rounds(d), runs_model, "%s", row->name);
        if (row->batch_model) {
            int n_layers = -1;
            const sd_model_t *m = row->batch_model(target, &s, &n_layers);
            cr_assert(m == target && n_layers >= 0 && n_layers < N_LAYER, "%s: %d layers",
                      row->name, n_layers);
        }
        sd_drafter_free(d);
    }
    cr_assert_eq(sd_drafter_forwards(NULL), 0);
    sd_spec_config_t s;
    sd_spec_config_default(&s);
    s.drafter = SD_DRAFTER_MODEL;
    s.draft_model = target;
    s.draft_ranks = 1; /* a draft group proposes per request: no batched draft model */
    int n_layers;
    cr_assert_null(row_of(SD_DRAFTER_MODEL)->batch_model(target, &s, &n_layers));
    s.draft_model = NULL;
    s.draft_ranks = 0;
    cr_assert_eq(row_of(SD_DRAFTER_MODEL)->check(&s), SD_ERR_INVALID_ARG, "no draft model");
    sd_model_free(target);
}

/* Words of spec's row, into w; returns the count. */
static int words_of(const char *text, int draft_ranks, int32_t w[SD_DRAFTER_HASH_WORDS])
{
    const char *path;
    sd_spec_config_t s = parse_ok(text, &path);
    s.draft_ranks = draft_ranks;
    memset(w, 0, SD_DRAFTER_HASH_WORDS * sizeof *w);
    int n = row_of(s.drafter)->hash_words(&s, w);
    cr_assert(n >= 1 && n <= SD_DRAFTER_HASH_WORDS, "'%s': %d words", text, n);
    return n;
}

/* Two specs of one drafter that differ in its fields hash differently. */
Test(draft_registry, hash_words_tell_the_fields_apart, .timeout = 10)
{
    static const struct { const char *a, *b; int ranks_a, ranks_b; } pairs[] = {
        {"ngram:4", "ngram:5", 0, 0},
        {"layerskip:3", "layerskip", 0, 0},
        {"d.gguf", "d.gguf", 0, 2},
    };
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        int32_t wa[SD_DRAFTER_HASH_WORDS], wb[SD_DRAFTER_HASH_WORDS];
        int na = words_of(pairs[i].a, pairs[i].ranks_a, wa);
        int nb = words_of(pairs[i].b, pairs[i].ranks_b, wb);
        cr_assert(na != nb || memcmp(wa, wb, (size_t)na * sizeof *wa) != 0,
                  "'%s' and '%s' (draft_ranks %d, %d) give the same words", pairs[i].a,
                  pairs[i].b, pairs[i].ranks_a, pairs[i].ranks_b);
    }
}
