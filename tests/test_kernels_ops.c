/* CPU backend ops against naive double-precision references, plus batch invariance
 * (n = 1 vs n = 5/7) and thread-count invariance (1 vs 2 vs 3 threads), bit for bit. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend_impl.h"
#include "support/test_util.h"
#include "support/test_weight.h"

static sd_backend_t *make_backend(int n_threads)
{
    sd_backend_t *be = NULL;
    cr_assert_eq(sd_backend_cpu_create(n_threads, &be), SD_OK, "%s", sd_last_error());
    return be;
}

/* ---- matmul ------------------------------------------------------------------------------ */

typedef struct {
    sd_dtype_t type;
    int rows, cols;
} mm_param_t;

static mm_param_t mm_params[] = {
    {SD_DTYPE_F32, 37, 19},   {SD_DTYPE_F16, 41, 67},   {SD_DTYPE_BF16, 13, 96},
    {SD_DTYPE_Q8_0, 67, 96},  {SD_DTYPE_Q4_0, 33, 64},  {SD_DTYPE_Q4_1, 129, 576},
    {SD_DTYPE_Q4_K, 29, 512}, {SD_DTYPE_Q6_K, 31, 768},  {SD_DTYPE_Q5_0, 19, 96},
    {SD_DTYPE_Q5_1, 23, 64},  {SD_DTYPE_IQ4_NL, 9, 160}, {SD_DTYPE_Q2_K, 17, 256},
    {SD_DTYPE_Q3_K, 25, 512}, {SD_DTYPE_Q5_K, 33, 256},  {SD_DTYPE_IQ4_XS, 12, 768},
};

ParameterizedTestParameters(kernels_ops, matmul)
{
    return cr_make_param_array(mm_param_t, mm_params, sizeof mm_params / sizeof mm_params[0]);
}

/* y[n, rows] against the double reference; then each row alone (n = 1) and in batches of
 * 5 and 7 must give the same bits; then 1, 2 and 3 threads must agree. */
ParameterizedTest(mm_param_t *p, kernels_ops, matmul, .timeout = 60)
{
    enum { N = 7 };
    sd_test_weight_t tw = sd_test_make_weight(p->type, p->rows, p->cols, 11);
    size_t ny = (size_t)N * (size_t)p->rows;
    float *x = malloc(sizeof(float) * (size_t)N * (size_t)p->cols), *bias = malloc(sizeof(float) * (size_t)p->rows);
    float *y = malloc(sizeof(float) * ny), *y1 = malloc(sizeof(float) * ny), *y5 = malloc(sizeof(float) * ny);
    sd_test_fill_random(x, (size_t)N * (size_t)p->cols, 3, 2.0f);
    sd_test_fill_random(bias, (size_t)p->rows, 5, 1.0f);
    sd_backend_t *be2 = make_backend(2);
    be2->ops->matmul(be2, &tw.w, x, N, bias, y);
    for (int i = 0; i < N; i++)
        for (int r = 0; r < p->rows; r++) {
            double ref = bias[r], mag = fabs(bias[r]);
            for (int c = 0; c < p->cols; c++) {
                double t = (double)tw.deq[(size_t)r * (size_t)p->cols + (size_t)c] * x[(size_t)i * (size_t)p->cols + (size_t)c];
                ref += t;
                mag += fabs(t);
            }
            float got = y[(size_t)i * (size_t)p->rows + (size_t)r];
            double tol = 2e-6 * mag + sd_test_act_bound(&tw, r, x + (size_t)i * (size_t)p->cols);
            cr_assert(fabs(got - ref) <= tol, "%s y[%d,%d] = %.9g, reference %.9g (tol %g)",
                      sd_dtype_name(p->type), i, r, got, ref, tol);
        }
    /* batch invariance */
    for (int i = 0; i < N; i++) be2->ops->matmul(be2, &tw.w, x + (size_t)i * (size_t)p->cols, 1, bias, y1 + (size_t)i * (size_t)p->rows);
    be2->ops->matmul(be2, &tw.w, x, 5, bias, y5);
    be2->ops->matmul(be2, &tw.w, x + 5 * (size_t)p->cols, 2, bias, y5 + 5 * (size_t)p->rows);
    cr_assert(memcmp(y, y1, sizeof(float) * ny) == 0, "%s: n=1 rows differ from n=7", sd_dtype_name(p->type));
    cr_assert(memcmp(y, y5, sizeof(float) * ny) == 0, "%s: n=5+2 rows differ from n=7", sd_dtype_name(p->type));
    /* thread invariance */
    for (int t = 1; t <= 3; t += 2) {
        sd_backend_t *be = make_backend(t);
        be->ops->matmul(be, &tw.w, x, N, bias, y1);
        cr_assert(memcmp(y, y1, sizeof(float) * ny) == 0, "%s: %d threads differ from 2", sd_dtype_name(p->type), t);
        sd_backend_destroy(be);
    }
    /* without bias: y - bias exactly as the bias was added last */
    be2->ops->matmul(be2, &tw.w, x, 1, NULL, y1);
    for (int r = 0; r < p->rows; r++) cr_assert_eq(y1[r] + bias[r], y[r]);
    sd_backend_destroy(be2);
    free(x);
    free(bias);
    free(y);
    free(y1);
    free(y5);
    sd_test_free_weight(&tw);
}

Test(kernels_ops, matmul_large_rows_thread_invariant, .timeout = 60)
{
    /* enough rows that several tasks run on every thread */
    sd_test_weight_t tw = sd_test_make_weight(SD_DTYPE_Q8_0, 3001, 128, 21);
    float x[3 * 128], *ya = malloc(sizeof(float) * 3 * 3001), *yb = malloc(sizeof(float) * 3 * 3001);
    sd_test_fill_random(x, 3 * 128, 9, 1.0f);
    sd_backend_t *b1 = make_backend(1), *b3 = make_backend(3);
    b1->ops->matmul(b1, &tw.w, x, 3, NULL, ya);
    b3->ops->matmul(b3, &tw.w, x, 3, NULL, yb);
    cr_assert(memcmp(ya, yb, sizeof(float) * 3 * 3001) == 0);
    sd_backend_destroy(b1);
    sd_backend_destroy(b3);
    free(ya);
    free(yb);
    sd_test_free_weight(&tw);
}

/* The int16 matmul computes weight rows in tiles of 4 (a partial last tile repeats its last
 * row): a row's result must not depend on its position in a tile. Views of the same weight
 * starting 1..3 rows later (and 1 or 2 threads, n = 3 so activation tiles are 2 + 1) must
 * reproduce the full matmul's rows bit for bit. */
Test(kernels_ops, matmul_rows_independent_of_tile_position, .timeout = 60)
{
    enum { N = 3, ROWS = 23, COLS = 96 };
    sd_dtype_t types[] = {SD_DTYPE_Q4_0, SD_DTYPE_Q4_1, SD_DTYPE_Q8_0};
    float x[N * COLS], y[N * ROWS], ys[N * ROWS];
    sd_test_fill_random(x, N * COLS, 17, 3.0f);
    for (int ti = 0; ti < 3; ti++) {
        sd_test_weight_t tw = sd_test_make_weight(types[ti], ROWS, COLS, 31);
        sd_backend_t *be1 = make_backend(1);
        be1->ops->matmul(be1, &tw.w, x, N, NULL, y);
        for (int t = 1; t <= 2; t++) {
            sd_backend_t *be = make_backend(t);
            for (int k = 1; k <= 3; k++) {
                sd_weight_t view = tw.w;
                view.rows = ROWS - k;
                view.data = (const char *)tw.w.data + (size_t)k * tw.w.row_bytes;
                be->ops->matmul(be, &view, x, N, NULL, ys);
                for (int i = 0; i < N; i++)
                    for (int r = 0; r < ROWS - k; r++)
                        cr_assert(memcmp(&ys[i * (ROWS - k) + r], &y[i * ROWS + r + k], sizeof(float)) == 0,
                                  "%s, %d threads, offset %d: y[%d,%d] = %.9g, full matmul %.9g",
                                  sd_dtype_name(types[ti]), t, k, i, r + k, ys[i * (ROWS - k) + r],
                                  y[i * ROWS + r + k]);
            }
            sd_backend_destroy(be);
        }
        sd_backend_destroy(be1);
        sd_test_free_weight(&tw);
    }
}

/* Verification forwards k + 1 rows and prefill forwards chunks of many: the int16 kernel
 * decodes a weight block once for up to SD_I16_TILE_X (16) activation rows, keeps the
 * accumulators of a lone row in registers (a separately compiled path) and those of several
 * in memory, and takes another pass beyond 16. Splitting 35 rows into consecutive calls of
 * every size 1..35 (so calls of 1, 2, 16, 17, 33 rows all occur, at every offset) must
 * reproduce the single 35-row call bit for bit, for every weight type. */
Test(kernels_ops, matmul_every_batch_size_gives_identical_rows, .timeout = 60)
{
    enum { N = 35, ROWS = 27, COLS = 512 };
    sd_dtype_t types[] = {SD_DTYPE_Q4_0, SD_DTYPE_Q4_1, SD_DTYPE_Q8_0,
                          SD_DTYPE_Q4_K, SD_DTYPE_Q6_K, SD_DTYPE_F16};
    float *x = malloc(sizeof(float) * N * COLS), *y = malloc(sizeof(float) * N * ROWS);
    float *yb = malloc(sizeof(float) * N * ROWS);
    sd_test_fill_random(x, N * COLS, 23, 2.0f);
    sd_backend_t *be = make_backend(2);
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        sd_test_weight_t tw = sd_test_make_weight(types[ti], ROWS, COLS, 41);
        be->ops->matmul(be, &tw.w, x, N, NULL, y);
        for (int size = 1; size <= N; size++) {
            memset(yb, 0xFF, sizeof(float) * N * ROWS);
            for (int i0 = 0; i0 < N; i0 += size)
                be->ops->matmul(be, &tw.w, x + (size_t)i0 * COLS, N - i0 < size ? N - i0 : size, NULL,
                                yb + (size_t)i0 * ROWS);
            for (int i = 0; i < N; i++)
                cr_assert(memcmp(yb + (size_t)i * ROWS, y + (size_t)i * ROWS, sizeof(float) * ROWS) == 0,
                          "%s: row %d computed in calls of %d rows differs from one call of %d",
                          sd_dtype_name(types[ti]), i, size, N);
        }
        sd_test_free_weight(&tw);
    }
    sd_backend_destroy(be);
    free(x);
    free(y);
    free(yb);
}

/* Q/K/V and gate/up run as one matmul_group: each output must equal its own matmul bit for
 * bit (bias included), whether the group's weights share an activation quantization (same
 * int8 block: Q4_K with Q6_K; same int16 type) or not (Q5_0's 32-element blocks, Q8_0, F16),
 * at 1..3 threads and 1, 3 and 9 activation rows; the ops-less wrapper gives the same. */
Test(kernels_ops, matmul_group_equals_separate_matmuls, .timeout = 60)
{
    enum { COLS = 512, MAXN = 9 };
    const sd_dtype_t groups[][3] = {{SD_DTYPE_Q4_K, SD_DTYPE_Q4_K, SD_DTYPE_Q6_K},
                                    {SD_DTYPE_Q4_K, SD_DTYPE_Q5_0, SD_DTYPE_Q6_K},
                                    {SD_DTYPE_Q4_1, SD_DTYPE_Q4_1, SD_DTYPE_Q8_0},
                                    {SD_DTYPE_F16, SD_DTYPE_Q4_0, SD_DTYPE_IQ4_XS}};
    const int rows[3] = {67, 21, 21};
    float *x = malloc(sizeof(float) * MAXN * COLS), *bias = malloc(sizeof(float) * 67);
    sd_test_fill_random(x, MAXN * COLS, 5, 2.0f);
    sd_test_fill_random(bias, 67, 6, 1.0f);
    for (size_t gi = 0; gi < sizeof groups / sizeof groups[0]; gi++) {
        sd_test_weight_t tw[3];
        const sd_weight_t *w[3];
        float *ys[3], *yg[3];
        for (int i = 0; i < 3; i++) {
            tw[i] = sd_test_make_weight(groups[gi][i], rows[i], COLS, 50 + i);
            w[i] = &tw[i].w;
            ys[i] = malloc(sizeof(float) * MAXN * (size_t)rows[i]);
            yg[i] = malloc(sizeof(float) * MAXN * (size_t)rows[i]);
        }
        const float *biases[3] = {bias, NULL, bias};
        for (int t = 1; t <= 3; t++) {
            sd_backend_t *be = make_backend(t);
            for (int ni = 0; ni < 3; ni++) {
                int n = (int[]){1, 3, MAXN}[ni];
                for (int i = 0; i < 3; i++) be->ops->matmul(be, w[i], x, n, biases[i], ys[i]);
                for (int via_wrapper = 0; via_wrapper < 2; via_wrapper++) {
                    for (int i = 0; i < 3; i++) memset(yg[i], 0xFF, sizeof(float) * MAXN * (size_t)rows[i]);
                    if (via_wrapper) {
                        sd_backend_ops_t ops = *be->ops;
                        ops.matmul_group = NULL;
                        sd_backend_t plain = {.ops = &ops, .ctx = be->ctx};
                        sd_backend_matmul_group(&plain, 3, w, x, n, biases, yg);
                    } else {
                        sd_backend_matmul_group(be, 3, w, x, n, biases, yg);
                    }
                    for (int i = 0; i < 3; i++)
                        cr_assert(memcmp(yg[i], ys[i], sizeof(float) * (size_t)n * (size_t)rows[i]) == 0,
                                  "group %zu, weight %d (%s), %d threads, n = %d%s: differs from its own matmul",
                                  gi, i, sd_dtype_name(groups[gi][i]), t, n, via_wrapper ? " (wrapper)" : "");
                }
            }
            sd_backend_destroy(be);
        }
        for (int i = 0; i < 3; i++) {
            sd_test_free_weight(&tw[i]);
            free(ys[i]);
            free(yg[i]);
        }
    }
    free(x);
    free(bias);
}

/* ---- attention ------------------------------------------------------------------------- */

typedef struct {
    int n_head, n_head_kv, head_dim, pos0, n;
} attn_param_t;

static attn_param_t attn_params[] = {
    {4, 4, 16, 0, 7},  /* GQA ratio 1, prefill from 0 */
    {6, 3, 20, 5, 7},  /* ratio 2, odd-ish head_dim, past context */
    {9, 3, 64, 11, 7}, /* ratio 3 (SmolLM2 shape) */
    {3, 1, 33, 2, 7},  /* ratio 3, odd head_dim */
};

ParameterizedTestParameters(kernels_ops, attention)
{
    return cr_make_param_array(attn_param_t, attn_params, sizeof attn_params / sizeof attn_params[0]);
}

/* Double-precision attention of query row qh (head h of a [n_head, hd] row) over cache
 * positions 0 .. pos: out[hd]. */
static void attention_ref(const attn_param_t *p, const float *qh, const float *k, const float *v,
                          int pos, int h, double *out)
{
    int hd = p->head_dim, kvh = h / (p->n_head / p->n_head_kv), n_keys = pos + 1;
    double *s = malloc(sizeof(double) * (size_t)n_keys), max = -INFINITY, sum = 0.0;
    for (int j = 0; j < n_keys; j++) {
        const float *kj = k + ((size_t)j * (size_t)p->n_head_kv + (size_t)kvh) * (size_t)hd;
        s[j] = 0.0;
        for (int d = 0; d < hd; d++) s[j] += (double)qh[d] * kj[d];
        s[j] /= sqrt((double)hd);
        max = fmax(max, s[j]);
    }
    for (int d = 0; d < hd; d++) out[d] = 0.0;
    for (int j = 0; j < n_keys; j++) {
        double e = exp(s[j] - max);
        sum += e;
        const float *vj = v + ((size_t)j * (size_t)p->n_head_kv + (size_t)kvh) * (size_t)hd;
        for (int d = 0; d < hd; d++) out[d] += e * vj[d];
    }
    for (int d = 0; d < hd; d++) out[d] /= sum;
    free(s);
}

/* out[n, n_head, hd] (queries q at positions pos) against the double reference. */
static void assert_attention_matches_ref(const attn_param_t *p, const float *q, const float *k,
                                         const float *v, const int32_t *pos, int n, const float *out)
{
    int hd = p->head_dim;
    double *ref = malloc(sizeof(double) * (size_t)hd);
    for (int i = 0; i < n; i++)
        for (int h = 0; h < p->n_head; h++) {
            size_t off = ((size_t)i * (size_t)p->n_head + (size_t)h) * (size_t)hd;
            attention_ref(p, q + off, k, v, pos[i], h, ref);
            for (int d = 0; d < hd; d++)
                cr_assert(fabs(out[off + (size_t)d] - ref[d]) <= 1e-5,
                          "query %d (position %d) head %d dim %d: %g vs %g", i, pos[i], h, d,
                          out[off + (size_t)d], ref[d]);
        }
    free(ref);
}

ParameterizedTest(attn_param_t *p, kernels_ops, attention, .timeout = 60)
{
    int n_ctx = p->pos0 + p->n + 3, hd = p->head_dim; /* rows past the last query: unread */
    size_t qn = (size_t)p->n * (size_t)p->n_head * (size_t)hd;
    size_t kvn = (size_t)n_ctx * (size_t)p->n_head_kv * (size_t)hd;
    float *q = malloc(sizeof(float) * qn), *k = malloc(sizeof(float) * kvn), *v = malloc(sizeof(float) * kvn);
    float *out = malloc(sizeof(float) * qn), *o1 = malloc(sizeof(float) * qn);
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)p->n);
    for (int i = 0; i < p->n; i++) pos[i] = p->pos0 + i;
    sd_test_fill_random(q, qn, 1, 2.0f);
    sd_test_fill_random(k, kvn, 2, 2.0f);
    sd_test_fill_random(v, kvn, 3, 1.0f);
    sd_backend_t *be = make_backend(2);
    be->ops->attention(be, q, k, v, NULL, 0, pos, p->n, n_ctx, p->n_head, p->n_head_kv, hd, out);
    assert_attention_matches_ref(p, q, k, v, pos, p->n, out);
    /* batch invariance: query i computed alone at its position, with a cache that ends
     * right after it (n_ctx does not change a result either) */
    size_t row = (size_t)p->n_head * (size_t)hd;
    for (int i = 0; i < p->n; i++)
        be->ops->attention(be, q + (size_t)i * row, k, v, NULL, 0, pos + i, 1, pos[i] + 1, p->n_head, p->n_head_kv, hd,
                           o1 + (size_t)i * row);
    cr_assert(memcmp(out, o1, sizeof(float) * qn) == 0, "n=1 queries differ from the batch");
    be->ops->attention(be, q + 2 * row, k, v, NULL, 0, pos + 2, 5, n_ctx, p->n_head, p->n_head_kv, hd, o1);
    cr_assert(memcmp(out + 2 * row, o1, sizeof(float) * 5 * row) == 0, "n=5 queries differ");
    /* thread invariance */
    for (int t = 1; t <= 3; t += 2) {
        sd_backend_t *bt = make_backend(t);
        bt->ops->attention(bt, q, k, v, NULL, 0, pos, p->n, n_ctx, p->n_head, p->n_head_kv, hd, o1);
        cr_assert(memcmp(out, o1, sizeof(float) * qn) == 0, "%d threads differ from 2", t);
        sd_backend_destroy(bt);
    }
    sd_backend_destroy(be);
    free(pos);
    free(q);
    free(k);
    free(v);
    free(out);
    free(o1);
}

/* Positions in any order, repeated, with gaps: query i attends to 0 .. pos[i] only, and
 * equals the same query computed alone (bit for bit). */
Test(kernels_ops, attention_non_consecutive_positions, .timeout = 60)
{
    enum { N = 8, N_CTX = 40 };
    attn_param_t p = {6, 2, 24, 0, N};
    const int32_t pos[N] = {17, 0, 39, 3, 17, 8, 1, 25};
    size_t row = (size_t)p.n_head * (size_t)p.head_dim, qn = N * row;
    size_t kvn = (size_t)N_CTX * (size_t)p.n_head_kv * (size_t)p.head_dim;
    float *q = malloc(sizeof(float) * qn), *k = malloc(sizeof(float) * kvn), *v = malloc(sizeof(float) * kvn);
    float *out = malloc(sizeof(float) * qn), *alone = malloc(sizeof(float) * row);
    sd_test_fill_random(q, qn, 11, 2.0f);
    sd_test_fill_random(k, kvn, 12, 2.0f);
    sd_test_fill_random(v, kvn, 13, 1.0f);
    sd_backend_t *be = make_backend(3);
    be->ops->attention(be, q, k, v, NULL, 0, pos, N, N_CTX, p.n_head, p.n_head_kv, p.head_dim, out);
    assert_attention_matches_ref(&p, q, k, v, pos, N, out);
    for (int i = 0; i < N; i++) {
        be->ops->attention(be, q + (size_t)i * row, k, v, NULL, 0, &pos[i], 1, N_CTX, p.n_head, p.n_head_kv,
                           p.head_dim, alone);
        cr_assert(memcmp(alone, out + (size_t)i * row, sizeof(float) * row) == 0,
                  "query %d (position %d) alone differs from the batch", i, pos[i]);
    }
    sd_backend_destroy(be);
    free(q), free(k), free(v), free(out), free(alone);
}

/* A position outside [0, n_ctx) gives a NaN row and leaves the other queries exact. */
Test(kernels_ops, attention_position_outside_the_cache_gives_nan)
{
    enum { N = 3, N_CTX = 5, H = 2, HD = 8 };
    attn_param_t p = {H, 1, HD, 0, N};
    const int32_t pos[N] = {4, N_CTX, -1};
    float q[N * H * HD], k[N_CTX * HD], v[N_CTX * HD], out[N * H * HD];
    sd_test_fill_random(q, N * H * HD, 21, 1.0f);
    sd_test_fill_random(k, N_CTX * HD, 22, 1.0f);
    sd_test_fill_random(v, N_CTX * HD, 23, 1.0f);
    sd_backend_t *be = make_backend(2);
    be->ops->attention(be, q, k, v, NULL, 0, pos, N, N_CTX, H, 1, HD, out);
    assert_attention_matches_ref(&p, q, k, v, pos, 1, out);
    for (int i = H * HD; i < N * H * HD; i++) cr_assert(isnan(out[i]), "element %d: %g", i, out[i]);
    sd_backend_destroy(be);
}

Test(kernels_ops, attention_long_context, .timeout = 60)
{
    /* more keys than the kernel keeps on its stack: recomputed scores must agree */
    attn_param_t p = {2, 1, 8, 2500, 2};
    int n_ctx = p.pos0 + p.n;
    const int32_t pos[2] = {p.pos0, p.pos0 + 1};
    size_t kvn = (size_t)n_ctx * 8;
    float q[2 * 2 * 8], out[2 * 2 * 8], *k = malloc(sizeof(float) * kvn), *v = malloc(sizeof(float) * kvn);
    sd_test_fill_random(q, 32, 4, 1.0f);
    sd_test_fill_random(k, kvn, 5, 1.0f);
    sd_test_fill_random(v, kvn, 6, 1.0f);
    sd_backend_t *be = make_backend(2);
    be->ops->attention(be, q, k, v, NULL, 0, pos, p.n, n_ctx, p.n_head, p.n_head_kv, 8, out);
    assert_attention_matches_ref(&p, q, k, v, pos, p.n, out);
    sd_backend_destroy(be);
    free(k);
    free(v);
}

/* ---- kv_store ------------------------------------------------------------------------------ */

/* Rows land at their positions, exactly; other rows are untouched; a position outside the
 * cache stores nothing. */
Test(kernels_ops, kv_store_writes_rows_at_their_positions)
{
    enum { N = 5, N_CTX = 9, ROW = 13 };
    const int32_t pos[N] = {6, 0, 3, N_CTX, -2};
    float rows[N * ROW], cache[N_CTX * ROW], before[N_CTX * ROW];
    sd_test_fill_random(rows, N * ROW, 31, 3.0f);
    sd_test_fill_random(cache, N_CTX * ROW, 32, 1.0f);
    memcpy(before, cache, sizeof cache);
    sd_backend_t *be = make_backend(2);
    be->ops->kv_store(be, cache, rows, NULL, 0, pos, N, N_CTX, ROW);
    for (int r = 0; r < N_CTX; r++) {
        const float *want = before + r * ROW;
        for (int i = 0; i < 3; i++)
            if (pos[i] == r) want = rows + i * ROW;
        cr_assert(memcmp(cache + r * ROW, want, ROW * sizeof(float)) == 0, "cache row %d", r);
    }
    be->ops->kv_store(be, cache, rows, NULL, 0, pos, 0, N_CTX, ROW); /* n = 0: nothing */
    sd_backend_destroy(be);
}

/* The paged layout: K/V rows scattered over the blocks of a pool in table order give the
 * slab's result bit for bit (the same positions in the same order), and kv_store writes each
 * position's row where the table puts it. */
Test(kernels_ops, paged_attention_and_kv_store_equal_the_slab, .timeout = 60)
{
    enum { H = 6, HKV = 2, HD = 16, N = 5, N_CTX = 45, BS = 8, POOL = 8 };
    const int32_t table[6] = {5, 2, 7, 0, 3, 6}; /* ceil(N_CTX / BS) blocks, any order */
    const int32_t pos[N] = {40, 41, 13, 0, 44};
    size_t row = (size_t)HKV * HD, qrow = (size_t)H * HD;
    float q[N * H * HD], k[N_CTX * HKV * HD], v[N_CTX * HKV * HD], want[N * H * HD],
        got[N * H * HD], rows[N * HKV * HD];
    sd_test_fill_random(q, sizeof q / sizeof *q, 41, 2.0f);
    sd_test_fill_random(k, sizeof k / sizeof *k, 42, 2.0f);
    sd_test_fill_random(v, sizeof v / sizeof *v, 43, 1.0f);
    sd_test_fill_random(rows, sizeof rows / sizeof *rows, 44, 1.0f);
    float *kp = sd_test_page_kv(k, N_CTX, row, table, BS, POOL);
    float *vp = sd_test_page_kv(v, N_CTX, row, table, BS, POOL);
    cr_assert(kp && vp);
    sd_backend_t *be = make_backend(2);
    be->ops->attention(be, q, k, v, NULL, 0, pos, N, N_CTX, H, HKV, HD, want);
    be->ops->attention(be, q, kp, vp, table, BS, pos, N, N_CTX, H, HKV, HD, got);
    cr_assert(memcmp(want, got, sizeof want) == 0, "paged attention differs from the slab");
    for (int i = 0; i < N; i++) cr_assert(!isnan(got[i * qrow]), "query %d read an unused row", i);
    be->ops->kv_store(be, k, rows, NULL, 0, pos, N, N_CTX, row);
    be->ops->kv_store(be, kp, rows, table, BS, pos, N, N_CTX, row);
    float *kp2 = sd_test_page_kv(k, N_CTX, row, table, BS, POOL);
    for (size_t i = 0; i < (size_t)POOL * BS * row; i++)
        cr_assert(memcmp(&kp[i], &kp2[i], sizeof(float)) == 0 || (isnan(kp[i]) && isnan(kp2[i])),
                  "paged kv_store: float %zu", i);
    sd_backend_destroy(be);
    free(kp), free(vp), free(kp2);
}

/* ---- rope -------------------------------------------------------------------------------- */

static void rope_check(sd_rope_style_t style, int head_dim, int rot_dim)
{
    enum { N = 3, H = 2 };
    const int32_t pos[N] = {0, 7, 1234};
    size_t len = (size_t)N * H * (size_t)head_dim;
    float *x = malloc(sizeof(float) * len), *orig = malloc(sizeof(float) * len);
    sd_test_fill_random(x, len, 8, 1.0f);
    memcpy(orig, x, sizeof(float) * len);
    sd_rope_params_t rp = {.style = style, .rot_dim = rot_dim, .freq_base = 10000.0f};
    sd_backend_t *be = make_backend(1);
    be->ops->rope(be, x, pos, N, H, head_dim, &rp);
    for (int t = 0; t < N; t++)
        for (int h = 0; h < H; h++) {
            const float *o = orig + ((size_t)t * H + (size_t)h) * (size_t)head_dim;
            const float *r = x + ((size_t)t * H + (size_t)h) * (size_t)head_dim;
            for (int i = 0; i < rot_dim / 2; i++) {
                int a = style == SD_ROPE_NEOX ? i : 2 * i, b = style == SD_ROPE_NEOX ? i + rot_dim / 2 : 2 * i + 1;
                double theta = pos[t] * pow(10000.0, -2.0 * i / rot_dim);
                double ra = o[a] * cos(theta) - o[b] * sin(theta), rb = o[a] * sin(theta) + o[b] * cos(theta);
                cr_assert(fabs(r[a] - ra) <= 2e-6 && fabs(r[b] - rb) <= 2e-6,
                          "style %d token %d head %d pair %d: (%g, %g) vs (%g, %g)", style, t, h, i, r[a], r[b], ra, rb);
            }
            for (int d = rot_dim; d < head_dim; d++) cr_assert_eq(r[d], o[d], "dim %d beyond rot_dim changed", d);
        }
    sd_backend_destroy(be);
    free(x);
    free(orig);
}

Test(kernels_ops, rope_norm) { rope_check(SD_ROPE_NORM, 64, 64); }
Test(kernels_ops, rope_neox) { rope_check(SD_ROPE_NEOX, 64, 64); }
Test(kernels_ops, rope_partial_rot_dim)
{
    rope_check(SD_ROPE_NORM, 24, 16);
    rope_check(SD_ROPE_NEOX, 24, 16);
}

/* ---- element-wise and row-wise ops --------------------------------------------------------- */

Test(kernels_ops, rmsnorm_matches_reference_and_aliases)
{
    enum { N = 3, D = 37 };
    float x[N * D], w[D], out[N * D];
    sd_test_fill_random(x, N * D, 1, 3.0f);
    sd_test_fill_random(w, D, 2, 1.0f);
    sd_backend_t *be = make_backend(2);
    be->ops->rmsnorm(be, x, w, N, D, 1e-5f, out);
    for (int i = 0; i < N; i++) {
        double ss = 0.0;
        for (int j = 0; j < D; j++) ss += (double)x[i * D + j] * x[i * D + j];
        double scale = 1.0 / sqrt(ss / D + 1e-5);
        for (int j = 0; j < D; j++) cr_assert(fabs(out[i * D + j] - x[i * D + j] * scale * w[j]) <= 1e-5);
    }
    be->ops->rmsnorm(be, x, w, N, D, 1e-5f, x); /* in place */
    cr_assert(memcmp(x, out, sizeof out) == 0);
    sd_backend_destroy(be);
}

Test(kernels_ops, swiglu_matches_reference_and_aliases)
{
    /* more than one task's worth of elements */
    size_t len = 40000;
    float *g = malloc(sizeof(float) * len), *u = malloc(sizeof(float) * len), *o = malloc(sizeof(float) * len);
    sd_test_fill_random(g, len, 3, 8.0f);
    sd_test_fill_random(u, len, 4, 2.0f);
    sd_backend_t *be = make_backend(3);
    be->ops->swiglu(be, g, u, len, o);
    for (size_t i = 0; i < len; i++) {
        double ref = g[i] / (1.0 + exp(-(double)g[i])) * u[i];
        cr_assert(fabs(o[i] - ref) <= 1e-5 * (1.0 + fabs(ref)), "element %zu: %g vs %g", i, o[i], ref);
    }
    be->ops->swiglu(be, g, u, len, g); /* in place */
    cr_assert(memcmp(g, o, sizeof(float) * len) == 0);
    sd_backend_destroy(be);
    free(g);
    free(u);
    free(o);
}

Test(kernels_ops, add)
{
    float y[5] = {1, 2, 3, 4, 5}, x[5] = {0.5f, -2, 1e-3f, 0, 10};
    sd_backend_t *be = make_backend(1);
    be->ops->add(be, y, x, 5);
    const float want[5] = {1.5f, 0, 3.001f, 4, 15};
    for (int i = 0; i < 5; i++) cr_assert_eq(y[i], want[i]);
    sd_backend_destroy(be);
}

Test(kernels_ops, embed_dequantizes_rows_and_zeroes_bad_ids)
{
    sd_test_weight_t tw = sd_test_make_weight(SD_DTYPE_Q8_0, 10, 64, 30);
    const int32_t tokens[4] = {3, 0, 9, 10};
    float out[4 * 64];
    memset(out, 0xff, sizeof out);
    sd_backend_t *be = make_backend(2);
    be->ops->embed(be, &tw.w, tokens, 4, out);
    for (int i = 0; i < 3; i++)
        cr_assert(memcmp(out + i * 64, tw.deq + tokens[i] * 64, 64 * sizeof(float)) == 0, "token %d", tokens[i]);
    for (int d = 0; d < 64; d++) cr_assert_eq(out[3 * 64 + d], 0.0f, "out-of-range id must give zeros");
    sd_backend_destroy(be);
    sd_test_free_weight(&tw);
}

Test(kernels_ops, memory_round_trip)
{
    sd_backend_t *be = make_backend(0);
    cr_assert_str_eq(be->ops->name, "cpu");
    float src[100], back[100];
    sd_test_fill_random(src, 100, 1, 1.0f);
    float *dev = be->ops->alloc(be, sizeof src);
    cr_assert_not_null(dev);
    cr_assert_eq((uintptr_t)dev % 64, 0, "allocations are 64-byte aligned");
    be->ops->upload(be, dev, src, sizeof src);
    be->ops->download(be, back, dev, sizeof src);
    cr_assert(memcmp(src, back, sizeof src) == 0);
    be->ops->release(be, dev);
    cr_assert_null(be->ops->alloc(be, SIZE_MAX - 8), "an impossible size fails cleanly");
    sd_backend_destroy(be);
}

Test(kernels_ops, negative_thread_count_is_rejected)
{
    sd_backend_t *be = (sd_backend_t *)1;
    cr_assert_eq(sd_backend_cpu_create(-1, &be), SD_ERR_INVALID_ARG);
    cr_assert_null(be);
    cr_assert(strstr(sd_last_error(), "-1"), "message: %s", sd_last_error());
}
