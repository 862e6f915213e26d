/* Where a step's verification runs, with the same result bit for bit: on the host
 * (verify/speculative.h) or with the verify kernel where the forward left the logits
 * (verify/cuda_verify.h; its host emulation for a CPU model). SPECDEC_VERIFY: "auto"
 * (default: the kernel for a CUDA model), "host", or "kernel" (an error where not built). */
#ifndef SPECDEC_ENGINE_VERIFIER_H
#define SPECDEC_ENGINE_VERIFIER_H

#include "verify/cuda_verify.h"
#include "model/forward.h"
#include "model/model.h"
#include "verify/speculative.h"

typedef struct sd_verifier {
    const sd_model_t *model;
    sd_cuda_verify_t *kernel; /* NULL: host verification */
    float *q_dev;             /* [k_max, n_vocab] backend memory for the drafter's q, or NULL */
    sd_spec_scratch_t host;   /* the host path's scratch */
} sd_verifier_t;

/* For steps of up to k_max draft tokens; need_q: the drafter's q will be passed; host_only:
 * the host whatever SPECDEC_VERIFY says. Sets seq->keep_logits_on_device when the kernel
 * runs. SD_ERR_INVALID_ARG for an unknown SPECDEC_VERIFY, else the scratch's or
 * sd_cuda_verify_create's errors (SD_ERR_NOT_BUILT: "kernel" without CUDA). */
sd_status_t sd_verifier_init(sd_verifier_t *v, const sd_model_t *m, sd_seq_t *seq, int k_max,
                             int need_q, int host_only);
void sd_verifier_free(sd_verifier_t *v);

/* sd_spec_verify's contract over the logits of seq's last forward (k + 1 rows); q is the
 * drafter's [k, n_vocab] on the host, or NULL. */
sd_status_t sd_verifier_run(sd_verifier_t *v, const sd_seq_t *seq, const sd_sampler_params_t *p,
                            uint64_t seed, uint64_t pos0, const int32_t *draft, const float *q,
                            int k, sd_spec_result_t *out);

#endif
