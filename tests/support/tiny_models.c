/* Tiny synthetic models for the lossless-sampling tests (tiny_models.h). */
#include "support/tiny_models.h"

#include <criterion/criterion.h>
#include <stdio.h>

#include "gguf/synthetic.h"
#include "model/forward.h"
#include "model/model.h"
#include "support/test_util.h"
#include "verify/sampler.h"

#define V SD_TINY_VOCAB

sd_model_t *sd_tiny_model(uint64_t seed, float scale, int n_threads)
{
    sd_synth_spec_t s;
    sd_synth_spec_default(&s);
    s.tokenizer = SD_SYNTH_TOKENIZER_NONE;
    s.n_vocab = V;
    s.n_layer = 1;
    s.n_embd = 32;
    s.n_ff = 64;
    s.seed = seed;
    s.weight_scale = scale;
    char path[512];
    sd_test_tmp_path(path, sizeof path, "tiny");
    cr_assert_eq(sd_synth_write_file(&s, path), SD_OK, "%s", sd_last_error());
    sd_model_params_t p;
    sd_model_params_default(&p);
    p.path = path;
    p.n_threads = n_threads;
    p.n_ctx = 64;
    sd_model_t *m = NULL;
    cr_assert_eq(sd_model_load(&p, &m), SD_OK, "load %s: %s", path, sd_last_error());
    remove(path);
    return m;
}

/* probs[V] of the token after the sequence's current context and token. */
static void next_probs(sd_seq_t *s, int32_t token, const sd_sampler_params_t *sp,
                       sd_sampler_scratch_t *scr, double *out)
{
    float probs[V];
    cr_assert_eq(sd_forward(s, &token, 1, 0), SD_OK, "%s", sd_last_error());
    sd_sampler_probs(sp, s->logits, V, scr, probs);
    for (int i = 0; i < V; i++)
        out[i] = probs[i];
}

void sd_tiny_joint(sd_model_t *m, const sd_gen_config_t *c, const int32_t *prompt, int n,
                   double *joint)
{
    sd_sampler_params_t sp = {c->temperature, c->top_k, c->top_p, c->min_p};
    sd_sampler_scratch_t scr;
    cr_assert_eq(sd_sampler_scratch_init(&scr, V), SD_OK);
    sd_seq_t s;
    cr_assert_eq(sd_seq_init(&s, m, 16, 8), SD_OK);
    cr_assert_eq(sd_forward(&s, prompt, n - 1, 0), SD_OK);
    double p1[V], p2[V], p3[V];
    next_probs(&s, prompt[n - 1], &sp, &scr, p1);
    for (int a = 0; a < V; a++) {
        next_probs(&s, a, &sp, &scr, p2);
        for (int b = 0; b < V; b++) {
            next_probs(&s, b, &sp, &scr, p3);
            for (int d = 0; d < V; d++)
                joint[(a * V + b) * V + d] = p1[a] * p2[b] * p3[d];
            cr_assert_eq(sd_kv_cache_truncate(&s.kv, n + 1), SD_OK);
        }
        cr_assert_eq(sd_kv_cache_truncate(&s.kv, n), SD_OK);
    }
    sd_seq_free(&s);
    sd_sampler_scratch_free(&scr);
}
