/* The collective wrappers (sequence numbers, deadlines, flight recorder, fault hook,
 * sticky failure), the helpers every backend shares, and the public communicator API. */
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "comm/comm_impl.h"
#include "core/clock.h"
#include "core/log.h"

/* wait-step schedule: pause (unless ranks outnumber cores), then yield, then sleep */
#define SPIN_PAUSES 256u
#define SPIN_YIELDS 1024u
#define SPIN_SLEEP_NS 50000L

size_t sd_comm_dtype_size(sd_comm_dtype_t dt)
{
    switch (dt) {
    case SD_COMM_F32: return 4;
    case SD_COMM_F16:
    case SD_COMM_BF16: return 2;
    }
    return 0;
}

const char *sd_comm_dtype_name(sd_comm_dtype_t dt)
{
    switch (dt) {
    case SD_COMM_F32: return "f32";
    case SD_COMM_F16: return "f16";
    case SD_COMM_BF16: return "bf16";
    }
    return "unknown-dtype";
}

const char *sd_comm_op_name(sd_comm_op_t op)
{
    static const char *const names[] = {
        [SD_OP_ALLREDUCE] = "allreduce", [SD_OP_ALLGATHER] = "allgather",
        [SD_OP_BROADCAST] = "broadcast", [SD_OP_BARRIER] = "barrier",
        [SD_OP_SPLIT] = "split",         [SD_OP_INIT] = "init",
    };
    if ((unsigned)op >= sizeof names / sizeof names[0]) return "unknown-op";
    return names[op];
}

/* ---- setup / teardown ---------------------------------------------------------------- */

static sd_status_t timeout_from_env(int *ms)
{
    const char *v = getenv("SPECDEC_COMM_TIMEOUT_MS");
    *ms = SD_COMM_TIMEOUT_MS_DEFAULT;
    if (v == NULL || v[0] == '\0') return SD_OK;
    char *end = NULL;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno != 0 || end == v || *end != '\0' || x <= 0 || x > INT_MAX)
        return sd_set_error(SD_ERR_INVALID_ARG,
                            "SPECDEC_COMM_TIMEOUT_MS='%s' is not a positive number of milliseconds",
                            v);
    *ms = (int)x;
    return SD_OK;
}

sd_status_t sd_comm_setup(sd_comm_t *c, const sd_comm_ops_t *ops, void *ctx, int rank, int size,
                          const char *group, int world_rank)
{
    int ms;
    SD_CHECK(timeout_from_env(&ms));
    SD_CHECK(sd_fault_check_env());
    c->ctx = ctx;
    c->rank = rank;
    c->size = size;
    snprintf(c->group, sizeof c->group, "%s", group);
    c->world_rank = world_rank;
    c->timeout_ms = ms;
    pthread_mutex_init(&c->lock, NULL);
    atomic_init(&c->abort_flag, 0);
    atomic_init(&c->flight_printed, 0);
    c->ops = ops; /* last: marks the communicator set up (sd_comm_teardown) */
    sd_watchdog_register(c);
    return SD_OK;
}

void sd_comm_teardown(sd_comm_t *c)
{
    if (c->ops == NULL) return; /* setup failed or never ran */
    sd_watchdog_unregister(c);
    pthread_mutex_destroy(&c->lock);
    c->ops = NULL;
}

/* ---- flight recorder ----------------------------------------------------------------- */

static const char *state_name(sd_flight_state_t s)
{
    switch (s) {
    case SD_FLIGHT_RUNNING: return "running";
    case SD_FLIGHT_DONE: return "done";
    case SD_FLIGHT_FAILED: return "failed";
    }
    return "?";
}

void sd_comm_op_begin(sd_comm_t *c, sd_comm_op_t op, size_t bytes)
{
    double now = sd_now();
    pthread_mutex_lock(&c->lock);
    c->seq++;
    c->flight[c->seq % SD_FLIGHT_LEN] = (sd_flight_entry_t){
        .seq = c->seq, .op = op, .bytes = bytes, .state = SD_FLIGHT_RUNNING,
        .status = SD_OK, .t_start = now,
    };
    c->deadline = now + c->timeout_ms * 1e-3;
    pthread_mutex_unlock(&c->lock);
}

/* Record the failure (the first one sticks) and print the flight record once. */
static void mark_failed(sd_comm_t *c, sd_status_t status)
{
    if (c->failed == SD_OK) {
        c->failed = status;
        snprintf(c->failed_msg, sizeof c->failed_msg, "%s", sd_last_error());
    }
    if (!atomic_exchange(&c->flight_printed, 1)) sd_comm_print_flight(c, c->failed_msg);
}

sd_status_t sd_comm_op_end(sd_comm_t *c, sd_status_t status)
{
    double now = sd_now();
    pthread_mutex_lock(&c->lock);
    sd_flight_entry_t *e = &c->flight[c->seq % SD_FLIGHT_LEN];
    e->state = status == SD_OK ? SD_FLIGHT_DONE : SD_FLIGHT_FAILED;
    e->status = status;
    e->t_end = now;
    c->deadline = 0;
    pthread_mutex_unlock(&c->lock);
    if (status != SD_OK) mark_failed(c, status);
    return status;
}

void sd_comm_print_flight(const sd_comm_t *c, const char *why)
{
    sd_flight_entry_t ring[SD_FLIGHT_LEN];
    pthread_mutex_lock((pthread_mutex_t *)&c->lock);
    uint64_t last = c->seq;
    memcpy(ring, c->flight, sizeof ring);
    pthread_mutex_unlock((pthread_mutex_t *)&c->lock);

    /* one buffer, one write: ranks' records do not interleave line by line */
    char out[SD_FLIGHT_LEN * 128 + 512];
    size_t n = 0;
    n += (size_t)snprintf(out + n, sizeof out - n,
                          "specdec flight: rank %d (world rank %d) group '%s' (%s, %d ranks), "
                          "last seq %llu: %s\n",
                          c->rank, c->world_rank, c->group, c->ops ? c->ops->name : "?", c->size,
                          (unsigned long long)last, why ? why : "");
    uint64_t first = last >= SD_FLIGHT_LEN ? last - SD_FLIGHT_LEN + 1 : 1;
    for (uint64_t s = first; s <= last && n < sizeof out; s++) {
        const sd_flight_entry_t *e = &ring[s % SD_FLIGHT_LEN];
        if (e->seq != s) continue;
        double ms = ((e->t_end > 0 ? e->t_end : sd_now()) - e->t_start) * 1e3;
        n += (size_t)snprintf(out + n, sizeof out - n,
                              "specdec flight:   rank %d group '%s' op %s seq %llu bytes %zu "
                              "state %s%s%s %.3f ms\n",
                              c->rank, c->group, sd_comm_op_name(e->op),
                              (unsigned long long)e->seq, e->bytes, state_name(e->state),
                              e->state == SD_FLIGHT_FAILED ? " " : "",
                              e->state == SD_FLIGHT_FAILED ? sd_status_string(e->status) : "", ms);
    }
    fwrite(out, 1, n < sizeof out ? n : sizeof out - 1, stderr);
    fflush(stderr);
}

/* ---- waiting ------------------------------------------------------------------------- */

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#else
    atomic_signal_fence(memory_order_seq_cst);
#endif
}

static sd_status_t wait_failed(sd_comm_t *c, const char *waiting_for, const char *why)
{
    const sd_flight_entry_t *e = &c->flight[c->seq % SD_FLIGHT_LEN];
    return sd_set_error(SD_ERR_COMM_TIMEOUT,
                        "group '%s' rank %d: %s seq %llu (%zu bytes) %s after %d ms waiting for %s",
                        c->group, c->rank, sd_comm_op_name(e->op), (unsigned long long)e->seq,
                        e->bytes, why, c->timeout_ms, waiting_for ? waiting_for : "peers");
}

/* Online cores, read once (a benign race: every thread computes the same value). */
static unsigned online_cpus(void)
{
    static atomic_uint cpus;
    unsigned n = atomic_load_explicit(&cpus, memory_order_relaxed);
    if (n == 0) {
        long v = sysconf(_SC_NPROCESSORS_ONLN);
        n = v > 0 ? (unsigned)v : 1u;
        atomic_store_explicit(&cpus, n, memory_order_relaxed);
    }
    return n;
}

sd_status_t sd_comm_wait_step(sd_comm_t *c, unsigned *spins, const char *waiting_for)
{
    /* more ranks than cores: the peer we wait for may need this core, so yield at once
     * (4 ranks on 2 cores: 45 -> 7 us per small allreduce) */
    unsigned pauses = (unsigned)c->size > online_cpus() ? 0u : SPIN_PAUSES;
    unsigned n = (*spins)++;
    if (n < pauses) {
        cpu_relax();
        if ((n & 63u) != 63u) return SD_OK; /* the clock every 64 pauses only */
    } else if (n < pauses + SPIN_YIELDS) {
        sched_yield();
    } else {
        struct timespec ts = {.tv_sec = 0, .tv_nsec = SPIN_SLEEP_NS};
        nanosleep(&ts, NULL);
    }
    if (atomic_load_explicit(&c->abort_flag, memory_order_relaxed))
        return wait_failed(c, waiting_for, "aborted by the watchdog");
    if (sd_now() > c->deadline) return wait_failed(c, waiting_for, "timed out");
    return SD_OK;
}

/* ---- the wrappers -------------------------------------------------------------------- */

static sd_status_t op_start(sd_comm_t *c, sd_comm_op_t op, size_t bytes)
{
    if (c->failed != SD_OK)
        return sd_set_error(c->failed,
                            "%s on group '%s' rank %d refused: the communicator failed earlier: %s",
                            sd_comm_op_name(op), c->group, c->rank, c->failed_msg);
    sd_comm_op_begin(c, op, bytes);
    sd_fault_before_collective(c->world_rank);
    return SD_OK;
}

sd_status_t sd_comm_allreduce_sum(sd_comm_t *c, void *buf, size_t count, sd_comm_dtype_t dt)
{
    size_t es = sd_comm_dtype_size(dt);
    if (es == 0) return sd_set_error(SD_ERR_INVALID_ARG, "allreduce: unknown dtype %d", (int)dt);
    if (count > SIZE_MAX / es)
        return sd_set_error(SD_ERR_INVALID_ARG, "allreduce: count %zu overflows", count);
    if (buf == NULL && count > 0)
        return sd_set_error(SD_ERR_INVALID_ARG, "allreduce: NULL buffer with count %zu", count);
    if (c == NULL) return SD_OK;
    SD_CHECK(op_start(c, SD_OP_ALLREDUCE, count * es));
    return sd_comm_op_end(c, c->ops->allreduce_sum(c, buf, count, dt));
}

int sd_comm_has_device_allreduce(const sd_comm_t *c)
{
    return c != NULL && c->ops->allreduce_device != NULL;
}

int sd_comm_device_graphs(const sd_comm_t *c)
{
    return c == NULL || (c->ops->allreduce_device != NULL && c->ops->device_graphs);
}

sd_status_t sd_comm_allreduce_device(sd_comm_t *c, void *buf, size_t count, sd_comm_dtype_t dt,
                                     void *stream)
{
    size_t es = sd_comm_dtype_size(dt);
    if (es == 0) return sd_set_error(SD_ERR_INVALID_ARG, "allreduce: unknown dtype %d", (int)dt);
    if (buf == NULL && count > 0)
        return sd_set_error(SD_ERR_INVALID_ARG, "allreduce: NULL buffer with count %zu", count);
    if (c == NULL || count == 0) return SD_OK;
    if (c->ops->allreduce_device == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG, "the %s backend has no device allreduce",
                            c->ops->name);
    SD_CHECK(op_start(c, SD_OP_ALLREDUCE, count * es));
    return sd_comm_op_end(c, c->ops->allreduce_device(c, buf, count, dt, stream));
}

sd_status_t sd_comm_device_status(sd_comm_t *c)
{
    if (c == NULL || c->ops->device_status == NULL) return SD_OK;
    if (c->failed != SD_OK) return sd_set_error(c->failed, "%s", c->failed_msg);
    sd_status_t st = c->ops->device_status(c);
    if (st != SD_OK) mark_failed(c, st);
    return st;
}

sd_status_t sd_comm_allgather(sd_comm_t *c, const void *send, size_t bytes, void *recv)
{
    if ((send == NULL || recv == NULL) && bytes > 0)
        return sd_set_error(SD_ERR_INVALID_ARG, "allgather: NULL %s buffer with %zu bytes",
                            send == NULL ? "send" : "recv", bytes);
    if (c == NULL) {
        if (send != recv) memmove(recv, send, bytes);
        return SD_OK;
    }
    if (bytes > SIZE_MAX / (size_t)c->size)
        return sd_set_error(SD_ERR_INVALID_ARG, "allgather: %zu bytes x %d ranks overflows", bytes,
                            c->size);
    SD_CHECK(op_start(c, SD_OP_ALLGATHER, bytes));
    return sd_comm_op_end(c, c->ops->allgather(c, send, bytes, recv));
}

sd_status_t sd_comm_broadcast(sd_comm_t *c, void *buf, size_t bytes, int root)
{
    int size = sd_comm_size(c);
    if (root < 0 || root >= size)
        return sd_set_error(SD_ERR_INVALID_ARG, "broadcast: root %d outside [0, %d)", root, size);
    if (buf == NULL && bytes > 0)
        return sd_set_error(SD_ERR_INVALID_ARG, "broadcast: NULL buffer with %zu bytes", bytes);
    if (c == NULL) return SD_OK;
    SD_CHECK(op_start(c, SD_OP_BROADCAST, bytes));
    return sd_comm_op_end(c, c->ops->broadcast(c, buf, bytes, root));
}

sd_status_t sd_comm_barrier(sd_comm_t *c)
{
    if (c == NULL) return SD_OK;
    SD_CHECK(op_start(c, SD_OP_BARRIER, 0));
    return sd_comm_op_end(c, c->ops->barrier(c));
}

#define SD_AGREE_MSG_LEN 512

sd_status_t sd_comm_agree(sd_comm_t *c, sd_status_t local)
{
    int size = sd_comm_size(c);
    if (size == 1) return local;
    int32_t *all = malloc((size_t)size * sizeof *all);
    SD_ALLOC_CHECK(all, (size_t)size * sizeof *all, "status agreement");
    char keep[SD_AGREE_MSG_LEN];
    snprintf(keep, sizeof keep, "%s", sd_last_error());
    int32_t mine = (int32_t)local;
    sd_status_t st = sd_comm_allgather(c, &mine, sizeof mine, all);
    int first = -1;
    for (int r = 0; st == SD_OK && r < size && first < 0; r++)
        if (all[r] != SD_OK) first = r;
    free(all);
    if (st != SD_OK || first < 0) return st;
    char msg[SD_AGREE_MSG_LEN];
    snprintf(msg, sizeof msg, "%s", keep);
    SD_CHECK(sd_comm_broadcast(c, msg, sizeof msg, first));
    msg[SD_AGREE_MSG_LEN - 1] = '\0';
    SD_CHECK(sd_comm_broadcast(c, &mine, sizeof mine, first)); /* the first failure's code */
    return sd_set_error((sd_status_t)mine, "rank %d: %s", first, msg);
}

/* ---- public API ---------------------------------------------------------------------- */

sd_status_t sd_comm_split_first(sd_comm_t *parent, int n, sd_comm_t **out)
{
    if (out == NULL) return sd_set_error(SD_ERR_INVALID_ARG, "split_first: NULL out");
    *out = NULL;
    int size = sd_comm_size(parent);
    if (n < 1 || n > size)
        return sd_set_error(SD_ERR_INVALID_ARG, "split_first: n=%d outside [1, %d] (group '%s')",
                            n, size, parent ? parent->group : "single");
    if (parent == NULL) return SD_OK; /* the first 1 of a single rank: NULL is a single rank */
    SD_CHECK(op_start(parent, SD_OP_SPLIT, 0));
    return sd_comm_op_end(parent, parent->ops->split_first(parent, n, out));
}

int sd_comm_rank(const sd_comm_t *comm) { return comm ? comm->rank : 0; }

int sd_comm_size(const sd_comm_t *comm) { return comm ? comm->size : 1; }

const char *sd_comm_backend(const sd_comm_t *comm) { return comm ? comm->ops->name : "single"; }

void sd_comm_free(sd_comm_t *comm)
{
    if (comm) comm->ops->destroy(comm);
}

int sd_comm_fault_corrupt_step(const sd_comm_t *c, uint64_t step)
{
    return c != NULL && sd_fault_corrupt_step(c->world_rank, step);
}

int sd_comm_fault_corrupt_draft(const sd_comm_t *c, uint64_t step)
{
    return c != NULL && sd_fault_corrupt_draft(c->world_rank, step);
}

/* ---- sd_comm_init: the world from the environment ------------------------------------- */

static sd_status_t env_int(const char *name, const char *v, int lo, int hi, int *out)
{
    char *end = NULL;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno != 0 || end == v || *end != '\0' || x < lo || x > hi)
        return sd_set_error(SD_ERR_INVALID_ARG, "%s='%s' is not an integer in [%d, %d]", name, v,
                            lo, hi);
    *out = (int)x;
    return SD_OK;
}

static const char *env_name(const char *a, const char *b)
{
    const char *v = getenv(a);
    return v && v[0] ? a : b;
}

static sd_status_t read_world_env(sd_comm_env_t *w)
{
    const char *rn = "SPECDEC_RANK", *sn = "SPECDEC_WORLD_SIZE";
    const char *r = getenv(rn), *s = getenv(sn);
    *w = (sd_comm_env_t){.rank = 0, .size = 1, .job = getenv("SPECDEC_JOB_ID")};
    if (w->job && !w->job[0]) w->job = NULL;
    if (!r && !s && sd_comm_mpi_launched()) {
        w->mpirun = 1;
        rn = env_name("OMPI_COMM_WORLD_RANK", "PMI_RANK");
        sn = env_name("OMPI_COMM_WORLD_SIZE", "PMI_SIZE");
        r = getenv(rn);
        s = getenv(sn);
    }
    if (!r && !s) return SD_OK; /* a single rank */
    if (!r || !s)
        return sd_set_error(SD_ERR_INVALID_ARG, "%s and %s go together (%s=%s, %s=%s)", rn, sn,
                            rn, r ? r : "unset", sn, s ? s : "unset");
    SD_CHECK(env_int(sn, s, 1, 1 << 20, &w->size));
    SD_CHECK(env_int(rn, r, 0, w->size - 1, &w->rank));
    return SD_OK;
}

static sd_status_t check_world_size(const sd_comm_env_t *w, sd_comm_t *c)
{
    if (c->size == w->size) return SD_OK;
    return sd_set_error(SD_ERR_INVALID_ARG,
                        "the environment says %d ranks but the %s backend found %d", w->size,
                        c->ops->name, c->size);
}

sd_status_t sd_comm_init(sd_comm_t **world) { return sd_comm_init_device(world, NULL); }

sd_status_t sd_comm_init_device(sd_comm_t **world, const char *device)
{
    if (world == NULL) return sd_set_error(SD_ERR_INVALID_ARG, "sd_comm_init: NULL out");
    *world = NULL;
    sd_comm_env_t w;
    SD_CHECK(read_world_env(&w));
    if (device == NULL || device[0] == '\0') device = getenv("SPECDEC_DEVICE");
    int on_gpu = device && strncmp(device, "cuda", 4) == 0;
    w.device = on_gpu && device[4] == ':' ? atoi(device + 5) : -1;
    const char *name = NULL;
    SD_CHECK(sd_comm_select(w.size, on_gpu, &name));
    sd_comm_t *c = NULL;
    SD_CHECK(sd_comm_backend_find(name)->create(&w, &c));
    sd_status_t st = check_world_size(&w, c);
    if (st != SD_OK) {
        sd_comm_free(c);
        return st;
    }
    if (w.size > 1) sd_log(SD_LOG_INFO, "comm: %s for %d ranks", name, w.size);
    *world = c;
    return SD_OK;
}
