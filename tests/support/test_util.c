#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void sd_test_tmp_path(char *buf, size_t cap, const char *stem)
{
    static int counter;
    const char *dir = getenv("SPECDEC_TEST_TMP");
    if (dir == NULL || dir[0] == '\0') dir = "/tmp";
    mkdir(dir, 0755);
    snprintf(buf, cap, "%s/%s-%d-%d.gguf", dir, stem, (int)getpid(), counter++);
}

const char *sd_test_real_model(void)
{
    static char path[4096];
    const char *env = getenv("SPECDEC_MODEL");
    if (env && env[0]) {
        snprintf(path, sizeof path, "%s", env);
    } else {
        const char *cache = getenv("XDG_CACHE_HOME");
        const char *home = getenv("HOME");
        if (cache && cache[0])
            snprintf(path, sizeof path, "%s/specdec/SmolLM2-135M-Instruct.Q4_1.gguf", cache);
        else
            snprintf(path, sizeof path, "%s/.cache/specdec/SmolLM2-135M-Instruct.Q4_1.gguf",
                     home ? home : "/root");
    }
    return access(path, R_OK) == 0 ? path : NULL;
}

int sd_test_sanitizer_pass(void)
{
    const char *v = getenv("SPECDEC_TEST_SANITIZER_PASS");
    return v != NULL && v[0] == '1';
}

int sd_test_long_shapes(int host_mode)
{
    const char *v = getenv("SPECDEC_TEST_LONG");
    return !host_mode || (v != NULL && v[0] == '1');
}

void sd_test_fill_random(float *x, size_t n, uint32_t seed, float scale)
{
    uint32_t s = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        x[i] = ((float)(s >> 8) / 16777216.0f * 2.0f - 1.0f) * scale;
    }
}

float *sd_test_page_kv(const float *slab, int n_ctx, size_t row, const int32_t *table,
                       int block_size, int pool_blocks)
{
    size_t rows = (size_t)pool_blocks * (size_t)block_size;
    float *paged = malloc(rows * row * sizeof *paged);
    if (paged == NULL) return NULL;
    for (size_t i = 0; i < rows * row; i++) paged[i] = NAN;
    for (int j = 0; j < n_ctx; j++) {
        size_t r = (size_t)table[j / block_size] * (size_t)block_size + (size_t)(j % block_size);
        memcpy(paged + r * row, slab + (size_t)j * row, row * sizeof *paged);
    }
    return paged;
}
