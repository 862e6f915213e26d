/* Persistent pthread pool. A job is published as one 64-bit ticket, (generation << 32) |
 * next task index; a thread claims a task with a compare-and-swap on the ticket, so a
 * worker that wakes late for an old generation can never take a task of a newer one.
 * The job itself sits in slot gen % 2: the caller fills the slot of generation g + 1 only
 * after every task of g has finished, and a successful claim of a g task proves g + 1
 * was not published yet, so a claimed task always reads its own job. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/check.h"
#include "kernels/cpu/threadpool.h"

/* Spin iterations (each with a CPU pause) before sleeping: about tens of microseconds,
 * enough to catch the next op of a forward pass without burning an idle core. */
#define SPIN_ITERS 4000

struct sd_threadpool {
    int n_threads; /* including the caller */
    pthread_t *workers;
    pthread_mutex_t mu;
    pthread_mutex_t run_lock; /* serialises concurrent callers (one job in flight) */
    pthread_cond_t wake, finished;
    _Atomic uint64_t ticket;
    atomic_int done;
    atomic_int stop;
    struct {
        atomic_int n_tasks;
        _Atomic(sd_task_fn) fn;
        _Atomic(void *) arg;
    } job[2];
    int n_tasks; /* of the current job; read by the caller only */
};

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static uint32_t ticket_gen(uint64_t t) { return (uint32_t)(t >> 32); }

/* Claim and run tasks of generation `gen` until none is left. */
static void run_tasks(sd_threadpool_t *pool, uint32_t gen, int is_caller)
{
    uint64_t t = atomic_load_explicit(&pool->ticket, memory_order_acquire);
    for (;;) {
        if (ticket_gen(t) != gen) return;
        uint32_t idx = (uint32_t)t;
        int n_tasks = atomic_load_explicit(&pool->job[gen & 1].n_tasks, memory_order_relaxed);
        if ((int)idx >= n_tasks) return;
        if (!atomic_compare_exchange_weak_explicit(&pool->ticket, &t, t + 1, memory_order_acq_rel,
                                                   memory_order_acquire))
            continue;
        sd_task_fn fn = atomic_load_explicit(&pool->job[gen & 1].fn, memory_order_relaxed);
        fn(atomic_load_explicit(&pool->job[gen & 1].arg, memory_order_relaxed), (int)idx);
        int done = atomic_fetch_add_explicit(&pool->done, 1, memory_order_acq_rel) + 1;
        if (done == n_tasks && !is_caller) {
            pthread_mutex_lock(&pool->mu);
            pthread_cond_signal(&pool->finished);
            pthread_mutex_unlock(&pool->mu);
        }
        t = atomic_load_explicit(&pool->ticket, memory_order_acquire);
    }
}

/* Wait (spin, then sleep) for a generation other than `seen`; returns it, or `seen` on stop. */
static uint32_t wait_new_gen(sd_threadpool_t *pool, uint32_t seen)
{
    for (int i = 0; i < SPIN_ITERS; i++) {
        uint32_t g = ticket_gen(atomic_load_explicit(&pool->ticket, memory_order_acquire));
        if (g != seen || atomic_load(&pool->stop)) return g;
        cpu_relax();
    }
    pthread_mutex_lock(&pool->mu);
    uint32_t g;
    while ((g = ticket_gen(atomic_load(&pool->ticket))) == seen && !atomic_load(&pool->stop))
        pthread_cond_wait(&pool->wake, &pool->mu);
    pthread_mutex_unlock(&pool->mu);
    return g;
}

static void *worker_main(void *p)
{
    sd_threadpool_t *pool = p;
    uint32_t seen = ticket_gen(atomic_load(&pool->ticket));
    for (;;) {
        seen = wait_new_gen(pool, seen);
        if (atomic_load(&pool->stop)) return NULL;
        run_tasks(pool, seen, 0);
    }
}

static void wait_done(sd_threadpool_t *pool)
{
    for (int i = 0; i < SPIN_ITERS; i++) {
        if (atomic_load_explicit(&pool->done, memory_order_acquire) == pool->n_tasks) return;
        cpu_relax();
    }
    pthread_mutex_lock(&pool->mu);
    while (atomic_load_explicit(&pool->done, memory_order_acquire) != pool->n_tasks)
        pthread_cond_wait(&pool->finished, &pool->mu);
    pthread_mutex_unlock(&pool->mu);
}

void sd_threadpool_run(sd_threadpool_t *pool, int n_tasks, sd_task_fn fn, void *arg)
{
    if (n_tasks <= 0) return;
    if (pool->n_threads == 1 || n_tasks == 1) {
        for (int t = 0; t < n_tasks; t++) fn(arg, t);
        return;
    }
    pthread_mutex_lock(&pool->run_lock);
    uint32_t gen = ticket_gen(atomic_load(&pool->ticket)) + 1;
    pool->n_tasks = n_tasks;
    atomic_store_explicit(&pool->job[gen & 1].n_tasks, n_tasks, memory_order_relaxed);
    atomic_store_explicit(&pool->job[gen & 1].fn, fn, memory_order_relaxed);
    atomic_store_explicit(&pool->job[gen & 1].arg, arg, memory_order_relaxed);
    atomic_store_explicit(&pool->done, 0, memory_order_relaxed);
    pthread_mutex_lock(&pool->mu);
    atomic_store_explicit(&pool->ticket, (uint64_t)gen << 32, memory_order_release);
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->mu);
    run_tasks(pool, gen, 1);
    wait_done(pool);
    pthread_mutex_unlock(&pool->run_lock);
}

int sd_threadpool_size(const sd_threadpool_t *pool) { return pool->n_threads; }

static void stop_workers(sd_threadpool_t *pool, int n_started)
{
    pthread_mutex_lock(&pool->mu);
    atomic_store(&pool->stop, 1);
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->mu);
    for (int i = 0; i < n_started; i++) pthread_join(pool->workers[i], NULL);
}

static void free_pool(sd_threadpool_t *pool)
{
    pthread_cond_destroy(&pool->finished);
    pthread_cond_destroy(&pool->wake);
    pthread_mutex_destroy(&pool->mu);
    pthread_mutex_destroy(&pool->run_lock);
    free(pool->workers);
    free(pool);
}

sd_status_t sd_threadpool_create(int n_threads, sd_threadpool_t **out)
{
    *out = NULL;
    if (n_threads < 0)
        return sd_set_error(SD_ERR_INVALID_ARG, "thread count %d is negative", n_threads);
    if (n_threads == 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = cores > 0 ? (int)cores : 1;
    }
    sd_threadpool_t *pool = calloc(1, sizeof *pool);
    SD_ALLOC_CHECK(pool, sizeof *pool, "thread pool");
    pool->n_threads = n_threads;
    pool->workers = calloc((size_t)n_threads, sizeof *pool->workers);
    if (!pool->workers) {
        free(pool);
        return sd_set_error(SD_ERR_OUT_OF_MEMORY, "out of memory for %d thread handles", n_threads);
    }
    pthread_mutex_init(&pool->mu, NULL);
    pthread_mutex_init(&pool->run_lock, NULL);
    pthread_cond_init(&pool->wake, NULL);
    pthread_cond_init(&pool->finished, NULL);
    for (int i = 0; i < n_threads - 1; i++) {
        if (pthread_create(&pool->workers[i], NULL, worker_main, pool) != 0) {
            stop_workers(pool, i);
            free_pool(pool);
            return sd_set_error(SD_ERR_INTERNAL, "cannot start thread %d of %d", i + 1, n_threads);
        }
    }
    *out = pool;
    return SD_OK;
}

void sd_threadpool_destroy(sd_threadpool_t *pool)
{
    if (!pool) return;
    stop_workers(pool, pool->n_threads - 1);
    free_pool(pool);
}
