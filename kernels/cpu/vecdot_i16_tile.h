/* Pieces shared by the int16 tile kernels (vecdot_i16.c's AVX2 kernel and its AVX-512
 * variant, vecdot_i16_avx512.c): unaligned loads of block fields, the block size of the
 * three int16 types as a constant the compiler folds, and the tile prefetch. Header-only
 * (static inline) so each kernel inlines them under its own compile flags. */
#ifndef SPECDEC_KERNELS_CPU_VECDOT_I16_TILE_H
#define SPECDEC_KERNELS_CPU_VECDOT_I16_TILE_H

#include <stdint.h>
#include <string.h>

#include "kernels/cpu/quants.h"

#define KERNEL static inline __attribute__((always_inline))
#define UNROLL _Pragma("GCC unroll 8")

/* Quant blocks are 18 to 34 bytes: their fields are read without alignment. */
static inline uint32_t load_u32(const void *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline uint16_t load_u16(const void *p)
{
    uint16_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Bytes per 32-weight block of an int16-path type (Q8_0, Q4_0 or Q4_1). */
KERNEL size_t block_bytes(sd_dtype_t type)
{
    return type == SD_DTYPE_Q8_0 ? sizeof(sd_block_q8_0)
           : type == SD_DTYPE_Q4_0 ? sizeof(sd_block_q4_0)
                                   : sizeof(sd_block_q4_1);
}

/* Software prefetch of the tile PREFETCH_TILES ahead (why: docs/design-notes.md, "CPU
 * kernels"): while block b of this tile is computed, bytes [b, b + 1) * tile_rows *
 * block_bytes of that tile's contiguous rows. The address may lie past the matrix (a prefetch
 * never faults), so it is formed as an integer. */
#define PREFETCH_TILES 2

KERNEL void prefetch_tile_part(const char *tile, int tile_rows, size_t row_bytes, size_t block_bytes,
                               int64_t b)
{
    size_t part = (size_t)tile_rows * block_bytes;
    uintptr_t p = (uintptr_t)tile + PREFETCH_TILES * (size_t)tile_rows * row_bytes + (size_t)b * part;
    for (size_t off = 0; off < part; off += 64) __builtin_prefetch((const void *)(p + off));
}

#endif
