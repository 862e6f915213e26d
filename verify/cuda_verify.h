/* Sampling and speculative verification on the GPU, bit-exact with the CPU
 * (sd_sample / sd_spec_verify): the same tokens for the same logits, seeds and positions.
 *
 * One block per position computes the target's distribution with the canonical algorithm
 * of verify/sampler.c (arithmetic shared through verify/sampler_math.h: exact sums, an
 * exp made of IEEE basic operations, selections by rank) and the position's decision
 * (accept / reject, the token emitted there); uniforms are cuRAND Philox4_32_10 keyed as
 * the CPU's sd_rng_uniform. One device-to-host copy of (k + 1) small records per call,
 * then the host keeps the longest accepted prefix. Built from verify/cuda/verify.cu when
 * nvcc is found; otherwise verify/cuda_verify_stub.c answers SD_ERR_NOT_BUILT. */
#ifndef SPECDEC_KERNELS_CUDA_VERIFY_H
#define SPECDEC_KERNELS_CUDA_VERIFY_H

#ifdef __cplusplus
extern "C" {
#endif

#include <stdint.h>

#include "specdec/specdec.h"
#include "verify/speculative.h"

/* Device index for the host emulation: the kernels' own code run on the CPU with an
 * emulated block of SD_CUDA_VERIFY_THREADS threads; logits and q are then host memory.
 * It needs no GPU (tests, and a reference for the kernels). */
#define SD_CUDA_VERIFY_HOST (-1)
/* Largest k_max (the draft tokens travel as a kernel argument). */
#define SD_CUDA_VERIFY_MAX_K 64
/* Threads per block (one block per position). */
#define SD_CUDA_VERIFY_THREADS 512

/* Device scratch for one request (or one stream): per-position distributions
 * [k_max + 1, n_vocab] and the per-position results. Not thread-safe; calls on one
 * scratch must not overlap. */
typedef struct sd_cuda_verify sd_cuda_verify_t;

/* SD_ERR_INVALID_ARG naming the value for n_vocab <= 0, k_max outside
 * [0, SD_CUDA_VERIFY_MAX_K], a device that does not exist, out == NULL; SD_ERR_DEVICE /
 * SD_ERR_OUT_OF_MEMORY when allocation fails. Makes `device` current. */
sd_status_t sd_cuda_verify_create(int device, int n_vocab, int k_max, sd_cuda_verify_t **out);
void sd_cuda_verify_free(sd_cuda_verify_t *v);

/* probs_dev[n_vocab] := sd_sampler_probs(p, logits_dev[n_vocab]) bit for bit (both device
 * memory; the one-hot at the argmax when greedy): e.g. a drafter's q on the device.
 * Returns after the distribution is written. Errors as sd_cuda_sample. */
sd_status_t sd_cuda_probs(sd_cuda_verify_t *v, void *stream, const sd_sampler_params_t *p,
                          const float *logits_dev, int n_vocab, float *probs_dev);

/* Target-only sampling of the token at `position` from logits_dev[n_vocab] (device
 * memory, written by work on `stream`): equals sd_sample(p, logits, n_vocab,
 * sd_rng_uniform(seed, position, SD_RNG_SAMPLE), ...), the argmax when greedy. stream is a
 * cudaStream_t (NULL: the default stream); returns after the result is on the host.
 * SD_ERR_INVALID_ARG naming the value for bad params, NULL pointers, n_vocab outside
 * [1, the scratch's n_vocab]; *token_out is written only on SD_OK. */
sd_status_t sd_cuda_sample(sd_cuda_verify_t *v, void *stream, const sd_sampler_params_t *p,
                           uint64_t seed, uint64_t position, const float *logits_dev, int n_vocab,
                           int32_t *token_out);

/* sd_spec_verify's contract with p_logits_dev [k + 1, n_vocab] and q_dev [k, n_vocab] or
 * NULL in device memory, draft[k] on the host; the same result for the same inputs. The
 * same argument errors with the same messages (checked before the device is touched),
 * plus k > the scratch's k_max; a draft token with q_i(d_i) not > 0 is reported after the
 * kernel (q lives on the device), with sd_spec_verify's message. *out is written only on
 * SD_OK. Returns after the result is on the host. */
sd_status_t sd_cuda_spec_verify(sd_cuda_verify_t *v, void *stream, const sd_sampler_params_t *p,
                                uint64_t seed, uint64_t pos0, const int32_t *draft, const float *q_dev,
                                int k, const float *p_logits_dev, int n_vocab, sd_spec_result_t *out);

#ifdef __cplusplus
}
#endif

#endif
