/* The architecture table (model/arch.c): every row complete, names and ids unique, the
 * lookup finds each row and refuses an unknown name listing the known ones, tensor names
 * format per layer, and the loader takes its facts from the row (synthetic llama, qwen2). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "gguf/synthetic.h"
#include "model/arch.h"
#include "model/model.h"

/* '%' conversions in s: layer names need exactly one "%d", model names none. */
static int count_percent(const char *s, int *n_d)
{
    int n = 0;
    *n_d = 0;
    for (const char *p = strchr(s, '%'); p; p = strchr(p + 2, '%')) {
        n++;
        if (p[1] == 'd') (*n_d)++;
        if (p[1] == '\0') break;
    }
    return n;
}

Test(model_arch, every_row_is_complete)
{
    size_t n;
    const sd_arch_info_t *rows = sd_arch_table(&n);
    cr_assert_gt(n, 0);
    for (size_t i = 0; i < n; i++) {
        const sd_arch_info_t *a = &rows[i];
        cr_assert(a->name && a->name[0], "row %zu has no name", i);
        cr_expect(a->id != 0, "%s: no id", a->name);
        cr_expect(a->qkv_bias == SD_ARCH_BIAS_OPTIONAL || a->qkv_bias == SD_ARCH_BIAS_REQUIRED,
                  "%s: qkv_bias %d", a->name, (int)a->qkv_bias);
        cr_expect(a->rope == SD_ROPE_NORM || a->rope == SD_ROPE_NEOX, "%s: rope %d", a->name,
                  (int)a->rope);
        cr_assert_not_null(a->tensors, "%s: no tensor names", a->name);
        for (int t = 0; t < SD_ARCH_TENSOR_COUNT; t++) {
            const char *tn = a->tensors[t];
            cr_assert(tn && tn[0], "%s: tensor %d has no name", a->name, t);
            int n_d, n_conv = count_percent(tn, &n_d);
            int want = t >= SD_ARCH_TENSOR_FIRST_LAYER;
            cr_expect(n_conv == want && n_d == want, "%s: '%s' must hold %s", a->name, tn,
                      want ? "one %d and no other %" : "no %");
        }
    }
}

Test(model_arch, names_and_ids_are_unique)
{
    size_t n;
    const sd_arch_info_t *rows = sd_arch_table(&n);
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++) {
            cr_expect(strcmp(rows[i].name, rows[j].name) != 0, "name '%s' twice", rows[i].name);
            cr_expect(rows[i].id != rows[j].id, "%s and %s share id %d", rows[i].name,
                      rows[j].name, (int)rows[i].id);
        }
}

Test(model_arch, lookup_finds_each_row_and_refuses_others)
{
    size_t n;
    const sd_arch_info_t *rows = sd_arch_table(&n), *a;
    for (size_t i = 0; i < n; i++) {
        char buf[64];
        snprintf(buf, sizeof buf, "%sXYZ", rows[i].name); /* GGUF strings are not terminated */
        size_t len = strlen(rows[i].name);
        cr_assert_eq(sd_arch_find(buf, len, &a), SD_OK, "%s: %s", rows[i].name, sd_last_error());
        cr_expect_eq(a, &rows[i]);
        cr_expect_eq(sd_arch_find(buf, len - 1, &a), SD_ERR_UNSUPPORTED_ARCH, "a prefix of %s",
                     rows[i].name);
        cr_expect_eq(sd_arch_find(buf, len + 1, &a), SD_ERR_UNSUPPORTED_ARCH, "%s + 1 char",
                     rows[i].name);
    }
    a = &rows[0];
    cr_assert_eq(sd_arch_find("mamba", 5, &a), SD_ERR_UNSUPPORTED_ARCH);
    cr_expect_null(a);
    const char *msg = sd_last_error();
    cr_expect(strstr(msg, "general.architecture 'mamba'"), "'%s' does not name the value", msg);
    for (size_t i = 0; i < n; i++)
        cr_expect(strstr(msg, rows[i].name), "'%s' does not list '%s'", msg, rows[i].name);
}

Test(model_arch, tensor_names_format_per_layer)
{
    const sd_arch_info_t *a;
    cr_assert_eq(sd_arch_find("qwen2", 5, &a), SD_OK);
    char buf[96];
    cr_expect_str_eq(sd_arch_tensor_name(a, SD_ARCH_TENSOR_ATTN_K_BIAS, 17, buf, sizeof buf),
                     "blk.17.attn_k.bias");
    cr_expect_str_eq(sd_arch_tensor_name(a, SD_ARCH_TENSOR_FFN_DOWN, 0, buf, sizeof buf),
                     "blk.0.ffn_down.weight");
    cr_expect_str_eq(sd_arch_tensor_name(a, SD_ARCH_TENSOR_TOKEN_EMBD, 5, buf, sizeof buf),
                     "token_embd.weight");
}

/* A synthetic model of `arch` loads with its row's facts. */
static void check_synthetic(const char *arch)
{
    sd_synth_spec_t s;
    sd_synth_spec_default(&s);
    s.arch = arch;
    s.tokenizer = SD_SYNTH_TOKENIZER_NONE;
    void *file = NULL;
    size_t size = 0;
    gguf_file_t *f = NULL;
    cr_assert_eq(sd_synth_write_buffer(&s, &file, &size), SD_OK, "%s", sd_last_error());
    cr_assert_eq(gguf_open_buffer(file, size, &f), SD_OK, "%s", sd_last_error());
    sd_model_params_t p;
    sd_model_params_default(&p);
    p.n_threads = 1;
    sd_model_t *m = NULL;
    cr_assert_eq(sd_model_load_gguf(f, &p, &m), SD_OK, "%s: %s", arch, sd_last_error());
    const sd_arch_info_t *row;
    cr_assert_eq(sd_arch_find(arch, strlen(arch), &row), SD_OK);
    cr_expect_eq(m->arch, row);
    cr_expect_eq(m->hp.arch, row->id);
    cr_expect_eq(m->hp.rope.style, row->rope);
    sd_model_info_t info;
    cr_assert_eq(sd_model_get_info(m, &info), SD_OK);
    cr_expect_str_eq(info.arch, arch);
    /* synthetic qwen2 files carry the biases, llama files do not */
    cr_expect_eq(m->layers[0].bq != NULL, row->qkv_bias == SD_ARCH_BIAS_REQUIRED, "%s", arch);
    sd_model_free(m); /* closes f */
    free(file);
}

Test(model_arch, synthetic_llama_loads, .timeout = 30) { check_synthetic("llama"); }
Test(model_arch, synthetic_qwen2_loads, .timeout = 30) { check_synthetic("qwen2"); }
