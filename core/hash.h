/* FNV-1a, the one hash of the project: for hash tables (32-bit) and for comparing state
 * across ranks (64-bit). Not cryptographic. */
#ifndef SPECDEC_CORE_HASH_H
#define SPECDEC_CORE_HASH_H

#include <stddef.h>
#include <stdint.h>

#define SD_FNV64_INIT 0xcbf29ce484222325ull
#define SD_FNV32_INIT 2166136261u

/* h extended by the n bytes at p (start from SD_FNV64_INIT). */
static inline uint64_t sd_fnv1a64(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = (const unsigned char *)p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

/* The same in 32 bits (start from SD_FNV32_INIT). */
static inline uint32_t sd_fnv1a32(uint32_t h, const void *p, size_t n)
{
    const unsigned char *b = (const unsigned char *)p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 16777619u;
    return h;
}

#endif
