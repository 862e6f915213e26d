/* verify/cuda_verify.h for builds without nvcc: every call says CUDA is not built in. */
#include "cuda_verify.h"
#include "core/check.h"

static sd_status_t not_built(void)
{
    return sd_set_error(SD_ERR_NOT_BUILT, "this specdec was built without CUDA (nvcc not found "
                                          "at configure time): no GPU sampling or verification");
}

sd_status_t sd_cuda_verify_create(int device, int n_vocab, int k_max, sd_cuda_verify_t **out)
{
    (void)device, (void)n_vocab, (void)k_max;
    if (out != NULL)
        *out = NULL;
    return not_built();
}

void sd_cuda_verify_free(sd_cuda_verify_t *v) { (void)v; }

sd_status_t sd_cuda_probs(sd_cuda_verify_t *v, void *stream, const sd_sampler_params_t *p,
                          const float *logits_dev, int n_vocab, float *probs_dev)
{
    (void)v, (void)stream, (void)p, (void)logits_dev, (void)n_vocab, (void)probs_dev;
    return not_built();
}

sd_status_t sd_cuda_sample(sd_cuda_verify_t *v, void *stream, const sd_sampler_params_t *p,
                           uint64_t seed, uint64_t position, const float *logits_dev, int n_vocab,
                           int32_t *token_out)
{
    (void)v, (void)stream, (void)p, (void)seed, (void)position, (void)logits_dev, (void)n_vocab,
        (void)token_out;
    return not_built();
}

sd_status_t sd_cuda_spec_verify(sd_cuda_verify_t *v, void *stream, const sd_sampler_params_t *p,
                                uint64_t seed, uint64_t pos0, const int32_t *draft, const float *q_dev,
                                int k, const float *p_logits_dev, int n_vocab, sd_spec_result_t *out)
{
    (void)v, (void)stream, (void)p, (void)seed, (void)pos0, (void)draft, (void)q_dev, (void)k,
        (void)p_logits_dev, (void)n_vocab, (void)out;
    return not_built();
}
