/* Micro-benchmark: one target forward over n = 1..9 new tokens after a prompt (a
 * speculative verification block of k = n - 1 draft tokens), against a one-token forward.
 *
 *   forward_rows -m MODEL [-t THREADS] [-r REPS] [--ctx POS] [--max-n N] [--dump FILE]
 *
 * The cache holds POS (default 128) positions first; each measurement forwards n tokens
 * and rolls the cache back, so every call sees the same context. Reports the minimum over
 * REPS calls (robust to other load on a shared machine) per n, per token, and relative to
 * n = 1; with one thread (the forward then runs on the calling thread) also its CPU time and
 * (where perf events are allowed) user-space instructions and cycles, which repeat whatever
 * the load. --dump FILE writes the logits of each n's last call ([n, n_vocab] f32, n = 1..N)
 * to FILE, for `cmp` across kernel changes.
 * Engine-internal API
 * (model/model.h): built against the sd_runtime libraries. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "bench/perf_counter.h"
#include "model/forward.h"
#include "model/model.h"

enum { MAX_N = 16 };

static int fail(const char *what)
{
    fprintf(stderr, "forward_rows: %s: %s\n", what, sd_last_error());
    return 1;
}

int main(int argc, char **argv)
{
    const char *path = NULL, *dump = NULL;
    int threads = 2, reps = 20, ctx = 128, max_n = 9;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "-m") == 0) path = argv[i + 1];
        else if (strcmp(argv[i], "-t") == 0) threads = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "-r") == 0) reps = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--ctx") == 0) ctx = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--max-n") == 0) max_n = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--dump") == 0) dump = argv[i + 1];
    }
    if (!path || reps < 1 || ctx < 1 || max_n < 1 || max_n > MAX_N) {
        fprintf(stderr, "usage: forward_rows -m MODEL [-t THREADS] [-r REPS] [--ctx POS] [--max-n 1..%d] [--dump FILE]\n", MAX_N);
        return 2;
    }
    sd_model_params_t p;
    sd_model_params_default(&p);
    p.path = path, p.n_threads = threads, p.n_ctx = ctx + MAX_N;
    sd_model_t *m;
    if (sd_model_load(&p, &m) != SD_OK) return fail(path);
    sd_seq_t s;
    if (sd_seq_init(&s, m, 0, ctx > MAX_N ? ctx : MAX_N) != SD_OK) return fail("sequence");
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)(ctx > MAX_N ? ctx : MAX_N));
    for (int i = 0; i < ctx || i < MAX_N; i++) tok[i] = 100 + (i * 7919) % (m->hp.n_vocab - 200);
    if (sd_forward(&s, tok, ctx, 0) != SD_OK) return fail("prompt");
    printf("forward_rows: %s, %d threads, %d cached positions, min of %d calls\n", m->name, threads, ctx, reps);
    int fd[2] = {-1, -1}; /* counters count this thread only: meaningful with one thread */
    if (threads == 1) fd[0] = bench_counter_open(PERF_COUNT_HW_INSTRUCTIONS), fd[1] = bench_counter_open(PERF_COUNT_HW_CPU_CYCLES);
    printf("   n   ms/call  ms/token  x 1-token%s%s\n", threads == 1 ? "  cpu ms/call  x 1-token" : "",
           fd[0] >= 0 ? "  Minstr/call  x 1-token  Mcycles/call  x 1-token" : "");
    FILE *df = dump ? fopen(dump, "wb") : NULL;
    if (dump && !df) {
        fprintf(stderr, "forward_rows: cannot write %s\n", dump);
        return 1;
    }
    double t1 = 0.0, i1 = 0.0, c1 = 0.0, u1 = 0.0;
    for (int n = 1; n <= max_n; n++) {
        double best = 1e300, bi = 1e300, bc = 1e300, bu = 1e300;
        for (int r = 0; r < reps + 2; r++) { /* two warm-up calls */
            uint64_t i0 = bench_counter_read(fd[0]), c0 = bench_counter_read(fd[1]);
            double t0 = (sd_now() * 1e9), u0 = bench_thread_cpu_ns();
            if (sd_forward(&s, tok, n, 0) != SD_OK) return fail("forward");
            double t = (sd_now() * 1e9) - t0, u = bench_thread_cpu_ns() - u0;
            double di = (double)(bench_counter_read(fd[0]) - i0), dc = (double)(bench_counter_read(fd[1]) - c0);
            sd_kv_cache_truncate(&s.kv, ctx);
            if (r < 2) continue;
            best = t < best ? t : best, bu = u < bu ? u : bu, bi = di < bi ? di : bi, bc = dc < bc ? dc : bc;
        }
        if (df) fwrite(s.logits, sizeof(float), (size_t)n * (size_t)m->hp.n_vocab, df);
        if (n == 1) t1 = best, i1 = bi, c1 = bc, u1 = bu;
        printf("  %2d  %8.2f  %8.2f  %9.2f", n, best / 1e6, best / 1e6 / n, best / t1);
        if (threads == 1) printf("  %11.2f  %9.2f", bu / 1e6, bu / u1);
        if (fd[0] >= 0) printf("  %11.1f  %9.2f  %12.1f  %9.2f", bi / 1e6, bi / i1, bc / 1e6, bc / c1);
        printf("\n");
    }
    if (df) fclose(df);
    free(tok);
    sd_seq_free(&s);
    sd_model_free(m);
    return 0;
}
