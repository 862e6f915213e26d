// Sampling and speculative verification on the GPU, bit-exact with verify/sampler.c and
// verify/speculative.c (contract in verify/cuda_verify.h).
//
// One block per position r in [0, k]: logits row r -> w[r] = the target's distribution
// (the canonical definition at the top of verify/sampler.c) -> RowResult (is the draft
// token at r accepted, which token is emitted at r if it is the first one that is not).
// The host then keeps the longest accepted prefix. Rows after the first rejection are
// computed too (in parallel) and ignored: each row depends only on its own inputs.
//
// Selections are searches over the rank integer R(i) = sd_rank_of (larger = ranked higher):
//   top-k: the largest tau with count(R >= tau) >= top_k;
//   top-p: the largest tau with S({R >= tau} within top-k) >= top_p * S(top-k);
//   inverse CDF: a binary search over token index for the first prefix reaching u * S.
// Every search step is one block reduction of integers (a count, or an exact sum sd_xsum_t),
// whose result does not depend on the order of the reduction: the GPU's tree gives the
// same bits as the CPU's loops, and the same decisions follow.
//
// The algorithm is written once against a Block of threads (every call is made by all
// threads of the block with the same arguments, and returns the same value to all):
//   sum(count, v)             exact sum of v(i), i in [0, count)
//   count(count, pred)        how many i in [0, count) have pred(i)
//   max_u32 / min_u32(count, f)
//   for_each(count, f)        f(i) for every i in [0, count), then a barrier
// DeviceBlock runs it on a CUDA block; HostBlock emulates a block of SD_CUDA_VERIFY_THREADS
// threads on the CPU (each emulated thread's strided partial, then the merge). That is
// sd_cuda_verify_create(SD_CUDA_VERIFY_HOST, ...): the tests compare it with the CPU
// sampler on any machine, and the GPU with both where a GPU is.
#include <stdint.h>
#include <stdlib.h>

#include "kernels/cuda/check.cuh"

extern "C" {
#include "kernels/cuda.h"
#include "verify/philox.h"
}
#include "verify/cuda_verify.h"
#include "verify/sampler_math.h"

static_assert(SD_CUDA_VERIFY_THREADS % 32 == 0 && SD_CUDA_VERIFY_THREADS <= 1024,
              "a block is whole warps, at most 32 of them");

// What one position decided.
struct RowResult {
    int32_t accepted; // the draft token at this position is accepted
    int32_t token;    // the token emitted here when this is the first position not accepted
                      // (the bonus row: the token drawn there)
    float q_draft;    // q(draft token) when verifying against q (the host checks it)
    int32_t unused;
};

// One position's inputs.
struct RowTask {
    const float *logits; // [n] the target's logits at this position
    const float *q;      // [n] the drafter's distribution here, or NULL (deterministic proposal)
    int n;
    int32_t draft;       // the draft token here, or -1 (bonus row, target-only sampling)
    float u_sample, u_accept, u_residual; // this position's uniforms by purpose
};

// ---- the algorithm, for any Block --------------------------------------------------------

// The largest tau with pred(tau), for a pred that is monotone (true from 0 up to some R(i),
// false above): set bit by bit from the top. The low word of R is n - 1 - i, so only its
// bits of n - 1 can be set; the others stay 0.
template <class Pred> SD_HOST_DEVICE uint64_t largest_rank_where(int n, Pred pred)
{
    int index_bits = 0;
    while (index_bits < 32 && ((uint32_t)(n - 1) >> index_bits) != 0)
        index_bits++;
    uint64_t tau = 0;
    for (int bit = 63; bit >= 32; bit--)
        if (pred(tau | ((uint64_t)1 << bit)))
            tau |= (uint64_t)1 << bit;
    for (int bit = index_bits - 1; bit >= 0; bit--)
        if (pred(tau | ((uint64_t)1 << bit)))
            tau |= (uint64_t)1 << bit;
    return tau;
}

// sd_sample_from_probs over v(0..n): the first i with v(i) > 0 whose exact prefix mass
// reaches u * the exact total; else the last i with v(i) > 0; else 0.
template <class Block, class Value>
SD_HOST_DEVICE int32_t sample_inverse_cdf(Block &b, int n, Value v, float u)
{
    sd_xsum_t all = b.sum(n, v);
    double target = sd_math_dmul((double)u, sd_xsum_value(&all));
    // prefix(i) = S(v(0..i)) grows with i: find the first i where it reaches target
    int lo = 0, hi = n; // every i < lo falls short; hi reaches it, or hi == n (none known)
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        sd_xsum_t prefix = b.sum(mid + 1, v);
        if (sd_xsum_value(&prefix) >= target)
            hi = mid;
        else
            lo = mid + 1;
    }
    if (lo == n) {
        uint32_t last = b.max_u32(n, [&](int i) { return v(i) > 0.0f ? (uint32_t)i + 1u : 0u; });
        return last > 0 ? (int32_t)(last - 1) : 0;
    }
    // lo itself unless lo == 0 with v(0) <= 0 (target <= 0): then the first i with v(i) > 0
    uint32_t first = b.min_u32(n, [&](int i) {
        return i >= lo && v(i) > 0.0f ? (uint32_t)i : UINT32_MAX;
    });
    return first != UINT32_MAX ? (int32_t)first : 0;
}

// w[n] := sd_sampler_probs(p, logits[n]) for T > 0; g = the top-ranked token.
template <class Block>
SD_HOST_DEVICE void row_probs(Block &b, const sd_sampler_params_t &p, const float *logits, int n,
                              int32_t g, float *w)
{
    float m = sd_rank_key(logits[g]);
    if (m == -INFINITY) { // nothing finite: the one-hot at g
        b.for_each(n, [&](int i) { w[i] = i == g ? 1.0f : 0.0f; });
        return;
    }
    float temperature = p.temperature;
    b.for_each(n, [&](int i) { w[i] = sd_softmax_weight(logits[i], m, temperature); });
    uint64_t tau = 0; // kept so far: R(i) >= tau
    if (p.top_k > 0 && p.top_k < n) {
        uint32_t top_k = (uint32_t)p.top_k;
        tau = largest_rank_where(n, [&](uint64_t c) {
            return b.count(n, [&](int i) { return sd_rank_of(logits[i], i, n) >= c; }) >= top_k;
        });
    }
    if (p.top_p < 1.0f) {
        const uint64_t tau_k = tau;
        auto mass_from = [&](uint64_t c) { // S(tokens with R >= c among the top-k)
            uint64_t from = c > tau_k ? c : tau_k;
            sd_xsum_t s = b.sum(n, [&](int i) {
                return sd_rank_of(logits[i], i, n) >= from ? w[i] : 0.0f;
            });
            return sd_xsum_value(&s);
        };
        double target = sd_math_dmul((double)p.top_p, mass_from(0));
        tau = largest_rank_where(n, [&](uint64_t c) { return mass_from(c) >= target; });
    }
    const uint64_t kept_from = tau;
    float min_p = p.min_p;
    auto final_weight = [&](int i) { // 0 outside the final set
        bool kept = sd_rank_of(logits[i], i, n) >= kept_from &&
                    (i == g || sd_min_p_keeps(min_p, w[i]));
        return kept ? w[i] : 0.0f;
    };
    sd_xsum_t s = b.sum(n, final_weight);
    double sum = sd_xsum_value(&s);
    b.for_each(n, [&](int i) { w[i] = sd_normalised_prob(final_weight(i), sum); });
}

// The top-ranked token (the argmax, lowest index among ties).
template <class Block> SD_HOST_DEVICE int32_t top_ranked(Block &b, const float *logits, int n)
{
    uint32_t top_ord = b.max_u32(n, [&](int i) { return sd_rank_ord(logits[i]); });
    return (int32_t)b.min_u32(n, [&](int i) {
        return sd_rank_ord(logits[i]) == top_ord ? (uint32_t)i : UINT32_MAX;
    });
}

// probs[n] := sd_sampler_probs(p, logits[n]), greedy included.
template <class Block>
SD_HOST_DEVICE void probs_row(Block &b, const sd_sampler_params_t &p, const float *logits, int n,
                              float *probs)
{
    int32_t g = top_ranked(b, logits, n);
    if (p.temperature > 0.0f)
        row_probs(b, p, logits, n, g, probs);
    else
        b.for_each(n, [&](int i) { probs[i] = i == g ? 1.0f : 0.0f; });
}

// One position: greedy (argmax), target-only / bonus sampling, the draw compared with a
// deterministic proposal, or the acceptance test against q and the residual draw.
// w[n]: scratch, left holding the position's distribution when sampling.
template <class Block>
SD_HOST_DEVICE RowResult verify_row(Block &b, const sd_sampler_params_t &p, const RowTask &t,
                                    float *w)
{
    const float *logits = t.logits;
    int n = t.n;
    int32_t g = top_ranked(b, logits, n);
    RowResult r = {0, g, 0.0f, 0};
    if (!(p.temperature > 0.0f)) {
        r.accepted = t.draft == g;
        return r;
    }
    row_probs(b, p, logits, n, g, w);
    auto probs = [&](int i) { return w[i]; };
    if (t.draft < 0) {
        r.token = sample_inverse_cdf(b, n, probs, t.u_sample);
        return r;
    }
    if (t.q == NULL) {
        r.token = sample_inverse_cdf(b, n, probs, t.u_sample);
        r.accepted = r.token == t.draft;
        return r;
    }
    r.q_draft = t.q[t.draft];
    r.accepted = sd_math_dmul((double)t.u_accept, (double)r.q_draft) <= (double)w[t.draft];
    if (r.accepted)
        return r;
    const float *q = t.q;
    auto residual = [&](int i) {
        float d = sd_math_fsub(w[i], q[i]);
        return d > 0.0f ? d : 0.0f;
    };
    if (b.count(n, [&](int i) { return residual(i) > 0.0f; }) > 0)
        r.token = sample_inverse_cdf(b, n, residual, t.u_residual);
    else
        r.token = sample_inverse_cdf(b, n, probs, t.u_residual);
    return r;
}

// ---- the rows of one call --------------------------------------------------------------

struct RowsArgs {
    sd_sampler_params_t params;
    uint64_t seed, pos0;
    const float *logits; // [rows, n]
    const float *q;      // [k, n] or NULL
    int n, k;            // rows = k + 1
    float *w;            // [rows, n] scratch
    RowResult *out;      // [rows]
    int32_t draft[SD_CUDA_VERIFY_MAX_K];
};

// Row r: logits row r, the draft token at r (r < k; the bonus row r == k has none), q row r.
static SD_HOST_DEVICE RowTask row_task(const RowsArgs &a, int r)
{
    RowTask t;
    t.logits = a.logits + (size_t)r * (size_t)a.n;
    t.q = a.q != NULL && r < a.k ? a.q + (size_t)r * (size_t)a.n : NULL;
    t.n = a.n;
    t.draft = r < a.k ? a.draft[r] : -1;
    t.u_sample = t.u_accept = t.u_residual = 0.0f;
    return t;
}

// ---- on the device ----------------------------------------------------------------------

struct BlockShared {
    sd_xsum_t xsum[32]; // per-warp partials
    sd_xsum_t xsum_total;
    uint32_t u32[32];
    uint32_t u32_total;
};

enum { OP_ADD, OP_MAX, OP_MIN };

template <int Op> __device__ static inline uint32_t u32_op(uint32_t a, uint32_t b)
{
    return Op == OP_ADD ? a + b : Op == OP_MAX ? (a > b ? a : b) : (a < b ? a : b);
}

template <int Op> __device__ static inline uint32_t u32_identity(void)
{
    return Op == OP_MIN ? UINT32_MAX : 0u;
}

// Lane 0 gets the warp's total (integer: any order gives the same).
__device__ static inline uint64_t warp_sum_u64(uint64_t v)
{
    for (int offset = 16; offset > 0; offset >>= 1)
        v += __shfl_down_sync(0xffffffffu, v, offset);
    return v;
}

template <int Op> __device__ static inline uint32_t warp_reduce_u32(uint32_t v)
{
    for (int offset = 16; offset > 0; offset >>= 1)
        v = u32_op<Op>(v, __shfl_down_sync(0xffffffffu, v, offset));
    return v;
}

// Reductions: per-thread strided partials, warps by shuffle, warp partials in shared memory
// reduced by warp 0, the total broadcast through shared memory. Each ends with a barrier,
// so the next call may reuse the shared slots and every global write made before the call
// is visible after it.
struct DeviceBlock {
    BlockShared *sh;

    template <class V> __device__ sd_xsum_t sum(int count, V v)
    {
        sd_xsum_t part;
        sd_xsum_zero(&part);
        for (int i = threadIdx.x; i < count; i += blockDim.x)
            sd_xsum_add(&part, v(i));
        int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
        for (int j = 0; j < SD_XSUM_LIMBS; j++)
            part.limb[j] = warp_sum_u64(part.limb[j]);
        if (lane == 0)
            sh->xsum[warp] = part;
        __syncthreads();
        if (warp == 0) {
            sd_xsum_t x;
            if (lane < warps)
                x = sh->xsum[lane];
            else
                sd_xsum_zero(&x);
            for (int j = 0; j < SD_XSUM_LIMBS; j++)
                x.limb[j] = warp_sum_u64(x.limb[j]);
            if (lane == 0)
                sh->xsum_total = x;
        }
        __syncthreads();
        sd_xsum_t total = sh->xsum_total;
        __syncthreads();
        return total;
    }

    template <int Op, class F> __device__ uint32_t reduce_u32(int count, F f)
    {
        uint32_t part = u32_identity<Op>();
        for (int i = threadIdx.x; i < count; i += blockDim.x)
            part = u32_op<Op>(part, f(i));
        int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
        part = warp_reduce_u32<Op>(part);
        if (lane == 0)
            sh->u32[warp] = part;
        __syncthreads();
        if (warp == 0) {
            uint32_t x = lane < warps ? sh->u32[lane] : u32_identity<Op>();
            x = warp_reduce_u32<Op>(x);
            if (lane == 0)
                sh->u32_total = x;
        }
        __syncthreads();
        uint32_t total = sh->u32_total;
        __syncthreads();
        return total;
    }

    template <class P> __device__ uint32_t count(int count, P pred)
    {
        return reduce_u32<OP_ADD>(count, [&](int i) { return pred(i) ? 1u : 0u; });
    }
    template <class F> __device__ uint32_t max_u32(int count, F f) { return reduce_u32<OP_MAX>(count, f); }
    template <class F> __device__ uint32_t min_u32(int count, F f) { return reduce_u32<OP_MIN>(count, f); }

    template <class F> __device__ void for_each(int count, F f)
    {
        for (int i = threadIdx.x; i < count; i += blockDim.x)
            f(i);
        __syncthreads();
    }
};

// grid = rows (one block per position), block = SD_CUDA_VERIFY_THREADS.
__global__ void __launch_bounds__(SD_CUDA_VERIFY_THREADS) verify_rows_kernel(const RowsArgs a)
{
    __shared__ BlockShared sh;
    DeviceBlock b = {&sh};
    int r = blockIdx.x;
    RowTask t = row_task(a, r);
    uint64_t pos = a.pos0 + (uint64_t)r;
    t.u_sample = sd_rng_uniform_inline(a.seed, pos, SD_RNG_SAMPLE); // cuRAND's numbers (philox.h)
    t.u_accept = sd_rng_uniform_inline(a.seed, pos, SD_RNG_ACCEPT);
    t.u_residual = sd_rng_uniform_inline(a.seed, pos, SD_RNG_RESIDUAL);
    RowResult res = verify_row(b, a.params, t, a.w + (size_t)r * (size_t)a.n);
    if (threadIdx.x == 0)
        a.out[r] = res;
}

// grid = 1, block = SD_CUDA_VERIFY_THREADS. logits[n], probs[n].
__global__ void __launch_bounds__(SD_CUDA_VERIFY_THREADS)
probs_kernel(const sd_sampler_params_t p, const float *logits, int n, float *probs)
{
    __shared__ BlockShared sh;
    DeviceBlock b = {&sh};
    probs_row(b, p, logits, n, probs);
}

// ---- emulated on the host ---------------------------------------------------------------

// Host-device only so that verify_row<HostBlock> (host-device like every instance) calls
// no host-only function; it runs on the host.
struct HostBlock {
    int threads;

    template <class V> SD_HOST_DEVICE sd_xsum_t sum(int count, V v) const
    {
        sd_xsum_t total;
        sd_xsum_zero(&total);
        for (int tid = 0; tid < threads; tid++) {
            sd_xsum_t part;
            sd_xsum_zero(&part);
            for (int i = tid; i < count; i += threads)
                sd_xsum_add(&part, v(i));
            sd_xsum_merge(&total, &part);
        }
        return total;
    }

    template <class P> SD_HOST_DEVICE uint32_t count(int count, P pred) const
    {
        uint32_t total = 0;
        for (int tid = 0; tid < threads; tid++)
            for (int i = tid; i < count; i += threads)
                total += pred(i) ? 1u : 0u;
        return total;
    }

    template <class F> SD_HOST_DEVICE uint32_t max_u32(int count, F f) const
    {
        uint32_t best = 0;
        for (int tid = 0; tid < threads; tid++)
            for (int i = tid; i < count; i += threads)
                best = f(i) > best ? f(i) : best;
        return best;
    }

    template <class F> SD_HOST_DEVICE uint32_t min_u32(int count, F f) const
    {
        uint32_t best = UINT32_MAX;
        for (int tid = 0; tid < threads; tid++)
            for (int i = tid; i < count; i += threads)
                best = f(i) < best ? f(i) : best;
        return best;
    }

    template <class F> SD_HOST_DEVICE void for_each(int count, F f) const
    {
        for (int tid = 0; tid < threads; tid++)
            for (int i = tid; i < count; i += threads)
                f(i);
    }
};

static void emulate_rows(const RowsArgs &a, int rows)
{
    HostBlock b = {SD_CUDA_VERIFY_THREADS};
    for (int r = 0; r < rows; r++) {
        RowTask t = row_task(a, r);
        uint64_t pos = a.pos0 + (uint64_t)r;
        t.u_sample = sd_rng_uniform_inline(a.seed, pos, SD_RNG_SAMPLE);
        t.u_accept = sd_rng_uniform_inline(a.seed, pos, SD_RNG_ACCEPT);
        t.u_residual = sd_rng_uniform_inline(a.seed, pos, SD_RNG_RESIDUAL);
        a.out[r] = verify_row(b, a.params, t, a.w + (size_t)r * (size_t)a.n);
    }
}

// ---- the C API ----------------------------------------------------------------------------

struct sd_cuda_verify {
    int device; // SD_CUDA_VERIFY_HOST: the host emulation
    int n_vocab, k_max;
    float *w;             // [k_max + 1, n_vocab] per-position distributions (device memory;
                          // host memory for the emulation)
    RowResult *rows_dev;  // [k_max + 1] device (NULL for the emulation)
    RowResult *rows;      // [k_max + 1] host: pinned (malloc for the emulation)
};

static size_t scratch_floats(const sd_cuda_verify_t *v)
{
    return (size_t)(v->k_max + 1) * (size_t)v->n_vocab;
}

static sd_status_t alloc_device(sd_cuda_verify_t *v)
{
    SD_CUDA_CHECK(cudaSetDevice(v->device));
    SD_CUDA_CHECK(cudaMalloc((void **)&v->w, scratch_floats(v) * sizeof(float)));
    SD_CUDA_CHECK(cudaMalloc((void **)&v->rows_dev, (size_t)(v->k_max + 1) * sizeof(RowResult)));
    SD_CUDA_CHECK(cudaMallocHost((void **)&v->rows, (size_t)(v->k_max + 1) * sizeof(RowResult)));
    return SD_OK;
}

static sd_status_t alloc_host(sd_cuda_verify_t *v)
{
    v->w = (float *)malloc(scratch_floats(v) * sizeof(float));
    v->rows = (RowResult *)malloc((size_t)(v->k_max + 1) * sizeof(RowResult));
    if (v->w == NULL || v->rows == NULL)
        return sd_set_error(SD_ERR_OUT_OF_MEMORY,
                            "out of memory allocating the emulated CUDA verify scratch "
                            "(%d positions x %d tokens)", v->k_max + 1, v->n_vocab);
    return SD_OK;
}

extern "C" void sd_cuda_verify_free(sd_cuda_verify_t *v)
{
    if (v == NULL)
        return;
    if (v->device == SD_CUDA_VERIFY_HOST) {
        free(v->w);
        free(v->rows);
    } else {
        cudaSetDevice(v->device);
        cudaFree(v->w);
        cudaFree(v->rows_dev);
        cudaFreeHost(v->rows);
    }
    free(v);
}

extern "C" sd_status_t sd_cuda_verify_create(int device, int n_vocab, int k_max,
                                             sd_cuda_verify_t **out)
{
    if (out == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG, "CUDA verify: out must be non-NULL");
    *out = NULL;
    if (n_vocab <= 0)
        return sd_set_error(SD_ERR_INVALID_ARG, "CUDA verify: n_vocab %d must be > 0", n_vocab);
    if (k_max < 0 || k_max > SD_CUDA_VERIFY_MAX_K)
        return sd_set_error(SD_ERR_INVALID_ARG, "CUDA verify: k_max %d must be in [0, %d]", k_max,
                            SD_CUDA_VERIFY_MAX_K);
    if (device != SD_CUDA_VERIFY_HOST) {
        int count = 0;
        SD_CHECK(sd_cuda_device_count(&count));
        if (device < 0 || device >= count)
            return sd_set_error(SD_ERR_INVALID_ARG, "CUDA device %d does not exist (%d devices)",
                                device, count);
    }
    sd_cuda_verify_t *v = (sd_cuda_verify_t *)calloc(1, sizeof *v);
    if (v == NULL)
        return sd_set_error(SD_ERR_OUT_OF_MEMORY, "out of memory allocating the CUDA verify handle");
    v->device = device;
    v->n_vocab = n_vocab;
    v->k_max = k_max;
    sd_status_t st = device == SD_CUDA_VERIFY_HOST ? alloc_host(v) : alloc_device(v);
    if (st != SD_OK) {
        sd_cuda_verify_free(v);
        return st;
    }
    *out = v;
    return SD_OK;
}

static RowsArgs rows_args(const sd_cuda_verify_t *v, const sd_sampler_params_t *p, uint64_t seed,
                          uint64_t pos0, const int32_t *draft, const float *q, int k,
                          const float *logits, int n_vocab)
{
    RowsArgs a;
    memset(&a, 0, sizeof a);
    a.params = *p;
    a.seed = seed;
    a.pos0 = pos0;
    a.logits = logits;
    a.q = q;
    a.n = n_vocab;
    a.k = k;
    a.w = v->w;
    a.out = v->device == SD_CUDA_VERIFY_HOST ? v->rows : v->rows_dev;
    for (int i = 0; i < k; i++)
        a.draft[i] = draft[i];
    return a;
}

// Rows [0, rows) of a into v->rows (host): one block per row, one copy back.
static sd_status_t run_rows(sd_cuda_verify_t *v, void *stream, const RowsArgs &a, int rows)
{
    if (v->device == SD_CUDA_VERIFY_HOST) {
        emulate_rows(a, rows);
        return SD_OK;
    }
    cudaStream_t s = (cudaStream_t)stream;
    SD_CUDA_CHECK(cudaSetDevice(v->device));
    SD_CUDA_CHECK(SD_LAUNCH(verify_rows_kernel, rows, SD_CUDA_VERIFY_THREADS, 0, s, a));
    SD_CUDA_CHECK(cudaMemcpyAsync(v->rows, v->rows_dev, (size_t)rows * sizeof(RowResult),
                                  cudaMemcpyDeviceToHost, s));
    SD_CUDA_CHECK(cudaStreamSynchronize(s));
    return SD_OK;
}

// The checks sd_cuda_probs and sd_cuda_sample share.
static sd_status_t check_row_args(const char *what, const sd_cuda_verify_t *v,
                                  const sd_sampler_params_t *p, const float *logits, int n_vocab,
                                  const void *result)
{
    SD_CHECK(sd_sampler_params_validate(p));
    if (v == NULL || logits == NULL || result == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG, "%s: v, logits and the result must be non-NULL",
                            what);
    if (n_vocab <= 0 || n_vocab > v->n_vocab)
        return sd_set_error(SD_ERR_INVALID_ARG, "%s: n_vocab %d must be in [1, %d] (the scratch size)",
                            what, n_vocab, v->n_vocab);
    return SD_OK;
}

extern "C" sd_status_t sd_cuda_probs(sd_cuda_verify_t *v, void *stream, const sd_sampler_params_t *p,
                                     const float *logits_dev, int n_vocab, float *probs_dev)
{
    SD_CHECK(check_row_args("CUDA probs", v, p, logits_dev, n_vocab, probs_dev));
    if (v->device == SD_CUDA_VERIFY_HOST) {
        HostBlock b = {SD_CUDA_VERIFY_THREADS};
        probs_row(b, *p, logits_dev, n_vocab, probs_dev);
        return SD_OK;
    }
    cudaStream_t s = (cudaStream_t)stream;
    SD_CUDA_CHECK(cudaSetDevice(v->device));
    SD_CUDA_CHECK(SD_LAUNCH(probs_kernel, 1, SD_CUDA_VERIFY_THREADS, 0, s, *p, logits_dev, n_vocab, probs_dev));
    SD_CUDA_CHECK(cudaStreamSynchronize(s));
    return SD_OK;
}

extern "C" sd_status_t sd_cuda_sample(sd_cuda_verify_t *v, void *stream, const sd_sampler_params_t *p,
                                      uint64_t seed, uint64_t position, const float *logits_dev,
                                      int n_vocab, int32_t *token_out)
{
    SD_CHECK(check_row_args("CUDA sample", v, p, logits_dev, n_vocab, token_out));
    RowsArgs a = rows_args(v, p, seed, position, NULL, NULL, 0, logits_dev, n_vocab);
    SD_CHECK(run_rows(v, stream, a, 1));
    *token_out = v->rows[0].token;
    return SD_OK;
}

extern "C" sd_status_t sd_cuda_spec_verify(sd_cuda_verify_t *v, void *stream,
                                           const sd_sampler_params_t *p, uint64_t seed,
                                           uint64_t pos0, const int32_t *draft, const float *q_dev,
                                           int k, const float *p_logits_dev, int n_vocab,
                                           sd_spec_result_t *out)
{
    SD_CHECK(sd_spec_validate_args(p, draft, k, p_logits_dev, n_vocab, v != NULL ? v->n_vocab : -1,
                                   out));
    if (k > v->k_max)
        return sd_set_error(SD_ERR_INVALID_ARG,
                            "speculative verify: k %d must be <= %d (the CUDA verify scratch's k_max)",
                            k, v->k_max);
    bool with_q = p->temperature > 0.0f && q_dev != NULL;
    RowsArgs a = rows_args(v, p, seed, pos0, draft, with_q ? q_dev : NULL, k, p_logits_dev, n_vocab);
    SD_CHECK(run_rows(v, stream, a, k + 1));
    const RowResult *rows = v->rows;
    if (with_q) // as sd_spec_verify, before any result: every d_i drawable from q_i
        for (int i = 0; i < k; i++)
            SD_CHECK(sd_spec_validate_q(draft[i], i, rows[i].q_draft));
    int accepted = 0;
    while (accepted < k && rows[accepted].accepted)
        accepted++;
    out->n_accepted = accepted;
    out->next_token = rows[accepted].token;
    return SD_OK;
}
