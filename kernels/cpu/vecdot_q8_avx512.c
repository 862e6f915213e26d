/* AVX-512 VNNI variant of the int8 matmul kernel (vecdot_q8_tile.h), bit-identical to it.
 *
 * Compiled on its own with the AVX-512 flags (CMakeLists.txt) and called only after the CPU
 * check of vecdot_i16.c. Same tile and float stage as the AVX2 kernel; the integer stage
 * differs where VNNI pays: 32-element types take vpdpbusd (u8 x s8, four products per int32
 * lane, no int16 step: IQ4_NL values enter as value + 128 and the tile subtracts 128 times
 * the block sum), super-block types take 64 elements per zmm, maddubs then vpdpwssd with
 * the sub-block scales. The integer sums are exact, so only their grouping differs. */
#include "kernels/cpu/quants.h"

#if defined(__x86_64__) && defined(__GNUC__) && defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#if !defined(__AVX512F__) || !defined(__AVX512BW__) || !defined(__AVX512VL__) || !defined(__AVX512VNNI__)
#error "vecdot_q8_avx512.c needs -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni"
#endif
#define Q8_AVX512 1
#include "kernels/cpu/vecdot_q8_tile.h"

/* Scale shuffles of chunk c (elements 64c .. 64c + 63): 128-bit lane L gets int16 scale
 * (4c + L) % 8 of its source (s0..s7 for c < 2, s8..s15 after) in all 8 words. */
#define SEL_LANES(c) SCALE_SEL8((4 * (c)) % 8), SCALE_SEL8((4 * (c) + 1) % 8), SCALE_SEL8((4 * (c) + 2) % 8), \
                     SCALE_SEL8((4 * (c) + 3) % 8)
static const int8_t scale_sel512[4][64] __attribute__((aligned(64))) = {{SEL_LANES(0)}, {SEL_LANES(1)}, {SEL_LANES(2)},
                                                                         {SEL_LANES(3)}};

/* Integer stage of one super-block against NX activation rows, 64 elements per step: the
 * two 32-element halves of k_decode64 side by side in a zmm, their scale vectors likewise. */
KERNEL void k_block_avx512(sd_dtype_t type, const char *blk, const xblock_t *xb, int NX, __m256i *s, __m256i *m)
{
    kscales_t ks = k_scales(type, blk);
    kscales16_t s16 = k_scales16(ks.sc);
    __m512i src[2] = {_mm512_broadcast_i64x4(s16.lo), _mm512_broadcast_i64x4(s16.hi)};
    __m512i acc[XR];
    UNROLL
    for (int x = 0; x < NX; x++) acc[x] = _mm512_setzero_si512();
    UNROLL
    for (int c = 0; c < 4; c++) {
        __m256i u[2];
        k_decode64(type, blk, c, u);
        __m512i w = _mm512_inserti64x4(_mm512_castsi256_si512(u[0]), u[1], 1);
        __m512i sc = _mm512_shuffle_epi8(src[c / 2], _mm512_load_si512((const void *)scale_sel512[c]));
        __m512i wa = type == SD_DTYPE_IQ4_XS ? _mm512_abs_epi8(w) : w;
        __mmask64 neg = type == SD_DTYPE_IQ4_XS ? _mm512_movepi8_mask(w) : 0;
        UNROLL
        for (int x = 0; x < NX; x++) {
            __m512i xv = _mm512_loadu_si512((const void *)(xb[x].q + 64 * c));
            if (type == SD_DTYPE_IQ4_XS) xv = _mm512_mask_sub_epi8(xv, neg, _mm512_setzero_si512(), xv);
            acc[x] = _mm512_dpwssd_epi32(acc[x], _mm512_maddubs_epi16(wa, xv), sc);
        }
    }
    UNROLL
    for (int x = 0; x < NX; x++) s[x] = _mm256_add_epi32(_mm512_castsi512_si256(acc[x]), _mm512_extracti64x4_epi64(acc[x], 1));
    k_offsets_mins(type, &ks, xb, NX, s, m);
}

/* ---- IQ4_NL, few activation rows (decode, verification) ------------------------------------
 *
 * NL16 = 16 weight rows per step, transposed in registers per block instead of through the
 * wide kernel's buffer: zmm A_j holds rows j, j + 4, j + 8, j + 12 (a block's 16 nibble bytes
 * per 128-bit lane), a 4x4 dword transpose per lane gives T_k = dword k of rows 0..15 in
 * order, whose low / high nibbles are elements 4k .. 4k + 3 / 16 + 4k .. 16 + 4k + 3. The
 * table (values + 128) is applied with vpshufb and each activation row runs 8 vpdpbusd with
 * its broadcast dwords: lane r is weight row r's exact sum, no horizontal sums. */
enum { NL16 = 16, NL16_X = 8 };

/* The IQ4_NL values + 128 (unsigned) in every 128-bit lane. */
KERNEL __m512i nl16_table(void)
{
    return _mm512_broadcast_i32x4(_mm_xor_si128(_mm_loadu_si128((const __m128i *)sd_iq4_values), _mm_set1_epi8((char)0x80)));
}

/* The 16 rows' blocks at byte offset off: u[g] = elements 4g .. 4g + 3 (values + 128) of
 * rows 0..15, one dword per row; dw = their f16 scales. */
KERNEL void nl16_decode(const char *const rows[NL16], size_t off, __m512i table, __m512i u[8], __m512 *dw)
{
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    __m512i a[4];
    UNROLL
    for (int j = 0; j < 4; j++) {
        __m512i v = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(rows[j] + off + 2)));
        v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(rows[j + 4] + off + 2)), 1);
        v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(rows[j + 8] + off + 2)), 2);
        a[j] = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(rows[j + 12] + off + 2)), 3);
    }
    __m512i t0 = _mm512_unpacklo_epi32(a[0], a[1]), t1 = _mm512_unpackhi_epi32(a[0], a[1]);
    __m512i t2 = _mm512_unpacklo_epi32(a[2], a[3]), t3 = _mm512_unpackhi_epi32(a[2], a[3]);
    __m512i tk[4] = {_mm512_unpacklo_epi64(t0, t2), _mm512_unpackhi_epi64(t0, t2), _mm512_unpacklo_epi64(t1, t3),
                     _mm512_unpackhi_epi64(t1, t3)};
    UNROLL
    for (int k = 0; k < 4; k++) {
        u[k] = _mm512_shuffle_epi8(table, _mm512_and_si512(tk[k], m4));
        u[4 + k] = _mm512_shuffle_epi8(table, _mm512_and_si512(_mm512_srli_epi16(tk[k], 4), m4));
    }
    __m256i h = _mm256_setr_epi16((short)load_u16(rows[0] + off), (short)load_u16(rows[1] + off),
                                  (short)load_u16(rows[2] + off), (short)load_u16(rows[3] + off),
                                  (short)load_u16(rows[4] + off), (short)load_u16(rows[5] + off),
                                  (short)load_u16(rows[6] + off), (short)load_u16(rows[7] + off),
                                  (short)load_u16(rows[8] + off), (short)load_u16(rows[9] + off),
                                  (short)load_u16(rows[10] + off), (short)load_u16(rows[11] + off),
                                  (short)load_u16(rows[12] + off), (short)load_u16(rows[13] + off),
                                  (short)load_u16(rows[14] + off), (short)load_u16(rows[15] + off));
    *dw = _mm512_cvtph_ps(h);
}

/* Block b of 16 rows against NX activation rows (x: q + x n, d + x nb, bsum + x n / 16). */
KERNEL void nl16_block(const char *const rows[NL16], int64_t b, __m512i table, const int8_t *q, const float *d,
                       const int16_t *bsum, int64_t n, int NX, __m512 *acc)
{
    __m512i u[8];
    __m512 dw;
    nl16_decode(rows, (size_t)b * sizeof(sd_block_iq4_nl), table, u, &dw);
    __m512i s[NL16_X];
    UNROLL
    for (int x = 0; x < NX; x++) s[x] = _mm512_setzero_si512();
    UNROLL
    for (int g = 0; g < 8; g++) {
        UNROLL
        for (int x = 0; x < NX; x++)
            s[x] = _mm512_dpbusd_epi32(s[x], u[g], _mm512_set1_epi32((int)load_u32(q + (size_t)x * (size_t)n + 32 * b + 4 * g)));
    }
    const int64_t nb = n / SD_QK;
    UNROLL
    for (int x = 0; x < NX; x++) {
        const int16_t *bs = bsum + (size_t)x * (size_t)(n / 16) + 2 * b;
        __m512i sv = _mm512_sub_epi32(s[x], _mm512_set1_epi32(128 * (bs[0] + bs[1])));
        __m512 dx = _mm512_set1_ps(d[(size_t)x * (size_t)nb + (size_t)b]);
        acc[x] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sv), _mm512_mul_ps(dw, dx), acc[x]);
    }
}

/* 16 rows (rows past tw repeat the last; never stored) against NX <= NL16_X activation rows. */
KERNEL void nl16_tile(const char *const rows[NL16], size_t row_bytes, int tw, const int8_t *q, const float *d,
                      const int16_t *bsum, int64_t n, int NX, float *y, size_t ldy)
{
    const __m512i table = nl16_table();
    const size_t bb = sizeof(sd_block_iq4_nl);
    __m512 acc[NL16_X];
    UNROLL
    for (int x = 0; x < NX; x++) acc[x] = _mm512_setzero_ps();
    for (int64_t b = 0; b < n / SD_QK; b++) {
        if (b % 4 == 0) prefetch_tile_part(rows[0], NL16, row_bytes, 4 * bb, b / 4); /* 4 blocks at once */
        nl16_block(rows, b, table, q, d, bsum, n, NX, acc);
    }
    for (int x = 0; x < NX; x++) _mm512_mask_storeu_ps(y + (size_t)x * ldy, (__mmask16)((1u << tw) - 1), acc[x]);
}

/* IQ4_NL against nx activation rows, in passes of at most NL16_X rows of balanced sizes. */
static void nl16_rows(const char *w, size_t row_bytes, int64_t nw, const int8_t *q, const float *d,
                      const int16_t *bsum, int nx, int64_t n, float *y, size_t ldy)
{
    const int64_t nb = n / SD_QK;
    int passes = (nx + NL16_X - 1) / NL16_X;
    for (int p = 0, c0 = 0; p < passes; p++) {
        int ng = (nx - c0) / (passes - p);
        const int8_t *qc = q + (size_t)c0 * (size_t)n;
        const float *dc = d + (size_t)c0 * (size_t)nb;
        const int16_t *bc = bsum + (size_t)c0 * (size_t)(n / 16);
        for (int64_t r0 = 0; r0 < nw; r0 += NL16) {
            int tw = nw - r0 < NL16 ? (int)(nw - r0) : NL16;
            const char *rows[NL16];
            for (int r = 0; r < NL16; r++) rows[r] = w + (size_t)(r0 + (r < tw ? r : tw - 1)) * row_bytes;
            float *yc = y + (size_t)c0 * ldy + (size_t)r0;
            switch (ng) {
            case 1: nl16_tile(rows, row_bytes, tw, qc, dc, bc, n, 1, yc, ldy); break;
            case 2: nl16_tile(rows, row_bytes, tw, qc, dc, bc, n, 2, yc, ldy); break;
            case 3: nl16_tile(rows, row_bytes, tw, qc, dc, bc, n, 3, yc, ldy); break;
            case 4: nl16_tile(rows, row_bytes, tw, qc, dc, bc, n, 4, yc, ldy); break;
            case 5: nl16_tile(rows, row_bytes, tw, qc, dc, bc, n, 5, yc, ldy); break;
            case 6: nl16_tile(rows, row_bytes, tw, qc, dc, bc, n, 6, yc, ldy); break;
            case 7: nl16_tile(rows, row_bytes, tw, qc, dc, bc, n, 7, yc, ldy); break;
            default: nl16_tile(rows, row_bytes, tw, qc, dc, bc, n, 8, yc, ldy); break;
            }
        }
        c0 += ng;
    }
}

/* ---- the wide kernel (many activation rows: prefill) ----------------------------------------
 *
 * WW = 16 weight rows are decoded once per chunk of blocks into a transposed buffer (group of
 * 4 elements x weight row, unsigned bytes), then every activation row runs vpdpbusd against
 * its broadcast dwords: lane r is weight row r's exact integer sum, with no horizontal sums.
 * Super-block types sum each 16-element sub-block apart and multiply it by the row's scale
 * (vpmulld); offsets and mins come from the activations' sums of 16 (vpdpwssd with scale /
 * min pairs). The float stage is the contract's, lane r for weight row r. */
/* From WIDE_MIN_ROWS activation rows on (super-block types: WIDE_MIN_ROWS_K, their decode and
 * transpose cost more) the wide kernel beats q8_rows (matmul_rows, this machine). */
enum { WW = 16, WB = 32, WBK = 2, WX = 64, WIDE_MIN_ROWS = 16, WIDE_MIN_ROWS_K = 32 };
_Static_assert((int)WW == (int)NL16, "wide_decode hands its 16 rows to nl16_decode");

typedef struct {
    uint32_t u[WB][8][WW]; /* block, group of 4 elements, weight row: the 4 unsigned weights */
    float dw[WB][WW], dmw[WB][WW];
} wide_tile_t;

typedef struct {
    uint32_t u[WBK][64][WW];                   /* as wide_tile_t's, 64 groups per block */
    int32_t sc[WBK][16][WW];                   /* sub-block of 16 elements, row: its scale */
    uint32_t scp[WBK][8][WW], mnp[WBK][8][WW]; /* scales / mins of sub-blocks 2k, 2k + 1 as int16 pairs */
    float dw[WBK][WW], dmw[WBK][WW];
} wide_k_tile_t;

/* The unsigned weights' offset of a super-block type (IQ4_XS: value + 128). */
KERNEL int wide_k_offset(sd_dtype_t t)
{
    return t == SD_DTYPE_Q3_K ? 4 : t == SD_DTYPE_Q6_K ? 32 : t == SD_DTYPE_IQ4_XS ? 128 : 0;
}

/* The 8 dwords of v into u[g0 + g][r]. */
KERNEL void wide_put(uint32_t (*u)[WW], int g0, int r, __m256i v)
{
    uint32_t a[8];
    _mm256_storeu_si256((__m256i *)a, v);
    for (int g = 0; g < 8; g++) u[g0 + g][r] = a[g];
}

/* f16 d (and dmw: the min's f16, negated for super-block types) of a block. */
KERNEL void wide_scales_f(sd_dtype_t type, const char *blk, float *dw, float *dmw)
{
    *dw = sd_f16_to_f32(load_u16(blk + q8_d_offset(type)));
    if (q8_has_min(type)) {
        float m = sd_f16_to_f32(load_u16(blk + q8_dmin_offset(type)));
        *dmw = q8_small(type) ? m : -m;
    }
}

/* Blocks b0 .. b0 + nb - 1 of the tile's rows into t. */
KERNEL void wide_decode(sd_dtype_t type, const char *const rows[WW], int64_t b0, int nb, wide_tile_t *t)
{
    const size_t bb = sd_dtype_block_bytes(type);
    if (type == SD_DTYPE_IQ4_NL) { /* transposed in registers (nl16_decode) */
        const __m512i table = nl16_table();
        for (int b = 0; b < nb; b++) {
            __m512i u[8];
            __m512 dw;
            nl16_decode(rows, (size_t)(b0 + b) * bb, table, u, &dw);
            for (int g = 0; g < 8; g++) _mm512_storeu_si512((void *)t->u[b][g], u[g]);
            _mm512_storeu_ps(t->dw[b], dw);
        }
        return;
    }
    for (int b = 0; b < nb; b++)
        for (int r = 0; r < WW; r++) {
            const char *blk = rows[r] + (size_t)(b0 + b) * bb;
            wide_put(t->u[b], 0, r, small_decode(type, blk));
            wide_scales_f(type, blk, &t->dw[b][r], &t->dmw[b][r]);
        }
}

KERNEL void wide_k_decode(sd_dtype_t type, const char *const rows[WW], int64_t b0, int nb, wide_k_tile_t *t)
{
    const size_t bb = sd_dtype_block_bytes(type);
    for (int b = 0; b < nb; b++)
        for (int r = 0; r < WW; r++) {
            const char *blk = rows[r] + (size_t)(b0 + b) * bb;
            kscales_t ks = k_scales(type, blk);
            int8_t sc[16], mn[16];
            _mm_storeu_si128((__m128i *)sc, ks.sc);
            _mm_storeu_si128((__m128i *)mn, ks.mn);
            for (int j = 0; j < 16; j++) t->sc[b][j][r] = sc[j];
            for (int k = 0; k < 8; k++) {
                t->scp[b][k][r] = (uint16_t)sc[2 * k] | (uint32_t)(uint16_t)sc[2 * k + 1] << 16;
                t->mnp[b][k][r] = (uint16_t)mn[2 * k] | (uint32_t)(uint16_t)mn[2 * k + 1] << 16;
            }
            for (int c = 0; c < 4; c++) {
                __m256i u[2];
                k_decode64(type, blk, c, u);
                for (int k = 0; k < 2; k++) {
                    if (type == SD_DTYPE_IQ4_XS) u[k] = _mm256_xor_si256(u[k], _mm256_set1_epi8((char)0x80));
                    wide_put(t->u[b], 16 * c + 8 * k, r, u[k]);
                }
            }
            wide_scales_f(type, blk, &t->dw[b][r], &t->dmw[b][r]);
        }
}

/* The contract's float stage of one block for one activation row (lane r: weight row r). */
KERNEL __m512 wide_fma(sd_dtype_t type, __m512i sv, __m512i mv, const float *dw, const float *dmw, float dx, __m512 acc)
{
    __m512 dxv = _mm512_set1_ps(dx);
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sv), _mm512_mul_ps(_mm512_loadu_ps(dw), dxv), acc);
    if (q8_has_min(type)) acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(mv), _mm512_mul_ps(_mm512_loadu_ps(dmw), dxv), acc);
    return acc;
}

/* NX activation rows (row x: q + x n, d + x nb_all, bsum + x n / 16, acc[x]) against nb
 * decoded blocks. */
KERNEL void wide_run(sd_dtype_t type, const wide_tile_t *t, int nb, const int8_t *q, const float *d,
                     const int16_t *bsum, int64_t n, int64_t nb_all, int NX, __m512 *acc)
{
    const int off = small_offset(type);
    for (int b = 0; b < nb; b++) {
        __m512i s0[4], s1[4];
        UNROLL
        for (int x = 0; x < NX; x++) s0[x] = s1[x] = _mm512_setzero_si512();
        UNROLL
        for (int g = 0; g < 8; g += 2) {
            __m512i w0 = _mm512_loadu_si512((const void *)t->u[b][g]), w1 = _mm512_loadu_si512((const void *)t->u[b][g + 1]);
            UNROLL
            for (int x = 0; x < NX; x++) {
                const int8_t *xq = q + (size_t)x * (size_t)n + 32 * b + 4 * g;
                s0[x] = _mm512_dpbusd_epi32(s0[x], w0, _mm512_set1_epi32((int)load_u32(xq)));
                s1[x] = _mm512_dpbusd_epi32(s1[x], w1, _mm512_set1_epi32((int)load_u32(xq + 4)));
            }
        }
        UNROLL
        for (int x = 0; x < NX; x++) {
            const int16_t *bs = bsum + (size_t)x * (size_t)(n / 16) + 2 * b;
            int xsum = bs[0] + bs[1];
            __m512i sv = _mm512_add_epi32(s0[x], s1[x]);
            if (off) sv = _mm512_sub_epi32(sv, _mm512_set1_epi32(off * xsum));
            acc[x] = wide_fma(type, sv, _mm512_set1_epi32(xsum), t->dw[b], t->dmw[b], d[(size_t)x * (size_t)nb_all + (size_t)b],
                              acc[x]);
        }
    }
}

KERNEL void wide_k_run(sd_dtype_t type, const wide_k_tile_t *t, int nb, const int8_t *q, const float *d,
                       const int16_t *bsum, int64_t n, int64_t nb_all, int NX, __m512 *acc)
{
    const int off = wide_k_offset(type), shift = off == 4 ? 2 : off == 32 ? 5 : 7;
    for (int b = 0; b < nb; b++) {
        __m512i s[4], m[4];
        UNROLL
        for (int x = 0; x < NX; x++) s[x] = m[x] = _mm512_setzero_si512();
        for (int j = 0; j < 16; j++) { /* sub-block j: elements 16 j .. 16 j + 15 */
            __m512i p[4];
            UNROLL
            for (int x = 0; x < NX; x++) p[x] = _mm512_setzero_si512();
            UNROLL
            for (int g = 0; g < 4; g++) {
                __m512i wv = _mm512_loadu_si512((const void *)t->u[b][4 * j + g]);
                UNROLL
                for (int x = 0; x < NX; x++) {
                    const int8_t *xq = q + (size_t)x * (size_t)n + 256 * b + 16 * j + 4 * g;
                    p[x] = _mm512_dpbusd_epi32(p[x], wv, _mm512_set1_epi32((int)load_u32(xq)));
                }
            }
            __m512i scv = _mm512_loadu_si512((const void *)t->sc[b][j]);
            UNROLL
            for (int x = 0; x < NX; x++) s[x] = _mm512_add_epi32(s[x], _mm512_mullo_epi32(p[x], scv));
        }
        UNROLL
        for (int x = 0; x < NX; x++) {
            const int16_t *bs = bsum + (size_t)x * (size_t)(n / 16) + 16 * b;
            if (off) {
                __m512i o = _mm512_setzero_si512();
                for (int k = 0; k < 8; k++)
                    o = _mm512_dpwssd_epi32(o, _mm512_loadu_si512((const void *)t->scp[b][k]),
                                            _mm512_set1_epi32((int)load_u32(bs + 2 * k)));
                s[x] = _mm512_sub_epi32(s[x], _mm512_slli_epi32(o, (unsigned)shift));
            }
            if (q8_has_min(type))
                for (int k = 0; k < 8; k++)
                    m[x] = _mm512_dpwssd_epi32(m[x], _mm512_loadu_si512((const void *)t->mnp[b][k]),
                                               _mm512_set1_epi32((int)load_u32(bs + 2 * k)));
            acc[x] = wide_fma(type, s[x], m[x], t->dw[b], t->dmw[b], d[(size_t)x * (size_t)nb_all + (size_t)b], acc[x]);
        }
    }
}

/* One wide tile's chunk of blocks against activation rows x0 .. x0 + nxg - 1, 4 at a time. */
#define WIDE_CHUNK(RUN, T)                                                                                        \
    for (int x = 0; x < nxg; x += 4) {                                                                            \
        size_t xo = (size_t)(x0 + x);                                                                             \
        const int8_t *qx = q + xo * (size_t)n + (size_t)(b0 * blk);                                              \
        const float *dx = d + xo * (size_t)nb_all + (size_t)b0;                                                   \
        const int16_t *bx = bsum + xo * (size_t)(n / 16) + (size_t)(b0 * blk / 16);                              \
        switch (nxg - x) {                                                                                        \
        case 1: RUN(type, T, nb, qx, dx, bx, n, nb_all, 1, acc + x); break;                                       \
        case 2: RUN(type, T, nb, qx, dx, bx, n, nb_all, 2, acc + x); break;                                       \
        case 3: RUN(type, T, nb, qx, dx, bx, n, nb_all, 3, acc + x); break;                                       \
        default: RUN(type, T, nb, qx, dx, bx, n, nb_all, 4, acc + x); break;                                      \
        }                                                                                                         \
    }

/* Blocks b0 .. b0 + nb - 1 of 16 rows (from row r0 of w, the last repeated) towards L2: the
 * chunk decoded next, fetched while the current one runs (16 strided streams, which the
 * hardware prefetcher does not follow far enough). */
KERNEL void wide_prefetch(const char *w, size_t row_bytes, int64_t nw, int64_t r0, size_t bb, int64_t b0, int nb)
{
    for (int64_t r = r0; r < r0 + WW; r++) {
        const char *p = w + (size_t)(r < nw ? r : nw - 1) * row_bytes + (size_t)b0 * bb;
        for (size_t o = 0; o < (size_t)nb * bb; o += 64) _mm_prefetch(p + o, _MM_HINT_T1);
    }
}

/* Every wide tile of the weight range against every activation row. */
KERNEL void wide_rows_type(sd_dtype_t type, const char *w, size_t row_bytes, int64_t nw, const int8_t *q,
                           const float *d, const int16_t *bsum, int nx, int64_t n, float *y, size_t ldy)
{
    const int64_t blk = q8_blk(type), nb_all = n / blk, chunk = q8_small(type) ? WB : WBK;
    union {
        wide_tile_t s;
        wide_k_tile_t k;
    } t;
    __m512 acc[WX];
    for (int64_t r0 = 0; r0 < nw; r0 += WW) {
        int tw = nw - r0 < WW ? (int)(nw - r0) : WW;
        const char *rows[WW];
        for (int r = 0; r < WW; r++) rows[r] = w + (size_t)(r0 + (r < tw ? r : tw - 1)) * row_bytes;
        for (int x0 = 0; x0 < nx; x0 += WX) {
            int nxg = nx - x0 < WX ? nx - x0 : WX;
            for (int x = 0; x < nxg; x++) acc[x] = _mm512_setzero_ps();
            for (int64_t b0 = 0; b0 < nb_all; b0 += chunk) {
                int nb = nb_all - b0 < chunk ? (int)(nb_all - b0) : (int)chunk;
                if (b0 + chunk < nb_all) /* the next chunk of these rows, or the next rows' first */
                    wide_prefetch(w, row_bytes, nw, r0, sd_dtype_block_bytes(type), b0 + chunk,
                                  (int)(nb_all - b0 - chunk < chunk ? nb_all - b0 - chunk : chunk));
                else if (r0 + WW < nw && x0 + WX >= nx)
                    wide_prefetch(w, row_bytes, nw, r0 + WW, sd_dtype_block_bytes(type), 0,
                                  (int)(nb_all < chunk ? nb_all : chunk));
                if (q8_small(type)) {
                    wide_decode(type, rows, b0, nb, &t.s);
                    WIDE_CHUNK(wide_run, &t.s)
                } else {
                    wide_k_decode(type, rows, b0, nb, &t.k);
                    WIDE_CHUNK(wide_k_run, &t.k)
                }
            }
            for (int x = 0; x < nxg; x++)
                _mm512_mask_storeu_ps(y + (size_t)(x0 + x) * ldy + (size_t)r0, (__mmask16)((1u << tw) - 1), acc[x]);
        }
    }
}
#undef WIDE_CHUNK

void sd_vec_dot_rows_q8_avx512(sd_dtype_t type, const void *w, size_t row_bytes, int64_t nw,
                               const int8_t *q, const float *d, const int16_t *bsum, int nx,
                               int64_t n, float *y, size_t ldy)
{
    if (nx >= (q8_small(type) ? WIDE_MIN_ROWS : WIDE_MIN_ROWS_K)) {
#define WIDE_CASE(T) \
    case T: wide_rows_type(T, w, row_bytes, nw, q, d, bsum, nx, n, y, ldy); return;
        switch (type) {
            WIDE_CASE(SD_DTYPE_Q5_0)
            WIDE_CASE(SD_DTYPE_Q5_1)
            WIDE_CASE(SD_DTYPE_IQ4_NL)
            WIDE_CASE(SD_DTYPE_Q2_K)
            WIDE_CASE(SD_DTYPE_Q3_K)
            WIDE_CASE(SD_DTYPE_Q4_K)
            WIDE_CASE(SD_DTYPE_Q5_K)
            WIDE_CASE(SD_DTYPE_Q6_K)
            WIDE_CASE(SD_DTYPE_IQ4_XS)
        default: break;
        }
#undef WIDE_CASE
    }
    if (type == SD_DTYPE_IQ4_NL) {
        nl16_rows(w, row_bytes, nw, q, d, bsum, nx, n, y, ldy);
        return;
    }
    q8_rows(type, w, row_bytes, nw, q, d, bsum, nx, n, y, ldy);
}
#else
typedef int sd_vecdot_q8_avx512_empty; /* no AVX2 kernel here: nothing to vary */
#endif
