/* stderr logging; SPECDEC_LOG is read here and nowhere else. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "escape.h"
#include "log.h"

static sd_log_level_t parse_level(const char *s)
{
    if (s == NULL) return SD_LOG_WARN;
    if (strcmp(s, "error") == 0) return SD_LOG_ERROR;
    if (strcmp(s, "info") == 0) return SD_LOG_INFO;
    if (strcmp(s, "debug") == 0) return SD_LOG_DEBUG;
    return SD_LOG_WARN;
}

sd_log_level_t sd_log_level(void)
{
    /* getenv is cheap and keeps tests able to change the level with setenv. */
    return parse_level(getenv("SPECDEC_LOG"));
}

void sd_log(sd_log_level_t level, const char *fmt, ...)
{
    static const char *const tags[] = {"error", "warn", "info", "debug"};
    if (level > sd_log_level()) return;
    char raw[1200], line[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(raw, sizeof raw, fmt, ap);
    va_end(ap);
    fprintf(stderr, "specdec %s: %s\n", tags[level], sd_escape(raw, strlen(raw), line, sizeof line));
}
