/* A persistent pthread pool with a deterministic parallel-for (internal to kernels/cpu). */
#ifndef SPECDEC_KERNELS_CPU_THREADPOOL_H
#define SPECDEC_KERNELS_CPU_THREADPOOL_H

#include "specdec/specdec.h"

typedef struct sd_threadpool sd_threadpool_t;
typedef void (*sd_task_fn)(void *arg, int task);

/* n_threads counts the caller; 0 = online cores. SD_ERR_INVALID_ARG if negative. */
sd_status_t sd_threadpool_create(int n_threads, sd_threadpool_t **out);
void sd_threadpool_destroy(sd_threadpool_t *pool);
int sd_threadpool_size(const sd_threadpool_t *pool);
/* Calls fn(arg, t) once for every t in [0, n_tasks), on any thread (the caller's included),
 * and returns when all have finished; a task must depend only on t, so results do not depend
 * on the thread count. Concurrent callers are serialised. Idle workers spin, then sleep. */
void sd_threadpool_run(sd_threadpool_t *pool, int n_tasks, sd_task_fn fn, void *arg);

#endif
