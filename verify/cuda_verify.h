/* Sampling and speculative verification over device logits, bit-exact with sd_sample and
 * sd_spec_verify (verify/cuda/verify.cu; docs/cuda.md, "Sampling and verification on the
 * GPU"). Without nvcc, verify/cuda_verify_stub.c answers SD_ERR_NOT_BUILT. */
#ifndef SPECDEC_KERNELS_CUDA_VERIFY_H
#define SPECDEC_KERNELS_CUDA_VERIFY_H

#ifdef __cplusplus
extern "C" {
#endif

#include <stdint.h>

#include "specdec/specdec.h"
#include "verify/speculative.h"

/* Device index for the host emulation: the kernels' code on the CPU, needing no GPU;
 * logits and q are then host memory. */
#define SD_CUDA_VERIFY_HOST (-1)
/* Largest k_max (the draft tokens travel as a kernel argument). */
#define SD_CUDA_VERIFY_MAX_K 64
/* Threads per block (one block per position). */
#define SD_CUDA_VERIFY_THREADS 512

/* Device scratch for one request (or one stream): distributions [k_max + 1, n_vocab] and
 * per-position results. Calls on one scratch must not overlap. */
typedef struct sd_cuda_verify sd_cuda_verify_t;

/* Makes `device` current. SD_ERR_INVALID_ARG naming the value for n_vocab <= 0, k_max
 * outside [0, SD_CUDA_VERIFY_MAX_K], a missing device, out == NULL; SD_ERR_DEVICE /
 * SD_ERR_OUT_OF_MEMORY when allocation fails. */
sd_status_t sd_cuda_verify_create(int device, int n_vocab, int k_max, sd_cuda_verify_t **out);
void sd_cuda_verify_free(sd_cuda_verify_t *v);

/* probs_dev[n_vocab] := sd_sampler_probs(p, logits_dev[n_vocab]), both device memory (e.g.
 * a drafter's q). Returns after it is written. Errors as sd_cuda_sample. */
sd_status_t sd_cuda_probs(sd_cuda_verify_t *v, void *stream, const sd_sampler_params_t *p,
                          const float *logits_dev, int n_vocab, float *probs_dev);

/* sd_sample(p, logits, n_vocab, sd_rng_uniform(seed, position, SD_RNG_SAMPLE), ...) over
 * logits_dev[n_vocab], written by work on `stream` (a cudaStream_t; NULL: the default).
 * Returns with *token_out set (only on SD_OK). SD_ERR_INVALID_ARG naming the value for bad
 * params, NULL pointers, n_vocab outside [1, the scratch's n_vocab]. */
sd_status_t sd_cuda_sample(sd_cuda_verify_t *v, void *stream, const sd_sampler_params_t *p,
                           uint64_t seed, uint64_t position, const float *logits_dev, int n_vocab,
                           int32_t *token_out);

/* sd_spec_verify with p_logits_dev [k + 1, n_vocab] and q_dev [k, n_vocab] or NULL on the
 * device, draft[k] on the host: its result, errors and messages (checked before the device
 * is touched) plus k > the scratch's k_max; q_i(d_i) not > 0 is found after the kernel.
 * Returns with *out set (only on SD_OK). */
sd_status_t sd_cuda_spec_verify(sd_cuda_verify_t *v, void *stream, const sd_sampler_params_t *p,
                                uint64_t seed, uint64_t pos0, const int32_t *draft, const float *q_dev,
                                int k, const float *p_logits_dev, int n_vocab, sd_spec_result_t *out);

#ifdef __cplusplus
}
#endif

#endif
