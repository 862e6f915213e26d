/* Test-only fault injection from SPECDEC_FAULT (grammar in comm/comm_impl.h). The spec is read
 * at communicator creation (sd_comm_setup -> sd_fault_check_env); the wrappers consult it
 * before every collective. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "comm/comm_impl.h"
#include "core/log.h"

#define FAULT_MAX 8
#define FAULT_SPEC_MAX 256

typedef enum fault_kind {
    FAULT_STALL, FAULT_CRASH, FAULT_DELAY, FAULT_CORRUPT, FAULT_CORRUPT_DRAFT
} fault_kind_t;

typedef struct fault {
    fault_kind_t kind;
    int rank;
    uint64_t n; /* stall/crash: collective number; delay: ms; corrupt(-draft): step */
} fault_t;

typedef struct fault_set {
    char spec[FAULT_SPEC_MAX];
    fault_t f[FAULT_MAX];
    int n;
} fault_set_t;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static fault_set_t g_set;            /* guarded by g_mu */
static atomic_int g_active;          /* g_set.n, readable without the lock */
static atomic_ullong g_collectives;  /* collectives since the spec last changed */

static const struct {
    const char *kind, *key;
} kinds[] = {
    [FAULT_STALL] = {"stall", "op"},
    [FAULT_CRASH] = {"crash", "op"},
    [FAULT_DELAY] = {"delay", "ms"},
    [FAULT_CORRUPT] = {"corrupt", "step"},
    [FAULT_CORRUPT_DRAFT] = {"corrupt-draft", "step"},
};

static sd_status_t bad_token(const char *tok)
{
    return sd_set_error(SD_ERR_INVALID_ARG,
                        "SPECDEC_FAULT: malformed token '%s' (expected stall:rank=R:op=N, "
                        "crash:rank=R:op=N, delay:rank=R:ms=D, corrupt:rank=R:step=N or "
                        "corrupt-draft:rank=R:step=N)",
                        tok);
}

/* "key=value" with the expected key and a value of plain decimal digits in [lo, 2^31) */
static int parse_kv(const char *field, const char *key, long lo, long *out)
{
    size_t k = strlen(key);
    if (strncmp(field, key, k) != 0 || field[k] != '=') return 0;
    const char *v = field + k + 1;
    size_t digits = strspn(v, "0123456789");
    if (digits == 0 || v[digits] != '\0' || digits > 10) return 0; /* no sign, space, text */
    long x = strtol(v, NULL, 10);
    if (x < lo || x > 0x7fffffffL) return 0;
    *out = x;
    return 1;
}

/* The next field of *s up to sep (strsep: empty fields stay empty, unlike strtok's). */
static char *next_field(char **s, const char *sep) { return *s ? strsep(s, sep) : NULL; }

/* One "kind:rank=R:key=N" token (a writable copy): exactly three non-empty fields. */
static sd_status_t parse_token(char *tok, fault_t *f)
{
    char copy[FAULT_SPEC_MAX];
    snprintf(copy, sizeof copy, "%s", tok);
    char *rest = tok;
    char *kind = next_field(&rest, ":"), *rank = next_field(&rest, ":");
    char *arg = next_field(&rest, ":");
    if (kind == NULL || rank == NULL || arg == NULL || rest != NULL) return bad_token(copy);
    for (int k = 0; k < (int)(sizeof kinds / sizeof kinds[0]); k++) {
        if (strcmp(kind, kinds[k].kind) != 0) continue;
        long r, n;
        long lo = k == FAULT_DELAY ? 0 : 1;
        if (!parse_kv(rank, "rank", 0, &r) || !parse_kv(arg, kinds[k].key, lo, &n))
            return bad_token(copy);
        *f = (fault_t){.kind = (fault_kind_t)k, .rank = (int)r, .n = (uint64_t)n};
        return SD_OK;
    }
    return bad_token(copy);
}

static sd_status_t parse_spec(const char *spec, fault_set_t *out)
{
    *out = (fault_set_t){0};
    if (strlen(spec) >= sizeof out->spec)
        return sd_set_error(SD_ERR_INVALID_ARG, "SPECDEC_FAULT: longer than %d characters",
                            FAULT_SPEC_MAX - 1);
    snprintf(out->spec, sizeof out->spec, "%s", spec);
    char buf[FAULT_SPEC_MAX];
    snprintf(buf, sizeof buf, "%s", spec);
    /* "" is no fault; otherwise tokens joined by single commas (an empty token is an error) */
    char *rest = buf[0] ? buf : NULL;
    for (char *tok = next_field(&rest, ","); tok; tok = next_field(&rest, ",")) {
        if (out->n == FAULT_MAX)
            return sd_set_error(SD_ERR_INVALID_ARG, "SPECDEC_FAULT: more than %d faults",
                                FAULT_MAX);
        SD_CHECK(parse_token(tok, &out->f[out->n++]));
    }
    return SD_OK;
}

sd_status_t sd_fault_check_env(void)
{
    const char *spec = getenv("SPECDEC_FAULT");
    if (spec == NULL) spec = "";
    fault_set_t set;
    SD_CHECK(parse_spec(spec, &set));
    pthread_mutex_lock(&g_mu);
    if (strcmp(set.spec, g_set.spec) != 0) {
        g_set = set;
        atomic_store(&g_collectives, 0);
        atomic_store(&g_active, set.n);
    }
    pthread_mutex_unlock(&g_mu);
    return SD_OK;
}

static int snapshot(fault_set_t *set)
{
    if (atomic_load_explicit(&g_active, memory_order_relaxed) == 0) return 0;
    pthread_mutex_lock(&g_mu);
    *set = g_set;
    pthread_mutex_unlock(&g_mu);
    return set->n;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

void sd_fault_before_collective(int world_rank)
{
    fault_set_t set;
    if (!snapshot(&set)) return;
    uint64_t n = atomic_fetch_add(&g_collectives, 1) + 1;
    for (int i = 0; i < set.n; i++) {
        const fault_t *f = &set.f[i];
        if (f->rank != world_rank) continue;
        if (f->kind == FAULT_DELAY) sleep_ms((long)f->n);
        if (f->kind == FAULT_CRASH && f->n == n) {
            sd_log(SD_LOG_WARN, "fault injection: rank %d crashes at collective %llu",
                   world_rank, (unsigned long long)n);
            raise(SIGKILL);
        }
        if (f->kind == FAULT_STALL && f->n == n) {
            sd_log(SD_LOG_WARN, "fault injection: rank %d stalls at collective %llu",
                   world_rank, (unsigned long long)n);
            for (;;) sleep_ms(100); /* the launcher or test kills it */
        }
    }
}

int sd_fault_corrupt_step(int world_rank, uint64_t step)
{
    fault_set_t set;
    if (!snapshot(&set)) return 0;
    for (int i = 0; i < set.n; i++)
        if (set.f[i].kind == FAULT_CORRUPT && set.f[i].rank == world_rank && set.f[i].n == step) {
            /* the moment of injection, as for stall and crash (tests/soak/hang_faults.py) */
            sd_log(SD_LOG_WARN, "fault injection: rank %d corrupts its token at step %llu",
                   world_rank, (unsigned long long)step);
            return 1;
        }
    return 0;
}

int sd_fault_corrupt_draft(int world_rank, uint64_t step)
{
    fault_set_t set;
    if (!snapshot(&set)) return 0;
    for (int i = 0; i < set.n; i++)
        if (set.f[i].kind == FAULT_CORRUPT_DRAFT && set.f[i].rank == world_rank && set.f[i].n <= step)
            return 1;
    return 0;
}
