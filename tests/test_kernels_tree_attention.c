/* The masked (tree) attention op on the CPU against a double-precision C reference that
 * takes the ancestor mask, and bit for bit against the plain op where a node's keys are a
 * chain's (the property the KV rollback of token trees rests on), and against itself over a
 * paged layout. Bad geometry: NaN rows. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend_impl.h"
#include "support/test_util.h"

enum { NH = 6, NKV = 2, HD = 20, BASE = 9 };

/* Tree of 7 rows: 0 root; 1, 2 under 0; 3 under 1; 4 under 2; 5 under 3; 6 under 0. */
static const int32_t parent[] = {-1, 0, 0, 1, 2, 3, 0};
#define NT ((int)(sizeof parent / sizeof parent[0]))

static void ancestor_mask(uint8_t *mask)
{
    memset(mask, 0, NT * NT);
    for (int i = 0; i < NT; i++)
        for (int a = i; a >= 0; a = parent[a]) mask[i * NT + a] = 1;
}

/* Double reference: query qh (head h) over slots [0, base) and base + j where row[j]. */
static void masked_ref(const float *qh, const float *k, const float *v, int base,
                       const uint8_t *row, int m, int h, double *out)
{
    int kvh = h / (NH / NKV);
    double s[BASE + NT], max = -INFINITY, sum = 0.0;
    int slot[BASE + NT], n = 0;
    for (int j = 0; j < base; j++) slot[n++] = j;
    for (int j = 0; j < m; j++)
        if (row[j]) slot[n++] = base + j;
    for (int t = 0; t < n; t++) {
        const float *kj = k + ((size_t)slot[t] * NKV + (size_t)kvh) * HD;
        s[t] = 0.0;
        for (int d = 0; d < HD; d++) s[t] += (double)qh[d] * kj[d];
        s[t] /= sqrt((double)HD);
        max = fmax(max, s[t]);
    }
    for (int d = 0; d < HD; d++) out[d] = 0.0;
    for (int t = 0; t < n; t++) {
        double e = exp(s[t] - max);
        sum += e;
        for (int d = 0; d < HD; d++) out[d] += e * v[((size_t)slot[t] * NKV + (size_t)kvh) * HD + d];
    }
    for (int d = 0; d < HD; d++) out[d] /= sum;
}

static sd_backend_t *cpu(int threads)
{
    sd_backend_t *be = NULL;
    cr_assert_eq(sd_backend_cpu_create(threads, &be), SD_OK, "%s", sd_last_error());
    return be;
}

Test(kernels_tree_attention, matches_the_reference_and_the_chain_bit_for_bit, .timeout = 60)
{
    int n_ctx = BASE + NT + 2;
    size_t row = (size_t)NH * HD, kvn = (size_t)n_ctx * NKV * HD;
    float *q = malloc(sizeof(float) * NT * row), *k = malloc(sizeof(float) * kvn);
    float *v = malloc(sizeof(float) * kvn), *out = malloc(sizeof(float) * NT * row);
    float *chain = malloc(sizeof(float) * row);
    uint8_t mask[NT * NT];
    ancestor_mask(mask);
    sd_test_fill_random(q, NT * row, 11, 2.0f);
    sd_test_fill_random(k, kvn, 12, 2.0f);
    sd_test_fill_random(v, kvn, 13, 1.0f);
    sd_backend_t *be = cpu(3);
    be->ops->attention_masked(be, q, k, v, NULL, 0, BASE, mask, NT, NT, n_ctx, NH, NKV, HD, out);
    double ref[HD];
    for (int i = 0; i < NT; i++)
        for (int h = 0; h < NH; h++) {
            size_t off = (size_t)i * row + (size_t)h * HD;
            masked_ref(q + off, k, v, BASE, mask + i * NT, NT, h, ref);
            for (int d = 0; d < HD; d++)
                cr_assert(fabs(out[off + d] - ref[d]) <= 1e-5, "node %d head %d dim %d: %g vs %g",
                          i, h, d, out[off + d], ref[d]);
        }
    /* the path 0, 1, 3, 5: node 5's keys are slots [0, BASE + 4) once the path's rows sit at
     * BASE .. BASE + 3; the plain op at position BASE + 3 must give node 5's row exactly */
    const int path[] = {0, 1, 3, 5};
    float *k2 = malloc(sizeof(float) * kvn), *v2 = malloc(sizeof(float) * kvn);
    memcpy(k2, k, sizeof(float) * kvn);
    memcpy(v2, v, sizeof(float) * kvn);
    size_t kvrow = (size_t)NKV * HD;
    for (int d = 0; d < 4; d++) {
        memcpy(k2 + (size_t)(BASE + d) * kvrow, k + (size_t)(BASE + path[d]) * kvrow, sizeof(float) * kvrow);
        memcpy(v2 + (size_t)(BASE + d) * kvrow, v + (size_t)(BASE + path[d]) * kvrow, sizeof(float) * kvrow);
    }
    int32_t pos = BASE + 3;
    be->ops->attention(be, q + 5 * row, k2, v2, NULL, 0, &pos, 1, n_ctx, NH, NKV, HD, chain);
    cr_assert(memcmp(chain, out + 5 * row, sizeof(float) * row) == 0,
              "tree node 5 differs from the chain query at its position");
    sd_backend_destroy(be);
    free(q); free(k); free(v); free(out); free(chain); free(k2); free(v2);
}

Test(kernels_tree_attention, bad_geometry_gives_nan_rows, .timeout = 30)
{
    int n_ctx = 8;
    float q[NH * HD], k[8 * NKV * HD], v[8 * NKV * HD], out[NH * HD];
    uint8_t none[4] = {0}, one[4] = {1, 0, 0, 0};
    sd_test_fill_random(q, sizeof q / sizeof q[0], 1, 1.0f);
    sd_test_fill_random(k, sizeof k / sizeof k[0], 2, 1.0f);
    sd_test_fill_random(v, sizeof v / sizeof v[0], 3, 1.0f);
    sd_backend_t *be = cpu(1);
    be->ops->attention_masked(be, q, k, v, NULL, 0, 6, one, 1, 4, n_ctx, NH, NKV, HD, out); /* 6 + 4 > 8 */
    cr_assert(isnan(out[0]) && isnan(out[NH * HD - 1]));
    be->ops->attention_masked(be, q, k, v, NULL, 0, 0, none, 1, 4, n_ctx, NH, NKV, HD, out); /* no keys */
    cr_assert(isnan(out[0]));
    be->ops->attention_masked(be, q, k, v, NULL, 0, 0, one, 1, 4, n_ctx, NH, NKV, HD, out); /* slot 0 only */
    for (int h = 0; h < NH; h++)
        for (int d = 0; d < HD; d++)
            cr_assert_float_eq(out[h * HD + d], v[(h / (NH / NKV)) * HD + d], 1e-6);
    sd_backend_destroy(be);
}

/* The same cache scattered over blocks of 4 rows in a shuffled order: every row the same
 * bits as over the identity layout (slots are positions of the block table). */
Test(kernels_tree_attention, paged_layout_gives_the_same_bits, .timeout = 60)
{
    enum { BS = 4, NB = 5 };
    int n_ctx = NB * BS; /* BASE + NT = 16 slots used */
    static const int32_t blocks[NB] = {3, 0, 4, 2, 1};
    size_t row = (size_t)NH * HD, kvrow = (size_t)NKV * HD, kvn = (size_t)n_ctx * kvrow;
    float *q = malloc(sizeof(float) * NT * row), *k = malloc(sizeof(float) * kvn);
    float *v = malloc(sizeof(float) * kvn), *kp = malloc(sizeof(float) * kvn);
    float *vp = malloc(sizeof(float) * kvn), *flat = malloc(sizeof(float) * NT * row);
    float *paged = malloc(sizeof(float) * NT * row);
    uint8_t mask[NT * NT];
    ancestor_mask(mask);
    sd_test_fill_random(q, NT * row, 21, 2.0f);
    sd_test_fill_random(k, kvn, 22, 2.0f);
    sd_test_fill_random(v, kvn, 23, 1.0f);
    for (int j = 0; j < n_ctx; j++) { /* position j to row blocks[j / BS] * BS + j % BS */
        size_t r = (size_t)blocks[j / BS] * BS + (size_t)(j % BS);
        memcpy(kp + r * kvrow, k + (size_t)j * kvrow, sizeof(float) * kvrow);
        memcpy(vp + r * kvrow, v + (size_t)j * kvrow, sizeof(float) * kvrow);
    }
    sd_backend_t *be = cpu(2);
    be->ops->attention_masked(be, q, k, v, NULL, 0, BASE, mask, NT, NT, n_ctx, NH, NKV, HD, flat);
    be->ops->attention_masked(be, q, kp, vp, blocks, BS, BASE, mask, NT, NT, n_ctx, NH, NKV, HD,
                              paged);
    cr_assert(memcmp(flat, paged, sizeof(float) * NT * row) == 0,
              "the paged layout changed a tree row");
    sd_backend_destroy(be);
    free(q); free(k); free(v); free(kp); free(vp); free(flat); free(paged);
}
