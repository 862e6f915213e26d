/* requant: a GGUF model re-encoded in one weight type with the project's writer, for
 * benchmarks that compare types on the same weights (bench/kquant_decode.py).
 *
 *   requant IN.gguf OUT.gguf TYPE      (TYPE: Q4_0, Q4_K, IQ4_XS, ... any type this build has)
 *
 * Every matrix (2-D tensor) is dequantized and encoded in TYPE with sd_quantize_row; where its
 * rows are not a whole number of TYPE's blocks it takes llama.cpp's fallback instead (Q2_K,
 * Q3_K, IQ4_XS -> IQ4_NL; Q4_K -> Q5_0; Q5_K -> Q5_1; Q6_K -> Q8_0), as llama-quantize does
 * for SmolLM2's 576-wide rows. Vectors (norms, biases) and every key/value are copied;
 * general.file_type names TYPE (llama.cpp's LLAMA_FTYPE numbering). Prints one line per
 * type used. Exit 0, or 1 with a message. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "gguf/gguf.h"
#include "kernels/dtype.h"

static int fail(const char *what, sd_status_t s)
{
    fprintf(stderr, "requant: %s: %s: %s\n", what, sd_status_string(s), sd_last_error());
    return 1;
}

/* llama-quantize's substitute for a type whose block does not divide the rows. */
static sd_dtype_t fallback(sd_dtype_t t)
{
    switch (t) {
    case SD_DTYPE_Q2_K:
    case SD_DTYPE_Q3_K:
    case SD_DTYPE_IQ4_XS: return SD_DTYPE_IQ4_NL;
    case SD_DTYPE_Q4_K: return SD_DTYPE_Q5_0;
    case SD_DTYPE_Q5_K: return SD_DTYPE_Q5_1;
    case SD_DTYPE_Q6_K: return SD_DTYPE_Q8_0;
    default: return t;
    }
}

/* llama.cpp's LLAMA_FTYPE_MOSTLY_* for a type (the _M mixes for the K-quants); 0 = all F32. */
static uint32_t llama_ftype(sd_dtype_t t)
{
    static const struct { sd_dtype_t t; uint32_t f; } map[] = {
        {SD_DTYPE_F16, 1},    {SD_DTYPE_Q4_0, 2},  {SD_DTYPE_Q4_1, 3},  {SD_DTYPE_Q8_0, 7},
        {SD_DTYPE_Q5_0, 8},   {SD_DTYPE_Q5_1, 9},  {SD_DTYPE_Q2_K, 10}, {SD_DTYPE_Q3_K, 12},
        {SD_DTYPE_Q4_K, 15},  {SD_DTYPE_Q5_K, 17}, {SD_DTYPE_Q6_K, 18}, {SD_DTYPE_IQ4_NL, 25},
        {SD_DTYPE_IQ4_XS, 30}, {SD_DTYPE_BF16, 32},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (map[i].t == t) return map[i].f;
    return 0;
}

static char *cstr(gguf_str_t s)
{
    char *c = malloc(s.len + 1);
    if (c) memcpy(c, s.data, s.len), c[s.len] = 0;
    return c;
}

/* One key/value of the input, copied (the widened scalar narrowed back to its type). */
static sd_status_t copy_kv(gguf_writer_t *w, const gguf_kv_t *kv)
{
    char *key = cstr(kv->key);
    sd_status_t st = SD_OK;
    if (!key) return sd_set_error(SD_ERR_OUT_OF_MEMORY, "key copy");
    if (kv->type == GGUF_TYPE_STRING) {
        char *v = cstr(kv->v.str);
        st = v ? gguf_writer_set_str(w, key, v) : sd_set_error(SD_ERR_OUT_OF_MEMORY, "value copy");
        free(v);
    } else if (kv->type == GGUF_TYPE_ARRAY && kv->arr_type == GGUF_TYPE_STRING) {
        const char **v = calloc(kv->arr_n ? kv->arr_n : 1, sizeof *v);
        for (uint64_t i = 0; v && i < kv->arr_n; i++) v[i] = cstr(kv->arr_strs[i]);
        st = v ? gguf_writer_set_arr_str(w, key, v, kv->arr_n) : sd_set_error(SD_ERR_OUT_OF_MEMORY, "array copy");
        for (uint64_t i = 0; v && i < kv->arr_n; i++) free((void *)v[i]);
        free(v);
    } else if (kv->type == GGUF_TYPE_ARRAY) {
        if (kv->arr_data) st = gguf_writer_set_arr(w, key, kv->arr_type, kv->arr_data, kv->arr_n);
        else fprintf(stderr, "requant: skipping nested array '%s'\n", key);
    } else {
        uint8_t raw[8];
        size_t size = gguf_type_size(kv->type);
        if (kv->type == GGUF_TYPE_FLOAT32) {
            float f = (float)kv->v.f;
            memcpy(raw, &f, 4);
        } else if (kv->type == GGUF_TYPE_FLOAT64) {
            memcpy(raw, &kv->v.f, 8);
        } else if (kv->type == GGUF_TYPE_BOOL) {
            raw[0] = kv->v.b;
        } else {
            memcpy(raw, &kv->v.u, size); /* little-endian: the low bytes of u (or i) */
        }
        st = gguf_writer_set_raw(w, key, kv->type, raw);
    }
    free(key);
    return st;
}

static sd_status_t add_tensor(gguf_writer_t *w, const gguf_tensor_t *t, sd_dtype_t want, int counts[64])
{
    char *name = cstr(t->name);
    if (!name) return sd_set_error(SD_ERR_OUT_OF_MEMORY, "name copy");
    sd_status_t st;
    if (t->n_dims < 2) {
        st = gguf_writer_add_tensor(w, name, t->type, t->n_dims, t->ne, t->data, t->nbytes);
    } else {
        sd_dtype_t type = t->ne[0] % sd_dtype_block_elems(want) == 0 ? want : fallback(want);
        size_t rows = t->nbytes / ((size_t)(t->ne[0] / sd_dtype_block_elems(t->type)) * sd_dtype_block_bytes(t->type));
        size_t row_bytes = t->nbytes / rows;
        float *x = malloc(sizeof(float) * (size_t)t->ne[0] * rows);
        if (!x) {
            st = sd_set_error(SD_ERR_OUT_OF_MEMORY, "%zu rows of '%s'", rows, name);
            free(name);
            return st;
        }
        for (size_t r = 0; r < rows; r++)
            sd_dequantize_row(t->type, (const char *)t->data + r * row_bytes, x + r * (size_t)t->ne[0], t->ne[0]);
        st = gguf_writer_add_tensor_f32(w, name, type, t->n_dims, t->ne, x);
        free(x);
        counts[type]++;
    }
    free(name);
    return st;
}

int main(int argc, char **argv)
{
    sd_dtype_t want = SD_DTYPE_F32;
    uint32_t id = 0;
    for (; argc == 4 && id < 64; id++)
        if (sd_dtype_supported(id) && strcmp(argv[3], sd_dtype_name(id)) == 0) break;
    if (argc != 4 || id == 64) {
        fprintf(stderr, "usage: requant IN.gguf OUT.gguf TYPE (a type this build computes with, e.g. Q4_K)\n");
        return 2;
    }
    want = (sd_dtype_t)id;
    gguf_file_t *in = NULL;
    sd_status_t st = gguf_open(argv[1], &in);
    if (st != SD_OK) return fail(argv[1], st);
    gguf_writer_t *w = NULL;
    st = gguf_writer_new(&w);
    for (uint64_t i = 0; st == SD_OK && i < in->n_kv; i++)
        if (!gguf_str_eq(in->kv[i].key, "general.file_type")) st = copy_kv(w, &in->kv[i]);
    if (st == SD_OK) st = gguf_writer_set_u32(w, "general.file_type", llama_ftype(want));
    int counts[64] = {0};
    for (uint64_t i = 0; st == SD_OK && i < in->n_tensors; i++) st = add_tensor(w, &in->tensors[i], want, counts);
    if (st == SD_OK) st = gguf_writer_write_file(w, argv[2]);
    gguf_writer_free(w);
    gguf_close(in);
    if (st != SD_OK) return fail(argv[2], st);
    for (int t = 0; t < 64; t++)
        if (counts[t]) printf("%s: %d matrices\n", sd_dtype_name((uint32_t)t), counts[t]);
    return 0;
}
