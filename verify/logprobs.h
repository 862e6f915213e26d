/* Log-probabilities of the target's raw distribution at one position: the log-softmax of a
 * row of logits at temperature 1 with no filter (docs/design-notes.md, "Log-probabilities"),
 * and its most likely tokens. A pure function of the row's bits. */
#ifndef SPECDEC_VERIFY_LOGPROBS_H
#define SPECDEC_VERIFY_LOGPROBS_H

#include <stdint.h>

#include "specdec/specdec.h"

/* logits[n_vocab] (n_vocab >= 1): *logprob = ln p(token) (token in [0, n_vocab)), and the
 * best-ranked tokens (logit descending, NaN as -inf, then lower index) with their
 * log-probabilities into top_tokens[], top_logprobs[] (NULL when n_top is 0): returns how
 * many, min(n_top, n_vocab, SD_MAX_TOP_LOGPROBS). -INFINITY for a token of probability 0. */
int sd_logprobs_row(const float *logits, int n_vocab, int32_t token, int n_top,
                     float *logprob, int32_t *top_tokens, float *top_logprobs);

#endif
