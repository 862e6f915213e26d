// The non-matmul ops of the forward on the GPU: rmsnorm, rope, attention, kv_store, swiglu,
// add. Each kernel's C reference is the CPU backend (kernels/cpu/backend_cpu.c), whose
// formula and float/double choices it mirrors; batch invariance: docs/cuda.md.
#include <math.h>

#include "launch.cuh"

enum {
    RMSNORM_THREADS = 256, // power of two: the tree reduction halves it
    ROPE_THREADS = 64,
    KV_STORE_THREADS = 256,
    ELEMWISE_THREADS = 256,
    ELEMWISE_MAX_BLOCKS = 4096, // grid-stride beyond this
};

static int elemwise_blocks(size_t len)
{
    size_t want = (len + ELEMWISE_THREADS - 1) / ELEMWISE_THREADS;
    return want < ELEMWISE_MAX_BLOCKS ? (int)want : ELEMWISE_MAX_BLOCKS;
}

// ---- rmsnorm ------------------------------------------------------------------------------

// One block (RMSNORM_THREADS) per row. The sum of squares is accumulated in double as the
// CPU does: each thread sums its strided elements in order, then a fixed tree combines the
// threads. out may alias x: every x of the row is read before the barrier that precedes
// the writes, and each write is made by the thread that reads that element.
static __global__ __launch_bounds__(RMSNORM_THREADS) void rmsnorm_kernel(const float *x, const float *w,
                                                                   int dim, float eps, float *out)
{
    __shared__ double partial[RMSNORM_THREADS];
    const int tid = threadIdx.x;
    const float *xr = x + (size_t)blockIdx.x * (size_t)dim; // x[row, dim]
    float *yr = out + (size_t)blockIdx.x * (size_t)dim;

    double ss = 0.0;
    for (int j = tid; j < dim; j += RMSNORM_THREADS) ss += (double)xr[j] * (double)xr[j];
    partial[tid] = ss;
    __syncthreads();
    for (int half = RMSNORM_THREADS / 2; half > 0; half >>= 1) {
        if (tid < half) partial[tid] += partial[tid + half];
        __syncthreads();
    }
    const float scale = 1.0f / sqrtf((float)(partial[0] / dim) + eps);
    for (int j = tid; j < dim; j += RMSNORM_THREADS) yr[j] = __fmul_rn(__fmul_rn(xr[j], scale), w[j]);
}

cudaError_t sd_cuda_rmsnorm(cudaStream_t stream, const float *x, const float *w, int n, int dim,
                            float eps, float *out)
{
    if (n < 0 || dim < 1 || (n > 0 && (!x || !w || !out))) return cudaErrorInvalidValue;
    if (n == 0) return cudaSuccess;
    return SD_LAUNCH(rmsnorm_kernel, n, RMSNORM_THREADS, 0, stream, x, w, dim, eps, out);
}

// ---- rope ---------------------------------------------------------------------------------

// One block per token; thread i handles the pair index i (strided by ROPE_THREADS) for every
// head. theta = pos * freq_base^(-2i/rot_dim) in double, cos/sin in double then cast, as the
// CPU does; the rotation uses round-to-nearest products and sums (no FMA contraction), which
// is what the CPU's ISO C build computes.
static __global__ __launch_bounds__(ROPE_THREADS) void rope_kernel(float *x, const int32_t *pos, int n_head,
                                                             int head_dim, int rot_dim, int neox,
                                                             float freq_base)
{
    const int half = rot_dim / 2;
    const int stride = neox ? 1 : 2, partner = neox ? half : 1; // NORM (2i, 2i+1); NEOX (i, i+half)
    float *xt = x + (size_t)blockIdx.x * (size_t)n_head * (size_t)head_dim; // x[t, n_head, head_dim]
    const double p = (double)pos[blockIdx.x];
    for (int i = threadIdx.x; i < half; i += ROPE_THREADS) {
        double theta = p * pow((double)freq_base, -2.0 * i / rot_dim);
        float c = (float)cos(theta), s = (float)sin(theta);
        for (int h = 0; h < n_head; h++) {
            float *a = xt + (size_t)h * (size_t)head_dim + (size_t)i * stride, *b = a + partner;
            float x0 = *a, x1 = *b;
            *a = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
            *b = __fadd_rn(__fmul_rn(x0, s), __fmul_rn(x1, c));
        }
    }
}

cudaError_t sd_cuda_rope(cudaStream_t stream, float *x, const int32_t *pos, int n, int n_head,
                         int head_dim, const sd_rope_params_t *p)
{
    if (!p || n < 0 || n_head < 1 || head_dim < 1) return cudaErrorInvalidValue;
    if (p->rot_dim < 0 || p->rot_dim % 2 != 0 || p->rot_dim > head_dim) return cudaErrorInvalidValue;
    if (p->style != SD_ROPE_NORM && p->style != SD_ROPE_NEOX) return cudaErrorInvalidValue;
    if (n > 0 && (!x || !pos)) return cudaErrorInvalidValue;
    if (n == 0 || p->rot_dim == 0) return cudaSuccess;
    return SD_LAUNCH(rope_kernel, n, ROPE_THREADS, 0, stream, x, pos, n_head, head_dim, p->rot_dim,
                     p->style == SD_ROPE_NEOX, p->freq_base);
}

// ---- attention ----------------------------------------------------------------------------
//
// Split-K (flash-decoding). Query i sits at position pos[i] (device memory: the kernels read
// it) and sees ctx_len = pos[i] + 1 positions, cut into chunks of attention_chunk_len(ctx_len)
// positions: ATTN_CHUNK_MIN, doubled while that gives more than ATTN_MAX_CHUNKS chunks, up to
// ATTN_CHUNK_MAX (beyond ATTN_MAX_CHUNKS * ATTN_CHUNK_MAX positions the count grows instead).
// The cut is a function of ctx_len alone.
//
// Phase 1, one block per (chunk, head, query): scores s_j = (k_j . q) * scale, the chunk
// max m_c, sum_c = sum_j expf(s_j - m_c), acc_c[d] = sum_j expf(s_j - m_c) v_j[d], written
// as one record {m_c, sum_c, acc_c[head_dim]} of the workspace.
// Phase 2, one block per (head, query): m = max m_c, w_c = expf(m_c - m) in chunk order,
// out[d] = (sum_c w_c acc_c[d]) * (1 / sum_c w_c sum_c).
//
// Launch geometry is a function of (n, n_ctx, shapes) only, never of the positions, so a
// captured launch replays correctly at other positions (CUDA graphs): every (query, head)
// owns slots = attention_chunk_slots(n_ctx) records, at least the chunk count of any
// ctx_len <= n_ctx (the slot bound grows with the length); phase 1 launches `slots` blocks
// per (head, query) and a block past its own query's chunk count exits at once; phase 2
// reads each query's chunk count from its own position. A position outside [0, n_ctx)
// computes nothing and gives a NaN row.
//
// Queries go in groups that fit the workspace; a group's records are written and read back
// before the next group's phase 1 (stream order), and where a record sits never changes what
// is computed, so a query's result is the same whatever group it lands in and whatever n is.
enum {
    ATTN_MAX_HEAD_DIM = 256,
    ATTN_THREADS = 256, // phase 1: 8 warps; power of two for the tree reductions
    ATTN_WARPS = ATTN_THREADS / 32,
    ATTN_COMBINE_THREADS = 128,
    ATTN_CHUNK_MIN = 256,
    ATTN_CHUNK_MAX = 4096, // scores of a chunk live in shared memory
    ATTN_MAX_CHUNKS = 64,
    ATTN_MAX_GROUP = 65535,    // queries per group: gridDim.z / gridDim.y limit
    ATTN_MAX_HEADS = 65535,    // gridDim.y limit
};

__host__ __device__ static inline int ceil_div_pos(int a, int b) { return (a - 1) / b + 1; } // a >= 1

// Positions per chunk for a query that sees ctx_len >= 1 positions.
__host__ __device__ static inline int attention_chunk_len(int ctx_len)
{
    int chunk = ATTN_CHUNK_MIN;
    while (chunk < ATTN_CHUNK_MAX && ceil_div_pos(ctx_len, chunk) > ATTN_MAX_CHUNKS) chunk *= 2;
    return chunk;
}

__host__ __device__ static inline int attention_chunk_count(int ctx_len)
{
    return ceil_div_pos(ctx_len, attention_chunk_len(ctx_len));
}

// Records reserved per (query, head) so that every ctx_len <= max_ctx_len fits:
// count(L) <= ceil(L / CHUNK_MIN) (chunks are at least CHUNK_MIN) and count(L) <=
// max(MAX_CHUNKS, ceil(L / CHUNK_MAX)) (doubling stops either under MAX_CHUNKS or at
// CHUNK_MAX); both bounds grow with L.
static int attention_chunk_slots(int max_ctx_len)
{
    int by_min = ceil_div_pos(max_ctx_len, ATTN_CHUNK_MIN);
    int by_max = ceil_div_pos(max_ctx_len, ATTN_CHUNK_MAX);
    int cap = by_max > ATTN_MAX_CHUNKS ? by_max : ATTN_MAX_CHUNKS;
    return by_min < cap ? by_min : cap;
}

size_t sd_cuda_attention_workspace_bytes(int n_ctx, int n_head, int head_dim)
{
    if (n_ctx < 1 || n_head < 1 || head_dim < 1) return 0;
    return (size_t)attention_chunk_slots(n_ctx) * (size_t)n_head * ((size_t)head_dim + 2) *
           sizeof(float);
}

// For the host tests (tests/cuda/test_cuda_ops.c): the chunking, which must cover every
// position exactly once and fit the reserved records.
extern "C" int sd_cuda_attention_chunk_len(int ctx_len) { return attention_chunk_len(ctx_len); }
extern "C" int sd_cuda_attention_chunk_slots(int max_ctx_len)
{
    return attention_chunk_slots(max_ctx_len);
}

typedef struct attn_args {
    const float *q;       // q[n, n_head, head_dim]
    const float *k, *v;   // rows [., n_head_kv, head_dim], paged by blocks (backend_impl.h)
    const int32_t *blocks; // [ceil(n_ctx / block_size)] device, or NULL: row = position
    int block_size;
    float *out;           // out[n, n_head, head_dim]
    float *ws;            // records [group, n_head, slots, head_dim + 2]
    const int32_t *pos;   // [n] query positions (device)
    int n_ctx, q0;        // q0: first query of the group
    int n_head, n_head_kv, heads_per_kv, head_dim, slots;
    float scale;
} attn_args_t;

// The cache row of position j (kernels/backend_impl.h, the paged KV layout).
__host__ __device__ static inline size_t kv_row_of(const int32_t *blocks, int block_size, int j)
{
    if (blocks == NULL) return (size_t)j;
    return (size_t)blocks[j / block_size] * (size_t)block_size + (size_t)(j % block_size);
}

// Positions query i sees (pos[i] + 1), or 0 when pos[i] is outside [0, n_ctx): the query is
// then not computed. The same value in every thread of a block.
__device__ static inline int attention_ctx_len(const attn_args_t &a, int i)
{
    const int p = a.pos[i];
    return p >= 0 && p < a.n_ctx ? p + 1 : 0; // p + 1 <= n_ctx: no overflow
}

__device__ static inline float *attention_record(const attn_args_t &a, int group_query, int h, int c)
{
    size_t rec = ((size_t)group_query * (size_t)a.n_head + (size_t)h) * (size_t)a.slots + (size_t)c;
    return a.ws + rec * ((size_t)a.head_dim + 2);
}

// Block-wide sum (or max) of one value per thread by a fixed tree; every thread gets the
// result and `scratch` may be reused afterwards.
template <bool MAX> __device__ static float attention_block_reduce(float v, float *scratch)
{
    const int tid = threadIdx.x;
    scratch[tid] = v;
    __syncthreads();
    for (int half = ATTN_THREADS / 2; half > 0; half >>= 1) {
        if (tid < half)
            scratch[tid] = MAX ? fmaxf(scratch[tid], scratch[tid + half])
                               : scratch[tid] + scratch[tid + half];
        __syncthreads();
    }
    float r = scratch[0];
    __syncthreads();
    return r;
}

// score[p] = (k[start + p, kvh] . q_sh) * scale for p < len: one warp per position, the
// lanes split head_dim and a shuffle tree leaves the dot product in lane 0.
__device__ static void attention_chunk_scores(const attn_args_t &a, int kvh, int start, int len,
                                              const float *q_sh, float *score)
{
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, hd = a.head_dim;
    for (int p = warp; p < len; p += ATTN_WARPS) { // uniform per warp: every lane shuffles
        const float *kj = a.k + (kv_row_of(a.blocks, a.block_size, start + p) * (size_t)a.n_head_kv + (size_t)kvh) * (size_t)hd;
        float dot = 0.0f;
        for (int d = lane; d < hd; d += 32) dot += kj[d] * q_sh[d];
        for (int off = 16; off > 0; off >>= 1) dot += __shfl_down_sync(0xffffffffu, dot, off);
        if (lane == 0) score[p] = dot * a.scale;
    }
}

// rec[2 + d] = sum_p weight[p] v[start + p, kvh, d]: threads form ATTN_THREADS / head_dim
// groups, group g sums positions g, g + groups, ... in order, then the groups are added in
// group order.
__device__ static void attention_chunk_values(const attn_args_t &a, int kvh, int start, int len,
                                              const float *weight, float *group_acc, float *rec)
{
    const int tid = threadIdx.x, hd = a.head_dim, groups = ATTN_THREADS / hd; // >= 1
    const int d = tid % hd, g = tid / hd;
    if (g < groups) {
        float acc = 0.0f;
        for (int p = g; p < len; p += groups)
            acc += weight[p] * a.v[(kv_row_of(a.blocks, a.block_size, start + p) * (size_t)a.n_head_kv +
                                    (size_t)kvh) * (size_t)hd + d];
        group_acc[g * hd + d] = acc; // g * hd + d < groups * hd <= ATTN_THREADS
    }
    __syncthreads();
    for (int e = tid; e < hd; e += ATTN_THREADS) {
        float acc = 0.0f;
        for (int gg = 0; gg < groups; gg++) acc += group_acc[gg * hd + e];
        rec[2 + e] = acc;
    }
}

// Phase 1: grid (slots, n_head, group size), ATTN_THREADS threads. Blocks past the query's
// chunk count (or of a query not computed) return before any barrier, whole.
static __global__ __launch_bounds__(ATTN_THREADS) void attention_chunk_kernel(attn_args_t a)
{
    __shared__ float q_sh[ATTN_MAX_HEAD_DIM];
    __shared__ float weight[ATTN_CHUNK_MAX]; // scores, then expf(score - chunk max)
    __shared__ float scratch[ATTN_THREADS];
    const int c = blockIdx.x, h = blockIdx.y, gq = blockIdx.z, i = a.q0 + gq, tid = threadIdx.x;
    const int ctx_len = attention_ctx_len(a, i);
    if (ctx_len == 0) return;
    const int chunk = attention_chunk_len(ctx_len);
    if (c >= ceil_div_pos(ctx_len, chunk)) return; // this query has fewer chunks than slots
    const int start = c * chunk, len = min(chunk, ctx_len - start);
    const int kvh = h / a.heads_per_kv, hd = a.head_dim;

    const float *qh = a.q + ((size_t)i * (size_t)a.n_head + (size_t)h) * (size_t)hd;
    for (int d = tid; d < hd; d += ATTN_THREADS) q_sh[d] = qh[d];
    __syncthreads();
    attention_chunk_scores(a, kvh, start, len, q_sh, weight);
    __syncthreads();

    float m = -INFINITY;
    for (int p = tid; p < len; p += ATTN_THREADS) m = fmaxf(m, weight[p]);
    m = attention_block_reduce<true>(m, scratch);
    float sum = 0.0f;
    for (int p = tid; p < len; p += ATTN_THREADS) {
        weight[p] = expf(weight[p] - m);
        sum += weight[p];
    }
    sum = attention_block_reduce<false>(sum, scratch); // its barriers publish weight[]

    float *rec = attention_record(a, gq, h, c);
    if (tid == 0) {
        rec[0] = m;
        rec[1] = sum;
    }
    attention_chunk_values(a, kvh, start, len, weight, scratch, rec);
}

// Phase 2: grid (n_head, group size), ATTN_COMBINE_THREADS threads. Every thread folds the
// records in chunk order (the same bits in every thread); thread d writes out[d].
static __global__ __launch_bounds__(ATTN_COMBINE_THREADS) void attention_combine_kernel(attn_args_t a)
{
    const int h = blockIdx.x, gq = blockIdx.y, i = a.q0 + gq, hd = a.head_dim;
    float *oh = a.out + ((size_t)i * (size_t)a.n_head + (size_t)h) * (size_t)hd;
    const int ctx_len = attention_ctx_len(a, i);
    if (ctx_len == 0) { // position outside the cache: a NaN row, as the CPU backend
        for (int d = threadIdx.x; d < hd; d += ATTN_COMBINE_THREADS) oh[d] = __int_as_float(0x7fc00000);
        return;
    }
    const int n_chunks = attention_chunk_count(ctx_len); // <= a.slots
    const size_t rec_len = (size_t)hd + 2;
    const float *recs = attention_record(a, gq, h, 0); // n_chunks records of rec_len

    float m = -INFINITY;
    for (int c = 0; c < n_chunks; c++) m = fmaxf(m, recs[c * rec_len]);
    float total = 0.0f;
    for (int c = 0; c < n_chunks; c++) total += recs[c * rec_len + 1] * expf(recs[c * rec_len] - m);
    const float inv = 1.0f / total;

    for (int d = threadIdx.x; d < hd; d += ATTN_COMBINE_THREADS) {
        float acc = 0.0f;
        for (int c = 0; c < n_chunks; c++) acc += recs[c * rec_len + 2 + d] * expf(recs[c * rec_len] - m);
        oh[d] = acc * inv;
    }
}

static bool attention_args_ok(const float *q, const float *k_cache, const float *v_cache,
                              const int32_t *pos, int n, int n_ctx, int n_head, int n_head_kv,
                              int head_dim, const float *out, const void *workspace)
{
    if (n < 0 || n_ctx < 1) return false;
    if (n_head < 1 || n_head > ATTN_MAX_HEADS || n_head_kv < 1 || n_head % n_head_kv != 0) return false;
    if (head_dim < 1 || head_dim > ATTN_MAX_HEAD_DIM) return false;
    return n == 0 || (q && k_cache && v_cache && pos && out && workspace);
}

// Launch geometry of a call: records per (query, head) and queries per group, from
// (n_ctx, shapes, workspace) only. false when one query's records do not fit the workspace.
static bool attention_plan(int n_ctx, int n_head, int head_dim, size_t workspace_bytes,
                           int *slots, int *group)
{
    const size_t per_query = sd_cuda_attention_workspace_bytes(n_ctx, n_head, head_dim);
    if (per_query == 0 || per_query > workspace_bytes) return false;
    const size_t fit = workspace_bytes / per_query; // >= 1
    *slots = attention_chunk_slots(n_ctx);
    *group = (int)(fit < (size_t)ATTN_MAX_GROUP ? fit : (size_t)ATTN_MAX_GROUP);
    return true;
}

cudaError_t sd_cuda_attention(cudaStream_t stream, const float *q, const float *k_cache,
                              const float *v_cache, const int32_t *blocks, int block_size,
                              const int32_t *pos, int n, int n_ctx, int n_head, int n_head_kv,
                              int head_dim, float *out, void *workspace, size_t workspace_bytes)
{
    if (!attention_args_ok(q, k_cache, v_cache, pos, n, n_ctx, n_head, n_head_kv, head_dim, out,
                           workspace) ||
        (blocks != NULL && block_size < 1))
        return cudaErrorInvalidValue;
    if (n == 0) return cudaSuccess;
    int slots = 0, group = 0;
    if (!attention_plan(n_ctx, n_head, head_dim, workspace_bytes, &slots, &group))
        return cudaErrorInvalidValue;

    attn_args_t a = {q, k_cache, v_cache, blocks, block_size, out, (float *)workspace, pos, n_ctx, 0,
                     n_head, n_head_kv, n_head / n_head_kv, head_dim, slots,
                     1.0f / sqrtf((float)head_dim)};
    for (int q0 = 0; q0 < n; q0 += group) {
        const int count = n - q0 < group ? n - q0 : group;
        a.q0 = q0;
        cudaError_t e = SD_LAUNCH(attention_chunk_kernel, dim3(slots, n_head, count), ATTN_THREADS, 0,
                                  stream, a);
        if (e == cudaSuccess)
            e = SD_LAUNCH(attention_combine_kernel, dim3(n_head, count), ATTN_COMBINE_THREADS, 0, stream, a);
        if (e != cudaSuccess) return e;
    }
    return cudaSuccess;
}

// ---- masked (tree) attention ----------------------------------------------------------------
//
// One warp per (head, query): query i sees slots [0, base) then base + j where mask row i is
// set (the same key order as the CPU). Two passes like the CPU kernel: the max of the scores,
// then expf(s - max)-weighted sums; the lanes split head_dim and a shuffle tree forms each dot
// product, broadcast from lane 0. Trees are small (n rows) and a step runs one, so this simple
// kernel is not split over the context like the plain op (docs/design-notes.md, "Token trees").
enum { ATTN_MASKED_THREADS = 32, ATTN_MASKED_PER_LANE = ATTN_MAX_HEAD_DIM / 32 };

typedef struct attn_masked_args {
    const float *q, *k, *v;
    const int32_t *blocks; // the paged layout, or NULL
    int block_size;
    const uint8_t *mask; // [n, m]
    float *out;
    int base, m, n_head, n_head_kv, heads_per_kv, head_dim;
    float scale;
} attn_masked_args_t;

// (k[slot, kvh] . q) * scale in every lane.
__device__ static inline float attention_masked_score(const attn_masked_args_t &a, const float *qh,
                                                      int kvh, int slot)
{
    const int lane = threadIdx.x, hd = a.head_dim;
    const float *kj = a.k + (kv_row_of(a.blocks, a.block_size, slot) * (size_t)a.n_head_kv +
                             (size_t)kvh) * (size_t)hd;
    float dot = 0.0f;
    for (int d = lane; d < hd; d += 32) dot += kj[d] * qh[d];
    for (int off = 16; off > 0; off >>= 1) dot += __shfl_down_sync(0xffffffffu, dot, off);
    return __shfl_sync(0xffffffffu, dot, 0) * a.scale;
}

static __global__ __launch_bounds__(ATTN_MASKED_THREADS) void attention_masked_kernel(attn_masked_args_t a)
{
    const int h = blockIdx.x, i = blockIdx.y, lane = threadIdx.x, hd = a.head_dim;
    const int kvh = h / a.heads_per_kv;
    const float *qh = a.q + ((size_t)i * (size_t)a.n_head + (size_t)h) * (size_t)hd;
    const uint8_t *row = a.mask + (size_t)i * (size_t)a.m;
    float *oh = a.out + ((size_t)i * (size_t)a.n_head + (size_t)h) * (size_t)hd;
    float m = -INFINITY;
    int n_keys = a.base;
    for (int t = 0; t < a.base; t++) m = fmaxf(m, attention_masked_score(a, qh, kvh, t));
    for (int j = 0; j < a.m; j++)
        if (row[j]) {
            m = fmaxf(m, attention_masked_score(a, qh, kvh, a.base + j));
            n_keys++;
        }
    if (n_keys == 0) { // a row that sees nothing: NaN, as the CPU backend
        for (int d = lane; d < hd; d += 32) oh[d] = __int_as_float(0x7fc00000);
        return;
    }
    float acc[ATTN_MASKED_PER_LANE] = {0.0f}, sum = 0.0f;
    for (int t = 0; t < a.base + a.m; t++) {
        const int slot = t; // slots [0, base) then the masked ones
        if (t >= a.base && !row[t - a.base]) continue;
        const float e = expf(attention_masked_score(a, qh, kvh, slot) - m);
        sum += e;
        const float *vj = a.v + (kv_row_of(a.blocks, a.block_size, slot) * (size_t)a.n_head_kv +
                                 (size_t)kvh) * (size_t)hd;
        for (int d = lane, c = 0; d < hd; d += 32, c++) acc[c] += e * vj[d];
    }
    const float inv = 1.0f / sum;
    for (int d = lane, c = 0; d < hd; d += 32, c++) oh[d] = acc[c] * inv;
}

cudaError_t sd_cuda_attention_masked(cudaStream_t stream, const float *q, const float *k_cache,
                                     const float *v_cache, const int32_t *blocks, int block_size,
                                     int base, const uint8_t *mask, int n, int m, int n_ctx,
                                     int n_head, int n_head_kv, int head_dim, float *out)
{
    if (n < 0 || n_ctx < 1 || base < 0 || m < 0 || m > SD_ATTN_MASK_MAX_COLS || base > n_ctx - m ||
        (blocks != NULL && block_size < 1))
        return cudaErrorInvalidValue;
    if (n_head < 1 || n_head > ATTN_MAX_HEADS || n_head_kv < 1 || n_head % n_head_kv != 0 ||
        head_dim < 1 || head_dim > ATTN_MAX_HEAD_DIM || n > ATTN_MAX_GROUP)
        return cudaErrorInvalidValue;
    if (n == 0) return cudaSuccess;
    if (!q || !k_cache || !v_cache || !out || (m > 0 && !mask)) return cudaErrorInvalidValue;
    attn_masked_args_t a = {q, k_cache, v_cache, blocks, block_size, mask, out, base, m, n_head,
                            n_head_kv, n_head / n_head_kv, head_dim, 1.0f / sqrtf((float)head_dim)};
    return SD_LAUNCH(attention_masked_kernel, dim3(n_head, n), ATTN_MASKED_THREADS, 0, stream, a);
}

// ---- kv_store -----------------------------------------------------------------------------

// One block per row i: the row of pos[i] = rows[i, :], a plain copy (exact). A position
// outside [0, n_ctx) stores nothing (uniform per block).
static __global__ __launch_bounds__(KV_STORE_THREADS) void kv_store_kernel(float *cache, const float *rows,
                                                                     const int32_t *blocks, int block_size,
                                                                     const int32_t *pos, int n_ctx,
                                                                     size_t row)
{
    const int p = pos[blockIdx.x];
    if (p < 0 || p >= n_ctx) return;
    float *dst = cache + kv_row_of(blocks, block_size, p) * row; // the row of position p
    const float *src = rows + (size_t)blockIdx.x * row;   // rows[i, row]
    for (size_t j = threadIdx.x; j < row; j += KV_STORE_THREADS) dst[j] = src[j];
}

cudaError_t sd_cuda_kv_store(cudaStream_t stream, float *cache, const float *rows,
                             const int32_t *blocks, int block_size, const int32_t *pos, int n,
                             int n_ctx, size_t row)
{
    if (n < 0 || n_ctx < 1 || row < 1 || (blocks != NULL && block_size < 1))
        return cudaErrorInvalidValue;
    if (n > 0 && (!cache || !rows || !pos)) return cudaErrorInvalidValue;
    if (n == 0) return cudaSuccess;
    return SD_LAUNCH(kv_store_kernel, n, KV_STORE_THREADS, 0, stream, cache, rows, blocks, block_size, pos,
                     n_ctx, row);
}

// ---- element-wise -------------------------------------------------------------------------

// out[i] = silu(gate[i]) * up[i] = gate / (1 + expf(-gate)) * up   (out may alias gate)
static __global__ void swiglu_kernel(const float *gate, const float *up, size_t len, float *out)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < len;
         i += (size_t)gridDim.x * blockDim.x) {
        float g = gate[i];
        out[i] = __fmul_rn(__fdiv_rn(g, __fadd_rn(1.0f, expf(-g))), up[i]);
    }
}

cudaError_t sd_cuda_swiglu(cudaStream_t stream, const float *gate, const float *up, size_t len,
                           float *out)
{
    if (len == 0) return cudaSuccess;
    if (!gate || !up || !out) return cudaErrorInvalidValue;
    return SD_LAUNCH(swiglu_kernel, elemwise_blocks(len), ELEMWISE_THREADS, 0, stream, gate, up, len, out);
}

// y[i] += x[i]
static __global__ void add_kernel(float *y, const float *x, size_t len)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < len;
         i += (size_t)gridDim.x * blockDim.x)
        y[i] += x[i];
}

cudaError_t sd_cuda_add(cudaStream_t stream, float *y, const float *x, size_t len)
{
    if (len == 0) return cudaSuccess;
    if (!y || !x) return cudaErrorInvalidValue;
    return SD_LAUNCH(add_kernel, elemwise_blocks(len), ELEMWISE_THREADS, 0, stream, y, x, len);
}
