/* The corrupt-GGUF table: a small valid file from the writer, broken one field at a time.
 * Each case must give its status and a message naming the field, and never crash (run it
 * under ASan+UBSan: every file sits in an exactly-sized heap buffer). */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "gguf/gguf.h"
#include "support/test_util.h"

/* kvs: general.architecture, general.alignment, k.u32, k.aaa, k.bbb, k.arr, k.strs;
 * tensors: t.one F32 [8, 2] (64 bytes), t.two Q8_0 [32, 2] (68 bytes). */
static void base_file(uint8_t **buf, size_t *size)
{
    gguf_writer_t *w;
    cr_assert_eq(gguf_writer_new(&w), SD_OK);
    cr_assert_eq(gguf_writer_set_str(w, "general.architecture", "llama"), SD_OK);
    cr_assert_eq(gguf_writer_set_u32(w, "general.alignment", 32), SD_OK);
    cr_assert_eq(gguf_writer_set_u32(w, "k.u32", 7), SD_OK);
    cr_assert_eq(gguf_writer_set_i32(w, "k.aaa", 1), SD_OK);
    cr_assert_eq(gguf_writer_set_i32(w, "k.bbb", 2), SD_OK);
    int32_t arr[3] = {1, 2, 3};
    cr_assert_eq(gguf_writer_set_arr(w, "k.arr", GGUF_TYPE_INT32, arr, 3), SD_OK);
    const char *strs[] = {"x", "yz"};
    cr_assert_eq(gguf_writer_set_arr_str(w, "k.strs", strs, 2), SD_OK);
    float x[64];
    for (int i = 0; i < 64; i++) x[i] = (float)i / 64.0f;
    cr_assert_eq(gguf_writer_add_tensor_f32(w, "t.one", SD_DTYPE_F32, 2, (int64_t[]){8, 2}, x),
                 SD_OK);
    cr_assert_eq(gguf_writer_add_tensor_f32(w, "t.two", SD_DTYPE_Q8_0, 2, (int64_t[]){32, 2}, x),
                 SD_OK);
    void *out;
    cr_assert_eq(gguf_writer_write_buffer(w, &out, size), SD_OK, "%s", sd_last_error());
    *buf = out;
    gguf_writer_free(w);
}

/* Offset just past the first occurrence of needle (a key or tensor name) in buf. */
static size_t after(const uint8_t *buf, size_t size, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= size; i++)
        if (memcmp(buf + i, needle, n) == 0) return i + n;
    cr_assert_fail("'%s' not in the base file", needle);
    return 0;
}

static void put_u32(uint8_t *buf, size_t pos, uint32_t v) { memcpy(buf + pos, &v, 4); }
static void put_u64(uint8_t *buf, size_t pos, uint64_t v) { memcpy(buf + pos, &v, 8); }

static uint64_t get_u64(const uint8_t *buf, size_t pos)
{
    uint64_t v;
    memcpy(&v, buf + pos, 8);
    return v;
}

/* Opens a copy of buf[0..size) in an exactly-sized heap buffer. */
static sd_status_t open_copy(const uint8_t *buf, size_t size)
{
    uint8_t *copy = malloc(size ? size : 1);
    memcpy(copy, buf, size);
    gguf_file_t *f = NULL;
    sd_status_t st = gguf_open_buffer(copy, size, &f);
    cr_assert((st == SD_OK) == (f != NULL), "out set only on success");
    gguf_close(f);
    free(copy);
    return st;
}

/* Parameters are copied into the test process: no pointers in them. */
typedef struct corrupt_case {
    char name[40];
    int which; /* see corrupt() */
    sd_status_t status;
    char needle[72]; /* must appear in sd_last_error() */
} corrupt_case_t;

static void corrupt(uint8_t *b, size_t size, int which)
{
    /* tensor info fields: name, n_dims u32, ne u64 x 2, type u32, offset u64 */
    size_t one = after(b, size, "t.one"), two = after(b, size, "t.two");
    switch (which) {
    case 0: b[0] = 'X'; break;
    case 1: put_u32(b, 4, 1); break;
    case 2: put_u32(b, 4, 4); break;
    case 3: put_u32(b, 4, 0xFFFFFFFFu); break;
    case 4: put_u64(b, 8, 1ull << 63); break;
    case 5: put_u64(b, 8, 1ull << 40); break;
    case 6: put_u64(b, 16, 1ull << 63); break;
    case 7: put_u64(b, 16, 1ull << 40); break;
    case 8: put_u64(b, 24, UINT64_MAX); break;
    case 9: put_u32(b, after(b, size, "k.u32"), 13); break;
    case 10: put_u32(b, after(b, size, "k.u32"), 0xFFFF); break;
    case 11: put_u64(b, after(b, size, "k.arr") + 8, 1ull << 62); break;
    case 12: put_u32(b, after(b, size, "k.arr") + 4, 13); break;
    case 13: put_u64(b, after(b, size, "k.strs") + 8, 1ull << 61); break;
    case 14: put_u64(b, after(b, size, "k.strs") + 16, 1ull << 60); break;
    case 15: put_u64(b, after(b, size, "general.architecture") + 4, 1ull << 50); break;
    case 16: put_u32(b, one, 0); break;
    case 17: put_u32(b, one, 5); break;
    case 18: put_u64(b, one + 4, 0); break;
    case 19:
        put_u64(b, one + 4, 1ull << 62);
        put_u64(b, one + 12, 1ull << 62);
        break;
    case 20: put_u64(b, two + 12, 1ull << 40); break;
    case 21: put_u32(b, one + 20, 99); break;
    case 22: put_u32(b, one + 20, 16); break;
    case 23: put_u64(b, two + 24, 1ull << 20); break;
    case 24: put_u64(b, two + 24, UINT64_MAX - 31); break;
    case 25: put_u64(b, two + 24, get_u64(b, two + 24) + 4); break;
    case 26: put_u32(b, after(b, size, "general.alignment") + 4, 0); break;
    case 27: put_u32(b, after(b, size, "general.alignment") + 4, 3); break;
    case 28: memcpy(b + after(b, size, "k.bbb") - 3, "aaa", 3); break;
    case 29: memcpy(b + two - 3, "one", 3); break;
    case 30: put_u64(b, two + 4, 16); break;
    case 31: put_u32(b, after(b, size, "general.alignment"), GGUF_TYPE_FLOAT32); break;
    case 32: put_u64(b, one + 4, 1ull << 63); break;
    default: cr_assert_fail("no corruption %d", which);
    }
}

#define BAD SD_ERR_BAD_MODEL
ParameterizedTestParameters(gguf_corrupt, table)
{
    static corrupt_case_t cases[] = {
        {"bad magic", 0, BAD, "bad magic 58"},
        {"version 1", 1, BAD, "version 1 "},
        {"version 4", 2, BAD, "version 4 "},
        {"version max", 3, BAD, "version 4294967295"},
        {"tensor_count 2^63", 4, BAD, "tensor_count 9223372036854775808"},
        {"tensor_count 2^40", 5, BAD, "tensor_count 1099511627776"},
        {"kv_count 2^63", 6, BAD, "kv_count 9223372036854775808"},
        {"kv_count 2^40", 7, BAD, "kv_count 1099511627776"},
        {"huge key length", 8, BAD, "kv[0] key length 18446744073709551615"},
        {"value type 13", 9, BAD, "'k.u32' value type 13"},
        {"value type 0xFFFF", 10, BAD, "'k.u32' value type 65535"},
        {"huge array count", 11, BAD, "'k.arr' array count 4611686018427387904"},
        {"array element type 13", 12, BAD, "'k.arr' array element type 13"},
        {"huge string array count", 13, BAD, "'k.strs' array count 2305843009213693952"},
        {"huge array string length", 14, BAD, "'k.strs' length 1152921504606846976"},
        {"huge string value length", 15, BAD, "'general.architecture' length 1125899906842624"},
        {"n_dims 0", 16, BAD, "'t.one' n_dims 0"},
        {"n_dims 5", 17, BAD, "'t.one' n_dims 5"},
        {"ne 0", 18, BAD, "'t.one' ne[0] = 0"},
        {"ne product overflow", 19, BAD, "'t.one' size overflows"},
        {"ne past end", 20, BAD, "'t.two' data [offset 64, +"},
        {"unknown type 99", 21, SD_ERR_UNSUPPORTED_TYPE, "'t.one' has unknown type id 99"},
        {"unsupported IQ2_XXS", 22, SD_ERR_UNSUPPORTED_TYPE, "'t.one' has type IQ2_XXS (id 16)"},
        {"offset past end", 23, BAD, "'t.two' data [offset 1048576, +68)"},
        {"offset wraps", 24, BAD, "'t.two' data [offset 18446744073709551584"},
        {"misaligned offset", 25, BAD, "'t.two' offset 68 is not a multiple of the alignment 32"},
        {"alignment 0", 26, BAD, "general.alignment 0"},
        {"alignment 3", 27, BAD, "general.alignment 3"},
        {"duplicate key", 28, BAD, "duplicate key 'k.aaa'"},
        {"duplicate tensor", 29, BAD, "duplicate tensor name 't.one'"},
        {"ne[0] off block", 30, BAD, "'t.two' ne[0] = 16 is not a multiple of the Q8_0 block"},
        {"alignment type", 31, BAD, "'general.alignment' has type FLOAT32"},
        {"ne 2^63", 32, BAD, "'t.one' ne[0] = 9223372036854775808"},
    };
    return cr_make_param_array(corrupt_case_t, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(corrupt_case_t *c, gguf_corrupt, table)
{
    uint8_t *buf;
    size_t size;
    base_file(&buf, &size);
    cr_assert_eq(open_copy(buf, size), SD_OK, "base file: %s", sd_last_error());
    corrupt(buf, size, c->which);
    sd_status_t st = open_copy(buf, size);
    cr_assert_eq(st, c->status, "%s: got %s (%s)", c->name, sd_status_string(st), sd_last_error());
    cr_assert(strstr(sd_last_error(), c->needle), "%s: '%s' not in: %s", c->name, c->needle,
              sd_last_error());
    free(buf);
}

/* Where the last tensor's bytes end (the file continues with padding only). */
static size_t data_end(const uint8_t *buf, size_t size, size_t *data_offset)
{
    gguf_file_t *f;
    cr_assert_eq(gguf_open_buffer(buf, size, &f), SD_OK);
    size_t end = 0;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        size_t e = f->data_offset + f->tensors[i].offset + f->tensors[i].nbytes;
        if (e > end) end = e;
    }
    *data_offset = f->data_offset;
    gguf_close(f);
    return end;
}

Test(gguf_corrupt, truncated_at_every_byte, .timeout = 120)
{
    uint8_t *buf;
    size_t size, data_offset;
    base_file(&buf, &size);
    size_t end = data_end(buf, size, &data_offset);
    cr_assert_gt(data_offset, 200, "the header region is a few hundred bytes");
    for (size_t n = 0; n < end; n++) {
        sd_status_t st = open_copy(buf, n);
        cr_assert_eq(st, SD_ERR_BAD_MODEL, "prefix %zu of %zu: %s (%s)", n, size,
                     sd_status_string(st), sd_last_error());
        const char *e = sd_last_error();
        cr_assert(strncmp(e, "GGUF: ", 6) == 0 &&
                      (strstr(e, "truncated") || strstr(e, "past end") || strstr(e, "exceeds")),
                  "prefix %zu: %s", n, e);
        if (n >= data_offset) cr_assert(strstr(e, "data [offset"), "prefix %zu: %s", n, e);
    }
    /* cut inside the last tensor's padding: every byte of data is still there */
    for (size_t n = end; n <= size; n++) cr_assert_eq(open_copy(buf, n), SD_OK, "prefix %zu", n);
    free(buf);
}

Test(gguf_corrupt, truncated_field_is_named)
{
    uint8_t *buf;
    size_t size;
    base_file(&buf, &size);
    struct {
        size_t n;
        const char *needle;
    } cuts[] = {
        {2, "magic truncated at offset 0"},
        {6, "version truncated"},
        {12, "tensor_count truncated"},
        {20, "kv_count truncated"},
        {28, "kv_count 7 exceeds what the 4 bytes left can hold"},
        {after(buf, size, "k.strs") + 2, "kv[6] 'k.strs' value type truncated"},
        {after(buf, size, "t.one") + 2, "'t.one' n_dims truncated"},
        {after(buf, size, "t.one") + 14, "'t.one' ne[1] truncated"},
        {after(buf, size, "t.one") + 22, "'t.one' type truncated"},
        {after(buf, size, "t.one") + 26, "'t.one' offset truncated"},
        {after(buf, size, "k.arr") + 6, "'k.arr' array element type truncated"},
        {after(buf, size, "k.arr") + 10, "'k.arr' array count truncated"},
    };
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        cr_assert_eq(open_copy(buf, cuts[i].n), SD_ERR_BAD_MODEL);
        cr_assert(strstr(sd_last_error(), cuts[i].needle), "cut %zu: '%s' not in: %s", cuts[i].n,
                  cuts[i].needle, sd_last_error());
    }
    free(buf);
}

/* Deterministic byte flips over the header region: any status is fine, a crash is not. */
Test(gguf_corrupt, random_byte_flips_never_crash, .timeout = 120)
{
    uint8_t *buf;
    size_t size, data_offset;
    base_file(&buf, &size);
    data_end(buf, size, &data_offset);
    uint8_t *m = malloc(size);
    uint64_t s = 42;
    int failures = 0;
    for (int iter = 0; iter < 3000; iter++) {
        memcpy(m, buf, size);
        for (int k = 0; k < 1 + iter % 4; k++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            m[(s >> 33) % data_offset] ^= (uint8_t)(1u << ((s >> 20) % 8));
        }
        sd_status_t st = open_copy(m, size);
        cr_assert(st == SD_OK || st == SD_ERR_BAD_MODEL || st == SD_ERR_UNSUPPORTED_TYPE,
                  "iter %d: %s", iter, sd_status_string(st));
        failures += st != SD_OK;
    }
    cr_assert_gt(failures, 1000, "most flips are detected (%d)", failures);
    free(m);
    free(buf);
}

Test(gguf_corrupt, empty_and_missing_files)
{
    cr_assert_eq(open_copy((const uint8_t *)"", 0), SD_ERR_BAD_MODEL);
    cr_assert(strstr(sd_last_error(), "magic truncated"), "%s", sd_last_error());
    char path[512];
    sd_test_tmp_path(path, sizeof path, "empty");
    FILE *fp = fopen(path, "wb");
    cr_assert_not_null(fp);
    fclose(fp);
    gguf_file_t *f = NULL;
    cr_assert_eq(gguf_open(path, &f), SD_ERR_BAD_MODEL);
    cr_assert(strstr(sd_last_error(), "empty"), "%s", sd_last_error());
    cr_assert_null(f);
    remove(path);
    cr_assert_eq(gguf_open("/nonexistent/model.gguf", &f), SD_ERR_IO);
    cr_assert(strstr(sd_last_error(), "/nonexistent/model.gguf"), "%s", sd_last_error());
    cr_assert_eq(gguf_open("/tmp", &f), SD_ERR_IO);
    cr_assert(strstr(sd_last_error(), "not a regular file"), "%s", sd_last_error());
}

Test(gguf_corrupt, truncated_file_on_disk)
{
    uint8_t *buf;
    size_t size;
    base_file(&buf, &size);
    char path[512];
    sd_test_tmp_path(path, sizeof path, "cut");
    FILE *fp = fopen(path, "wb");
    cr_assert_eq(fwrite(buf, 1, size - 40, fp), size - 40);
    fclose(fp);
    gguf_file_t *f = NULL;
    cr_assert_eq(gguf_open(path, &f), SD_ERR_BAD_MODEL);
    cr_assert(strstr(sd_last_error(), "'t.two' data [offset"), "%s", sd_last_error());
    remove(path);
    free(buf);
}

/* Names and strings from the file reach messages escaped: a crafted key, tensor name or
 * architecture writes no control byte to the user's terminal, and a name is shown whole
 * (an embedded NUL does not cut it). */
static void assert_printable(const char *what)
{
    const char *e = sd_last_error();
    for (const unsigned char *p = (const unsigned char *)e; *p; p++)
        cr_assert(*p >= 0x20 && *p != 0x7f, "%s: byte 0x%02x at %zu in the message", what, *p,
                  (size_t)(p - (const unsigned char *)e));
    cr_assert(strstr(e, "\\x1b[31m") != NULL, "%s: '%s' does not show the escape", what, e);
}

Test(gguf_corrupt, file_text_in_messages_is_escaped)
{
    gguf_writer_t *w;
    cr_assert_eq(gguf_writer_new(&w), SD_OK);
    cr_assert_eq(gguf_writer_set_str(w, "general.architecture", "\x1b[31mllama\x1b[0m"), SD_OK);
    cr_assert_eq(gguf_writer_set_i32(w, "k.\x1b[31mA\x1b[2J", 1), SD_OK);
    cr_assert_eq(gguf_writer_set_i32(w, "k.\x1b[31mB\x1b[2J", 2), SD_OK);
    cr_assert_eq(gguf_writer_set_i32(w, "k.\x1b[31mNUL", 3), SD_OK);
    float x[8] = {0};
    cr_assert_eq(gguf_writer_add_tensor_f32(w, "t.\x1b[31m\x1b]0;title\x07", SD_DTYPE_F32, 1,
                                            (int64_t[]){8}, x), SD_OK);
    uint8_t *buf;
    size_t size;
    cr_assert_eq(gguf_writer_write_buffer(w, (void **)&buf, &size), SD_OK, "%s", sd_last_error());
    gguf_writer_free(w);

    uint8_t *b = malloc(size); /* duplicate key: B becomes A */
    memcpy(b, buf, size);
    b[after(b, size, "k.\x1b[31mB") - 1] = 'A';
    cr_assert_eq(open_copy(b, size), SD_ERR_BAD_MODEL);
    assert_printable("duplicate key");
    cr_assert(strstr(sd_last_error(), "'k.\\x1b[31mA\\x1b[2J'"), "%s", sd_last_error());

    memcpy(b, buf, size); /* a NUL inside a key, and that kv's value type broken */
    size_t end = after(b, size, "k.\x1b[31mNUL");
    b[end - 3] = '\0';
    put_u32(b, end, 99);
    cr_assert_eq(open_copy(b, size), SD_ERR_BAD_MODEL);
    assert_printable("NUL in a key");
    cr_assert(strstr(sd_last_error(), "'k.\\x1b[31m\\x00UL'"), "%s", sd_last_error());

    memcpy(b, buf, size); /* a tensor of unknown type */
    put_u32(b, after(b, size, "\x07") + 4 + 8, 99);
    cr_assert_eq(open_copy(b, size), SD_ERR_UNSUPPORTED_TYPE);
    assert_printable("tensor name");
    cr_assert(strstr(sd_last_error(), "\\x1b]0;title\\x07"), "%s", sd_last_error());
    free(b);

    gguf_file_t *f = NULL; /* the architecture: a string value, through the model layer's lookup */
    cr_assert_eq(gguf_open_buffer(buf, size, &f), SD_OK, "%s", sd_last_error());
    gguf_str_t arch;
    cr_assert_eq(gguf_get_str(f, "general.architecture", &arch), SD_OK);
    sd_set_error(SD_ERR_UNSUPPORTED_ARCH, "architecture '%.*s'", (int)arch.len, arch.data);
    assert_printable("a value through sd_set_error");
    gguf_close(f);
    free(buf);
}
