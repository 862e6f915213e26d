// The executor of the CUDA host mode: the blocks of a grid on the calling thread and a few
// helper threads, the threads of a block as fibers on one OS thread, switched at barriers
// and warp operations in the order SPECDEC_CUDA_SIM_SCHEDULE names (forward, reverse or
// random:SEED). Design and checks: docs/cuda.md, "The CUDA host mode".
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "core/cudasim/exec.h"

#if defined(__SANITIZE_ADDRESS__)
#define SD_SIM_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SD_SIM_ASAN 1
#endif
#endif
#ifdef SD_SIM_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif
#if !defined(__x86_64__)
#include <ucontext.h>
#endif

__thread uint3 threadIdx, blockIdx, blockDim, gridDim;

namespace sd_sim {
namespace {

// ---- contexts: a small switch on x86-64 (callee-saved registers), ucontext elsewhere ----

struct context {
#if defined(__x86_64__)
    void *sp = nullptr;
#else
    ucontext_t uc;
#endif
#ifdef SD_SIM_ASAN
    void *fake_stack = nullptr;
    const void *stack_bottom = nullptr;
    size_t stack_size = 0;
#endif
};

#if defined(__x86_64__)
extern "C" void sd_sim_swap(void **save_sp, void *next_sp);
extern "C" void sd_sim_fiber_start(void);
// sd_sim_swap: push the callee-saved registers, save rsp, load the other one, pop, return
// there. sd_sim_fiber_start: a new fiber's first return lands here; r12 holds its argument
// and r13 its entry function (the initial frame of fiber_stack_init).
asm(R"(
    .text
    .globl sd_sim_swap
    .type sd_sim_swap, @function
sd_sim_swap:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size sd_sim_swap, .-sd_sim_swap
    .globl sd_sim_fiber_start
    .type sd_sim_fiber_start, @function
sd_sim_fiber_start:
    movq %r12, %rdi
    callq *%r13
    ud2
    .size sd_sim_fiber_start, .-sd_sim_fiber_start
)");
#endif

// Switches from `from` to `to`; returns when something switches back to `from`. A fiber
// that ends passes from_ends (ASan then drops its fake stack).
inline void switch_context(context *from, context *to, bool from_ends = false)
{
#ifdef SD_SIM_ASAN
    __sanitizer_start_switch_fiber(from_ends ? nullptr : &from->fake_stack, to->stack_bottom,
                                   to->stack_size);
#else
    (void)from_ends;
#endif
#if defined(__x86_64__)
    sd_sim_swap(&from->sp, to->sp);
#else
    swapcontext(&from->uc, &to->uc);
#endif
#ifdef SD_SIM_ASAN
    __sanitizer_finish_switch_fiber(from->fake_stack, nullptr, nullptr);
#endif
}

// ---- the schedule ----------------------------------------------------------------------

enum order_kind { ORDER_FORWARD, ORDER_REVERSE, ORDER_RANDOM };
struct schedule {
    order_kind order = ORDER_FORWARD;
    uint64_t seed = 0;
    bool valid = true;
    std::string text;
};

const schedule &the_schedule(void)
{
    static schedule s;
    static std::once_flag once;
    std::call_once(once, [] {
        const char *env = getenv("SPECDEC_CUDA_SIM_SCHEDULE");
        if (!env || !*env || !strcmp(env, "forward")) return;
        s.text = env;
        char *end = nullptr;
        if (!strcmp(env, "reverse")) {
            s.order = ORDER_REVERSE;
        } else if (!strcmp(env, "random")) {
            s.order = ORDER_RANDOM;
        } else if (!strncmp(env, "random:", 7) && env[7]) {
            s.order = ORDER_RANDOM;
            s.seed = strtoull(env + 7, &end, 10);
            s.valid = *end == '\0';
        } else {
            s.valid = false;
        }
    });
    return s;
}

uint64_t mix64(uint64_t x) // splitmix64's finaliser
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

// ---- fibers and blocks -----------------------------------------------------------------

// F_YIELDED: spinning (__nanosleep); ready again at the next round.
enum fiber_state : uint8_t { F_READY, F_YIELDED, F_WARP, F_BARRIER, F_DONE };

struct alignas(64) fiber { // what a switch touches, in one cache line (without ASan)
    context ctx;
    uint3 idx;
    int id, lane, warp; // id: the thread's linear index in its block
    uint64_t value, result; // a warp operation's operand and result; a barrier's count
    int arg, width;
    char *stack; // its lowest usable byte
};

struct warp_group {
    int arrived;      // lanes waiting in the pending operation
    warp_kind kind;   // the pending operation (arrived > 0)
    unsigned mask;
    unsigned present; // lanes that exist in this block
    unsigned exited;
};

struct launch_state;

struct block_run {
    launch_state *launch;
    int n;          // threads
    fiber *fibers;  // [n], the worker's
    uint8_t *state; // [n] fiber_state, apart from the fibers: scanned often
    warp_group *warps;
    // A round's order: warps one after the other (order[seg_begin[s] .. seg_begin[s + 1]) are
    // the lanes of the s-th warp to run); a warp runs until none of its lanes can.
    int *order, *seg_begin;
    int n_segs, seg, pos; // the round is at segment seg, order[pos]
    int done, at_barrier, barrier_count;
    bool failed;
    uint64_t rng;
    fiber *current;
    context scheduler;
    void *dyn_shared;
};

__thread block_run *tls_block;

const size_t STACK_BYTES =
#ifdef SD_SIM_ASAN
    256 << 10;
#else
    64 << 10;
#endif
const int MAX_THREADS = 1024;

// Per OS thread: fibers, their stacks (with a guard page below each), scratch.
struct worker {
    fiber fibers[MAX_THREADS];
    uint8_t state[MAX_THREADS];
    warp_group warps[MAX_THREADS / 32];
    int order[MAX_THREADS], seg_begin[MAX_THREADS / 32 + 1], warp_order[MAX_THREADS / 32];
    std::vector<char *> regions; // stacks, in chunks of STACKS_PER_REGION
    std::vector<char> dyn_shared;
    bool poisoned = false; // a block was abandoned: its stacks may hold ASan poison
    static const int STACKS_PER_REGION = 64;

    ~worker()
    {
        for (char *r : regions) munmap(r, STACKS_PER_REGION * (STACK_BYTES + page()));
    }
    static size_t page(void) { return (size_t)sysconf(_SC_PAGESIZE); }

    // Makes sure fibers [0, n) have stacks; false when memory is short.
    bool stacks_for(int n)
    {
        while ((int)regions.size() * STACKS_PER_REGION < n) {
            size_t slot = STACK_BYTES + page();
            void *r = mmap(nullptr, STACKS_PER_REGION * slot, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
            if (r == MAP_FAILED) return false;
            for (int i = 0; i < STACKS_PER_REGION; i++) {
                char *guard = (char *)r + (size_t)i * slot;
                mprotect(guard, page(), PROT_NONE);
                fibers[regions.size() * STACKS_PER_REGION + i].stack = guard + page();
            }
            regions.push_back((char *)r);
        }
        return true;
    }
};

thread_local worker tls_worker;

// ---- launches and the helper pool ------------------------------------------------------

struct launch_state {
    const kernel_launch *k;
    uint64_t n_blocks;
    std::atomic<uint64_t> next{0};
    std::atomic<bool> failed{false};
    int users = 0; // helpers working on it (pool mutex)
    std::mutex error_mutex;
    std::string error;
    uint64_t id;            // seeds the random schedule of threads
    uint64_t stride, shift; // block order: (stride * i + shift) mod n_blocks
};

struct pool {
    std::mutex m;
    std::condition_variable work, idle;
    std::vector<launch_state *> active;
    pid_t pid = 0; // helpers exist in this process only (not in a fork)
    int helpers = 0;
};

pool &the_pool(void)
{
    static pool *p = new pool; // never destroyed: helpers may outlive static destruction
    return *p;
}

int worker_threads(void)
{
    static int n = [] {
        const char *env = getenv("SPECDEC_CUDA_SIM_THREADS");
        int v = env ? atoi(env) : 0;
        if (v < 1) {
            unsigned hw = std::thread::hardware_concurrency();
            v = hw == 0 ? 1 : hw < 4 ? (int)hw : 4;
        }
        return v;
    }();
    return n;
}

void fail(block_run *b, fiber *f, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

// Records the first error of the launch with the kernel, block and thread; a fiber that
// fails is abandoned (never resumed).
void fail(block_run *b, fiber *f, const char *fmt, ...)
{
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    char where[160] = "";
    if (f)
        snprintf(where, sizeof where, ", thread (%u,%u,%u)", f->idx.x, f->idx.y, f->idx.z);
    launch_state *L = b->launch;
    {
        std::lock_guard<std::mutex> lock(L->error_mutex);
        if (L->error.empty()) {
            char buf[900];
            snprintf(buf, sizeof buf, "kernel %s, block (%u,%u,%u)%s: %s", L->k->name.c_str(),
                     blockIdx.x, blockIdx.y, blockIdx.z, where, what);
            L->error = buf;
        }
    }
    L->failed = true;
    b->failed = true;
    tls_worker.poisoned = true;
    if (f) {
        switch_context(&f->ctx, &b->scheduler, true);
        __builtin_trap(); // never resumed
    }
}

// The next fiber of the round that can run: the current warp's lanes round robin from pos
// while one can run (they stay in the cache), then the warps after it; NULL at the end.
inline fiber *next_ready(block_run *b)
{
    const int lo = b->seg_begin[b->seg], hi = b->seg_begin[b->seg + 1];
    for (int p = b->pos + 1; p < hi; p++)
        if (b->state[b->order[p]] == F_READY) return &b->fibers[b->order[b->pos = p]];
    for (int p = lo; p <= b->pos; p++)
        if (b->state[b->order[p]] == F_READY) return &b->fibers[b->order[b->pos = p]];
    for (int s = b->seg + 1; s < b->n_segs; s++)
        for (int p = b->seg_begin[s]; p < b->seg_begin[s + 1]; p++)
            if (b->state[b->order[p]] == F_READY) {
                b->seg = s;
                return &b->fibers[b->order[b->pos = p]];
            }
    return nullptr;
}

// Fiber f stops (waits, yields or ends): straight to the next ready fiber of the round, or
// back to the scheduler at its end. Returns when f is resumed.
inline void switch_from(block_run *b, fiber *f, bool ends = false)
{
    fiber *g = next_ready(b);
    if (!g) return switch_context(&f->ctx, &b->scheduler, ends);
    threadIdx = g->idx;
    b->current = g;
    switch_context(&f->ctx, &g->ctx, ends);
}

const char *kind_name(warp_kind k)
{
    static const char *const names[] = {"__shfl_sync", "__shfl_up_sync", "__shfl_down_sync",
                                        "__shfl_xor_sync", "__ballot_sync", "__syncwarp"};
    return names[k];
}

block_run *current_block(const char *what)
{
    block_run *b = tls_block;
    if (!b) {
        fprintf(stderr, "cudasim: %s called outside a kernel\n", what);
        abort();
    }
    return b;
}

// The fiber ends: nothing may wait for it at a barrier or in a warp operation.
void thread_exit(block_run *b, fiber *f)
{
    b->state[f->id] = F_DONE;
    b->done++;
    warp_group *w = &b->warps[f->warp];
    w->exited |= 1u << f->lane;
    if (b->at_barrier > 0)
        fail(b, f, "the thread exited while %d threads of the block wait at __syncthreads()",
             b->at_barrier);
    if (w->arrived > 0 && (w->mask >> f->lane & 1u))
        fail(b, f, "the thread exited while lanes of its warp wait for it in %s (mask 0x%08x)",
             kind_name(w->kind), w->mask);
}

void fiber_main(fiber *f)
{
    block_run *b = tls_block;
#ifdef SD_SIM_ASAN
    __sanitizer_finish_switch_fiber(nullptr, nullptr, nullptr);
#endif
    (*b->launch->k->body)();
    thread_exit(b, f);
    switch_from(b, f, true);
    __builtin_trap(); // never resumed
}

void fiber_init(fiber *f)
{
#ifdef SD_SIM_ASAN
    f->ctx.stack_bottom = f->stack;
    f->ctx.stack_size = STACK_BYTES;
    f->ctx.fake_stack = nullptr;
#endif
#if defined(__x86_64__)
    // The frame sd_sim_swap pops: r15, r14, r13 (entry), r12 (argument), rbx, rbp, then the
    // return address sd_sim_fiber_start, which runs with rsp 16-byte aligned.
    uintptr_t top = ((uintptr_t)(f->stack + STACK_BYTES) & ~(uintptr_t)15) - 16;
    void **frame = (void **)top - 7;
    frame[0] = nullptr;
    frame[1] = nullptr;
    frame[2] = (void *)&fiber_main;
    frame[3] = (void *)f;
    frame[4] = nullptr;
    frame[5] = nullptr;
    frame[6] = (void *)&sd_sim_fiber_start;
    f->ctx.sp = frame;
#else
    getcontext(&f->ctx.uc);
    f->ctx.uc.uc_stack.ss_sp = f->stack;
    f->ctx.uc.uc_stack.ss_size = STACK_BYTES;
    f->ctx.uc.uc_link = nullptr;
    makecontext(&f->ctx.uc, (void (*)(void))fiber_main, 1, f); // pointer fits an int on LP64 glibc
#endif
}

// Result of warp operation kind for lane l of w (every lane of the mask has arrived).
uint64_t lane_result(block_run *b, warp_group *w, int warp, fiber *g)
{
    fiber *lanes = b->fibers + warp * 32;
    if (w->kind == BALLOT) {
        uint64_t bits = 0;
        for (int l = 0; l < 32; l++)
            if ((w->mask >> l & 1u) && lanes[l].value) bits |= 1ull << l;
        return bits;
    }
    if (w->kind == SYNCWARP) return 0;
    int l = g->lane, width = g->width, seg = l & ~(width - 1), src = l;
    switch (w->kind) {
    case SHFL_IDX: src = seg + (g->arg & (width - 1)); break;
    case SHFL_UP: src = (l - seg) >= g->arg ? l - g->arg : l; break;
    case SHFL_DOWN: src = (l - seg) + g->arg < width ? l + g->arg : l; break;
    case SHFL_XOR: src = (l ^ g->arg) < seg + width ? l ^ g->arg : l; break;
    default: break;
    }
    if (src < 0 || src > 31 || !(w->mask >> src & 1u))
        fail(b, nullptr, "%s: lane %d of warp %d reads lane %d, which is not in the mask 0x%08x",
             kind_name(w->kind), l, warp, src, w->mask);
    return lanes[src < 0 || src > 31 ? l : src].value;
}

// ---- the scheduler ---------------------------------------------------------------------


// Nothing is ready and threads remain: say who waits for whom.
void diagnose_stall(block_run *b)
{
    for (int i = 0; i < b->n; i++) {
        fiber *f = &b->fibers[i];
        if (b->state[i] != F_WARP) continue;
        warp_group *w = &b->warps[f->warp];
        for (int l = 0; l < 32; l++) {
            fiber *g = &b->fibers[f->warp * 32 + l];
            if ((w->mask >> l & 1u) && b->state[g->id] == F_BARRIER)
                return fail(b, nullptr,
                            "deadlock: lanes of warp %d wait in %s (mask 0x%08x) for lane %d, which "
                            "waits at __syncthreads()",
                            f->warp, kind_name(w->kind), w->mask, l);
        }
    }
    fail(b, nullptr, "deadlock: %d threads wait at __syncthreads(), %d exited, the others in warp "
                     "operations", b->at_barrier, b->done);
}

void shuffle(block_run *b, int *a, int len)
{
    for (int i = len - 1; i > 0; i--) {
        b->rng = mix64(b->rng);
        int j = (int)(b->rng % (uint64_t)(i + 1));
        int t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

// A round's order: warps, and lanes within each, forward, reversed or shuffled; spinning
// fibers may run again.
void plan_round(block_run *b, order_kind kind, int *warp_order)
{
    for (int s = 0; s < b->n_segs; s++) warp_order[s] = kind == ORDER_REVERSE ? b->n_segs - 1 - s : s;
    if (kind == ORDER_RANDOM) shuffle(b, warp_order, b->n_segs);
    int p = 0;
    for (int s = 0; s < b->n_segs; s++) {
        int w = warp_order[s], lanes = b->n - 32 * w < 32 ? b->n - 32 * w : 32;
        b->seg_begin[s] = p;
        for (int l = 0; l < lanes; l++) b->order[p + l] = 32 * w + (kind == ORDER_REVERSE ? lanes - 1 - l : l);
        if (kind == ORDER_RANDOM) shuffle(b, b->order + p, lanes);
        p += lanes;
    }
    b->seg_begin[b->n_segs] = p;
    b->seg = 0;
    b->pos = -1;
    for (int i = 0; i < b->n; i++)
        if (b->state[i] == F_YIELDED) b->state[i] = F_READY;
}

#ifdef SD_SIM_ASAN
// The bounds of this OS thread's own stack, where the scheduler runs (ASan's fiber switches
// name the stack they go to).
void os_thread_stack(const void **bottom, size_t *size)
{
    static thread_local const void *cached_bottom;
    static thread_local size_t cached_size;
    if (!cached_bottom) {
        pthread_attr_t attr;
        void *addr = nullptr;
        size_t bytes = 0;
        if (pthread_getattr_np(pthread_self(), &attr) == 0) {
            pthread_attr_getstack(&attr, &addr, &bytes);
            pthread_attr_destroy(&attr);
        }
        cached_bottom = addr;
        cached_size = bytes;
    }
    *bottom = cached_bottom;
    *size = cached_size;
}
#endif

void run_block(launch_state *L, uint64_t linear)
{
    worker &w = tls_worker;
    const kernel_launch &k = *L->k;
    const schedule &s = the_schedule();
    block_run b = {};
    b.launch = L;
    b.n = (int)(k.block.x * k.block.y * k.block.z);
    b.fibers = w.fibers;
    b.state = w.state;
    b.warps = w.warps;
    b.order = w.order;
    b.seg_begin = w.seg_begin;
    b.n_segs = (b.n + 31) / 32;
    b.rng = mix64(s.seed ^ mix64(L->id * 0x100000001b3ull + linear));
    if (!w.stacks_for(b.n)) {
        fail(&b, nullptr, "out of memory for the fiber stacks of %d threads", b.n);
        return;
    }
#ifdef SD_SIM_ASAN
    if (w.poisoned) { // an abandoned fiber may have left poisoned frames on its stack
        for (int i = 0; i < MAX_THREADS && w.fibers[i].stack; i++)
            __asan_unpoison_memory_region(w.fibers[i].stack, STACK_BYTES);
        w.poisoned = false;
    }
#endif
    blockIdx = uint3{(unsigned)(linear % k.grid.x), (unsigned)(linear / k.grid.x % k.grid.y),
                     (unsigned)(linear / ((uint64_t)k.grid.x * k.grid.y))};
    blockDim = uint3{k.block.x, k.block.y, k.block.z};
    gridDim = uint3{k.grid.x, k.grid.y, k.grid.z};
    for (int i = 0; i < b.n; i++) {
        fiber *f = &b.fibers[i];
        f->idx = uint3{i % k.block.x, i / k.block.x % k.block.y, i / (k.block.x * k.block.y)};
        f->id = i;
        b.state[i] = F_READY;
        f->lane = i % 32;
        f->warp = i / 32;
        fiber_init(f);
    }
    for (int i = 0; i < (b.n + 31) / 32; i++) {
        int lanes = b.n - 32 * i < 32 ? b.n - 32 * i : 32;
        b.warps[i] = warp_group{0, SYNCWARP, 0, lanes == 32 ? ~0u : (1u << lanes) - 1, 0};
    }
    if (k.shmem) { // fresh per block: 0xff bytes (NaN floats), as a GPU promises nothing
        w.dyn_shared.assign(k.shmem, (char)0xff);
        b.dyn_shared = w.dyn_shared.data();
    }
#ifdef SD_SIM_ASAN
    os_thread_stack(&b.scheduler.stack_bottom, &b.scheduler.stack_size);
#endif
    tls_block = &b;
    while (b.done < b.n && !b.failed) { // one round: every warp runs until it cannot
        plan_round(&b, s.order, w.warp_order);
        fiber *f = next_ready(&b);
        if (!f) {
            diagnose_stall(&b);
            break;
        }
        threadIdx = f->idx;
        b.current = f;
        switch_context(&b.scheduler, &f->ctx); // back at the end of the round
    }
    tls_block = nullptr;
}

// Block index of the i-th block to run: forward, reverse, or a seeded permutation.
uint64_t block_at(const launch_state *L, uint64_t i)
{
    return (uint64_t)(((unsigned __int128)L->stride * i + L->shift) % L->n_blocks);
}

void run_blocks(launch_state *L)
{
    for (;;) {
        uint64_t i = L->next.fetch_add(1);
        if (i >= L->n_blocks) return;
        if (!L->failed) run_block(L, block_at(L, i));
    }
}

void helper_main(void)
{
    pool &p = the_pool();
    std::unique_lock<std::mutex> lock(p.m);
    for (;;) {
        launch_state *L = nullptr;
        for (launch_state *a : p.active)
            if (a->next.load() < a->n_blocks) L = a;
        if (!L) {
            p.work.wait(lock);
            continue;
        }
        L->users++;
        lock.unlock();
        run_blocks(L);
        lock.lock();
        L->users--;
        p.idle.notify_all();
    }
}

// Helpers to share a launch with: started once per process (a forked child starts its own).
bool start_helpers(pool &p)
{
    pid_t me = getpid();
    if (p.pid == me) return p.helpers > 0;
    p.pid = me;
    p.active.clear();
    p.helpers = 0;
    for (int i = 1; i < worker_threads(); i++) {
        try {
            std::thread(helper_main).detach();
            p.helpers++;
        } catch (...) {
            break;
        }
    }
    return p.helpers > 0;
}

uint64_t gcd64(uint64_t a, uint64_t b)
{
    while (b) {
        uint64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

} // namespace

// ---- what kernels call -------------------------------------------------------------------

uint64_t warp_op(warp_kind kind, unsigned mask, uint64_t value, int arg, int width)
{
    block_run *b = current_block(kind_name(kind));
    fiber *f = b->current;
    warp_group *w = &b->warps[f->warp];
    if (!(mask >> f->lane & 1u))
        fail(b, f, "%s with mask 0x%08x, which does not name the calling lane %d", kind_name(kind),
             mask, f->lane);
    if (mask & ~w->present)
        fail(b, f, "%s with mask 0x%08x names lanes that do not exist (warp %d has 0x%08x)",
             kind_name(kind), mask, f->warp, w->present);
    if (mask & w->exited)
        fail(b, f, "%s with mask 0x%08x names lanes that have exited (0x%08x)", kind_name(kind),
             mask, mask & w->exited);
    if (width < 1 || width > 32 || (width & (width - 1)))
        fail(b, f, "%s with width %d (a power of two up to 32)", kind_name(kind), width);
    if (w->arrived == 0) {
        w->kind = kind;
        w->mask = mask;
    } else if (w->kind != kind || w->mask != mask) {
        fail(b, f, "divergent warp: lane %d calls %s (mask 0x%08x) while lanes of warp %d wait in "
                   "%s (mask 0x%08x)",
             f->lane, kind_name(kind), mask, f->warp, kind_name(w->kind), w->mask);
    }
    f->value = value;
    f->arg = arg;
    f->width = width;
    if (++w->arrived < __builtin_popcount(mask)) {
        b->state[f->id] = F_WARP;
        switch_from(b, f);
        return f->result;
    }
    w->arrived = 0; // the last lane: every result, then the others run again
    fiber *lanes = b->fibers + f->warp * 32;
    for (int l = 0; l < 32; l++) {
        if (!(mask >> l & 1u)) continue;
        lanes[l].result = lane_result(b, w, f->warp, &lanes[l]);
        if (b->failed) switch_context(&f->ctx, &b->scheduler, true);
        b->state[lanes[l].id] = F_READY;
    }
    return f->result;
}

int barrier(int pred)
{
    block_run *b = current_block("__syncthreads");
    fiber *f = b->current;
    if (b->done > 0)
        fail(b, f, "__syncthreads() reached after %d threads of the block exited (a barrier in "
                   "divergent code)", b->done);
    b->barrier_count += pred != 0;
    if (++b->at_barrier < b->n) {
        b->state[f->id] = F_BARRIER;
        switch_from(b, f);
        return (int)f->result;
    }
    int count = b->barrier_count;
    b->at_barrier = 0;
    b->barrier_count = 0;
    for (int i = 0; i < b->n; i++)
        if (b->state[i] == F_BARRIER) {
            b->fibers[i].result = (uint64_t)count;
            b->state[i] = F_READY;
        }
    return count;
}

void yield(void)
{
    block_run *b = current_block("__nanosleep");
    b->state[b->current->id] = F_YIELDED;
    switch_from(b, b->current);
}

void trap(const char *why)
{
    block_run *b = current_block(why);
    fail(b, b->current, "%s", why);
    __builtin_trap();
}

void *dynamic_shared(void) { return current_block("dynamic shared memory")->dyn_shared; }

cudaError_t run_kernel(const kernel_launch &k, std::string *why)
{
    const schedule &s = the_schedule();
    if (!s.valid) {
        *why = "SPECDEC_CUDA_SIM_SCHEDULE='" + s.text + "' is not forward, reverse, random or random:SEED";
        return cudaErrorInvalidValue;
    }
    static std::atomic<uint64_t> launches{0};
    launch_state L;
    L.k = &k;
    L.n_blocks = (uint64_t)k.grid.x * k.grid.y * k.grid.z;
    L.id = launches.fetch_add(1);
    L.stride = 1;
    L.shift = 0;
    if (s.order == ORDER_REVERSE) {
        L.stride = L.n_blocks - 1; // == -1 mod n
        L.shift = L.n_blocks - 1;
    } else if (s.order == ORDER_RANDOM) {
        // a function of the seed and the grid only: launches that wait for each other's
        // blocks (the IPC allreduce's ranks) take them in the same order, as co-resident
        // blocks on a GPU would never deadlock
        L.stride = mix64(s.seed ^ L.n_blocks) % L.n_blocks | 1;
        while (gcd64(L.stride, L.n_blocks) != 1) L.stride += 2;
        L.shift = mix64(L.n_blocks ^ ~s.seed) % L.n_blocks;
    }
    pool &p = the_pool();
    bool shared = false;
    if (L.n_blocks > 1) {
        std::lock_guard<std::mutex> lock(p.m);
        if (start_helpers(p)) {
            p.active.push_back(&L);
            p.work.notify_all();
            shared = true;
        }
    }
    run_blocks(&L);
    if (shared) {
        std::unique_lock<std::mutex> lock(p.m);
        for (size_t i = 0; i < p.active.size(); i++)
            if (p.active[i] == &L) p.active.erase(p.active.begin() + (long)i);
        p.idle.wait(lock, [&] { return L.users == 0; });
    }
    if (!L.failed) return cudaSuccess;
    *why = L.error;
    return cudaErrorLaunchFailure;
}

} // namespace sd_sim
