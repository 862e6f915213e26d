// Fused dequantize-matmul and embedding straight from GGUF-typed weights (every type of
// `weight_types` below). Contract: launch.cuh; why it is batch-invariant and its expected
// speed: docs/cuda.md, "Batch invariance".
//
// Units. A weight row is walked in units of 32 consecutive weights: one 32-weight block
// (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL), one 32-weight sub-block of a 256-weight
// super-block (Q2_K..Q6_K, IQ4_XS: 8 units per super-block), or 32
// plain F32/F16/BF16 values (a plain row's last unit may be partial: cols need not be a
// multiple of 32). Lane l of a warp owns element l of every unit and decodes it once.
//
// matmul. One warp per output feature o; a block of MM_WARPS warps covers MM_WARPS
// consecutive features (blockIdx.y, grid-stride past 65535 groups) for one tile of MM_TILE
// activation rows (blockIdx.x, the fast dimension). For units u = 0, 1, ..., U-1 in order,
// each lane feeds its weight to the tile's per-row accumulators with one fmaf each; then the
// 32 lane sums are combined by a fixed xor butterfly (16, 8, 4, 2, 1) and the bias is added
// last. Slots past n are skipped.
//
// Exact decode: each weight is the float sd_dequantize_row gives (kernels/cpu/quants.c,
// quants_k.c), products and sums rounded one by one (__fmul_rn / __fadd_rn / __fsub_rn).
// Quant blocks are read byte by byte; F16/BF16 and F32 rows as 16- and 32-bit words, so the
// host check refuses data or row_bytes not aligned to 2 / 4. The host mirrors
// (sd_cuda_matmul_host, sd_cuda_embed_host) run the same decode and accumulation lane by lane.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <cuda_fp16.h>

#include "launch.cuh"

extern "C" {
#include "core/check.h"
#include "kernels/cuda.h"
}

#define HD static __host__ __device__ inline

static constexpr int MM_TILE = 8;  // activation rows per tile (per-row accumulators per lane)
static constexpr int MM_WARPS = 8; // output features per block
static constexpr int MM_THREADS = 32 * MM_WARPS;
static constexpr int EMBED_WARPS = 8;
static constexpr int EMBED_THREADS = 32 * EMBED_WARPS;
static constexpr int64_t MAX_GRID_Y = 65535;

// GGML block layouts (kernels/cpu/quants.h): bytes per block and field offsets.
enum {
    Q8_0_BYTES = 34,  // d f16 | qs[32] int8
    Q4_0_BYTES = 18,  // d f16 | qs[16] nibbles
    Q4_1_BYTES = 20,  // d f16 | m f16 | qs[16]
    Q5_0_BYTES = 22,  // d f16 | qh[4] | qs[16]
    Q5_1_BYTES = 24,  // d f16 | m f16 | qh[4] | qs[16]
    IQ4_NL_BYTES = 18, // d f16 | qs[16]
    Q2_K_BYTES = 84,  // scales[16] | qs[64] | d f16 | dmin f16
    Q3_K_BYTES = 110, // hmask[32] | qs[64] | scales[12] | d f16
    Q4_K_BYTES = 144, // d f16 | dmin f16 | scales[12] | qs[128]
    Q5_K_BYTES = 176, // d f16 | dmin f16 | scales[12] | qh[32] | qs[128]
    Q6_K_BYTES = 210, // ql[128] | qh[64] | scales[16] int8 | d f16
    IQ4_XS_BYTES = 136, // d f16 | scales_h u16 | scales_l[4] | qs[128]
    K_UNITS = 8,      // 32-weight units per 256-weight super-block
};

// ---- float helpers, identical on host and device --------------------------------------

// Rounded product / sum / difference that can never be fused into an FMA (on the host the
// volatile store forces the rounding even under -ffp-contract=fast).
HD float mul_rn(float a, float b)
{
#ifdef __CUDA_ARCH__
    return __fmul_rn(a, b);
#else
    volatile float p = a * b;
    return p;
#endif
}

HD float add_rn(float a, float b)
{
#ifdef __CUDA_ARCH__
    return __fadd_rn(a, b);
#else
    volatile float s = a + b;
    return s;
#endif
}

HD float sub_rn(float a, float b)
{
#ifdef __CUDA_ARCH__
    return __fsub_rn(a, b);
#else
    volatile float s = a - b;
    return s;
#endif
}

HD float bits_to_f32(uint32_t u)
{
#ifdef __CUDA_ARCH__
    return __uint_as_float(u);
#else
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
#endif
}

// IEEE half -> float, exact (as sd_f16_to_f32).
HD float f16_to_f32(uint16_t h)
{
#ifdef __CUDA_ARCH__
    return __half2float(__ushort_as_half(h));
#else
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    if (exp == 0x1f && mant) return bits_to_f32(sign | 0x7fc00000u | (mant << 13)); // nan
    if (exp == 0x1f) return bits_to_f32(sign | 0x7f800000u);                         // inf
    if (exp != 0) return bits_to_f32(sign | ((exp + 112) << 23) | (mant << 13));
    float v = (float)mant * bits_to_f32(0x33800000u); // subnormal: mant * 2^-24, exact
    return sign ? -v : v;
#endif
}

HD float bf16_to_f32(uint16_t h) { return bits_to_f32((uint32_t)h << 16); }

// Little-endian f16 at any byte address.
HD float f16_at(const uint8_t *p) { return f16_to_f32((uint16_t)(p[0] | (p[1] << 8))); }

// ---- per-type decode: element `lane` (0..31) of a 32-weight unit ------------------------

// Q8_0 block b: w = d * q.
HD float decode_q8_0(const uint8_t *b, int lane)
{
    return mul_rn((float)(int8_t)b[2 + lane], f16_at(b));
}

// Nibble of element lane (0..31) from 16 packed bytes: low nibbles are elements 0..15,
// high nibbles 16..31.
HD int nibble_at(const uint8_t *qs, int lane)
{
    uint8_t byte = qs[lane & 15];
    return lane < 16 ? (byte & 0xF) : (byte >> 4);
}

// Q4_0 block b: w = d * (nibble - 8).
HD float decode_q4_0(const uint8_t *b, int lane)
{
    return mul_rn((float)(nibble_at(b + 2, lane) - 8), f16_at(b));
}

// Q4_1 block b: w = d * nibble + m (product rounded before the add).
HD float decode_q4_1(const uint8_t *b, int lane)
{
    return add_rn(mul_rn((float)nibble_at(b + 4, lane), f16_at(b)), f16_at(b + 2));
}

// Five-bit value of element lane of a Q5_0/Q5_1 block: nibble | (bit lane of the
// little-endian u32 qh) << 4.
HD int q5_at(const uint8_t *qh, const uint8_t *qs, int lane)
{
    return nibble_at(qs, lane) | (((qh[lane >> 3] >> (lane & 7)) & 1) << 4);
}

// Q5_0 block b: w = d * (q - 16).
HD float decode_q5_0(const uint8_t *b, int lane)
{
    return mul_rn((float)(q5_at(b + 2, b + 6, lane) - 16), f16_at(b));
}

// Q5_1 block b: w = d * q + m (product rounded before the add).
HD float decode_q5_1(const uint8_t *b, int lane)
{
    return add_rn(mul_rn((float)q5_at(b + 4, b + 8, lane), f16_at(b)), f16_at(b + 2));
}

// GGML's kvalues_iq4nl[n] (sd_iq4_values), packed as bytes into two words so that host and
// device read it without a table in memory.
HD int iq4_value(int n)
{
    const uint64_t lo = 0xF6EADDCFBFAD9881ull, hi = 0x7159453526190D01ull; // -127..-10, 1..113
    return (int8_t)(((n < 8 ? lo : hi) >> (8 * (n & 7))) & 0xFF);
}

// IQ4_NL block b: w = d * iq4_value(nibble).
HD float decode_iq4_nl(const uint8_t *b, int lane)
{
    return mul_rn(f16_at(b), (float)iq4_value(nibble_at(b + 2, lane)));
}

// Q4_K: 6-bit scale and min of sub-block j (0..7), as GGML's get_scale_min_k4.
HD void q4_k_scale_min(int j, const uint8_t *s, int *sc, int *m)
{
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

// Q4_K super-block b, sub-block j (elements 32j .. 32j+31): the nibbles sit in
// qs[32 * (j / 2) + l], low for even j, high for odd; w = (d * sc) * q - (dmin * m).
HD float decode_q4_k(const uint8_t *b, int j, int lane)
{
    int sc, m;
    q4_k_scale_min(j, b + 4, &sc, &m);
    uint8_t byte = b[16 + 32 * (j >> 1) + lane];
    int q = (j & 1) ? (byte >> 4) : (byte & 0xF);
    float d_sc = mul_rn(f16_at(b), (float)sc), dmin_m = mul_rn(f16_at(b + 2), (float)m);
    return sub_rn(mul_rn(d_sc, (float)q), dmin_m);
}

// Q5_K super-block b, sub-block j: the Q4_K nibble (qs at 48) | bit j of qh[lane] << 4;
// w = (d * sc) * q - (dmin * m).
HD float decode_q5_k(const uint8_t *b, int j, int lane)
{
    int sc, m;
    q4_k_scale_min(j, b + 4, &sc, &m);
    int low = (b[48 + 32 * (j >> 1) + lane] >> (4 * (j & 1))) & 0xF;
    int q = low | (((b[16 + lane] >> j) & 1) << 4);
    float d_sc = mul_rn(f16_at(b), (float)sc), dmin_m = mul_rn(f16_at(b + 2), (float)m);
    return sub_rn(mul_rn(d_sc, (float)q), dmin_m);
}

// Q2_K / Q3_K sub-block s (elements 128h + 32k + l, h = s / 4, k = s % 4, l = lane): the low
// 2 bits at bit 2k of qs[32h + l]; the element's 16-weight scale index is 8h + 2k + l / 16.
HD int k_low2(const uint8_t *qs, int s, int lane)
{
    return (qs[32 * (s >> 2) + lane] >> (2 * (s & 3))) & 3;
}
HD int k_scale_index(int s, int lane) { return 8 * (s >> 2) + 2 * (s & 3) + (lane >> 4); }

// Q2_K super-block b, sub-block s: scale byte sc = scales[index];
// w = (d * (sc & 15)) * q - (dmin * (sc >> 4)).
HD float decode_q2_k(const uint8_t *b, int s, int lane)
{
    int sc = b[k_scale_index(s, lane)];
    float dl = mul_rn(f16_at(b + 80), (float)(sc & 0xF)), ml = mul_rn(f16_at(b + 82), (float)(sc >> 4));
    return sub_rn(mul_rn(dl, (float)k_low2(b + 16, s, lane)), ml);
}

// Q3_K super-block b, sub-block s: high bit 4h + k of hmask[lane], 6-bit scale k of scales
// (as sd_q3_k_scale); w = (d * (scale - 32)) * (low2 - (high ? 0 : 4)).
HD float decode_q3_k(const uint8_t *b, int s, int lane)
{
    const uint8_t *sc = b + 96;
    int k = k_scale_index(s, lane);
    int scale = ((sc[k % 8] >> (4 * (k / 8))) & 0xF) | (((sc[8 + k % 4] >> (2 * (k / 4))) & 3) << 4);
    int high = (b[lane] >> (4 * (s >> 2) + (s & 3))) & 1;
    float dl = mul_rn(f16_at(b + 108), (float)(scale - 32));
    return mul_rn(dl, (float)(k_low2(b + 32, s, lane) - (high ? 0 : 4)));
}

// IQ4_XS super-block b, sub-block j: 6-bit scale = nibble j % 2 of scales_l[j / 2] | bits
// 2j..2j+1 of scales_h << 4; nibbles at qs + 16j (order as Q4_0);
// w = (d * (scale - 32)) * iq4_value(nibble).
HD float decode_iq4_xs(const uint8_t *b, int j, int lane)
{
    int scales_h = b[2] | (b[3] << 8);
    int scale = ((b[4 + (j >> 1)] >> (4 * (j & 1))) & 0xF) | (((scales_h >> (2 * j)) & 3) << 4);
    float dl = mul_rn(f16_at(b), (float)(scale - 32));
    return mul_rn(dl, (float)iq4_value(nibble_at(b + 8 + 16 * j, lane)));
}

// Q6_K super-block b, sub-block s (elements 32s .. 32s+31 = 128h + 32k + l with h = s / 4,
// k = s % 4, l = lane): low 4 bits in ql[64h + l + 32 (k & 1)] (high nibble when k >= 2),
// high 2 bits at bit 2k of qh[32h + l], scale scales[8h + l / 16 + 2k];
// w = (d * scale) * (q - 32).
HD float decode_q6_k(const uint8_t *b, int s, int lane)
{
    int h = s >> 2, k = s & 3;
    int low = (b[64 * h + lane + 32 * (k & 1)] >> (4 * (k >> 1))) & 0xF;
    int high = (b[128 + 32 * h + lane] >> (2 * k)) & 3;
    int q = (low | (high << 4)) - 32;
    int scale = (int8_t)b[192 + 8 * h + (lane >> 4) + 2 * k];
    return mul_rn(mul_rn(f16_at(b + 208), (float)scale), (float)q);
}

// Element 32u + lane of a weight row (the caller keeps it below cols).
template <int T> HD float weight_at(const uint8_t *row, int64_t u, int lane)
{
    const int64_t k = 32 * u + lane;
    switch (T) {
    case SD_DTYPE_F32: return ((const float *)row)[k];
    case SD_DTYPE_F16: return f16_to_f32(((const uint16_t *)row)[k]);
    case SD_DTYPE_BF16: return bf16_to_f32(((const uint16_t *)row)[k]);
    case SD_DTYPE_Q8_0: return decode_q8_0(row + Q8_0_BYTES * u, lane);
    case SD_DTYPE_Q4_0: return decode_q4_0(row + Q4_0_BYTES * u, lane);
    case SD_DTYPE_Q4_1: return decode_q4_1(row + Q4_1_BYTES * u, lane);
    case SD_DTYPE_Q5_0: return decode_q5_0(row + Q5_0_BYTES * u, lane);
    case SD_DTYPE_Q5_1: return decode_q5_1(row + Q5_1_BYTES * u, lane);
    case SD_DTYPE_IQ4_NL: return decode_iq4_nl(row + IQ4_NL_BYTES * u, lane);
    case SD_DTYPE_Q2_K: return decode_q2_k(row + Q2_K_BYTES * (u / K_UNITS), (int)(u % K_UNITS), lane);
    case SD_DTYPE_Q3_K: return decode_q3_k(row + Q3_K_BYTES * (u / K_UNITS), (int)(u % K_UNITS), lane);
    case SD_DTYPE_Q4_K: return decode_q4_k(row + Q4_K_BYTES * (u / K_UNITS), (int)(u % K_UNITS), lane);
    case SD_DTYPE_Q5_K: return decode_q5_k(row + Q5_K_BYTES * (u / K_UNITS), (int)(u % K_UNITS), lane);
    case SD_DTYPE_Q6_K: return decode_q6_k(row + Q6_K_BYTES * (u / K_UNITS), (int)(u % K_UNITS), lane);
    case SD_DTYPE_IQ4_XS: return decode_iq4_xs(row + IQ4_XS_BYTES * (u / K_UNITS), (int)(u % K_UNITS), lane);
    default: break; // instantiated only for the rows of weight_types
    }
    return 0.0f;
}

// 32-weight units in a row of cols (plain types: the last one may be partial).
HD int64_t units_per_row(int64_t cols) { return (cols + 31) / 32; }

// ---- the matmul's per-lane work and its reduction -----------------------------------

// One lane's share of a tile: acc[r] += w[32u + lane] * x[r][32u + lane] over units u in
// order, for slots r < n_valid (x rows ldx floats apart). The same function runs on the
// device (one call per lane) and in the host mirror (32 calls).
template <int T>
HD void accumulate_lane(const uint8_t *wrow, int64_t cols, const float *x, int64_t ldx,
                        int n_valid, int lane, float acc[MM_TILE])
{
    const int64_t units = units_per_row(cols);
#ifdef __CUDA_ARCH__
#pragma unroll 4
#endif
    for (int64_t u = 0; u < units; u++) {
        const int64_t k = 32 * u + lane;
        if (k >= cols) break; // only the last unit of a plain row is partial
        const float w = weight_at<T>(wrow, u, lane);
#ifdef __CUDA_ARCH__
#pragma unroll
#endif
        for (int r = 0; r < MM_TILE; r++)
            if (r < n_valid) acc[r] = fmaf(w, x[r * ldx + k], acc[r]);
    }
}

// Sum over the warp: lane l adds lane l ^ off for off = 16, 8, 4, 2, 1; every lane ends
// with the same bits (a + b == b + a exactly).
static __device__ inline float warp_sum(float v)
{
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}

// Host mirror of warp_sum over 32 lane values; returns lane 0's result.
static float warp_sum_host(float v[32])
{
    for (int off = 16; off > 0; off >>= 1) {
        float next[32];
        for (int l = 0; l < 32; l++) next[l] = v[l] + v[l ^ off];
        memcpy(v, next, sizeof next);
    }
    return v[0];
}

// ---- kernels ---------------------------------------------------------------------------

// y[n, rows] = x[n, cols] . W^T (+ bias). grid (n_tiles, min(groups, 65535)), block
// MM_THREADS; see the top of the file.
template <int T>
__global__ void __launch_bounds__(MM_THREADS)
matmul_kernel(const uint8_t *w, size_t row_bytes, int64_t rows, int64_t cols, const float *x,
              int n, const float *bias, float *y)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t i0 = (int64_t)blockIdx.x * MM_TILE; // first activation row of the tile
    const int n_valid = n - i0 < MM_TILE ? (int)(n - i0) : MM_TILE;
    const float *xt = x + i0 * cols;
    const int64_t groups = (rows + MM_WARPS - 1) / MM_WARPS;
    for (int64_t g = blockIdx.y; g < groups; g += gridDim.y) {
        const int64_t o = g * MM_WARPS + warp; // output feature of this warp
        if (o >= rows) continue;               // warp-uniform: the shuffles stay whole-warp
        float acc[MM_TILE];
#pragma unroll
        for (int r = 0; r < MM_TILE; r++) acc[r] = 0.0f;
        accumulate_lane<T>(w + (size_t)o * row_bytes, cols, xt, cols, n_valid, lane, acc);
#pragma unroll
        for (int r = 0; r < MM_TILE; r++) acc[r] = warp_sum(acc[r]);
        if (lane == 0) {
            const float b = bias ? bias[o] : 0.0f;
#pragma unroll
            for (int r = 0; r < MM_TILE; r++)
                if (r < n_valid) y[(i0 + r) * rows + o] = bias ? acc[r] + b : acc[r];
        }
    }
}

// out[n, cols] = dequantize(table row tokens[i]), zeros for an id outside [0, rows).
// grid n, block EMBED_THREADS: warp w writes units w, w + EMBED_WARPS, ... of the row.
template <int T>
__global__ void __launch_bounds__(EMBED_THREADS)
embed_kernel(const uint8_t *table, size_t row_bytes, int64_t rows, int64_t cols,
             const int32_t *tokens, float *out)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t i = blockIdx.x;
    const int32_t tok = tokens[i];
    const bool valid = tok >= 0 && (int64_t)tok < rows;
    const uint8_t *row = table + (valid ? (size_t)tok * row_bytes : 0);
    float *orow = out + i * cols;
    const int64_t units = units_per_row(cols);
    for (int64_t u = warp; u < units; u += EMBED_WARPS) {
        const int64_t k = 32 * u + lane;
        if (k < cols) orow[k] = valid ? weight_at<T>(row, u, lane) : 0.0f;
    }
}

// ---- host: the type table -----------------------------------------------------------------

// One row per weight type the kernels decode: its block shape, the alignment its loads need,
// and its instantiations of the two launchers and the two host mirrors. The only per-type
// list on the host: sd_cuda_type_supported, the checks, launches and mirrors all read it.
typedef struct weight_type {
    sd_dtype_t type;
    int64_t elems; // elements per block
    size_t bytes;  // bytes per block
    size_t align;  // of data and row_bytes: the width of the loads
    cudaError_t (*matmul)(cudaStream_t, const sd_weight_t *, const float *, int, const float *, float *);
    cudaError_t (*embed)(cudaStream_t, const sd_weight_t *, const int32_t *, int, float *);
    void (*matmul_host)(const sd_weight_t *, const float *, int, const float *, float *);
    void (*embed_host)(const sd_weight_t *, const int32_t *, int, float *);
} weight_type_t;

static const weight_type_t *find_type(sd_dtype_t type); // NULL: no CUDA kernel

extern "C" int sd_cuda_type_supported(sd_dtype_t type) { return find_type(type) != NULL; }

// ---- host: argument checks and launch geometry ---------------------------------------

// The weight (or embedding table) a kernel may read: supported type, rows and cols >= 1,
// cols a whole number of blocks, row_bytes holding a row, data aligned for the loads.
static sd_status_t check_weight(const char *op, const sd_weight_t *w)
{
    if (!w) return sd_set_error(SD_ERR_INVALID_ARG, "cuda %s: weight is NULL", op);
    const weight_type_t *t = find_type(w->type);
    if (!t) {
        const char *name = sd_dtype_name((uint32_t)w->type);
        return sd_set_error(SD_ERR_INVALID_ARG, "cuda %s: weight type %s (type id %u) has no CUDA kernel",
                            op, name ? name : "unknown", (unsigned)w->type);
    }
    if (!w->data) return sd_set_error(SD_ERR_INVALID_ARG, "cuda %s: weight data is NULL", op);
    if (w->rows < 1 || w->cols < 1 || w->cols % t->elems != 0)
        return sd_set_error(SD_ERR_INVALID_ARG,
                            "cuda %s: weight of %lld x %lld (type id %u): rows and cols must be "
                            ">= 1 and cols a multiple of the block size %lld",
                            op, (long long)w->rows, (long long)w->cols, (unsigned)w->type,
                            (long long)t->elems);
    size_t need = (size_t)(w->cols / t->elems) * t->bytes;
    if (w->row_bytes < need)
        return sd_set_error(SD_ERR_INVALID_ARG,
                            "cuda %s: row_bytes %zu is less than the %zu bytes of a %lld-element row",
                            op, w->row_bytes, need, (long long)w->cols);
    if ((uintptr_t)w->data % t->align != 0 || w->row_bytes % t->align != 0)
        return sd_set_error(SD_ERR_INVALID_ARG,
                            "cuda %s: weight data %p or row_bytes %zu not aligned to %zu bytes",
                            op, w->data, w->row_bytes, t->align);
    return SD_OK;
}

extern "C" sd_status_t sd_cuda_matmul_check_args(const sd_weight_t *w, const float *x, int n,
                                                 const float *y)
{
    SD_CHECK(check_weight("matmul", w));
    if (n < 1) return sd_set_error(SD_ERR_INVALID_ARG, "cuda matmul: n = %d (must be >= 1)", n);
    if (!x || !y)
        return sd_set_error(SD_ERR_INVALID_ARG, "cuda matmul: %s is NULL", !x ? "x" : "y");
    return SD_OK;
}

extern "C" sd_status_t sd_cuda_embed_check_args(const sd_weight_t *table, const int32_t *tokens,
                                                int n, const float *out)
{
    SD_CHECK(check_weight("embed", table));
    if (n < 1) return sd_set_error(SD_ERR_INVALID_ARG, "cuda embed: n = %d (must be >= 1)", n);
    if (!tokens || !out)
        return sd_set_error(SD_ERR_INVALID_ARG, "cuda embed: %s is NULL", !tokens ? "tokens" : "out");
    return SD_OK;
}

// Launch geometry of the matmul: grid.x = row tiles (<= 2^28 for n <= INT_MAX, under the
// 2^31 - 1 limit), grid.y = feature groups capped at 65535 (the kernel loops past the cap),
// block = MM_THREADS. n >= 1, rows >= 1.
extern "C" void sd_cuda_matmul_geometry(int64_t rows, int n, unsigned grid[3], unsigned block[3])
{
    int64_t tiles = ((int64_t)n + MM_TILE - 1) / MM_TILE;
    int64_t groups = (rows + MM_WARPS - 1) / MM_WARPS;
    grid[0] = (unsigned)tiles;
    grid[1] = (unsigned)(groups < MAX_GRID_Y ? groups : MAX_GRID_Y);
    grid[2] = 1;
    block[0] = MM_THREADS, block[1] = 1, block[2] = 1;
}

// ---- host: launchers ----------------------------------------------------------------------

template <int T>
static cudaError_t launch_matmul(cudaStream_t stream, const sd_weight_t *w, const float *x, int n,
                                 const float *bias, float *y)
{
    unsigned g[3], b[3];
    sd_cuda_matmul_geometry(w->rows, n, g, b);
    return SD_LAUNCH(matmul_kernel<T>, dim3(g[0], g[1], g[2]), dim3(b[0], b[1], b[2]), 0, stream,
                     (const uint8_t *)w->data, w->row_bytes, w->rows, w->cols, x, n, bias, y);
}

template <int T>
static cudaError_t launch_embed(cudaStream_t stream, const sd_weight_t *t, const int32_t *tokens,
                                int n, float *out)
{
    return SD_LAUNCH(embed_kernel<T>, (unsigned)n, EMBED_THREADS, 0, stream, (const uint8_t *)t->data,
                     t->row_bytes, t->rows, t->cols, tokens, out);
}

cudaError_t sd_cuda_matmul(cudaStream_t stream, const sd_weight_t *w, const float *x, int n,
                           const float *bias, float *y)
{
    if (sd_cuda_matmul_check_args(w, x, n, y) != SD_OK) return cudaErrorInvalidValue;
    return find_type(w->type)->matmul(stream, w, x, n, bias, y);
}

cudaError_t sd_cuda_embed(cudaStream_t stream, const sd_weight_t *table, const int32_t *tokens,
                          int n, float *out)
{
    if (sd_cuda_embed_check_args(table, tokens, n, out) != SD_OK) return cudaErrorInvalidValue;
    return find_type(table->type)->embed(stream, table, tokens, n, out);
}

// ---- host mirrors (C references of the two kernels; weights and ids in host memory) ------

// matmul_kernel's work for one (tile, feature), lane by lane.
template <int T>
static void matmul_feature_host(const sd_weight_t *w, const float *x, int n, const float *bias,
                                float *y, int64_t i0, int64_t o)
{
    const int n_valid = n - i0 < MM_TILE ? (int)(n - i0) : MM_TILE;
    float lanes[MM_TILE][32];
    for (int lane = 0; lane < 32; lane++) {
        float acc[MM_TILE] = {0};
        accumulate_lane<T>((const uint8_t *)w->data + (size_t)o * w->row_bytes, w->cols,
                           x + i0 * w->cols, w->cols, n_valid, lane, acc);
        for (int r = 0; r < MM_TILE; r++) lanes[r][lane] = acc[r];
    }
    for (int r = 0; r < n_valid; r++) {
        float s = warp_sum_host(lanes[r]);
        y[(i0 + r) * w->rows + o] = bias ? s + bias[o] : s;
    }
}

template <int T>
static void matmul_host(const sd_weight_t *w, const float *x, int n, const float *bias, float *y)
{
    for (int64_t i0 = 0; i0 < n; i0 += MM_TILE)
        for (int64_t o = 0; o < w->rows; o++) matmul_feature_host<T>(w, x, n, bias, y, i0, o);
}

template <int T>
static void embed_host(const sd_weight_t *t, const int32_t *tokens, int n, float *out)
{
    for (int64_t i = 0; i < n; i++) {
        const bool valid = tokens[i] >= 0 && (int64_t)tokens[i] < t->rows;
        const uint8_t *row = (const uint8_t *)t->data + (valid ? (size_t)tokens[i] * t->row_bytes : 0);
        for (int64_t u = 0; u < units_per_row(t->cols); u++)
            for (int lane = 0; lane < 32; lane++) {
                const int64_t k = 32 * u + lane;
                if (k < t->cols) out[i * t->cols + k] = valid ? weight_at<T>(row, u, lane) : 0.0f;
            }
    }
}

// Same results, bit for bit, as sd_cuda_matmul on the device (test hook).
extern "C" sd_status_t sd_cuda_matmul_host(const sd_weight_t *w, const float *x, int n,
                                           const float *bias, float *y)
{
    SD_CHECK(sd_cuda_matmul_check_args(w, x, n, y));
    find_type(w->type)->matmul_host(w, x, n, bias, y);
    return SD_OK;
}

// Same results, bit for bit, as sd_cuda_embed on the device (test hook).
extern "C" sd_status_t sd_cuda_embed_host(const sd_weight_t *table, const int32_t *tokens, int n,
                                          float *out)
{
    SD_CHECK(sd_cuda_embed_check_args(table, tokens, n, out));
    find_type(table->type)->embed_host(table, tokens, n, out);
    return SD_OK;
}

// ---- the table's rows ------------------------------------------------------------------------

#define WEIGHT_TYPE(T, ELEMS, BYTES, ALIGN)                                                        \
    {T, ELEMS, BYTES, ALIGN, launch_matmul<T>, launch_embed<T>, matmul_host<T>, embed_host<T>}

static const weight_type_t weight_types[] = {
    WEIGHT_TYPE(SD_DTYPE_F32, 1, 4, 4),
    WEIGHT_TYPE(SD_DTYPE_F16, 1, 2, 2),
    WEIGHT_TYPE(SD_DTYPE_BF16, 1, 2, 2),
    WEIGHT_TYPE(SD_DTYPE_Q8_0, 32, Q8_0_BYTES, 1),
    WEIGHT_TYPE(SD_DTYPE_Q4_0, 32, Q4_0_BYTES, 1),
    WEIGHT_TYPE(SD_DTYPE_Q4_1, 32, Q4_1_BYTES, 1),
    WEIGHT_TYPE(SD_DTYPE_Q5_0, 32, Q5_0_BYTES, 1),
    WEIGHT_TYPE(SD_DTYPE_Q5_1, 32, Q5_1_BYTES, 1),
    WEIGHT_TYPE(SD_DTYPE_IQ4_NL, 32, IQ4_NL_BYTES, 1),
    WEIGHT_TYPE(SD_DTYPE_Q2_K, 256, Q2_K_BYTES, 1),
    WEIGHT_TYPE(SD_DTYPE_Q3_K, 256, Q3_K_BYTES, 1),
    WEIGHT_TYPE(SD_DTYPE_Q4_K, 256, Q4_K_BYTES, 1),
    WEIGHT_TYPE(SD_DTYPE_Q5_K, 256, Q5_K_BYTES, 1),
    WEIGHT_TYPE(SD_DTYPE_Q6_K, 256, Q6_K_BYTES, 1),
    WEIGHT_TYPE(SD_DTYPE_IQ4_XS, 256, IQ4_XS_BYTES, 1),
};

static const weight_type_t *find_type(sd_dtype_t type)
{
    for (const weight_type_t &t : weight_types)
        if (t.type == type) return &t;
    return NULL;
}
