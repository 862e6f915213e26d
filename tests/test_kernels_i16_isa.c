/* The int16 matmul kernels of every instruction set (kernels/cpu/vecdot_i16*.c) against the
 * numerics contract of vecdot_i16.c's header comment, computed here in scalar code: per
 * (weight row, activation row) and block the exact int32 half sums lo (elements 0..7,
 * 16..23) and hi (8..15, 24..31), acc = fma((float)half, d * xscale, acc) per half, Q4_1
 * msum = fma(m, xsum, msum), result (acc_lo + acc_hi) + msum. The AVX-512 VNNI kernel must
 * give the AVX2 kernel's and the contract's bits for every shape and batch; its tests skip
 * on CPUs without AVX-512 VNNI. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend_impl.h"
#include "kernels/cpu/quants.h"
#include "support/test_util.h"

static const sd_dtype_t types[] = {SD_DTYPE_Q4_0, SD_DTYPE_Q4_1, SD_DTYPE_Q8_0};
static const int nws[] = {1, 3, 4, 7, 8, 9, 33, 100};
static const int colss[] = {32, 64, 576, 1536};
static const int nxs[] = {1, 2, 3, 8, 16, 17};
enum { MAX_NX = 17, MAX_NB = 1536 / SD_QK, PAD = 3 }; /* PAD: columns of y past nw that no kernel may write */

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

/* rows x cols random weights in [-0.5, 0.5) quantized to `type` (data owned by the caller). */
static sd_weight_t make_weight(sd_dtype_t type, int64_t rows, int64_t cols, uint32_t seed)
{
    sd_weight_t w = {.type = type, .rows = rows, .cols = cols};
    cr_assert_eq(sd_dtype_row_bytes(type, cols, &w.row_bytes), SD_OK);
    char *data = malloc(w.row_bytes * (size_t)rows);
    float *x = malloc(sizeof(float) * (size_t)cols);
    cr_assert(data && x, "out of memory");
    for (int64_t r = 0; r < rows; r++) {
        sd_test_fill_random(x, (size_t)cols, seed + (uint32_t)r, 0.5f);
        sd_quantize_row(type, x, data + (size_t)r * w.row_bytes, cols);
    }
    free(x);
    w.data = data;
    return w;
}

/* nx activation rows of n elements quantized for weights of `type` (the layout the kernels
 * read) and in the natural order (the reference's), with their block scales and sums. */
typedef struct {
    int nx;
    int64_t n, ldq;
    int16_t *q, *q_nat;
    float *scale, *sum;
} act_t;

static act_t make_act(sd_dtype_t type, int nx, int64_t n, uint32_t seed)
{
    act_t a = {.nx = nx, .n = n, .ldq = sd_act_i16_len(type, n)};
    int64_t nb = n / SD_QK;
    float *x = malloc(sizeof(float) * (size_t)(nx * n));
    a.q = malloc(sizeof(int16_t) * (size_t)(nx * a.ldq));
    a.q_nat = malloc(sizeof(int16_t) * (size_t)(nx * n));
    a.scale = malloc(sizeof(float) * (size_t)(nx * nb));
    a.sum = malloc(sizeof(float) * (size_t)(nx * nb));
    cr_assert(x && a.q && a.q_nat && a.scale && a.sum, "out of memory");
    sd_test_fill_random(x, (size_t)(nx * n), seed, 3.0f);
    if (n >= 64) memset(x + 32, 0, sizeof(float) * 32); /* an all-zero block: scale 0 */
    for (int c = 0; c < nx; c++) {
        const float *xc = x + c * n;
        sd_quantize_act_i16(type, xc, n, a.q + c * a.ldq, a.scale + c * nb, a.sum + c * nb);
        /* Q8_0 weights read the natural order; the values, scales and sums are the same */
        float s[MAX_NB], m[MAX_NB];
        cr_assert(nb <= MAX_NB);
        sd_quantize_act_i16(SD_DTYPE_Q8_0, xc, n, a.q_nat + c * n, s, m);
        cr_assert(memcmp(s, a.scale + c * nb, sizeof(float) * (size_t)nb) == 0);
        cr_assert(memcmp(m, a.sum + c * nb, sizeof(float) * (size_t)nb) == 0);
    }
    free(x);
    return a;
}

static void free_act(act_t *a)
{
    free(a->q);
    free(a->q_nat);
    free(a->scale);
    free(a->sum);
}

/* Weight j of block b as an integer, and the block's d and m (the GGML layouts). */
static int weight_q(sd_dtype_t type, const char *row, int64_t b, int j, float *d, float *m)
{
    if (type == SD_DTYPE_Q8_0) {
        const sd_block_q8_0 *blk = (const sd_block_q8_0 *)row + b;
        *d = sd_f16_to_f32(blk->d);
        return blk->qs[j];
    }
    const uint8_t *qs = type == SD_DTYPE_Q4_0 ? ((const sd_block_q4_0 *)row + b)->qs
                                              : ((const sd_block_q4_1 *)row + b)->qs;
    int nib = j < 16 ? qs[j] & 0xF : qs[j - 16] >> 4;
    if (type == SD_DTYPE_Q4_0) {
        *d = sd_f16_to_f32(((const sd_block_q4_0 *)row + b)->d);
        return nib - 8;
    }
    *d = sd_f16_to_f32(((const sd_block_q4_1 *)row + b)->d);
    *m = sd_f16_to_f32(((const sd_block_q4_1 *)row + b)->m);
    return nib;
}

/* The contract for one (weight row, activation row c). */
static float dot_contract(sd_dtype_t type, const char *row, const act_t *a, int c)
{
    int64_t nb = a->n / SD_QK;
    const int16_t *q = a->q_nat + c * a->n;
    float acc[2] = {0.0f, 0.0f}, msum = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
        float d = 0.0f, m = 0.0f;
        int32_t half[2] = {0, 0};
        for (int j = 0; j < SD_QK; j++) half[(j >> 3) & 1] += weight_q(type, row, b, j, &d, &m) * q[b * SD_QK + j];
        float ds = d * a->scale[c * nb + b];
        acc[0] = fmaf((float)half[0], ds, acc[0]);
        acc[1] = fmaf((float)half[1], ds, acc[1]);
        if (type == SD_DTYPE_Q4_1) msum = fmaf(m, a->sum[c * nb + b], msum);
    }
    return (acc[0] + acc[1]) + msum;
}

/* y[nx, nw + PAD] from kernel `isa`; the PAD columns keep their NaN fill. */
static float *run_isa(sd_i16_isa_t isa, const sd_weight_t *w, int64_t r0, int nw, const act_t *a, int c0, int nx)
{
    size_t ldy = (size_t)nw + PAD;
    float *y = malloc(sizeof(float) * ldy * (size_t)nx);
    cr_assert(y);
    for (size_t i = 0; i < ldy * (size_t)nx; i++) y[i] = NAN;
    int64_t nb = a->n / SD_QK;
    sd_status_t st = sd_vec_dot_rows_i16_isa(isa, w->type, (const char *)w->data + (size_t)r0 * w->row_bytes,
                                             w->row_bytes, nw, a->q + c0 * a->ldq, a->scale + c0 * nb,
                                             a->sum + c0 * nb, nx, a->n, y, ldy);
    cr_assert_eq(st, SD_OK);
    for (int c = 0; c < nx; c++)
        for (int p = 0; p < PAD; p++)
            cr_assert(isnan(y[(size_t)c * ldy + (size_t)nw + (size_t)p]), "a kernel wrote past row %d", nw);
    return y;
}

/* The non-AVX-512 kernel of this build: AVX2 on x86-64, else the scalar one. */
static sd_i16_isa_t base_isa(void)
{
    return sd_i16_isa_available(SD_I16_ISA_AVX2) ? SD_I16_ISA_AVX2 : SD_I16_ISA_SCALAR;
}

static void skip_without_avx512(void)
{
    if (!sd_i16_isa_available(SD_I16_ISA_AVX512))
        cr_skip_test("this CPU (or build) lacks AVX-512 F/BW/VL/DQ + VNNI: the AVX-512 int16 kernel is not run");
}

/* Every shape of the brief: kernel `isa` (and, when given, `other`) against the contract. */
static void check_all_shapes(sd_dtype_t type, sd_i16_isa_t isa, int compare_other, sd_i16_isa_t other)
{
    for (size_t ci = 0; ci < N_OF(colss); ci++) {
        int cols = colss[ci];
        sd_weight_t w = make_weight(type, 100, cols, 1000u + (uint32_t)cols);
        act_t a = make_act(type, MAX_NX, cols, 77u + (uint32_t)cols);
        float ref[MAX_NX][100];
        for (int c = 0; c < MAX_NX; c++)
            for (int r = 0; r < 100; r++)
                ref[c][r] = dot_contract(type, (const char *)w.data + (size_t)r * w.row_bytes, &a, c);
        for (size_t wi = 0; wi < N_OF(nws); wi++)
            for (size_t xi = 0; xi < N_OF(nxs); xi++) {
                int nw = nws[wi], nx = nxs[xi];
                size_t ldy = (size_t)nw + PAD;
                float *y = run_isa(isa, &w, 0, nw, &a, 0, nx);
                float *yo = compare_other ? run_isa(other, &w, 0, nw, &a, 0, nx) : NULL;
                for (int c = 0; c < nx; c++) {
                    const float *yc = y + (size_t)c * ldy;
                    cr_assert(memcmp(yc, ref[c], sizeof(float) * (size_t)nw) == 0,
                              "%s %dx%d, nx %d: row %d differs from the contract", sd_dtype_name(type), nw,
                              cols, nx, c);
                    if (yo)
                        cr_assert(memcmp(yc, yo + (size_t)c * ldy, sizeof(float) * (size_t)nw) == 0,
                                  "%s %dx%d, nx %d: row %d differs from the other kernel", sd_dtype_name(type),
                                  nw, cols, nx, c);
                }
                free(y);
                free(yo);
            }
        free_act(&a);
        free((void *)w.data);
    }
}

/* ---- the build's base kernel (runs everywhere) -------------------------------------- */

Test(kernels_i16_isa, base_kernel_follows_the_contract, .timeout = 120)
{
    for (size_t ti = 0; ti < N_OF(types); ti++) check_all_shapes(types[ti], base_isa(), 0, base_isa());
}

/* ---- AVX-512 VNNI --------------------------------------------------------------------- */

Test(kernels_i16_isa, avx512_q4_0_matches_avx2_and_contract, .timeout = 120)
{
    skip_without_avx512();
    check_all_shapes(SD_DTYPE_Q4_0, SD_I16_ISA_AVX512, 1, base_isa());
}

Test(kernels_i16_isa, avx512_q4_1_matches_avx2_and_contract, .timeout = 120)
{
    skip_without_avx512();
    check_all_shapes(SD_DTYPE_Q4_1, SD_I16_ISA_AVX512, 1, base_isa());
}

Test(kernels_i16_isa, avx512_q8_0_matches_avx2_and_contract, .timeout = 120)
{
    skip_without_avx512();
    check_all_shapes(SD_DTYPE_Q8_0, SD_I16_ISA_AVX512, 1, base_isa());
}

/* Batch invariance on the AVX-512 path: 17 activation rows split into calls of every size
 * 1..17 and 37 weight rows taken from every offset 0..9 (so tiles of 8 start anywhere and
 * end partly filled) give the bits of the single full call. */
Test(kernels_i16_isa, avx512_rows_independent_of_batch_and_tiling, .timeout = 120)
{
    skip_without_avx512();
    enum { NW = 37, COLS = 576 };
    for (size_t ti = 0; ti < N_OF(types); ti++) {
        sd_dtype_t type = types[ti];
        sd_weight_t w = make_weight(type, NW, COLS, 5);
        act_t a = make_act(type, MAX_NX, COLS, 9);
        size_t ldf = NW + PAD;
        float *full = run_isa(SD_I16_ISA_AVX512, &w, 0, NW, &a, 0, MAX_NX);
        for (int size = 1; size <= MAX_NX; size++)
            for (int c0 = 0; c0 < MAX_NX; c0 += size) {
                int nx = MAX_NX - c0 < size ? MAX_NX - c0 : size;
                for (int r0 = 0; r0 < 10; r0++) {
                    int nw = NW - r0;
                    float *y = run_isa(SD_I16_ISA_AVX512, &w, r0, nw, &a, c0, nx);
                    for (int c = 0; c < nx; c++)
                        cr_assert(memcmp(y + (size_t)c * (size_t)(nw + PAD), full + (size_t)(c0 + c) * ldf + r0,
                                         sizeof(float) * (size_t)nw) == 0,
                                  "%s: activation row %d in a call of %d rows, weight rows from %d, differs "
                                  "from the full call",
                                  sd_dtype_name(type), c0 + c, nx, r0);
                    free(y);
                }
            }
        free(full);
        free_act(&a);
        free((void *)w.data);
    }
}

/* ---- the choice ------------------------------------------------------------------------ */

/* Each Criterion test runs in its own process, so the first call here makes the choice. */
Test(kernels_i16_isa, best_kernel_chosen_by_default)
{
    unsetenv("SPECDEC_CPU_ISA");
    sd_i16_isa_t want = sd_i16_isa_available(SD_I16_ISA_AVX512) ? SD_I16_ISA_AVX512 : base_isa();
    cr_assert_eq(sd_i16_isa(), want);
}

Test(kernels_i16_isa, env_forces_avx2)
{
    if (!sd_i16_isa_available(SD_I16_ISA_AVX2)) cr_skip_test("built without the AVX2 kernel");
    setenv("SPECDEC_CPU_ISA", "avx2", 1);
    cr_assert_eq(sd_i16_isa(), SD_I16_ISA_AVX2);
}

Test(kernels_i16_isa, unavailable_kernel_is_refused)
{
    sd_i16_isa_t missing = sd_i16_isa_available(SD_I16_ISA_AVX2) ? SD_I16_ISA_SCALAR : SD_I16_ISA_AVX2;
    float y = 0.0f;
    int16_t q[64] = {0};
    float s = 0.0f;
    cr_assert_eq(sd_vec_dot_rows_i16_isa(missing, SD_DTYPE_Q8_0, q, sizeof(sd_block_q8_0), 1, q, &s, &s, 1,
                                         32, &y, 1),
                 SD_ERR_INVALID_ARG);
}
