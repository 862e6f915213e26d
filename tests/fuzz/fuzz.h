/* Shared by the fuzz harnesses (tests/fuzz/fuzz_<target>.c). Each harness defines
 * LLVMFuzzerTestOneInput (and may define LLVMFuzzerInitialize); linked with libFuzzer
 * (-DSPECDEC_SANITIZE=fuzzer, clang) it is a coverage-guided fuzzer, linked with
 * replay_main.c (any compiler) a program that runs every input of a corpus once.
 *
 * A property that does not hold is reported with FUZZ_CHECK, which prints to the real
 * stderr (fd 2, even where a harness captures the stdio stream) and aborts, so libFuzzer
 * saves the input as a crash and a replay exits non-zero. */
#ifndef SPECDEC_TESTS_FUZZ_FUZZ_H
#define SPECDEC_TESTS_FUZZ_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define FUZZ_CHECK(cond, ...)                                                                    \
    do {                                                                                         \
        if (!(cond)) {                                                                           \
            dprintf(STDERR_FILENO, "fuzz property failed at %s:%d: %s\n  ", __FILE__, __LINE__, \
                    #cond);                                                                      \
            dprintf(STDERR_FILENO, __VA_ARGS__);                                                 \
            dprintf(STDERR_FILENO, "\n");                                                        \
            abort();                                                                             \
        }                                                                                        \
    } while (0)

/* FUZZ_NOTE(...): a line on stderr when FUZZ_VERBOSE is set (what an input reached, for
 * corpus upkeep); nothing otherwise. */
#define FUZZ_NOTE(...)                                                                           \
    do {                                                                                         \
        if (getenv("FUZZ_VERBOSE")) {                                                            \
            dprintf(STDERR_FILENO, __VA_ARGS__);                                                 \
            dprintf(STDERR_FILENO, "\n");                                                        \
        }                                                                                        \
    } while (0)

/* Reads an input front to back; past its end every take gives zeros / empty. */
typedef struct fuzz_in {
    const uint8_t *p;
    size_t n;
} fuzz_in_t;

static inline uint8_t fuzz_u8(fuzz_in_t *in)
{
    if (in->n == 0) return 0;
    in->n--;
    return *in->p++;
}

/* The bytes up to the next `sep` (not included; the separator is consumed), or the rest. */
static inline size_t fuzz_field(fuzz_in_t *in, uint8_t sep, const uint8_t **out)
{
    const uint8_t *end = in->n ? memchr(in->p, sep, in->n) : NULL;
    size_t len = end ? (size_t)(end - in->p) : in->n;
    *out = in->p;
    in->p += len + (end != NULL);
    in->n -= len + (end != NULL);
    return len;
}

/* A NUL-terminated malloc'd copy of data[len] (exits on out of memory: a harness failure,
 * not a finding). */
static inline char *fuzz_strndup(const uint8_t *data, size_t len)
{
    char *s = malloc(len + 1);
    if (!s) abort();
    if (len) memcpy(s, data, len);
    s[len] = '\0';
    return s;
}

/* 1 when s[n] holds a byte a terminal may act on: C0 controls but tab and newline, DEL,
 * and the C1 controls' UTF-8 encodings (U+0080..U+009F, e.g. CSI as C2 9B). */
static inline int fuzz_has_terminal_control(const char *s, size_t n)
{
    const uint8_t *u = (const uint8_t *)s;
    for (size_t i = 0; i < n; i++) {
        if ((u[i] < 0x20 && u[i] != '\t' && u[i] != '\n') || u[i] == 0x7f) return 1;
        if (u[i] == 0xC2 && i + 1 < n && u[i + 1] >= 0x80 && u[i + 1] <= 0x9F) return 1;
    }
    return 0;
}

#endif
