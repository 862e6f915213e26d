/* GGUF v2/v3 parser: a bounds-checked cursor over the whole file (mmap or caller's buffer).
 * Every count and length is checked against the bytes left before anything is allocated. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/check.h"
#include "core/escape.h"
#include "gguf/gguf.h"

#define GGUF_MAX_NESTING 8
/* Smallest encodings, used to bound counts by the bytes left in the file. */
#define GGUF_MIN_KV_BYTES 13     /* key length + value type + 1-byte value */
#define GGUF_MIN_TENSOR_BYTES 32 /* name length + n_dims + ne[0] + type + offset */
#define GGUF_MIN_ARRAY_BYTES 12  /* element type + count */

typedef struct cursor {
    const uint8_t *base;
    size_t size;
    size_t pos;
} cursor_t;

static size_t left(const cursor_t *c) { return c->size - c->pos; }

static int take(cursor_t *c, void *dst, size_t n)
{
    if (n > left(c)) return 0;
    memcpy(dst, c->base + c->pos, n);
    c->pos += n;
    return 1;
}

static int take_u32(cursor_t *c, uint32_t *v) { return take(c, v, sizeof *v); }
static int take_u64(cursor_t *c, uint64_t *v) { return take(c, v, sizeof *v); }

/* "GGUF: <field> truncated at offset P (file size S)" */
static sd_status_t truncated(const cursor_t *c, const char *fmt, ...) SD_PRINTF(2, 3);
static sd_status_t truncated(const cursor_t *c, const char *fmt, ...)
{
    char field[SD_ESCAPE_BUF + 128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(field, sizeof field, fmt, ap);
    va_end(ap);
    return sd_set_error(SD_ERR_BAD_MODEL, "GGUF: %s truncated at offset %zu (file size %zu)", field,
                        c->pos, c->size);
}

/* A length-prefixed string; `what` names the field for errors. */
static sd_status_t take_str(cursor_t *c, gguf_str_t *s, const char *what)
{
    uint64_t len;
    if (!take_u64(c, &len)) return truncated(c, "%s length", what);
    if (len > left(c))
        return sd_set_error(SD_ERR_BAD_MODEL,
                            "GGUF: %s length %llu exceeds the %zu bytes left at offset %zu "
                            "(file size %zu)",
                            what, (unsigned long long)len, left(c), c->pos, c->size);
    s->data = (const char *)c->base + c->pos;
    s->len = len;
    c->pos += (size_t)len;
    return SD_OK;
}

/* Smallest encoding of one value of type t (bounds array counts). */
static size_t min_value_bytes(gguf_type_t t)
{
    if (t == GGUF_TYPE_STRING) return 8;
    if (t == GGUF_TYPE_ARRAY) return GGUF_MIN_ARRAY_BYTES;
    return gguf_type_size(t);
}

static sd_status_t take_type(cursor_t *c, gguf_type_t *t, const char *what)
{
    uint32_t id;
    if (!take_u32(c, &id)) return truncated(c, "%s", what);
    if (id >= GGUF_TYPE_COUNT)
        return sd_set_error(SD_ERR_BAD_MODEL, "GGUF: %s %u is not a GGUF value type (0..%d)", what,
                            id, GGUF_TYPE_COUNT - 1);
    *t = (gguf_type_t)id;
    return SD_OK;
}

/* Array header: element type and count, the count bounded by the bytes left. */
static sd_status_t take_array_header(cursor_t *c, gguf_type_t *elem, uint64_t *n, const char *what)
{
    char field[SD_ESCAPE_BUF + 96];
    snprintf(field, sizeof field, "%s array element type", what);
    SD_CHECK(take_type(c, elem, field));
    if (!take_u64(c, n)) return truncated(c, "%s array count", what);
    if (*n > left(c) / min_value_bytes(*elem))
        return sd_set_error(SD_ERR_BAD_MODEL,
                            "GGUF: %s array count %llu of %s exceeds the %zu bytes left "
                            "(file size %zu)",
                            what, (unsigned long long)*n, gguf_type_name(*elem), left(c), c->size);
    return SD_OK;
}

/* Skip one value (used for the elements of nested arrays). */
static sd_status_t skip_value(cursor_t *c, gguf_type_t t, const char *what, int depth)
{
    if (t == GGUF_TYPE_STRING) {
        gguf_str_t s;
        return take_str(c, &s, what);
    }
    if (t != GGUF_TYPE_ARRAY) {
        if (gguf_type_size(t) > left(c)) return truncated(c, "%s", what);
        c->pos += gguf_type_size(t);
        return SD_OK;
    }
    if (depth >= GGUF_MAX_NESTING)
        return sd_set_error(SD_ERR_BAD_MODEL, "GGUF: %s arrays nested deeper than %d", what,
                            GGUF_MAX_NESTING);
    gguf_type_t elem;
    uint64_t n;
    SD_CHECK(take_array_header(c, &elem, &n, what));
    for (uint64_t i = 0; i < n; i++) SD_CHECK(skip_value(c, elem, what, depth + 1));
    return SD_OK;
}

static sd_status_t parse_array(cursor_t *c, gguf_kv_t *kv, const char *what)
{
    SD_CHECK(take_array_header(c, &kv->arr_type, &kv->arr_n, what));
    if (kv->arr_type == GGUF_TYPE_STRING) {
        /* the count check above bounds this allocation by the file size */
        kv->arr_strs = calloc(kv->arr_n ? kv->arr_n : 1, sizeof *kv->arr_strs);
        SD_ALLOC_CHECK(kv->arr_strs, kv->arr_n * sizeof *kv->arr_strs, "a GGUF string array");
        kv->arr_data = c->base + c->pos;
        for (uint64_t i = 0; i < kv->arr_n; i++) SD_CHECK(take_str(c, &kv->arr_strs[i], what));
        return SD_OK;
    }
    if (kv->arr_type == GGUF_TYPE_ARRAY) {
        for (uint64_t i = 0; i < kv->arr_n; i++) SD_CHECK(skip_value(c, GGUF_TYPE_ARRAY, what, 1));
        return SD_OK;
    }
    kv->arr_data = c->base + c->pos;
    c->pos += (size_t)(kv->arr_n * gguf_type_size(kv->arr_type)); /* bounded by take_array_header */
    return SD_OK;
}

/* A scalar, widened into the union. */
static sd_status_t parse_scalar(cursor_t *c, gguf_kv_t *kv, const char *what)
{
    uint8_t raw[8] = {0};
    if (!take(c, raw, gguf_type_size(kv->type))) return truncated(c, "%s value", what);
    switch (kv->type) {
    case GGUF_TYPE_UINT8: kv->v.u = raw[0]; break;
    case GGUF_TYPE_INT8: kv->v.i = (int8_t)raw[0]; break;
    case GGUF_TYPE_UINT16: {
        uint16_t x;
        memcpy(&x, raw, 2);
        kv->v.u = x;
        break;
    }
    case GGUF_TYPE_INT16: {
        int16_t x;
        memcpy(&x, raw, 2);
        kv->v.i = x;
        break;
    }
    case GGUF_TYPE_UINT32: {
        uint32_t x;
        memcpy(&x, raw, 4);
        kv->v.u = x;
        break;
    }
    case GGUF_TYPE_INT32: {
        int32_t x;
        memcpy(&x, raw, 4);
        kv->v.i = x;
        break;
    }
    case GGUF_TYPE_FLOAT32: {
        float x;
        memcpy(&x, raw, 4);
        kv->v.f = x;
        break;
    }
    case GGUF_TYPE_BOOL: kv->v.b = raw[0] != 0; break;
    case GGUF_TYPE_UINT64: memcpy(&kv->v.u, raw, 8); break;
    case GGUF_TYPE_INT64: memcpy(&kv->v.i, raw, 8); break;
    case GGUF_TYPE_FLOAT64: memcpy(&kv->v.f, raw, 8); break;
    default: return sd_set_error(SD_ERR_INTERNAL, "GGUF: %s: type %d is no scalar", what, kv->type);
    }
    return SD_OK;
}

/* ---- duplicate detection: open addressing over string hashes ------------- */

static uint64_t str_hash(gguf_str_t s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (uint64_t i = 0; i < s.len; i++) h = (h ^ (uint8_t)s.data[i]) * 1099511628211ull;
    return h;
}

static int str_same(gguf_str_t a, gguf_str_t b)
{
    return a.len == b.len && memcmp(a.data, b.data, (size_t)a.len) == 0;
}

/* items[n] (stride bytes apart) each start with a gguf_str_t; *dup_a < *dup_b are the first
 * two equal ones, or both -1 when all are distinct. */
static sd_status_t find_duplicate(const void *items, size_t stride, uint64_t n, int64_t *dup_a,
                                  int64_t *dup_b)
{
    *dup_a = *dup_b = -1;
    size_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    int64_t *slots = malloc(cap * sizeof *slots);
    SD_ALLOC_CHECK(slots, cap * sizeof *slots, "GGUF duplicate check");
    memset(slots, 0xff, cap * sizeof *slots);
    for (uint64_t i = 0; i < n && *dup_a < 0; i++) {
        gguf_str_t s = *(const gguf_str_t *)((const char *)items + i * stride);
        for (size_t h = str_hash(s) & (cap - 1);; h = (h + 1) & (cap - 1)) {
            if (slots[h] < 0) {
                slots[h] = (int64_t)i;
                break;
            }
            gguf_str_t o = *(const gguf_str_t *)((const char *)items + (size_t)slots[h] * stride);
            if (str_same(s, o)) {
                *dup_a = slots[h];
                *dup_b = (int64_t)i;
                break;
            }
        }
    }
    free(slots);
    return SD_OK;
}

/* ---- header, kv pairs, tensor infos -------------------------------------- */

static sd_status_t parse_header(cursor_t *c, gguf_file_t *f)
{
    uint8_t magic[4];
    if (!take(c, magic, 4)) return truncated(c, "magic");
    if (memcmp(magic, "GGUF", 4) != 0)
        return sd_set_error(SD_ERR_BAD_MODEL,
                            "GGUF: bad magic %02x %02x %02x %02x (expected 'GGUF')", magic[0],
                            magic[1], magic[2], magic[3]);
    if (!take_u32(c, &f->version)) return truncated(c, "version");
    if (f->version != 2 && f->version != 3)
        return sd_set_error(SD_ERR_BAD_MODEL, "GGUF: version %u is not supported (only 2 and 3)",
                            f->version);
    if (!take_u64(c, &f->n_tensors)) return truncated(c, "tensor_count");
    if (!take_u64(c, &f->n_kv)) return truncated(c, "kv_count");
    if (f->n_kv > left(c) / GGUF_MIN_KV_BYTES)
        return sd_set_error(SD_ERR_BAD_MODEL,
                            "GGUF: kv_count %llu exceeds what the %zu bytes left can hold "
                            "(file size %zu)",
                            (unsigned long long)f->n_kv, left(c), c->size);
    if (f->n_tensors > (left(c) - f->n_kv * GGUF_MIN_KV_BYTES) / GGUF_MIN_TENSOR_BYTES)
        return sd_set_error(SD_ERR_BAD_MODEL,
                            "GGUF: tensor_count %llu exceeds what the %zu bytes left can hold "
                            "(file size %zu)",
                            (unsigned long long)f->n_tensors, left(c), c->size);
    return SD_OK;
}

static sd_status_t parse_kv(cursor_t *c, gguf_kv_t *kv, uint64_t idx)
{
    char what[SD_ESCAPE_BUF + 32];
    snprintf(what, sizeof what, "kv[%llu] key", (unsigned long long)idx);
    SD_CHECK(take_str(c, &kv->key, what));
    snprintf(what, sizeof what, "kv[%llu] '%s'", (unsigned long long)idx,
             SD_ESC(kv->key.data, kv->key.len));
    char field[SD_ESCAPE_BUF + 64];
    snprintf(field, sizeof field, "%s value type", what);
    SD_CHECK(take_type(c, &kv->type, field));
    if (kv->type == GGUF_TYPE_STRING) return take_str(c, &kv->v.str, what);
    if (kv->type == GGUF_TYPE_ARRAY) return parse_array(c, kv, what);
    return parse_scalar(c, kv, what);
}

static sd_status_t parse_kvs(cursor_t *c, gguf_file_t *f)
{
    f->kv = calloc(f->n_kv ? f->n_kv : 1, sizeof *f->kv); /* n_kv bounded by the file size */
    SD_ALLOC_CHECK(f->kv, f->n_kv * sizeof *f->kv, "GGUF kv table");
    for (uint64_t i = 0; i < f->n_kv; i++) SD_CHECK(parse_kv(c, &f->kv[i], i));
    int64_t a, b;
    SD_CHECK(find_duplicate(f->kv, sizeof *f->kv, f->n_kv, &a, &b));
    if (a >= 0)
        return sd_set_error(SD_ERR_BAD_MODEL, "GGUF: duplicate key '%s' (kv[%lld] and kv[%lld])",
                            SD_ESC(f->kv[b].key.data, f->kv[b].key.len), (long long)a, (long long)b);
    return SD_OK;
}

static sd_status_t read_alignment(gguf_file_t *f)
{
    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    if (gguf_find_kv(f, "general.alignment") == NULL) return SD_OK;
    uint32_t a;
    SD_CHECK(gguf_get_u32(f, "general.alignment", &a));
    if (a == 0 || (a & (a - 1)) != 0)
        return sd_set_error(SD_ERR_BAD_MODEL,
                            "GGUF: general.alignment %u is not a non-zero power of two", a);
    f->alignment = a;
    return SD_OK;
}

/* a tensor's name in a message (its bytes come from the file) */
#define TNAME(t) SD_ESC((t)->name.data, (t)->name.len)

static sd_status_t check_tensor_type(gguf_tensor_t *t, uint32_t id)
{
    const char *name = sd_dtype_name(id);
    if (name == NULL)
        return sd_set_error(SD_ERR_UNSUPPORTED_TYPE, "GGUF: tensor '%s' has unknown type id %u",
                            TNAME(t), id);
    if (!sd_dtype_supported(id))
        return sd_set_error(SD_ERR_UNSUPPORTED_TYPE,
                            "GGUF: tensor '%s' has type %s (id %u), which this build does not "
                            "support",
                            TNAME(t), name, id);
    t->type = (sd_dtype_t)id;
    return SD_OK;
}

/* nbytes = row bytes x rows, without overflow; ne[0] a multiple of the block size. */
static sd_status_t tensor_nbytes(gguf_tensor_t *t)
{
    int64_t blk = sd_dtype_block_elems(t->type);
    if (blk <= 0 || t->ne[0] % blk != 0)
        return sd_set_error(SD_ERR_BAD_MODEL,
                            "GGUF: tensor '%s' ne[0] = %lld is not a multiple of the %s block "
                            "size %lld",
                            TNAME(t), (long long)t->ne[0], sd_dtype_name(t->type), (long long)blk);
    uint64_t rows = 1, bytes;
    int over = 0;
    for (int d = 1; d < 4; d++) over |= __builtin_mul_overflow(rows, (uint64_t)t->ne[d], &rows);
    uint64_t row_blocks = (uint64_t)(t->ne[0] / blk);
    over |= __builtin_mul_overflow(row_blocks, (uint64_t)sd_dtype_block_bytes(t->type), &bytes);
    over |= __builtin_mul_overflow(bytes, rows, &bytes);
    if (over || bytes > SIZE_MAX)
        return sd_set_error(SD_ERR_BAD_MODEL,
                            "GGUF: tensor '%s' size overflows (ne = {%lld, %lld, %lld, %lld})",
                            TNAME(t), (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2],
                            (long long)t->ne[3]);
    t->nbytes = (size_t)bytes;
    return SD_OK;
}

static sd_status_t parse_tensor_info(cursor_t *c, const gguf_file_t *f, gguf_tensor_t *t,
                                     uint64_t idx)
{
    char what[64];
    snprintf(what, sizeof what, "tensor[%llu] name", (unsigned long long)idx);
    SD_CHECK(take_str(c, &t->name, what));
    if (!take_u32(c, &t->n_dims)) return truncated(c, "tensor '%s' n_dims", TNAME(t));
    if (t->n_dims < 1 || t->n_dims > 4)
        return sd_set_error(SD_ERR_BAD_MODEL, "GGUF: tensor '%s' n_dims %u is not in 1..4",
                            TNAME(t), t->n_dims);
    for (int d = 0; d < 4; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        uint64_t ne;
        if (!take_u64(c, &ne)) return truncated(c, "tensor '%s' ne[%u]", TNAME(t), d);
        if (ne == 0 || ne > INT64_MAX)
            return sd_set_error(SD_ERR_BAD_MODEL,
                                "GGUF: tensor '%s' ne[%u] = %llu is not in 1..2^63-1", TNAME(t),
                                d, (unsigned long long)ne);
        t->ne[d] = (int64_t)ne;
    }
    uint32_t type_id;
    if (!take_u32(c, &type_id)) return truncated(c, "tensor '%s' type", TNAME(t));
    if (!take_u64(c, &t->offset)) return truncated(c, "tensor '%s' offset", TNAME(t));
    SD_CHECK(check_tensor_type(t, type_id));
    SD_CHECK(tensor_nbytes(t));
    if (t->offset % f->alignment != 0)
        return sd_set_error(
            SD_ERR_BAD_MODEL,
            "GGUF: tensor '%s' offset %llu is not a multiple of the alignment %zu", TNAME(t),
            (unsigned long long)t->offset, f->alignment);
    return SD_OK;
}

/* After the infos: the data section starts at the next alignment boundary. */
static sd_status_t place_tensors(const cursor_t *c, gguf_file_t *f)
{
    size_t pad = (f->alignment - c->pos % f->alignment) % f->alignment;
    if (pad > left(c)) {
        if (f->n_tensors > 0)
            return sd_set_error(SD_ERR_BAD_MODEL,
                                "GGUF: data section (offset %zu + %zu padding) past end of file "
                                "(size %zu)",
                                c->pos, pad, c->size);
        pad = left(c); /* a file without tensors may end unpadded */
    }
    f->data_offset = c->pos + pad;
    size_t avail = c->size - f->data_offset;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        gguf_tensor_t *t = &f->tensors[i];
        if (t->offset > avail || t->nbytes > avail - t->offset)
            return sd_set_error(SD_ERR_BAD_MODEL,
                                "GGUF: tensor '%s' data [offset %llu, +%zu) past end of file "
                                "(data section %zu bytes at %zu, file size %zu)",
                                TNAME(t), (unsigned long long)t->offset, t->nbytes, avail,
                                f->data_offset, c->size);
        t->data = f->base + f->data_offset + t->offset;
    }
    return SD_OK;
}

static sd_status_t parse_tensors(cursor_t *c, gguf_file_t *f)
{
    f->tensors = calloc(f->n_tensors ? f->n_tensors : 1, sizeof *f->tensors);
    SD_ALLOC_CHECK(f->tensors, f->n_tensors * sizeof *f->tensors, "GGUF tensor table");
    for (uint64_t i = 0; i < f->n_tensors; i++)
        SD_CHECK(parse_tensor_info(c, f, &f->tensors[i], i));
    int64_t a, b;
    SD_CHECK(find_duplicate(f->tensors, sizeof *f->tensors, f->n_tensors, &a, &b));
    if (a >= 0)
        return sd_set_error(SD_ERR_BAD_MODEL,
                            "GGUF: duplicate tensor name '%s' (tensor[%lld] and tensor[%lld])",
                            TNAME(&f->tensors[b]), (long long)a, (long long)b);
    return place_tensors(c, f);
}

static sd_status_t parse(gguf_file_t *f)
{
    cursor_t c = {.base = f->base, .size = f->size, .pos = 0};
    SD_CHECK(parse_header(&c, f));
    SD_CHECK(parse_kvs(&c, f));
    SD_CHECK(read_alignment(f));
    return parse_tensors(&c, f);
}

/* ---- open / close --------------------------------------------------------- */

static sd_status_t open_parsed(gguf_file_t *f, gguf_file_t **out)
{
    sd_status_t st = parse(f);
    if (st != SD_OK) {
        gguf_close(f);
        return st;
    }
    *out = f;
    return SD_OK;
}

sd_status_t gguf_open_buffer(const void *data, size_t size, gguf_file_t **out)
{
    if (out == NULL || (data == NULL && size > 0))
        return sd_set_error(SD_ERR_INVALID_ARG, "gguf_open_buffer: NULL %s", out ? "data" : "out");
    *out = NULL;
    gguf_file_t *f = calloc(1, sizeof *f);
    SD_ALLOC_CHECK(f, sizeof *f, "gguf_file_t");
    f->base = data;
    f->size = size;
    return open_parsed(f, out);
}

sd_status_t gguf_open(const char *path, gguf_file_t **out)
{
    if (path == NULL || out == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG, "gguf_open: NULL %s", path ? "out" : "path");
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return sd_set_error(SD_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return sd_set_error(SD_ERR_IO, "cannot stat '%s': %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode) || st.st_size == 0) {
        close(fd);
        if (!S_ISREG(st.st_mode))
            return sd_set_error(SD_ERR_IO, "'%s' is not a regular file", path);
        return sd_set_error(SD_ERR_BAD_MODEL, "GGUF: '%s' is empty (magic truncated at offset 0)",
                            path);
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (map == MAP_FAILED)
        return sd_set_error(SD_ERR_IO, "cannot mmap '%s': %s", path, strerror(e));
    gguf_file_t *f = calloc(1, sizeof *f);
    if (f == NULL) {
        munmap(map, (size_t)st.st_size);
        return sd_set_error(SD_ERR_OUT_OF_MEMORY, "out of memory allocating gguf_file_t");
    }
    f->base = map;
    f->size = (size_t)st.st_size;
    f->mapped = 1;
    return open_parsed(f, out);
}

void gguf_close(gguf_file_t *f)
{
    if (f == NULL) return;
    if (f->kv)
        for (uint64_t i = 0; i < f->n_kv; i++) free(f->kv[i].arr_strs);
    free(f->kv);
    free(f->tensors);
    if (f->mapped) munmap((void *)f->base, f->size);
    free(f);
}
