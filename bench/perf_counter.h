/* Shared by the bench/ micro-benchmarks: a monotonic clock and user-space hardware counters
 * (instructions, cycles) of the calling thread, which repeat whatever the machine's load. */
#ifndef SPECDEC_BENCH_PERF_COUNTER_H
#define SPECDEC_BENCH_PERF_COUNTER_H

#include <linux/perf_event.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"

/* A counter of this thread's user-space events, or -1 where perf events are not allowed. */
static inline int bench_counter_open(uint64_t config)
{
    struct perf_event_attr a = {.type = PERF_TYPE_HARDWARE, .size = sizeof a, .config = config,
                                .exclude_kernel = 1, .exclude_hv = 1};
    return (int)syscall(SYS_perf_event_open, &a, 0, -1, -1, 0);
}

static inline uint64_t bench_counter_read(int fd)
{
    uint64_t v = 0;
    if (fd >= 0 && read(fd, &v, sizeof v) != sizeof v) v = 0;
    return v;
}

/* CPU time of the calling thread in ns: with one thread, the work without the time other
 * processes held the core (the figure to read on a loaded machine without perf events). */
static inline double bench_thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

#endif
