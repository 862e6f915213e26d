/* The SIMD int8 matmul kernel (the contract: vecdot_q8.c's header comment), shared by the
 * AVX2 translation unit (vecdot_q8.c) and the AVX-512 one (vecdot_q8_avx512.c, which
 * defines Q8_AVX512 before including this and replaces the integer stage of some types).
 *
 * A tile is TW = 8 weight rows against up to XR = 4 activation rows. Per block b:
 * - integer stage, per weight row: the block is decoded once (unsigned bytes 0..63, or
 *   signed IQ4 values, per 32 elements) and multiplied into every activation row
 *   (maddubs, then madd with the sub-block scales), giving per (weight row, activation row)
 *   an int32 vector whose lanes sum to s_b, and one for m_b;
 * - float stage, per activation row: the 8 weight rows' vectors are summed across lanes at
 *   once (sum8: lane r = weight row r), the offsets that depend only on the activation
 *   (Q5_0's -16, IQ4's +128 in the AVX-512 form) are applied, and lane r does the contract's
 *   fma((float)s_b, dw_b * dx_b, acc) (and the min term's).
 * Header-only (static inline): each translation unit inlines it under its own flags. */
#ifndef SPECDEC_KERNELS_CPU_VECDOT_Q8_TILE_H
#define SPECDEC_KERNELS_CPU_VECDOT_Q8_TILE_H

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kernels/cpu/quants.h"
#include "kernels/cpu/vecdot_i16_tile.h" /* KERNEL, UNROLL, load_u16/u32, prefetch_tile_part */

enum { TW = SD_Q8_TILE_W, XR = 8 };

/* ---- per-type constants (folded: every kernel is instantiated per type) ------------------ */

KERNEL int q8_small(sd_dtype_t t) { return t == SD_DTYPE_Q5_0 || t == SD_DTYPE_Q5_1 || t == SD_DTYPE_IQ4_NL; }
KERNEL int64_t q8_blk(sd_dtype_t t) { return q8_small(t) ? SD_QK : SD_QK_K; }
KERNEL int q8_has_min(sd_dtype_t t)
{
    return t == SD_DTYPE_Q2_K || t == SD_DTYPE_Q4_K || t == SD_DTYPE_Q5_K || t == SD_DTYPE_Q5_1;
}

/* Byte offsets in a block of the f16 d and of the min's f16 (dmin, or Q5_1's m). */
KERNEL size_t q8_d_offset(sd_dtype_t t)
{
    return t == SD_DTYPE_Q2_K ? offsetof(sd_block_q2_k, d)
           : t == SD_DTYPE_Q3_K ? offsetof(sd_block_q3_k, d)
           : t == SD_DTYPE_Q6_K ? offsetof(sd_block_q6_k, d)
                                : 0;
}
KERNEL size_t q8_dmin_offset(sd_dtype_t t) { return t == SD_DTYPE_Q2_K ? offsetof(sd_block_q2_k, dmin) : 2; }

/* ---- small helpers ------------------------------------------------------------------------ */

/* 16 bytes of nibbles -> 32 bytes 0..15: low nibbles (elements 0..15), then high (16..31). */
KERNEL __m256i nibbles32(const uint8_t *p)
{
    __m128i raw = _mm_loadu_si128((const __m128i *)p), m = _mm_set1_epi8(0x0F);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(raw, 4), m), _mm_and_si128(raw, m));
}

/* Bit j of the 32 bits at p -> byte j = 0x10 where set (Q5_0 / Q5_1 high bits). */
KERNEL __m256i bits_to_0x10(const uint8_t *p)
{
    const __m256i spread = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
    const __m256i bit = _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe);
    __m256i hb = _mm256_shuffle_epi8(_mm256_set1_epi32((int)load_u32(p)), spread);
    hb = _mm256_cmpeq_epi8(_mm256_or_si256(hb, bit), _mm256_set1_epi64x(-1));
    return _mm256_and_si256(hb, _mm256_set1_epi8(0x10));
}

/* The IQ4 values of 32 nibble indices (bytes 0..15), signed. */
KERNEL __m256i iq4_lookup(__m256i idx)
{
    const __m256i table = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)sd_iq4_values));
    return _mm256_shuffle_epi8(table, idx);
}

/* sum_k u_k * x_k per pair of bytes (int16), u unsigned 0..63 or (sign trick) |IQ4 value|. */
KERNEL __m256i pair_dots(__m256i u, __m256i x) { return _mm256_maddubs_epi16(u, x); }
/* The same for signed v (IQ4 values): |v| times x with v's sign. */
KERNEL __m256i pair_dots_signed(__m256i v, __m256i x)
{
    return _mm256_maddubs_epi16(_mm256_abs_epi8(v), _mm256_sign_epi8(x, v));
}

/* (a0 + a1, a2 + a3, b0 + b1, b2 + b3 | same for lanes 4..7) */
KERNEL __m256i hadd_pairs8(__m256i a, __m256i b)
{
    __m256 fa = _mm256_castsi256_ps(a), fb = _mm256_castsi256_ps(b);
    __m256i even = _mm256_castps_si256(_mm256_shuffle_ps(fa, fb, _MM_SHUFFLE(2, 0, 2, 0)));
    __m256i odd = _mm256_castps_si256(_mm256_shuffle_ps(fa, fb, _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm256_add_epi32(even, odd);
}

/* Lane r = the sum of the 8 lanes of v[r] (exact int32). */
KERNEL __m256i sum8(const __m256i v[TW])
{
    __m256i a = hadd_pairs8(v[0], v[1]), b = hadd_pairs8(v[2], v[3]);
    __m256i c = hadd_pairs8(v[4], v[5]), d = hadd_pairs8(v[6], v[7]);
    __m256i ab = hadd_pairs8(a, b), cd = hadd_pairs8(c, d);
    return _mm256_add_epi32(_mm256_permute2x128_si256(ab, cd, 0x20), _mm256_permute2x128_si256(ab, cd, 0x31));
}

/* The f16 at byte offset off of each of the 8 rows, as floats (8 loads: faster than a dword
 * gather on AMD Zen). */
KERNEL __m256 gather_f16(const char *const rows[TW], size_t off)
{
    __m128i h = _mm_setr_epi16((short)load_u16(rows[0] + off), (short)load_u16(rows[1] + off),
                               (short)load_u16(rows[2] + off), (short)load_u16(rows[3] + off),
                               (short)load_u16(rows[4] + off), (short)load_u16(rows[5] + off),
                               (short)load_u16(rows[6] + off), (short)load_u16(rows[7] + off));
    return _mm256_cvtph_ps(h);
}

/* ---- activations ---------------------------------------------------------------------------- */

KERNEL float hmax8(__m256 v)
{
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
}

/* sd_quantize_act_q8 with the same bits as its scalar form: max ignores NaN as fmaxf does
 * (max_ps returns its second operand, the running max, when the first is NaN); cvtps2dq rounds
 * to nearest even and turns NaN into INT_MIN, which the packs saturate to -128 and the final
 * max lifts to -127. */
KERNEL void q8_quantize_act(int64_t blk, const float *x, int64_t n, int8_t *q, float *d, int16_t *bsum)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int64_t b = 0; b < n / blk; b++) {
        const float *xb = x + b * blk;
        __m256 amax = _mm256_setzero_ps();
        for (int64_t e = 0; e < blk; e += 8) amax = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(xb + e)), amax);
        float m = hmax8(amax);
        __m256 id = _mm256_set1_ps(m > 0.0f ? 127.0f / m : 0.0f);
        d[b] = m / 127.0f;
        for (int64_t e = 0; e < blk; e += 32) {
            __m256i v[4];
            UNROLL
            for (int k = 0; k < 4; k++) v[k] = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + e + 8 * k), id));
            /* packs interleave 128-bit lanes: dwords (0..3 of v0, v1, 4..7 of v0, v1) -> fix the order */
            __m256i w = _mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]), _mm256_packs_epi32(v[2], v[3]));
            w = _mm256_permutevar8x32_epi32(w, order);
            w = _mm256_max_epi8(w, _mm256_set1_epi8(-127));
            _mm256_storeu_si256((__m256i *)(q + b * blk + e), w);
            /* sums of 16: byte pairs, then quads, then the two halves of each 128-bit lane */
            __m256i s = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), w), _mm256_set1_epi16(1));
            s = _mm256_hadd_epi32(s, s);
            s = _mm256_hadd_epi32(s, s);
            bsum[(b * blk + e) / 16] = (int16_t)_mm256_cvtsi256_si32(s);
            bsum[(b * blk + e) / 16 + 1] = (int16_t)_mm256_extract_epi32(s, 4);
        }
    }
}

/* ---- integer stage: super-block types --------------------------------------------------- */

/* Where one activation row's block is: q (its int8 values), bsum (its sums of 16). */
typedef struct {
    const int8_t *q;
    const int16_t *bsum;
} xblock_t;

/* The scales (and mins) of one super-block, one int8 per 16 elements (per-32 scales twice),
 * as the integer stage reads them: scales already offset (Q3_K, IQ4_XS: - 32). */
typedef struct {
    __m128i sc, mn;
} kscales_t;

/* The 16 scales as int16, 8 per register in both 128-bit lanes: lo = (s0..s7 | s0..s7),
 * hi = (s8..s15 | s8..s15); k_scale_vec picks from them with one shuffle. */
typedef struct {
    __m256i lo, hi;
} kscales16_t;

KERNEL kscales16_t k_scales16(__m128i sc)
{
    __m256i v = _mm256_cvtepi8_epi16(sc);
    return (kscales16_t){_mm256_permute2x128_si256(v, v, 0x00), _mm256_permute2x128_si256(v, v, 0x11)};
}

/* Byte shuffle of lane (of 128 bits) L to the int16 scale index i (0..7) in all 8 words. */
#define SCALE_SEL(i) (char)(2 * (i)), (char)(2 * (i) + 1)
#define SCALE_SEL8(i) SCALE_SEL(i), SCALE_SEL(i), SCALE_SEL(i), SCALE_SEL(i), SCALE_SEL(i), SCALE_SEL(i), SCALE_SEL(i), SCALE_SEL(i)

KERNEL __m128i dup_pairs(__m128i v8) /* bytes 0..7 -> (b0, b0, b1, b1, .., b7, b7) */
{
    return _mm_shuffle_epi8(v8, _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7));
}

KERNEL kscales_t k_scales(sd_dtype_t type, const char *blk)
{
    kscales_t k = {_mm_setzero_si128(), _mm_setzero_si128()};
    switch (type) {
    case SD_DTYPE_Q4_K:
    case SD_DTYPE_Q5_K: {
        /* the 12 bytes as dwords u0 u1 u2 (sd_q4_k_scale_min): scales 0..3 = u0 & 0x3f..,
         * mins 0..3 = u1 & 0x3f.., scales 4..7 = (u2 & 0x0f..) | (u0 >> 6 & 3..) << 4, mins
         * 4..7 = (u2 >> 4 & 0x0f..) | (u1 >> 6 & 3..) << 4 (the 16 bytes loaded end inside
         * the block) */
        __m128i u = _mm_loadu_si128((const __m128i *)(blk + 4));
        __m128i lo = _mm_and_si128(u, _mm_set1_epi8(0x3f));                     /* sc0-3, mn0-3 */
        __m128i u2 = _mm_srlv_epi32(_mm_shuffle_epi32(u, 0xAA), _mm_setr_epi32(0, 4, 0, 4));
        __m128i top = _mm_slli_epi32(_mm_and_si128(_mm_srli_epi32(u, 6), _mm_set1_epi8(3)), 4);
        __m128i hi = _mm_or_si128(_mm_and_si128(u2, _mm_set1_epi8(0x0f)), top); /* sc4-7, mn4-7 */
        __m128i v = _mm_unpacklo_epi32(lo, hi); /* sc0-3 sc4-7 mn0-3 mn4-7 */
        k.sc = dup_pairs(v);
        k.mn = dup_pairs(_mm_srli_si128(v, 8));
        return k;
    }
    case SD_DTYPE_Q6_K: k.sc = _mm_loadu_si128((const __m128i *)((const sd_block_q6_k *)blk)->scales); return k;
    case SD_DTYPE_Q2_K: {
        __m128i v = _mm_loadu_si128((const __m128i *)((const sd_block_q2_k *)blk)->scales), m = _mm_set1_epi8(0x0F);
        k.sc = _mm_and_si128(v, m);
        k.mn = _mm_and_si128(_mm_srli_epi16(v, 4), m);
        return k;
    }
    case SD_DTYPE_Q3_K: {
        /* dwords a0 a1 t of the 12 bytes (sd_q3_k_scale): scales 4i .. 4i + 3 = (a_{i%2} >>
         * 4 (i / 2) & 0x0f..) | (t >> 2i & 3..) << 4 */
        const uint8_t *p = ((const sd_block_q3_k *)blk)->scales;
        __m128i a = _mm_loadl_epi64((const __m128i *)p), t = _mm_set1_epi32((int)load_u32(p + 8));
        __m128i low = _mm_srlv_epi32(_mm_shuffle_epi32(a, 0x44), _mm_setr_epi32(0, 0, 4, 4));
        __m128i high = _mm_srlv_epi32(t, _mm_setr_epi32(0, 2, 4, 6));
        low = _mm_and_si128(low, _mm_set1_epi8(0x0f));
        high = _mm_slli_epi32(_mm_and_si128(high, _mm_set1_epi8(3)), 4);
        k.sc = _mm_sub_epi8(_mm_or_si128(low, high), _mm_set1_epi8(32));
        return k;
    }
    default: { /* IQ4_XS */
        /* sd_iq4_xs_scale(j) - 32 for j = 0..7: nibble j % 2 of scales_l[j / 2], bits 2j, 2j + 1
         * of scales_h (word j << (14 - 2j), then >> 14) as bits 4, 5 */
        const sd_block_iq4_xs *x = (const sd_block_iq4_xs *)blk;
        __m128i l = _mm_cvtsi32_si128((int)load_u32(x->scales_l)), m4 = _mm_set1_epi8(0x0F);
        __m128i low = _mm_unpacklo_epi8(_mm_and_si128(l, m4), _mm_and_si128(_mm_srli_epi16(l, 4), m4));
        __m128i h = _mm_mullo_epi16(_mm_set1_epi16((short)x->scales_h),
                                    _mm_setr_epi16(1 << 14, 1 << 12, 1 << 10, 1 << 8, 1 << 6, 1 << 4, 1 << 2, 1));
        h = _mm_slli_epi16(_mm_packus_epi16(_mm_srli_epi16(h, 14), _mm_setzero_si128()), 4);
        k.sc = dup_pairs(_mm_sub_epi8(_mm_or_si128(low, h), _mm_set1_epi8(32)));
        return k;
    }
    }
}

/* Elements 64c .. 64c + 63 of a super-block: u[0] (first 32), u[1] (next 32), unsigned
 * 0..63 (the type's q plus its offset: Q3_K + 4, Q6_K + 32), or for IQ4_XS the signed values. */
KERNEL void k_decode64(sd_dtype_t type, const char *blk, int c, __m256i u[2])
{
    const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1);
    switch (type) {
    case SD_DTYPE_Q4_K: {
        __m256i raw = _mm256_loadu_si256((const __m256i *)(((const sd_block_q4_k *)blk)->qs + 32 * c));
        u[0] = _mm256_and_si256(raw, m4);
        u[1] = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
        return;
    }
    case SD_DTYPE_Q5_K: {
        const sd_block_q5_k *x = (const sd_block_q5_k *)blk;
        __m256i raw = _mm256_loadu_si256((const __m256i *)(x->qs + 32 * c));
        __m256i qh = _mm256_loadu_si256((const __m256i *)x->qh);
        __m256i h0 = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * c), one);
        __m256i h1 = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * c + 1), one);
        u[0] = _mm256_or_si256(_mm256_and_si256(raw, m4), _mm256_slli_epi16(h0, 4));
        u[1] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(raw, 4), m4), _mm256_slli_epi16(h1, 4));
        return;
    }
    case SD_DTYPE_Q6_K: {
        const sd_block_q6_k *x = (const sd_block_q6_k *)blk;
        int h = c / 2, hi = c % 2; /* groups 2 hi, 2 hi + 1 of half h */
        __m256i qh = _mm256_loadu_si256((const __m256i *)(x->qh + 32 * h));
        UNROLL
        for (int k = 0; k < 2; k++) {
            __m256i lo = _mm256_loadu_si256((const __m256i *)(x->ql + 64 * h + 32 * k));
            lo = _mm256_and_si256(hi ? _mm256_srli_epi16(lo, 4) : lo, m4);
            __m256i top = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * (2 * hi + k)), m2);
            u[k] = _mm256_or_si256(lo, _mm256_slli_epi16(top, 4));
        }
        return;
    }
    case SD_DTYPE_Q3_K:
    case SD_DTYPE_Q2_K: {
        int h = c / 2, j0 = 2 * (c % 2);
        const uint8_t *qs = type == SD_DTYPE_Q3_K ? ((const sd_block_q3_k *)blk)->qs : ((const sd_block_q2_k *)blk)->qs;
        __m256i raw = _mm256_loadu_si256((const __m256i *)(qs + 32 * h));
        UNROLL
        for (int k = 0; k < 2; k++) u[k] = _mm256_and_si256(_mm256_srli_epi16(raw, 2 * (j0 + k)), m2);
        if (type == SD_DTYPE_Q3_K) {
            __m256i hm = _mm256_loadu_si256((const __m256i *)((const sd_block_q3_k *)blk)->hmask);
            UNROLL
            for (int k = 0; k < 2; k++) {
                __m256i bit = _mm256_and_si256(_mm256_srli_epi16(hm, 4 * h + j0 + k), one);
                u[k] = _mm256_or_si256(u[k], _mm256_slli_epi16(bit, 2));
            }
        }
        return;
    }
    default: { /* IQ4_XS: sub-blocks 2c, 2c + 1, 16 bytes each */
        const uint8_t *qs = ((const sd_block_iq4_xs *)blk)->qs + 32 * c;
        u[0] = iq4_lookup(nibbles32(qs));
        u[1] = iq4_lookup(nibbles32(qs + 16));
        return;
    }
    }
}

/* Scale vector of sub-chunk k (elements 32k .. 32k + 31): int16 lanes 0..7 the scale of
 * elements 32k .. 32k + 15 (scale 2k), lanes 8..15 of the next 16 (2k + 1): the maddubs
 * pair order. */
KERNEL __m256i k_scale_vec(const kscales16_t *s, int k)
{
    const __m256i sel = _mm256_setr_epi8(SCALE_SEL8((2 * k) % 8), SCALE_SEL8((2 * k + 1) % 8));
    return _mm256_shuffle_epi8(k < 4 ? s->lo : s->hi, sel);
}

KERNEL void k_offsets_mins(sd_dtype_t type, const kscales_t *ks, const xblock_t *xb, int NX, __m256i *s, __m256i *m);

/* Integer stage of one super-block of one weight row against NX activation rows: s[x]
 * (and m[x]) int32 vectors whose lanes sum to s_b (m_b). */
KERNEL void k_block(sd_dtype_t type, const char *blk, const xblock_t *xb, int NX, __m256i *s, __m256i *m)
{
    kscales_t ks = k_scales(type, blk);
    kscales16_t s16 = k_scales16(ks.sc);
    UNROLL
    for (int x = 0; x < NX; x++) s[x] = _mm256_setzero_si256();
    UNROLL
    for (int c = 0; c < 4; c++) {
        __m256i u[2];
        k_decode64(type, blk, c, u);
        UNROLL
        for (int k = 0; k < 2; k++) {
            __m256i sc = k_scale_vec(&s16, 2 * c + k);
            UNROLL
            for (int x = 0; x < NX; x++) {
                __m256i xv = _mm256_loadu_si256((const __m256i *)(xb[x].q + 64 * c + 32 * k));
                __m256i p = type == SD_DTYPE_IQ4_XS ? pair_dots_signed(u[k], xv) : pair_dots(u[k], xv);
                s[x] = _mm256_add_epi32(s[x], _mm256_madd_epi16(p, sc));
            }
        }
    }
    /* offsets (Q3_K: q + 4, Q6_K: q + 32) and min terms, from the activations' sums of 16 */
    k_offsets_mins(type, &ks, xb, NX, s, m);
}

/* The offsets (Q3_K: q + 4, Q6_K: q + 32) and min terms of a super-block, from the
 * activations' sums of 16: s[x] -= offset * sum_k sc_k bsum_k, m[x] = sum_k mn_k bsum_k. */
KERNEL void k_offsets_mins(sd_dtype_t type, const kscales_t *ks, const xblock_t *xb, int NX, __m256i *s, __m256i *m)
{
    int shift = type == SD_DTYPE_Q6_K ? 5 : type == SD_DTYPE_Q3_K ? 2 : 0;
    __m256i sc16 = _mm256_cvtepi8_epi16(ks->sc), mn16 = _mm256_cvtepi8_epi16(ks->mn);
    UNROLL
    for (int x = 0; x < NX; x++) {
        __m256i bs = _mm256_loadu_si256((const __m256i *)xb[x].bsum);
        if (shift) s[x] = _mm256_sub_epi32(s[x], _mm256_slli_epi32(_mm256_madd_epi16(sc16, bs), shift));
        if (q8_has_min(type)) m[x] = _mm256_madd_epi16(mn16, bs);
    }
}

/* ---- integer stage: 32-element types (Q5_0, Q5_1, IQ4_NL) --------------------------------- */

/* The 32 weights of a block: unsigned 0..31 (Q5_0, Q5_1), or the signed IQ4_NL values (AVX-512:
 * those + 128, unsigned). */
KERNEL __m256i small_decode(sd_dtype_t type, const char *blk)
{
    if (type == SD_DTYPE_IQ4_NL) {
        __m256i v = iq4_lookup(nibbles32(((const sd_block_iq4_nl *)blk)->qs));
#ifdef Q8_AVX512
        v = _mm256_xor_si256(v, _mm256_set1_epi8((char)0x80)); /* + 128 */
#endif
        return v;
    }
    const uint8_t *qh = type == SD_DTYPE_Q5_0 ? ((const sd_block_q5_0 *)blk)->qh : ((const sd_block_q5_1 *)blk)->qh;
    const uint8_t *qs = type == SD_DTYPE_Q5_0 ? ((const sd_block_q5_0 *)blk)->qs : ((const sd_block_q5_1 *)blk)->qs;
#ifdef Q8_AVX512
    return _mm256_or_si256(nibbles32(qs), _mm256_maskz_mov_epi8((__mmask32)load_u32(qh), _mm256_set1_epi8(0x10)));
#else
    return _mm256_or_si256(nibbles32(qs), bits_to_0x10(qh));
#endif
}

KERNEL void small_block(sd_dtype_t type, const char *blk, const xblock_t *xb, int NX, __m256i *s)
{
    __m256i u = small_decode(type, blk);
#ifdef Q8_AVX512
    UNROLL
    for (int x = 0; x < NX; x++)
        s[x] = _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, _mm256_loadu_si256((const __m256i *)xb[x].q));
#else
    const __m256i ones = _mm256_set1_epi16(1);
    UNROLL
    for (int x = 0; x < NX; x++) {
        __m256i xv = _mm256_loadu_si256((const __m256i *)xb[x].q);
        __m256i p = type == SD_DTYPE_IQ4_NL ? pair_dots_signed(u, xv) : pair_dots(u, xv);
        s[x] = _mm256_madd_epi16(p, ones);
    }
#endif
}

/* The activation-only offset of a 32-element type's s: its weights' offset times the
 * block's sum (Q5_0: stored 0..31 for q - 16; AVX-512 IQ4_NL: value + 128). */
KERNEL int small_offset(sd_dtype_t type)
{
#ifdef Q8_AVX512
    if (type == SD_DTYPE_IQ4_NL) return 128;
#endif
    return type == SD_DTYPE_Q5_0 ? 16 : 0;
}

/* ---- the tile ----------------------------------------------------------------------------- */

/* The integer stage of the super-block types: k_block, or the AVX-512 TU's own (defined there). */
#ifdef Q8_AVX512
KERNEL void k_block_avx512(sd_dtype_t type, const char *blk, const xblock_t *xb, int NX, __m256i *s, __m256i *m);
#define K_BLOCK k_block_avx512
#else
#define K_BLOCK k_block
#endif

/* Level-1 results of one activation row for the tile's 8 weight rows. */
typedef struct {
    __m256i s[TW], m[TW];
} q8_part_t;

/* Level 1 of weight row r: its block b into part[.].s[r] (and .m[r]). */
KERNEL void q8_row_block(sd_dtype_t type, const char *wb, const xblock_t *xb, int NX, q8_part_t *part, int r)
{
    __m256i s[XR], m[XR];
    if (q8_small(type))
        small_block(type, wb, xb, NX, s);
    else
        K_BLOCK(type, wb, xb, NX, s, m);
    UNROLL
    for (int x = 0; x < NX; x++) {
        part[x].s[r] = s[x];
        if (q8_has_min(type) && !q8_small(type)) part[x].m[r] = m[x];
    }
}

/* One tile of TW weight rows (rows past tw repeat the last; computed, never stored) against
 * NX <= XR activation rows (row c at q + c n, d + c nb, bsum + c n / 16). */
KERNEL void q8_tile(sd_dtype_t type, const char *const rows[TW], size_t row_bytes, int tw,
                    const int8_t *q, const float *d, const int16_t *bsum, int NX, int64_t n, float *y, size_t ldy)
{
    const int64_t blk = q8_blk(type), nb = n / blk;
    const size_t bb = sd_dtype_block_bytes(type);
    __m256 acc[XR];
    q8_part_t part[XR];
    UNROLL
    for (int x = 0; x < NX; x++) acc[x] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        if (!q8_small(type)) prefetch_tile_part(rows[0], TW, row_bytes, bb, b);
        else if (b % 4 == 0) prefetch_tile_part(rows[0], TW, row_bytes, 4 * bb, b / 4); /* 4 blocks at once */
        xblock_t xb[XR];
        UNROLL
        for (int x = 0; x < NX; x++)
            xb[x] = (xblock_t){q + (size_t)x * (size_t)n + (size_t)(b * blk),
                               bsum + (size_t)x * (size_t)(n / 16) + (size_t)(b * blk / 16)};
        if (q8_small(type)) {
            UNROLL /* a small block's registers fit 8 rows */
            for (int r = 0; r < TW; r++) q8_row_block(type, rows[r] + (size_t)b * bb, xb, NX, part, r);
        } else {
            _Pragma("GCC unroll 1") /* one row at a time: unrolled, GCC spills a super-block's products */
            for (int r = 0; r < TW; r++) q8_row_block(type, rows[r] + (size_t)b * bb, xb, NX, part, r);
        }
        size_t off = (size_t)b * bb;
        __m256 dw = gather_f16(rows, off + q8_d_offset(type)), dmw = _mm256_setzero_ps();
        if (q8_has_min(type)) {
            dmw = gather_f16(rows, off + q8_dmin_offset(type));
            if (!q8_small(type)) dmw = _mm256_xor_ps(dmw, _mm256_set1_ps(-0.0f)); /* -dmin */
        }
        UNROLL
        for (int x = 0; x < NX; x++) {
            __m256i sv = sum8(part[x].s), mv = _mm256_setzero_si256();
            if (q8_small(type)) {
                const int16_t *bs = xb[x].bsum;
                int xsum = bs[0] + bs[1];
                if (small_offset(type)) sv = _mm256_sub_epi32(sv, _mm256_set1_epi32(small_offset(type) * xsum));
                mv = _mm256_set1_epi32(xsum);
            } else if (q8_has_min(type)) {
                mv = sum8(part[x].m);
            }
            __m256 dx = _mm256_set1_ps(d[(size_t)x * (size_t)nb + (size_t)b]);
            acc[x] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sv), _mm256_mul_ps(dw, dx), acc[x]);
            if (q8_has_min(type))
                acc[x] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(mv), _mm256_mul_ps(dmw, dx), acc[x]);
        }
    }
    for (int x = 0; x < NX; x++) {
        float a[TW];
        _mm256_storeu_ps(a, acc[x]);
        memcpy(y + (size_t)x * ldy, a, sizeof(float) * (size_t)tw);
    }
}

/* Every tile of the weight range against every activation row, in passes of at most XR
 * activation rows of balanced sizes (9 rows: 5 + 4, not 8 + 1: each pass decodes the weights). */
KERNEL void q8_rows_type(sd_dtype_t type, const char *w, size_t row_bytes, int64_t nw, const int8_t *q,
                         const float *d, const int16_t *bsum, int nx, int64_t n, float *y, size_t ldy)
{
    int64_t nb = n / q8_blk(type);
    int passes = (nx + XR - 1) / XR;
    for (int p = 0, c0 = 0; p < passes; p++) {
        int ng = (nx - c0) / (passes - p);
        const int8_t *qc = q + (size_t)c0 * (size_t)n;
        const float *dc = d + (size_t)c0 * (size_t)nb;
        const int16_t *bc = bsum + (size_t)c0 * (size_t)(n / 16);
        for (int64_t r0 = 0; r0 < nw; r0 += TW) {
            int tw = nw - r0 < TW ? (int)(nw - r0) : TW;
            const char *rows[TW];
            for (int r = 0; r < TW; r++) rows[r] = w + (size_t)(r0 + (r < tw ? r : tw - 1)) * row_bytes;
            float *yc = y + (size_t)c0 * ldy + (size_t)r0;
            switch (ng) {
            case 1: q8_tile(type, rows, row_bytes, tw, qc, dc, bc, 1, n, yc, ldy); break;
            case 2: q8_tile(type, rows, row_bytes, tw, qc, dc, bc, 2, n, yc, ldy); break;
            case 3: q8_tile(type, rows, row_bytes, tw, qc, dc, bc, 3, n, yc, ldy); break;
            case 4: q8_tile(type, rows, row_bytes, tw, qc, dc, bc, 4, n, yc, ldy); break;
            case 5: q8_tile(type, rows, row_bytes, tw, qc, dc, bc, 5, n, yc, ldy); break;
            case 6: q8_tile(type, rows, row_bytes, tw, qc, dc, bc, 6, n, yc, ldy); break;
            case 7: q8_tile(type, rows, row_bytes, tw, qc, dc, bc, 7, n, yc, ldy); break;
            default: q8_tile(type, rows, row_bytes, tw, qc, dc, bc, 8, n, yc, ldy); break;
            }
        }
        c0 += ng;
    }
}

/* The kernel for every int8-path type (one instantiation each). */
static void q8_rows(sd_dtype_t type, const void *w, size_t row_bytes, int64_t nw, const int8_t *q,
                    const float *d, const int16_t *bsum, int nx, int64_t n, float *y, size_t ldy)
{
#define Q8_CASE(T) \
    case T: q8_rows_type(T, w, row_bytes, nw, q, d, bsum, nx, n, y, ldy); break;
    switch (type) {
        Q8_CASE(SD_DTYPE_Q5_0)
        Q8_CASE(SD_DTYPE_Q5_1)
        Q8_CASE(SD_DTYPE_IQ4_NL)
        Q8_CASE(SD_DTYPE_Q2_K)
        Q8_CASE(SD_DTYPE_Q3_K)
        Q8_CASE(SD_DTYPE_Q4_K)
        Q8_CASE(SD_DTYPE_Q5_K)
        Q8_CASE(SD_DTYPE_Q6_K)
        Q8_CASE(SD_DTYPE_IQ4_XS)
    default: break; /* callers check sd_dot_q8_supported */
    }
#undef Q8_CASE
}

#endif
