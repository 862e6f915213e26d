/* Unicode helpers for the tokenizer: lenient UTF-8 decoding and the code-point classes the
 * pre-tokenizer regexes need (\p{L}, \p{N}, \s). */
#ifndef SPECDEC_CORE_UNICODE_H
#define SPECDEC_CORE_UNICODE_H

#include <stddef.h>
#include <stdint.h>

enum {
    SD_UNI_L = 1,  /* letter: Lu Ll Lt Lm Lo */
    SD_UNI_N = 2,  /* number: Nd Nl No */
    SD_UNI_WS = 4, /* White_Space */
};

/* Invalid UTF-8 bytes decode to SD_UTF8_INVALID + byte: outside Unicode, no class. */
#define SD_UTF8_INVALID 0x110000u

typedef struct sd_unicode_range {
    uint32_t lo, hi; /* inclusive */
    uint8_t flags;
} sd_unicode_range_t;

/* Sorted, disjoint (generated: unicode_tables.c). */
extern const sd_unicode_range_t sd_unicode_ranges[];
extern const size_t sd_unicode_n_ranges;

/* Class flags of a code point (0 for invalid-byte units). */
unsigned sd_unicode_flags(uint32_t cp);

/* Decode one code point from s[0..n) (n >= 1); *adv = bytes consumed (1..4). Truncated,
 * overlong, surrogate or out-of-range sequences yield SD_UTF8_INVALID + s[0] with *adv = 1,
 * so every byte of the input belongs to exactly one unit. Never reads past s[n-1]. */
uint32_t sd_utf8_decode(const uint8_t *s, size_t n, size_t *adv);

/* Encode a valid code point; returns the byte count (1..4), 0 if cp is not encodable. */
size_t sd_utf8_encode(uint32_t cp, char out[4]);

#endif
