/* The CPU backend: every op of backend.h on host memory, parallel over a thread pool.
 *
 * Batch and thread-count invariance: every output element is computed by one task in a
 * fixed order that depends only on its own inputs. matmul splits output rows (never the
 * K dimension); attention splits (query, head) pairs; the rest are row- or element-wise. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "kernels/backend_impl.h"
#include "kernels/cpu/quants.h"
#include "kernels/cpu/threadpool.h"
#include "kernels/cpu/vec_f32.h"

#define ALIGN 64
#define MATMUL_X_TILE 64      /* activation rows per pass over a weight-row chunk */
#define ATTN_SCORE_CACHE 2048 /* scores kept on the stack; beyond, q.k is recomputed */
#define ELEMWISE_CHUNK 16384  /* elements per swiglu task */
#define ROPE_FREQ_CACHE 256   /* rotated pairs whose frequency is computed once per call */

typedef struct cpu_ctx {
    sd_threadpool_t *pool;
} cpu_ctx_t;

static sd_threadpool_t *pool_of(sd_backend_t *be) { return ((cpu_ctx_t *)be->ctx)->pool; }

/* ---- memory ------------------------------------------------------------------------- */

static void *cpu_alloc(sd_backend_t *be, size_t bytes)
{
    size_t rounded = (bytes + ALIGN - 1) / ALIGN * ALIGN;
    if (rounded < bytes) return NULL; /* overflow */
    return aligned_alloc(ALIGN, rounded ? rounded : ALIGN);
}

static void cpu_release(sd_backend_t *be, void *ptr) { free(ptr); }

static void cpu_copy(sd_backend_t *be, void *dst, const void *src, size_t bytes)
{
    if (bytes) memcpy(dst, src, bytes);
}

/* ---- embed / rmsnorm ---------------------------------------------------------------- */

/* A token outside the table yields a zero row (the caller validates ids; we never read
 * outside the table). */
static void cpu_embed(sd_backend_t *be, const sd_weight_t *table, const int32_t *tokens, int n,
                      float *out)
{
    int64_t dim = table->cols;
    for (int i = 0; i < n; i++) {
        float *row = out + (size_t)i * (size_t)dim; /* out[i, dim] */
        if (tokens[i] < 0 || tokens[i] >= table->rows) {
            memset(row, 0, (size_t)dim * sizeof(float));
            continue;
        }
        const char *src = (const char *)table->data + (size_t)tokens[i] * table->row_bytes;
        sd_dequantize_row(table->type, src, row, dim);
    }
}

static void cpu_rmsnorm(sd_backend_t *be, const float *x, const float *w, int n, int dim,
                        float eps, float *out)
{
    for (int i = 0; i < n; i++) {
        const float *xr = x + (size_t)i * (size_t)dim; /* x[i, dim] */
        float *yr = out + (size_t)i * (size_t)dim;
        double ss = 0.0;
        for (int j = 0; j < dim; j++) ss += (double)xr[j] * (double)xr[j];
        float scale = 1.0f / sqrtf((float)(ss / dim) + eps);
        for (int j = 0; j < dim; j++) yr[j] = (xr[j] * scale) * w[j];
    }
}

/* ---- matmul ------------------------------------------------------------------------- */

typedef struct {
    const sd_weight_t *w;
    const float *x; /* x[n, cols] */
    const float *bias;
    float *y; /* y[n, rows] */
    int n;
    int64_t rows_per_task;
    /* int16 path: activations quantized once per call */
    const int16_t *xq; /* xq[n, sd_act_i16_len(cols)] */
    const float *xs;   /* block scales [n, cols / 32] */
    const float *xsum; /* block sums [n, cols / 32] */
    /* int8 path: the same, in int8 */
    const int8_t *q8;     /* q8[n, cols] */
    const float *q8d;     /* block scales [n, cols / sd_act_q8_block] */
    const int16_t *q8sum; /* sums of 16 [n, cols / 16] */
} matmul_job_t;
static void store_dots(const matmul_job_t *job, int64_t r, int j, int nr, const float *dots)
{
    float b = job->bias ? job->bias[r] : 0.0f;
    for (int q = 0; q < nr; q++) job->y[(size_t)(j + q) * (size_t)job->w->rows + (size_t)r] = dots[q] + b;
}

/* f32 activations: one chunk of weight rows against every activation row; weight rows are
 * read from memory once and reused from cache for each tile of activations. */
static void matmul_rows_f32(const matmul_job_t *job, int64_t r0, int64_t r1)
{
    const sd_weight_t *w = job->w;
    size_t cols = (size_t)w->cols;
    for (int t0 = 0; t0 < job->n; t0 += MATMUL_X_TILE) {
        int t1 = t0 + MATMUL_X_TILE < job->n ? t0 + MATMUL_X_TILE : job->n;
        for (int64_t r = r0; r < r1; r++) {
            const void *wr = (const char *)w->data + (size_t)r * w->row_bytes;
            for (int j = t0; j < t1; j += SD_DOT_MAX_ROWS) {
                int nr = t1 - j < SD_DOT_MAX_ROWS ? t1 - j : SD_DOT_MAX_ROWS;
                float dots[SD_DOT_MAX_ROWS];
                sd_vec_dot_rows(w->type, wr, job->x + (size_t)j * cols, cols, nr, w->cols, dots);
                store_dots(job, r, j, nr, dots);
            }
        }
    }
}

/* The bias of rows r0 .. r1 added to y[n, rows] (the integer paths add it last). */
static void add_bias(const matmul_job_t *job, int64_t r0, int64_t r1)
{
    if (!job->bias) return;
    size_t ldy = (size_t)job->w->rows;
    for (int c = 0; c < job->n; c++)
        for (int64_t r = r0; r < r1; r++) job->y[(size_t)c * ldy + (size_t)r] += job->bias[r];
}

/* int16 activations (quantized once per call): one chunk of weight rows against every
 * activation row (the kernel reads each weight tile once for all of them); the bias is
 * added last. */
static void matmul_rows_i16(const matmul_job_t *job, int64_t r0, int64_t r1)
{
    const sd_weight_t *w = job->w;
    size_t ldy = (size_t)w->rows;
    float *y = job->y + (size_t)r0; /* y[n, rows], columns r0 .. r1 */
    sd_vec_dot_rows_i16(w->type, (const char *)w->data + (size_t)r0 * w->row_bytes, w->row_bytes, r1 - r0,
                        job->xq, job->xs, job->xsum, job->n, w->cols, y, ldy);
    add_bias(job, r0, r1);
}

/* int8 activations (quantized once per call), as matmul_rows_i16. */
static void matmul_rows_q8(const matmul_job_t *job, int64_t r0, int64_t r1)
{
    const sd_weight_t *w = job->w;
    sd_vec_dot_rows_q8(w->type, (const char *)w->data + (size_t)r0 * w->row_bytes, w->row_bytes, r1 - r0, job->q8,
                       job->q8d, job->q8sum, job->n, w->cols, job->y + (size_t)r0, (size_t)w->rows);
    add_bias(job, r0, r1);
}

static void matmul_part(const matmul_job_t *job, int task)
{
    int64_t r0 = (int64_t)task * job->rows_per_task;
    int64_t r1 = r0 + job->rows_per_task < job->w->rows ? r0 + job->rows_per_task : job->w->rows;
    if (job->xq)
        matmul_rows_i16(job, r0, r1);
    else if (job->q8)
        matmul_rows_q8(job, r0, r1);
    else
        matmul_rows_f32(job, r0, r1);
}

/* Tasks of several matmuls in one pool run: task t is task t - first_task[i] of part i. */
typedef struct {
    const matmul_job_t *part;
    const int *first_task; /* [parts + 1] */
} matmul_group_t;

static void matmul_group_task(void *arg, int task)
{
    const matmul_group_t *g = arg;
    int i = 0;
    while (task >= g->first_task[i + 1]) i++;
    matmul_part(&g->part[i], task - g->first_task[i]);
}

/* Quantize x[n, cols] to int16 blocks once for the whole call (every task reads the same
 * values). Returns the buffer to free; NULL only when out of memory, and then the exact f32
 * path runs instead (its results differ in the last bits from the int16 path). */
static void *quantize_activations(matmul_job_t *job)
{
    size_t n = (size_t)job->n, cols = (size_t)job->w->cols, nb = cols / SD_QK;
    size_t ldq = (size_t)sd_act_i16_len(job->w->type, job->w->cols); /* int16 per row */
    size_t q_bytes = n * ldq * sizeof(int16_t), s_bytes = n * nb * sizeof(float);
    char *buf = malloc(q_bytes + 2 * s_bytes);
    if (!buf) return NULL;
    int16_t *xq = (int16_t *)buf;
    float *xs = (float *)(buf + q_bytes), *xsum = (float *)(buf + q_bytes + s_bytes);
    for (size_t i = 0; i < n; i++)
        sd_quantize_act_i16(job->w->type, job->x + i * cols, (int64_t)cols, xq + i * ldq, xs + i * nb,
                            xsum + i * nb);
    job->xq = xq, job->xs = xs, job->xsum = xsum;
    return buf;
}

/* The same for the int8 path. */
static void *quantize_activations_q8(matmul_job_t *job)
{
    size_t n = (size_t)job->n, cols = (size_t)job->w->cols;
    size_t nb = cols / (size_t)sd_act_q8_block(job->w->type), ng = cols / 16;
    size_t q_bytes = n * cols, d_bytes = n * nb * sizeof(float), s_bytes = n * ng * sizeof(int16_t);
    char *buf = malloc(d_bytes + s_bytes + q_bytes);
    if (!buf) return NULL;
    float *d = (float *)buf;
    int16_t *bsum = (int16_t *)(buf + d_bytes);
    int8_t *q = (int8_t *)(buf + d_bytes + s_bytes);
    for (size_t i = 0; i < n; i++)
        sd_quantize_act_q8(job->w->type, job->x + i * cols, (int64_t)cols, q + i * cols, d + i * nb, bsum + i * ng);
    job->q8 = q, job->q8d = d, job->q8sum = bsum;
    return buf;
}

/* Several weights on the same x, as one job: one pool run; an activation quantization is
 * shared by the weights whose kernels read the same layout (int8: the same block size;
 * int16: the same type). Each y[i] gets the bits of its own single-weight call. */
static void cpu_matmul_group(sd_backend_t *be, int nw, const sd_weight_t *const *w, const float *x, int n,
                             const float *const *bias, float *const *y)
{
    if (n <= 0) return;
    matmul_job_t part[SD_MATMUL_GROUP_MAX];
    void *act[SD_MATMUL_GROUP_MAX] = {NULL};
    int first[SD_MATMUL_GROUP_MAX + 1] = {0};
    int64_t total = 0, tile = SD_Q8_TILE_W;
    for (int i = 0; i < nw; i++) {
        total += w[i]->rows;
        if (!sd_dot_q8_supported(w[i]->type) && sd_i16_tile_rows() > tile) tile = sd_i16_tile_rows();
    }
    /* about 4 tasks per thread over all weights (dynamic balance, few claims), whole tiles */
    int64_t per = total / ((int64_t)sd_threadpool_size(pool_of(be)) * 4);
    per = per < tile ? tile : per / tile * tile;
    for (int i = 0; i < nw; i++) {
        part[i] = (matmul_job_t){.w = w[i], .x = x, .bias = bias ? bias[i] : NULL, .y = y[i], .n = n,
                                 .rows_per_task = per};
        int j = 0; /* an earlier weight with the same activation layout */
        while (j < i && !(sd_dot_q8_supported(w[i]->type) && sd_dot_q8_supported(w[j]->type) &&
                          sd_act_q8_block(w[i]->type) == sd_act_q8_block(w[j]->type)) &&
               !(sd_dot_i16_supported(w[i]->type) && w[j]->type == w[i]->type))
            j++;
        if (j < i) {
            part[i].xq = part[j].xq, part[i].xs = part[j].xs, part[i].xsum = part[j].xsum;
            part[i].q8 = part[j].q8, part[i].q8d = part[j].q8d, part[i].q8sum = part[j].q8sum;
        } else if (sd_dot_q8_supported(w[i]->type)) {
            act[i] = quantize_activations_q8(&part[i]);
        } else if (sd_dot_i16_supported(w[i]->type)) {
            act[i] = quantize_activations(&part[i]);
        }
        first[i + 1] = first[i] + (int)((w[i]->rows + per - 1) / per);
    }
    matmul_group_t group = {.part = part, .first_task = first};
    sd_threadpool_run(pool_of(be), first[nw], matmul_group_task, &group);
    for (int i = 0; i < nw; i++) free(act[i]);
}

static void cpu_matmul(sd_backend_t *be, const sd_weight_t *w, const float *x, int n,
                       const float *bias, float *y)
{
    cpu_matmul_group(be, 1, &w, x, n, &bias, &y);
}

/* ---- rope --------------------------------------------------------------------------- */

static void cpu_rope(sd_backend_t *be, float *x, const int32_t *pos, int n, int n_head,
                     int head_dim, const sd_rope_params_t *p)
{
    int half = p->rot_dim / 2;
    /* NORM rotates (2i, 2i+1); NEOX rotates (i, i + rot_dim/2) */
    int stride = p->style == SD_ROPE_NEOX ? 1 : 2, partner = p->style == SD_ROPE_NEOX ? half : 1;
    double freq[ROPE_FREQ_CACHE]; /* the per-token pow of each pair, computed once per call */
    for (int i = 0; i < half && i < ROPE_FREQ_CACHE; i++) freq[i] = pow((double)p->freq_base, -2.0 * i / p->rot_dim);
    for (int t = 0; t < n; t++) {
        float *xt = x + (size_t)t * (size_t)n_head * (size_t)head_dim; /* x[t, n_head, head_dim] */
        for (int i = 0; i < half; i++) {
            double f = i < ROPE_FREQ_CACHE ? freq[i] : pow((double)p->freq_base, -2.0 * i / p->rot_dim);
            double theta = (double)pos[t] * f;
            float c = (float)cos(theta), s = (float)sin(theta);
            for (int h = 0; h < n_head; h++) {
                float *a = xt + (size_t)h * (size_t)head_dim + i * stride, *b = a + partner;
                float x0 = *a, x1 = *b;
                *a = x0 * c - x1 * s;
                *b = x0 * s + x1 * c;
            }
        }
    }
}

/* ---- attention ---------------------------------------------------------------------- */

/* The cache row of position j (backend_impl.h, the paged KV layout). */
static inline size_t kv_row_of(const int32_t *blocks, int block_size, int j)
{
    if (blocks == NULL) return (size_t)j;
    return (size_t)blocks[j / block_size] * (size_t)block_size + (size_t)(j % block_size);
}

typedef struct {
    const float *q, *k, *v; /* q[n, n_head, hd]; k, v rows [., n_head_kv, hd] */
    const int32_t *blocks;  /* paged layout, or NULL */
    int block_size;
    const int32_t *pos;     /* [n] query positions */
    float *out;             /* out[n, n_head, hd] */
    int n_ctx, n_head, n_head_kv, head_dim;
} attn_job_t;

/* The cache rows of keys t0 .. t0 + n - 1 of a row: slots 0 .. n_base - 1, then extra[]. */
static void attn_rows(const attn_job_t *job, int kvh, int n_base, const int32_t *extra, int t0,
                      int n, const float **k, const float **v)
{
    size_t hd = (size_t)job->head_dim, stride = (size_t)job->n_head_kv * hd, first = (size_t)kvh * hd;
    int t = t0, bs = job->blocks ? job->block_size : n_base + 1;
    while (t < t0 + n && t < n_base) { /* slots: a run of consecutive rows per cache block */
        size_t r = kv_row_of(job->blocks, job->block_size, t);
        int run = bs - t % bs, end = t + run < t0 + n ? t + run : t0 + n;
        end = end < n_base ? end : n_base;
        for (; t < end; t++, r++) {
            k[t - t0] = job->k + r * stride + first;
            v[t - t0] = job->v + r * stride + first;
        }
    }
    for (; t < t0 + n; t++) {
        size_t r = kv_row_of(job->blocks, job->block_size, extra[t - n_base]);
        k[t - t0] = job->k + r * stride + first;
        v[t - t0] = job->v + r * stride + first;
    }
}

/* s[t] = (k_t . q) * scale for n keys (sd_dot8_f32 gives sd_dot_f32's bits 8 keys at once). */
static void attn_scores(const float *const *k, const float *qh, int hd, float scale, int n, float *s)
{
    int t = 0;
#if defined(__AVX2__) && defined(__FMA__)
    if (hd == 64) /* SmolLM2's heads: the constant length keeps q in registers */
        for (; t + 8 <= n; t += 8)
            _mm256_storeu_ps(s + t, _mm256_mul_ps(sd_dot8_f32(k + t, qh, 64), _mm256_set1_ps(scale)));
    for (; t + 8 <= n; t += 8)
        _mm256_storeu_ps(s + t, _mm256_mul_ps(sd_dot8_f32(k + t, qh, hd), _mm256_set1_ps(scale)));
#endif
    for (; t < n; t++) s[t] = sd_dot_f32(k[t], qh, hd) * scale;
}

/* The largest of max and s[0 .. n) (a NaN score is skipped). */
static float attn_max(const float *s, int n, float max)
{
    int t = 0;
#if defined(__AVX2__) && defined(__FMA__)
    __m256 m = _mm256_set1_ps(max);
    for (; t + 8 <= n; t += 8) m = _mm256_max_ps(_mm256_loadu_ps(s + t), m); /* NaN: keeps m */
    float l[8];
    _mm256_storeu_ps(l, m);
    for (int i = 0; i < 8; i++) max = l[i] > max ? l[i] : max;
#endif
    for (; t < n; t++) max = s[t] > max ? s[t] : max;
    return max;
}

/* s[t] = sd_exp_f32(s[t] - max) for n keys (a chunk of the row: n % 8 != 0 in its last chunk
 * only); lane[t % 8] += s[t] over whole groups of 8 keys, *tail += s[t] over the rest, in order. */
static void attn_exp(float *s, int n, float max, float lane[8], float *tail)
{
    int t = 0;
#if defined(__AVX2__) && defined(__FMA__)
    __m256 acc = _mm256_loadu_ps(lane), m = _mm256_set1_ps(max);
    for (; t + 8 <= n; t += 8) {
        __m256 e = sd_exp8_f32(_mm256_sub_ps(_mm256_loadu_ps(s + t), m));
        _mm256_storeu_ps(s + t, e);
        acc = _mm256_add_ps(acc, e);
    }
    _mm256_storeu_ps(lane, acc);
#else
    for (; t + 8 <= n; t += 8)
        for (int l = 0; l < 8; l++) lane[l] += s[t + l] = sd_exp_f32(s[t + l] - max);
#endif
    for (; t < n; t++) *tail += s[t] = sd_exp_f32(s[t] - max);
}

/* oh[d] = fma(e[t], v_t[d], oh[d]) over t in order (sd_axpy_f32's bits; 64 columns per pass
 * kept in registers). */
static void attn_accumulate(float *oh, const float *const *v, const float *e, int n, int hd)
{
    int d0 = 0;
#if defined(__AVX2__) && defined(__FMA__)
    for (; d0 + 64 <= hd; d0 += 64) {
        __m256 o[8];
        for (int c = 0; c < 8; c++) o[c] = _mm256_loadu_ps(oh + d0 + 8 * c);
        for (int t = 0; t < n; t++) {
            __m256 et = _mm256_set1_ps(e[t]);
#pragma GCC unroll 8
            for (int c = 0; c < 8; c++) o[c] = _mm256_fmadd_ps(et, _mm256_loadu_ps(v[t] + d0 + 8 * c), o[c]);
        }
        for (int c = 0; c < 8; c++) _mm256_storeu_ps(oh + d0 + 8 * c, o[c]);
    }
#endif
    if (d0 < hd)
        for (int t = 0; t < n; t++) sd_axpy_f32(oh + d0, e[t], v[t] + d0, hd - d0);
}

/* One (query, head) row over the keys slots 0 .. n_base - 1 then extra[0 .. n_extra) in that
 * order (the plain and the masked op share this arithmetic, so a tree node's row equals a
 * chain's bit for bit). Two passes in chunks of ATTN_SCORE_CACHE keys (the first chunk's
 * scores kept, the others recomputed): the max of the scores, then e_t = sd_exp_f32(s_t - max),
 * sum = the 8 lane sums of whole groups of 8 keys reduced as sd_dot_f32 reduces, plus the
 * remaining keys in order, and out = (sum_t e_t v_t, fma in key order) * (1 / sum). The
 * result depends only on the row's query and keys, never on the other rows of the call. */
static void attn_row(const attn_job_t *job, const float *qh, float *oh, int kvh, int n_base,
                     const int32_t *extra, int n_extra)
{
    int hd = job->head_dim, n_keys = n_base + n_extra;
    float scale = 1.0f / sqrtf((float)hd), s[ATTN_SCORE_CACHE], max = -INFINITY;
    const float *k[ATTN_SCORE_CACHE], *v[ATTN_SCORE_CACHE];
    int last = (n_keys - 1) / ATTN_SCORE_CACHE * ATTN_SCORE_CACHE; /* chunk 0 scored last: kept */
    for (int t0 = last; t0 >= 0; t0 -= ATTN_SCORE_CACHE) {
        int n = n_keys - t0 < ATTN_SCORE_CACHE ? n_keys - t0 : ATTN_SCORE_CACHE;
        attn_rows(job, kvh, n_base, extra, t0, n, k, v);
        attn_scores(k, qh, hd, scale, n, s);
        max = attn_max(s, n, max);
    }
    memset(oh, 0, (size_t)hd * sizeof(float));
    float lane[8] = {0}, tail = 0.0f;
    for (int t0 = 0; t0 < n_keys; t0 += ATTN_SCORE_CACHE) {
        int n = n_keys - t0 < ATTN_SCORE_CACHE ? n_keys - t0 : ATTN_SCORE_CACHE;
        if (t0 > 0) { /* chunk 0's rows and scores are those of the first pass's end */
            attn_rows(job, kvh, n_base, extra, t0, n, k, v);
            attn_scores(k, qh, hd, scale, n, s);
        }
        attn_exp(s, n, max, lane, &tail);
        attn_accumulate(oh, v, s, n, hd);
    }
    float sum = ((lane[0] + lane[4]) + (lane[2] + lane[6])) + ((lane[1] + lane[5]) + (lane[3] + lane[7]));
    sum += tail;
    float inv = 1.0f / sum;
    for (int d = 0; d < hd; d++) oh[d] *= inv;
}

static void attn_nan_row(float *oh, int hd)
{
    for (int d = 0; d < hd; d++) oh[d] = NAN;
}

/* Query i, head h over positions 0..pos[i]; a position outside [0, n_ctx) gives a NaN row
 * (the device kernels do the same). */
static void attn_task(void *arg, int task)
{
    const attn_job_t *job = arg;
    int i = task / job->n_head, h = task % job->n_head, hd = job->head_dim;
    int kvh = h / (job->n_head / job->n_head_kv), p = job->pos[i];
    size_t off = ((size_t)i * (size_t)job->n_head + (size_t)h) * (size_t)hd;
    if (p < 0 || p >= job->n_ctx) {
        attn_nan_row(job->out + off, hd);
        return;
    }
    attn_row(job, job->q + off, job->out + off, kvh, p + 1, NULL, 0);
}

static void cpu_attention(sd_backend_t *be, const float *q, const float *k_cache,
                          const float *v_cache, const int32_t *blocks, int block_size,
                          const int32_t *pos, int n, int n_ctx, int n_head, int n_head_kv,
                          int head_dim, float *out)
{
    if (blocks != NULL && block_size < 1) return; /* a bad layout: nothing read */
    attn_job_t job = {.q = q, .k = k_cache, .v = v_cache, .blocks = blocks,
                      .block_size = block_size, .pos = pos, .out = out, .n_ctx = n_ctx,
                      .n_head = n_head, .n_head_kv = n_head_kv, .head_dim = head_dim};
    sd_threadpool_run(pool_of(be), n * n_head, attn_task, &job);
}

typedef struct {
    attn_job_t a;
    const uint8_t *mask; /* [n, m] */
    int base, m;
} attn_masked_job_t;

/* Query i, head h of the masked op: slots [0, base), then base + j where mask row i is set;
 * a NaN row for bad geometry (base < 0, m outside [0, SD_ATTN_MASK_MAX_COLS], base + m >
 * n_ctx) or no key at all. */
static void attn_masked_task(void *arg, int task)
{
    const attn_masked_job_t *mj = arg;
    const attn_job_t *job = &mj->a;
    int i = task / job->n_head, h = task % job->n_head, hd = job->head_dim;
    int kvh = h / (job->n_head / job->n_head_kv);
    size_t off = ((size_t)i * (size_t)job->n_head + (size_t)h) * (size_t)hd;
    int32_t extra[SD_ATTN_MASK_MAX_COLS];
    int n_extra = 0;
    if (mj->base >= 0 && mj->m >= 0 && mj->m <= SD_ATTN_MASK_MAX_COLS &&
        mj->base <= job->n_ctx - mj->m)
        for (int j = 0; j < mj->m; j++)
            if (mj->mask[(size_t)i * (size_t)mj->m + (size_t)j]) extra[n_extra++] = mj->base + j;
    if (mj->base < 0 || mj->m < 0 || mj->m > SD_ATTN_MASK_MAX_COLS ||
        mj->base > job->n_ctx - mj->m || mj->base + n_extra == 0) {
        attn_nan_row(job->out + off, hd);
        return;
    }
    attn_row(job, job->q + off, job->out + off, kvh, mj->base, extra, n_extra);
}

static void cpu_attention_masked(sd_backend_t *be, const float *q, const float *k_cache,
                                 const float *v_cache, const int32_t *blocks, int block_size,
                                 int base, const uint8_t *mask, int n, int m, int n_ctx,
                                 int n_head, int n_head_kv, int head_dim, float *out)
{
    if (blocks != NULL && block_size < 1) return; /* a bad layout: nothing read */
    attn_masked_job_t job = {{.q = q, .k = k_cache, .v = v_cache, .blocks = blocks,
                              .block_size = block_size, .out = out, .n_ctx = n_ctx,
                              .n_head = n_head, .n_head_kv = n_head_kv, .head_dim = head_dim},
                             mask, base, m};
    sd_threadpool_run(pool_of(be), n * n_head, attn_masked_task, &job);
}

/* The row of pos[i] = rows[i, row]; rows whose position is outside [0, n_ctx) are skipped. */
static void cpu_kv_store(sd_backend_t *be, float *cache, const float *rows, const int32_t *blocks,
                         int block_size, const int32_t *pos, int n, int n_ctx, size_t row)
{
    (void)be;
    if (blocks != NULL && block_size < 1) return;
    for (int i = 0; i < n; i++)
        if (pos[i] >= 0 && pos[i] < n_ctx)
            memcpy(cache + kv_row_of(blocks, block_size, pos[i]) * row, rows + (size_t)i * row,
                   row * sizeof(float));
}

/* ---- element-wise ------------------------------------------------------------------- */

typedef struct {
    const float *gate, *up;
    float *out;
    size_t len;
} swiglu_job_t;

static void swiglu_task(void *arg, int task)
{
    const swiglu_job_t *job = arg;
    size_t i0 = (size_t)task * ELEMWISE_CHUNK;
    size_t i1 = i0 + ELEMWISE_CHUNK < job->len ? i0 + ELEMWISE_CHUNK : job->len;
    size_t i = i0;
#if defined(__AVX2__) && defined(__FMA__)
    __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
    for (; i + 8 <= i1; i += 8) { /* the scalar loop's operations, 8 lanes */
        __m256 g = _mm256_loadu_ps(job->gate + i);
        __m256 e = sd_exp8_f32(_mm256_xor_ps(g, sign));
        __m256 r = _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(one, e)), _mm256_loadu_ps(job->up + i));
        _mm256_storeu_ps(job->out + i, r);
    }
#endif
    for (; i < i1; i++) {
        float g = job->gate[i];
        job->out[i] = g / (1.0f + sd_exp_f32(-g)) * job->up[i];
    }
}

static void cpu_swiglu(sd_backend_t *be, const float *gate, const float *up, size_t len,
                       float *out)
{
    swiglu_job_t job = {.gate = gate, .up = up, .out = out, .len = len};
    sd_threadpool_run(pool_of(be), (int)((len + ELEMWISE_CHUNK - 1) / ELEMWISE_CHUNK), swiglu_task,
                      &job);
}

static void cpu_add(sd_backend_t *be, float *y, const float *x, size_t len)
{
    for (size_t i = 0; i < len; i++) y[i] += x[i];
}

/* ---- lifetime ----------------------------------------------------------------------- */

static void cpu_destroy(sd_backend_t *be)
{
    cpu_ctx_t *ctx = be->ctx;
    sd_threadpool_destroy(ctx->pool);
    free(ctx);
    free(be);
}

/* Every CPU op has finished when it returns, and none can fail. */
static sd_status_t cpu_sync(sd_backend_t *be)
{
    (void)be;
    return SD_OK;
}

static const sd_backend_ops_t cpu_ops = {
    .name = "cpu",
    .host_memory = 1,
    .destroy = cpu_destroy,
    .sync = cpu_sync,
    .alloc = cpu_alloc,
    .release = cpu_release,
    .upload = cpu_copy,
    .download = cpu_copy,
    .embed = cpu_embed,
    .rmsnorm = cpu_rmsnorm,
    .matmul = cpu_matmul,
    .matmul_group = cpu_matmul_group,
    .rope = cpu_rope,
    .attention = cpu_attention,
    .attention_masked = cpu_attention_masked,
    .kv_store = cpu_kv_store,
    .swiglu = cpu_swiglu,
    .add = cpu_add,
    /* no graphs: every op runs when it is called */
};

sd_status_t sd_backend_cpu_create(int n_threads, sd_backend_t **out)
{
    *out = NULL;
    sd_backend_t *be = calloc(1, sizeof *be);
    cpu_ctx_t *ctx = calloc(1, sizeof *ctx);
    if (!be || !ctx) {
        free(be);
        free(ctx);
        return sd_set_error(SD_ERR_OUT_OF_MEMORY, "out of memory creating the CPU backend");
    }
    sd_status_t st = sd_threadpool_create(n_threads, &ctx->pool);
    if (st != SD_OK) {
        free(be);
        free(ctx);
        return st;
    }
    be->ops = &cpu_ops;
    be->ctx = ctx;
    *out = be;
    return SD_OK;
}
