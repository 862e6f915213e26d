/* One watchdog thread per process: started with the first registered communicator,
 * joined when the last one is unregistered. Every 100 ms it looks at each communicator's
 * running op; one past its deadline by SD_WATCHDOG_GRACE_MS gets its flight record
 * printed (once) and its abort flag set, which every backend wait polls.
 *
 * Locks: g_life (outer) serialises starting/joining the thread; g_reg guards the
 * registry and g_stop; the thread takes c->lock inside g_reg. Owners never hold c->lock
 * while taking g_reg. fork(): the child inherits no thread, so an atfork handler gives
 * it an empty registry (a forked rank starts its own watchdog with its first comm). */
#define _GNU_SOURCE /* pthread_setname_np */
#include <pthread.h>
#include <stdio.h>
#include <time.h>

#include "comm/comm_impl.h"
#include "core/clock.h"
#include "core/log.h"

#define WATCH_PERIOD_NS 100000000L

static pthread_mutex_t g_life = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t g_reg = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_wake;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static sd_comm_t *g_head;  /* g_reg */
static int g_stop;         /* g_reg */
static int g_running;      /* g_life */
static pthread_t g_thread; /* g_life */

static void atfork_prepare(void)
{
    pthread_mutex_lock(&g_life);
    pthread_mutex_lock(&g_reg);
}

static void atfork_parent(void)
{
    pthread_mutex_unlock(&g_reg);
    pthread_mutex_unlock(&g_life);
}

static void init_cond(void)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&g_wake, &a);
    pthread_condattr_destroy(&a);
}

static void atfork_child(void)
{
    g_head = NULL;
    g_stop = 0;
    g_running = 0;
    init_cond(); /* the parent's waiter does not exist here */
    pthread_mutex_unlock(&g_reg);
    pthread_mutex_unlock(&g_life);
}

static void init_once(void)
{
    init_cond();
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

/* c's running op is overdue: print its flight record and abort it (once). */
static void check(sd_comm_t *c, double now)
{
    pthread_mutex_lock(&c->lock);
    double deadline = c->deadline;
    unsigned long long seq = (unsigned long long)c->seq;
    pthread_mutex_unlock(&c->lock);
    double late = now - deadline;
    if (deadline == 0 || late * 1e3 < SD_WATCHDOG_GRACE_MS) return;
    if (atomic_exchange(&c->abort_flag, 1)) return;
    char why[160];
    snprintf(why, sizeof why,
             "watchdog: seq %llu is %.0f ms past its %d ms deadline; aborting the communicator",
             seq, late * 1e3, c->timeout_ms);
    if (!atomic_exchange(&c->flight_printed, 1)) sd_comm_print_flight(c, why);
}

static void *watch(void *arg)
{
    pthread_mutex_lock(&g_reg);
    while (!g_stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += WATCH_PERIOD_NS;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&g_wake, &g_reg, &ts);
        double now = sd_now();
        for (sd_comm_t *c = g_head; c && !g_stop; c = c->wd_next) check(c, now);
    }
    pthread_mutex_unlock(&g_reg);
    return NULL;
}

void sd_watchdog_register(sd_comm_t *c)
{
    pthread_once(&g_once, init_once);
    pthread_mutex_lock(&g_life);
    pthread_mutex_lock(&g_reg);
    c->wd_next = g_head;
    g_head = c;
    g_stop = 0;
    pthread_mutex_unlock(&g_reg);
    if (!g_running) {
        if (pthread_create(&g_thread, NULL, watch, NULL) == 0) {
            g_running = 1;
            pthread_setname_np(g_thread, SD_WATCHDOG_THREAD_NAME); /* for debuggers, tests */
        } else
            sd_log(SD_LOG_WARN, "comm: could not start the watchdog thread");
    }
    pthread_mutex_unlock(&g_life);
}

void sd_watchdog_unregister(sd_comm_t *c)
{
    pthread_once(&g_once, init_once);
    pthread_mutex_lock(&g_life);
    pthread_mutex_lock(&g_reg);
    for (sd_comm_t **p = &g_head; *p; p = &(*p)->wd_next) {
        if (*p == c) {
            *p = c->wd_next;
            break;
        }
    }
    int stop = g_running && g_head == NULL;
    if (stop) {
        g_stop = 1;
        pthread_cond_signal(&g_wake);
    }
    pthread_mutex_unlock(&g_reg);
    if (stop) {
        pthread_join(g_thread, NULL);
        g_running = 0;
    }
    pthread_mutex_unlock(&g_life);
}
