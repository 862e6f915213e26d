/* One rank of tests/test_comm_mpi.c: `mpirun -n N sd_mpi_rank MODE OUTDIR`, with
 * SPECDEC_COMM=mpi. Each rank writes OUTDIR/rank<R>.txt:
 *   collectives  "hash <case> <fnv1a of the result>" for every allreduce case (f32, f16,
 *                bf16; counts from 1 to past the two-shot threshold), then "ok" when every
 *                allreduce equals the rank-order reference bit for bit and allgather
 *                (also in place), broadcast (roots 0 and n-1) and split_first (every n)
 *                give what they must; else "FAIL <what>" lines. Exit 0 / 1.
 *   timeout      collectives until one fails; "status <op> <STATUS> <seconds in the call>
 *                <message>" for the failing one. Exit 3 on SD_ERR_COMM_TIMEOUT, 4 on another
 *                error, 0 if none failed (the stalled rank never gets there). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm/comm_impl.h"
#include "core/clock.h"
#include "kernels/dtype.h"

static FILE *out;
static int failures;

static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("FAIL ", out);
    vfprintf(out, fmt, ap);
    fputc('\n', out);
    va_end(ap);
    failures++;
}

static uint64_t fnv1a(const void *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ ((const unsigned char *)p)[i]) * 1099511628211ull;
    return h;
}

/* ---- allreduce ------------------------------------------------------------------------- */

/* Rank r's element i as a float already rounded to dt: mixed signs and magnitudes, so the
 * rounding of the sum depends on its order. */
static float element(int r, size_t i, sd_comm_dtype_t dt)
{
    uint32_t h = (uint32_t)i * 2654435761u ^ (uint32_t)(r + 1) * 0x9e3779b9u;
    h ^= h >> 16, h *= 0x85ebca6bu, h ^= h >> 13;
    float v = (float)((int)(h % 4001u) - 2000) * ldexpf(1.0f, (int)(h >> 28) - 8);
    if (dt == SD_COMM_F16) return sd_f16_to_f32(sd_f32_to_f16(v));
    if (dt == SD_COMM_BF16) return sd_bf16_to_f32(sd_f32_to_bf16(v));
    return v;
}

static void put(void *buf, size_t i, float v, sd_comm_dtype_t dt)
{
    if (dt == SD_COMM_F32)
        ((float *)buf)[i] = v;
    else if (dt == SD_COMM_F16)
        ((uint16_t *)buf)[i] = sd_f32_to_f16(v);
    else
        ((uint16_t *)buf)[i] = sd_f32_to_bf16(v);
}

static void allreduce_case(sd_comm_t *w, sd_comm_dtype_t dt, size_t count)
{
    size_t bytes = count * sd_comm_dtype_size(dt);
    char *buf = malloc(bytes), *ref = malloc(bytes);
    for (size_t i = 0; i < count; i++) {
        float acc = element(0, i, dt);
        for (int r = 1; r < w->size; r++) acc += element(r, i, dt);
        put(ref, i, acc, dt);
        put(buf, i, element(w->rank, i, dt), dt);
    }
    sd_status_t s = sd_comm_allreduce_sum(w, buf, count, dt);
    if (s != SD_OK)
        fail("allreduce %s %zu: %s: %s", sd_comm_dtype_name(dt), count, sd_status_string(s),
             sd_last_error());
    else if (memcmp(buf, ref, bytes))
        fail("allreduce %s %zu differs from the rank-order reference", sd_comm_dtype_name(dt),
             count);
    fprintf(out, "hash allreduce-%s-%zu %016llx\n", sd_comm_dtype_name(dt), count,
            (unsigned long long)fnv1a(buf, bytes));
    free(buf);
    free(ref);
}

/* ---- allgather, broadcast, split ------------------------------------------------------ */

static unsigned char pattern(int r, size_t i) { return (unsigned char)(r * 31 + i * 7 + (i >> 8)); }

static void allgather_case(sd_comm_t *w, size_t bytes, int in_place)
{
    size_t n = (size_t)w->size;
    unsigned char *recv = malloc(bytes * n),
                  *send = in_place ? recv + bytes * (size_t)w->rank : malloc(bytes);
    memset(recv, 0xee, bytes * n);
    for (size_t i = 0; i < bytes; i++) send[i] = pattern(w->rank, i);
    sd_status_t s = sd_comm_allgather(w, send, bytes, recv);
    if (s != SD_OK) fail("allgather %zu: %s: %s", bytes, sd_status_string(s), sd_last_error());
    for (size_t r = 0; s == SD_OK && r < n; r++)
        for (size_t i = 0; i < bytes; i++)
            if (recv[r * bytes + i] != pattern((int)r, i)) {
                fail("allgather %zu%s: rank %zu's byte %zu is %d", bytes,
                     in_place ? " in place" : "", r, i, recv[r * bytes + i]);
                break;
            }
    if (!in_place) free(send);
    free(recv);
}

static void broadcast_case(sd_comm_t *w, size_t bytes, int root)
{
    unsigned char *buf = malloc(bytes);
    for (size_t i = 0; i < bytes; i++) buf[i] = w->rank == root ? pattern(root, i) : 0xee;
    sd_status_t s = sd_comm_broadcast(w, buf, bytes, root);
    if (s != SD_OK)
        fail("broadcast %zu from %d: %s: %s", bytes, root, sd_status_string(s), sd_last_error());
    for (size_t i = 0; s == SD_OK && i < bytes; i++)
        if (buf[i] != pattern(root, i)) {
            fail("broadcast %zu from %d: byte %zu is %d", bytes, root, i, buf[i]);
            break;
        }
    free(buf);
}

/* The first n ranks: a communicator of n ranks with the world's rank order whose
 * allreduce sums only them; NULL on the others. */
static void split_case(sd_comm_t *w, int n)
{
    sd_comm_t *sub = NULL;
    sd_status_t s = sd_comm_split_first(w, n, &sub);
    if (s != SD_OK) return fail("split_first %d: %s: %s", n, sd_status_string(s), sd_last_error());
    if ((w->rank < n) != (sub != NULL))
        return fail("split_first %d: rank %d got %s", n, w->rank, sub ? "a comm" : "NULL");
    if (!sub) return;
    float x = (float)(w->rank + 1);
    s = sd_comm_allreduce_sum(sub, &x, 1, SD_COMM_F32);
    if (sd_comm_size(sub) != n || sd_comm_rank(sub) != w->rank ||
        strcmp(sd_comm_backend(sub), "mpi"))
        fail("split_first %d: size %d rank %d backend %s", n, sd_comm_size(sub), sd_comm_rank(sub),
             sd_comm_backend(sub));
    if (s != SD_OK || x != (float)(n * (n + 1) / 2))
        fail("split_first %d: allreduce gave %g (%s)", n, x, sd_status_string(s));
    sd_comm_free(sub);
}

static int collectives(sd_comm_t *w)
{
    static const size_t counts[] = {1, 2, 3, 17, 1000, 16383, 16384, 16385, 32768, 65543, 300001};
    for (int dt = SD_COMM_F32; dt <= SD_COMM_BF16; dt++)
        for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++)
            allreduce_case(w, (sd_comm_dtype_t)dt, counts[i]);
    static const size_t sizes[] = {1, 37, 4096, 100000};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        allgather_case(w, sizes[i], 0);
        allgather_case(w, sizes[i], 1);
        broadcast_case(w, sizes[i], 0);
        broadcast_case(w, sizes[i], w->size - 1);
    }
    for (int n = 1; n <= w->size; n++) split_case(w, n);
    sd_comm_t *none = NULL;
    if (sd_comm_split_first(w, w->size + 1, &none) != SD_ERR_INVALID_ARG || none)
        fail("split_first size+1 accepted");
    sd_status_t s = sd_comm_barrier(w);
    if (s != SD_OK) fail("final barrier: %s", sd_status_string(s));
    if (!failures) fputs("ok\n", out);
    return failures != 0;
}

/* Barriers and allreduces until one fails (SPECDEC_FAULT stalls a peer). */
static int until_failure(sd_comm_t *w)
{
    for (int op = 1; op <= 20; op++) {
        float x = 1;
        double t0 = sd_now();
        sd_status_t s = op % 2 ? sd_comm_barrier(w) : sd_comm_allreduce_sum(w, &x, 1, SD_COMM_F32);
        if (s == SD_OK) continue;
        fprintf(out, "status %d %s %.3f %s\n", op, sd_status_string(s), sd_now() - t0,
                sd_last_error());
        return s == SD_ERR_COMM_TIMEOUT ? 3 : 4;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 3) return fprintf(stderr, "usage: sd_mpi_rank collectives|timeout OUTDIR\n"), 2;
    sd_comm_t *w = NULL;
    sd_status_t s = sd_comm_init(&w);
    if (s != SD_OK)
        return fprintf(stderr, "sd_comm_init: %s: %s\n", sd_status_string(s), sd_last_error()), 5;
    char path[4096];
    snprintf(path, sizeof path, "%s/rank%d.txt", argv[2], w->rank);
    out = fopen(path, "w");
    if (!out) return fprintf(stderr, "cannot write %s\n", path), 5;
    setvbuf(out, NULL, _IOLBF, 0);
    fprintf(out, "backend %s rank %d size %d\n", sd_comm_backend(w), w->rank, w->size);
    int rc = strcmp(argv[1], "timeout") ? collectives(w) : until_failure(w);
    fclose(out);
    sd_comm_free(w);
    return rc;
}
