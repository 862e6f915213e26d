/* Lenient UTF-8 decoding and code-point classes (tables in unicode_tables.c). */
#include "unicode.h"

unsigned sd_unicode_flags(uint32_t cp)
{
    if (cp < 0x80) {
        if ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z') return SD_UNI_L;
        if (cp >= '0' && cp <= '9') return SD_UNI_N;
        return cp == ' ' || (cp >= 0x09 && cp <= 0x0D) ? SD_UNI_WS : 0;
    }
    size_t lo = 0, hi = sd_unicode_n_ranges;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cp < sd_unicode_ranges[mid].lo)
            hi = mid;
        else if (cp > sd_unicode_ranges[mid].hi)
            lo = mid + 1;
        else
            return sd_unicode_ranges[mid].flags;
    }
    return 0;
}

uint32_t sd_utf8_decode(const uint8_t *s, size_t n, size_t *adv)
{
    uint8_t b = s[0];
    *adv = 1;
    if (b < 0x80) return b;
    size_t need;
    uint32_t cp, min;
    if ((b & 0xE0) == 0xC0) {
        need = 2, cp = b & 0x1Fu, min = 0x80;
    } else if ((b & 0xF0) == 0xE0) {
        need = 3, cp = b & 0x0Fu, min = 0x800;
    } else if ((b & 0xF8) == 0xF0) {
        need = 4, cp = b & 0x07u, min = 0x10000;
    } else {
        return SD_UTF8_INVALID + b;
    }
    if (need > n) return SD_UTF8_INVALID + b;
    for (size_t i = 1; i < need; i++) {
        if ((s[i] & 0xC0) != 0x80) return SD_UTF8_INVALID + b;
        cp = (cp << 6) | (s[i] & 0x3Fu);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return SD_UTF8_INVALID + b;
    *adv = need;
    return cp;
}

size_t sd_utf8_encode(uint32_t cp, char out[4])
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp >= 0xD800 && cp <= 0xDFFF) return 0;
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    if (cp > 0x10FFFF) return 0;
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}
