/* Micro-benchmark: the CPU backend's matmul on n = 1..9 activation rows (the verification
 * sizes of speculative decoding), per shape and weight type. For each n it reports the time
 * of one call per activation row and the cost of the call relative to one single-row call,
 * so "n rows cost x single rows" can be read directly.
 *
 *   matmul_rows [-t THREADS] [-r REPS] [--cold] [--max-n N | --n N,N,..] [SHAPE ...]
 *   SHAPE = ROWSxCOLS:TYPE, e.g. 576x576:Q4_1 (default: SmolLM2-135M's Q4_1 matrices and its
 *   Q8_0 output head)
 *
 * --cold rotates over copies of the weight totalling >= 256 MiB, so every call streams its
 * weights from memory as a decode step does (the model is larger than the caches); without
 * it the weight stays in cache. Each figure is the minimum over REPS calls (robust to other
 * load on a shared machine). --n lists the row counts instead of 1..N (up to 1024: prefill
 * sizes, e.g. --n 1,64,512; "x 1-row" counts in the first one's time per row). With one
 * thread the call runs on the calling thread and, where perf events are allowed, user-space
 * instructions and cycles per row are reported too (repeatable whatever the load). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "bench/perf_counter.h"
#include "kernels/backend.h"

enum { MAX_N = 1024, MAX_NS = 32, COLD_BYTES = 256 << 20 };

typedef struct {
    int64_t rows, cols;
    sd_dtype_t type;
} shape_t;

static const shape_t default_shapes[] = {
    {576, 576, SD_DTYPE_Q4_1},   /* attn q / o */
    {1536, 576, SD_DTYPE_Q4_1},  /* ffn gate / up */
    {576, 1536, SD_DTYPE_Q4_1},  /* ffn down */
    {49152, 576, SD_DTYPE_Q8_0}, /* output head (tied embedding) */
};

static uint32_t xorshift(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

static float rand_unit(uint32_t *s) { return (float)(xorshift(s) >> 8) / 16777216.0f * 2.0f - 1.0f; }

/* Any type this build computes with, by its GGML name. */
static int parse_type(const char *s, sd_dtype_t *t)
{
    for (uint32_t id = 0; id < 64; id++)
        if (sd_dtype_supported(id) && strcmp(s, sd_dtype_name(id)) == 0) return *t = (sd_dtype_t)id, 0;
    return -1;
}

/* copies[ncopy] of one random weight of the shape (one copy when hot). */
static int make_weights(const shape_t *sh, int cold, sd_weight_t **out, int *ncopy)
{
    size_t row_bytes;
    if (sd_dtype_row_bytes(sh->type, sh->cols, &row_bytes) != SD_OK) return -1;
    size_t bytes = row_bytes * (size_t)sh->rows;
    int n = cold ? (int)((COLD_BYTES + bytes - 1) / bytes) : 1;
    sd_weight_t *w = calloc((size_t)n, sizeof *w);
    float *row = malloc(sizeof(float) * (size_t)sh->cols);
    uint32_t seed = 12345;
    for (int c = 0; c < n; c++) {
        char *data = malloc(bytes);
        if (c > 0) memcpy(data, w[0].data, bytes);
        for (int64_t r = 0; r < sh->rows && c == 0; r++) {
            for (int64_t j = 0; j < sh->cols; j++) row[j] = 0.1f * rand_unit(&seed);
            sd_quantize_row(sh->type, row, data + (size_t)r * row_bytes, sh->cols);
        }
        w[c] = (sd_weight_t){.type = sh->type, .rows = sh->rows, .cols = sh->cols,
                             .row_bytes = row_bytes, .data = data};
    }
    free(row);
    *out = w, *ncopy = n;
    return 0;
}

typedef struct {
    double ns;
    uint64_t instr, cycles;
} cost_t;

/* Minimum cost of one matmul of n rows over reps calls (rotating over the copies). */
static cost_t measure(sd_backend_t *be, const sd_weight_t *w, int ncopy, const float *x, int n,
                      float *y, int reps, const int fd[2])
{
    cost_t best = {.ns = 1e300, .instr = UINT64_MAX, .cycles = UINT64_MAX};
    for (int i = 0; i < reps; i++) {
        const sd_weight_t *wi = &w[i % ncopy];
        uint64_t i0 = bench_counter_read(fd[0]), c0 = bench_counter_read(fd[1]);
        double t0 = (sd_now() * 1e9);
        sd_backend_matmul(be, wi, x, n, NULL, y);
        double t = (sd_now() * 1e9) - t0;
        uint64_t di = bench_counter_read(fd[0]) - i0, dc = bench_counter_read(fd[1]) - c0;
        best.ns = t < best.ns ? t : best.ns;
        best.instr = di < best.instr ? di : best.instr;
        best.cycles = dc < best.cycles ? dc : best.cycles;
    }
    return best;
}

static void bench_shape(sd_backend_t *be, const shape_t *sh, int cold, int reps, const int *ns, int nn,
                        const int fd[2])
{
    sd_weight_t *w;
    int ncopy;
    if (make_weights(sh, cold, &w, &ncopy) != 0) {
        fprintf(stderr, "matmul_rows: %lldx%lld:%s: cols not a multiple of the block size\n",
                (long long)sh->rows, (long long)sh->cols, sd_dtype_name(sh->type));
        return;
    }
    int max_n = 0;
    for (int i = 0; i < nn; i++) max_n = ns[i] > max_n ? ns[i] : max_n;
    float *x = malloc(sizeof(float) * (size_t)max_n * (size_t)sh->cols);
    float *y = malloc(sizeof(float) * (size_t)max_n * (size_t)sh->rows);
    uint32_t seed = 777;
    for (int64_t i = 0; i < max_n * sh->cols; i++) x[i] = rand_unit(&seed);
    printf("%lldx%lld %s (%s)\n", (long long)sh->rows, (long long)sh->cols, sd_dtype_name(sh->type),
           cold ? "cold" : "hot");
    printf("   n   us/call   ns/row  x 1-row  instr/row  cycles/row\n");
    double t1 = 0.0;
    for (int i = 0; i < nn; i++) {
        int n = ns[i];
        measure(be, w, ncopy, x, n, y, ncopy < 3 ? 3 : ncopy, fd); /* warm-up */
        cost_t c = measure(be, w, ncopy, x, n, y, reps, fd);
        if (i == 0) t1 = c.ns / n;
        printf("  %2d  %8.1f  %7.0f  %7.2f", n, c.ns / 1e3, c.ns / n, c.ns / t1);
        if (fd[0] >= 0) printf("  %9.0f  %10.0f", (double)c.instr / n, (double)c.cycles / n);
        printf("\n");
    }
    for (int c = 0; c < ncopy; c++) free((void *)w[c].data);
    free(w);
    free(x);
    free(y);
}

int main(int argc, char **argv)
{
    int threads = 1, reps = 200, cold = 0, max_n = 9, nshape = 0, ns[MAX_NS], nn = 0;
    shape_t shapes[32];
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-t") == 0 && i + 1 < argc) threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "-r") == 0 && i + 1 < argc) reps = atoi(argv[++i]);
        else if (strcmp(argv[i], "--max-n") == 0 && i + 1 < argc) max_n = atoi(argv[++i]);
        else if (strcmp(argv[i], "--cold") == 0) cold = 1;
        else if (strcmp(argv[i], "--n") == 0 && i + 1 < argc) {
            for (char *p = argv[++i], *end; *p && nn < MAX_NS; p = *end == ',' ? end + 1 : end) {
                long v = strtol(p, &end, 10);
                if (end == p || v < 1 || v > MAX_N) {
                    fprintf(stderr, "matmul_rows: --n '%s': each count must be 1..%d\n", argv[i], MAX_N);
                    return 2;
                }
                ns[nn++] = (int)v;
            }
        }
        else {
            long long r, c;
            char type[16];
            if (nshape == 32 || sscanf(argv[i], "%lldx%lld:%15s", &r, &c, type) != 3 ||
                parse_type(type, &shapes[nshape].type) != 0 || r <= 0 || c <= 0) {
                fprintf(stderr, "matmul_rows: bad argument '%s' (shape ROWSxCOLS:TYPE, -t, -r, --cold, --max-n)\n",
                        argv[i]);
                return 2;
            }
            shapes[nshape].rows = r, shapes[nshape++].cols = c;
        }
    }
    if (max_n < 1 || max_n > MAX_N || reps < 1) {
        fprintf(stderr, "matmul_rows: --max-n must be 1..%d and -r >= 1\n", MAX_N);
        return 2;
    }
    if (nn == 0)
        for (int n = 1; n <= max_n; n++) ns[nn++] = n;
    if (nshape == 0) {
        nshape = (int)(sizeof default_shapes / sizeof default_shapes[0]);
        memcpy(shapes, default_shapes, sizeof default_shapes);
    }
    sd_backend_t *be;
    if (sd_backend_cpu_create(threads, &be) != SD_OK) {
        fprintf(stderr, "matmul_rows: %s\n", sd_last_error());
        return 1;
    }
    /* counters count this thread only: meaningful with one thread */
    int fd[2] = {-1, -1};
    if (threads == 1) fd[0] = bench_counter_open(PERF_COUNT_HW_INSTRUCTIONS), fd[1] = bench_counter_open(PERF_COUNT_HW_CPU_CYCLES);
    printf("matmul_rows: %d thread(s), min of %d calls%s\n", threads, reps,
           fd[0] >= 0 ? ", user-space instructions and cycles of this thread" : "");
    for (int s = 0; s < nshape; s++) bench_shape(be, &shapes[s], cold, reps, ns, nn, fd);
    sd_backend_destroy(be);
    return 0;
}
