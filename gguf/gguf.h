/* GGUF v2/v3 reader (mmap or caller's buffer, zero-copy, fully validated) and writer. */
#ifndef SPECDEC_GGUF_GGUF_H
#define SPECDEC_GGUF_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/dtype.h"
#include "specdec/specdec.h"

#define GGUF_DEFAULT_ALIGNMENT 32

typedef enum gguf_type {
    GGUF_TYPE_UINT8 = 0,
    GGUF_TYPE_INT8 = 1,
    GGUF_TYPE_UINT16 = 2,
    GGUF_TYPE_INT16 = 3,
    GGUF_TYPE_UINT32 = 4,
    GGUF_TYPE_INT32 = 5,
    GGUF_TYPE_FLOAT32 = 6,
    GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8,
    GGUF_TYPE_ARRAY = 9,
    GGUF_TYPE_UINT64 = 10,
    GGUF_TYPE_INT64 = 11,
    GGUF_TYPE_FLOAT64 = 12,
    GGUF_TYPE_COUNT
} gguf_type_t;

/* A string inside the file: NOT NUL-terminated. */
typedef struct gguf_str {
    const char *data;
    uint64_t len;
} gguf_str_t;

typedef struct gguf_kv {
    gguf_str_t key;
    gguf_type_t type;
    /* scalars, widened: unsigned -> u, signed -> i, float -> f, bool -> b */
    union {
        uint64_t u;
        int64_t i;
        double f;
        bool b;
        gguf_str_t str;
    } v;
    /* arrays (type == GGUF_TYPE_ARRAY): element type, count, raw little-endian
     * elements in the file; for string arrays `arr_strs` indexes every element.
     * Nested arrays are accepted and skipped (arr_data NULL). */
    gguf_type_t arr_type;
    uint64_t arr_n;
    const void *arr_data;
    gguf_str_t *arr_strs;
} gguf_kv_t;

typedef struct gguf_tensor {
    gguf_str_t name;
    uint32_t n_dims;
    int64_t ne[4]; /* unused dims are 1; ne[0] is the contiguous one */
    sd_dtype_t type;
    uint64_t offset; /* relative to the data section */
    size_t nbytes;
    const void *data; /* inside the mapping */
} gguf_tensor_t;

typedef struct gguf_file {
    uint32_t version;
    uint64_t n_kv;
    gguf_kv_t *kv;
    uint64_t n_tensors;
    gguf_tensor_t *tensors;
    size_t alignment;
    size_t data_offset;
    const uint8_t *base; /* whole file */
    size_t size;
    int mapped; /* 1: base is our mmap */
} gguf_file_t;

/* Open and validate. Corrupt input -> SD_ERR_BAD_MODEL naming the field;
 * an unsupported tensor type -> SD_ERR_UNSUPPORTED_TYPE naming tensor and type. */
sd_status_t gguf_open(const char *path, gguf_file_t **out);
/* Same over a caller-owned buffer that must outlive the gguf_file_t. */
sd_status_t gguf_open_buffer(const void *data, size_t size, gguf_file_t **out);
void gguf_close(gguf_file_t *f);

const gguf_kv_t *gguf_find_kv(const gguf_file_t *f, const char *key);
const gguf_tensor_t *gguf_find_tensor(const gguf_file_t *f, const char *name);
/* 1 if a.data[0..len) equals NUL-terminated s. */
int gguf_str_eq(gguf_str_t a, const char *s);
/* "UINT32", "STRING", ... for a value type id; "UNKNOWN" past GGUF_TYPE_COUNT. */
const char *gguf_type_name(uint32_t type);
/* Bytes of one value of a fixed-size type; 0 for STRING, ARRAY and unknown ids. */
size_t gguf_type_size(uint32_t type);

/* Typed getters. Missing key or incompatible type -> SD_ERR_BAD_MODEL naming the key.
 * Integer getters accept any integer type whose value fits. */
sd_status_t gguf_get_u32(const gguf_file_t *f, const char *key, uint32_t *out);
sd_status_t gguf_get_i32(const gguf_file_t *f, const char *key, int32_t *out);
sd_status_t gguf_get_f32(const gguf_file_t *f, const char *key, float *out);
sd_status_t gguf_get_bool(const gguf_file_t *f, const char *key, bool *out);
sd_status_t gguf_get_str(const gguf_file_t *f, const char *key, gguf_str_t *out);
/* Array of the given element type (GGUF_TYPE_COUNT = any). */
sd_status_t gguf_get_arr(const gguf_file_t *f, const char *key, gguf_type_t elem_type,
                         const gguf_kv_t **out);
/* Element i of a numeric array, converted. */
int64_t gguf_arr_int(const gguf_kv_t *kv, uint64_t i);
double gguf_arr_float(const gguf_kv_t *kv, uint64_t i);

/* ---- writer ------------------------------------------------------------- */

typedef struct gguf_writer gguf_writer_t;

sd_status_t gguf_writer_new(gguf_writer_t **out);
void gguf_writer_free(gguf_writer_t *w);
sd_status_t gguf_writer_set_u32(gguf_writer_t *w, const char *key, uint32_t v);
sd_status_t gguf_writer_set_i32(gguf_writer_t *w, const char *key, int32_t v);
sd_status_t gguf_writer_set_f32(gguf_writer_t *w, const char *key, float v);
sd_status_t gguf_writer_set_bool(gguf_writer_t *w, const char *key, bool v);
sd_status_t gguf_writer_set_str(gguf_writer_t *w, const char *key, const char *v);
/* Scalar of any type from its raw little-endian bytes (tests use it for every type). */
sd_status_t gguf_writer_set_raw(gguf_writer_t *w, const char *key, gguf_type_t type,
                                const void *value);
sd_status_t gguf_writer_set_arr(gguf_writer_t *w, const char *key, gguf_type_t elem_type,
                                const void *elems, uint64_t n);
sd_status_t gguf_writer_set_arr_str(gguf_writer_t *w, const char *key, const char *const *strs,
                                    uint64_t n);
/* Tensor from encoded bytes (nbytes must match ne and type). */
sd_status_t gguf_writer_add_tensor(gguf_writer_t *w, const char *name, sd_dtype_t type,
                                   uint32_t n_dims, const int64_t *ne, const void *data,
                                   size_t nbytes);
/* Tensor from floats, encoded to `type` with sd_quantize_row. */
sd_status_t gguf_writer_add_tensor_f32(gguf_writer_t *w, const char *name, sd_dtype_t type,
                                       uint32_t n_dims, const int64_t *ne, const float *src);
sd_status_t gguf_writer_write_file(gguf_writer_t *w, const char *path);
/* Whole file in a malloc'd buffer (caller frees). */
sd_status_t gguf_writer_write_buffer(gguf_writer_t *w, void **out, size_t *size);

#endif
