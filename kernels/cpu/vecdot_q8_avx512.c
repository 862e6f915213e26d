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

void sd_vec_dot_rows_q8_avx512(sd_dtype_t type, const void *w, size_t row_bytes, int64_t nw,
                               const int8_t *q, const float *d, const int16_t *bsum, int nx,
                               int64_t n, float *y, size_t ldy)
{
    q8_rows(type, w, row_bytes, nw, q, d, bsum, nx, n, y, ldy);
}
#else
typedef int sd_vecdot_q8_avx512_empty; /* no AVX2 kernel here: nothing to vary */
#endif
