/* The CUDA backend (kernels/cuda/backend_cuda.cu, ops.cu) against the CPU backend, its
 * batch invariance on the device (bit for bit), the memory cap and the sticky errors.
 * Creation errors and the attention chunking run on every machine; the rest skips cleanly
 * without CUDA or without a device. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend_impl.h"
#include "kernels/cuda.h"
#include "support/test_util.h"

static float *alloc_floats(size_t n)
{
    float *p = malloc(sizeof(float) * (n ? n : 1));
    cr_assert_not_null(p);
    return p;
}

/* ---- backends ------------------------------------------------------------------------------ */

static sd_backend_t *cuda_or_skip(double memory_fraction)
{
    if (!sd_cuda_built()) cr_skip_test("built without CUDA");
    int n = 0;
    sd_status_t s = sd_cuda_device_count(&n);
    cr_assert_eq(s, SD_OK, "device count: %s: %s", sd_status_string(s), sd_last_error());
    if (n == 0) cr_skip_test("no CUDA device on this machine");
    sd_backend_t *be = NULL;
    s = sd_backend_cuda_create(0, memory_fraction, &be);
    cr_assert_eq(s, SD_OK, "create: %s: %s", sd_status_string(s), sd_last_error());
    return be;
}

static sd_backend_t *cpu_backend(void)
{
    sd_backend_t *be = NULL;
    cr_assert_eq(sd_backend_cpu_create(2, &be), SD_OK, "%s", sd_last_error());
    return be;
}

static void *to_device(sd_backend_t *be, const void *host, size_t bytes)
{
    void *dev = be->ops->alloc(be, bytes);
    cr_assert_not_null(dev, "alloc of %zu bytes: %s", bytes, sd_last_error());
    be->ops->upload(be, dev, host, bytes);
    return dev;
}

static void assert_sync_ok(sd_backend_t *be)
{
    sd_status_t s = be->ops->sync(be);
    cr_assert_eq(s, SD_OK, "sync: %s: %s", sd_status_string(s), sd_last_error());
}

static void from_device(sd_backend_t *be, void *host, const void *dev, size_t bytes)
{
    be->ops->download(be, host, dev, bytes);
    assert_sync_ok(be);
}

/* |got - want| <= rel * max|want| over the array (at least rel * 1e-30). */
static void assert_close(const float *got, const float *want, size_t n, double rel, const char *what)
{
    double mag = 1e-30;
    for (size_t i = 0; i < n; i++) mag = fmax(mag, fabs((double)want[i]));
    for (size_t i = 0; i < n; i++)
        cr_assert(fabs((double)got[i] - (double)want[i]) <= rel * mag,
                  "%s: element %zu: %.9g vs %.9g (max |want| %g)", what, i, got[i], want[i], mag);
}

/* ---- creation: runs everywhere ----------------------------------------------------------- */

Test(cuda_ops, create_names_a_missing_device, .timeout = 60)
{
    unsetenv("SPECDEC_GPU_MEMORY_FRACTION");
    sd_backend_t *be = (sd_backend_t *)1;
    if (!sd_cuda_built()) {
        cr_assert_eq(sd_backend_cuda_create(0, 0.0, &be), SD_ERR_NOT_BUILT);
        cr_assert_null(be);
        return;
    }
    int count = 0;
    cr_assert_eq(sd_cuda_device_count(&count), SD_OK, "%s", sd_last_error());
    int bad[2] = {count, -1};
    for (int k = 0; k < 2; k++) {
        be = (sd_backend_t *)1;
        cr_assert_eq(sd_backend_cuda_create(bad[k], 0.0, &be), SD_ERR_INVALID_ARG, "device %d", bad[k]);
        cr_assert_null(be);
        char want[64];
        snprintf(want, sizeof want, "CUDA device %d does not exist", bad[k]);
        cr_assert(strstr(sd_last_error(), want) != NULL, "%s", sd_last_error());
    }
}

Test(cuda_ops, bad_memory_fraction_is_refused_by_name, .timeout = 60)
{
    if (!sd_cuda_built()) {
        sd_backend_t *be = (sd_backend_t *)1;
        cr_assert_eq(sd_backend_cuda_create(0, 1.5, &be), SD_ERR_NOT_BUILT);
        cr_assert_null(be);
        return;
    }
    const char *bad_env[] = {"abc", "0", "1.5", "-0.25", "0.5x", "nan"};
    for (size_t k = 0; k < sizeof bad_env / sizeof bad_env[0]; k++) {
        setenv("SPECDEC_GPU_MEMORY_FRACTION", bad_env[k], 1);
        sd_backend_t *be = (sd_backend_t *)1;
        cr_assert_eq(sd_backend_cuda_create(0, 0.0, &be), SD_ERR_INVALID_ARG, "'%s'", bad_env[k]);
        cr_assert_null(be);
        char want[64];
        snprintf(want, sizeof want, "SPECDEC_GPU_MEMORY_FRACTION='%s'", bad_env[k]);
        cr_assert(strstr(sd_last_error(), want) != NULL, "%s", sd_last_error());
    }
    unsetenv("SPECDEC_GPU_MEMORY_FRACTION");
    const double bad_arg[] = {1.5, -0.5, NAN};
    for (size_t k = 0; k < sizeof bad_arg / sizeof bad_arg[0]; k++) {
        sd_backend_t *be = (sd_backend_t *)1;
        cr_assert_eq(sd_backend_cuda_create(0, bad_arg[k], &be), SD_ERR_INVALID_ARG, "%g", bad_arg[k]);
        cr_assert_null(be);
        cr_assert(strstr(sd_last_error(), "memory fraction") != NULL, "%s", sd_last_error());
    }
    cr_assert(strstr(sd_last_error(), "nan") != NULL, "%s", sd_last_error());
}

/* Every query's context is cut into chunks of 256 .. 4096 positions (the kernel keeps a
 * chunk's scores in shared memory), at most 64 of them until the chunks reach 4096, and
 * never more than the records reserved for any longer context of the same call. */
Test(cuda_ops, attention_chunking_fits_its_records, .timeout = 60)
{
    if (!sd_cuda_built()) cr_skip_test("built without CUDA");
    int prev_slots = 0;
    for (int len = 1; len <= 600000; len++) {
        int chunk = sd_cuda_attention_chunk_len(len), slots = sd_cuda_attention_chunk_slots(len);
        int count = (len + chunk - 1) / chunk;
        cr_assert(chunk >= 256 && chunk <= 4096 && (chunk & (chunk - 1)) == 0, "len %d: chunk %d", len, chunk);
        cr_assert(count <= 64 || chunk == 4096, "len %d: %d chunks of %d", len, count, chunk);
        cr_assert(len <= 16384 ? chunk == 256 : 1, "len %d: chunk %d", len, chunk);
        cr_assert(count <= slots, "len %d: %d chunks, %d records", len, count, slots);
        cr_assert(slots >= prev_slots, "records shrink at len %d", len);
        prev_slots = slots;
    }
    cr_assert_eq(sd_cuda_attention_chunk_len(INT32_MAX), 4096);
    cr_assert_eq(sd_cuda_attention_chunk_slots(INT32_MAX), (INT32_MAX - 1) / 4096 + 1);
}

/* The attention launch is sized from n_ctx alone (so a captured graph replays at any
 * positions): slots(n_ctx) records and phase-1 blocks per (query, head) must hold the chunks
 * of every query position below n_ctx, i.e. max over L <= n_ctx of count(L) <= slots(n_ctx);
 * and a query's chunking is the same whatever n_ctx it is launched with (it depends on its
 * own length L only, which the function's signature guarantees: chunk_len takes L). */
Test(cuda_ops, attention_geometry_covers_every_position_below_n_ctx, .timeout = 60)
{
    if (!sd_cuda_built()) cr_skip_test("built without CUDA");
    int max_count = 0; /* max over L <= n_ctx of count(L) */
    for (int n_ctx = 1; n_ctx <= 600000; n_ctx++) {
        int chunk = sd_cuda_attention_chunk_len(n_ctx), count = (n_ctx + chunk - 1) / chunk;
        max_count = count > max_count ? count : max_count;
        cr_assert(max_count <= sd_cuda_attention_chunk_slots(n_ctx),
                  "n_ctx %d: a position below it needs %d chunks, the launch has %d", n_ctx,
                  max_count, sd_cuda_attention_chunk_slots(n_ctx));
    }
}

/* ---- backend object ------------------------------------------------------------------------ */

Test(cuda_ops, ops_table_and_round_trip, .timeout = 120)
{
    sd_backend_t *be = cuda_or_skip(0.5);
    cr_assert_str_eq(be->ops->name, "cuda");
    cr_assert_eq(be->ops->host_memory, 0);
    float src[1000], back[1000];
    sd_test_fill_random(src, 1000, 1, 1.0f);
    void *dev = to_device(be, src, sizeof src);
    from_device(be, back, dev, sizeof back);
    cr_assert(memcmp(src, back, sizeof src) == 0);
    be->ops->release(be, dev);
    be->ops->release(be, NULL);
    assert_sync_ok(be);
    sd_backend_destroy(be);
}

Test(cuda_ops, memory_cap_refuses_and_counts, .timeout = 120)
{
    sd_backend_t *be = cuda_or_skip(0.01);
    size_t used = 0, cap = 0, used2 = 0;
    cr_assert_eq(sd_backend_cuda_memory(be, &used, &cap), SD_OK, "%s", sd_last_error());
    sd_cuda_device_info_t info;
    cr_assert_eq(sd_cuda_device_info(0, &info), SD_OK, "%s", sd_last_error());
    cr_assert(cap <= info.total_memory / 100 + 1 && cap >= info.total_memory / 100 - 1, "cap %zu", cap);
    cr_assert(used > 0 && used <= cap, "used %zu cap %zu (the attention workspace counts)", used, cap);

    cr_assert_null(be->ops->alloc(be, cap - used + 1), "one byte over the cap");
    cr_assert_eq(sd_backend_cuda_memory(be, &used2, NULL), SD_OK);
    cr_assert_eq(used2, used, "a refused alloc holds nothing");
    void *a = be->ops->alloc(be, 1 << 20), *b = be->ops->alloc(be, 12345);
    cr_assert(a && b);
    cr_assert_eq(sd_backend_cuda_memory(be, &used2, NULL), SD_OK);
    cr_assert_eq(used2, used + (1 << 20) + 12345);
    be->ops->release(be, a);
    cr_assert_eq(sd_backend_cuda_memory(be, &used2, NULL), SD_OK);
    cr_assert_eq(used2, used + 12345);
    void *rest = be->ops->alloc(be, cap - used2);
    cr_assert_not_null(rest, "exactly up to the cap: %s", sd_last_error());
    cr_assert_null(be->ops->alloc(be, 1));
    be->ops->release(be, rest);
    be->ops->release(be, b);
    cr_assert_eq(sd_backend_cuda_memory(be, &used2, NULL), SD_OK);
    cr_assert_eq(used2, used);
    assert_sync_ok(be);

    sd_backend_t *cpu = cpu_backend();
    cr_assert_eq(sd_backend_cuda_memory(cpu, &used2, &cap), SD_ERR_INVALID_ARG);
    sd_backend_destroy(cpu);
    sd_backend_destroy(be);
}

Test(cuda_ops, refused_arguments_fail_the_next_sync_only, .timeout = 120)
{
    sd_backend_t *be = cuda_or_skip(0.5);
    enum { HD = 1024 };
    float *q = be->ops->alloc(be, sizeof(float) * HD), *kv = be->ops->alloc(be, sizeof(float) * HD);
    float *out = be->ops->alloc(be, sizeof(float) * HD);
    int32_t zero = 0, *pos = to_device(be, &zero, sizeof zero);
    cr_assert(q && kv && out);
    be->ops->attention(be, q, kv, kv, NULL, 0, pos, 1, 1, 1, 1, HD, out);
    be->ops->add(be, out, q, HD); /* a later good op does not hide the first error */
    cr_assert_eq(be->ops->sync(be), SD_ERR_DEVICE);
    cr_assert(strstr(sd_last_error(), "cuda backend: attention:") != NULL, "%s", sd_last_error());
    cr_assert(strstr(sd_last_error(), "head_dim=1024") != NULL, "%s", sd_last_error());
    assert_sync_ok(be);

    be->ops->release(be, (char *)q + 4); /* not an allocation */
    cr_assert_eq(be->ops->sync(be), SD_ERR_DEVICE);
    cr_assert(strstr(sd_last_error(), "release") != NULL, "%s", sd_last_error());
    assert_sync_ok(be);
    be->ops->kv_store(be, kv, q, NULL, 0, pos, 1, 0, HD); /* n_ctx 0 */
    cr_assert_eq(be->ops->sync(be), SD_ERR_DEVICE);
    cr_assert(strstr(sd_last_error(), "kv_store") != NULL && strstr(sd_last_error(), "n_ctx=0"),
              "%s", sd_last_error());
    be->ops->attention(be, q, kv, kv, NULL, 0, NULL, 1, 1, 1, 1, 16, out); /* positions NULL */
    cr_assert_eq(be->ops->sync(be), SD_ERR_DEVICE);
    assert_sync_ok(be);
    be->ops->release(be, q);
    be->ops->release(be, kv);
    be->ops->release(be, out);
    be->ops->release(be, pos);
    sd_backend_destroy(be);
}

/* ---- row-wise and element-wise ops ------------------------------------------------------- */

Test(cuda_ops, rmsnorm_matches_cpu_and_aliases, .timeout = 120)
{
    sd_backend_t *be = cuda_or_skip(0.5), *cpu = cpu_backend();
    const int shapes[][2] = {{1, 1}, {5, 17}, {17, 576}, {3, 4097}, {2, 8192}};
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        int n = shapes[k][0], dim = shapes[k][1];
        size_t len = (size_t)n * (size_t)dim;
        float *x = alloc_floats(len), *w = alloc_floats((size_t)dim), *want = alloc_floats(len);
        float *got = alloc_floats(len), *got_alias = alloc_floats(len);
        sd_test_fill_random(x, len, 10 + (uint32_t)k, 3.0f);
        sd_test_fill_random(w, (size_t)dim, 20 + (uint32_t)k, 1.0f);
        cpu->ops->rmsnorm(cpu, x, w, n, dim, 1e-5f, want);
        float *dx = to_device(be, x, sizeof(float) * len), *dw = to_device(be, w, sizeof(float) * dim);
        float *dout = be->ops->alloc(be, sizeof(float) * len);
        be->ops->rmsnorm(be, dx, dw, n, dim, 1e-5f, dout);
        from_device(be, got, dout, sizeof(float) * len);
        be->ops->rmsnorm(be, dx, dw, n, dim, 1e-5f, dx); /* in place */
        from_device(be, got_alias, dx, sizeof(float) * len);
        assert_close(got, want, len, 1e-5, "rmsnorm");
        cr_assert(memcmp(got, got_alias, sizeof(float) * len) == 0, "in place differs (n %d dim %d)", n, dim);
        be->ops->release(be, dx);
        be->ops->release(be, dw);
        be->ops->release(be, dout);
        free(x), free(w), free(want), free(got), free(got_alias);
    }
    sd_backend_destroy(cpu);
    sd_backend_destroy(be);
}

Test(cuda_ops, swiglu_and_add_match_cpu, .timeout = 120)
{
    sd_backend_t *be = cuda_or_skip(0.5), *cpu = cpu_backend();
    const size_t lens[] = {1, 257, 100003, 2000000}; /* the last one grid-strides */
    for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
        size_t len = lens[k], bytes = sizeof(float) * len;
        float *g = alloc_floats(len), *u = alloc_floats(len), *want = alloc_floats(len), *got = alloc_floats(len);
        sd_test_fill_random(g, len, 30 + (uint32_t)k, 8.0f);
        sd_test_fill_random(u, len, 40 + (uint32_t)k, 2.0f);
        float *dg = to_device(be, g, bytes), *du = to_device(be, u, bytes), *dout = be->ops->alloc(be, bytes);
        cpu->ops->swiglu(cpu, g, u, len, want);
        be->ops->swiglu(be, dg, du, len, dout);
        from_device(be, got, dout, bytes);
        assert_close(got, want, len, 1e-5, "swiglu");
        be->ops->swiglu(be, dg, du, len, dg); /* in place */
        from_device(be, g, dg, bytes);
        cr_assert(memcmp(g, got, bytes) == 0, "swiglu in place differs (len %zu)", len);

        sd_test_fill_random(g, len, 50 + (uint32_t)k, 4.0f);
        be->ops->upload(be, dg, g, bytes);
        memcpy(want, g, bytes);
        cpu->ops->add(cpu, want, u, len);
        be->ops->add(be, dg, du, len);
        from_device(be, got, dg, bytes);
        cr_assert(memcmp(got, want, bytes) == 0, "add is exact (len %zu)", len);
        be->ops->release(be, dg);
        be->ops->release(be, du);
        be->ops->release(be, dout);
        free(g), free(u), free(want), free(got);
    }
    sd_backend_destroy(cpu);
    sd_backend_destroy(be);
}

/* ---- rope ----------------------------------------------------------------------------------- */

typedef struct {
    sd_rope_style_t style;
    int n_head, head_dim, rot_dim;
} rope_param_t;

static rope_param_t rope_params[] = {
    {SD_ROPE_NORM, 9, 64, 64},   {SD_ROPE_NEOX, 9, 64, 64},   {SD_ROPE_NORM, 3, 64, 32},
    {SD_ROPE_NEOX, 3, 64, 32},   {SD_ROPE_NORM, 2, 34, 20},   {SD_ROPE_NEOX, 2, 34, 20},
    {SD_ROPE_NEOX, 4, 256, 256}, {SD_ROPE_NORM, 1, 300, 258}, {SD_ROPE_NEOX, 5, 7, 0},
};

ParameterizedTestParameters(cuda_ops, rope)
{
    return cr_make_param_array(rope_param_t, rope_params, sizeof rope_params / sizeof rope_params[0]);
}

ParameterizedTest(rope_param_t *p, cuda_ops, rope, .timeout = 120)
{
    sd_backend_t *be = cuda_or_skip(0.5), *cpu = cpu_backend();
    enum { N = 7 };
    const int32_t pos[N] = {0, 1, 2, 17, 1234, 4095, 30000};
    size_t row = (size_t)p->n_head * (size_t)p->head_dim, len = N * row, bytes = sizeof(float) * len;
    float *x = alloc_floats(len), *want = alloc_floats(len), *got = alloc_floats(len), *alone = alloc_floats(len);
    sd_test_fill_random(x, len, 60, 2.0f);
    memcpy(want, x, bytes);
    sd_rope_params_t rp = {.style = p->style, .rot_dim = p->rot_dim, .freq_base = 10000.0f};
    cpu->ops->rope(cpu, want, pos, N, p->n_head, p->head_dim, &rp);

    float *dx = to_device(be, x, bytes);
    int32_t *dpos = to_device(be, pos, sizeof pos);
    be->ops->rope(be, dx, dpos, N, p->n_head, p->head_dim, &rp);
    from_device(be, got, dx, bytes);
    assert_close(got, want, len, 1e-5, "rope");
    for (size_t i = 0; i < len; i++)
        if ((int)(i % (size_t)p->head_dim) >= p->rot_dim) cr_assert_eq(got[i], x[i], "dim past rot_dim changed");

    /* batch invariance: each token alone, at its own position */
    be->ops->upload(be, dx, x, bytes);
    for (int t = 0; t < N; t++) be->ops->rope(be, dx + (size_t)t * row, dpos + t, 1, p->n_head, p->head_dim, &rp);
    from_device(be, alone, dx, bytes);
    cr_assert(memcmp(alone, got, bytes) == 0, "a token alone differs from the batch of %d", N);
    be->ops->release(be, dx);
    be->ops->release(be, dpos);
    free(x), free(want), free(got), free(alone);
    sd_backend_destroy(cpu);
    sd_backend_destroy(be);
}

/* ---- attention ------------------------------------------------------------------------------ */

typedef struct {
    int n_head, n_head_kv, head_dim, pos0, n;
    int long_shape; /* 1: in the CUDA host mode only under `slow` (sd_test_long_shapes) */
} attn_param_t;

static attn_param_t attn_params[] = {
    {4, 4, 16, 0, 1, 0},          /* ratio 1, one query, one position */
    {4, 4, 16, 0, 17, 0},         /* ratio 1, prefill from 0 */
    {9, 3, 64, 11, 5, 0},         /* ratio 3 (SmolLM2 shape) */
    {3, 1, 33, 2, 17, 0},         /* ratio 3, odd head_dim */
    {16, 2, 128, 3000, 5, 1},     /* ratio 8, 12 chunks */
    {8, 1, 80, 3000, 17, 1},      /* ratio 8, head_dim not a power of two */
    {24, 3, 64, 3000, 1, 0},      /* decode at a long context, 12 chunks */
    {4, 4, 256, 700, 17, 0},      /* the largest head_dim */
    {3, 3, 1, 5, 5, 0},           /* head_dim 1 */
    {4, 2, 64, 20000, 2, 0},      /* 512-position chunks */
    {2, 1, 8, 300000, 2, 1},      /* 4096-position chunks, more than 64 of them */
};

ParameterizedTestParameters(cuda_ops, attention)
{
    return cr_make_param_array(attn_param_t, attn_params, sizeof attn_params / sizeof attn_params[0]);
}

/* Device buffers of one attention problem (random q, k, v; queries at pos0 .. pos0+n-1 of
 * a cache of n_ctx = pos0 + n positions) and its host copies. */
typedef struct {
    attn_param_t p;
    int n_ctx;
    size_t row, q_len, kv_len; /* floats: a query row, q / out, one cache */
    float *q, *k, *v;          /* host */
    int32_t *pos;              /* host [n] */
    float *dq, *dk, *dv, *dout;
    int32_t *dpos;
} attn_case_t;

static attn_case_t attn_case_make(sd_backend_t *be, attn_param_t p)
{
    attn_case_t c = {.p = p, .n_ctx = p.pos0 + p.n};
    c.row = (size_t)p.n_head * (size_t)p.head_dim;
    c.q_len = (size_t)p.n * c.row;
    c.kv_len = (size_t)c.n_ctx * (size_t)p.n_head_kv * (size_t)p.head_dim;
    c.q = alloc_floats(c.q_len), c.k = alloc_floats(c.kv_len), c.v = alloc_floats(c.kv_len);
    c.pos = malloc(sizeof(int32_t) * (size_t)p.n);
    cr_assert_not_null(c.pos);
    for (int i = 0; i < p.n; i++) c.pos[i] = p.pos0 + i;
    sd_test_fill_random(c.q, c.q_len, 1, 2.0f);
    sd_test_fill_random(c.k, c.kv_len, 2, 2.0f);
    sd_test_fill_random(c.v, c.kv_len, 3, 1.0f);
    c.dq = to_device(be, c.q, sizeof(float) * c.q_len);
    c.dk = to_device(be, c.k, sizeof(float) * c.kv_len);
    c.dv = to_device(be, c.v, sizeof(float) * c.kv_len);
    c.dpos = to_device(be, c.pos, sizeof(int32_t) * (size_t)p.n);
    c.dout = be->ops->alloc(be, sizeof(float) * c.q_len);
    cr_assert_not_null(c.dout);
    return c;
}

static void attn_case_free(sd_backend_t *be, attn_case_t *c)
{
    be->ops->release(be, c->dq);
    be->ops->release(be, c->dk);
    be->ops->release(be, c->dv);
    be->ops->release(be, c->dpos);
    be->ops->release(be, c->dout);
    free(c->q), free(c->k), free(c->v), free(c->pos);
}

/* Queries i0 .. i0+n-1 of the case on the device, launched with a cache of n_ctx rows,
 * downloaded to got[n, row]. */
static void attn_run_ctx(sd_backend_t *be, const attn_case_t *c, int i0, int n, int n_ctx, float *got)
{
    const attn_param_t *p = &c->p;
    be->ops->attention(be, c->dq + (size_t)i0 * c->row, c->dk, c->dv, NULL, 0, c->dpos + i0, n, n_ctx,
                       p->n_head, p->n_head_kv, p->head_dim, c->dout);
    from_device(be, got, c->dout, sizeof(float) * (size_t)n * c->row);
}

static void attn_run(sd_backend_t *be, const attn_case_t *c, int i0, int n, float *got)
{
    attn_run_ctx(be, c, i0, n, c->n_ctx, got);
}

/* Query i alone on the CPU backend. */
static void attn_cpu_row(sd_backend_t *cpu, const attn_case_t *c, int i, float *want)
{
    const attn_param_t *p = &c->p;
    cpu->ops->attention(cpu, c->q + (size_t)i * c->row, c->k, c->v, NULL, 0, c->pos + i, 1, c->n_ctx,
                        p->n_head, p->n_head_kv, p->head_dim, want);
}

/* A shape too long for the CUDA host mode's default run skips there, saying so. */
static void skip_long_in_host_mode(int long_shape, const char *what)
{
    if (long_shape && !sd_test_long_shapes(sd_cuda_host_mode()))
        cr_skip_test("%s: a long shape, run in the CUDA host mode only under the slow label "
                     "(SPECDEC_TEST_LONG=1)", what);
}

ParameterizedTest(attn_param_t *p, cuda_ops, attention, .timeout = 300)
{
    char shape[96];
    snprintf(shape, sizeof shape, "attention %d/%d heads, head_dim %d, %d queries at %d", p->n_head,
             p->n_head_kv, p->head_dim, p->n, p->pos0);
    skip_long_in_host_mode(p->long_shape, shape);
    sd_backend_t *be = cuda_or_skip(0.5), *cpu = cpu_backend();
    attn_case_t c = attn_case_make(be, *p);
    float *got = alloc_floats(c.q_len), *want = alloc_floats(c.q_len), *alone = alloc_floats(c.row);
    cpu->ops->attention(cpu, c.q, c.k, c.v, NULL, 0, c.pos, p->n, c.n_ctx, p->n_head, p->n_head_kv,
                        p->head_dim, want);
    attn_run(be, &c, 0, p->n, got);
    for (int i = 0; i < p->n; i++) {
        char what[96];
        snprintf(what, sizeof what, "attention query %d (pos0 %d, heads %d/%d, head_dim %d)", i,
                 p->pos0, p->n_head, p->n_head_kv, p->head_dim);
        assert_close(got + (size_t)i * c.row, want + (size_t)i * c.row, c.row, 2e-4, what);
    }
    /* batch invariance: each query alone at its own position (n = 1), launched with the same
     * cache and with one that ends right after it (another grid, the same bits) */
    for (int i = 0; i < p->n; i++) {
        attn_run(be, &c, i, 1, alone);
        cr_assert(memcmp(alone, got + (size_t)i * c.row, sizeof(float) * c.row) == 0,
                  "query %d alone differs from the batch of %d", i, p->n);
        attn_run_ctx(be, &c, i, 1, c.pos[i] + 1, alone);
        cr_assert(memcmp(alone, got + (size_t)i * c.row, sizeof(float) * c.row) == 0,
                  "query %d with n_ctx %d differs from n_ctx %d", i, c.pos[i] + 1, c.n_ctx);
    }
    attn_case_free(be, &c);
    free(got), free(want), free(alone);
    sd_backend_destroy(cpu);
    sd_backend_destroy(be);
}

/* The masked (tree) attention op against the CPU's (which tests/test_kernels_tree_attention.c
 * checks against a C reference): a tree of 7 rows after 40 context slots; a row that sees
 * nothing is NaN on both; each row alone gives the same bits; over a paged layout (the cache
 * scattered by a block table) the same bits as over the slab. */
Test(cuda_ops, attention_masked_matches_the_cpu, .timeout = 300)
{
    sd_backend_t *be = cuda_or_skip(0.5), *cpu = cpu_backend();
    enum { N = 7, BASE = 40 };
    static const int32_t parent[N] = {-1, 0, 0, 1, 2, 3, 0};
    attn_case_t c = attn_case_make(be, (attn_param_t){9, 3, 64, BASE, N, 0}); /* n_ctx BASE + N */
    uint8_t mask[N * N] = {0};
    for (int i = 0; i < N; i++)
        for (int a = i; a >= 0; a = parent[a]) mask[i * N + a] = 1;
    uint8_t *dmask = to_device(be, mask, sizeof mask);
    float *got = alloc_floats(c.q_len), *want = alloc_floats(c.q_len), *alone = alloc_floats(c.row);
    cpu->ops->attention_masked(cpu, c.q, c.k, c.v, NULL, 0, BASE, mask, N, N, c.n_ctx, 9, 3, 64, want);
    be->ops->attention_masked(be, c.dq, c.dk, c.dv, NULL, 0, BASE, dmask, N, N, c.n_ctx, 9, 3, 64, c.dout);
    from_device(be, got, c.dout, sizeof(float) * c.q_len);
    cr_assert_eq(be->ops->sync(be), SD_OK, "%s", sd_last_error());
    for (int i = 0; i < N; i++) {
        char what[64];
        snprintf(what, sizeof what, "masked attention row %d", i);
        assert_close(got + (size_t)i * c.row, want + (size_t)i * c.row, c.row, 2e-4, what);
        be->ops->attention_masked(be, c.dq + (size_t)i * c.row, c.dk, c.dv, NULL, 0, BASE, dmask + i * N, 1,
                                  N, c.n_ctx, 9, 3, 64, c.dout);
        from_device(be, alone, c.dout, sizeof(float) * c.row);
        cr_assert(memcmp(alone, got + (size_t)i * c.row, sizeof(float) * c.row) == 0,
                  "masked row %d alone differs from the batch", i);
    }
    enum { BS = 8, POOL = 8 };
    static const int32_t table[6] = {5, 2, 7, 0, 3, 6}; /* n_ctx 47: 6 blocks */
    size_t kvrow = 3 * 64, pool_len = (size_t)POOL * BS * kvrow;
    float *kp = sd_test_page_kv(c.k, c.n_ctx, kvrow, table, BS, POOL);
    float *vp = sd_test_page_kv(c.v, c.n_ctx, kvrow, table, BS, POOL);
    float *dkp = to_device(be, kp, sizeof(float) * pool_len), *dvp = to_device(be, vp, sizeof(float) * pool_len);
    int32_t *dtable = to_device(be, table, sizeof table);
    be->ops->attention_masked(be, c.dq, dkp, dvp, dtable, BS, BASE, dmask, N, N, c.n_ctx, 9, 3, 64,
                              c.dout);
    float *paged = alloc_floats(c.q_len);
    from_device(be, paged, c.dout, sizeof(float) * c.q_len);
    cr_assert(memcmp(paged, got, sizeof(float) * c.q_len) == 0, "paged masked attention differs");
    be->ops->release(be, dkp), be->ops->release(be, dvp), be->ops->release(be, dtable);
    free(kp), free(vp), free(paged);
    uint8_t none[N] = {0};
    be->ops->upload(be, dmask, none, sizeof none);
    be->ops->attention_masked(be, c.dq, c.dk, c.dv, NULL, 0, 0, dmask, 1, N, c.n_ctx, 9, 3, 64, c.dout);
    from_device(be, alone, c.dout, sizeof(float) * c.row);
    cr_assert(isnan(alone[0]) && isnan(alone[c.row - 1]), "a row that sees nothing is NaN");
    /* bad geometry (base + m > n_ctx) is an error for the next sync */
    be->ops->attention_masked(be, c.dq, c.dk, c.dv, NULL, 0, c.n_ctx, dmask, 1, N, c.n_ctx, 9, 3, 64, c.dout);
    cr_assert_eq(be->ops->sync(be), SD_ERR_DEVICE);
    cr_assert(strstr(sd_last_error(), "attention_masked") != NULL, "%s", sd_last_error());
    be->ops->release(be, dmask);
    attn_case_free(be, &c);
    free(got), free(want), free(alone);
    sd_backend_destroy(cpu);
    sd_backend_destroy(be);
}

/* Positions in any order, repeated, with gaps and a much longer cache (the grid is sized for
 * n_ctx; blocks past a query's chunks exit): against the CPU, and each query alone bit for
 * bit. A position outside the cache gives a NaN row, as on the CPU. */
Test(cuda_ops, attention_non_consecutive_positions, .timeout = 300)
{
    sd_backend_t *be = cuda_or_skip(0.5), *cpu = cpu_backend();
    enum { N = 8 };
    attn_param_t p = {8, 2, 64, 0, N, 0};
    attn_case_t c = attn_case_make(be, (attn_param_t){8, 2, 64, 20000 - N, N, 0}); /* n_ctx 20000 */
    const int32_t pos[N] = {17, 0, 19999, 300, 17, 4095, 1, 12345};
    memcpy(c.pos, pos, sizeof pos);
    be->ops->upload(be, c.dpos, pos, sizeof pos);
    float *got = alloc_floats(c.q_len), *want = alloc_floats(c.q_len), *alone = alloc_floats(c.row);
    cpu->ops->attention(cpu, c.q, c.k, c.v, NULL, 0, c.pos, N, c.n_ctx, p.n_head, p.n_head_kv, p.head_dim, want);
    attn_run(be, &c, 0, N, got);
    for (int i = 0; i < N; i++) {
        char what[64];
        snprintf(what, sizeof what, "query %d at position %d", i, pos[i]);
        assert_close(got + (size_t)i * c.row, want + (size_t)i * c.row, c.row, 2e-4, what);
        attn_run(be, &c, i, 1, alone);
        cr_assert(memcmp(alone, got + (size_t)i * c.row, sizeof(float) * c.row) == 0, "%s alone", what);
    }
    const int32_t bad[2] = {c.n_ctx, -1};
    be->ops->upload(be, c.dpos + 1, bad, sizeof bad);
    attn_run(be, &c, 0, 3, got);
    for (size_t e = c.row; e < 3 * c.row; e++) cr_assert(isnan(got[e]), "element %zu: %g", e, got[e]);
    attn_case_free(be, &c);
    free(got), free(want), free(alone);
    sd_backend_destroy(cpu);
    sd_backend_destroy(be);
}

/* ---- kv_store ------------------------------------------------------------------------------ */

/* An exact copy of each row to its position; other rows untouched; a position outside the
 * cache stores nothing: the same bytes as the CPU backend. */
Test(cuda_ops, kv_store_matches_cpu_exactly, .timeout = 120)
{
    sd_backend_t *be = cuda_or_skip(0.5), *cpu = cpu_backend();
    enum { N = 6, N_CTX = 50, ROW = 576 }; /* ROW > the block's threads: strided */
    const int32_t pos[N] = {49, 0, 7, N_CTX, 8, -3};
    float *rows = alloc_floats(N * ROW), *want = alloc_floats(N_CTX * ROW), *got = alloc_floats(N_CTX * ROW);
    sd_test_fill_random(rows, N * ROW, 80, 3.0f);
    sd_test_fill_random(want, N_CTX * ROW, 81, 1.0f);
    float *drows = to_device(be, rows, sizeof(float) * N * ROW);
    float *dcache = to_device(be, want, sizeof(float) * N_CTX * ROW);
    int32_t *dpos = to_device(be, pos, sizeof pos);
    cpu->ops->kv_store(cpu, want, rows, NULL, 0, pos, N, N_CTX, ROW);
    be->ops->kv_store(be, dcache, drows, NULL, 0, dpos, N, N_CTX, ROW);
    from_device(be, got, dcache, sizeof(float) * N_CTX * ROW);
    cr_assert(memcmp(got, want, sizeof(float) * N_CTX * ROW) == 0, "kv_store differs from the CPU");
    be->ops->release(be, drows);
    be->ops->release(be, dcache);
    be->ops->release(be, dpos);
    free(rows), free(want), free(got);
    sd_backend_destroy(cpu);
    sd_backend_destroy(be);
}

/* ---- graphs -------------------------------------------------------------------------------- */

/* kv_store then attention captured once at positions pos0..pos0+n-1 of a cache, replayed
 * after the positions (only the device buffer) change: the same bits as the ops run eagerly
 * at the new positions. */
Test(cuda_ops, graph_replays_at_new_positions, .timeout = 120)
{
    sd_backend_t *be = cuda_or_skip(0.5);
    cr_assert(be->ops->graph_begin && be->ops->graph_end && be->ops->graph_launch && be->ops->graph_free);
    enum { N = 5, N_CTX = 700 };
    attn_param_t p = {9, 3, 64, N_CTX - N, N, 0};
    attn_case_t c = attn_case_make(be, p); /* cache of N_CTX rows */
    size_t kvd = (size_t)p.n_head_kv * (size_t)p.head_dim;
    float *rows = alloc_floats(N * kvd), *eager = alloc_floats(c.q_len), *replay = alloc_floats(c.q_len);
    float *cache_eager = alloc_floats(c.kv_len), *cache_replay = alloc_floats(c.kv_len);
    sd_test_fill_random(rows, N * kvd, 90, 1.5f);
    float *drows = to_device(be, rows, sizeof(float) * N * kvd);
    const int32_t starts[3] = {0, 300, N_CTX - N};

    be->ops->graph_begin(be);
    be->ops->kv_store(be, c.dk, drows, NULL, 0, c.dpos, N, N_CTX, kvd);
    be->ops->attention(be, c.dq, c.dk, c.dv, NULL, 0, c.dpos, N, N_CTX, p.n_head, p.n_head_kv, p.head_dim, c.dout);
    void *graph = be->ops->graph_end(be);
    cr_assert_not_null(graph, "capture: %s", be->ops->sync(be) == SD_OK ? "" : sd_last_error());
    for (int k = 0; k < 3; k++) {
        int32_t pos[N];
        for (int i = 0; i < N; i++) pos[i] = starts[k] + i;
        be->ops->upload(be, c.dk, c.k, sizeof(float) * c.kv_len); /* the same cache each time */
        be->ops->upload(be, c.dpos, pos, sizeof pos);
        be->ops->kv_store(be, c.dk, drows, NULL, 0, c.dpos, N, N_CTX, kvd);
        be->ops->attention(be, c.dq, c.dk, c.dv, NULL, 0, c.dpos, N, N_CTX, p.n_head, p.n_head_kv, p.head_dim, c.dout);
        from_device(be, eager, c.dout, sizeof(float) * c.q_len);
        from_device(be, cache_eager, c.dk, sizeof(float) * c.kv_len);

        be->ops->upload(be, c.dk, c.k, sizeof(float) * c.kv_len);
        be->ops->upload(be, c.dout, c.q, sizeof(float) * c.q_len); /* stale output: overwritten */
        be->ops->graph_launch(be, graph);
        from_device(be, replay, c.dout, sizeof(float) * c.q_len);
        from_device(be, cache_replay, c.dk, sizeof(float) * c.kv_len);
        cr_assert(memcmp(eager, replay, sizeof(float) * c.q_len) == 0, "attention replayed at %d", starts[k]);
        cr_assert(memcmp(cache_eager, cache_replay, sizeof(float) * c.kv_len) == 0, "kv_store replayed at %d",
                  starts[k]);
    }
    be->ops->graph_free(be, graph);
    be->ops->graph_free(be, NULL);
    assert_sync_ok(be);
    be->ops->release(be, drows);
    attn_case_free(be, &c);
    free(rows), free(eager), free(replay), free(cache_eager), free(cache_replay);
    sd_backend_destroy(be);
}

/* The paged layout on the device: attention over K/V scattered by a block table equals the
 * slab's on the device bit for bit; a graph captured with the table replays with the table's
 * new contents (another scatter of the same rows: the same bits); kv_store pages as the CPU. */
Test(cuda_ops, paged_attention_equals_the_slab_and_replays_new_tables, .timeout = 120)
{
    sd_backend_t *be = cuda_or_skip(0.5), *cpu = cpu_backend();
    enum { N = 5, BS = 8, POOL = 8, NT = 6 };
    attn_param_t p = {6, 2, 32, 40, N, 0}; /* n_ctx 45: NT blocks */
    attn_case_t c = attn_case_make(be, p);
    const int32_t tables[2][NT] = {{5, 2, 7, 0, 3, 6}, {1, 4, 0, 6, 7, 2}};
    size_t row = (size_t)p.n_head_kv * (size_t)p.head_dim, pool_len = (size_t)POOL * BS * row;
    float *want = alloc_floats(c.q_len), *got = alloc_floats(c.q_len);
    attn_run(be, &c, 0, N, want); /* the slab */
    int32_t *dtable = to_device(be, tables[0], sizeof tables[0]);
    float *dkp = be->ops->alloc(be, sizeof(float) * pool_len), *dvp = be->ops->alloc(be, sizeof(float) * pool_len);
    cr_assert(dkp && dvp);
    be->ops->graph_begin(be);
    be->ops->attention(be, c.dq, dkp, dvp, dtable, BS, c.dpos, N, c.n_ctx, p.n_head, p.n_head_kv,
                       p.head_dim, c.dout);
    void *graph = be->ops->graph_end(be);
    cr_assert_not_null(graph, "capture: %s", be->ops->sync(be) == SD_OK ? "" : sd_last_error());
    for (int t = 0; t < 2; t++) {
        float *kp = sd_test_page_kv(c.k, c.n_ctx, row, tables[t], BS, POOL);
        float *vp = sd_test_page_kv(c.v, c.n_ctx, row, tables[t], BS, POOL);
        be->ops->upload(be, dkp, kp, sizeof(float) * pool_len);
        be->ops->upload(be, dvp, vp, sizeof(float) * pool_len);
        be->ops->upload(be, dtable, tables[t], sizeof tables[t]);
        be->ops->attention(be, c.dq, dkp, dvp, dtable, BS, c.dpos, N, c.n_ctx, p.n_head,
                           p.n_head_kv, p.head_dim, c.dout);
        from_device(be, got, c.dout, sizeof(float) * c.q_len);
        cr_assert(memcmp(want, got, sizeof(float) * c.q_len) == 0, "paged attention, table %d", t);
        be->ops->upload(be, c.dout, c.q, sizeof(float) * c.q_len); /* stale output */
        be->ops->graph_launch(be, graph);
        from_device(be, got, c.dout, sizeof(float) * c.q_len);
        cr_assert(memcmp(want, got, sizeof(float) * c.q_len) == 0, "replayed with table %d", t);
        /* kv_store through the table, as the CPU does it */
        float *rows = alloc_floats((size_t)N * row), *back = alloc_floats(pool_len);
        sd_test_fill_random(rows, (size_t)N * row, 95 + (uint32_t)t, 1.0f);
        float *drows = to_device(be, rows, sizeof(float) * (size_t)N * row);
        be->ops->kv_store(be, dkp, drows, dtable, BS, c.dpos, N, c.n_ctx, row);
        cpu->ops->kv_store(cpu, kp, rows, tables[t], BS, c.pos, N, c.n_ctx, row);
        from_device(be, back, dkp, sizeof(float) * pool_len);
        for (size_t i = 0; i < pool_len; i++)
            cr_assert(memcmp(&back[i], &kp[i], sizeof(float)) == 0 || (isnan(back[i]) && isnan(kp[i])),
                      "paged kv_store float %zu, table %d", i, t);
        be->ops->release(be, drows);
        free(rows), free(back), free(kp), free(vp);
    }
    be->ops->graph_free(be, graph);
    assert_sync_ok(be);
    be->ops->release(be, dtable);
    be->ops->release(be, dkp);
    be->ops->release(be, dvp);
    attn_case_free(be, &c);
    free(want), free(got);
    sd_backend_destroy(cpu);
    sd_backend_destroy(be);
}

/* A copy to or from the host during a capture is refused: the capture is discarded (NULL),
 * the next sync names the call, and the stream works again afterwards. So does an op that
 * refuses its arguments during a capture, and a graph_end without a graph_begin. */
Test(cuda_ops, graph_capture_failures_leave_the_backend_usable, .timeout = 120)
{
    sd_backend_t *be = cuda_or_skip(0.5);
    float host[64], back[64];
    sd_test_fill_random(host, 64, 91, 1.0f);
    float *a = to_device(be, host, sizeof host), *b = be->ops->alloc(be, sizeof host);
    cr_assert_not_null(b);

    be->ops->graph_begin(be);
    be->ops->add(be, a, a, 64);
    be->ops->upload(be, b, host, sizeof host);
    cr_assert_null(be->ops->graph_end(be), "a capture with an upload in it must be discarded");
    cr_assert_eq(be->ops->sync(be), SD_ERR_DEVICE);
    cr_assert(strstr(sd_last_error(), "upload") != NULL, "%s", sd_last_error());

    be->ops->graph_begin(be);
    be->ops->rmsnorm(be, a, a, 1, 0, 1e-5f, b); /* dim 0: refused */
    cr_assert_null(be->ops->graph_end(be));
    cr_assert_eq(be->ops->sync(be), SD_ERR_DEVICE);
    cr_assert(strstr(sd_last_error(), "rmsnorm") != NULL, "%s", sd_last_error());

    cr_assert_null(be->ops->graph_end(be));
    cr_assert_eq(be->ops->sync(be), SD_ERR_DEVICE);
    cr_assert(strstr(sd_last_error(), "graph_end") != NULL, "%s", sd_last_error());

    /* the stream runs eagerly again; `a` was never doubled by the discarded captures */
    be->ops->upload(be, b, host, sizeof host);
    be->ops->add(be, b, a, 64);
    from_device(be, back, b, sizeof back);
    for (int i = 0; i < 64; i++) cr_assert_eq(back[i], host[i] + host[i], "element %d", i);
    be->ops->release(be, a);
    be->ops->release(be, b);
    assert_sync_ok(be);
    sd_backend_destroy(be);
}

/* A prefill too big for one workspace group (64 MiB; about 184 queries each here): rows on
 * both sides of group edges equal the same rows computed alone, bit for bit, and the CPU. */
Test(cuda_ops, attention_groups_are_batch_invariant, .timeout = 300)
{
    skip_long_in_host_mode(1, "600 queries over 2600 positions");
    sd_backend_t *be = cuda_or_skip(0.5), *cpu = cpu_backend();
    attn_param_t p = {32, 4, 256, 2000, 600, 0};
    attn_case_t c = attn_case_make(be, p);
    float *got = alloc_floats(c.q_len), *alone = alloc_floats(c.row), *want = alloc_floats(c.row);
    attn_run(be, &c, 0, p.n, got);
    const int rows[] = {0, 1, 183, 184, 185, 367, 368, 551, 552, 598, 599};
    for (size_t k = 0; k < sizeof rows / sizeof rows[0]; k++) {
        int i = rows[k];
        attn_run(be, &c, i, 1, alone);
        cr_assert(memcmp(alone, got + (size_t)i * c.row, sizeof(float) * c.row) == 0,
                  "query %d alone differs from the batch of %d", i, p.n);
        attn_cpu_row(cpu, &c, i, want);
        assert_close(alone, want, c.row, 2e-4, "attention vs cpu");
    }
    /* and a batch of 7 starting mid-way */
    attn_run(be, &c, 180, 7, got);
    for (int i = 0; i < 7; i++) {
        attn_run(be, &c, 180 + i, 1, alone);
        cr_assert(memcmp(alone, got + (size_t)i * c.row, sizeof(float) * c.row) == 0, "query %d", 180 + i);
    }
    attn_case_free(be, &c);
    free(got), free(alone), free(want);
    sd_backend_destroy(cpu);
    sd_backend_destroy(be);
}

Test(cuda_ops, rmsnorm_rows_are_batch_invariant, .timeout = 120)
{
    sd_backend_t *be = cuda_or_skip(0.5);
    enum { N = 7, D = 2049 };
    float *x = alloc_floats(N * D), *w = alloc_floats(D), *batch = alloc_floats(N * D), *alone = alloc_floats(N * D);
    sd_test_fill_random(x, N * D, 70, 5.0f);
    sd_test_fill_random(w, D, 71, 1.0f);
    float *dx = to_device(be, x, sizeof(float) * N * D), *dw = to_device(be, w, sizeof(float) * D);
    float *dout = be->ops->alloc(be, sizeof(float) * N * D);
    be->ops->rmsnorm(be, dx, dw, N, D, 1e-6f, dout);
    from_device(be, batch, dout, sizeof(float) * N * D);
    for (int i = 0; i < N; i++) be->ops->rmsnorm(be, dx + (size_t)i * D, dw, 1, D, 1e-6f, dout + (size_t)i * D);
    from_device(be, alone, dout, sizeof(float) * N * D);
    cr_assert(memcmp(batch, alone, sizeof(float) * N * D) == 0, "a row alone differs from the batch");
    be->ops->release(be, dx);
    be->ops->release(be, dw);
    be->ops->release(be, dout);
    free(x), free(w), free(batch), free(alone);
    sd_backend_destroy(be);
}
