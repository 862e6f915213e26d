/* The serving engine on the GPU: the batched forward of several sequences gives each the
 * logits of its own CUDA forward bit for bit, 8 concurrent requests through the engine
 * (continuous batching, n-gram and layer-skip drafts, greedy and sampled) equal each
 * request run alone on the GPU, and so do generations called from several threads at once
 * on one CUDA model. Skips without a device (tests/test_engine_scheduler.c and
 * tests/test_model_forward_batch.c run the same checks on the CPU in every build). */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/forward.h"
#include "model/model.h"
#include "gguf/synthetic.h"
#include "kernels/cuda.h"
#include "support/test_util.h"

#define N_REQ 8

/* Requests and their tokens: on a GPU, and in the CUDA host mode (kernels on the CPU) under
 * `slow`; the host mode's default run takes fewer. */
static int n_req(void) { return sd_test_long_shapes(sd_cuda_host_mode()) ? N_REQ : 4; }
static int n_tokens(void) { return sd_test_long_shapes(sd_cuda_host_mode()) ? 24 : 12; }

static void need_gpu(void)
{
    int n = 0;
    if (!sd_cuda_built()) cr_skip_test("built without CUDA");
    if (sd_cuda_device_count(&n) != SD_OK || n == 0) cr_skip_test("no CUDA device on this machine");
}

static sd_model_t *load_cuda_synth(void)
{
    sd_synth_spec_t s;
    sd_synth_spec_default(&s);
    s.n_layer = sd_test_long_shapes(sd_cuda_host_mode()) ? 3 : 2;
    s.n_embd = 256;
    s.n_ff = sd_test_long_shapes(sd_cuda_host_mode()) ? 512 : 256;
    s.n_ctx = 512;
    s.weight_type = SD_DTYPE_Q4_1;
    s.weight_scale = 0.08f;
    char path[512];
    sd_test_tmp_path(path, sizeof path, "cudaserve");
    cr_assert_eq(sd_synth_write_file(&s, path), SD_OK, "%s", sd_last_error());
    sd_model_params_t p;
    sd_model_params_default(&p);
    p.path = path;
    p.n_ctx = 256;
    p.device = "cuda";
    sd_model_t *m = NULL;
    sd_status_t st = sd_model_load(&p, &m);
    cr_assert_eq(st, SD_OK, "load on cuda: %s", sd_last_error());
    remove(path);
    return m;
}

Test(cuda_serving, batched_forward_equals_each_sequence_alone, .timeout = 300)
{
    need_gpu();
    sd_model_t *m = load_cuda_synth();
    int V = m->hp.n_vocab;
    int32_t t[3][20];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 20; j++) t[i][j] = (int32_t)((j * 13 + i * 7) % V);
    sd_seq_t bs[3], alone[3];
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(sd_seq_init(&bs[i], m, 64, 8), SD_OK, "%s", sd_last_error());
        cr_assert_eq(sd_seq_init(&alone[i], m, 64, 16), SD_OK, "%s", sd_last_error());
        alone[i].use_graphs = 0;
    }
    sd_batch_t b;
    cr_assert_eq(sd_batch_init(&b, m, 32, 4), SD_OK, "%s", sd_last_error());
    int n[3] = {5, 1, 12};
    sd_batch_part_t parts[3] = {{&bs[0], t[0], n[0], 1, NULL}, {&bs[1], t[1], n[1], 1, NULL},
                                {&bs[2], t[2], n[2], 0, NULL}};
    cr_assert_eq(sd_forward_batch(&b, parts, 3), SD_OK, "%s", sd_last_error());
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(sd_forward(&alone[i], t[i], n[i], 0), SD_OK, "%s", sd_last_error());
        cr_assert(memcmp(bs[i].logits, alone[i].logits, (size_t)n[i] * V * sizeof(float)) == 0,
                  "part %d: batched CUDA logits differ from its own CUDA forward", i);
    }
    sd_batch_free(&b);
    for (int i = 0; i < 3; i++) {
        sd_seq_free(&bs[i]);
        sd_seq_free(&alone[i]);
    }
    sd_model_free(m);
}

typedef struct client {
    sd_engine_t *engine;
    sd_model_t *model;          /* client_generate: sd_generate_speculative on it */
    const sd_spec_config_t *spec;
    int32_t prompt[32];
    size_t n_prompt;
    sd_gen_config_t config;
    sd_gen_result_t result;
    sd_status_t status;
} client_t;

static void make_client(client_t *c, int i)
{
    memset(c, 0, sizeof *c);
    c->n_prompt = 10 + (size_t)i;
    for (size_t t = 0; t < c->n_prompt; t++) c->prompt[t] = (int32_t)(40 + (t * 3) % (5 + (size_t)i));
    sd_gen_config_default(&c->config);
    c->config.max_tokens = n_tokens();
    c->config.seed = 300 + (uint64_t)i;
    c->config.temperature = i % 2 ? 0.9f : 0.0f;
    c->config.ignore_eos = 1;
}

static void *client_main(void *arg)
{
    client_t *c = arg;
    sd_request_t *r = NULL;
    c->status = sd_engine_submit(c->engine, c->prompt, c->n_prompt, &c->config, NULL, NULL, &r);
    if (c->status == SD_OK) c->status = sd_request_wait(r, -1, &c->result);
    sd_request_free(r);
    return NULL;
}

static void *client_generate(void *arg)
{
    client_t *c = arg;
    c->status = sd_generate_speculative(c->model, c->prompt, c->n_prompt, &c->config, c->spec,
                                        NULL, NULL, &c->result);
    return NULL;
}

static void check_engine_equals_alone(sd_model_t *m, const sd_spec_config_t *spec)
{
    client_t alone[N_REQ], c[N_REQ];
    for (int i = 0; i < n_req(); i++) {
        make_client(&alone[i], i);
        cr_assert_eq(sd_generate_speculative(m, alone[i].prompt, alone[i].n_prompt,
                                             &alone[i].config, spec, NULL, NULL, &alone[i].result),
                     SD_OK, "alone %d: %s", i, sd_last_error());
    }
    sd_engine_params_t p;
    sd_engine_params_default(&p);
    p.model = m;
    p.spec = *spec;
    p.max_active = n_req();
    p.load_aware_drafts = 0; /* same drafts as alone */
    sd_engine_t *e = NULL;
    cr_assert_eq(sd_engine_create(&p, &e), SD_OK, "%s", sd_last_error());
    pthread_t th[N_REQ];
    for (int i = 0; i < n_req(); i++) {
        make_client(&c[i], i);
        c[i].engine = e;
        pthread_create(&th[i], NULL, client_main, &c[i]);
    }
    for (int i = 0; i < n_req(); i++) pthread_join(th[i], NULL);
    for (int i = 0; i < n_req(); i++) {
        cr_assert_eq(c[i].status, SD_OK, "client %d: %s", i, sd_status_string(c[i].status));
        cr_assert_eq(c[i].result.n_tokens, alone[i].result.n_tokens, "client %d", i);
        cr_assert(memcmp(c[i].result.tokens, alone[i].result.tokens,
                         c[i].result.n_tokens * sizeof(int32_t)) == 0,
                  "client %d: tokens differ from the request alone on the GPU", i);
        cr_assert_eq(c[i].result.stats.accepted, alone[i].result.stats.accepted, "client %d", i);
        sd_gen_result_free(&c[i].result);
        sd_gen_result_free(&alone[i].result);
    }
    sd_engine_free(e);
}

/* Generations called from several threads at once on one CUDA model (each its own sequence
 * and scratch, one backend: its stream, workspace, first error and graph captures) give
 * each request's tokens alone, greedy and sampled, with layer-skip drafts on the same model. */
Test(cuda_serving, concurrent_generate_calls_equal_each_alone, .timeout = 600)
{
    need_gpu();
    enum { CLIENTS = 4 };
    sd_model_t *m = load_cuda_synth();
    sd_spec_config_t spec;
    sd_spec_config_default(&spec);
    spec.drafter = SD_DRAFTER_LAYERSKIP;
    spec.layerskip_layers = 1;
    spec.k = 3;
    client_t alone[CLIENTS], c[CLIENTS];
    pthread_t th[CLIENTS];
    for (int i = 0; i < CLIENTS; i++) {
        make_client(&alone[i], i);
        alone[i].model = m;
        alone[i].spec = &spec;
        client_generate(&alone[i]);
        cr_assert_eq(alone[i].status, SD_OK, "alone %d: %s", i, sd_last_error());
        c[i] = alone[i];
        memset(&c[i].result, 0, sizeof c[i].result);
    }
    for (int i = 0; i < CLIENTS; i++) pthread_create(&th[i], NULL, client_generate, &c[i]);
    for (int i = 0; i < CLIENTS; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < CLIENTS; i++) {
        cr_assert_eq(c[i].status, SD_OK, "client %d: %s", i, sd_status_string(c[i].status));
        cr_assert_eq(c[i].result.n_tokens, alone[i].result.n_tokens, "client %d", i);
        cr_assert(memcmp(c[i].result.tokens, alone[i].result.tokens,
                         c[i].result.n_tokens * sizeof(int32_t)) == 0,
                  "client %d: tokens differ from the same call alone", i);
        sd_gen_result_free(&c[i].result);
        sd_gen_result_free(&alone[i].result);
    }
    sd_model_free(m);
}

Test(cuda_serving, concurrent_requests_equal_alone, .timeout = 600)
{
    need_gpu();
    sd_model_t *m = load_cuda_synth();
    sd_spec_config_t s;
    sd_spec_config_default(&s);
    s.drafter = SD_DRAFTER_NGRAM;
    s.k = 4;
    check_engine_equals_alone(m, &s);
    s.drafter = SD_DRAFTER_LAYERSKIP;
    s.layerskip_layers = 1;
    s.k = 3;
    check_engine_equals_alone(m, &s);
    sd_model_free(m);
}
