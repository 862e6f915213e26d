/* Internal status helpers: set the thread-local error detail, propagate with a trail. */
#ifndef SPECDEC_CORE_CHECK_H
#define SPECDEC_CORE_CHECK_H

#include "specdec/specdec.h"

#if defined(__GNUC__)
#define SD_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define SD_PRINTF(a, b)
#endif

/* Record a message for sd_last_error() and return `status` (so callers can
 * `return sd_set_error(SD_ERR_BAD_MODEL, "tensor '%s': ...", name);`). */
sd_status_t sd_set_error(sd_status_t status, const char *fmt, ...) SD_PRINTF(2, 3);
void sd_clear_error(void);

/* Debug trail: with SPECDEC_LOG=debug every propagated failure prints file:line. */
void sd_error_trail(const char *file, int line, sd_status_t status);

/* Propagate a failing sd_status_t to the caller, leaving a trail. */
#define SD_CHECK(call)                                                                           \
    do {                                                                                         \
        sd_status_t sd_check_status_ = (call);                                                   \
        if (sd_check_status_ != SD_OK) {                                                         \
            sd_error_trail(__FILE__, __LINE__, sd_check_status_);                                \
            return sd_check_status_;                                                             \
        }                                                                                        \
    } while (0)

/* Same, but jump to a cleanup label with the status stored in `var`. */
#define SD_CHECK_GOTO(call, var, label)                                                          \
    do {                                                                                         \
        (var) = (call);                                                                          \
        if ((var) != SD_OK) {                                                                    \
            sd_error_trail(__FILE__, __LINE__, (var));                                           \
            goto label;                                                                          \
        }                                                                                        \
    } while (0)

/* Allocation that reports SD_ERR_OUT_OF_MEMORY with the size and purpose. */
#define SD_ALLOC_CHECK(ptr, bytes, what)                                                         \
    do {                                                                                         \
        if ((ptr) == NULL)                                                                       \
            return sd_set_error(SD_ERR_OUT_OF_MEMORY, "out of memory allocating %zu bytes for %s", \
                                (size_t)(bytes), (what));                                        \
    } while (0)

#endif
