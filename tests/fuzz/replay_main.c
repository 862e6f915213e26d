/* main() of a fuzz harness built without libFuzzer (gcc, or any build not configured with
 * -DSPECDEC_SANITIZE=fuzzer): runs LLVMFuzzerTestOneInput once on every input named on the
 * command line — a file, or a directory whose regular files run in name order — and prints
 * how many ran and how long they took. Arguments starting with '-' (libFuzzer flags) are
 * ignored. Exit 0 when every input ran; a failed property aborts (FUZZ_CHECK), and so does an
 * input still running after 30 s (libFuzzer's runs use 10 s; sanitizer builds are slower):
 * no silent hang. No input at all is an error, so an emptied corpus cannot pass. */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "fuzz/fuzz.h"

#define REPLAY_INPUT_SECONDS 30

static const char *current; /* the input running, for the alarm */

static void on_alarm(int sig)
{
    (void)sig;
    dprintf(STDERR_FILENO, "replay: %s still running after %d s: a hang\n", current,
            REPLAY_INPUT_SECONDS);
    abort();
}

/* A failed property aborts: name the input first. */
static void on_abort(int sig)
{
    dprintf(STDERR_FILENO, "replay: input %s failed\n", current ? current : "(none)");
    signal(sig, SIG_DFL);
    raise(sig);
}

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return fprintf(stderr, "replay: cannot open %s: %s\n", path, strerror(errno)), 0;
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap && !(buf = realloc(buf, cap = cap ? 2 * cap : 4096))) abort();
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) break;
    }
    int err = ferror(f);
    fclose(f);
    if (err) return free(buf), fprintf(stderr, "replay: cannot read %s\n", path), 0;
    /* an exactly-sized copy, so ASan sees reads past the input's end */
    uint8_t *exact = malloc(len ? len : 1);
    if (!exact) abort();
    memcpy(exact, buf, len);
    free(buf);
    current = path;
    alarm(REPLAY_INPUT_SECONDS);
    LLVMFuzzerTestOneInput(exact, len);
    alarm(0);
    free(exact);
    return 1;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

/* Runs path (file or directory); adds the inputs run to *n. 0 on an I/O error. */
static int run_path(const char *path, long *n)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return fprintf(stderr, "replay: %s: %s\n", path, strerror(errno)), 0;
    if (!S_ISDIR(st.st_mode)) return run_file(path) ? (++*n, 1) : 0;
    struct dirent **names;
    int k = scandir(path, &names, NULL, by_name);
    if (k < 0) return fprintf(stderr, "replay: %s: %s\n", path, strerror(errno)), 0;
    int ok = 1;
    for (int i = 0; i < k; i++) {
        char full[4096];
        snprintf(full, sizeof full, "%s/%s", path, names[i]->d_name);
        if (ok && names[i]->d_name[0] != '.' && stat(full, &st) == 0 && S_ISREG(st.st_mode))
            ok = run_file(full) ? (++*n, 1) : 0;
        free(names[i]);
    }
    free(names);
    return ok;
}

__attribute__((weak)) int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    return 0;
}

int main(int argc, char **argv)
{
    signal(SIGALRM, on_alarm);
    signal(SIGABRT, on_abort);
    LLVMFuzzerInitialize(&argc, &argv);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    long n = 0;
    for (int i = 1; i < argc; i++)
        if (argv[i][0] != '-' && !run_path(argv[i], &n)) return 1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    if (n == 0) return fprintf(stderr, "replay: %s: no inputs given\n", argv[0]), 1;
    printf("replay: %ld inputs ran in %.2f s, every property held\n", n, s);
    return 0;
}
