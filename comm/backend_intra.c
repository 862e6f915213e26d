/* The intra-node backend on the CPU: the ranks of a communicator share one POSIX
 * shared-memory segment, /dev/shm/specdec-<job>-<path> (path "world", or
 * "<parent path>.first<n>.<parent seq>" for a split). Segment layout, setup, and why two
 * slot parities with monotonic stamps can neither race nor hang: docs/comm.md, "The CPU
 * `intra` backend".
 *
 * A collective is a sequence of rounds (one per piece of at most INTRA_SLOT_BYTES), numbered
 * 1, 2, ... (ctx->round) on every rank; round r uses the slot set of parity r & 1:
 *   1. copy my piece into my slot, write my descriptor (op, seq, bytes, aux) for the parity;
 *   2. start barrier: store arrive = r (release), wait until every arrive >= r (acquire),
 *      check every descriptor equals mine (else SD_ERR_RANK_DIVERGENCE);
 *   3. one-shot (allreduce <= INTRA_ONE_SHOT_MAX): sum every slot in rank order into my
 *      buffer. Two-shot: sum chunk `rank` of every slot into that chunk of my slot, store
 *      reduced = r, wait until every reduced >= r, copy every rank's chunk out.
 * Sums: sd_comm_reduce_rank_order. Waits: sd_comm_wait_step, plus a liveness check of the
 * ranks not yet arrived every ~10 ms (SD_ERR_PEER_LOST naming the rank). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "comm/comm_impl.h"
#include "core/clock.h"

#define INTRA_MAX_RANKS 64
#define INTRA_SLOT_BYTES ((size_t)256 << 10)
#define INTRA_ONE_SHOT_MAX ((size_t)64 << 10)
#define INTRA_MAGIC UINT64_C(0x314152544e494453) /* "SDINTRA1" */
#define INTRA_LIVENESS_S 0.01
#define INTRA_JOB_MAX 40

typedef struct intra_desc {
    uint64_t seq, bytes;
    uint32_t op, aux; /* aux: dtype (allreduce), root (broadcast), n (split) */
} intra_desc_t;

typedef struct intra_line {
    _Alignas(128) _Atomic uint64_t arrive; /* rounds this rank has entered */
    _Atomic uint64_t reduced;              /* two-shot rounds whose chunk it has summed */
    _Atomic int32_t pid;
    intra_desc_t desc[2]; /* per parity: the op of its latest round of that parity */
} intra_line_t;

typedef struct intra_hdr {
    _Alignas(128) _Atomic uint64_t magic; /* INTRA_MAGIC, stored last by rank 0 */
    uint32_t size, slot_bytes;
    atomic_int attached; /* ranks that have mapped the segment */
    atomic_int unlinked; /* rank 0 has removed the name */
    intra_line_t line[INTRA_MAX_RANKS];
} intra_hdr_t;

#define INTRA_HDR_BYTES ((sizeof(intra_hdr_t) + 4095) & ~(size_t)4095)

typedef struct intra_ctx {
    intra_hdr_t *hdr;
    size_t map_bytes;
    uint8_t *slots;        /* [2][size][INTRA_SLOT_BYTES] */
    uint64_t round;        /* rounds run so far: the same on every rank */
    int created, unlinked; /* rank 0: made the segment / removed its name */
    char job[INTRA_JOB_MAX + 1];
    char path[160]; /* "world", "world.first2.5", ... */
    char seg[224];  /* "/specdec-<job>-<path>" */
} intra_ctx_t;

typedef enum stamp { STAMP_ARRIVE, STAMP_REDUCED } stamp_t;

static sd_status_t intra_make(int rank, int size, const char *job, const char *group,
                              const char *path, int world_rank, sd_comm_t **out);

static uint8_t *slot(const sd_comm_t *c, uint64_t r, int q)
{
    const intra_ctx_t *x = c->ctx;
    return x->slots + ((size_t)(r & 1) * (size_t)c->size + (size_t)q) * INTRA_SLOT_BYTES;
}

static const sd_flight_entry_t *current(const sd_comm_t *c)
{
    return &c->flight[c->seq % SD_FLIGHT_LEN];
}

/* Two-shot: rank q's chunk [lo, hi) of n elements, 64-byte aligned. */
static void chunk(size_t n, int p, int q, size_t es, size_t *lo, size_t *hi)
{
    size_t align = 64 / es, per = (n + (size_t)p - 1) / (size_t)p;
    per = (per + align - 1) / align * align;
    *lo = (size_t)q * per < n ? (size_t)q * per : n;
    *hi = *lo + per < n ? *lo + per : n;
}

/* ---- waiting for peers ----------------------------------------------------------------- */

static _Atomic uint64_t *stamp_of(const sd_comm_t *c, int q, stamp_t s)
{
    intra_line_t *l = &((intra_ctx_t *)c->ctx)->hdr->line[q];
    return s == STAMP_ARRIVE ? &l->arrive : &l->reduced;
}

/* 1 when pid is gone or a zombie (dead, not yet reaped by its parent). */
static int pid_dead(pid_t pid)
{
    if (kill(pid, 0) != 0) return errno == ESRCH;
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return errno == ENOENT;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* "pid (comm) S ...": comm may hold ')' */
    return p && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X');
}

/* SD_ERR_PEER_LOST for the first rank below stamp r whose process has died. */
static sd_status_t check_alive(const sd_comm_t *c, stamp_t s, uint64_t r)
{
    const intra_ctx_t *x = c->ctx;
    for (int q = 0; q < c->size; q++) {
        if (q == c->rank || atomic_load_explicit(stamp_of(c, q, s), memory_order_relaxed) >= r)
            continue;
        pid_t pid = atomic_load_explicit(&x->hdr->line[q].pid, memory_order_relaxed);
        if (pid <= 0 || !pid_dead(pid)) continue;
        const sd_flight_entry_t *e = current(c);
        return sd_set_error(SD_ERR_PEER_LOST,
                            "group '%s' rank %d: rank %d (pid %d) died; %s seq %llu (%zu bytes) "
                            "cannot complete",
                            c->group, c->rank, q, (int)pid, sd_comm_op_name(e->op),
                            (unsigned long long)e->seq, e->bytes);
    }
    return SD_OK;
}

/* The timeout message, naming the ranks still below stamp r. */
static sd_status_t not_arrived(const sd_comm_t *c, stamp_t s, uint64_t r, sd_status_t st)
{
    char list[256] = "";
    size_t n = 0;
    for (int q = 0; q < c->size && n < sizeof list - 8; q++)
        if (atomic_load_explicit(stamp_of(c, q, s), memory_order_relaxed) < r)
            n += (size_t)snprintf(list + n, sizeof list - n, "%s%d", n ? ", " : "", q);
    const sd_flight_entry_t *e = current(c);
    return sd_set_error(st, "group '%s' rank %d: %s seq %llu (%zu bytes) %s after %d ms: rank(s) %s "
                            "had not %s",
                        c->group, c->rank, sd_comm_op_name(e->op), (unsigned long long)e->seq,
                        e->bytes,
                        atomic_load(&c->abort_flag) ? "aborted by the watchdog" : "timed out",
                        c->timeout_ms, list,
                        s == STAMP_ARRIVE ? "arrived" : "finished their reduce-scatter chunk");
}

/* Wait until every rank's stamp s is >= r. */
static sd_status_t wait_all(sd_comm_t *c, stamp_t s, uint64_t r)
{
    unsigned spins = 0;
    double next_check = 0;
    for (int q = 0; q < c->size;) {
        if (atomic_load_explicit(stamp_of(c, q, s), memory_order_acquire) >= r) {
            q++;
            continue;
        }
        sd_status_t st = sd_comm_wait_step(c, &spins, "peers");
        if (st != SD_OK) return not_arrived(c, s, r, st);
        if ((spins & 31u) != 0) continue;
        double now = sd_now();
        if (now < next_check) continue;
        next_check = now + INTRA_LIVENESS_S;
        SD_CHECK(check_alive(c, s, r));
    }
    return SD_OK;
}

static sd_status_t diverged(const sd_comm_t *c, int q, const intra_desc_t *o, const intra_desc_t *d)
{
    return sd_set_error(SD_ERR_RANK_DIVERGENCE,
                        "group '%s': ranks called different collectives: rank %d %s seq %llu "
                        "(%llu bytes, arg %u), rank %d %s seq %llu (%llu bytes, arg %u)",
                        c->group, c->rank, sd_comm_op_name((sd_comm_op_t)d->op),
                        (unsigned long long)d->seq, (unsigned long long)d->bytes, d->aux, q,
                        sd_comm_op_name((sd_comm_op_t)o->op), (unsigned long long)o->seq,
                        (unsigned long long)o->bytes, o->aux);
}

/* Step 2 of round r: publish d and the arrive stamp, wait for all, compare descriptors. */
static sd_status_t start_round(sd_comm_t *c, uint64_t r, const intra_desc_t *d)
{
    intra_hdr_t *h = ((intra_ctx_t *)c->ctx)->hdr;
    h->line[c->rank].desc[r & 1] = *d;
    atomic_store_explicit(&h->line[c->rank].arrive, r, memory_order_release);
    SD_CHECK(wait_all(c, STAMP_ARRIVE, r));
    for (int q = 0; q < c->size; q++) {
        const intra_desc_t *o = &h->line[q].desc[r & 1];
        if (memcmp(o, d, sizeof *d) != 0) return diverged(c, q, o, d);
    }
    return SD_OK;
}

/* ---- collectives ----------------------------------------------------------------------- */

static sd_status_t one_shot(sd_comm_t *c, void *buf, size_t n, sd_comm_dtype_t dt,
                            const intra_desc_t *d)
{
    uint64_t r = ++((intra_ctx_t *)c->ctx)->round;
    if (n) memcpy(slot(c, r, c->rank), buf, n * sd_comm_dtype_size(dt));
    SD_CHECK(start_round(c, r, d));
    uint8_t *src[INTRA_MAX_RANKS];
    for (int q = 0; q < c->size; q++) src[q] = slot(c, r, q);
    sd_comm_reduce_rank_order(buf, src, c->size, n, dt);
    return SD_OK;
}

/* One piece buf[n] (n * es <= INTRA_SLOT_BYTES): reduce-scatter, then allgather. */
static sd_status_t two_shot(sd_comm_t *c, uint8_t *buf, size_t n, sd_comm_dtype_t dt,
                            const intra_desc_t *d)
{
    size_t es = sd_comm_dtype_size(dt), lo, hi;
    uint64_t r = ++((intra_ctx_t *)c->ctx)->round;
    memcpy(slot(c, r, c->rank), buf, n * es);
    SD_CHECK(start_round(c, r, d));
    chunk(n, c->size, c->rank, es, &lo, &hi);
    uint8_t *src[INTRA_MAX_RANKS];
    for (int q = 0; q < c->size; q++) src[q] = slot(c, r, q) + lo * es;
    sd_comm_reduce_rank_order(src[c->rank], src, c->size, hi - lo, dt); /* in place */
    atomic_store_explicit(stamp_of(c, c->rank, STAMP_REDUCED), r, memory_order_release);
    SD_CHECK(wait_all(c, STAMP_REDUCED, r));
    for (int q = 0; q < c->size; q++) {
        chunk(n, c->size, q, es, &lo, &hi);
        memcpy(buf + lo * es, slot(c, r, q) + lo * es, (hi - lo) * es);
    }
    return SD_OK;
}

static sd_status_t intra_allreduce(sd_comm_t *c, void *buf, size_t count, sd_comm_dtype_t dt)
{
    size_t es = sd_comm_dtype_size(dt), per = INTRA_SLOT_BYTES / es;
    const intra_desc_t d = {.seq = c->seq, .bytes = count * es, .op = SD_OP_ALLREDUCE, .aux = dt};
    if (count * es <= INTRA_ONE_SHOT_MAX) return one_shot(c, buf, count, dt, &d);
    for (size_t i = 0; i < count; i += per)
        SD_CHECK(two_shot(c, (uint8_t *)buf + i * es, count - i < per ? count - i : per, dt, &d));
    return SD_OK;
}

/* allgather with a given descriptor (split_first reuses it under its own op) */
static sd_status_t gather(sd_comm_t *c, const void *send, size_t bytes, void *recv,
                          const intra_desc_t *d)
{
    size_t off = 0;
    do {
        size_t len = bytes - off < INTRA_SLOT_BYTES ? bytes - off : INTRA_SLOT_BYTES;
        uint64_t r = ++((intra_ctx_t *)c->ctx)->round;
        if (len) memcpy(slot(c, r, c->rank), (const uint8_t *)send + off, len);
        SD_CHECK(start_round(c, r, d));
        for (int q = 0; q < c->size && len; q++)
            memcpy((uint8_t *)recv + (size_t)q * bytes + off, slot(c, r, q), len);
        off += len;
    } while (off < bytes);
    return SD_OK;
}

static sd_status_t intra_allgather(sd_comm_t *c, const void *send, size_t bytes, void *recv)
{
    const intra_desc_t d = {.seq = c->seq, .bytes = bytes, .op = SD_OP_ALLGATHER};
    return gather(c, send, bytes, recv, &d);
}

static sd_status_t intra_broadcast(sd_comm_t *c, void *buf, size_t bytes, int root)
{
    const intra_desc_t d = {.seq = c->seq, .bytes = bytes, .op = SD_OP_BROADCAST, .aux = (uint32_t)root};
    size_t off = 0;
    do {
        size_t len = bytes - off < INTRA_SLOT_BYTES ? bytes - off : INTRA_SLOT_BYTES;
        uint64_t r = ++((intra_ctx_t *)c->ctx)->round;
        if (c->rank == root && len) memcpy(slot(c, r, root), (uint8_t *)buf + off, len);
        SD_CHECK(start_round(c, r, &d));
        if (c->rank != root && len) memcpy((uint8_t *)buf + off, slot(c, r, root), len);
        off += len;
    } while (off < bytes);
    return SD_OK;
}

static sd_status_t intra_barrier(sd_comm_t *c)
{
    const intra_desc_t d = {.seq = c->seq, .op = SD_OP_BARRIER};
    return start_round(c, ++((intra_ctx_t *)c->ctx)->round, &d);
}

/* Ranks < n make the child; then every parent rank learns whether all of them did, so the
 * split succeeds or fails alike everywhere. */
static sd_status_t intra_split_first(sd_comm_t *c, int n, sd_comm_t **out)
{
    intra_ctx_t *x = c->ctx;
    sd_status_t mine = SD_OK;
    sd_comm_t *child = NULL;
    char path[sizeof x->path], group[16], msg[256] = "";
    if (c->rank < n) {
        snprintf(group, sizeof group, "first%d", n & 0xffff); /* n <= INTRA_MAX_RANKS */
        int len = snprintf(path, sizeof path, "%s.first%d.%llu", x->path, n,
                           (unsigned long long)c->seq);
        mine = len >= (int)sizeof path
                   ? sd_set_error(SD_ERR_INVALID_ARG, "split_first: splits nested too deep "
                                                      "(segment name of group '%s' too long)",
                                  c->group)
                   : intra_make(c->rank, n, x->job, group, path, c->world_rank, &child);
        snprintf(msg, sizeof msg, "%s", sd_last_error());
    }
    int32_t all[INTRA_MAX_RANKS], me = (int32_t)mine;
    const intra_desc_t d = {.seq = c->seq, .bytes = sizeof me, .op = SD_OP_SPLIT, .aux = (uint32_t)n};
    sd_status_t st = gather(c, &me, sizeof me, all, &d);
    for (int q = 0; q < c->size && st == SD_OK; q++) {
        if (all[q] == SD_OK) continue;
        st = mine != SD_OK ? sd_set_error(mine, "%s", msg)
                           : sd_set_error((sd_status_t)all[q],
                                          "split_first(%d) of group '%s': rank %d could not join "
                                          "the new group (%s)",
                                          n, c->group, q, sd_status_string((sd_status_t)all[q]));
    }
    if (st != SD_OK) {
        sd_comm_free(child);
        return st;
    }
    *out = child;
    return SD_OK;
}

/* ---- setup ----------------------------------------------------------------------------- */

static void intra_destroy(sd_comm_t *c)
{
    intra_ctx_t *x = c->ctx;
    sd_comm_teardown(c);
    if (x->created && !x->unlinked) shm_unlink(x->seg);
    if (x->hdr) munmap(x->hdr, x->map_bytes);
    free(x);
    free(c);
}

static const sd_comm_ops_t intra_ops = {
    .name = "intra",
    .allreduce_sum = intra_allreduce,
    .allgather = intra_allgather,
    .broadcast = intra_broadcast,
    .barrier = intra_barrier,
    .split_first = intra_split_first,
    .destroy = intra_destroy,
};

static sd_status_t map_segment(intra_ctx_t *x, int fd)
{
    void *p = mmap(NULL, x->map_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        return sd_set_error(SD_ERR_IO, "intra: mmap of /dev/shm%s (%zu bytes): %s", x->seg,
                            x->map_bytes, strerror(errno));
    x->hdr = p;
    x->slots = (uint8_t *)p + INTRA_HDR_BYTES;
    return SD_OK;
}

/* Rank 0: create, size (reserving the pages: no SIGBUS later), fill the header, publish. */
static sd_status_t create_segment(sd_comm_t *c)
{
    intra_ctx_t *x = c->ctx;
    int fd = shm_open(x->seg, O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0 && errno == EEXIST)
        return sd_set_error(SD_ERR_IO,
                            "intra: /dev/shm%s already exists: another job runs with "
                            "SPECDEC_JOB_ID=%s, or a crashed one left it behind (remove it)",
                            x->seg, x->job);
    if (fd < 0) return sd_set_error(SD_ERR_IO, "intra: shm_open(%s): %s", x->seg, strerror(errno));
    x->created = 1;
    int err = ftruncate(fd, (off_t)x->map_bytes) != 0 ? errno
                                                       : posix_fallocate(fd, 0, (off_t)x->map_bytes);
    sd_status_t st = err ? sd_set_error(SD_ERR_IO, "intra: cannot size /dev/shm%s to %zu bytes: %s",
                                        x->seg, x->map_bytes, strerror(err))
                         : map_segment(x, fd);
    close(fd);
    SD_CHECK(st);
    x->hdr->size = (uint32_t)c->size;
    x->hdr->slot_bytes = (uint32_t)INTRA_SLOT_BYTES;
    atomic_store(&x->hdr->line[0].pid, (int32_t)getpid());
    atomic_store(&x->hdr->attached, 1);
    atomic_store_explicit(&x->hdr->magic, INTRA_MAGIC, memory_order_release);
    return SD_OK;
}

/* Ranks > 0: the header first (is it made for this group?), then the whole segment. */
static sd_status_t attach_fd(sd_comm_t *c, int fd)
{
    intra_ctx_t *x = c->ctx;
    intra_hdr_t *h = mmap(NULL, INTRA_HDR_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (h == MAP_FAILED)
        return sd_set_error(SD_ERR_IO, "intra: mmap of /dev/shm%s: %s", x->seg, strerror(errno));
    sd_status_t st = SD_OK;
    unsigned spins = 0;
    while (st == SD_OK && atomic_load_explicit(&h->magic, memory_order_acquire) != INTRA_MAGIC)
        st = sd_comm_wait_step(c, &spins, "rank 0 to initialise the segment");
    if (st == SD_OK && (h->size != (uint32_t)c->size || h->slot_bytes != INTRA_SLOT_BYTES))
        st = sd_set_error(SD_ERR_INVALID_ARG,
                          "intra: /dev/shm%s is made for %u ranks (slot %u bytes); rank %d was "
                          "started with %d ranks (slot %zu bytes)",
                          x->seg, h->size, h->slot_bytes, c->rank, c->size, INTRA_SLOT_BYTES);
    munmap(h, INTRA_HDR_BYTES);
    SD_CHECK(st);
    SD_CHECK(map_segment(x, fd));
    atomic_store(&x->hdr->line[c->rank].pid, (int32_t)getpid());
    atomic_fetch_add_explicit(&x->hdr->attached, 1, memory_order_acq_rel);
    return SD_OK;
}

static sd_status_t open_segment(sd_comm_t *c)
{
    intra_ctx_t *x = c->ctx;
    unsigned spins = 0;
    for (;;) { /* until rank 0 has created it and sized at least the header */
        int fd = shm_open(x->seg, O_RDWR, 0);
        struct stat sb;
        if (fd >= 0 && fstat(fd, &sb) == 0 && (size_t)sb.st_size >= INTRA_HDR_BYTES) {
            sd_status_t st = attach_fd(c, fd);
            close(fd);
            return st;
        }
        if (fd >= 0)
            close(fd);
        else if (errno != ENOENT)
            return sd_set_error(SD_ERR_IO, "intra: shm_open(%s): %s", x->seg, strerror(errno));
        SD_CHECK(sd_comm_wait_step(c, &spins, "rank 0 to create the segment"));
    }
}

static sd_status_t not_attached(const sd_comm_t *c, sd_status_t st)
{
    const intra_ctx_t *x = c->ctx;
    char list[256] = "";
    size_t n = 0;
    for (int q = 1; q < c->size && n < sizeof list - 8; q++)
        if (atomic_load(&x->hdr->line[q].pid) == 0)
            n += (size_t)snprintf(list + n, sizeof list - n, "%s%d", n ? ", " : "", q);
    return sd_set_error(st, "group '%s': rank(s) %s did not attach to /dev/shm%s within %d ms",
                        c->group, list, x->seg, c->timeout_ms);
}

/* Rank 0 unlinks the name once every rank has attached; the others wait for that. */
static sd_status_t rendezvous(sd_comm_t *c)
{
    intra_ctx_t *x = c->ctx;
    intra_hdr_t *h = x->hdr;
    unsigned spins = 0;
    if (c->rank == 0) {
        while (atomic_load_explicit(&h->attached, memory_order_acquire) < c->size) {
            sd_status_t st = sd_comm_wait_step(c, &spins, "ranks to attach");
            if (st != SD_OK) return not_attached(c, st);
        }
        shm_unlink(x->seg);
        x->unlinked = 1;
        atomic_store_explicit(&h->unlinked, 1, memory_order_release);
        return SD_OK;
    }
    while (!atomic_load_explicit(&h->unlinked, memory_order_acquire))
        SD_CHECK(sd_comm_wait_step(c, &spins, "rank 0 to see every rank attached"));
    return SD_OK;
}

static sd_status_t intra_make(int rank, int size, const char *job, const char *group,
                              const char *path, int world_rank, sd_comm_t **out)
{
    *out = NULL;
    sd_comm_t *c = calloc(1, sizeof *c);
    intra_ctx_t *x = calloc(1, sizeof *x);
    if (c == NULL || x == NULL) {
        free(c);
        free(x);
        return sd_set_error(SD_ERR_OUT_OF_MEMORY, "out of memory for an intra communicator");
    }
    snprintf(x->job, sizeof x->job, "%s", job);
    snprintf(x->path, sizeof x->path, "%s", path);
    snprintf(x->seg, sizeof x->seg, "/specdec-%s-%s", x->job, x->path);
    x->map_bytes = INTRA_HDR_BYTES + 2 * (size_t)size * INTRA_SLOT_BYTES;
    sd_status_t st = sd_comm_setup(c, &intra_ops, x, rank, size, group, world_rank);
    if (st != SD_OK) {
        free(x);
        free(c);
        return st;
    }
    sd_comm_op_begin(c, SD_OP_INIT, x->map_bytes);
    st = rank == 0 ? create_segment(c) : open_segment(c);
    if (st == SD_OK) st = rendezvous(c);
    if (sd_comm_op_end(c, st) != SD_OK) {
        intra_destroy(c);
        return st;
    }
    *out = c;
    return SD_OK;
}

static int valid_job_id(const char *job)
{
    size_t n = strlen(job);
    if (n == 0 || n > INTRA_JOB_MAX) return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = job[i];
        int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                 ch == '_' || ch == '-';
        if (!ok) return 0;
    }
    return 1;
}

sd_status_t sd_comm_intra_new(int rank, int size, const char *job_id, sd_comm_t **out)
{
    if (out == NULL) return sd_set_error(SD_ERR_INVALID_ARG, "sd_comm_intra_new: NULL out");
    *out = NULL;
    if (size < 1 || size > INTRA_MAX_RANKS)
        return sd_set_error(SD_ERR_INVALID_ARG, "intra: world size %d outside [1, %d]", size,
                            INTRA_MAX_RANKS);
    if (rank < 0 || rank >= size)
        return sd_set_error(SD_ERR_INVALID_ARG, "intra: rank %d outside [0, %d)", rank, size);
    if (job_id == NULL || !valid_job_id(job_id))
        return sd_set_error(SD_ERR_INVALID_ARG,
                            "intra: SPECDEC_JOB_ID='%s' must be 1-%d of [A-Za-z0-9_-]",
                            job_id ? job_id : "(null)", INTRA_JOB_MAX);
    return intra_make(rank, size, job_id, "world", "world", rank, out);
}
