/* Escaping untrusted bytes for messages and terminals (core/escape.h). */
#include "escape.h"

#include <stdint.h>
#include <stdio.h>

#include "unicode.h"

/* Longest truncation mark: "...(+" 20 digits " bytes)". */
#define MARK_MAX 32

/* Code points shown as they are: printable, not a control, format or separator character
 * a terminal or a bidi algorithm would act on. */
static int shown(uint32_t cp)
{
    if (cp < 0x80) return cp >= 0x20 && cp != 0x7F;
    if (cp >= SD_UTF8_INVALID) return 0;                 /* a byte that is not UTF-8 */
    if (cp < 0xA0 || cp == 0xAD || cp == 0x061C) return 0; /* C1, soft hyphen, ALM */
    if ((cp >= 0x200B && cp <= 0x200F) || (cp >= 0x2028 && cp <= 0x202E) ||
        (cp >= 0x2060 && cp <= 0x206F))
        return 0; /* zero-width, bidi marks and embeddings, separators, invisible operators */
    if (cp == 0xFEFF || (cp >= 0xFFF9 && cp <= 0xFFFB)) return 0; /* BOM, annotations */
    return !(cp >= 0xE0000 && cp <= 0xE007F);                     /* tags */
}

/* The unit at s[0 .. n) as shown: its bytes, or \xHH per byte, into out[16]. */
static size_t unit(const uint8_t *s, size_t n, size_t *adv, char out[16])
{
    uint32_t cp = sd_utf8_decode(s, n, adv);
    if (shown(cp)) {
        memcpy(out, s, *adv);
        return *adv;
    }
    size_t w = 0;
    for (size_t k = 0; k < *adv; k++) w += (size_t)snprintf(out + w, 16 - w, "\\x%02x", s[k]);
    return w;
}

const char *sd_escape(const void *src, size_t len, char *buf, size_t cap)
{
    const uint8_t *s = src;
    if (cap == 0) return buf;
    size_t need = 0, adv;
    char piece[16];
    for (size_t i = 0; i < len; i += adv) need += unit(s + i, len - i, &adv, piece);
    size_t room = need < cap ? cap - 1 : (cap > MARK_MAX ? cap - 1 - MARK_MAX : 0);
    size_t o = 0, i = 0;
    for (; i < len; i += adv) {
        size_t w = unit(s + i, len - i, &adv, piece);
        if (o + w > room) break;
        memcpy(buf + o, piece, w);
        o += w;
    }
    if (i < len) o += (size_t)snprintf(buf + o, cap - o, "...(+%zu bytes)", len - i);
    buf[o < cap ? o : cap - 1] = '\0';
    return buf;
}
