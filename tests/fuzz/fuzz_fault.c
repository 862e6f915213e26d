/* Fuzz target: the SPECDEC_FAULT parser (comm/fault.c; grammar in docs/comm.md, "Fault
 * injection"). The input is the variable's value (up to its first NUL: an environment
 * variable cannot hold one). Properties:
 *   - the parser accepts exactly the documented grammar — tokens separated by single
 *     commas, each kind:rank=R:key=N with kind/key one of stall/op, crash/op, delay/ms,
 *     corrupt/step, corrupt-draft/step, R and N plain decimal numbers below 2^31 (N >= 1,
 *     delay's ms >= 0), at most 8 tokens, under 256 characters — checked against an
 *     independent parser;
 *   - what it accepts is what the reference read, and printing it back parses to the same;
 *   - a refusal is SD_ERR_INVALID_ARG with a message naming SPECDEC_FAULT and holding no
 *     terminal control bytes.
 * The parser is static, so this file includes comm/fault.c. */
#include "comm/fault.c"

#include "fuzz/fuzz.h"

/* ---- an independent reading of the grammar -------------------------------------------- */

/* Plain decimal digits in [lo, 2^31): no sign, no space, no empty number. */
static int ref_number(const char *s, size_t n, long lo, long *out)
{
    if (n == 0 || n > 10) return 0;
    long x = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
        x = x * 10 + (s[i] - '0');
    }
    if (x < lo || x > 0x7fffffffL) return 0;
    *out = x;
    return 1;
}

/* One token s[n]: "kind:rank=R:key=N" with exactly three fields. */
static int ref_token(const char *s, size_t n, fault_t *f)
{
    static const char *const key_of[] = {"op", "op", "ms", "step", "step"};
    static const char *const kind_of[] = {"stall", "crash", "delay", "corrupt", "corrupt-draft"};
    const char *c1 = memchr(s, ':', n);
    if (!c1) return 0;
    const char *c2 = memchr(c1 + 1, ':', (size_t)(s + n - c1 - 1));
    if (!c2 || memchr(c2 + 1, ':', (size_t)(s + n - c2 - 1))) return 0;
    for (int k = 0; k < 5; k++) {
        size_t lk = strlen(kind_of[k]), lkey = strlen(key_of[k]);
        if ((size_t)(c1 - s) != lk || memcmp(s, kind_of[k], lk) != 0) continue;
        const char *r = c1 + 1, *a = c2 + 1;
        long rank, v;
        if ((size_t)(c2 - r) < 5 || memcmp(r, "rank=", 5) != 0) return 0;
        if (!ref_number(r + 5, (size_t)(c2 - r - 5), 0, &rank)) return 0;
        if ((size_t)(s + n - a) < lkey + 1 || memcmp(a, key_of[k], lkey) != 0 || a[lkey] != '=')
            return 0;
        if (!ref_number(a + lkey + 1, (size_t)(s + n - a - lkey - 1), k == FAULT_DELAY ? 0 : 1, &v))
            return 0;
        *f = (fault_t){.kind = (fault_kind_t)k, .rank = (int)rank, .n = (uint64_t)v};
        return 1;
    }
    return 0;
}

/* The whole value: "" (no faults) or tokens joined by single commas. */
static int ref_spec(const char *s, fault_t *out, int *n_out)
{
    size_t len = strlen(s);
    *n_out = 0;
    if (len >= FAULT_SPEC_MAX) return 0;
    if (len == 0) return 1;
    for (const char *p = s;;) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        if (*n_out == FAULT_MAX || !ref_token(p, n, &out[*n_out])) return 0;
        ++*n_out;
        if (!comma) return 1;
        p = comma + 1;
    }
}

static void print_spec(const fault_set_t *set, char *buf, size_t cap)
{
    size_t o = 0;
    buf[0] = '\0';
    for (int i = 0; i < set->n; i++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%s:rank=%d:%s=%llu", i ? "," : "",
                              kinds[set->f[i].kind].kind, set->f[i].rank,
                              kinds[set->f[i].kind].key, (unsigned long long)set->f[i].n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *spec = fuzz_strndup(data, size); /* stops at the first NUL, as getenv would */
    fault_set_t set;
    fault_t want[FAULT_MAX + 1];
    int n_want = 0;
    sd_clear_error();
    sd_status_t s = parse_spec(spec, &set);
    int ok = ref_spec(spec, want, &n_want);
    FUZZ_CHECK(s == SD_OK || s == SD_ERR_INVALID_ARG, "status %s", sd_status_string(s));
    FUZZ_CHECK((s == SD_OK) == ok, "'%s': the parser says %s, the grammar %s", spec,
               sd_status_string(s), ok ? "valid" : "invalid");
    if (s != SD_OK) {
        const char *msg = sd_last_error();
        FUZZ_CHECK(strncmp(msg, "SPECDEC_FAULT", 13) == 0, "message '%s'", msg);
        FUZZ_CHECK(!fuzz_has_terminal_control(msg, strlen(msg)),
                   "terminal control bytes in the message for '%s'", spec);
        free(spec);
        return 0;
    }
    FUZZ_CHECK(set.n == n_want, "'%s': %d faults, the grammar reads %d", spec, set.n, n_want);
    for (int i = 0; i < set.n; i++)
        FUZZ_CHECK(set.f[i].kind == want[i].kind && set.f[i].rank == want[i].rank &&
                       set.f[i].n == want[i].n,
                   "'%s': fault %d read differently", spec, i);
    char again[FAULT_SPEC_MAX * 2];
    print_spec(&set, again, sizeof again);
    fault_set_t set2;
    FUZZ_CHECK(parse_spec(again, &set2) == SD_OK && set2.n == set.n, "'%s' printed back as '%s'",
               spec, again);
    for (int i = 0; i < set.n; i++)
        FUZZ_CHECK(memcmp(&set.f[i], &set2.f[i], sizeof set.f[i]) == 0, "'%s' vs '%s'", spec, again);
    free(spec);
    return 0;
}
