/* Logging to stderr, filtered by SPECDEC_LOG (error|warn|info|debug; default warn). */
#ifndef SPECDEC_CORE_LOG_H
#define SPECDEC_CORE_LOG_H

#include "check.h"

typedef enum sd_log_level { SD_LOG_ERROR, SD_LOG_WARN, SD_LOG_INFO, SD_LOG_DEBUG } sd_log_level_t;

sd_log_level_t sd_log_level(void);
void sd_log(sd_log_level_t level, const char *fmt, ...) SD_PRINTF(2, 3);

#endif
