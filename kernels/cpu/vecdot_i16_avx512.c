/* AVX-512 VNNI variant of the int16 tile kernel of vecdot_i16.c, bit-identical to it.
 *
 * Compiled on its own with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni
 * (CMakeLists.txt) and called only after vecdot_i16.c has checked the CPU for them, so the
 * rest of the library stays AVX2. The numerics are the contract of vecdot_i16.c's header
 * comment: per (weight row, activation row) and block the exact int32 half sums lo / hi,
 * acc_lo = fma((float)lo, d_b * xscale_b, acc_lo) (same for hi), Q4_1 msum =
 * fma(m_b, xsum_b, msum), result (acc_lo + acc_hi) + msum. Integer sums are exact, so only
 * their grouping differs from the AVX2 kernel; the float operations are the same ones, one
 * lane per (weight row, half). The multiply-adds are vpdpwssd (int16 pairs into int32).
 *
 * Two tile shapes, each block decoded once for up to SD_I16_TILE_X activation rows: 8-row
 * tiles (calls of 1 or 2 activation rows, and tails of <= 8 weight rows) and 16-row "wide"
 * tiles (3 or more activation rows), each described at its section below. Cost and
 * measurements: docs/design-notes.md, "CPU kernels". */
#include "kernels/cpu/quants.h"

/* Compiled where vecdot_i16.c calls it: x86-64 builds of the AVX2 kernel (I16_AVX512 there). */
#if defined(__x86_64__) && defined(__GNUC__) && defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#if !defined(__AVX512F__) || !defined(__AVX512BW__) || !defined(__AVX512VL__) || \
    !defined(__AVX512DQ__) || !defined(__AVX512VNNI__) || !defined(__F16C__) || !defined(__FMA__)
#error "vecdot_i16_avx512.c needs -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mf16c -mfma"
#endif
#include <immintrin.h>

#include "kernels/cpu/vecdot_i16_tile.h"

/* TW weight rows per tile; up to XG activation rows per pass over the weights. */
enum { TW = 8, XG = SD_I16_TILE_X };

/* 16 bytes at each of p0..p3 -> 128-bit lanes 0..3. */
KERNEL __m512i load_4x128(const char *p0, const char *p1, const char *p2, const char *p3)
{
    __m256i lo = _mm256_loadu2_m128i((const __m128i *)p1, (const __m128i *)p0);
    __m256i hi = _mm256_loadu2_m128i((const __m128i *)p3, (const __m128i *)p2);
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

/* ---- 8-row tiles: the AVX2 lane arrangement widened to four 128-bit lanes --------------
 *
 * The 16 float lanes of one zmm hold the 8 rows' lo and hi accumulators.
 *
 * Q4_0 / Q4_1 (activations in the duplicated order of vecdot_i16.c; only the first copy of
 * each quarter is read, broadcast to the four 128-bit lanes): v[4h + k] holds rows h, h + 2,
 * h + 4, h + 6 (128-bit lanes 0..3), k-th quarter, exactly the AVX2 per-lane arrangement.
 * Each lane's int32 sums are (lo, lo, hi, hi); one hadd_pairs gives lanes
 * (row 0 lo, row 0 hi, row 1 lo, row 1 hi, .., row 7 lo, row 7 hi).
 *
 * Q8_0 (natural order): v[2j + h] holds rows 2j (low 256 bits) and 2j + 1 (high 256 bits),
 * elements 16h .. 16h + 15; the activation's half h is broadcast to both 256-bit halves.
 * Two vpdpwssd per row pair give 128-bit lanes (row 2j lo, row 2j hi, row 2j+1 lo,
 * row 2j+1 hi); two hadd_pairs levels over the four pairs give lane 4L + j = row pair j,
 * 128-bit lane L: (rows 0, 2, 4, 6 lo | same hi | rows 1, 3, 5, 7 lo | same hi). */

/* Block b of the tile's TW rows as int16 lanes, decoded once for all activation rows (lane
 * arrangement: above). */
KERNEL void decode_block(sd_dtype_t type, const char *const rows[TW], int64_t b, __m512i v[8])
{
    if (type == SD_DTYPE_Q8_0) {
        UNROLL
        for (int j = 0; j < TW / 2; j++) {
            const int8_t *qa = ((const sd_block_q8_0 *)rows[2 * j] + b)->qs;
            const int8_t *qb = ((const sd_block_q8_0 *)rows[2 * j + 1] + b)->qs;
            UNROLL
            for (int h = 0; h < 2; h++)
                v[2 * j + h] = _mm512_cvtepi8_epi16(
                    _mm256_loadu2_m128i((const __m128i *)(qb + 16 * h), (const __m128i *)(qa + 16 * h)));
        }
        return;
    }
    size_t off = (size_t)b * block_bytes(type) + (type == SD_DTYPE_Q4_0 ? 2 : 4);
    const __m512i mask = _mm512_set1_epi16(0x000F);
    UNROLL
    for (int h = 0; h < 2; h++) {
        __m512i raw = load_4x128(rows[h] + off, rows[h + 2] + off, rows[h + 4] + off, rows[h + 6] + off);
        __m512i *u = v + 4 * h;
        u[0] = _mm512_and_si512(raw, mask);
        u[1] = _mm512_and_si512(_mm512_srli_epi16(raw, 4), mask);
        u[2] = _mm512_and_si512(_mm512_srli_epi16(raw, 8), mask);
        u[3] = _mm512_srli_epi16(raw, 12);
        if (type == SD_DTYPE_Q4_0)
            UNROLL
            for (int k = 0; k < 4; k++) u[k] = _mm512_sub_epi16(u[k], _mm512_set1_epi16(8));
    }
}

/* The f16 scales of block b of the TW rows in the lane order of the sums: d, and for Q4_1
 * m (zero otherwise). */
KERNEL void decode_scales(sd_dtype_t type, const char *const rows[TW], int64_t b, __m512 *d, __m512 *m)
{
    size_t off = (size_t)b * block_bytes(type);
    if (type == SD_DTYPE_Q4_1) {
        __m256i dm = _mm256_setr_epi32(
            (int)load_u32(rows[0] + off), (int)load_u32(rows[1] + off), (int)load_u32(rows[2] + off),
            (int)load_u32(rows[3] + off), (int)load_u32(rows[4] + off), (int)load_u32(rows[5] + off),
            (int)load_u32(rows[6] + off), (int)load_u32(rows[7] + off));
        __m512 f = _mm512_cvtph_ps(dm); /* d0 m0 d1 m1 .. d7 m7 */
        *d = _mm512_moveldup_ps(f);
        *m = _mm512_movehdup_ps(f);
        return;
    }
    *m = _mm512_setzero_ps();
    __m128i h = _mm_setr_epi16((short)load_u16(rows[0] + off), (short)load_u16(rows[1] + off),
                               (short)load_u16(rows[2] + off), (short)load_u16(rows[3] + off),
                               (short)load_u16(rows[4] + off), (short)load_u16(rows[5] + off),
                               (short)load_u16(rows[6] + off), (short)load_u16(rows[7] + off));
    __m512 f = _mm512_castps256_ps512(_mm256_cvtph_ps(h)); /* d0 .. d7 */
    const __m512i q4_order = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    const __m512i q8_order = _mm512_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6, 1, 3, 5, 7, 1, 3, 5, 7);
    *d = _mm512_permutexvar_ps(type == SD_DTYPE_Q8_0 ? q8_order : q4_order, f);
}

/* Per 128-bit lane: (a0 + a1, a2 + a3, b0 + b1, b2 + b3), as the AVX2 kernel's hadd_pairs. */
KERNEL __m512i hadd_pairs(__m512i a, __m512i b)
{
    __m512 fa = _mm512_castsi512_ps(a), fb = _mm512_castsi512_ps(b);
    __m512i even = _mm512_castps_si512(_mm512_shuffle_ps(fa, fb, _MM_SHUFFLE(2, 0, 2, 0)));
    __m512i odd = _mm512_castps_si512(_mm512_shuffle_ps(fa, fb, _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm512_add_epi32(even, odd);
}

/* Integer stage of one block against one activation row (xq: its quantized block): the
 * exact int32 half sums of the TW rows, lanes as described above decode_block. */
KERNEL __m512i block_sums(sd_dtype_t type, const __m512i v[8], const int16_t *xq)
{
    if (type == SD_DTYPE_Q8_0) {
        __m512i x0 = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)xq));
        __m512i x1 = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(xq + 16)));
        __m512i p[TW / 2];
        UNROLL
        for (int j = 0; j < TW / 2; j++) p[j] = _mm512_dpwssd_epi32(_mm512_madd_epi16(v[2 * j], x0), v[2 * j + 1], x1);
        return hadd_pairs(hadd_pairs(p[0], p[1]), hadd_pairs(p[2], p[3]));
    }
    __m512i p[2];
    UNROLL
    for (int k = 0; k < 4; k++) {
        __m512i xk = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(xq + 16 * k)));
        p[0] = k == 0 ? _mm512_madd_epi16(v[k], xk) : _mm512_dpwssd_epi32(p[0], v[k], xk);
        p[1] = k == 0 ? _mm512_madd_epi16(v[4 + k], xk) : _mm512_dpwssd_epi32(p[1], v[4 + k], xk);
    }
    return hadd_pairs(p[0], p[1]);
}

/* Lanes of row r's lo and hi accumulators (as described above decode_block). */
KERNEL int lane_lo(sd_dtype_t type, int r) { return type == SD_DTYPE_Q8_0 ? 8 * (r & 1) + r / 2 : 2 * r; }
KERNEL int lane_hi(sd_dtype_t type, int r) { return type == SD_DTYPE_Q8_0 ? lane_lo(type, r) + 4 : 2 * r + 1; }

/* y[r] = (acc lo + acc hi) + msum for the nw rows of a tile. */
KERNEL void store_rows(sd_dtype_t type, __m512 acc, __m512 msum, int nw, float *y)
{
    float a[16], ms[16];
    _mm512_storeu_ps(a, acc);
    _mm512_storeu_ps(ms, msum);
    for (int r = 0; r < nw; r++) y[r] = (a[lane_lo(type, r)] + a[lane_hi(type, r)]) + ms[lane_lo(type, r)];
}

/* Accumulators of one activation row: one lane per (weight row, half). */
typedef struct {
    __m512 acc, msum;
} xacc_t;

/* One tile of TW weight rows against nx <= XG activation rows, as tile_i16 of the AVX2
 * kernel: each block decoded once, into registers, and fed to every activation row;
 * accumulators in registers for a constant nx <= 2, else in st[] (L1). */
KERNEL void tile_i16(sd_dtype_t type, const char *const rows[TW], size_t row_bytes, int nw,
                     const int16_t *q, size_t ldq, const float *scale, const float *sum, int nx,
                     int64_t n, float *y, size_t ldy)
{
    int64_t nb = n / SD_QK;
    size_t xblock = ldq / (size_t)nb; /* int16 per block of an activation row */
    xacc_t st[XG];
    for (int c = 0; c < nx; c++) st[c].acc = st[c].msum = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        prefetch_tile_part(rows[0], TW, row_bytes, block_bytes(type), b);
        __m512i v[8];
        __m512 d, m;
        decode_block(type, rows, b, v);
        decode_scales(type, rows, b, &d, &m);
        _Pragma("GCC unroll 2") /* a constant nx <= 2 unrolls fully: registers */
        for (int c = 0; c < nx; c++) {
            size_t xb = (size_t)c * (size_t)nb + (size_t)b;
            __m512i s = block_sums(type, v, q + (size_t)c * ldq + (size_t)b * xblock);
            __m512 ds = _mm512_mul_ps(d, _mm512_set1_ps(scale[xb]));
            st[c].acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), ds, st[c].acc);
            if (type == SD_DTYPE_Q4_1) st[c].msum = _mm512_fmadd_ps(m, _mm512_set1_ps(sum[xb]), st[c].msum);
        }
    }
    for (int c = 0; c < nx; c++) store_rows(type, st[c].acc, st[c].msum, nw, y + (size_t)c * ldy);
}

/* ---- wide tiles: 16 weight rows, one per lane --------------------------------------- */

/* Tiles of TW16 weight rows hold row r in lane r of every register: w[j] holds one int16
 * pair of each row (w[0..7] of its lo half, w[8..15] of its hi half), multiplied with one
 * activation pair broadcast to all lanes, so the half sums accumulate in place and no
 * horizontal reduction is needed; the float stage runs once per 16 rows. The decode
 * transposes the rows (4 x 4 dwords per 128-bit lane), which pays from a few activation
 * rows on; the 8-row tiles above take the tails of 8 rows or fewer. */
enum { TW16 = 16 };

/* int16 offset in a quantized activation block of the pair that w[j] multiplies. Q4: w[j] =
 * dword i = j / 4 of nibble plane k = j % 4, elements (4i, 4i + 2) + (0, 16, 1, 17)[k]: the
 * pair at 16k + 2i of the duplicated order. Q8_0: elements (e, e + 1), e = 16h + 4i + 2p with
 * i = 2 (j / 8) + (j / 2) % 2, h = (j / 4) % 2, p = j % 2, in the natural order. */
KERNEL int pair_offset(sd_dtype_t type, int j)
{
    if (type != SD_DTYPE_Q8_0) return 16 * (j & 3) + 2 * (j >> 2);
    int i = 2 * (j >> 3) + ((j >> 1) & 1);
    return 16 * ((j >> 2) & 1) + 4 * i + 2 * (j & 1);
}

/* z[k] holds rows k, k + 4, k + 8, k + 12 in its 128-bit lanes (16 bytes each) -> t[i] lane
 * r = dword i of row r. */
KERNEL void transpose_rows(const __m512i z[4], __m512i t[4])
{
    __m512i a = _mm512_unpacklo_epi32(z[0], z[1]), b = _mm512_unpackhi_epi32(z[0], z[1]);
    __m512i c = _mm512_unpacklo_epi32(z[2], z[3]), d = _mm512_unpackhi_epi32(z[2], z[3]);
    t[0] = _mm512_unpacklo_epi64(a, c);
    t[1] = _mm512_unpackhi_epi64(a, c);
    t[2] = _mm512_unpacklo_epi64(b, d);
    t[3] = _mm512_unpackhi_epi64(b, d);
}

/* 16 bytes at offset off of each of the 16 rows, transposed: t[i] lane r = dword i of row r. */
KERNEL void load_rows16(const char *const rows[TW16], size_t off, __m512i t[4])
{
    __m512i z[4];
    UNROLL
    for (int k = 0; k < 4; k++) z[k] = load_4x128(rows[k] + off, rows[k + 4] + off, rows[k + 8] + off, rows[k + 12] + off);
    transpose_rows(z, t);
}

/* Block b of the 16 rows: w[j] as pair_offset describes. Q4: the nibble planes of the AVX2
 * kernel per dword. Q8_0: bytes (b0, b1) and (b2, b3) of each dword moved to the high bytes
 * of a word pair and shifted down with sign. */
KERNEL void decode_block16(sd_dtype_t type, const char *const rows[TW16], int64_t b, __m512i w[16])
{
    size_t off = (size_t)b * block_bytes(type);
    __m512i t[4];
    if (type == SD_DTYPE_Q8_0) {
        const __m512i pair0 = _mm512_set4_epi32(0x0D800C80, 0x09800880, 0x05800480, 0x01800080);
        const __m512i pair1 = _mm512_set4_epi32(0x0F800E80, 0x0B800A80, 0x07800680, 0x03800280);
        UNROLL
        for (int h = 0; h < 2; h++) {
            load_rows16(rows, off + 2 + 16 * (size_t)h, t);
            UNROLL
            for (int i = 0; i < 4; i++) {
                int j = 8 * (i >> 1) + 4 * h + 2 * (i & 1);
                w[j] = _mm512_srai_epi16(_mm512_shuffle_epi8(t[i], pair0), 8);
                w[j + 1] = _mm512_srai_epi16(_mm512_shuffle_epi8(t[i], pair1), 8);
            }
        }
        return;
    }
    load_rows16(rows, off + (type == SD_DTYPE_Q4_0 ? 2 : 4), t);
    const __m512i mask = _mm512_set1_epi16(0x000F);
    UNROLL
    for (int i = 0; i < 4; i++) {
        __m512i *u = w + 4 * i;
        u[0] = _mm512_and_si512(t[i], mask);
        u[1] = _mm512_and_si512(_mm512_srli_epi16(t[i], 4), mask);
        u[2] = _mm512_and_si512(_mm512_srli_epi16(t[i], 8), mask);
        u[3] = _mm512_srli_epi16(t[i], 12);
        if (type == SD_DTYPE_Q4_0)
            UNROLL
            for (int k = 0; k < 4; k++) u[k] = _mm512_sub_epi16(u[k], _mm512_set1_epi16(8));
    }
}

/* d (and for Q4_1 m, else zero) of block b of the 16 rows, lane r = row r: the first dword
 * of each block starts with d (then m for Q4_1). */
KERNEL void decode_scales16(sd_dtype_t type, const char *const rows[TW16], int64_t b, __m512 *d, __m512 *m)
{
    size_t off = (size_t)b * block_bytes(type);
    __m512i dm = _mm512_setr_epi32(
        (int)load_u32(rows[0] + off), (int)load_u32(rows[1] + off), (int)load_u32(rows[2] + off),
        (int)load_u32(rows[3] + off), (int)load_u32(rows[4] + off), (int)load_u32(rows[5] + off),
        (int)load_u32(rows[6] + off), (int)load_u32(rows[7] + off), (int)load_u32(rows[8] + off),
        (int)load_u32(rows[9] + off), (int)load_u32(rows[10] + off), (int)load_u32(rows[11] + off),
        (int)load_u32(rows[12] + off), (int)load_u32(rows[13] + off), (int)load_u32(rows[14] + off),
        (int)load_u32(rows[15] + off));
    *d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(dm));
    *m = type == SD_DTYPE_Q4_1 ? _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(dm, 16)))
                               : _mm512_setzero_ps();
}

/* Integer stage of one block of the 16 rows against one activation row: exact int32 lo and
 * hi sums, lane r = row r (four chains of four multiply-adds). */
KERNEL void block_sums16(sd_dtype_t type, const __m512i w[16], const int16_t *xq, __m512i *lo, __m512i *hi)
{
    __m512i s[4];
    UNROLL
    for (int g = 0; g < 4; g++) {
        s[g] = _mm512_madd_epi16(w[4 * g], _mm512_set1_epi32((int)load_u32(xq + pair_offset(type, 4 * g))));
        UNROLL
        for (int t = 1; t < 4; t++)
            s[g] = _mm512_dpwssd_epi32(s[g], w[4 * g + t],
                                       _mm512_set1_epi32((int)load_u32(xq + pair_offset(type, 4 * g + t))));
    }
    *lo = _mm512_add_epi32(s[0], s[1]);
    *hi = _mm512_add_epi32(s[2], s[3]);
}

/* Accumulators of one activation row against 16 weight rows, lane r = row r. */
typedef struct {
    __m512 lo, hi, msum;
} xacc16_t;

/* One wide tile against nx <= XG activation rows, as tile_i16 (accumulators in st[]). */
KERNEL void tile16_i16(sd_dtype_t type, const char *const rows[TW16], size_t row_bytes, int nw,
                       const int16_t *q, size_t ldq, const float *scale, const float *sum, int nx,
                       int64_t n, float *y, size_t ldy)
{
    int64_t nb = n / SD_QK;
    size_t xblock = ldq / (size_t)nb;
    xacc16_t st[XG];
    for (int c = 0; c < nx; c++) st[c].lo = st[c].hi = st[c].msum = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        prefetch_tile_part(rows[0], TW16, row_bytes, block_bytes(type), b);
        __m512i w[16];
        __m512 d, m;
        decode_block16(type, rows, b, w);
        decode_scales16(type, rows, b, &d, &m);
        for (int c = 0; c < nx; c++) {
            size_t xb = (size_t)c * (size_t)nb + (size_t)b;
            __m512i lo, hi;
            block_sums16(type, w, q + (size_t)c * ldq + (size_t)b * xblock, &lo, &hi);
            __m512 ds = _mm512_mul_ps(d, _mm512_set1_ps(scale[xb]));
            st[c].lo = _mm512_fmadd_ps(_mm512_cvtepi32_ps(lo), ds, st[c].lo);
            st[c].hi = _mm512_fmadd_ps(_mm512_cvtepi32_ps(hi), ds, st[c].hi);
            if (type == SD_DTYPE_Q4_1) st[c].msum = _mm512_fmadd_ps(m, _mm512_set1_ps(sum[xb]), st[c].msum);
        }
    }
    __mmask16 keep = (__mmask16)((1u << nw) - 1u);
    for (int c = 0; c < nx; c++)
        _mm512_mask_storeu_ps(y + (size_t)c * ldy, keep,
                              _mm512_add_ps(_mm512_add_ps(st[c].lo, st[c].hi), st[c].msum));
}

/* Every tile of the weight range against every activation row, XG activation rows per
 * pass over the weights. */
KERNEL void rows_i16(sd_dtype_t type, const char *w, size_t row_bytes, int64_t nw, const int16_t *q,
                     size_t ldq, const float *scale, const float *sum, int nx, int64_t n, float *y,
                     size_t ldy)
{
    int64_t nb = n / SD_QK;
    for (int c0 = 0; c0 < nx; c0 += XG) {
        int ng = nx - c0 < XG ? nx - c0 : XG;
        const int16_t *qc = q + (size_t)c0 * ldq;
        const float *sc = scale + (size_t)c0 * (size_t)nb, *su = sum + (size_t)c0 * (size_t)nb;
        for (int64_t r0 = 0; r0 < nw;) {
            /* wide tiles from 3 activation rows on (the transposes cost more than they save
             * below), 8-row tiles for tails of 8 rows or fewer */
            int wide = ng >= 3 && nw - r0 > TW, cap = wide ? TW16 : TW;
            int tw = nw - r0 < cap ? (int)(nw - r0) : cap;
            const char *rows[TW16]; /* rows past tw repeat the last one (computed, never stored) */
            for (int r = 0; r < cap; r++) rows[r] = w + (size_t)(r0 + (r < tw ? r : tw - 1)) * row_bytes;
            float *yc = y + (size_t)c0 * ldy + (size_t)r0;
            if (wide)
                tile16_i16(type, rows, row_bytes, tw, qc, ldq, sc, su, ng, n, yc, ldy);
            else if (ng == 1)
                tile_i16(type, rows, row_bytes, tw, qc, ldq, sc, su, 1, n, yc, ldy);
            else if (ng == 2)
                tile_i16(type, rows, row_bytes, tw, qc, ldq, sc, su, 2, n, yc, ldy);
            else
                tile_i16(type, rows, row_bytes, tw, qc, ldq, sc, su, ng, n, yc, ldy);
            r0 += tw;
        }
    }
}

void sd_vec_dot_rows_i16_avx512(sd_dtype_t type, const void *w, size_t row_bytes, int64_t nw,
                                const int16_t *q, const float *scale, const float *sum, int nx,
                                int64_t n, float *y, size_t ldy)
{
    size_t ldq = (size_t)sd_act_i16_len(type, n);
    switch (type) {
    case SD_DTYPE_Q8_0: rows_i16(SD_DTYPE_Q8_0, w, row_bytes, nw, q, ldq, scale, sum, nx, n, y, ldy); break;
    case SD_DTYPE_Q4_0: rows_i16(SD_DTYPE_Q4_0, w, row_bytes, nw, q, ldq, scale, sum, nx, n, y, ldy); break;
    case SD_DTYPE_Q4_1: rows_i16(SD_DTYPE_Q4_1, w, row_bytes, nw, q, ldq, scale, sum, nx, n, y, ldy); break;
    default: break; /* callers check sd_dot_i16_supported */
    }
}

#else
typedef int sd_vecdot_i16_avx512_empty; /* no AVX2 kernel here: nothing to vary */
#endif
