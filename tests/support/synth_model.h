/* A synthetic random-weight model written to a temporary GGUF file and loaded on the CPU.
 * Header-only: only the tests that link the model layer include it, while tests/support is
 * linked into every test. */
#ifndef SPECDEC_TESTS_SYNTH_MODEL_H
#define SPECDEC_TESTS_SYNTH_MODEL_H

#include <criterion/criterion.h>
#include <stdio.h>

#include "gguf/synthetic.h"
#include "specdec/specdec.h"
#include "support/test_util.h"

/* The model of spec s with n_threads threads and n_ctx KV positions; the file is removed
 * once loaded. Asserts on failure. */
static inline sd_model_t *sd_test_synth_model(const sd_synth_spec_t *s, int n_threads, int n_ctx)
{
    char path[512];
    sd_test_tmp_path(path, sizeof path, "synth");
    cr_assert_eq(sd_synth_write_file(s, path), SD_OK, "%s", sd_last_error());
    sd_model_params_t p;
    sd_model_params_default(&p);
    p.path = path;
    p.n_threads = n_threads;
    p.n_ctx = n_ctx;
    p.device = "cpu";
    sd_model_t *m = NULL;
    cr_assert_eq(sd_model_load(&p, &m), SD_OK, "load %s: %s", path, sd_last_error());
    remove(path);
    return m;
}

#endif
