/* sd_status_t names, the thread-local error detail, and the SD_CHECK trail. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "escape.h"
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

sd_status_t sd_set_error(sd_status_t status, const char *fmt, ...)
{
    char raw[sizeof last_error]; /* the arguments may be sd_last_error() itself */
    va_list ap, again;
    va_start(ap, fmt);
    va_copy(again, ap);
    int n = vsnprintf(raw, sizeof raw, fmt, ap);
    va_end(ap);
    /* longer than the buffer: formatted whole, so the escaper's mark says what was left out */
    char *whole = n >= (int)sizeof raw ? malloc((size_t)n + 1) : NULL;
    if (whole) vsnprintf(whole, (size_t)n + 1, fmt, again);
    va_end(again);
    const char *text = whole ? whole : raw;
    sd_escape(text, strlen(text), last_error, sizeof last_error); /* file or user text inside */
    free(whole);
    sd_log(SD_LOG_DEBUG, "%s: %s", sd_status_string(status), last_error);
    return status;
}

void sd_error_trail(const char *file, int line, sd_status_t status)
{
    sd_log(SD_LOG_DEBUG, "  at %s:%d -> %s", file, line, sd_status_string(status));
}
