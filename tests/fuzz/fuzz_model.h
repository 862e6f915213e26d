/* Models for the fuzz harnesses that need one (fuzz_model.c): loaded once, kept for the
 * process's life. Failures end the process: a harness without its model tests nothing. */
#ifndef SPECDEC_TESTS_FUZZ_FUZZ_MODEL_H
#define SPECDEC_TESTS_FUZZ_FUZZ_MODEL_H

#include "gguf/synthetic.h"
#include "specdec/specdec.h"

/* A synthetic model (random weights, the spec's tokenizer) from a buffer; CPU, one thread. */
sd_model_t *fuzz_synth_model(const sd_synth_spec_t *spec);
/* The default real model (SmolLM2-135M-Instruct Q4_1: $SPECDEC_MODEL or the cache file);
 * exits 77 with the reason when it is missing, so a replay test reports a skip. */
sd_model_t *fuzz_smollm_model(void);

#endif
