/* `specdec commbench`: allreduce latency and bus bandwidth of the comm backend that
 * sd_comm_init picks, nccl-tests style (docs/comm.md, "specdec commbench"). p99 is the
 * nearest rank; GB/s = 1e9 B/s. Every result, warm-up included, is checked bit for bit
 * against the rank-order reference (x_0 + x_1 + ... in that order, f32 accumulation, one
 * rounding; inputs a pure function of rank and index). Rank 0 prints the table (and JSON). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "comm/comm.h"
#include "core/clock.h"
#include "kernels/backend.h"
#include "kernels/cuda.h"
#include "kernels/dtype.h"
#include "launch.h"

enum { MAX_SIZES = 64, AUTO = -1 };
#define AUTO_BYTES_PER_SIZE (256.0 * 1024 * 1024) /* auto iters: about this much data per size */
#define MAX_BYTES (1024L * 1024 * 1024)

typedef struct cb_opts {
    long sizes[MAX_SIZES];
    int n_sizes;
    int iters, warmup; /* AUTO: from the size */
    sd_comm_dtype_t dt;
    const char *json_path; /* NULL: table only; "-": JSON on stdout instead of the table */
    const char *device;    /* --device: cpu (host buffers) or cuda[:N] (device buffers) */
} cb_opts_t;

/* Where the benchmarked buffer lives: host memory, or a CUDA backend's device memory (the
 * input uploaded before and the result downloaded after each timed allreduce). */
typedef struct cb_buf {
    sd_backend_t *be; /* NULL: host memory */
    void *dev;
} cb_buf_t;

typedef struct cb_row {
    long bytes;
    size_t count;
    int iters, warmup;
    double median_us, p99_us, algbw, busbw;
    long mismatches; /* results that differ from the reference, over all ranks */
} cb_row_t;

static const char commbench_usage[] =
    "usage: specdec commbench [--sizes 4,64K,1M] [--iters N] [--warmup N] [--dtype f32|f16|bf16]\n"
    "                         [--json FILE] [--device cpu|cuda|cuda:N]\n"
    "  Allreduce latency and bus bandwidth over the ranks of `specdec launch -n N` or mpirun.\n"
    "  --sizes    message sizes in bytes (K/M suffixes); default 4 B .. 64 MiB in powers of 4\n"
    "  --iters    timed iterations per size (default: 200, fewer for large sizes, at least 10)\n"
    "  --warmup   untimed iterations per size (default: iters / 10 + 1)\n"
    "  --json     results as JSON to FILE ('-': stdout, instead of the table)\n"
    "  --device   cuda: device buffers on the GPU of the rank (local rank %% devices, or N),\n"
    "             the backend chosen for GPU models (ENABLE_INTRA_NODE_COMM=1: cuda_ipc,\n"
    "             else nccl); default cpu (host buffers)\n";

/* ---- options ------------------------------------------------------------------------ */

static int parse_size(const char *tok, long *out)
{
    char *end = (char *)tok;
    errno = 0;
    long v = tok[0] >= '0' && tok[0] <= '9' ? strtol(tok, &end, 10) : 0; /* no sign, no space */
    long mult = *end == 'K' ? 1024 : *end == 'M' ? 1024 * 1024 : 1;
    if (mult != 1) end++;
    if (errno || end == tok || *end || v < 1 || v > MAX_BYTES / mult)
        return cli_error("--sizes expects sizes in [1, 1G] bytes (K/M suffixes), got '%s'", tok);
    *out = v * mult;
    return 1;
}

/* Sizes separated by single commas: the whole list (never cut to a buffer), no empty size. */
static int parse_sizes(const char *v, cb_opts_t *o)
{
    char *buf = strdup(v), *rest = buf;
    if (!buf) return cli_error("out of memory");
    int ok = 1;
    o->n_sizes = 0;
    for (char *tok; ok && (tok = strsep(&rest, ",")) != NULL;) {
        if (o->n_sizes == MAX_SIZES) ok = cli_error("--sizes takes at most %d sizes", MAX_SIZES);
        else ok = parse_size(tok, &o->sizes[o->n_sizes++]);
    }
    free(buf);
    return ok;
}

static int parse_dtype(const char *v, sd_comm_dtype_t *dt)
{
    for (int d = SD_COMM_F32; d <= SD_COMM_BF16; d++)
        if (!strcmp(v, sd_comm_dtype_name((sd_comm_dtype_t)d))) return *dt = (sd_comm_dtype_t)d, 1;
    return cli_error("--dtype expects f32, f16 or bf16, got '%s'", v);
}

static int parse_cb_opts(int argc, char **argv, cb_opts_t *o)
{
    *o = (cb_opts_t){.iters = AUTO, .warmup = AUTO, .dt = SD_COMM_F32};
    for (long b = 4; b <= 64L * 1024 * 1024; b *= 4) o->sizes[o->n_sizes++] = b;
    for (int i = 2; i < argc; i++) {
        const char *flag = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int ok;
        if (!v) return cli_error("option '%s' needs a value", flag);
        if (!strcmp(flag, "--sizes"))
            ok = parse_sizes(v, o);
        else if (!strcmp(flag, "--iters"))
            ok = cli_parse_int(flag, v, 1, 1000000, &o->iters);
        else if (!strcmp(flag, "--warmup"))
            ok = cli_parse_int(flag, v, 0, 1000000, &o->warmup);
        else if (!strcmp(flag, "--dtype"))
            ok = parse_dtype(v, &o->dt);
        else if (!strcmp(flag, "--json"))
            ok = (o->json_path = v) != NULL;
        else if (!strcmp(flag, "--device"))
            ok = (o->device = v) != NULL;
        else
            return cli_error("unknown option '%s' (see specdec commbench --help)", flag);
        if (!ok) return 0;
        i++;
    }
    size_t es = sd_comm_dtype_size(o->dt);
    for (int i = 0; i < o->n_sizes; i++)
        if (o->sizes[i] % (long)es)
            return cli_error("--sizes: %ld bytes is not a multiple of the %s element size (%zu)",
                             o->sizes[i], sd_comm_dtype_name(o->dt), es);
    return 1;
}

/* ---- inputs and the reference --------------------------------------------------------- */

/* Rank r's input element i: values of mixed magnitude and sign, so the sum's rounding
 * depends on the order. */
static float input_value(int r, size_t i)
{
    uint32_t h = (uint32_t)(i * 2654435761u) ^ (uint32_t)(r * 40503u + 1);
    h ^= h >> 15, h *= 2246822519u, h ^= h >> 13;
    return (float)((int)(h % 20001u) - 10000) * ldexpf(1.0f, (int)(h >> 28) - 10);
}

static void store(void *buf, size_t i, float v, sd_comm_dtype_t dt)
{
    if (dt == SD_COMM_F32)
        ((float *)buf)[i] = v;
    else
        ((uint16_t *)buf)[i] = dt == SD_COMM_F16 ? sd_f32_to_f16(v) : sd_f32_to_bf16(v);
}

static float load(const void *buf, size_t i, sd_comm_dtype_t dt)
{
    if (dt == SD_COMM_F32) return ((const float *)buf)[i];
    uint16_t h = ((const uint16_t *)buf)[i];
    return dt == SD_COMM_F16 ? sd_f16_to_f32(h) : sd_bf16_to_f32(h);
}

/* in[count] = this rank's input; ref[count] = the rank-order sum of every rank's input. */
static void make_data(void *in, void *ref, size_t count, int rank, int n, sd_comm_dtype_t dt)
{
    for (size_t i = 0; i < count; i++) {
        float acc = 0, x = 0; /* x: rank r's element, rounded to dt */
        for (int r = 0; r < n; r++) {
            store(&x, 0, input_value(r, i), dt);
            acc = r == 0 ? load(&x, 0, dt) : acc + load(&x, 0, dt);
            if (r == rank) store(in, i, load(&x, 0, dt), dt);
        }
        store(ref, i, acc, dt);
    }
}

/* ---- one size ------------------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void auto_counts(const cb_opts_t *o, long bytes, int *iters, int *warmup)
{
    double fit = AUTO_BYTES_PER_SIZE / (double)bytes;
    *iters = o->iters != AUTO ? o->iters : fit > 200 ? 200 : fit < 10 ? 10 : (int)fit;
    *warmup = o->warmup != AUTO ? o->warmup : *iters / 10 + 1;
}

/* Timed loop: t[iters] seconds on this rank; *bad = results that differ from ref. */
static sd_status_t time_size(sd_comm_t *w, const cb_opts_t *o, cb_row_t *row, void *buf,
                             const void *in, const void *ref, double *t, long *bad,
                             const cb_buf_t *d)
{
    size_t bytes = (size_t)row->bytes;
    void *target = d->be ? d->dev : buf;
    for (int it = 0; it < row->warmup + row->iters; it++) {
        if (d->be) sd_backend_upload(d->be, d->dev, in, bytes);
        else memcpy(buf, in, bytes);
        SD_CHECK(sd_comm_barrier(w));
        double t0 = sd_now();
        SD_CHECK(sd_comm_allreduce_sum(w, target, row->count, o->dt));
        if (it >= row->warmup) t[it - row->warmup] = sd_now() - t0;
        if (d->be) {
            sd_backend_download(d->be, buf, d->dev, bytes);
            SD_CHECK(sd_backend_sync(d->be));
        }
        *bad += memcmp(buf, ref, bytes) != 0;
    }
    return SD_OK;
}

/* Every rank's times -> the per-iteration maximum -> median, p99, bandwidths. */
static sd_status_t summarize(sd_comm_t *w, cb_row_t *row, const double *t, long bad)
{
    int n = sd_comm_size(w), k = row->iters;
    double *all = malloc(sizeof *all * (size_t)k * (size_t)n);
    long *bads = malloc(sizeof *bads * (size_t)n);
    sd_status_t s =
        all && bads ? SD_OK : sd_set_error(SD_ERR_OUT_OF_MEMORY, "out of memory for timings");
    if (s == SD_OK) s = sd_comm_allgather(w, t, sizeof *t * (size_t)k, all);
    if (s == SD_OK) s = sd_comm_allgather(w, &bad, sizeof bad, bads);
    for (int i = 0; s == SD_OK && i < k; i++)
        for (int r = 1; r < n; r++) all[i] = fmax(all[i], all[(size_t)r * k + i]);
    for (int r = 0; s == SD_OK && r < n; r++) row->mismatches += bads[r];
    if (s == SD_OK) {
        qsort(all, (size_t)k, sizeof *all, cmp_double);
        double med = k % 2 ? all[k / 2] : 0.5 * (all[k / 2 - 1] + all[k / 2]);
        /* whole nanoseconds, as reported; the bandwidths follow from the reported median */
        row->median_us = round(med * 1e9) / 1e3;
        row->p99_us = round(all[(int)ceil(0.99 * k) - 1] * 1e9) / 1e3;
        row->algbw = row->median_us > 0 ? (double)row->bytes / row->median_us / 1e3 : 0;
        row->busbw = row->algbw * 2.0 * (n - 1) / n;
    }
    free(all);
    free(bads);
    return s;
}

static sd_status_t bench_size(sd_comm_t *w, const cb_opts_t *o, long bytes, cb_row_t *row,
                              cb_buf_t *d)
{
    *row = (cb_row_t){.bytes = bytes, .count = (size_t)bytes / sd_comm_dtype_size(o->dt)};
    auto_counts(o, bytes, &row->iters, &row->warmup);
    char *buf = malloc((size_t)bytes * 3);
    double *t = malloc(sizeof *t * (size_t)row->iters);
    if (!buf || !t) {
        free(buf), free(t);
        return sd_set_error(SD_ERR_OUT_OF_MEMORY, "out of memory for a %ld-byte benchmark", bytes);
    }
    char *in = buf + bytes, *ref = in + bytes;
    make_data(in, ref, row->count, sd_comm_rank(w), sd_comm_size(w), o->dt);
    long bad = 0;
    sd_status_t s = SD_OK;
    if (d->be && (d->dev = sd_backend_alloc(d->be, (size_t)bytes)) == NULL)
        s = sd_set_error(SD_ERR_OUT_OF_MEMORY, "no device memory for %ld bytes", bytes);
    if (s == SD_OK) s = time_size(w, o, row, buf, in, ref, t, &bad, d);
    if (d->dev) sd_backend_release(d->be, d->dev);
    d->dev = NULL;
    if (s == SD_OK) s = summarize(w, row, t, bad);
    free(buf);
    free(t);
    return s;
}

/* ---- output --------------------------------------------------------------------------- */

static void print_table(FILE *f, sd_comm_t *w, const cb_opts_t *o, const cb_row_t *rows, int n_rows)
{
    fprintf(f,
            "# commbench: backend %s, %d ranks, dtype %s, %s buffers; latency = slowest rank per "
            "iteration\n",
            sd_comm_backend(w), sd_comm_size(w), sd_comm_dtype_name(o->dt),
            o->device ? o->device : "cpu");
    fprintf(f, "%12s %12s %6s %12s %12s %12s %12s  %s\n", "bytes", "count", "iters", "median_us",
            "p99_us", "algbw_GB/s", "busbw_GB/s", "check");
    long bad = 0;
    for (int i = 0; i < n_rows; i++) {
        const cb_row_t *r = &rows[i];
        fprintf(f, "%12ld %12zu %6d %12.2f %12.2f %12.4f %12.4f  %s\n", r->bytes, r->count,
                r->iters, r->median_us, r->p99_us, r->algbw, r->busbw,
                r->mismatches ? "MISMATCH" : "ok");
        bad += r->mismatches;
    }
    if (bad)
        fprintf(f, "MISMATCH: %ld results differ from the rank-order reference\n", bad);
    else
        fprintf(f, "# every result equals the rank-order reference on every rank\n");
}

static void print_json(FILE *f, sd_comm_t *w, const cb_opts_t *o, const cb_row_t *rows, int n_rows)
{
    char date[32];
    time_t now = time(NULL);
    struct tm tm;
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&now, &tm));
    fprintf(f, "{\n  \"backend\": \"%s\", \"ranks\": %d, \"dtype\": \"%s\", ", sd_comm_backend(w),
            sd_comm_size(w), sd_comm_dtype_name(o->dt));
    fprintf(f, "\"cores\": %ld, \"date\": \"%s\",\n  \"results\": [\n",
            sysconf(_SC_NPROCESSORS_ONLN), date);
    for (int i = 0; i < n_rows; i++) {
        const cb_row_t *r = &rows[i];
        fprintf(f,
                "    {\"bytes\": %ld, \"count\": %zu, \"iters\": %d, \"warmup\": %d, "
                "\"median_us\": %.3f, \"p99_us\": %.3f, \"algbw_gbs\": %.9g, \"busbw_gbs\": %.9g, "
                "\"ok\": %s}%s\n",
                r->bytes, r->count, r->iters, r->warmup, r->median_us, r->p99_us, r->algbw,
                r->busbw, r->mismatches ? "false" : "true", i + 1 < n_rows ? "," : "");
    }
    fprintf(f, "  ]\n}\n");
}

static int report(sd_comm_t *w, const cb_opts_t *o, const cb_row_t *rows, int n_rows)
{
    if (sd_comm_rank(w) != 0) return 0;
    if (!o->json_path || strcmp(o->json_path, "-")) print_table(stdout, w, o, rows, n_rows);
    if (!o->json_path) return 0;
    FILE *f = strcmp(o->json_path, "-") ? fopen(o->json_path, "w") : stdout;
    if (!f) return !cli_error("cannot write --json %s: %s", o->json_path, strerror(errno));
    print_json(f, w, o, rows, n_rows);
    return f != stdout && fclose(f) != 0;
}

/* The CUDA backend holding the buffers: device N of cuda:N, else local rank % devices. */
static sd_status_t open_device(const char *device, sd_backend_t **be)
{
    int n = 0, index = 0;
    if (strncmp(device, "cuda", 4) != 0 || (device[4] && device[4] != ':'))
        return sd_set_error(SD_ERR_INVALID_ARG, "--device '%s': expected cpu, cuda or cuda:N",
                            device);
    if (device[4] == ':' && !cli_parse_int("--device cuda:N", device + 5, 0, 1023, &index))
        return SD_ERR_INVALID_ARG;
    if (device[4] != ':') {
        SD_CHECK(sd_cuda_device_count(&n));
        index = n > 0 ? sd_comm_local_rank() % n : 0;
    }
    return sd_backend_cuda_create(index, 0.0, be);
}

int cmd_commbench(int argc, char **argv)
{
    if (argc > 2 && (!strcmp(argv[2], "-h") || !strcmp(argv[2], "--help")))
        return fputs(commbench_usage, stdout), 0;
    cb_opts_t o;
    if (!parse_cb_opts(argc, argv, &o)) return 2;
    sd_comm_t *w = NULL;
    sd_status_t s = sd_comm_init_device(&w, o.device);
    if (s != SD_OK) return cli_fail("comm init", s);
    cb_buf_t d = {0};
    if (o.device && strcmp(o.device, "cpu") != 0) {
        s = sd_comm_has_device_allreduce(w)
                ? open_device(o.device, &d.be)
                : sd_set_error(SD_ERR_INVALID_ARG, "--device %s: the %s backend takes host "
                               "buffers only (GPU buffers: ENABLE_INTRA_NODE_COMM=1 for cuda_ipc, "
                               "or a build with NCCL)", o.device, sd_comm_backend(w));
    }
    cb_row_t rows[MAX_SIZES];
    long bad = 0;
    for (int i = 0; s == SD_OK && i < o.n_sizes; i++) {
        s = bench_size(w, &o, o.sizes[i], &rows[i], &d);
        bad += rows[i].mismatches;
    }
    int rc = s != SD_OK ? cli_fail("allreduce benchmark", s) : report(w, &o, rows, o.n_sizes);
    sd_backend_destroy(d.be);
    sd_comm_free(w);
    return rc ? rc : bad != 0;
}
