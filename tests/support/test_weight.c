#include "test_weight.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>

#include "kernels/cpu/quants.h"
#include "test_util.h"

sd_test_weight_t sd_test_make_weight(sd_dtype_t type, int64_t rows, int64_t cols, uint32_t seed)
{
    sd_test_weight_t t = {.w = {.type = type, .rows = rows, .cols = cols}};
    cr_assert_eq(sd_dtype_row_bytes(type, cols, &t.w.row_bytes), SD_OK, "%s", sd_last_error());
    uint8_t *data = malloc(t.w.row_bytes * (size_t)rows);
    float *row = malloc(sizeof(float) * (size_t)cols);
    t.deq = malloc(sizeof(float) * (size_t)(rows * cols));
    cr_assert(data && row && t.deq, "out of memory for a %lld x %lld test weight",
              (long long)rows, (long long)cols);
    for (int64_t r = 0; r < rows; r++) {
        sd_test_fill_random(row, (size_t)cols, seed + (uint32_t)r, 0.5f);
        sd_quantize_row(type, row, data + (size_t)r * t.w.row_bytes, cols);
        sd_dequantize_row(type, data + (size_t)r * t.w.row_bytes, t.deq + r * cols, cols);
    }
    t.w.data = data;
    free(row);
    return t;
}

void sd_test_free_weight(sd_test_weight_t *t)
{
    free((void *)t->w.data);
    free(t->deq);
}

/* The int8 path's bound (sd_test_act_bound). */
static double q8_bound(const sd_test_weight_t *tw, int64_t r, const float *x)
{
    int64_t blk = sd_dtype_block_elems(tw->w.type);
    const float *w = tw->deq + r * tw->w.cols;
    double bound = 0.0;
    for (int64_t b = 0; b < tw->w.cols / blk; b++) {
        float amax = 0.0f;
        for (int64_t j = 0; j < blk; j++) amax = fmaxf(amax, fabsf(x[blk * b + j]));
        for (int64_t j = 0; j < blk; j++) bound += fabs((double)w[blk * b + j]) * amax / 254.0 * 1.001;
    }
    return bound;
}

double sd_test_act_bound(const sd_test_weight_t *tw, int64_t r, const float *x)
{
    sd_dtype_t t = tw->w.type;
    if (sd_dot_q8_supported(t)) return q8_bound(tw, r, x);
    if (t != SD_DTYPE_Q4_0 && t != SD_DTYPE_Q4_1 && t != SD_DTYPE_Q8_0) return 0.0;
    const uint8_t *raw = (const uint8_t *)tw->w.data + (size_t)r * tw->w.row_bytes;
    const float *w = tw->deq + r * tw->w.cols;
    double bound = 0.0;
    for (int64_t b = 0; b < tw->w.cols / 32; b++) {
        float m = 0.0f, amax = 0.0f;
        if (t == SD_DTYPE_Q4_1) m = sd_f16_to_f32((uint16_t)(raw[20 * b + 2] | raw[20 * b + 3] << 8));
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[32 * b + j]));
        for (int j = 0; j < 32; j++) bound += fabs((double)w[32 * b + j] - m) * amax / 65534.0 * 1.001;
    }
    return bound;
}
