/* GGUF v3 writer: kvs and tensors collected in memory, serialized in insertion order. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/check.h"
#include "gguf/gguf.h"
#include "kernels/cpu/threadpool.h"

typedef struct wbuf {
    uint8_t *data;
    size_t len, cap;
} wbuf_t;

typedef struct wkv {
    char *key;
    wbuf_t value; /* u32 type id + encoded value */
} wkv_t;

typedef struct wtensor {
    char *name;
    sd_dtype_t type;
    uint32_t n_dims;
    int64_t ne[4];
    void *data;
    size_t nbytes;
    uint64_t offset;
} wtensor_t;

struct gguf_writer {
    wkv_t *kv;
    size_t n_kv, cap_kv;
    wtensor_t *tensors;
    size_t n_tensors, cap_tensors;
};

static sd_status_t wbuf_put(wbuf_t *b, const void *src, size_t n)
{
    if (n > b->cap - b->len) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->len < n) {
            if (cap > SIZE_MAX / 2)
                return sd_set_error(SD_ERR_OUT_OF_MEMORY, "GGUF writer: buffer of %zu + %zu bytes",
                                    b->len, n);
            cap *= 2;
        }
        uint8_t *p = realloc(b->data, cap);
        SD_ALLOC_CHECK(p, cap, "GGUF writer buffer");
        b->data = p;
        b->cap = cap;
    }
    if (n) memcpy(b->data + b->len, src, n);
    b->len += n;
    return SD_OK;
}

static sd_status_t wbuf_u32(wbuf_t *b, uint32_t v) { return wbuf_put(b, &v, sizeof v); }
static sd_status_t wbuf_u64(wbuf_t *b, uint64_t v) { return wbuf_put(b, &v, sizeof v); }

static sd_status_t wbuf_str(wbuf_t *b, const char *s)
{
    size_t n = strlen(s);
    SD_CHECK(wbuf_u64(b, n));
    return wbuf_put(b, s, n);
}

static sd_status_t wbuf_zeros(wbuf_t *b, size_t n)
{
    static const uint8_t zeros[64];
    while (n > 0) {
        size_t k = n < sizeof zeros ? n : sizeof zeros;
        SD_CHECK(wbuf_put(b, zeros, k));
        n -= k;
    }
    return SD_OK;
}

sd_status_t gguf_writer_new(gguf_writer_t **out)
{
    if (out == NULL) return sd_set_error(SD_ERR_INVALID_ARG, "gguf_writer_new: NULL out");
    *out = calloc(1, sizeof **out);
    SD_ALLOC_CHECK(*out, sizeof **out, "gguf_writer_t");
    return SD_OK;
}

void gguf_writer_free(gguf_writer_t *w)
{
    if (w == NULL) return;
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kv[i].key);
        free(w->kv[i].value.data);
    }
    for (size_t i = 0; i < w->n_tensors; i++) {
        free(w->tensors[i].name);
        free(w->tensors[i].data);
    }
    free(w->kv);
    free(w->tensors);
    free(w);
}

/* Grows a table of `size`-byte items to hold one more. */
static sd_status_t grow(void **items, size_t *cap, size_t n, size_t size, const char *what)
{
    if (n < *cap) return SD_OK;
    size_t c = *cap ? *cap * 2 : 16;
    void *p = realloc(*items, c * size);
    SD_ALLOC_CHECK(p, c * size, what);
    *items = p;
    *cap = c;
    return SD_OK;
}

/* The kv slot for `key`, emptied: an existing key is overwritten in place. */
static sd_status_t kv_slot(gguf_writer_t *w, const char *key, wbuf_t **out)
{
    if (w == NULL || key == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG, "gguf_writer: NULL %s", w ? "key" : "writer");
    for (size_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kv[i].key, key) == 0) {
            w->kv[i].value.len = 0;
            *out = &w->kv[i].value;
            return SD_OK;
        }
    }
    SD_CHECK(grow((void **)&w->kv, &w->cap_kv, w->n_kv, sizeof *w->kv, "GGUF writer kv table"));
    wkv_t *kv = &w->kv[w->n_kv];
    memset(kv, 0, sizeof *kv);
    kv->key = strdup(key);
    SD_ALLOC_CHECK(kv->key, strlen(key) + 1, "GGUF writer key");
    w->n_kv++;
    *out = &kv->value;
    return SD_OK;
}

sd_status_t gguf_writer_set_raw(gguf_writer_t *w, const char *key, gguf_type_t type,
                                const void *value)
{
    if (gguf_type_size(type) == 0)
        return sd_set_error(
            SD_ERR_INVALID_ARG,
            "gguf_writer_set_raw: key '%s': type %s (%d) is not a fixed-size scalar",
            key ? key : "(null)", gguf_type_name(type), (int)type);
    if (value == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG, "gguf_writer_set_raw: key '%s': NULL value",
                            key ? key : "(null)");
    wbuf_t *b;
    SD_CHECK(kv_slot(w, key, &b));
    SD_CHECK(wbuf_u32(b, type));
    return wbuf_put(b, value, gguf_type_size(type));
}

sd_status_t gguf_writer_set_u32(gguf_writer_t *w, const char *key, uint32_t v)
{
    return gguf_writer_set_raw(w, key, GGUF_TYPE_UINT32, &v);
}

sd_status_t gguf_writer_set_i32(gguf_writer_t *w, const char *key, int32_t v)
{
    return gguf_writer_set_raw(w, key, GGUF_TYPE_INT32, &v);
}

sd_status_t gguf_writer_set_f32(gguf_writer_t *w, const char *key, float v)
{
    return gguf_writer_set_raw(w, key, GGUF_TYPE_FLOAT32, &v);
}

sd_status_t gguf_writer_set_bool(gguf_writer_t *w, const char *key, bool v)
{
    uint8_t b = v ? 1 : 0;
    return gguf_writer_set_raw(w, key, GGUF_TYPE_BOOL, &b);
}

sd_status_t gguf_writer_set_str(gguf_writer_t *w, const char *key, const char *v)
{
    if (v == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG, "gguf_writer_set_str: key '%s': NULL value",
                            key ? key : "(null)");
    wbuf_t *b;
    SD_CHECK(kv_slot(w, key, &b));
    SD_CHECK(wbuf_u32(b, GGUF_TYPE_STRING));
    return wbuf_str(b, v);
}

sd_status_t gguf_writer_set_arr(gguf_writer_t *w, const char *key, gguf_type_t elem_type,
                                const void *elems, uint64_t n)
{
    size_t es = gguf_type_size(elem_type);
    if (es == 0)
        return sd_set_error(SD_ERR_INVALID_ARG,
                            "gguf_writer_set_arr: key '%s': element type %s (%d) is not a "
                            "fixed-size scalar (use gguf_writer_set_arr_str for strings)",
                            key ? key : "(null)", gguf_type_name(elem_type), (int)elem_type);
    if (elems == NULL && n > 0)
        return sd_set_error(SD_ERR_INVALID_ARG, "gguf_writer_set_arr: key '%s': NULL elements",
                            key ? key : "(null)");
    if (n > SIZE_MAX / es)
        return sd_set_error(SD_ERR_INVALID_ARG,
                            "gguf_writer_set_arr: key '%s': count %llu too large",
                            key ? key : "(null)", (unsigned long long)n);
    wbuf_t *b;
    SD_CHECK(kv_slot(w, key, &b));
    SD_CHECK(wbuf_u32(b, GGUF_TYPE_ARRAY));
    SD_CHECK(wbuf_u32(b, elem_type));
    SD_CHECK(wbuf_u64(b, n));
    return wbuf_put(b, elems, (size_t)n * es);
}

sd_status_t gguf_writer_set_arr_str(gguf_writer_t *w, const char *key, const char *const *strs,
                                    uint64_t n)
{
    for (uint64_t i = 0; i < n; i++)
        if (strs == NULL || strs[i] == NULL)
            return sd_set_error(SD_ERR_INVALID_ARG,
                                "gguf_writer_set_arr_str: key '%s': string %llu is NULL",
                                key ? key : "(null)", (unsigned long long)i);
    wbuf_t *b;
    SD_CHECK(kv_slot(w, key, &b));
    SD_CHECK(wbuf_u32(b, GGUF_TYPE_ARRAY));
    SD_CHECK(wbuf_u32(b, GGUF_TYPE_STRING));
    SD_CHECK(wbuf_u64(b, n));
    for (uint64_t i = 0; i < n; i++) SD_CHECK(wbuf_str(b, strs[i]));
    return SD_OK;
}

/* ---- tensors -------------------------------------------------------------- */

/* Validates a tensor's name, type and shape; *rows = ne[1]*ne[2]*ne[3], *row_bytes of ne[0]. */
static sd_status_t check_tensor(const gguf_writer_t *w, const char *name, sd_dtype_t type,
                                uint32_t n_dims, const int64_t *ne, uint64_t *rows,
                                size_t *row_bytes)
{
    if (w == NULL || name == NULL || ne == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG, "gguf_writer_add_tensor: NULL %s",
                            w == NULL      ? "writer"
                            : name == NULL ? "name"
                                           : "ne");
    for (size_t i = 0; i < w->n_tensors; i++)
        if (strcmp(w->tensors[i].name, name) == 0)
            return sd_set_error(SD_ERR_INVALID_ARG, "gguf_writer: duplicate tensor '%s'", name);
    if (n_dims < 1 || n_dims > 4)
        return sd_set_error(SD_ERR_INVALID_ARG, "gguf_writer: tensor '%s' n_dims %u not in 1..4",
                            name, n_dims);
    if (!sd_dtype_supported((uint32_t)type))
        return sd_set_error(
            SD_ERR_UNSUPPORTED_TYPE,
            "gguf_writer: tensor '%s' type %s (id %d) "
            "is not supported",
            name, sd_dtype_name((uint32_t)type) ? sd_dtype_name((uint32_t)type) : "unknown",
            (int)type);
    *rows = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        if (ne[d] < 1)
            return sd_set_error(SD_ERR_INVALID_ARG, "gguf_writer: tensor '%s' ne[%u] = %lld < 1",
                                name, d, (long long)ne[d]);
        if (d > 0 && __builtin_mul_overflow(*rows, (uint64_t)ne[d], rows))
            return sd_set_error(SD_ERR_INVALID_ARG, "gguf_writer: tensor '%s' size overflows",
                                name);
    }
    int64_t blk = sd_dtype_block_elems(type);
    if (ne[0] % blk != 0)
        return sd_set_error(SD_ERR_INVALID_ARG,
                            "gguf_writer: tensor '%s' ne[0] = %lld is not a multiple of the %s "
                            "block size %lld",
                            name, (long long)ne[0], sd_dtype_name((uint32_t)type), (long long)blk);
    SD_CHECK(sd_dtype_row_bytes(type, ne[0], row_bytes));
    uint64_t total;
    if (__builtin_mul_overflow(*rows, (uint64_t)*row_bytes, &total) || total > SIZE_MAX)
        return sd_set_error(SD_ERR_INVALID_ARG, "gguf_writer: tensor '%s' size overflows", name);
    return SD_OK;
}

/* Appends a tensor that takes ownership of `data` (freed by the caller on failure). */
static sd_status_t push_tensor(gguf_writer_t *w, const char *name, sd_dtype_t type, uint32_t n_dims,
                               const int64_t *ne, void *data, size_t nbytes)
{
    SD_CHECK(grow((void **)&w->tensors, &w->cap_tensors, w->n_tensors, sizeof *w->tensors,
                  "GGUF writer tensor table"));
    wtensor_t *t = &w->tensors[w->n_tensors];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    SD_ALLOC_CHECK(t->name, strlen(name) + 1, "GGUF writer tensor name");
    t->type = type;
    t->n_dims = n_dims;
    for (int d = 0; d < 4; d++) t->ne[d] = d < (int)n_dims ? ne[d] : 1;
    t->data = data;
    t->nbytes = nbytes;
    w->n_tensors++;
    return SD_OK;
}

sd_status_t gguf_writer_add_tensor(gguf_writer_t *w, const char *name, sd_dtype_t type,
                                   uint32_t n_dims, const int64_t *ne, const void *data,
                                   size_t nbytes)
{
    uint64_t rows;
    size_t row_bytes;
    SD_CHECK(check_tensor(w, name, type, n_dims, ne, &rows, &row_bytes));
    if (rows * row_bytes != nbytes)
        return sd_set_error(SD_ERR_INVALID_ARG,
                            "gguf_writer: tensor '%s' has %zu bytes, its shape and type need %llu",
                            name, nbytes, (unsigned long long)(rows * row_bytes));
    if (data == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG, "gguf_writer: tensor '%s' NULL data", name);
    void *copy = malloc(nbytes);
    SD_ALLOC_CHECK(copy, nbytes, name);
    memcpy(copy, data, nbytes);
    sd_status_t st = push_tensor(w, name, type, n_dims, ne, copy, nbytes);
    if (st != SD_OK) free(copy);
    return st;
}

/* Encoding rows in parallel: only for tensors large enough to pay for a thread pool (a
 * model's matrices; the result is the same bytes whatever the thread count). */
#define ENCODE_PARALLEL_MIN_ELEMS (4u << 20)
#define ENCODE_ROWS_PER_TASK 64

typedef struct encode_job {
    sd_dtype_t type;
    const float *src; /* [rows, ne0] */
    uint8_t *dst;     /* [rows, row_bytes] */
    uint64_t rows;
    int64_t ne0;
    size_t row_bytes;
} encode_job_t;

static void encode_rows(void *arg, int task)
{
    const encode_job_t *j = arg;
    uint64_t r0 = (uint64_t)task * ENCODE_ROWS_PER_TASK;
    uint64_t r1 = r0 + ENCODE_ROWS_PER_TASK < j->rows ? r0 + ENCODE_ROWS_PER_TASK : j->rows;
    for (uint64_t r = r0; r < r1; r++)
        sd_quantize_row(j->type, j->src + r * (uint64_t)j->ne0, j->dst + r * j->row_bytes, j->ne0);
}

static void encode_tensor(const encode_job_t *j)
{
    uint64_t tasks = (j->rows + ENCODE_ROWS_PER_TASK - 1) / ENCODE_ROWS_PER_TASK;
    sd_threadpool_t *pool = NULL;
    if (j->rows * (uint64_t)j->ne0 >= ENCODE_PARALLEL_MIN_ELEMS && tasks > 1 && tasks < INT32_MAX &&
        sd_threadpool_create(0, &pool) == SD_OK) {
        sd_threadpool_run(pool, (int)tasks, encode_rows, (void *)j);
        sd_threadpool_destroy(pool);
        return;
    }
    for (uint64_t t = 0; t < tasks; t++) encode_rows((void *)j, (int)t);
}

sd_status_t gguf_writer_add_tensor_f32(gguf_writer_t *w, const char *name, sd_dtype_t type,
                                       uint32_t n_dims, const int64_t *ne, const float *src)
{
    uint64_t rows;
    size_t row_bytes;
    SD_CHECK(check_tensor(w, name, type, n_dims, ne, &rows, &row_bytes));
    if (src == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG, "gguf_writer: tensor '%s' NULL src", name);
    size_t nbytes = (size_t)(rows * row_bytes);
    uint8_t *enc = malloc(nbytes ? nbytes : 1);
    SD_ALLOC_CHECK(enc, nbytes, name);
    /* enc[rows, row_bytes] <- src[rows, ne[0]] */
    encode_tensor(&(encode_job_t){type, src, enc, rows, ne[0], row_bytes});
    sd_status_t st = push_tensor(w, name, type, n_dims, ne, enc, nbytes);
    if (st != SD_OK) free(enc);
    return st;
}

/* ---- serialization ------------------------------------------------------------ */

static size_t pad_to(size_t n, size_t align) { return (align - n % align) % align; }

static sd_status_t writer_alignment(const gguf_writer_t *w, size_t *out)
{
    *out = GGUF_DEFAULT_ALIGNMENT;
    for (size_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kv[i].key, "general.alignment") != 0) continue;
        uint32_t type, a;
        memcpy(&type, w->kv[i].value.data, 4);
        if (type != GGUF_TYPE_UINT32)
            return sd_set_error(SD_ERR_INVALID_ARG,
                                "gguf_writer: general.alignment has type %s, "
                                "expected UINT32",
                                gguf_type_name(type));
        memcpy(&a, w->kv[i].value.data + 4, 4);
        if (a == 0 || (a & (a - 1)) != 0)
            return sd_set_error(SD_ERR_INVALID_ARG,
                                "gguf_writer: general.alignment %u is not a non-zero power of two",
                                a);
        *out = a;
    }
    return SD_OK;
}

/* Header, kvs, tensor infos and the padding before the data section; sets tensor
 * offsets and *total (the whole file's size). */
static sd_status_t build_header(gguf_writer_t *w, wbuf_t *h, size_t *align, size_t *total)
{
    SD_CHECK(writer_alignment(w, align));
    SD_CHECK(wbuf_put(h, "GGUF", 4));
    SD_CHECK(wbuf_u32(h, 3));
    SD_CHECK(wbuf_u64(h, w->n_tensors));
    SD_CHECK(wbuf_u64(h, w->n_kv));
    for (size_t i = 0; i < w->n_kv; i++) {
        SD_CHECK(wbuf_str(h, w->kv[i].key));
        SD_CHECK(wbuf_put(h, w->kv[i].value.data, w->kv[i].value.len));
    }
    uint64_t offset = 0;
    for (size_t i = 0; i < w->n_tensors; i++) {
        wtensor_t *t = &w->tensors[i];
        t->offset = offset;
        SD_CHECK(wbuf_str(h, t->name));
        SD_CHECK(wbuf_u32(h, t->n_dims));
        for (uint32_t d = 0; d < t->n_dims; d++) SD_CHECK(wbuf_u64(h, (uint64_t)t->ne[d]));
        SD_CHECK(wbuf_u32(h, (uint32_t)t->type));
        SD_CHECK(wbuf_u64(h, t->offset));
        offset += t->nbytes + pad_to(t->nbytes, *align);
    }
    SD_CHECK(wbuf_zeros(h, pad_to(h->len, *align)));
    *total = h->len + (size_t)offset;
    return SD_OK;
}

sd_status_t gguf_writer_write_buffer(gguf_writer_t *w, void **out, size_t *size)
{
    if (w == NULL || out == NULL || size == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG, "gguf_writer_write_buffer: NULL argument");
    wbuf_t h = {0};
    size_t align, total;
    sd_status_t st = build_header(w, &h, &align, &total);
    uint8_t *buf = st == SD_OK ? malloc(total) : NULL;
    if (st == SD_OK && buf == NULL)
        st = sd_set_error(SD_ERR_OUT_OF_MEMORY,
                          "out of memory allocating %zu bytes for a GGUF file", total);
    if (st == SD_OK) {
        memcpy(buf, h.data, h.len);
        memset(buf + h.len, 0, total - h.len);
        for (size_t i = 0; i < w->n_tensors; i++)
            memcpy(buf + h.len + w->tensors[i].offset, w->tensors[i].data, w->tensors[i].nbytes);
        *out = buf;
        *size = total;
    }
    free(h.data);
    return st;
}

static sd_status_t write_all(FILE *fp, const void *p, size_t n, const char *path)
{
    if (n > 0 && fwrite(p, 1, n, fp) != n)
        return sd_set_error(SD_ERR_IO, "cannot write '%s': %s", path, strerror(errno));
    return SD_OK;
}

static sd_status_t write_stream(gguf_writer_t *w, FILE *fp, const char *path)
{
    static const uint8_t zeros[GGUF_DEFAULT_ALIGNMENT];
    wbuf_t h = {0};
    size_t align, total;
    sd_status_t st = build_header(w, &h, &align, &total);
    if (st == SD_OK) st = write_all(fp, h.data, h.len, path);
    free(h.data);
    for (size_t i = 0; st == SD_OK && i < w->n_tensors; i++) {
        st = write_all(fp, w->tensors[i].data, w->tensors[i].nbytes, path);
        for (size_t pad = pad_to(w->tensors[i].nbytes, align); st == SD_OK && pad > 0;) {
            size_t k = pad < sizeof zeros ? pad : sizeof zeros;
            st = write_all(fp, zeros, k, path);
            pad -= k;
        }
    }
    return st;
}

sd_status_t gguf_writer_write_file(gguf_writer_t *w, const char *path)
{
    if (w == NULL || path == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG, "gguf_writer_write_file: NULL %s",
                            w ? "path" : "writer");
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp%ld", path, (long)getpid()) >= sizeof tmp)
        return sd_set_error(SD_ERR_INVALID_ARG, "gguf_writer: path too long: '%s'", path);
    FILE *fp = fopen(tmp, "wb");
    if (fp == NULL) return sd_set_error(SD_ERR_IO, "cannot create '%s': %s", tmp, strerror(errno));
    sd_status_t st = write_stream(w, fp, tmp);
    if (fclose(fp) != 0 && st == SD_OK)
        st = sd_set_error(SD_ERR_IO, "cannot write '%s': %s", tmp, strerror(errno));
    if (st == SD_OK && rename(tmp, path) != 0)
        st = sd_set_error(SD_ERR_IO, "cannot rename '%s' to '%s': %s", tmp, path, strerror(errno));
    if (st != SD_OK) unlink(tmp);
    return st;
}
