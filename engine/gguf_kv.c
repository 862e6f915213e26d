/* GGUF lookups and typed getters over a parsed file. */
#include <math.h>
#include <string.h>

#include "engine/check.h"
#include "engine/gguf.h"

const char *gguf_type_name(uint32_t type)
{
    static const char *const names[GGUF_TYPE_COUNT] = {
        "UINT8", "INT8",  "UINT16", "INT16",  "UINT32", "INT32",   "FLOAT32",
        "BOOL",  "STRING", "ARRAY", "UINT64", "INT64",  "FLOAT64",
    };
    return type < GGUF_TYPE_COUNT ? names[type] : "UNKNOWN";
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
    const gguf_kv_t *kv;
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
    const gguf_kv_t *kv;
    SD_CHECK(find_typed(f, key, GGUF_TYPE_COUNT, &kv));
    if (kv->type != GGUF_TYPE_FLOAT32 && kv->type != GGUF_TYPE_FLOAT64)
        return sd_set_error(SD_ERR_BAD_MODEL, "GGUF: key '%s' has type %s, expected a float", key,
                            gguf_type_name(kv->type));
    *out = (float)kv->v.f;
    return SD_OK;
}

sd_status_t gguf_get_bool(const gguf_file_t *f, const char *key, bool *out)
{
    const gguf_kv_t *kv;
    SD_CHECK(find_typed(f, key, GGUF_TYPE_BOOL, &kv));
    *out = kv->v.b;
    return SD_OK;
}

sd_status_t gguf_get_str(const gguf_file_t *f, const char *key, gguf_str_t *out)
{
    const gguf_kv_t *kv;
    SD_CHECK(find_typed(f, key, GGUF_TYPE_STRING, &kv));
    *out = kv->v.str;
    return SD_OK;
}

sd_status_t gguf_get_arr(const gguf_file_t *f, const char *key, gguf_type_t elem_type,
                         const gguf_kv_t **out)
{
    const gguf_kv_t *kv;
    SD_CHECK(find_typed(f, key, GGUF_TYPE_ARRAY, &kv));
    if (elem_type != GGUF_TYPE_COUNT && kv->arr_type != elem_type)
        return sd_set_error(SD_ERR_BAD_MODEL, "GGUF: key '%s' is an array of %s, expected %s", key,
                            gguf_type_name(kv->arr_type), gguf_type_name(elem_type));
    *out = kv;
    return SD_OK;
}

/* Element i of a numeric array as raw bytes; 0 if out of range or not numeric. */
static int arr_elem(const gguf_kv_t *kv, uint64_t i, uint8_t raw[8])
{
    static const uint8_t sizes[GGUF_TYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    if (kv->type != GGUF_TYPE_ARRAY || kv->arr_data == NULL || i >= kv->arr_n ||
        kv->arr_type >= GGUF_TYPE_COUNT || sizes[kv->arr_type] == 0)
        return 0;
    memcpy(raw, (const uint8_t *)kv->arr_data + i * sizes[kv->arr_type], sizes[kv->arr_type]);
    return 1;
}

/* Converts element i (little-endian in the file) to double and int64. */
static void arr_value(const gguf_kv_t *kv, uint64_t i, int64_t *iv, double *fv)
{
    uint8_t raw[8] = {0};
    *iv = 0;
    *fv = 0;
    if (!arr_elem(kv, i, raw)) return;
    union { uint8_t u8; int8_t i8; uint16_t u16; int16_t i16; uint32_t u32; int32_t i32;
            float f32; uint64_t u64; int64_t i64; double f64; } x;
    memcpy(&x, raw, sizeof raw);
    switch (kv->arr_type) {
    case GGUF_TYPE_UINT8: *iv = x.u8; *fv = x.u8; break;
    case GGUF_TYPE_INT8: *iv = x.i8; *fv = x.i8; break;
    case GGUF_TYPE_UINT16: *iv = x.u16; *fv = x.u16; break;
    case GGUF_TYPE_INT16: *iv = x.i16; *fv = x.i16; break;
    case GGUF_TYPE_UINT32: *iv = x.u32; *fv = x.u32; break;
    case GGUF_TYPE_INT32: *iv = x.i32; *fv = x.i32; break;
    case GGUF_TYPE_BOOL: *iv = x.u8 != 0; *fv = x.u8 != 0; break;
    case GGUF_TYPE_UINT64: *iv = (int64_t)x.u64; *fv = (double)x.u64; break;
    case GGUF_TYPE_INT64: *iv = x.i64; *fv = (double)x.i64; break;
    case GGUF_TYPE_FLOAT32: *fv = x.f32; *iv = isfinite(x.f32) && fabsf(x.f32) < 9.2e18f ? (int64_t)x.f32 : 0; break;
    case GGUF_TYPE_FLOAT64: *fv = x.f64; *iv = isfinite(x.f64) && fabs(x.f64) < 9.2e18 ? (int64_t)x.f64 : 0; break;
    default: break;
    }
}

int64_t gguf_arr_int(const gguf_kv_t *kv, uint64_t i)
{
    int64_t iv;
    double fv;
    arr_value(kv, i, &iv, &fv);
    return iv;
}

double gguf_arr_float(const gguf_kv_t *kv, uint64_t i)
{
    int64_t iv;
    double fv;
    arr_value(kv, i, &iv, &fv);
    return fv;
}
