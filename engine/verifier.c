/* The step's verification, on the host or with the verify kernel (engine/verifier.h). */
#include "verifier.h"

#include <stdlib.h>
#include <string.h>

#include "core/check.h"

/* 1: the verify kernel, 0: the host; SD_ERR_INVALID_ARG for an unknown SPECDEC_VERIFY. */
static sd_status_t use_kernel(const sd_model_t *m, int *out)
{
    const char *v = getenv("SPECDEC_VERIFY");
    if (v == NULL || v[0] == '\0' || strcmp(v, "auto") == 0)
        return *out = !sd_backend_host_memory(m->backend), SD_OK;
    if (strcmp(v, "host") == 0) return *out = 0, SD_OK;
    if (strcmp(v, "kernel") == 0) return *out = 1, SD_OK;
    return sd_set_error(SD_ERR_INVALID_ARG, "SPECDEC_VERIFY='%s' (expected auto, host or kernel)",
                        v);
}

sd_status_t sd_verifier_init(sd_verifier_t *v, const sd_model_t *m, sd_seq_t *seq, int k_max,
                             int need_q, int host_only)
{
    memset(v, 0, sizeof *v);
    v->model = m;
    int kernel = 0;
    SD_CHECK(use_kernel(m, &kernel));
    kernel = kernel && !host_only;
    if (!kernel) return sd_spec_scratch_init(&v->host, m->hp.n_vocab);
    int device = sd_backend_host_memory(m->backend) ? SD_CUDA_VERIFY_HOST : m->cuda_device;
    SD_CHECK(sd_cuda_verify_create(device, m->hp.n_vocab, k_max, &v->kernel));
    if (need_q && k_max > 0) {
        size_t bytes = (size_t)k_max * (size_t)m->hp.n_vocab * sizeof(float);
        v->q_dev = sd_backend_alloc(m->backend, bytes);
        if (v->q_dev == NULL) {
            sd_verifier_free(v);
            return sd_set_error(SD_ERR_OUT_OF_MEMORY,
                                "out of %s memory for the drafter's distributions (%zu bytes)",
                                sd_backend_name(m->backend), bytes);
        }
    }
    seq->keep_logits_on_device = 1;
    return SD_OK;
}

void sd_verifier_free(sd_verifier_t *v)
{
    if (v->model == NULL) return;
    if (v->q_dev) sd_backend_release(v->model->backend, v->q_dev);
    sd_cuda_verify_free(v->kernel);
    sd_spec_scratch_free(&v->host);
    memset(v, 0, sizeof *v);
}

sd_status_t sd_verifier_run(sd_verifier_t *v, const sd_seq_t *seq, const sd_sampler_params_t *p,
                            uint64_t seed, uint64_t pos0, const int32_t *draft, const float *q,
                            int k, sd_spec_result_t *out)
{
    int n_vocab = v->model->hp.n_vocab;
    if (v->kernel == NULL)
        return sd_spec_verify(p, seed, pos0, draft, q, k, seq->logits, n_vocab, &v->host, out);
    const float *q_dev = NULL;
    if (q != NULL && k > 0) {
        if (v->q_dev == NULL)
            return sd_set_error(SD_ERR_INTERNAL, "verifier: q passed but none was planned for");
        sd_backend_t *be = v->model->backend;
        sd_backend_lock(be); /* no other thread's op between the upload and its sync */
        sd_backend_upload(be, v->q_dev, q, (size_t)k * (size_t)n_vocab * sizeof(float));
        sd_status_t st = sd_backend_sync(be);
        sd_backend_unlock(be);
        SD_CHECK(st);
        q_dev = v->q_dev;
    }
    return sd_cuda_spec_verify(v->kernel, NULL, p, seed, pos0, draft, q_dev, k, seq->sc.logits_dev,
                               n_vocab, out);
}
