/* Models for the fuzz harnesses (fuzz_model.h). */
#include "fuzz/fuzz_model.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "gguf/gguf.h"
#include "model/model.h"

sd_model_t *fuzz_synth_model(const sd_synth_spec_t *spec)
{
    void *buf; /* never freed: the model reads its weights from it */
    size_t n;
    gguf_file_t *f;
    sd_model_params_t p;
    sd_model_params_default(&p);
    p.n_threads = 1, p.device = "cpu";
    sd_model_t *m = NULL;
    if (sd_synth_write_buffer(spec, &buf, &n) != SD_OK || gguf_open_buffer(buf, n, &f) != SD_OK ||
        sd_model_load_gguf(f, &p, &m) != SD_OK) {
        fprintf(stderr, "fuzz: synthetic %s model: %s\n", spec->arch, sd_last_error());
        exit(1);
    }
    return m;
}

sd_model_t *fuzz_smollm_model(void)
{
    static const char file[] = "SmolLM2-135M-Instruct.Q4_1.gguf";
    const char *path = getenv("SPECDEC_MODEL");
    char buf[4096];
    if (!path) {
        const char *cache = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
        if (cache && cache[0]) snprintf(buf, sizeof buf, "%s/specdec/%s", cache, file);
        else snprintf(buf, sizeof buf, "%s/.cache/specdec/%s", home ? home : ".", file);
        path = buf;
    }
    if (access(path, R_OK) != 0) {
        printf("skip: this fuzz target needs SmolLM2's tokenizer: %s is missing "
               "(scripts/fetch-model.sh)\n", path);
        exit(77);
    }
    sd_model_params_t p;
    sd_model_params_default(&p);
    p.path = path, p.n_threads = 1, p.n_ctx = 16, p.device = "cpu";
    sd_model_t *m = NULL;
    if (sd_model_load(&p, &m) != SD_OK) {
        fprintf(stderr, "fuzz: %s: %s\n", path, sd_last_error());
        exit(1);
    }
    return m;
}
