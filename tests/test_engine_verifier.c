/* The step loop's verification through the verify kernel (SPECDEC_VERIFY=kernel; on a CPU
 * model the kernel's host emulation, the same code the GPU runs) gives exactly the tokens
 * of host verification: greedy and sampling, every drafter, with and without the drafter's
 * distributions q. Needs a build with CUDA compiled in (no GPU). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/forward.h"
#include "model/model.h"
#include "gguf/synthetic.h"
#include "engine/verifier.h"
#include "kernels/cuda.h"
#include "support/test_util.h"

static sd_model_t *synth(uint64_t seed, int n_vocab)
{
    sd_synth_spec_t s;
    sd_synth_spec_default(&s);
    s.n_layer = 3;
    s.n_vocab = n_vocab;
    s.seed = seed;
    s.weight_scale = 0.2f; /* peaked enough that drafts are sometimes accepted */
    char path[512];
    sd_test_tmp_path(path, sizeof path, "verifier");
    cr_assert_eq(sd_synth_write_file(&s, path), SD_OK, "%s", sd_last_error());
    sd_model_params_t p;
    sd_model_params_default(&p);
    p.path = path;
    p.n_threads = 1;
    p.n_ctx = 256;
    p.device = "cpu";
    sd_model_t *m = NULL;
    cr_assert_eq(sd_model_load(&p, &m), SD_OK, "%s", sd_last_error());
    remove(path);
    return m;
}

static void need_kernel(void)
{
    if (!sd_cuda_built()) cr_skip_test("built without CUDA: no verify kernel to emulate");
}

/* Tokens of one generation under SPECDEC_VERIFY=mode. */
static sd_gen_result_t run_with(const char *mode, sd_model_t *m, const sd_gen_config_t *c,
                                const sd_spec_config_t *spec)
{
    setenv("SPECDEC_VERIFY", mode, 1);
    int32_t prompt[16];
    for (int i = 0; i < 16; i++) prompt[i] = (int32_t)((i * 37 + 11) % 64 + (i >= 8 ? 0 : 5));
    sd_gen_result_t r;
    sd_status_t st = sd_generate_speculative(m, prompt, 16, c, spec, NULL, NULL, &r);
    cr_assert_eq(st, SD_OK, "%s: %s: %s", mode, sd_status_string(st), sd_last_error());
    unsetenv("SPECDEC_VERIFY");
    return r;
}

typedef struct sampling {
    float temperature, top_p, min_p;
    int top_k;
} sampling_t;

Test(engine_verifier, kernel_tokens_equal_host_tokens, .timeout = 300)
{
    need_kernel();
    sd_model_t *target = synth(5, 320), *draft = synth(6, 320);
    const sampling_t samplings[] = {{0.0f, 1.0f, 0.0f, 0}, {1.0f, 1.0f, 0.0f, 0},
                                    {0.7f, 0.9f, 0.0f, 0}, {1.0f, 0.95f, 0.05f, 20}};
    const sd_drafter_kind_t drafters[] = {SD_DRAFTER_NONE, SD_DRAFTER_NGRAM, SD_DRAFTER_LAYERSKIP,
                                          SD_DRAFTER_MODEL};
    uint64_t accepted = 0, rejected = 0;
    for (size_t si = 0; si < sizeof samplings / sizeof samplings[0]; si++) {
        for (size_t di = 0; di < sizeof drafters / sizeof drafters[0]; di++) {
            sd_gen_config_t c;
            sd_gen_config_default(&c);
            c.max_tokens = 40;
            c.ignore_eos = 1;
            c.temperature = samplings[si].temperature;
            c.top_p = samplings[si].top_p;
            c.min_p = samplings[si].min_p;
            c.top_k = samplings[si].top_k;
            c.seed = 1000 + si;
            sd_spec_config_t spec;
            sd_spec_config_default(&spec);
            spec.drafter = drafters[di];
            spec.draft_model = draft;
            spec.layerskip_layers = 1;
            spec.k = 4;
            sd_gen_result_t h = run_with("host", target, &c, &spec);
            sd_gen_result_t k = run_with("kernel", target, &c, &spec);
            cr_assert_eq(k.n_tokens, h.n_tokens, "sampling %zu drafter %d", si, drafters[di]);
            cr_assert(memcmp(k.tokens, h.tokens, h.n_tokens * sizeof(int32_t)) == 0,
                      "sampling %zu drafter %d: kernel and host tokens differ", si, drafters[di]);
            cr_assert_eq(k.stats.accepted, h.stats.accepted, "sampling %zu drafter %d", si,
                         drafters[di]);
            accepted += k.stats.accepted;
            rejected += k.stats.drafted - k.stats.accepted;
            sd_gen_result_free(&h);
            sd_gen_result_free(&k);
        }
    }
    /* the comparison means something only if both outcomes happened */
    cr_assert_gt(accepted, 0);
    cr_assert_gt(rejected, 0);
    sd_model_free(draft);
    sd_model_free(target);
}

Test(engine_verifier, kernel_mode_keeps_logits_where_the_forward_left_them, .timeout = 60)
{
    need_kernel();
    sd_model_t *m = synth(7, 320);
    sd_seq_t seq;
    cr_assert_eq(sd_seq_init(&seq, m, 64, 5), SD_OK, "%s", sd_last_error());
    sd_verifier_t v;
    setenv("SPECDEC_VERIFY", "kernel", 1);
    cr_assert_eq(sd_verifier_init(&v, m, &seq, 4, 1, 0), SD_OK, "%s", sd_last_error());
    cr_assert_not_null(v.kernel);
    cr_assert_not_null(v.q_dev);
    cr_assert_eq(seq.keep_logits_on_device, 1);
    sd_verifier_free(&v);
    sd_seq_free(&seq);
    sd_model_free(m);
}

Test(engine_verifier, host_is_the_default_on_the_cpu_and_bad_modes_are_named, .timeout = 60)
{
    sd_model_t *m = synth(8, 320);
    sd_seq_t seq;
    cr_assert_eq(sd_seq_init(&seq, m, 64, 5), SD_OK, "%s", sd_last_error());
    sd_verifier_t v;
    unsetenv("SPECDEC_VERIFY");
    cr_assert_eq(sd_verifier_init(&v, m, &seq, 4, 1, 0), SD_OK, "%s", sd_last_error());
    cr_assert_null(v.kernel);
    cr_assert_eq(seq.keep_logits_on_device, 0);
    sd_verifier_free(&v);
    setenv("SPECDEC_VERIFY", "gpu", 1);
    cr_assert_eq(sd_verifier_init(&v, m, &seq, 4, 1, 0), SD_ERR_INVALID_ARG);
    cr_assert(strstr(sd_last_error(), "SPECDEC_VERIFY='gpu'") != NULL, "%s", sd_last_error());
    sd_seq_free(&seq);
    sd_model_free(m);
}
