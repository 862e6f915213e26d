/* A persistent pthread pool with a deterministic parallel-for (internal to kernels/cpu).
 *
 * sd_threadpool_run(pool, n_tasks, fn, arg) calls fn(arg, t) exactly once for every task
 * index t in [0, n_tasks) and returns when all have finished. The caller's thread takes
 * part. Which thread runs a task varies; what a task computes must depend only on t, so
 * results never depend on the thread count. Idle workers spin briefly, then sleep on a
 * condition variable. Concurrent callers are serialised: one job runs at a time. */
#ifndef SPECDEC_KERNELS_CPU_THREADPOOL_H
#define SPECDEC_KERNELS_CPU_THREADPOOL_H

#include "specdec/specdec.h"

typedef struct sd_threadpool sd_threadpool_t;
typedef void (*sd_task_fn)(void *arg, int task);

/* n_threads counts the caller; 0 = online cores. SD_ERR_INVALID_ARG if negative. */
sd_status_t sd_threadpool_create(int n_threads, sd_threadpool_t **out);
void sd_threadpool_destroy(sd_threadpool_t *pool);
int sd_threadpool_size(const sd_threadpool_t *pool);
void sd_threadpool_run(sd_threadpool_t *pool, int n_tasks, sd_task_fn fn, void *arg);

#endif
