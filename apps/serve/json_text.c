/* json_find_nul: one pass over the JSON text with a stack of the containers around the
 * current value (json_text.h). */
#include "json_text.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* cJSON refuses deeper nesting (CJSON_NESTING_LIMIT); deeper text never gets here. */
enum { MAX_DEPTH = 1000 };

typedef struct frame {
    int array;            /* 1: [..], 0: {..} */
    size_t index;         /* array: the element's index */
    const char *key;      /* object: the current key's text (escapes as written) */
    size_t key_len;
} frame_t;

static int hex(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* The string starting after the quote at body[*pos]; *pos ends after the closing quote.
 * Returns 1 when it holds U+0000 (*at: its position in characters, code points). */
static int scan_string(const char *body, size_t len, size_t *pos, size_t *at)
{
    size_t i = *pos, chars = 0;
    int nul = 0;
    while (i < len && body[i] != '"') {
        if (body[i] == '\\' && i + 1 < len && body[i + 1] == 'u' && i + 5 < len) {
            int v = 0, ok = 1;
            for (int k = 2; k < 6; k++) {
                int h = hex(body[i + k]);
                ok &= h >= 0;
                v = v * 16 + (h < 0 ? 0 : h);
            }
            if (ok && v == 0 && !nul) nul = 1, *at = chars;
            chars += !(v >= 0xDC00 && v <= 0xDFFF); /* a pair's low half is the same char */
            i += 6;
        } else if (body[i] == '\\') {
            chars++;
            i += 2;
        } else {
            if (body[i] == '\0' && !nul) nul = 1, *at = chars;
            chars += ((unsigned char)body[i] & 0xC0) != 0x80; /* not a continuation byte */
            i++;
        }
    }
    *pos = i + 1;
    return nul;
}

/* Append s[n] to path[cap] (at *used), keeping it NUL-terminated. */
static void append(char *path, size_t cap, size_t *used, const char *s, size_t n)
{
    for (size_t i = 0; i < n && *used + 1 < cap; i++) path[(*used)++] = s[i];
    path[*used] = '\0';
}

static void write_path(const frame_t *stack, int depth, int in_key, char *path, size_t cap)
{
    size_t used = 0;
    path[0] = '\0';
    for (int d = 0; d < depth; d++) {
        const frame_t *f = &stack[d];
        char piece[48];
        if (f->array) {
            snprintf(piece, sizeof piece, "[%zu]", f->index);
            append(path, cap, &used, piece, strlen(piece));
        } else if (f->key && !(in_key && d == depth - 1)) {
            size_t n = f->key_len < 32 ? f->key_len : 32;
            if (used) append(path, cap, &used, ".", 1);
            for (size_t i = 0; i < n; i++) {
                char ch = f->key[i] >= 0x20 && f->key[i] < 0x7f ? f->key[i] : '?';
                append(path, cap, &used, &ch, 1);
            }
            if (f->key_len > 32) append(path, cap, &used, "...", 3);
        }
    }
    if (in_key) {
        const char *what = used ? " (a key)" : "a key";
        append(path, cap, &used, what, strlen(what));
    }
}

int json_find_nul(const char *body, size_t len, char *path, size_t cap, size_t *at)
{
    frame_t *stack = malloc(MAX_DEPTH * sizeof *stack);
    if (!stack) return 0;
    int depth = 0, found = 0, expect_key = 0;
    for (size_t i = 0; i < len && !found;) {
        char c = body[i];
        if (c == '{' || c == '[') {
            if (depth == MAX_DEPTH) break;
            stack[depth++] = (frame_t){.array = c == '['};
            expect_key = c == '{';
            i++;
        } else if (c == '}' || c == ']') {
            if (depth > 0) depth--;
            expect_key = 0;
            i++;
        } else if (c == ',') {
            if (depth > 0 && stack[depth - 1].array) stack[depth - 1].index++;
            expect_key = depth > 0 && !stack[depth - 1].array;
            i++;
        } else if (c == ':') {
            expect_key = 0;
            i++;
        } else if (c == '"') {
            size_t start = ++i;
            int key = expect_key && depth > 0;
            found = scan_string(body, len, &i, at);
            if (key) {
                stack[depth - 1].key = body + start;
                stack[depth - 1].key_len = i - 1 - start;
            }
            if (found) write_path(stack, depth, key, path, cap);
        } else {
            i++; /* whitespace, numbers, true, false, null */
        }
    }
    free(stack);
    return found;
}
