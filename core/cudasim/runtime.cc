// The CUDA runtime API of the host mode: one device with an sm_90's launch limits, device
// memory as host memory with range checks on every copy, synchronous streams, stream capture
// with CUDA's rules on unsafe calls, graphs that replay what was captured, and CUDA's error
// model (a per-thread last error; a failed kernel makes the error sticky). Design and
// checks: docs/cuda.md, "The CUDA host mode".
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "core/cudasim/exec.h"

namespace {

using sd_sim::kernel_launch;

const size_t SHARED_PER_BLOCK = 48 << 10;      // without an opt-in
const size_t SHARED_PER_BLOCK_OPTIN = 232448;  // 227 KiB, an sm_90's
const int MAX_THREADS = 1024;
const unsigned MAX_GRID[3] = {0x7fffffffu, 65535u, 65535u};
const unsigned MAX_BLOCK[3] = {1024u, 1024u, 64u};

// ---- errors ----------------------------------------------------------------------------

thread_local cudaError_t last_error = cudaSuccess;
std::atomic<int> sticky{cudaSuccess}; // a kernel failed: every later call returns it
char sticky_text[1024];

cudaError_t ret(cudaError_t e)
{
    if (e != cudaSuccess) last_error = e;
    return e;
}

// One line on stderr for what a GPU would report as a fault or a misuse.
void report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void report(const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fprintf(stderr, "cudasim: %s\n", buf);
}

void make_sticky(cudaError_t e, const std::string &why)
{
    int expected = cudaSuccess;
    if (sticky.compare_exchange_strong(expected, e))
        snprintf(sticky_text, sizeof sticky_text, "%s (cudasim: %s)",
                 e == cudaErrorLaunchFailure ? "unspecified launch failure" : "an illegal memory access was encountered",
                 why.c_str());
    report("%s", why.c_str());
    last_error = e;
}

#define SIM_ENTER()                                                                              \
    do {                                                                                         \
        if (sticky.load() != cudaSuccess) return ret((cudaError_t)sticky.load());                \
    } while (0)

// ---- memory ----------------------------------------------------------------------------

struct allocation {
    size_t bytes;
    bool device;    // else pinned host memory (cudaMallocHost)
    int shm_fd;     // a shareable device allocation's memfd (-1: malloc'd)
    bool peer;      // another process's allocation, mapped by cudaIpcOpenMemHandle
};

struct state {
    std::mutex m;
    std::map<uintptr_t, allocation> allocs;
    size_t device_bytes = 0;
    std::set<cudaStream_t> streams;
    std::map<const void *, int> max_dynamic_shared; // per kernel, from cudaFuncSetAttribute
    int global_captures = 0;
};

state &the_state(void)
{
    static state *s = new state; // never destroyed: helpers and atexit users may still call
    return *s;
}

size_t total_memory(void)
{
    static size_t total = [] {
        const char *env = getenv("SPECDEC_CUDA_SIM_MEMORY_MB");
        long long mb = env ? atoll(env) : 0;
        return (size_t)(mb > 0 ? mb : 16384) << 20;
    }();
    return total;
}

// The allocation holding [p, p + bytes), or NULL (callers hold the mutex).
const allocation *find_range(state &s, const void *p, size_t bytes, uintptr_t *base)
{
    uintptr_t a = (uintptr_t)p;
    auto it = s.allocs.upper_bound(a);
    if (it == s.allocs.begin()) return nullptr;
    --it;
    if (a - it->first >= it->second.bytes && !(bytes == 0 && a == it->first)) return nullptr;
    if (bytes > it->second.bytes - (a - it->first)) return nullptr;
    if (base) *base = it->first;
    return &it->second;
}

bool is_device(state &s, const void *p)
{
    const allocation *a = find_range(s, p, 1, nullptr);
    return a && a->device;
}

bool is_pinned(state &s, const void *p)
{
    const allocation *a = find_range(s, p, 1, nullptr);
    return a && !a->device;
}


// ---- shareable device memory (CUDA IPC between processes) --------------------------------

const size_t PAGE = 4096;

size_t page_round(size_t n) { return (n + PAGE - 1) / PAGE * PAGE; }

// bytes of MAP_SHARED memory from a new memfd (*fd), between two PROT_NONE guard pages (an
// access just outside faults); NULL on failure.
void *shared_map(size_t bytes, int *fd)
{
    *fd = memfd_create("specdec-cudasim", MFD_CLOEXEC);
    if (*fd < 0) return nullptr;
    size_t len = page_round(bytes);
    char *guard = (char *)mmap(nullptr, len + 2 * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    void *p = MAP_FAILED;
    if (guard != MAP_FAILED && ftruncate(*fd, (off_t)len) == 0)
        p = mmap(guard + PAGE, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, *fd, 0);
    if (p != MAP_FAILED) return p;
    if (guard != MAP_FAILED) munmap(guard, len + 2 * PAGE);
    close(*fd);
    *fd = -1;
    return nullptr;
}

// Unmaps what shared_map (fd >= 0) or map_peer (fd < 0: no guards) mapped.
void shared_unmap(void *p, size_t bytes, int fd)
{
    if (fd >= 0) {
        munmap((char *)p - PAGE, page_round(bytes) + 2 * PAGE);
        close(fd);
    } else {
        munmap(p, page_round(bytes));
    }
}

// What cudaIpcMemHandle_t carries in the host mode.
struct ipc_handle {
    uint64_t magic;
    int64_t pid;
    int64_t fd;
    uint64_t bytes;
};
const uint64_t IPC_MAGIC = 0x73645f73696d6970ull; // "sd_simip"

// Checks a copy's pointers against its direction; cudaSuccess or the error to return.
cudaError_t check_copy(const char *call, void *dst, const void *src, size_t bytes, cudaMemcpyKind kind)
{
    if (kind < cudaMemcpyHostToHost || kind > cudaMemcpyDefault) return cudaErrorInvalidMemcpyDirection;
    if (bytes == 0) return cudaSuccess;
    if (!dst || !src) return cudaErrorInvalidValue;
    state &s = the_state();
    std::lock_guard<std::mutex> lock(s.m);
    bool dst_dev = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice ||
                   (kind == cudaMemcpyDefault && is_device(s, dst));
    bool src_dev = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice ||
                   (kind == cudaMemcpyDefault && is_device(s, src));
    const void *ends[2] = {dst, src};
    bool dev[2] = {dst_dev, src_dev};
    for (int i = 0; i < 2; i++) {
        const allocation *a = find_range(s, ends[i], bytes, nullptr);
        if (dev[i] && !(a && a->device)) {
            report("%s: %s %p + %zu bytes is not inside one device allocation", call,
                   i ? "src" : "dst", ends[i], bytes);
            return cudaErrorInvalidValue;
        }
        if (!dev[i] && is_device(s, ends[i])) {
            report("%s: %s %p is device memory, but the copy's direction says host", call,
                   i ? "src" : "dst", ends[i]);
            return cudaErrorInvalidValue;
        }
    }
    return cudaSuccess;
}

// ---- streams, capture and graphs -------------------------------------------------------

struct node {
    enum { KERNEL, COPY, SET } kind;
    kernel_launch kernel;
    void *dst;
    const void *src;
    size_t bytes;
    cudaMemcpyKind dir;
    int value;
};

thread_local int thread_captures = 0; // captures in Global/ThreadLocal mode this thread began

} // namespace

struct sd_sim_stream {
    unsigned flags;
    bool capturing = false, invalidated = false;
    cudaStreamCaptureMode mode = cudaStreamCaptureModeGlobal;
    std::thread::id thread;
    std::vector<node> nodes;
};
struct sd_sim_graph {
    std::vector<node> nodes;
};
struct sd_sim_graph_exec {
    std::vector<node> nodes;
};
struct sd_sim_event {
    bool recorded = false;
    std::chrono::steady_clock::time_point at;
};

namespace {

bool builtin_stream(cudaStream_t s)
{
    return s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread;
}

bool valid_stream(cudaStream_t s)
{
    if (builtin_stream(s)) return true;
    state &st = the_state();
    std::lock_guard<std::mutex> lock(st.m);
    return st.streams.count(s) != 0;
}

void end_capture_counts(sd_sim_stream *s)
{
    if (s->mode == cudaStreamCaptureModeRelaxed) return;
    if (s->thread == std::this_thread::get_id()) thread_captures--;
    if (s->mode == cudaStreamCaptureModeGlobal) {
        state &st = the_state();
        std::lock_guard<std::mutex> lock(st.m);
        st.global_captures--;
    }
}

// A "potentially unsafe" call (allocation, synchronisation, a synchronous copy) while a
// capture forbids it: the capture is invalidated and the call fails, as in CUDA.
cudaError_t refuse_during_capture(const char *call)
{
    state &st = the_state();
    bool global;
    {
        std::lock_guard<std::mutex> lock(st.m);
        global = st.global_captures > 0;
    }
    if (thread_captures == 0 && !global) return cudaSuccess;
    std::lock_guard<std::mutex> lock(st.m);
    for (cudaStream_t s : st.streams)
        if (s->capturing && s->mode != cudaStreamCaptureModeRelaxed &&
            (s->mode == cudaStreamCaptureModeGlobal || s->thread == std::this_thread::get_id()))
            s->invalidated = true;
    report("%s during a stream capture: the capture is invalidated", call);
    return cudaErrorStreamCaptureUnsupported;
}

// Runs one operation now (not captured); a kernel that fails makes the error sticky.
cudaError_t execute(const node &n)
{
    switch (n.kind) {
    case node::KERNEL: {
        std::string why;
        cudaError_t e = sd_sim::run_kernel(n.kernel, &why);
        if (e == cudaErrorLaunchFailure) {
            make_sticky(e, why);
            return cudaSuccess; // reported by the next call, as an asynchronous fault
        }
        if (e != cudaSuccess) report("%s", why.c_str());
        return e;
    }
    case node::COPY: {
        cudaError_t e = check_copy("cudaMemcpy", n.dst, n.src, n.bytes, n.dir);
        if (e != cudaSuccess) return e;
        if (n.bytes) memmove(n.dst, n.src, n.bytes);
        return cudaSuccess;
    }
    case node::SET: {
        state &st = the_state();
        std::unique_lock<std::mutex> lock(st.m);
        const allocation *a = find_range(st, n.dst, n.bytes, nullptr);
        if (n.bytes && !(a && a->device)) {
            lock.unlock();
            report("cudaMemset: %p + %zu bytes is not inside one device allocation", n.dst, n.bytes);
            return cudaErrorInvalidValue;
        }
        lock.unlock();
        if (n.bytes) memset(n.dst, n.value, n.bytes);
        return cudaSuccess;
    }
    }
    return cudaErrorUnknown;
}

// Replays a graph's nodes: a copy whose memory was freed since the capture is an illegal
// address on a GPU (sticky), here too.
cudaError_t execute_replayed(const node &n)
{
    if (n.kind == node::COPY || n.kind == node::SET) {
        cudaError_t e = execute(n);
        if (e != cudaSuccess) {
            make_sticky(cudaErrorIllegalAddress, "a graph replays a copy or memset over memory that is not allocated any more");
            return cudaSuccess;
        }
        return e;
    }
    return execute(n);
}

// Captures n into stream s when it is capturing (*captured = true), else leaves it.
cudaError_t capture_or_not(cudaStream_t s, const node &n, bool *captured)
{
    *captured = false;
    if (builtin_stream(s)) return cudaSuccess;
    if (!s->capturing) return cudaSuccess;
    *captured = true;
    if (s->invalidated) return cudaErrorStreamCaptureInvalidated;
    s->nodes.push_back(n);
    return cudaSuccess;
}

cudaError_t enqueue(cudaStream_t s, const node &n)
{
    if (!valid_stream(s)) return cudaErrorInvalidResourceHandle;
    bool captured;
    cudaError_t e = capture_or_not(s, n, &captured);
    return captured ? e : execute(n);
}

} // namespace

// ---- errors -------------------------------------------------------------------------------

const char *cudaGetErrorName(cudaError_t e)
{
    switch (e) {
#define NAME(x) case x: return #x;
        NAME(cudaSuccess) NAME(cudaErrorInvalidValue) NAME(cudaErrorMemoryAllocation)
        NAME(cudaErrorInvalidConfiguration) NAME(cudaErrorInvalidDevicePointer)
        NAME(cudaErrorInvalidMemcpyDirection) NAME(cudaErrorInsufficientDriver)
        NAME(cudaErrorNoDevice) NAME(cudaErrorInvalidDevice) NAME(cudaErrorInvalidResourceHandle)
        NAME(cudaErrorIllegalState) NAME(cudaErrorNotReady) NAME(cudaErrorIllegalAddress)
        NAME(cudaErrorLaunchFailure) NAME(cudaErrorNotSupported)
        NAME(cudaErrorStreamCaptureUnsupported) NAME(cudaErrorStreamCaptureInvalidated)
        NAME(cudaErrorStreamCaptureWrongThread) NAME(cudaErrorUnknown)
#undef NAME
    }
    return "cudaErrorUnknown";
}

const char *cudaGetErrorString(cudaError_t e)
{
    if (e != cudaSuccess && e == (cudaError_t)sticky.load()) return sticky_text;
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevicePointer: return "invalid device pointer";
    case cudaErrorInvalidMemcpyDirection: return "invalid copy direction for memcpy";
    case cudaErrorInsufficientDriver: return "CUDA driver version is insufficient for CUDA runtime version";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorIllegalState: return "the operation cannot be performed in the present state";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    case cudaErrorNotSupported: return "operation not supported";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureWrongThread: return "attempt to terminate a thread-local capture sequence from another thread";
    default: return "unknown error";
    }
}

cudaError_t cudaGetLastError(void)
{
    if (sticky.load() != cudaSuccess) return (cudaError_t)sticky.load();
    cudaError_t e = last_error;
    last_error = cudaSuccess;
    return e;
}

cudaError_t cudaPeekAtLastError(void)
{
    return sticky.load() != cudaSuccess ? (cudaError_t)sticky.load() : last_error;
}

// ---- the device ---------------------------------------------------------------------------

cudaError_t cudaGetDeviceCount(int *count)
{
    if (!count) return ret(cudaErrorInvalidValue);
    *count = 1;
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int device)
{
    SIM_ENTER();
    return device == 0 ? cudaSuccess : ret(cudaErrorInvalidDevice);
}

cudaError_t cudaGetDevice(int *device)
{
    if (!device) return ret(cudaErrorInvalidValue);
    *device = 0;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int device)
{
    if (!p) return ret(cudaErrorInvalidValue);
    if (device != 0) return ret(cudaErrorInvalidDevice);
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "cudasim (the CUDA host mode, sm_90 limits)");
    p->totalGlobalMem = total_memory();
    p->sharedMemPerBlock = SHARED_PER_BLOCK;
    p->sharedMemPerBlockOptin = SHARED_PER_BLOCK_OPTIN;
    p->warpSize = 32;
    p->maxThreadsPerBlock = MAX_THREADS;
    for (int i = 0; i < 3; i++) {
        p->maxThreadsDim[i] = (int)MAX_BLOCK[i];
        p->maxGridSize[i] = (int)MAX_GRID[i];
    }
    p->major = 9;
    p->minor = 0;
    p->multiProcessorCount = 132;
    return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int *value, cudaDeviceAttr attr, int device)
{
    cudaDeviceProp p;
    cudaError_t e = value ? cudaGetDeviceProperties(&p, device) : cudaErrorInvalidValue;
    if (e != cudaSuccess) return ret(e);
    switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: *value = p.maxThreadsPerBlock; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = (int)p.sharedMemPerBlock; return cudaSuccess;
    case cudaDevAttrWarpSize: *value = p.warpSize; return cudaSuccess;
    case cudaDevAttrMultiProcessorCount: *value = p.multiProcessorCount; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = (int)p.sharedMemPerBlockOptin; return cudaSuccess;
    }
    return ret(cudaErrorInvalidValue);
}

cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes)
{
    SIM_ENTER();
    if (!free_bytes || !total_bytes) return ret(cudaErrorInvalidValue);
    state &s = the_state();
    std::lock_guard<std::mutex> lock(s.m);
    *total_bytes = total_memory();
    *free_bytes = total_memory() - s.device_bytes;
    return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void)
{
    SIM_ENTER();
    return ret(refuse_during_capture("cudaDeviceSynchronize"));
}

cudaError_t cudaFuncSetAttribute(const void *func, cudaFuncAttribute attr, int value)
{
    SIM_ENTER();
    if (!func || attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 ||
        (size_t)value > SHARED_PER_BLOCK_OPTIN)
        return ret(cudaErrorInvalidValue);
    state &s = the_state();
    std::lock_guard<std::mutex> lock(s.m);
    s.max_dynamic_shared[func] = value;
    return cudaSuccess;
}

// ---- memory -------------------------------------------------------------------------------

static cudaError_t sim_alloc(void **ptr, size_t bytes, bool device, const char *call)
{
    SIM_ENTER();
    if (!ptr) return ret(cudaErrorInvalidValue);
    *ptr = nullptr;
    cudaError_t e = refuse_during_capture(call);
    if (e != cudaSuccess) return ret(e);
    if (bytes == 0) return cudaSuccess;
    state &s = the_state();
    {
        std::lock_guard<std::mutex> lock(s.m);
        if (device && bytes > total_memory() - s.device_bytes) return ret(cudaErrorMemoryAllocation);
    }
    int fd = -1;
    void *p = device && bytes >= SD_SIM_SHAREABLE_BYTES ? shared_map(bytes, &fd) : malloc(bytes);
    if (!p) return ret(cudaErrorMemoryAllocation);
    if (device) memset(p, 0xff, bytes); // uninitialised device memory reads as NaN
    std::lock_guard<std::mutex> lock(s.m);
    s.allocs[(uintptr_t)p] = allocation{bytes, device, fd, false};
    if (device) s.device_bytes += bytes;
    *ptr = p;
    return cudaSuccess;
}

static cudaError_t sim_free(void *ptr, bool device, const char *call)
{
    SIM_ENTER();
    if (!ptr) return cudaSuccess;
    cudaError_t e = refuse_during_capture(call);
    if (e != cudaSuccess) return ret(e);
    state &s = the_state();
    allocation shm{0, false, -1, false};
    {
        std::lock_guard<std::mutex> lock(s.m);
        auto it = s.allocs.find((uintptr_t)ptr);
        if (it == s.allocs.end() || it->second.device != device || it->second.peer) {
            report("%s(%p): not an allocation of %s", call, ptr, device ? "cudaMalloc" : "cudaMallocHost");
            return ret(device ? cudaErrorInvalidDevicePointer : cudaErrorInvalidValue);
        }
        if (device) s.device_bytes -= it->second.bytes;
        shm = it->second;
        s.allocs.erase(it);
    }
    if (shm.shm_fd >= 0)
        shared_unmap(ptr, shm.bytes, shm.shm_fd);
    else
        free(ptr);
    return cudaSuccess;
}

cudaError_t cudaMalloc(void **ptr, size_t bytes) { return sim_alloc(ptr, bytes, true, "cudaMalloc"); }
cudaError_t cudaFree(void *ptr) { return sim_free(ptr, true, "cudaFree"); }
cudaError_t cudaMallocHost(void **ptr, size_t bytes) { return sim_alloc(ptr, bytes, false, "cudaMallocHost"); }
cudaError_t cudaFreeHost(void *ptr) { return sim_free(ptr, false, "cudaFreeHost"); }

cudaError_t cudaHostAlloc(void **ptr, size_t bytes, unsigned flags)
{
    if (flags & ~(cudaHostAllocDefault | cudaHostAllocMapped)) return ret(cudaErrorInvalidValue);
    return sim_alloc(ptr, bytes, false, "cudaHostAlloc");
}

cudaError_t cudaHostGetDevicePointer(void **dev, void *host, unsigned flags)
{
    SIM_ENTER();
    if (!dev || flags != 0) return ret(cudaErrorInvalidValue);
    state &s = the_state();
    std::lock_guard<std::mutex> lock(s.m);
    auto it = s.allocs.find((uintptr_t)host);
    if (it == s.allocs.end() || it->second.device) return ret(cudaErrorInvalidValue);
    *dev = host;
    return cudaSuccess;
}

cudaError_t cudaIpcGetMemHandle(cudaIpcMemHandle_t *handle, void *dev)
{
    SIM_ENTER();
    if (!handle || !dev) return ret(cudaErrorInvalidValue);
    state &s = the_state();
    std::lock_guard<std::mutex> lock(s.m);
    auto it = s.allocs.find((uintptr_t)dev);
    if (it == s.allocs.end() || !it->second.device || it->second.peer) return ret(cudaErrorInvalidDevicePointer);
    if (it->second.shm_fd < 0) {
        report("cudaIpcGetMemHandle(%p): an allocation of %zu bytes; the host mode shares those of "
               "%zu bytes or more", dev, it->second.bytes, (size_t)SD_SIM_SHAREABLE_BYTES);
        return ret(cudaErrorInvalidValue);
    }
    ipc_handle h = {IPC_MAGIC, (int64_t)getpid(), it->second.shm_fd, it->second.bytes};
    static_assert(sizeof h <= sizeof handle->reserved, "the handle fits cudaIpcMemHandle_t");
    memset(handle, 0, sizeof *handle);
    memcpy(handle->reserved, &h, sizeof h);
    return cudaSuccess;
}

cudaError_t cudaIpcOpenMemHandle(void **dev, cudaIpcMemHandle_t handle, unsigned flags)
{
    (void)flags;
    SIM_ENTER();
    if (!dev) return ret(cudaErrorInvalidValue);
    *dev = nullptr;
    ipc_handle h;
    memcpy(&h, handle.reserved, sizeof h);
    if (h.magic != IPC_MAGIC || h.pid == (int64_t)getpid()) return ret(cudaErrorInvalidValue);
    char path[64];
    snprintf(path, sizeof path, "/proc/%lld/fd/%lld", (long long)h.pid, (long long)h.fd);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        report("cudaIpcOpenMemHandle: cannot open %s (%s): the exporting process is gone",
               path, strerror(errno));
        return ret(cudaErrorInvalidValue);
    }
    void *p = mmap(nullptr, page_round(h.bytes), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return ret(cudaErrorMemoryAllocation);
    state &s = the_state();
    std::lock_guard<std::mutex> lock(s.m);
    s.allocs[(uintptr_t)p] = allocation{h.bytes, true, -1, true};
    *dev = p;
    return cudaSuccess;
}

cudaError_t cudaIpcCloseMemHandle(void *dev)
{
    SIM_ENTER();
    state &s = the_state();
    size_t bytes;
    {
        std::lock_guard<std::mutex> lock(s.m);
        auto it = s.allocs.find((uintptr_t)dev);
        if (it == s.allocs.end() || !it->second.peer) return ret(cudaErrorInvalidValue);
        bytes = it->second.bytes;
        s.allocs.erase(it);
    }
    shared_unmap(dev, bytes, -1);
    return cudaSuccess;
}

cudaError_t cudaPointerGetAttributes(cudaPointerAttributes *attr, const void *ptr)
{
    SIM_ENTER();
    if (!attr) return ret(cudaErrorInvalidValue);
    state &s = the_state();
    std::lock_guard<std::mutex> lock(s.m);
    const allocation *a = find_range(s, ptr, 1, nullptr);
    attr->type = !a ? cudaMemoryTypeUnregistered : a->device ? cudaMemoryTypeDevice : cudaMemoryTypeHost;
    attr->device = a ? 0 : -1;
    attr->devicePointer = a && a->device ? (void *)ptr : nullptr;
    attr->hostPointer = a && !a->device ? (void *)ptr : nullptr;
    return cudaSuccess;
}

static node copy_node(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind)
{
    node n = {};
    n.kind = node::COPY;
    n.dst = dst;
    n.src = src;
    n.bytes = bytes;
    n.dir = kind;
    return n;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind)
{
    SIM_ENTER();
    cudaError_t e = refuse_during_capture("cudaMemcpy");
    if (e == cudaSuccess) e = execute(copy_node(dst, src, bytes, kind));
    return ret(e);
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream)
{
    SIM_ENTER();
    cudaError_t e = check_copy("cudaMemcpyAsync", dst, src, bytes, kind);
    if (e != cudaSuccess) return ret(e);
    if (!builtin_stream(stream) && valid_stream(stream) && stream->capturing) {
        // pageable host memory cannot be part of a graph
        state &s = the_state();
        std::unique_lock<std::mutex> lock(s.m);
        bool host_side = (!is_device(s, dst) && !is_pinned(s, dst)) || (!is_device(s, src) && !is_pinned(s, src));
        if (host_side && bytes) {
            stream->invalidated = true;
            lock.unlock();
            report("cudaMemcpyAsync of pageable host memory during a stream capture: the capture is invalidated");
            return ret(cudaErrorStreamCaptureUnsupported);
        }
    }
    return ret(enqueue(stream, copy_node(dst, src, bytes, kind)));
}

static node set_node(void *dst, int value, size_t bytes)
{
    node n = {};
    n.kind = node::SET;
    n.dst = dst;
    n.value = value;
    n.bytes = bytes;
    return n;
}

cudaError_t cudaMemset(void *dst, int value, size_t bytes)
{
    SIM_ENTER();
    cudaError_t e = refuse_during_capture("cudaMemset");
    if (e == cudaSuccess) e = execute(set_node(dst, value, bytes));
    return ret(e);
}

cudaError_t cudaMemsetAsync(void *dst, int value, size_t bytes, cudaStream_t stream)
{
    SIM_ENTER();
    return ret(enqueue(stream, set_node(dst, value, bytes)));
}

// ---- streams --------------------------------------------------------------------------------

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned flags)
{
    SIM_ENTER();
    if (!stream || flags > cudaStreamNonBlocking) return ret(cudaErrorInvalidValue);
    sd_sim_stream *s = new sd_sim_stream;
    s->flags = flags;
    state &st = the_state();
    std::lock_guard<std::mutex> lock(st.m);
    st.streams.insert(s);
    *stream = s;
    return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t *stream) { return cudaStreamCreateWithFlags(stream, cudaStreamDefault); }

cudaError_t cudaStreamDestroy(cudaStream_t stream)
{
    if (builtin_stream(stream) || !valid_stream(stream)) return ret(cudaErrorInvalidResourceHandle);
    if (stream->capturing) end_capture_counts(stream);
    state &st = the_state();
    {
        std::lock_guard<std::mutex> lock(st.m);
        st.streams.erase(stream);
    }
    delete stream;
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream)
{
    SIM_ENTER();
    if (!valid_stream(stream)) return ret(cudaErrorInvalidResourceHandle);
    return ret(refuse_during_capture("cudaStreamSynchronize"));
}

cudaError_t cudaStreamQuery(cudaStream_t stream)
{
    SIM_ENTER();
    if (!valid_stream(stream)) return ret(cudaErrorInvalidResourceHandle);
    if (!builtin_stream(stream) && stream->capturing) return ret(refuse_during_capture("cudaStreamQuery"));
    return cudaSuccess;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode mode)
{
    SIM_ENTER();
    if (builtin_stream(stream)) return ret(cudaErrorStreamCaptureUnsupported);
    if (!valid_stream(stream)) return ret(cudaErrorInvalidResourceHandle);
    if (mode < cudaStreamCaptureModeGlobal || mode > cudaStreamCaptureModeRelaxed) return ret(cudaErrorInvalidValue);
    if (stream->capturing) return ret(cudaErrorIllegalState);
    stream->capturing = true;
    stream->invalidated = false;
    stream->mode = mode;
    stream->thread = std::this_thread::get_id();
    stream->nodes.clear();
    if (mode != cudaStreamCaptureModeRelaxed) thread_captures++;
    if (mode == cudaStreamCaptureModeGlobal) {
        state &st = the_state();
        std::lock_guard<std::mutex> lock(st.m);
        st.global_captures++;
    }
    return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t *graph)
{
    if (!graph) return ret(cudaErrorInvalidValue);
    *graph = nullptr;
    if (builtin_stream(stream) || !valid_stream(stream)) return ret(cudaErrorInvalidResourceHandle);
    if (!stream->capturing) return ret(cudaErrorIllegalState);
    if (stream->mode != cudaStreamCaptureModeRelaxed && stream->thread != std::this_thread::get_id())
        return ret(cudaErrorStreamCaptureWrongThread);
    end_capture_counts(stream);
    stream->capturing = false;
    std::vector<node> nodes;
    nodes.swap(stream->nodes);
    if (stream->invalidated) return ret(cudaErrorStreamCaptureInvalidated);
    SIM_ENTER();
    *graph = new sd_sim_graph{std::move(nodes)};
    return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t stream, cudaStreamCaptureStatus *status)
{
    if (!status || !valid_stream(stream)) return ret(cudaErrorInvalidValue);
    *status = builtin_stream(stream) || !stream->capturing ? cudaStreamCaptureStatusNone
              : stream->invalidated                       ? cudaStreamCaptureStatusInvalidated
                                                          : cudaStreamCaptureStatusActive;
    return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph, unsigned long long flags)
{
    SIM_ENTER();
    if (!exec || !graph || flags != 0) return ret(cudaErrorInvalidValue);
    *exec = new sd_sim_graph_exec{graph->nodes};
    return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream)
{
    SIM_ENTER();
    if (!exec) return ret(cudaErrorInvalidValue);
    if (!valid_stream(stream)) return ret(cudaErrorInvalidResourceHandle);
    for (const node &n : exec->nodes) {
        bool captured;
        cudaError_t e = capture_or_not(stream, n, &captured);
        if (!captured) e = execute_replayed(n);
        if (e != cudaSuccess) return ret(e);
        if (sticky.load() != cudaSuccess) break; // a kernel failed: the rest does not run
    }
    return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec)
{
    delete exec;
    return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph)
{
    delete graph;
    return cudaSuccess;
}

// ---- events -----------------------------------------------------------------------------------

cudaError_t cudaEventCreate(cudaEvent_t *event)
{
    SIM_ENTER();
    if (!event) return ret(cudaErrorInvalidValue);
    *event = new sd_sim_event;
    return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t event)
{
    delete event;
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream)
{
    SIM_ENTER();
    if (!event) return ret(cudaErrorInvalidResourceHandle);
    if (!valid_stream(stream)) return ret(cudaErrorInvalidResourceHandle);
    if (!builtin_stream(stream) && stream->capturing) return ret(cudaErrorNotSupported); // no event nodes
    event->recorded = true;
    event->at = std::chrono::steady_clock::now();
    return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t event)
{
    SIM_ENTER();
    if (!event) return ret(cudaErrorInvalidResourceHandle);
    return ret(refuse_during_capture("cudaEventSynchronize"));
}

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end)
{
    SIM_ENTER();
    if (!ms || !start || !end) return ret(cudaErrorInvalidValue);
    if (!start->recorded || !end->recorded) return ret(cudaErrorInvalidResourceHandle);
    *ms = std::chrono::duration<float, std::milli>(end->at - start->at).count();
    return cudaSuccess;
}

// ---- kernel launch ------------------------------------------------------------------------------

// The geometry and the dynamic shared memory against the device's limits (and the kernel's
// opt-in from cudaFuncSetAttribute).
static cudaError_t check_launch(const void *fn, dim3 grid, dim3 block, size_t shmem)
{
    const unsigned g[3] = {grid.x, grid.y, grid.z}, b[3] = {block.x, block.y, block.z};
    for (int i = 0; i < 3; i++)
        if (g[i] < 1 || g[i] > MAX_GRID[i] || b[i] < 1 || b[i] > MAX_BLOCK[i])
            return cudaErrorInvalidConfiguration;
    if ((uint64_t)b[0] * b[1] * b[2] > (uint64_t)MAX_THREADS) return cudaErrorInvalidConfiguration;
    size_t shared_limit = SHARED_PER_BLOCK;
    state &s = the_state();
    std::lock_guard<std::mutex> lock(s.m);
    auto it = s.max_dynamic_shared.find(fn);
    if (it != s.max_dynamic_shared.end()) shared_limit = (size_t)it->second;
    return shmem > shared_limit ? cudaErrorInvalidValue : cudaSuccess;
}

cudaError_t sd_sim::launch(const char *name, const void *fn, dim3 grid, dim3 block, size_t shmem,
                           cudaStream_t stream, std::function<void()> body)
{
    SIM_ENTER();
    if (!valid_stream(stream)) return ret(cudaErrorInvalidResourceHandle);
    cudaError_t e = check_launch(fn, grid, block, shmem);
    if (e == cudaSuccess) {
        node n = {};
        n.kind = node::KERNEL;
        n.kernel = kernel_launch{name, grid, block, shmem,
                                 std::make_shared<const std::function<void()>>(std::move(body))};
        e = enqueue(stream, n);
    }
    if (e != cudaSuccess && !builtin_stream(stream) && stream->capturing)
        stream->invalidated = true; // a failed launch spoils the capture
    return ret(e);
}
