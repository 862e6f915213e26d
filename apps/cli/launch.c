/* `specdec launch -n N [--] CMD ARGS...`: N ranks of CMD on this node, bootstrapped through
 * the environment (no MPI needed). Environment, streams, failure handling, signals and
 * clean-up: docs/comm.md, "specdec launch". stdin stays /dev/null when it is a terminal
 * because the ranks run in a background process group, where reading it would stop them. */
#define _GNU_SOURCE /* pipe2 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "cli.h"
#include "comm/comm.h"
#include "launch.h"

enum {
    LAUNCH_MAX_RANKS = 256,
    LINE_CAP = 65536,        /* longest stderr line forwarded whole */
    GRACE_MS_DEFAULT = 5000, /* after the first failure, before SIGTERM */
    TERM_GRACE_MS = 2000,    /* after SIGTERM, before SIGKILL */
    DRAIN_MS = 1000,         /* after the last rank, for pipes held by its children */
    REAP_POLL_MS = 1000,     /* poll timeout: reap even if a SIGCHLD was missed */
    DRAIN_READS = 16,        /* reads of one pipe per wake-up */
};

/* Stop stages after the first failure or an interrupt. */
enum { RUNNING = 0, GRACE, TERMINATED, KILLED };

typedef struct rank_proc {
    pid_t pid;  /* 0 once reaped */
    int err_fd; /* read end of the rank's stderr pipe; -1 at EOF */
    char *line; /* partial stderr line [LINE_CAP] */
    size_t len;
} rank_proc_t;

typedef struct launch {
    int n;      /* ranks */
    char **cmd; /* NULL-terminated argv of CMD */
    char job_id[48];
    pid_t pgid;               /* the ranks' process group (rank 0's pid) */
    rank_proc_t *ranks;       /* [n] */
    int alive;                /* ranks not yet reaped */
    int sig_fd;               /* signalfd for SIGCHLD and the forwarded signals */
    sigset_t old_mask;        /* restored in the ranks */
    void (*old_sigpipe)(int); /* likewise */
    int grace_ms;
    int stage;             /* RUNNING .. KILLED */
    double stage_deadline; /* monotonic ms at which the next stage starts */
    int exit_code;         /* of the first failing rank; 0 while none failed */
    int interrupt_sig;     /* first forwarded signal, 0 if none */
} launch_t;

static const char launch_usage[] =
    "usage: specdec launch -n N [--] CMD [ARGS...]\n"
    "  Runs N ranks (1..256) of CMD on this node with SPECDEC_RANK, SPECDEC_WORLD_SIZE and\n"
    "  SPECDEC_JOB_ID set. Rank 0's stdout is passed through unchanged; other ranks' stdout\n"
    "  is discarded; every rank's stderr lines are prefixed \"[rank R] \". A failing rank\n"
    "  stops the job (others get SPECDEC_LAUNCH_GRACE_MS, default 5000, then SIGTERM, then\n"
    "  SIGKILL); the exit code is the first failing rank's (128 + signal if killed).\n"
    "  Under mpirun, run the command with mpirun directly instead.\n";

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return; /* stderr gone: nothing better to do */
        p += w, n -= (size_t)w;
    }
}

int cli_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("specdec: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 0;
}

/* ---- options ------------------------------------------------------------------------ */

/* -n N [--] CMD...; returns 0 (after one error line) on bad input. */
static int parse_launch_args(int argc, char **argv, launch_t *l)
{
    int i = 2;
    l->n = 0;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "--")) {
            i++;
            break;
        }
        if (strcmp(argv[i], "-n") && strcmp(argv[i], "--ranks")) {
            return cli_error("launch: unknown option '%s' (see specdec launch --help)", argv[i]);
        }
        if (i + 1 >= argc) return cli_error("launch: %s needs a value", argv[i]);
        if (!cli_parse_int(argv[i], argv[i + 1], 1, LAUNCH_MAX_RANKS, &l->n)) return 0;
        i++;
    }
    if (l->n == 0) return cli_error("launch: -n N (1..%d) is required", LAUNCH_MAX_RANKS);
    if (i >= argc) return cli_error("launch: no command to run after the options");
    l->cmd = argv + i;
    const char *grace = getenv("SPECDEC_LAUNCH_GRACE_MS");
    l->grace_ms = GRACE_MS_DEFAULT;
    return !grace || cli_parse_int("SPECDEC_LAUNCH_GRACE_MS", grace, 0, 3600000, &l->grace_ms);
}

/* "<pid>-<seconds>-<random>" in hex: unique per launch, [0-9a-f-]. */
static void make_job_id(char *buf, size_t cap)
{
    unsigned int rnd = 0;
    if (getentropy(&rnd, sizeof rnd) != 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        rnd = (unsigned int)ts.tv_nsec * 2654435761u;
    }
    snprintf(buf, cap, "%lx-%llx-%08x", (unsigned long)getpid(), (unsigned long long)time(NULL),
             rnd);
}

/* ---- starting ranks ------------------------------------------------------------------ */

static void child_redirect(int r, int err_w)
{
    int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (r != 0 || isatty(STDIN_FILENO)) dup2(null_fd, STDIN_FILENO);
    if (r != 0) dup2(null_fd, STDOUT_FILENO);
    dup2(err_w, STDERR_FILENO); /* dup2 clears close-on-exec on fd 2 */
}

/* In the forked rank: never returns. */
static void child_exec(const launch_t *l, int r, int err_w, pid_t launcher)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != launcher) _exit(127); /* the launcher died before prctl */
    setpgid(0, r == 0 ? 0 : l->pgid);
    child_redirect(r, err_w);
    signal(SIGPIPE, l->old_sigpipe);
    sigprocmask(SIG_SETMASK, &l->old_mask, NULL);
    char rank[16], size[16];
    snprintf(rank, sizeof rank, "%d", r);
    snprintf(size, sizeof size, "%d", l->n);
    setenv("SPECDEC_RANK", rank, 1);
    setenv("SPECDEC_WORLD_SIZE", size, 1);
    setenv("SPECDEC_JOB_ID", l->job_id, 1);
    execvp(l->cmd[0], l->cmd);
    fprintf(stderr, "specdec launch: cannot run '%s': %s\n", l->cmd[0], strerror(errno));
    _exit(127);
}

static int spawn_rank(launch_t *l, int r)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) return cli_error("launch: pipe: %s", strerror(errno));
    pid_t launcher = getpid(), pid = fork();
    if (pid < 0) {
        close(p[0]), close(p[1]);
        return cli_error("launch: fork: %s", strerror(errno));
    }
    if (pid == 0) child_exec(l, r, p[1], launcher);
    if (r == 0) l->pgid = pid;
    setpgid(pid, l->pgid); /* also here, so the group is right before any killpg */
    close(p[1]);
    fcntl(p[0], F_SETFL, O_NONBLOCK);
    l->ranks[r] = (rank_proc_t){.pid = pid, .err_fd = p[0], .line = l->ranks[r].line};
    l->alive++;
    return 1;
}

/* Block the signals we handle (the ranks restore the old mask) and open a signalfd. */
static int setup_signals(launch_t *l)
{
    sigset_t set;
    sigemptyset(&set);
    int sigs[] = {SIGCHLD, SIGINT, SIGTERM, SIGHUP};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) sigaddset(&set, sigs[i]);
    sigprocmask(SIG_BLOCK, &set, &l->old_mask);
    l->old_sigpipe = signal(SIGPIPE, SIG_IGN); /* a closed stderr must not kill the launcher */
    l->sig_fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    return l->sig_fd >= 0 || cli_error("launch: signalfd: %s", strerror(errno));
}

/* ---- stderr forwarding --------------------------------------------------------------- */

static void emit_line(int r, const char *s, size_t n)
{
    static char out[LINE_CAP + 32];
    int k = snprintf(out, 32, "[rank %d] ", r);
    memcpy(out + k, s, n);
    out[k + n] = '\n';
    write_all(STDERR_FILENO, out, (size_t)k + n + 1);
}

/* Forward the complete lines in rp->line; at EOF (or a full buffer) the rest as well. */
static void flush_lines(rank_proc_t *rp, int r, int eof)
{
    size_t start = 0;
    for (size_t i = 0; i < rp->len; i++) {
        if (rp->line[i] != '\n') continue;
        emit_line(r, rp->line + start, i - start);
        start = i + 1;
    }
    size_t rest = rp->len - start;
    if (rest > 0 && (eof || rest == LINE_CAP)) { /* last partial line, or one too long */
        emit_line(r, rp->line + start, rest);
        start = rp->len;
    }
    memmove(rp->line, rp->line + start, rp->len - start);
    rp->len -= start;
}

/* Read what rank r's pipe holds now (non-blocking, at most DRAIN_READS reads so a rank
 * that floods stderr cannot starve the others); closes it at EOF. */
static void drain_stderr(launch_t *l, int r)
{
    rank_proc_t *rp = &l->ranks[r];
    for (int k = 0; k < DRAIN_READS && rp->err_fd >= 0; k++) {
        ssize_t got = read(rp->err_fd, rp->line + rp->len, LINE_CAP - rp->len);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) return; /* EAGAIN: nothing more for now */
        rp->len += (size_t)got;
        flush_lines(rp, r, got == 0);
        if (got == 0) close(rp->err_fd), rp->err_fd = -1;
    }
}

/* ---- failures, signals, reaping ---------------------------------------------------- */

static void enter_stage(launch_t *l, int stage, double after_ms)
{
    l->stage = stage;
    l->stage_deadline = (sd_now() * 1e3) + after_ms;
    if (stage == TERMINATED) killpg(l->pgid, SIGTERM);
    if (stage == KILLED) killpg(l->pgid, SIGKILL);
}

/* Move to the next stage when its time has come. */
static void escalate(launch_t *l)
{
    if (l->stage == RUNNING || l->stage == KILLED || (sd_now() * 1e3) < l->stage_deadline) return;
    if (l->stage == GRACE) {
        fprintf(stderr, "specdec launch: %d rank(s) still running after %d ms: SIGTERM\n", l->alive,
                l->grace_ms);
        enter_stage(l, TERMINATED, TERM_GRACE_MS);
    } else {
        fprintf(stderr, "specdec launch: %d rank(s) still running after SIGTERM: SIGKILL\n",
                l->alive);
        enter_stage(l, KILLED, 0);
    }
}

static void rank_ended(launch_t *l, int r, int status)
{
    drain_stderr(l, r); /* its last lines before the verdict */
    l->ranks[r].pid = 0;
    l->alive--;
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (code == 0) return;
    if (WIFEXITED(status))
        fprintf(stderr, "specdec launch: rank %d exited with code %d\n", r, code);
    else
        fprintf(stderr, "specdec launch: rank %d killed by signal %d (%s)\n", r, WTERMSIG(status),
                strsignal(WTERMSIG(status)));
    if (l->exit_code == 0) l->exit_code = code;
    if (l->stage == RUNNING && l->alive > 0) enter_stage(l, GRACE, l->grace_ms);
}

static void reap(launch_t *l)
{
    int status;
    pid_t pid;
    while (l->alive > 0 && (pid = waitpid(-1, &status, WNOHANG)) > 0) {
        for (int r = 0; r < l->n; r++)
            if (l->ranks[r].pid == pid) rank_ended(l, r, status);
    }
}

/* SIGCHLD: reap. SIGINT/SIGTERM/SIGHUP: forward to the ranks; a second one kills them. */
static void on_signals(launch_t *l)
{
    struct signalfd_siginfo si;
    while (read(l->sig_fd, &si, sizeof si) == (ssize_t)sizeof si) {
        int sig = (int)si.ssi_signo;
        if (sig == SIGCHLD) continue;
        if (l->interrupt_sig) {
            enter_stage(l, KILLED, 0);
            continue;
        }
        l->interrupt_sig = sig;
        killpg(l->pgid, sig);
        if (l->stage == RUNNING) enter_stage(l, GRACE, l->grace_ms);
    }
    reap(l);
}

/* ---- the loop ------------------------------------------------------------------------ */

/* Poll the stderr pipes and the signalfd once; `wait_ms` bounds the wait. */
static void poll_once(launch_t *l, int wait_ms)
{
    struct pollfd fds[LAUNCH_MAX_RANKS + 1];
    int who[LAUNCH_MAX_RANKS + 1], nfds = 0;
    for (int r = 0; r < l->n; r++) {
        if (l->ranks[r].err_fd < 0) continue;
        fds[nfds] = (struct pollfd){.fd = l->ranks[r].err_fd, .events = POLLIN};
        who[nfds++] = r;
    }
    fds[nfds] = (struct pollfd){.fd = l->sig_fd, .events = POLLIN};
    who[nfds++] = -1;
    if (poll(fds, (nfds_t)nfds, wait_ms) <= 0) return;
    for (int i = 0; i < nfds; i++) {
        if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        if (who[i] < 0)
            on_signals(l);
        else
            drain_stderr(l, who[i]);
    }
}

static void run_ranks(launch_t *l)
{
    while (l->alive > 0) {
        int wait_ms = REAP_POLL_MS;
        if (l->stage != RUNNING && l->stage != KILLED) {
            double left = l->stage_deadline - (sd_now() * 1e3);
            wait_ms = left < 0 ? 0 : left < wait_ms ? (int)left + 1 : wait_ms;
        }
        poll_once(l, wait_ms);
        reap(l);
        escalate(l);
    }
    killpg(l->pgid, SIGKILL); /* whatever the ranks left running in their group */
    double end = (sd_now() * 1e3) + DRAIN_MS;
    int open_pipes = 1;
    while (open_pipes && (sd_now() * 1e3) < end) {
        open_pipes = 0;
        for (int r = 0; r < l->n; r++) open_pipes |= l->ranks[r].err_fd >= 0;
        if (open_pipes) poll_once(l, 50);
    }
}

/* Unlink /dev/shm/specdec-<job>-* (a rank that died before unlinking its segment). */
static void remove_segments(const char *job_id)
{
    char prefix[64];
    int plen = snprintf(prefix, sizeof prefix, "specdec-%s-", job_id), removed = 0;
    DIR *d = opendir("/dev/shm");
    if (!d) return;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        if (!strncmp(e->d_name, prefix, (size_t)plen) && unlinkat(dirfd(d), e->d_name, 0) == 0)
            removed++;
    closedir(d);
    if (removed)
        fprintf(stderr,
                "specdec launch: removed %d leftover shared-memory segment(s) /dev/shm/%s*\n",
                removed, prefix);
}

static void free_launch(launch_t *l)
{
    for (int r = 0; r < l->n; r++) {
        if (l->ranks[r].err_fd >= 0) close(l->ranks[r].err_fd);
        free(l->ranks[r].line);
    }
    free(l->ranks);
    if (l->sig_fd >= 0) close(l->sig_fd);
    sigprocmask(SIG_SETMASK, &l->old_mask, NULL);
}

static int alloc_ranks(launch_t *l)
{
    l->ranks = calloc((size_t)l->n, sizeof *l->ranks);
    for (int r = 0; l->ranks && r < l->n; r++) {
        l->ranks[r].err_fd = -1;
        if (!(l->ranks[r].line = malloc(LINE_CAP))) return 0;
    }
    return l->ranks != NULL;
}

int cmd_launch(int argc, char **argv)
{
    if (argc > 2 && (!strcmp(argv[2], "-h") || !strcmp(argv[2], "--help")))
        return fputs(launch_usage, stdout), 0;
    if (sd_comm_mpi_launched()) {
        cli_error("launch: running under mpirun; run the command with mpirun directly "
                  "(mpirun -n N specdec ...)");
        return 2;
    }
    launch_t l = {.sig_fd = -1};
    if (!parse_launch_args(argc, argv, &l)) return 2;
    make_job_id(l.job_id, sizeof l.job_id);
    if (!alloc_ranks(&l)) {
        free_launch(&l);
        return cli_error("launch: out of memory for %d ranks", l.n), 1;
    }
    int ok = setup_signals(&l);
    for (int r = 0; ok && r < l.n; r++) ok = spawn_rank(&l, r);
    if (!ok && l.alive > 0) enter_stage(&l, KILLED, 0);
    if (l.alive > 0) run_ranks(&l);
    remove_segments(l.job_id);
    free_launch(&l);
    if (!ok) return 1;
    if (l.exit_code) return l.exit_code;
    return l.interrupt_sig ? 128 + l.interrupt_sig : 0;
}
