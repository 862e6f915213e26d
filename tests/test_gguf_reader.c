/* GGUF writer -> reader round trips: every value type, arrays, tensors of every supported
 * type, alignments, v2 files, and the real SmolLM2 file. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "gguf/gguf.h"
#include "support/test_util.h"

static gguf_file_t *open_writer(gguf_writer_t *w, void **buf)
{
    size_t size;
    cr_assert_eq(gguf_writer_write_buffer(w, buf, &size), SD_OK, "%s", sd_last_error());
    gguf_file_t *f = NULL;
    cr_assert_eq(gguf_open_buffer(*buf, size, &f), SD_OK, "%s", sd_last_error());
    return f;
}

Test(gguf_reader, every_scalar_type_round_trips)
{
    gguf_writer_t *w;
    cr_assert_eq(gguf_writer_new(&w), SD_OK);
    uint8_t u8 = 200;
    int8_t i8 = -100;
    uint16_t u16 = 60000;
    int16_t i16 = -30000;
    uint32_t u32 = 4000000000u;
    int32_t i32 = -2000000000;
    float f32 = 1.5f;
    uint8_t b = 1;
    uint64_t u64 = 18000000000000000000ull;
    int64_t i64 = -9000000000000000000ll;
    double f64 = -2.25e300;
    cr_assert_eq(gguf_writer_set_raw(w, "u8", GGUF_TYPE_UINT8, &u8), SD_OK);
    cr_assert_eq(gguf_writer_set_raw(w, "i8", GGUF_TYPE_INT8, &i8), SD_OK);
    cr_assert_eq(gguf_writer_set_raw(w, "u16", GGUF_TYPE_UINT16, &u16), SD_OK);
    cr_assert_eq(gguf_writer_set_raw(w, "i16", GGUF_TYPE_INT16, &i16), SD_OK);
    cr_assert_eq(gguf_writer_set_raw(w, "u32", GGUF_TYPE_UINT32, &u32), SD_OK);
    cr_assert_eq(gguf_writer_set_raw(w, "i32", GGUF_TYPE_INT32, &i32), SD_OK);
    cr_assert_eq(gguf_writer_set_raw(w, "f32", GGUF_TYPE_FLOAT32, &f32), SD_OK);
    cr_assert_eq(gguf_writer_set_raw(w, "bool", GGUF_TYPE_BOOL, &b), SD_OK);
    cr_assert_eq(gguf_writer_set_raw(w, "u64", GGUF_TYPE_UINT64, &u64), SD_OK);
    cr_assert_eq(gguf_writer_set_raw(w, "i64", GGUF_TYPE_INT64, &i64), SD_OK);
    cr_assert_eq(gguf_writer_set_raw(w, "f64", GGUF_TYPE_FLOAT64, &f64), SD_OK);
    cr_assert_eq(gguf_writer_set_str(w, "str", "héllo wörld"), SD_OK);
    cr_assert_eq(gguf_writer_set_str(w, "empty", ""), SD_OK);
    cr_assert_eq(gguf_writer_set_raw(w, "bad", GGUF_TYPE_STRING, &u8), SD_ERR_INVALID_ARG);

    void *buf;
    gguf_file_t *f = open_writer(w, &buf);
    cr_assert_eq(f->version, 3);
    cr_assert_eq(f->n_kv, 13);
    cr_assert_eq(gguf_find_kv(f, "u8")->v.u, 200);
    cr_assert_eq(gguf_find_kv(f, "i8")->v.i, -100);
    cr_assert_eq(gguf_find_kv(f, "u16")->v.u, 60000);
    cr_assert_eq(gguf_find_kv(f, "i16")->v.i, -30000);
    cr_assert_eq(gguf_find_kv(f, "u32")->v.u, 4000000000u);
    cr_assert_eq(gguf_find_kv(f, "i32")->v.i, -2000000000);
    cr_assert_eq(gguf_find_kv(f, "f32")->v.f, 1.5);
    cr_assert_eq(gguf_find_kv(f, "bool")->v.b, true);
    cr_assert_eq(gguf_find_kv(f, "u64")->v.u, u64);
    cr_assert_eq(gguf_find_kv(f, "i64")->v.i, i64);
    cr_assert_eq(gguf_find_kv(f, "f64")->v.f, f64);
    cr_assert_eq(gguf_find_kv(f, "f64")->type, GGUF_TYPE_FLOAT64);
    cr_assert(gguf_str_eq(gguf_find_kv(f, "str")->v.str, "héllo wörld"));
    cr_assert_eq(gguf_find_kv(f, "empty")->v.str.len, 0);
    cr_assert_null(gguf_find_kv(f, "missing"));

    /* typed getters: integers of any width that fit */
    uint32_t gu;
    int32_t gi;
    float gf;
    bool gb;
    gguf_str_t gs;
    cr_assert_eq(gguf_get_u32(f, "u8", &gu), SD_OK);
    cr_assert_eq(gu, 200);
    cr_assert_eq(gguf_get_u32(f, "u32", &gu), SD_OK);
    cr_assert_eq(gu, 4000000000u);
    cr_assert_eq(gguf_get_i32(f, "i16", &gi), SD_OK);
    cr_assert_eq(gi, -30000);
    cr_assert_eq(gguf_get_i32(f, "u16", &gi), SD_OK);
    cr_assert_eq(gi, 60000);
    cr_assert_eq(gguf_get_f32(f, "f32", &gf), SD_OK);
    cr_assert_eq(gf, 1.5f);
    cr_assert_eq(gguf_get_bool(f, "bool", &gb), SD_OK);
    cr_assert(gb);
    cr_assert_eq(gguf_get_str(f, "str", &gs), SD_OK);
    cr_assert(gguf_str_eq(gs, "héllo wörld"));

    /* getter errors name the key and the type found */
    cr_assert_eq(gguf_get_u32(f, "i8", &gu), SD_ERR_BAD_MODEL);
    cr_assert(strstr(sd_last_error(), "'i8'") && strstr(sd_last_error(), "-100"), "%s",
              sd_last_error());
    cr_assert_eq(gguf_get_i32(f, "u32", &gi), SD_ERR_BAD_MODEL);
    cr_assert_eq(gguf_get_u32(f, "u64", &gu), SD_ERR_BAD_MODEL);
    cr_assert_eq(gguf_get_u32(f, "str", &gu), SD_ERR_BAD_MODEL);
    cr_assert(strstr(sd_last_error(), "'str'") && strstr(sd_last_error(), "STRING"), "%s",
              sd_last_error());
    cr_assert_eq(gguf_get_f32(f, "u32", &gf), SD_ERR_BAD_MODEL);
    cr_assert_eq(gguf_get_bool(f, "u8", &gb), SD_ERR_BAD_MODEL);
    cr_assert_eq(gguf_get_str(f, "f32", &gs), SD_ERR_BAD_MODEL);
    cr_assert(strstr(sd_last_error(), "FLOAT32"), "%s", sd_last_error());
    cr_assert_eq(gguf_get_u32(f, "missing", &gu), SD_ERR_BAD_MODEL);
    cr_assert(strstr(sd_last_error(), "'missing'"), "%s", sd_last_error());
    gguf_close(f);
    free(buf);
    gguf_writer_free(w);
}

Test(gguf_reader, setting_a_key_twice_keeps_the_last_value)
{
    gguf_writer_t *w;
    cr_assert_eq(gguf_writer_new(&w), SD_OK);
    cr_assert_eq(gguf_writer_set_u32(w, "k", 1), SD_OK);
    cr_assert_eq(gguf_writer_set_str(w, "k", "two"), SD_OK);
    void *buf;
    gguf_file_t *f = open_writer(w, &buf);
    cr_assert_eq(f->n_kv, 1);
    cr_assert(gguf_str_eq(gguf_find_kv(f, "k")->v.str, "two"));
    gguf_close(f);
    free(buf);
    gguf_writer_free(w);
}

Test(gguf_reader, arrays_of_every_type_round_trip)
{
    gguf_writer_t *w;
    cr_assert_eq(gguf_writer_new(&w), SD_OK);
    const int n = 5;
    char key[32];
    /* every fixed-size type: element i holds i * 3 - 4 where representable */
    for (int t = 0; t < GGUF_TYPE_COUNT; t++) {
        if (t == GGUF_TYPE_STRING || t == GGUF_TYPE_ARRAY) continue;
        uint8_t elems[5 * 8];
        for (int i = 0; i < n; i++) {
            int64_t v = (t == GGUF_TYPE_BOOL) ? (i & 1) : i * 3 + 1;
            switch (t) {
            case GGUF_TYPE_FLOAT32: {
                float x = (float)v + 0.5f;
                memcpy(elems + 4 * i, &x, 4);
                break;
            }
            case GGUF_TYPE_FLOAT64: {
                double x = (double)v + 0.5;
                memcpy(elems + 8 * i, &x, 8);
                break;
            }
            case GGUF_TYPE_UINT8:
            case GGUF_TYPE_INT8:
            case GGUF_TYPE_BOOL: elems[i] = (uint8_t)v; break;
            case GGUF_TYPE_UINT16:
            case GGUF_TYPE_INT16: {
                int16_t x = (int16_t)v;
                memcpy(elems + 2 * i, &x, 2);
                break;
            }
            case GGUF_TYPE_UINT32:
            case GGUF_TYPE_INT32: {
                int32_t x = (int32_t)v;
                memcpy(elems + 4 * i, &x, 4);
                break;
            }
            default: memcpy(elems + 8 * i, &v, 8); break;
            }
        }
        snprintf(key, sizeof key, "arr.%s", gguf_type_name((uint32_t)t));
        cr_assert_eq(gguf_writer_set_arr(w, key, (gguf_type_t)t, elems, (uint64_t)n), SD_OK);
    }
    int16_t neg[3] = {-1, -32768, 7};
    cr_assert_eq(gguf_writer_set_arr(w, "arr.neg", GGUF_TYPE_INT16, neg, 3), SD_OK);
    const char *strs[] = {"alpha", "", "γάμμα", "delta"};
    cr_assert_eq(gguf_writer_set_arr_str(w, "arr.str", strs, 4), SD_OK);
    cr_assert_eq(gguf_writer_set_arr(w, "arr.empty", GGUF_TYPE_INT32, NULL, 0), SD_OK);
    cr_assert_eq(gguf_writer_set_arr(w, "arr.bad", GGUF_TYPE_STRING, strs, 4), SD_ERR_INVALID_ARG);
    void *buf;
    gguf_file_t *f = open_writer(w, &buf);
    for (int t = 0; t < GGUF_TYPE_COUNT; t++) {
        if (t == GGUF_TYPE_STRING || t == GGUF_TYPE_ARRAY) continue;
        snprintf(key, sizeof key, "arr.%s", gguf_type_name((uint32_t)t));
        const gguf_kv_t *kv;
        cr_assert_eq(gguf_get_arr(f, key, (gguf_type_t)t, &kv), SD_OK, "%s", sd_last_error());
        cr_assert_eq(kv->arr_n, (uint64_t)n);
        for (int i = 0; i < n; i++) {
            int64_t v = (t == GGUF_TYPE_BOOL) ? (i & 1) : i * 3 + 1;
            int is_float = t == GGUF_TYPE_FLOAT32 || t == GGUF_TYPE_FLOAT64;
            cr_assert_eq(gguf_arr_float(kv, (uint64_t)i), (double)v + (is_float ? 0.5 : 0.0),
                         "%s[%d]", key, i);
            cr_assert_eq(gguf_arr_int(kv, (uint64_t)i), v, "%s[%d]", key, i);
        }
        cr_assert_eq(gguf_arr_int(kv, (uint64_t)n), 0, "out of range element reads 0");
    }
    const gguf_kv_t *kv;
    cr_assert_eq(gguf_get_arr(f, "arr.neg", GGUF_TYPE_INT16, &kv), SD_OK);
    cr_assert_eq(gguf_arr_int(kv, 0), -1);
    cr_assert_eq(gguf_arr_int(kv, 1), -32768);
    cr_assert_eq(gguf_get_arr(f, "arr.str", GGUF_TYPE_STRING, &kv), SD_OK);
    cr_assert_eq(kv->arr_n, 4);
    for (int i = 0; i < 4; i++) cr_assert(gguf_str_eq(kv->arr_strs[i], strs[i]), "str[%d]", i);
    cr_assert_eq(gguf_get_arr(f, "arr.empty", GGUF_TYPE_COUNT, &kv), SD_OK);
    cr_assert_eq(kv->arr_n, 0);
    cr_assert_eq(gguf_get_arr(f, "arr.str", GGUF_TYPE_INT32, &kv), SD_ERR_BAD_MODEL);
    cr_assert(strstr(sd_last_error(), "array of STRING"), "%s", sd_last_error());
    cr_assert_eq(gguf_get_arr(f, "arr.INT32", GGUF_TYPE_COUNT, &kv), SD_OK);
    gguf_close(f);
    free(buf);
    gguf_writer_free(w);
}

/* A hand-made v3 file: one kv holding [[1, 2], ["x"]] (array of arrays), then "after" = 7. */
Test(gguf_reader, nested_arrays_are_skipped)
{
    uint8_t file[256];
    size_t n = 0;
#define PUT(v)                                                                                     \
    do {                                                                                           \
        __typeof__(v) x_ = (v);                                                                    \
        memcpy(file + n, &x_, sizeof x_);                                                          \
        n += sizeof x_;                                                                            \
    } while (0)
#define PUTS(s)                                                                                    \
    do {                                                                                           \
        PUT((uint64_t)strlen(s));                                                                  \
        memcpy(file + n, s, strlen(s));                                                            \
        n += strlen(s);                                                                            \
    } while (0)
    memcpy(file, "GGUF", 4);
    n = 4;
    PUT((uint32_t)3);
    PUT((uint64_t)0);
    PUT((uint64_t)2);
    PUTS("nested");
    PUT((uint32_t)GGUF_TYPE_ARRAY);
    PUT((uint32_t)GGUF_TYPE_ARRAY);
    PUT((uint64_t)2);
    PUT((uint32_t)GGUF_TYPE_INT32);
    PUT((uint64_t)2);
    PUT((int32_t)1);
    PUT((int32_t)2);
    PUT((uint32_t)GGUF_TYPE_STRING);
    PUT((uint64_t)1);
    PUTS("x");
    PUTS("after");
    PUT((uint32_t)GGUF_TYPE_UINT32);
    PUT((uint32_t)7);
#undef PUT
#undef PUTS
    gguf_file_t *f;
    cr_assert_eq(gguf_open_buffer(file, n, &f), SD_OK, "%s", sd_last_error());
    const gguf_kv_t *kv = gguf_find_kv(f, "nested");
    cr_assert_eq(kv->arr_type, GGUF_TYPE_ARRAY);
    cr_assert_eq(kv->arr_n, 2);
    cr_assert_null(kv->arr_data);
    uint32_t v;
    cr_assert_eq(gguf_get_u32(f, "after", &v), SD_OK);
    cr_assert_eq(v, 7);
    gguf_close(f);
}

static void fill(float *x, int64_t n, int seed)
{
    for (int64_t i = 0; i < n; i++) x[i] = sinf((float)(i * 7 + seed)) * 0.5f;
}

static const sd_dtype_t all_types[] = {SD_DTYPE_F32,  SD_DTYPE_F16,  SD_DTYPE_BF16, SD_DTYPE_Q8_0,
                                       SD_DTYPE_Q4_0, SD_DTYPE_Q4_1, SD_DTYPE_Q4_K, SD_DTYPE_Q6_K};

/* Writes one [256, 3] tensor of each type (plus a 3-d and a 1-d one) with the given alignment
 * and checks shapes, offsets, alignment and bytes. */
static void tensors_round_trip(uint32_t alignment)
{
    gguf_writer_t *w;
    cr_assert_eq(gguf_writer_new(&w), SD_OK);
    if (alignment != GGUF_DEFAULT_ALIGNMENT)
        cr_assert_eq(gguf_writer_set_u32(w, "general.alignment", alignment), SD_OK);
    const size_t nt = sizeof all_types / sizeof all_types[0];
    float src[256 * 3];
    void *enc[8];
    size_t enc_bytes[8];
    int64_t ne[2] = {256, 3};
    char name[64];
    for (size_t i = 0; i < nt; i++) {
        fill(src, 256 * 3, (int)i);
        snprintf(name, sizeof name, "t.%s", sd_dtype_name(all_types[i]));
        cr_assert_eq(gguf_writer_add_tensor_f32(w, name, all_types[i], 2, ne, src), SD_OK, "%s",
                     sd_last_error());
        size_t row;
        cr_assert_eq(sd_dtype_row_bytes(all_types[i], 256, &row), SD_OK);
        enc_bytes[i] = row * 3;
        enc[i] = malloc(enc_bytes[i]);
        for (int r = 0; r < 3; r++)
            sd_quantize_row(all_types[i], src + r * 256, (uint8_t *)enc[i] + r * row, 256);
    }
    float cube[2 * 3 * 4], vec[5] = {1, 2, 3, 4, 5};
    fill(cube, 24, 99);
    cr_assert_eq(
        gguf_writer_add_tensor(w, "cube", SD_DTYPE_F32, 3, (int64_t[]){2, 3, 4}, cube, sizeof cube),
        SD_OK);
    cr_assert_eq(gguf_writer_add_tensor(w, "vec", SD_DTYPE_F32, 1, (int64_t[]){5}, vec, sizeof vec),
                 SD_OK);
    void *buf;
    gguf_file_t *f = open_writer(w, &buf);
    cr_assert_eq(f->alignment, alignment);
    cr_assert_eq(f->data_offset % alignment, 0);
    cr_assert_eq(f->n_tensors, nt + 2);
    for (size_t i = 0; i < nt; i++) {
        snprintf(name, sizeof name, "t.%s", sd_dtype_name(all_types[i]));
        const gguf_tensor_t *t = gguf_find_tensor(f, name);
        cr_assert_not_null(t, "%s", name);
        cr_assert_eq(t->type, all_types[i]);
        cr_assert_eq(t->n_dims, 2);
        cr_assert(t->ne[0] == 256 && t->ne[1] == 3 && t->ne[2] == 1 && t->ne[3] == 1);
        cr_assert_eq(t->offset % alignment, 0, "%s offset %llu", name,
                     (unsigned long long)t->offset);
        cr_assert_eq(t->nbytes, enc_bytes[i]);
        cr_assert(memcmp(t->data, enc[i], enc_bytes[i]) == 0, "%s data differs", name);
        free(enc[i]);
    }
    const gguf_tensor_t *t = gguf_find_tensor(f, "cube");
    cr_assert(t->n_dims == 3 && t->ne[0] == 2 && t->ne[1] == 3 && t->ne[2] == 4 && t->ne[3] == 1);
    cr_assert(memcmp(t->data, cube, sizeof cube) == 0);
    t = gguf_find_tensor(f, "vec");
    cr_assert(t->n_dims == 1 && t->ne[0] == 5 && t->nbytes == sizeof vec);
    cr_assert(memcmp(t->data, vec, sizeof vec) == 0);
    cr_assert_null(gguf_find_tensor(f, "nope"));
    gguf_close(f);
    free(buf);
    gguf_writer_free(w);
}

Test(gguf_reader, tensors_of_every_type_default_alignment) { tensors_round_trip(32); }
Test(gguf_reader, tensors_with_custom_alignment) { tensors_round_trip(256); }
Test(gguf_reader, tensors_with_small_alignment) { tensors_round_trip(8); }

Test(gguf_reader, writer_rejects_bad_tensors)
{
    gguf_writer_t *w;
    cr_assert_eq(gguf_writer_new(&w), SD_OK);
    float x[64] = {0};
    cr_assert_eq(gguf_writer_add_tensor_f32(w, "q", SD_DTYPE_Q8_0, 1, (int64_t[]){48}, x),
                 SD_ERR_INVALID_ARG);
    cr_assert(strstr(sd_last_error(), "'q'") && strstr(sd_last_error(), "48") &&
                  strstr(sd_last_error(), "Q8_0"),
              "%s", sd_last_error());
    cr_assert_eq(gguf_writer_add_tensor(w, "a", SD_DTYPE_F32, 1, (int64_t[]){4}, x, 12),
                 SD_ERR_INVALID_ARG);
    cr_assert(strstr(sd_last_error(), "12"), "%s", sd_last_error());
    cr_assert_eq(gguf_writer_add_tensor(w, "a", SD_DTYPE_F32, 1, (int64_t[]){4}, x, 16), SD_OK);
    cr_assert_eq(gguf_writer_add_tensor(w, "a", SD_DTYPE_F32, 1, (int64_t[]){4}, x, 16),
                 SD_ERR_INVALID_ARG);
    cr_assert(strstr(sd_last_error(), "duplicate"), "%s", sd_last_error());
    cr_assert_eq(gguf_writer_add_tensor(w, "b", SD_DTYPE_F32, 5, (int64_t[]){1, 1, 1, 1, 1}, x, 4),
                 SD_ERR_INVALID_ARG);
    cr_assert_eq(gguf_writer_add_tensor(w, "c", SD_DTYPE_F32, 2, (int64_t[]){4, 0}, x, 0),
                 SD_ERR_INVALID_ARG);
    cr_assert_eq(gguf_writer_add_tensor(w, "d", (sd_dtype_t)16, 1, (int64_t[]){256}, x, 66),
                 SD_ERR_UNSUPPORTED_TYPE);
    cr_assert_eq(gguf_writer_set_u32(w, "general.alignment", 24), SD_OK);
    void *buf;
    size_t size;
    cr_assert_eq(gguf_writer_write_buffer(w, &buf, &size), SD_ERR_INVALID_ARG);
    cr_assert(strstr(sd_last_error(), "general.alignment 24"), "%s", sd_last_error());
    gguf_writer_free(w);
}

Test(gguf_reader, version_2_files_read)
{
    gguf_writer_t *w;
    cr_assert_eq(gguf_writer_new(&w), SD_OK);
    cr_assert_eq(gguf_writer_set_str(w, "general.architecture", "llama"), SD_OK);
    float x[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    cr_assert_eq(gguf_writer_add_tensor(w, "x", SD_DTYPE_F32, 2, (int64_t[]){4, 2}, x, sizeof x),
                 SD_OK);
    void *buf;
    size_t size;
    cr_assert_eq(gguf_writer_write_buffer(w, &buf, &size), SD_OK);
    uint32_t v2 = 2;
    memcpy((uint8_t *)buf + 4, &v2, 4);
    gguf_file_t *f;
    cr_assert_eq(gguf_open_buffer(buf, size, &f), SD_OK, "%s", sd_last_error());
    cr_assert_eq(f->version, 2);
    cr_assert(memcmp(gguf_find_tensor(f, "x")->data, x, sizeof x) == 0);
    gguf_close(f);
    free(buf);
    gguf_writer_free(w);
}

Test(gguf_reader, file_round_trip_through_mmap)
{
    gguf_writer_t *w;
    cr_assert_eq(gguf_writer_new(&w), SD_OK);
    cr_assert_eq(gguf_writer_set_str(w, "general.name", "mapped"), SD_OK);
    float x[32];
    fill(x, 32, 3);
    cr_assert_eq(gguf_writer_add_tensor_f32(w, "x", SD_DTYPE_Q8_0, 1, (int64_t[]){32}, x), SD_OK);
    char path[512];
    sd_test_tmp_path(path, sizeof path, "gguf-reader");
    cr_assert_eq(gguf_writer_write_file(w, path), SD_OK, "%s", sd_last_error());
    gguf_file_t *f;
    cr_assert_eq(gguf_open(path, &f), SD_OK, "%s", sd_last_error());
    cr_assert_eq(f->mapped, 1);
    gguf_str_t name;
    cr_assert_eq(gguf_get_str(f, "general.name", &name), SD_OK);
    cr_assert(gguf_str_eq(name, "mapped"));
    float back[32];
    sd_dequantize_row(SD_DTYPE_Q8_0, gguf_find_tensor(f, "x")->data, back, 32);
    for (int i = 0; i < 32; i++) cr_assert(fabsf(back[i] - x[i]) < 0.01f, "x[%d]", i);
    gguf_close(f);
    cr_assert_eq(gguf_writer_write_file(w, "/nonexistent-dir/x.gguf"), SD_ERR_IO);
    cr_assert(strstr(sd_last_error(), "/nonexistent-dir/x.gguf"), "%s", sd_last_error());
    remove(path);
    gguf_writer_free(w);
}

Test(gguf_reader, real_smollm2_file, .timeout = 60)
{
    const char *path = sd_test_real_model();
    if (path == NULL) cr_skip_test("real model not found (run scripts/fetch-model.sh)");
    gguf_file_t *f;
    cr_assert_eq(gguf_open(path, &f), SD_OK, "%s", sd_last_error());
    cr_assert_eq(f->version, 3);
    cr_assert_eq(f->n_tensors, 272);
    gguf_str_t arch;
    cr_assert_eq(gguf_get_str(f, "general.architecture", &arch), SD_OK);
    cr_assert(gguf_str_eq(arch, "llama"));
    const gguf_kv_t *tokens;
    cr_assert_eq(gguf_get_arr(f, "tokenizer.ggml.tokens", GGUF_TYPE_STRING, &tokens), SD_OK);
    cr_assert_eq(tokens->arr_n, 49152);
    cr_assert(gguf_str_eq(tokens->arr_strs[1], "<|im_start|>"));
    uint32_t n_layer;
    cr_assert_eq(gguf_get_u32(f, "llama.block_count", &n_layer), SD_OK);
    cr_assert_eq(n_layer, 30);
    const gguf_tensor_t *t = gguf_find_tensor(f, "token_embd.weight");
    cr_assert_not_null(t);
    cr_assert_eq(t->type, SD_DTYPE_Q8_0);
    cr_assert(t->n_dims == 2 && t->ne[0] == 576 && t->ne[1] == 49152);
    cr_assert_eq(t->nbytes, (size_t)49152 * 18 * 34);
    t = gguf_find_tensor(f, "blk.0.attn_q.weight");
    cr_assert_eq(t->type, SD_DTYPE_Q4_1);
    cr_assert_eq(gguf_find_tensor(f, "blk.29.ffn_norm.weight")->type, SD_DTYPE_F32);
    gguf_close(f);
}
