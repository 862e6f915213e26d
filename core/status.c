/* sd_status_t names, the thread-local error detail, and the SD_CHECK trail. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "log.h"

static const char *const status_names[SD_STATUS_COUNT] = {
    [SD_OK] = "SD_OK",
    [SD_ERR_INVALID_ARG] = "SD_ERR_INVALID_ARG",
    [SD_ERR_OUT_OF_MEMORY] = "SD_ERR_OUT_OF_MEMORY",
    [SD_ERR_IO] = "SD_ERR_IO",
    [SD_ERR_BAD_MODEL] = "SD_ERR_BAD_MODEL",
    [SD_ERR_UNSUPPORTED_ARCH] = "SD_ERR_UNSUPPORTED_ARCH",
    [SD_ERR_UNSUPPORTED_TYPE] = "SD_ERR_UNSUPPORTED_TYPE",
    [SD_ERR_NO_TOKENIZER] = "SD_ERR_NO_TOKENIZER",
    [SD_ERR_BUFFER_TOO_SMALL] = "SD_ERR_BUFFER_TOO_SMALL",
    [SD_ERR_CONTEXT_FULL] = "SD_ERR_CONTEXT_FULL",
    [SD_ERR_VOCAB_MISMATCH] = "SD_ERR_VOCAB_MISMATCH",
    [SD_ERR_TP_PLAN] = "SD_ERR_TP_PLAN",
    [SD_ERR_BATCH_TOO_LARGE] = "SD_ERR_BATCH_TOO_LARGE",
    [SD_ERR_COMM_TIMEOUT] = "SD_ERR_COMM_TIMEOUT",
    [SD_ERR_RANK_DIVERGENCE] = "SD_ERR_RANK_DIVERGENCE",
    [SD_ERR_NOT_BUILT] = "SD_ERR_NOT_BUILT",
    [SD_ERR_DEVICE] = "SD_ERR_DEVICE",
    [SD_ERR_CANCELLED] = "SD_ERR_CANCELLED",
    [SD_ERR_INTERNAL] = "SD_ERR_INTERNAL",
    [SD_ERR_PEER_LOST] = "SD_ERR_PEER_LOST",
    [SD_ERR_BUSY] = "SD_ERR_BUSY",
};

const char *sd_status_string(sd_status_t status)
{
    if ((unsigned)status >= SD_STATUS_COUNT || status_names[status] == NULL)
        return "SD_ERR_UNKNOWN_STATUS";
    return status_names[status];
}

static _Thread_local char last_error[1024];

const char *sd_last_error(void) { return last_error; }

void sd_clear_error(void) { last_error[0] = '\0'; }

/* Messages quote names and strings from files and requests; bytes a terminal acts on (C0
 * controls, DEL, the UTF-8 encodings of the C1 controls) are written as \xNN so such data
 * never reaches a terminal as an escape sequence, and the message stays one line. A message
 * cut to fit the buffer ends in "...". */
static void escape_message(char *dst, size_t cap, const char *src, int cut)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)src;
    size_t o = 0, room = cap - 4; /* keep space for "..." and the NUL */
    for (size_t i = 0; u[i]; i++) {
        size_t n = u[i] == 0xC2 && u[i + 1] >= 0x80 && u[i + 1] <= 0x9F ? 2
                   : u[i] < 0x20 || u[i] == 0x7F                       ? 1
                                                                       : 0;
        if (o + (n ? 4 * n : 1) > room) {
            cut = 1;
            break;
        }
        if (n == 0) {
            dst[o++] = (char)u[i];
            continue;
        }
        for (size_t k = 0; k < n; k++) {
            unsigned char b = u[i + k];
            dst[o++] = '\\', dst[o++] = 'x', dst[o++] = hex[b >> 4], dst[o++] = hex[b & 15];
        }
        i += n - 1;
    }
    if (cut) memcpy(dst + o, "...", 3), o += 3;
    dst[o] = '\0';
}

sd_status_t sd_set_error(sd_status_t status, const char *fmt, ...)
{
    char raw[sizeof last_error]; /* also makes sd_set_error(s, "%s", sd_last_error()) safe */
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(raw, sizeof raw, fmt, ap);
    va_end(ap);
    escape_message(last_error, sizeof last_error, raw, n >= (int)sizeof raw);
    sd_log(SD_LOG_DEBUG, "%s: %s", sd_status_string(status), last_error);
    return status;
}

void sd_error_trail(const char *file, int line, sd_status_t status)
{
    sd_log(SD_LOG_DEBUG, "  at %s:%d -> %s", file, line, sd_status_string(status));
}
