/* GGUF lookups and typed getters over a parsed file. */
#include <math.h>
#include <string.h>

#include "core/check.h"
#include "gguf/gguf.h"

const char *gguf_type_name(uint32_t type)
{
    static const char *const names[GGUF_TYPE_COUNT] = {
        "UINT8", "INT8",   "UINT16", "INT16",  "UINT32", "INT32",   "FLOAT32",
        "BOOL",  "STRING", "ARRAY",  "UINT64", "INT64",  "FLOAT64",
    };
    return type < GGUF_TYPE_COUNT ? names[type] : "UNKNOWN";
}

size_t gguf_type_size(uint32_t type)
{
    static const uint8_t sizes[GGUF_TYPE_COUNT] = {
        [GGUF_TYPE_UINT8] = 1,   [GGUF_TYPE_INT8] = 1,    [GGUF_TYPE_UINT16] = 2,
        [GGUF_TYPE_INT16] = 2,   [GGUF_TYPE_UINT32] = 4,  [GGUF_TYPE_INT32] = 4,
        [GGUF_TYPE_FLOAT32] = 4, [GGUF_TYPE_BOOL] = 1,    [GGUF_TYPE_UINT64] = 8,
        [GGUF_TYPE_INT64] = 8,   [GGUF_TYPE_FLOAT64] = 8,
    };
    return type < GGUF_TYPE_COUNT ? sizes[type] : 0;
}

int gguf_str_eq(gguf_str_t a, const char *s)
{
    size_t n = strlen(s);
    return a.len == n && memcmp(a.data, s, n) == 0;
}

const gguf_kv_t *gguf_find_kv(const gguf_file_t *f, const char *key)
{
    for (uint64_t i = 0; i < f->n_kv; i++)
        if (gguf_str_eq(f->kv[i].key, key)) return &f->kv[i];
    return NULL;
}

const gguf_tensor_t *gguf_find_tensor(const gguf_file_t *f, const char *name)
{
    for (uint64_t i = 0; i < f->n_tensors; i++)
        if (gguf_str_eq(f->tensors[i].name, name)) return &f->tensors[i];
    return NULL;
}

static int is_unsigned(gguf_type_t t)
{
    return t == GGUF_TYPE_UINT8 || t == GGUF_TYPE_UINT16 || t == GGUF_TYPE_UINT32 ||
           t == GGUF_TYPE_UINT64;
}

static int is_signed(gguf_type_t t)
{
    return t == GGUF_TYPE_INT8 || t == GGUF_TYPE_INT16 || t == GGUF_TYPE_INT32 ||
           t == GGUF_TYPE_INT64;
}

static sd_status_t find_typed(const gguf_file_t *f, const char *key, gguf_type_t want,
                              const gguf_kv_t **out)
{
    const gguf_kv_t *kv = gguf_find_kv(f, key);
    if (kv == NULL) return sd_set_error(SD_ERR_BAD_MODEL, "GGUF: key '%s' is missing", key);
    if (want != GGUF_TYPE_COUNT && kv->type != want)
        return sd_set_error(SD_ERR_BAD_MODEL, "GGUF: key '%s' has type %s, expected %s", key,
                            gguf_type_name(kv->type), gguf_type_name(want));
    *out = kv;
    return SD_OK;
}

/* Any integer kv whose value lies in [lo, hi]. */
static sd_status_t get_int(const gguf_file_t *f, const char *key, int64_t lo, uint64_t hi,
                           const char *what, int64_t *out)
{
    const gguf_kv_t *kv = NULL;
    SD_CHECK(find_typed(f, key, GGUF_TYPE_COUNT, &kv));
    int fits;
    if (is_unsigned(kv->type)) {
        fits = kv->v.u <= hi;
    } else if (is_signed(kv->type)) {
        fits = kv->v.i >= lo && (kv->v.i < 0 || (uint64_t)kv->v.i <= hi);
    } else {
        return sd_set_error(SD_ERR_BAD_MODEL, "GGUF: key '%s' has type %s, expected an integer",
                            key, gguf_type_name(kv->type));
    }
    if (!fits) {
        if (is_unsigned(kv->type))
            return sd_set_error(SD_ERR_BAD_MODEL, "GGUF: key '%s' value %llu does not fit in %s",
                                key, (unsigned long long)kv->v.u, what);
        return sd_set_error(SD_ERR_BAD_MODEL, "GGUF: key '%s' value %lld does not fit in %s", key,
                            (long long)kv->v.i, what);
    }
    *out = is_unsigned(kv->type) ? (int64_t)kv->v.u : kv->v.i;
    return SD_OK;
}

sd_status_t gguf_get_u32(const gguf_file_t *f, const char *key, uint32_t *out)
{
    int64_t v;
    SD_CHECK(get_int(f, key, 0, UINT32_MAX, "u32", &v));
    *out = (uint32_t)v;
    return SD_OK;
}

sd_status_t gguf_get_i32(const gguf_file_t *f, const char *key, int32_t *out)
{
    int64_t v;
    SD_CHECK(get_int(f, key, INT32_MIN, INT32_MAX, "i32", &v));
    *out = (int32_t)v;
    return SD_OK;
}

sd_status_t gguf_get_f32(const gguf_file_t *f, const char *key, float *out)
{
    const gguf_kv_t *kv = NULL;
    SD_CHECK(find_typed(f, key, GGUF_TYPE_COUNT, &kv));
    if (kv->type != GGUF_TYPE_FLOAT32 && kv->type != GGUF_TYPE_FLOAT64)
        return sd_set_error(SD_ERR_BAD_MODEL, "GGUF: key '%s' has type %s, expected a float", key,
                            gguf_type_name(kv->type));
    *out = (float)kv->v.f;
    return SD_OK;
}

sd_status_t gguf_get_bool(const gguf_file_t *f, const char *key, bool *out)
{
    const gguf_kv_t *kv = NULL;
    SD_CHECK(find_typed(f, key, GGUF_TYPE_BOOL, &kv));
    *out = kv->v.b;
    return SD_OK;
}

sd_status_t gguf_get_str(const gguf_file_t *f, const char *key, gguf_str_t *out)
{
    const gguf_kv_t *kv = NULL;
    SD_CHECK(find_typed(f, key, GGUF_TYPE_STRING, &kv));
    *out = kv->v.str;
    return SD_OK;
}

sd_status_t gguf_get_arr(const gguf_file_t *f, const char *key, gguf_type_t elem_type,
                         const gguf_kv_t **out)
{
    const gguf_kv_t *kv = NULL;
    SD_CHECK(find_typed(f, key, GGUF_TYPE_ARRAY, &kv));
    if (elem_type != GGUF_TYPE_COUNT && kv->arr_type != elem_type)
        return sd_set_error(SD_ERR_BAD_MODEL, "GGUF: key '%s' is an array of %s, expected %s", key,
                            gguf_type_name(kv->arr_type), gguf_type_name(elem_type));
    *out = kv;
    return SD_OK;
}

static int64_t float_to_int(double v) { return isfinite(v) && fabs(v) < 9.2e18 ? (int64_t)v : 0; }

/* Element i of a numeric array (little-endian in the file) as double, and as int64 in *iv;
 * 0 when i is out of range or the elements are not numbers. */
static double arr_value(const gguf_kv_t *kv, uint64_t i, int64_t *iv)
{
    size_t size = gguf_type_size(kv->arr_type);
    *iv = 0;
    if (kv->type != GGUF_TYPE_ARRAY || kv->arr_data == NULL || i >= kv->arr_n || size == 0)
        return 0;
    const uint8_t *p = (const uint8_t *)kv->arr_data + i * size;
#define INT_ELEM(T)                                                                                \
    do {                                                                                           \
        T x_;                                                                                      \
        memcpy(&x_, p, sizeof x_);                                                                 \
        *iv = (int64_t)x_;                                                                         \
        return (double)x_;                                                                         \
    } while (0)
    switch (kv->arr_type) {
    case GGUF_TYPE_UINT8: INT_ELEM(uint8_t);
    case GGUF_TYPE_INT8: INT_ELEM(int8_t);
    case GGUF_TYPE_UINT16: INT_ELEM(uint16_t);
    case GGUF_TYPE_INT16: INT_ELEM(int16_t);
    case GGUF_TYPE_UINT32: INT_ELEM(uint32_t);
    case GGUF_TYPE_INT32: INT_ELEM(int32_t);
    case GGUF_TYPE_UINT64: INT_ELEM(uint64_t);
    case GGUF_TYPE_INT64: INT_ELEM(int64_t);
    case GGUF_TYPE_BOOL: *iv = p[0] != 0; return (double)*iv;
    case GGUF_TYPE_FLOAT32: {
        float x;
        memcpy(&x, p, sizeof x);
        *iv = float_to_int(x);
        return x;
    }
    case GGUF_TYPE_FLOAT64: {
        double x;
        memcpy(&x, p, sizeof x);
        *iv = float_to_int(x);
        return x;
    }
    default: return 0;
    }
#undef INT_ELEM
}

int64_t gguf_arr_int(const gguf_kv_t *kv, uint64_t i)
{
    int64_t iv;
    arr_value(kv, i, &iv);
    return iv;
}

double gguf_arr_float(const gguf_kv_t *kv, uint64_t i)
{
    int64_t iv;
    return arr_value(kv, i, &iv);
}
