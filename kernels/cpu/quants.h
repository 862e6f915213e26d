/* GGML block layouts and the CPU dot-product kernels (internal to kernels/cpu). The three dot
 * paths (f32, int16, int8) and their cost: docs/design-notes.md, "CPU kernels". */
#ifndef SPECDEC_KERNELS_CPU_QUANTS_H
#define SPECDEC_KERNELS_CPU_QUANTS_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/dtype.h"

#define SD_QK 32    /* elements per Q4_0 / Q4_1 / Q8_0 block */
#define SD_QK_K 256 /* elements per K-quant super-block */
#define SD_K_SCALE_SIZE 12

typedef struct {
    uint16_t d; /* f16 scale */
    uint8_t qs[SD_QK / 2];
} sd_block_q4_0; /* w = d * (nibble - 8); element j in the low nibble of qs[j], j+16 in the high */

typedef struct {
    uint16_t d, m; /* f16 scale, f16 min */
    uint8_t qs[SD_QK / 2];
} sd_block_q4_1; /* w = d * nibble + m; nibble order as Q4_0 */

typedef struct {
    uint16_t d;
    uint8_t qh[4]; /* bit j (little-endian u32) = 5th bit of element j */
    uint8_t qs[SD_QK / 2];
} sd_block_q5_0; /* w = d * (q - 16), q = nibble (order as Q4_0) | qh bit << 4 */

typedef struct {
    uint16_t d, m;
    uint8_t qh[4]; /* as Q5_0 */
    uint8_t qs[SD_QK / 2];
} sd_block_q5_1; /* w = d * q + m, q = nibble | qh bit << 4 (order as Q5_0) */

typedef struct {
    uint16_t d;
    int8_t qs[SD_QK];
} sd_block_q8_0; /* w = d * q */

typedef struct {
    uint16_t d;
    uint8_t qs[SD_QK / 2];
} sd_block_iq4_nl; /* w = d * sd_iq4_values[nibble] (nibble order as Q4_0) */

typedef struct {
    uint16_t d, dmin;                  /* f16 super-block scale for scales / mins */
    uint8_t scales[SD_K_SCALE_SIZE];   /* 8 x (6-bit scale, 6-bit min) */
    uint8_t qs[SD_QK_K / 2];           /* 4 chunks of 32 bytes: low nibbles sub-block 2c, high 2c+1 */
} sd_block_q4_k; /* w = d * sc[j] * q - dmin * m[j] for sub-block j of 32 */

typedef struct {
    uint8_t scales[SD_QK_K / 16]; /* per 16: low nibble scale, high nibble min */
    uint8_t qs[SD_QK_K / 4];      /* 2 bits: element 128h + 32j + l in qs[32h + l] bits 2j..2j+1 */
    uint16_t d, dmin;
} sd_block_q2_k; /* w = d * sc[e/16] * q - dmin * m[e/16] */

typedef struct {
    uint8_t hmask[SD_QK_K / 8];      /* bit 4h + j of hmask[l]: high bit of element 128h + 32j + l */
    uint8_t qs[SD_QK_K / 4];         /* low 2 bits, as Q2_K */
    uint8_t scales[SD_K_SCALE_SIZE]; /* 16 x 6-bit scales (sd_q3_k_scale), stored + 32 */
    uint16_t d;
} sd_block_q3_k; /* w = d * (scale - 32) * (low2 - (high bit ? 0 : 4)) per 16 */

typedef struct {
    uint16_t d, dmin;
    uint8_t scales[SD_K_SCALE_SIZE]; /* as Q4_K */
    uint8_t qh[SD_QK_K / 8];         /* bit j of qh[l]: 5th bit of sub-block j element l */
    uint8_t qs[SD_QK_K / 2];         /* as Q4_K */
} sd_block_q5_k; /* w = d * sc[j] * q - dmin * m[j], q = nibble | qh bit << 4 */

typedef struct {
    uint16_t d;
    uint16_t scales_h;              /* bits 2j..2j+1: high 2 bits of sub-block j's scale */
    uint8_t scales_l[SD_QK_K / 64]; /* nibble j % 2 of byte j / 2: low 4 bits */
    uint8_t qs[SD_QK_K / 2];        /* sub-block j: 16 bytes at 16j, nibble order as Q4_0 */
} sd_block_iq4_xs; /* w = d * (scale - 32) * sd_iq4_values[nibble] per 32 */

typedef struct {
    uint8_t ql[SD_QK_K / 2];     /* low 4 bits */
    uint8_t qh[SD_QK_K / 4];     /* high 2 bits */
    int8_t scales[SD_QK_K / 16]; /* one per 16 elements */
    uint16_t d;                  /* f16 */
} sd_block_q6_k; /* w = d * scales[j] * (q - 32) */

_Static_assert(sizeof(sd_block_q4_0) == 18, "Q4_0 block is 18 bytes");
_Static_assert(sizeof(sd_block_q4_1) == 20, "Q4_1 block is 20 bytes");
_Static_assert(sizeof(sd_block_q5_0) == 22, "Q5_0 block is 22 bytes");
_Static_assert(sizeof(sd_block_q5_1) == 24, "Q5_1 block is 24 bytes");
_Static_assert(sizeof(sd_block_q8_0) == 34, "Q8_0 block is 34 bytes");
_Static_assert(sizeof(sd_block_iq4_nl) == 18, "IQ4_NL block is 18 bytes");
_Static_assert(sizeof(sd_block_q2_k) == 84, "Q2_K block is 84 bytes");
_Static_assert(sizeof(sd_block_q3_k) == 110, "Q3_K block is 110 bytes");
_Static_assert(sizeof(sd_block_q5_k) == 176, "Q5_K block is 176 bytes");
_Static_assert(sizeof(sd_block_iq4_xs) == 136, "IQ4_XS block is 136 bytes");
_Static_assert(sizeof(sd_block_q4_k) == 144, "Q4_K block is 144 bytes");
_Static_assert(sizeof(sd_block_q6_k) == 210, "Q6_K block is 210 bytes");

/* Q4_K: 6-bit scale and min of sub-block j (0..7), as GGML's get_scale_min_k4. */
static inline void sd_q4_k_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *m)
{
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* Q3_K: scale k (0..15) as stored, 0..63 (the weight uses it minus 32). */
static inline int sd_q3_k_scale(int k, const uint8_t *s)
{
    return ((s[k % 8] >> (4 * (k / 8))) & 0xF) | (((s[8 + k % 4] >> (2 * (k / 4))) & 3) << 4);
}

/* IQ4_XS: scale of sub-block j (0..7) as stored, 0..63 (the weight uses it minus 32). */
static inline int sd_iq4_xs_scale(int j, const sd_block_iq4_xs *b)
{
    return ((b->scales_l[j / 2] >> (4 * (j % 2))) & 0xF) | (((b->scales_h >> (2 * j)) & 3) << 4);
}

/* The 16 values of IQ4_NL / IQ4_XS nibbles (GGML's kvalues_iq4nl). */
extern const int8_t sd_iq4_values[16];

/* K-quant and IQ4 row codecs (quants_k.c); nb = number of blocks (256 elements, IQ4_NL 32). */
void sd_dequant_q2_k(const sd_block_q2_k *b, float *y, int64_t nb);
void sd_dequant_q3_k(const sd_block_q3_k *b, float *y, int64_t nb);
void sd_dequant_q4_k(const sd_block_q4_k *b, float *y, int64_t nb);
void sd_dequant_q5_k(const sd_block_q5_k *b, float *y, int64_t nb);
void sd_dequant_q6_k(const sd_block_q6_k *b, float *y, int64_t nb);
void sd_dequant_iq4_nl(const sd_block_iq4_nl *b, float *y, int64_t nb);
void sd_dequant_iq4_xs(const sd_block_iq4_xs *b, float *y, int64_t nb);
void sd_quant_q2_k(const float *x, sd_block_q2_k *b, int64_t nb);
void sd_quant_q3_k(const float *x, sd_block_q3_k *b, int64_t nb);
void sd_quant_q4_k(const float *x, sd_block_q4_k *b, int64_t nb);
void sd_quant_q5_k(const float *x, sd_block_q5_k *b, int64_t nb);
void sd_quant_q6_k(const float *x, sd_block_q6_k *b, int64_t nb);
void sd_quant_iq4_nl(const float *x, sd_block_iq4_nl *b, int64_t nb);
void sd_quant_iq4_xs(const float *x, sd_block_iq4_xs *b, int64_t nb);

/* Most rows one sd_vec_dot_rows call computes against one weight row. */
#define SD_DOT_MAX_ROWS 4

/* out[r] = dot(dequantize(w_row), x[r*ldx .. r*ldx+n)) for r < nr (1 <= nr <= SD_DOT_MAX_ROWS).
 * Each out[r] is bit-identical to sd_vec_dot(type, w_row, x + r*ldx, n). */
void sd_vec_dot_rows(sd_dtype_t type, const void *w_row, const float *x, size_t ldx, int nr,
                     int64_t n, float *out);

/* The int16 path of matmul (Q4_0, Q4_1, Q8_0): 1 for those types. Activations are quantized
 * per block of 32 to int16 (scale = max|x| / 32767: error <= 2^-16 of the block's max). */
int sd_dot_i16_supported(sd_dtype_t type);
/* int16 values one quantized activation row of n elements takes for weights of `type`
 * (n, or 2n where the kernel reads a duplicated layout). */
int64_t sd_act_i16_len(sd_dtype_t type, int64_t n);
/* x[n] -> q[sd_act_i16_len(type, n)] int16, scale[n/32], sum[n/32] (f32 sum of each block
 * of x). q is laid out as sd_vec_dot_rows_i16 reads it for weights of `type`. */
void sd_quantize_act_i16(sd_dtype_t type, const float *x, int64_t n, int16_t *q, float *scale,
                         float *sum);

/* Weight rows per tile of the AVX2 kernel (sd_i16_tile_rows: the chosen kernel's widest),
 * and activation rows one decode of a tile serves (more rows take more passes). */
#define SD_I16_TILE_W 4
#define SD_I16_TILE_X 16
/* y[c * ldy + r] = dot(weight row r, activation row c) for r < nw, c < nx (nx >= 1).
 * Weight row r starts at w + r * row_bytes; activation row c is
 * q + c * sd_act_i16_len(type, n) (from sd_quantize_act_i16 for this type) with scale/sum
 * + c*n/32. Each result is bit-identical whatever nw, nx and the rows' positions in the
 * ranges (batch invariance). */
void sd_vec_dot_rows_i16(sd_dtype_t type, const void *w, size_t row_bytes, int64_t nw,
                         const int16_t *q, const float *scale, const float *sum, int nx,
                         int64_t n, float *y, size_t ldy);

/* The kernels of sd_vec_dot_rows_i16, bit-identical: scalar (builds without AVX2), AVX2, and
 * AVX-512 VNNI (CPUs with AVX-512 F/BW/VL/DQ and VNNI). The best available is chosen once per
 * process; SPECDEC_CPU_ISA=avx2 forces AVX2. */
typedef enum { SD_I16_ISA_SCALAR, SD_I16_ISA_AVX2, SD_I16_ISA_AVX512 } sd_i16_isa_t;
/* 1 if this build and CPU can run `isa` on the activation layout sd_quantize_act_i16 writes. */
int sd_i16_isa_available(sd_i16_isa_t isa);
/* The kernel sd_vec_dot_rows_i16 uses. */
sd_i16_isa_t sd_i16_isa(void);
/* "scalar", "avx2" or "avx512". */
const char *sd_i16_isa_name(sd_i16_isa_t isa);
/* Weight rows per tile of that kernel at its widest (SD_I16_TILE_W, or 16 for AVX-512): a
 * split of the rows into multiples of it leaves no tile partly idle. */
int sd_i16_tile_rows(void);
/* sd_vec_dot_rows_i16 with the kernel `isa` (for tests and benchmarks); SD_ERR_INVALID_ARG
 * (nothing computed) where it is not available, else SD_OK. */
sd_status_t sd_vec_dot_rows_i16_isa(sd_i16_isa_t isa, sd_dtype_t type, const void *w, size_t row_bytes,
                                    int64_t nw, const int16_t *q, const float *scale, const float *sum,
                                    int nx, int64_t n, float *y, size_t ldy);
/* The AVX-512 kernel (vecdot_i16_avx512.c); call only where sd_i16_isa_available says so. */
void sd_vec_dot_rows_i16_avx512(sd_dtype_t type, const void *w, size_t row_bytes, int64_t nw,
                                const int16_t *q, const float *scale, const float *sum, int nx,
                                int64_t n, float *y, size_t ldy);

/* ---- The int8 path of matmul: K-quants, IQ4_NL/IQ4_XS, Q5_0, Q5_1 (vecdot_q8.c) ----------- */

/* 1 for the types whose matmul quantizes activations to int8 (sd_quantize_act_q8). */
int sd_dot_q8_supported(sd_dtype_t type);
/* Elements per activation scale for weights of `type`: 256 (K-quants, IQ4_XS) or 32 (Q5_0,
 * Q5_1, IQ4_NL), the type's block size. */
int64_t sd_act_q8_block(sd_dtype_t type);
/* x[n] (n a multiple of the block) -> q[n], per block of B = sd_act_q8_block(type):
 * d[n/B] = max|x| / 127 and q = x * (127 / max|x|) rounded to nearest even (every finite
 * value lands in -127..127; a NaN gives -127); bsum[n/16] = the sum of each 16 q. */
void sd_quantize_act_q8(sd_dtype_t type, const float *x, int64_t n, int8_t *q, float *d,
                        int16_t *bsum);

/* Weight rows per tile of the SIMD kernels (a split of the rows into multiples of it leaves
 * no tile partly idle). */
#define SD_Q8_TILE_W 8
/* y[c * ldy + r] = dot(weight row r, activation row c) for r < nw, c < nx: weight row r at
 * w + r * row_bytes, activation row c at q + c * n, d + c * n / B, bsum + c * n / 16. The
 * numbers (exact integer block sums, then a fixed float order per pair) are written at the
 * top of vecdot_q8.c; each result is bit-identical whatever nw, nx, the rows' places in the
 * ranges and the kernel (batch invariance). */
void sd_vec_dot_rows_q8(sd_dtype_t type, const void *w, size_t row_bytes, int64_t nw,
                        const int8_t *q, const float *d, const int16_t *bsum, int nx, int64_t n,
                        float *y, size_t ldy);
/* 1 if kernel `isa` runs here (the scalar one always; AVX2 in x86-64 builds; AVX-512 where
 * sd_i16_isa_available says so). The choice is sd_i16_isa()'s, for both integer paths. */
int sd_q8_isa_available(sd_i16_isa_t isa);
/* sd_vec_dot_rows_q8 with kernel `isa`; SD_ERR_INVALID_ARG (nothing computed) where it is not
 * available, else SD_OK. */
sd_status_t sd_vec_dot_rows_q8_isa(sd_i16_isa_t isa, sd_dtype_t type, const void *w, size_t row_bytes,
                                   int64_t nw, const int8_t *q, const float *d, const int16_t *bsum,
                                   int nx, int64_t n, float *y, size_t ldy);
/* The SIMD kernels (vecdot_q8.c, vecdot_q8_avx512.c); call only where available. */
void sd_vec_dot_rows_q8_avx2(sd_dtype_t type, const void *w, size_t row_bytes, int64_t nw,
                             const int8_t *q, const float *d, const int16_t *bsum, int nx,
                             int64_t n, float *y, size_t ldy);
void sd_vec_dot_rows_q8_avx512(sd_dtype_t type, const void *w, size_t row_bytes, int64_t nw,
                               const int8_t *q, const float *d, const int16_t *bsum, int nx,
                               int64_t n, float *y, size_t ldy);

#endif
