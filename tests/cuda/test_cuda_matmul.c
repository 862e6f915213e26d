/* The GPU's fused dequantize-matmul and embedding (kernels/cuda/matmul.cu).
 *
 * Device tests (skip without CUDA or without a GPU): every weight type against the CPU
 * backend within 1e-4 x sum_j |w_j x_j| (plus the CPU int16 path's own bound and a tiny
 * floor), batch invariance bit for bit, embed bit for bit against sd_dequantize_row, refused
 * arguments reported by sync, grids past 65535 feature groups.
 *
 * Host tests (run on any CUDA build, GPU or not): the kernels' host mirrors (the same decode
 * and accumulation code, lane by lane) against sd_dequantize_row and the CPU backend, the
 * launch geometry and the argument checks. */
#include <criterion/criterion.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend_impl.h"
#include "kernels/cuda.h"
#include "support/test_util.h"
#include "support/test_weight.h"

static const sd_dtype_t all_types[] = {
    SD_DTYPE_F32,  SD_DTYPE_F16,  SD_DTYPE_BF16, SD_DTYPE_Q8_0,   SD_DTYPE_Q4_0,
    SD_DTYPE_Q4_1, SD_DTYPE_Q5_0, SD_DTYPE_Q5_1, SD_DTYPE_IQ4_NL, SD_DTYPE_Q2_K,
    SD_DTYPE_Q3_K, SD_DTYPE_Q4_K, SD_DTYPE_Q5_K, SD_DTYPE_Q6_K,   SD_DTYPE_IQ4_XS,
};
#define N_TYPES (int)(sizeof all_types / sizeof all_types[0])
#define SD_QK_K_ELEMS 256 /* elements per K-quant / IQ4_XS super-block */
#define NO_KERNEL_TYPE ((sd_dtype_t)9) /* Q8_1: a GGML type no kernel decodes */

static const int test_rows[] = {1, 7, 64, 1000, 0};
static const int test_ns[] = {1, 2, 5, 9, 17, 33, 0};
/* The CUDA host mode's default run (kernels on the CPU): the same tile and feature-group
 * cases (one row, a partial tile, several tiles; a partial group, many groups) with fewer
 * sizes; the lists above run on a GPU and under `slow` (sd_test_long_shapes). */
static const int test_rows_short[] = {1, 7, 257, 0};
static const int test_ns_short[] = {1, 9, 33, 0};
#define N_MAX 33

static const int *sizes(const int *full, const int *short_list)
{
    return sd_test_long_shapes(sd_cuda_host_mode()) ? full : short_list;
}

/* Column counts per type: one block, several blocks, 576, 1536 (256-weight super-blocks:
 * multiples of 256; plain types: 35 leaves a partial 32-weight unit). 0 ends a list. */
static const int *cols_for(sd_dtype_t type)
{
    static const int plain[] = {1, 35, 576, 1536, 0};
    static const int q32[] = {32, 96, 576, 1536, 0};
    static const int qk[] = {256, 768, 1536, 0};
    int64_t block = sd_dtype_block_elems(type);
    return block == 1 ? plain : block == SD_QK_K_ELEMS ? qk : q32;
}

/* A mid-sized row of the type (several blocks, a partial unit for plain types). */
static int64_t mid_cols(sd_dtype_t type)
{
    int64_t block = sd_dtype_block_elems(type);
    return block == 1 ? 579 : block == SD_QK_K_ELEMS ? 768 : 576;
}

static float *random_floats(size_t n, uint32_t seed, float scale)
{
    float *x = malloc(sizeof(float) * (n ? n : 1));
    cr_assert_not_null(x);
    sd_test_fill_random(x, n, seed, scale);
    return x;
}

/* ---- references ----------------------------------------------------------------------------- */

static sd_backend_t *cpu_backend(void)
{
    sd_backend_t *be = NULL;
    cr_assert_eq(sd_backend_cpu_create(2, &be), SD_OK, "%s", sd_last_error());
    return be;
}

/* tol[i, o] for y[n, rows] = x . W^T (+ bias): 1e-4 x (|bias| + sum_j |w_j x_j|) + the CPU
 * activation quantization's bound + 1e-6. */
static double *tolerances(const sd_test_weight_t *tw, const float *x, int n, const float *bias)
{
    int64_t rows = tw->w.rows, cols = tw->w.cols;
    double *tol = malloc(sizeof(double) * (size_t)(n * rows));
    cr_assert_not_null(tol);
    for (int i = 0; i < n; i++)
        for (int64_t o = 0; o < rows; o++) {
            const float *w = tw->deq + o * cols, *xi = x + (size_t)i * (size_t)cols;
            double mag = bias ? fabs((double)bias[o]) : 0.0;
            for (int64_t c = 0; c < cols; c++) mag += fabs((double)w[c] * xi[c]);
            tol[i * rows + o] = 1e-4 * mag + sd_test_act_bound(tw, o, xi) + 1e-6;
        }
    return tol;
}

static void assert_close(const char *what, const sd_test_weight_t *tw, int n, const float *got,
                         const float *ref, const double *tol)
{
    int64_t rows = tw->w.rows;
    for (int i = 0; i < n; i++)
        for (int64_t o = 0; o < rows; o++) {
            size_t k = (size_t)(i * rows + o);
            cr_assert(fabs((double)got[k] - ref[k]) <= tol[k],
                      "%s %s [%lld x %lld] n=%d: y[%d,%lld] = %.9g, CPU %.9g (tol %g)", what,
                      sd_dtype_name(tw->w.type), (long long)rows, (long long)tw->w.cols, n, i,
                      (long long)o, got[k], ref[k], tol[k]);
        }
}

/* ---- device plumbing ------------------------------------------------------------------------ */

static sd_backend_t *cuda_backend_or_skip(void)
{
    if (!sd_cuda_built()) cr_skip_test("built without CUDA");
    int count = 0;
    sd_status_t s = sd_cuda_device_count(&count);
    cr_assert_eq(s, SD_OK, "device count: %s: %s", sd_status_string(s), sd_last_error());
    if (count == 0) cr_skip_test("no CUDA device on this machine");
    sd_backend_t *be = NULL;
    cr_assert_eq(sd_backend_cuda_create(0, 0.0, &be), SD_OK, "%s", sd_last_error());
    return be;
}

static void *dev_copy(sd_backend_t *be, const void *host, size_t bytes)
{
    void *d = be->ops->alloc(be, bytes);
    cr_assert_not_null(d, "alloc %zu bytes: %s", bytes, sd_last_error());
    if (host) be->ops->upload(be, d, host, bytes);
    return d;
}

/* The weight with its data on the device (release .data when done). */
static sd_weight_t dev_weight(sd_backend_t *be, const sd_weight_t *w)
{
    sd_weight_t d = *w;
    d.data = dev_copy(be, w->data, w->row_bytes * (size_t)w->rows);
    return d;
}

static void sync_ok(sd_backend_t *be)
{
    sd_status_t s = be->ops->sync(be);
    cr_assert_eq(s, SD_OK, "sync: %s: %s", sd_status_string(s), sd_last_error());
}

/* Device buffers for one weight: x[N_MAX, cols], bias[rows], y[N_MAX, rows]. */
typedef struct {
    sd_backend_t *be;
    sd_weight_t w; /* data: device */
    float *x, *bias, *y;
} dev_mm_t;

static dev_mm_t dev_mm_create(sd_backend_t *be, const sd_test_weight_t *tw, const float *x, int n_max,
                              const float *bias)
{
    dev_mm_t d = {.be = be, .w = dev_weight(be, &tw->w)};
    d.x = dev_copy(be, x, sizeof(float) * (size_t)n_max * (size_t)tw->w.cols);
    d.bias = dev_copy(be, bias, sizeof(float) * (size_t)tw->w.rows);
    d.y = dev_copy(be, NULL, sizeof(float) * (size_t)n_max * (size_t)tw->w.rows);
    return d;
}

/* y (host) = device matmul of x rows [i0, i0 + n). */
static void dev_mm_run(dev_mm_t *d, int i0, int n, int with_bias, float *y)
{
    sd_backend_t *be = d->be;
    be->ops->matmul(be, &d->w, d->x + (size_t)i0 * (size_t)d->w.cols, n, with_bias ? d->bias : NULL, d->y);
    be->ops->download(be, y, d->y, sizeof(float) * (size_t)n * (size_t)d->w.rows);
    sync_ok(be);
}

static void dev_mm_destroy(dev_mm_t *d)
{
    sd_backend_t *be = d->be;
    be->ops->release(be, (void *)d->w.data);
    be->ops->release(be, d->x);
    be->ops->release(be, d->bias);
    be->ops->release(be, d->y);
    sync_ok(be);
}

/* ---- device: matmul against the CPU backend --------------------------------------------------- */

/* One weight shape: every n of test_ns, with and without bias. The CPU reference is computed
 * once for N_MAX rows (it is batch-invariant, so its first n rows are its n-row result). */
static void check_shape(sd_backend_t *gpu, sd_backend_t *cpu, sd_dtype_t type, int rows, int cols)
{
    sd_test_weight_t tw = sd_test_make_weight(type, rows, cols, (uint32_t)(rows * 7 + cols));
    float *x = random_floats((size_t)N_MAX * (size_t)cols, (uint32_t)cols, 2.0f);
    float *bias = random_floats((size_t)rows, (uint32_t)rows + 5, 1.0f);
    size_t ny = (size_t)N_MAX * (size_t)rows;
    float *ref_b = malloc(sizeof(float) * ny), *ref = malloc(sizeof(float) * ny), *y = malloc(sizeof(float) * ny);
    cr_assert(ref_b && ref && y);
    cpu->ops->matmul(cpu, &tw.w, x, N_MAX, bias, ref_b);
    cpu->ops->matmul(cpu, &tw.w, x, N_MAX, NULL, ref);
    double *tol_b = tolerances(&tw, x, N_MAX, bias), *tol = tolerances(&tw, x, N_MAX, NULL);
    dev_mm_t d = dev_mm_create(gpu, &tw, x, N_MAX, bias);
    for (const int *n = sizes(test_ns, test_ns_short); *n; n++) {
        dev_mm_run(&d, 0, *n, 1, y);
        assert_close("bias", &tw, *n, y, ref_b, tol_b);
        dev_mm_run(&d, 0, *n, 0, y);
        assert_close("no bias", &tw, *n, y, ref, tol);
    }
    dev_mm_destroy(&d);
    free(tol_b);
    free(tol);
    free(ref_b);
    free(ref);
    free(y);
    free(x);
    free(bias);
    sd_test_free_weight(&tw);
}

Test(cuda_matmul, every_type_and_shape_matches_cpu, .timeout = 600)
{
    sd_backend_t *gpu = cuda_backend_or_skip(), *cpu = cpu_backend();
    for (int t = 0; t < N_TYPES; t++)
        for (const int *c = cols_for(all_types[t]); *c; c++)
            for (const int *r = sizes(test_rows, test_rows_short); *r; r++)
                check_shape(gpu, cpu, all_types[t], *r, *c);
    sd_backend_destroy(cpu);
    sd_backend_destroy(gpu);
}

/* ---- device: batch invariance ------------------------------------------------------------------ */

/* n = 17 against each row alone, n = 33's first 17 rows, and rows 3..11 as a batch of 9 (so
 * they sit in other tile slots): all bit for bit. */
Test(cuda_matmul, batch_invariant_bit_for_bit, .timeout = 300)
{
    sd_backend_t *gpu = cuda_backend_or_skip();
    enum { ROWS = 64 };
    for (int t = 0; t < N_TYPES; t++) {
        sd_dtype_t type = all_types[t];
        int64_t cols = mid_cols(type);
        sd_test_weight_t tw = sd_test_make_weight(type, ROWS, cols, 41);
        float *x = random_floats((size_t)N_MAX * (size_t)cols, 43, 2.0f);
        float *bias = random_floats(ROWS, 47, 1.0f);
        float y17[17 * ROWS], y33[N_MAX * ROWS], y1[ROWS], y9[9 * ROWS];
        dev_mm_t d = dev_mm_create(gpu, &tw, x, N_MAX, bias);
        for (int with_bias = 0; with_bias <= 1; with_bias++) {
            const char *name = sd_dtype_name(type);
            dev_mm_run(&d, 0, 17, with_bias, y17);
            dev_mm_run(&d, 0, N_MAX, with_bias, y33);
            cr_assert(memcmp(y17, y33, sizeof y17) == 0, "%s: n=17 rows differ from n=33's", name);
            for (int i = 0; i < 17; i++) {
                dev_mm_run(&d, i, 1, with_bias, y1);
                cr_assert(memcmp(y1, y17 + i * ROWS, sizeof y1) == 0,
                          "%s bias=%d: row %d alone differs from the n=17 batch", name, with_bias, i);
            }
            dev_mm_run(&d, 3, 9, with_bias, y9);
            cr_assert(memcmp(y9, y17 + 3 * ROWS, sizeof y9) == 0,
                      "%s bias=%d: rows 3..11 as a batch of 9 differ from the n=17 batch", name, with_bias);
        }
        dev_mm_destroy(&d);
        free(x);
        free(bias);
        sd_test_free_weight(&tw);
    }
    sd_backend_destroy(gpu);
}

/* The device gives the host mirror's bits (same decode, same fmaf order, same butterfly). */
Test(cuda_matmul, device_equals_host_mirror, .timeout = 300)
{
    sd_backend_t *gpu = cuda_backend_or_skip();
    if (!sd_cuda_built()) cr_skip_test("built without CUDA: no host mirror");
    enum { ROWS = 37, N = 17 };
    for (int t = 0; t < N_TYPES; t++) {
        sd_dtype_t type = all_types[t];
        int64_t cols = mid_cols(type);
        sd_test_weight_t tw = sd_test_make_weight(type, ROWS, cols, 53);
        float *x = random_floats((size_t)N * (size_t)cols, 59, 2.0f), *bias = random_floats(ROWS, 61, 1.0f);
        float y[N * ROWS], h[N * ROWS];
        dev_mm_t d = dev_mm_create(gpu, &tw, x, N, bias);
        dev_mm_run(&d, 0, N, 1, y);
        cr_assert_eq(sd_cuda_matmul_host(&tw.w, x, N, bias, h), SD_OK, "%s", sd_last_error());
        for (int k = 0; k < N * ROWS; k++)
            cr_assert(memcmp(&y[k], &h[k], sizeof(float)) == 0, "%s: y[%d,%d] = %.9g, host mirror %.9g",
                      sd_dtype_name(type), k / ROWS, k % ROWS, y[k], h[k]);
        dev_mm_destroy(&d);
        free(x);
        free(bias);
        sd_test_free_weight(&tw);
    }
    sd_backend_destroy(gpu);
}

/* ---- device: grids ------------------------------------------------------------------------------ */

static void check_large(sd_backend_t *gpu, sd_backend_t *cpu, sd_dtype_t type, int rows, int cols, int n)
{
    sd_test_weight_t tw = sd_test_make_weight(type, rows, cols, 71);
    float *x = random_floats((size_t)n * (size_t)cols, 73, 2.0f);
    size_t ny = (size_t)n * (size_t)rows;
    float *y = malloc(sizeof(float) * ny), *ref = malloc(sizeof(float) * ny);
    cr_assert(y && ref);
    cpu->ops->matmul(cpu, &tw.w, x, n, NULL, ref);
    double *tol = tolerances(&tw, x, n, NULL);
    dev_mm_t d = dev_mm_create(gpu, &tw, x, n, NULL);
    dev_mm_run(&d, 0, n, 0, y);
    assert_close("large", &tw, n, y, ref, tol);
    dev_mm_destroy(&d);
    free(tol);
    free(y);
    free(ref);
    free(x);
    sd_test_free_weight(&tw);
}

/* The Qwen vocabulary (152064 rows) and more than 65535 x 8 rows (the feature-group loop). */
Test(cuda_matmul, large_grids_of_features, .timeout = 300)
{
    if (!sd_test_long_shapes(sd_cuda_host_mode()))
        cr_skip_test("up to 600000 output rows: in the CUDA host mode only under the slow label "
                     "(SPECDEC_TEST_LONG=1)");
    sd_backend_t *gpu = cuda_backend_or_skip(), *cpu = cpu_backend();
    check_large(gpu, cpu, SD_DTYPE_Q8_0, 152064, 64, 1);
    check_large(gpu, cpu, SD_DTYPE_Q4_K, 152064, 256, 9);
    check_large(gpu, cpu, SD_DTYPE_Q4_0, 600000, 32, 2);
    sd_backend_destroy(cpu);
    sd_backend_destroy(gpu);
}

/* n = 4096: 512 row tiles. */
Test(cuda_matmul, large_grids_of_rows, .timeout = 300)
{
    sd_backend_t *gpu = cuda_backend_or_skip(), *cpu = cpu_backend();
    check_large(gpu, cpu, SD_DTYPE_F16, 64, 64, 4096);
    sd_backend_destroy(cpu);
    sd_backend_destroy(gpu);
}

/* ---- device: embed ------------------------------------------------------------------------------ */

static const int32_t embed_ids[] = {0, 49, 7, -1, 50, INT32_MAX, INT32_MIN, 3, 7, 48};
#define N_IDS (int)(sizeof embed_ids / sizeof embed_ids[0])
#define TABLE_ROWS 50

/* out rows equal sd_dequantize_row of the table row, or zeros for an id outside the table. */
static void assert_embed_exact(const sd_test_weight_t *tw, const float *out, const char *who)
{
    int64_t cols = tw->w.cols;
    float *zero = calloc((size_t)cols, sizeof(float));
    for (int i = 0; i < N_IDS; i++) {
        int32_t id = embed_ids[i];
        const float *want = id >= 0 && id < TABLE_ROWS ? tw->deq + (int64_t)id * cols : zero;
        cr_assert(memcmp(out + i * cols, want, sizeof(float) * (size_t)cols) == 0,
                  "%s embed %s (cols %lld): row %d (id %d) differs from sd_dequantize_row", who,
                  sd_dtype_name(tw->w.type), (long long)cols, i, id);
    }
    free(zero);
}

Test(cuda_matmul, embed_matches_dequantize_exactly, .timeout = 120)
{
    sd_backend_t *gpu = cuda_backend_or_skip();
    for (int t = 0; t < N_TYPES; t++)
        for (const int *c = cols_for(all_types[t]); *c; c++) {
            sd_test_weight_t tw = sd_test_make_weight(all_types[t], TABLE_ROWS, *c, 83);
            sd_weight_t dw = dev_weight(gpu, &tw.w);
            int32_t *ids = dev_copy(gpu, embed_ids, sizeof embed_ids);
            size_t out_bytes = sizeof(float) * N_IDS * (size_t)*c;
            float *dout = dev_copy(gpu, NULL, out_bytes), *out = malloc(out_bytes);
            gpu->ops->embed(gpu, &dw, ids, N_IDS, dout);
            gpu->ops->download(gpu, out, dout, out_bytes);
            sync_ok(gpu);
            assert_embed_exact(&tw, out, "device");
            gpu->ops->release(gpu, (void *)dw.data);
            gpu->ops->release(gpu, ids);
            gpu->ops->release(gpu, dout);
            free(out);
            sd_test_free_weight(&tw);
        }
    sync_ok(gpu);
    sd_backend_destroy(gpu);
}

/* ---- device: refused arguments --------------------------------------------------------------- */

static void assert_refused(sd_backend_t *be, const char *what)
{
    sd_status_t s = be->ops->sync(be);
    cr_assert_eq(s, SD_ERR_DEVICE, "%s: sync gave %s, expected SD_ERR_DEVICE", what, sd_status_string(s));
}

Test(cuda_matmul, refused_arguments_fail_the_sync, .timeout = 60)
{
    sd_backend_t *gpu = cuda_backend_or_skip();
    sd_test_weight_t tw = sd_test_make_weight(SD_DTYPE_Q8_0, 8, 64, 89);
    float *x = random_floats(64, 97, 1.0f);
    dev_mm_t d = dev_mm_create(gpu, &tw, x, 1, NULL);
    sd_weight_t w = d.w;
    gpu->ops->matmul(gpu, &w, d.x, 0, NULL, d.y);
    assert_refused(gpu, "n = 0");
    gpu->ops->matmul(gpu, &w, NULL, 1, NULL, d.y);
    assert_refused(gpu, "x NULL");
    gpu->ops->matmul(gpu, &w, d.x, 1, NULL, NULL);
    assert_refused(gpu, "y NULL");
    w.cols = 48;
    gpu->ops->matmul(gpu, &w, d.x, 1, NULL, d.y);
    assert_refused(gpu, "cols 48 of Q8_0");
    w = d.w;
    w.type = NO_KERNEL_TYPE;
    gpu->ops->matmul(gpu, &w, d.x, 1, NULL, d.y);
    assert_refused(gpu, "type Q8_1");
    w = d.w;
    w.row_bytes = 67;
    gpu->ops->matmul(gpu, &w, d.x, 1, NULL, d.y);
    assert_refused(gpu, "row_bytes 67 < 68");
    w = (sd_weight_t){.type = SD_DTYPE_F32, .rows = 4, .cols = 16, .row_bytes = 64,
                      .data = (const char *)d.w.data + 2};
    gpu->ops->matmul(gpu, &w, d.x, 1, NULL, d.y);
    assert_refused(gpu, "F32 data not 4-aligned");
    w = d.w;
    gpu->ops->embed(gpu, &w, NULL, 1, d.y);
    assert_refused(gpu, "embed tokens NULL");
    int32_t *ids = dev_copy(gpu, embed_ids, sizeof(int32_t));
    gpu->ops->embed(gpu, &w, ids, 0, d.y);
    assert_refused(gpu, "embed n = 0");
    /* the error is cleared: a valid call syncs fine */
    float y[8];
    dev_mm_run(&d, 0, 1, 0, y);
    gpu->ops->release(gpu, ids);
    dev_mm_destroy(&d);
    free(x);
    sd_test_free_weight(&tw);
    sd_backend_destroy(gpu);
}

/* ---- host: mirrors, geometry, argument checks (no GPU needed) --------------------------------- */

static void host_hooks_or_skip(void)
{
    if (!sd_cuda_built())
        cr_skip_test("built without CUDA: no host mirror of the kernels");
}

/* The device decode, run on the host: every type and row length, bit for bit. */
Test(cuda_matmul_host, embed_mirror_matches_dequantize_exactly, .timeout = 60)
{
    host_hooks_or_skip();
    for (int t = 0; t < N_TYPES; t++)
        for (const int *c = cols_for(all_types[t]); *c; c++) {
            sd_test_weight_t tw = sd_test_make_weight(all_types[t], TABLE_ROWS, *c, 101);
            float *out = malloc(sizeof(float) * N_IDS * (size_t)*c);
            cr_assert_eq(sd_cuda_embed_host(&tw.w, embed_ids, N_IDS, out), SD_OK, "%s", sd_last_error());
            assert_embed_exact(&tw, out, "host mirror");
            free(out);
            sd_test_free_weight(&tw);
        }
}

/* The device algorithm, run on the host, against the CPU backend; and its batch invariance. */
Test(cuda_matmul_host, matmul_mirror_matches_cpu, .timeout = 300)
{
    host_hooks_or_skip();
    sd_backend_t *cpu = cpu_backend();
    static const int rows_list[] = {1, 7, 64};
    static const int ns[] = {1, 9, 17};
    for (int t = 0; t < N_TYPES; t++)
        for (const int *c = cols_for(all_types[t]); *c; c++)
            for (int ri = 0; ri < 3; ri++) {
                int rows = rows_list[ri], cols = *c;
                sd_test_weight_t tw = sd_test_make_weight(all_types[t], rows, cols, (uint32_t)(rows + cols));
                float *x = random_floats((size_t)17 * (size_t)cols, (uint32_t)cols + 1, 2.0f);
                float *bias = random_floats((size_t)rows, (uint32_t)rows, 1.0f);
                float *ref = malloc(sizeof(float) * 17 * (size_t)rows), *y = malloc(sizeof(float) * 17 * (size_t)rows);
                float *y1 = malloc(sizeof(float) * (size_t)rows);
                cpu->ops->matmul(cpu, &tw.w, x, 17, bias, ref);
                double *tol = tolerances(&tw, x, 17, bias);
                for (int k = 0; k < 3; k++) {
                    cr_assert_eq(sd_cuda_matmul_host(&tw.w, x, ns[k], bias, y), SD_OK, "%s", sd_last_error());
                    assert_close("host mirror", &tw, ns[k], y, ref, tol);
                }
                for (int i = 0; i < 17; i += 8) { /* slot 0 of tiles 0, 1, 2 and alone */
                    cr_assert_eq(sd_cuda_matmul_host(&tw.w, x + (size_t)i * (size_t)cols, 1, bias, y1), SD_OK);
                    cr_assert(memcmp(y1, y + (size_t)i * (size_t)rows, sizeof(float) * (size_t)rows) == 0);
                }
                cr_assert_eq(sd_cuda_matmul_host(&tw.w, x + 5 * (size_t)cols, 1, bias, y1), SD_OK);
                cr_assert(memcmp(y1, y + 5 * (size_t)rows, sizeof(float) * (size_t)rows) == 0,
                          "%s: host mirror row 5 alone differs from the n=17 batch", sd_dtype_name(all_types[t]));
                free(tol);
                free(ref);
                free(y);
                free(y1);
                free(x);
                free(bias);
                sd_test_free_weight(&tw);
            }
    sd_backend_destroy(cpu);
}

Test(cuda_matmul_host, launch_geometry_is_legal, .timeout = 10)
{
    host_hooks_or_skip();
    unsigned g[3], b[3];
    sd_cuda_matmul_geometry(1, 1, g, b);
    cr_assert(g[0] == 1 && g[1] == 1 && g[2] == 1 && b[1] == 1 && b[2] == 1);
    cr_assert(b[0] >= 32 && b[0] <= 1024 && b[0] % 32 == 0, "block %u", b[0]);
    unsigned warps = b[0] / 32;
    sd_cuda_matmul_geometry(152064, 4096, g, b);
    cr_assert_eq(g[1], (152064 + warps - 1) / warps, "Qwen vocab: %u feature groups", g[1]);
    cr_assert(g[1] <= 65535);
    cr_assert(g[0] >= 1 && 4096 % g[0] == 0, "4096 rows in %u tiles", g[0]);
    unsigned tile = 4096 / g[0]; /* rows per tile */
    cr_assert(tile >= 1 && tile <= 64, "tile of %u rows", tile);
    for (int n = 1; n <= 40; n++) {
        sd_cuda_matmul_geometry(64, n, g, b);
        cr_assert_eq(g[0], (n + tile - 1) / tile, "%d rows: %u tiles of %u", n, g[0], tile);
    }
    sd_cuda_matmul_geometry(600000, INT_MAX, g, b);
    cr_assert_eq(g[1], 65535u, "feature groups capped at 65535, the kernel loops");
    cr_assert(g[0] >= 1 && g[0] <= 2147483647u);
    cr_assert_eq((uint64_t)g[0], ((uint64_t)INT_MAX + tile - 1) / tile);
}

Test(cuda_matmul_host, argument_checks_name_the_value, .timeout = 10)
{
    host_hooks_or_skip();
    uint32_t buf[64] = {0};
    float x[64] = {0}, y[8] = {0};
    sd_weight_t good = {.type = SD_DTYPE_Q8_0, .rows = 2, .cols = 64, .row_bytes = 68, .data = buf};
    cr_assert_eq(sd_cuda_matmul_check_args(&good, x, 1, y), SD_OK, "%s", sd_last_error());
    struct {
        sd_weight_t w;
        int n;
        int null_x;
        const char *needle;
    } bad[] = {
        {good, 0, 0, "n = 0"},
        {good, -3, 0, "n = -3"},
        {good, 1, 1, "x is NULL"},
        {{SD_DTYPE_Q8_0, 2, 48, 68, buf}, 1, 0, "48"},
        {{NO_KERNEL_TYPE, 2, 64, 68, buf}, 1, 0, "Q8_1 (type id 9)"},
        {{SD_DTYPE_Q8_0, 2, 64, 67, buf}, 1, 0, "row_bytes 67"},
        {{SD_DTYPE_Q8_0, 0, 64, 68, buf}, 1, 0, "0 x 64"},
        {{SD_DTYPE_Q8_0, 2, 64, 68, NULL}, 1, 0, "data is NULL"},
        {{SD_DTYPE_F32, 2, 4, 16, (const char *)buf + 2}, 1, 0, "aligned"},
        {{SD_DTYPE_F16, 2, 4, 9, buf}, 1, 0, "aligned"},
        {{SD_DTYPE_Q4_K, 2, 255, 144, buf}, 1, 0, "255"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        sd_status_t s = sd_cuda_matmul_check_args(&bad[k].w, bad[k].null_x ? NULL : x, bad[k].n, y);
        cr_assert_eq(s, SD_ERR_INVALID_ARG, "case %zu accepted", k);
        cr_assert(strstr(sd_last_error(), bad[k].needle) != NULL, "case %zu: '%s' lacks '%s'", k,
                  sd_last_error(), bad[k].needle);
    }
    cr_assert_eq(sd_cuda_matmul_check_args(NULL, x, 1, y), SD_ERR_INVALID_ARG);
    int32_t ids[1] = {0};
    cr_assert_eq(sd_cuda_embed_check_args(&good, ids, 1, y), SD_OK, "%s", sd_last_error());
    cr_assert_eq(sd_cuda_embed_check_args(&good, NULL, 1, y), SD_ERR_INVALID_ARG);
    cr_assert(strstr(sd_last_error(), "tokens is NULL") != NULL, "%s", sd_last_error());
    cr_assert_eq(sd_cuda_embed_check_args(&good, ids, 0, y), SD_ERR_INVALID_ARG);
    cr_assert_eq(sd_cuda_embed_check_args(&good, ids, 1, NULL), SD_ERR_INVALID_ARG);
}

/* Every type a model may load has a kernel (a CUDA model is refused at load otherwise), and
 * every one of them is in all_types above, so the tests here cover it. */
Test(cuda_matmul_host, every_loadable_type_has_a_kernel, .timeout = 10)
{
    host_hooks_or_skip();
    int loadable = 0;
    for (uint32_t id = 0; id < 64; id++) {
        if (!sd_dtype_supported(id)) {
            cr_assert(!sd_cuda_type_supported((sd_dtype_t)id), "type id %u has a CUDA kernel but no CPU one", id);
            continue;
        }
        loadable++;
        cr_assert(sd_cuda_type_supported((sd_dtype_t)id), "%s has no CUDA kernel", sd_dtype_name(id));
        int listed = 0;
        for (int t = 0; t < N_TYPES; t++) listed |= all_types[t] == (sd_dtype_t)id;
        cr_assert(listed, "%s is missing from all_types", sd_dtype_name(id));
    }
    cr_assert_eq(loadable, N_TYPES);
    cr_assert(!sd_cuda_type_supported(NO_KERNEL_TYPE));
}
