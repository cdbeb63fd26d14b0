// libmnemu: the emulator's runtime. Device memory (each allocation ends at a PROT_NONE page),
// fibers for the threads of a block (switching only at barriers, warp operations and exit),
// a block scheduler run in a given thread order, and launches that turn faults, traps,
// deadlocks and - in checked builds, through GCC's -fsanitize=thread hooks - out-of-bounds
// accesses and shared-memory races into one error message. Not instrumented itself.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <csetjmp>
#include <csignal>
#include <cstdarg>
#include <cstdio>
#include <dlfcn.h>
#include <link.h>
#include <map>
#include <mutex>
#include <random>
#include <sys/mman.h>
#include <thread>
#include <ucontext.h>
#include <unistd.h>
#include <vector>

#include "cuda_emu.h"

#define EXPORT extern "C" __attribute__((visibility("default")))

namespace {

const size_t PAGE = 4096, STACK = 256 << 10, MAX_THREADS = 1024;

// ---- device memory: [guard page][slack | data][guard page], data ends at the guard -----
struct Alloc { char *map, *start; size_t map_len, size; bool held; };
std::map<uintptr_t, Alloc> allocs;   // by start
std::mutex lock;                     // held by alloc/free and for a whole launch

const Alloc* find_alloc(uintptr_t p) {  // the allocation whose mapping (guards included) holds p
    auto it = allocs.upper_bound(p);
    if (it == allocs.begin()) return nullptr;
    const Alloc& a = (--it)->second;
    return p >= (uintptr_t)a.map && p < (uintptr_t)a.map + a.map_len ? &a : nullptr;
}

bool inside(const Alloc* a, uintptr_t p, size_t n) {
    return a && !a->held && p >= (uintptr_t)a->start && p + n <= (uintptr_t)a->start + a->size;
}

std::string describe_address(uintptr_t p) {
    char s[200];
    const Alloc* a = find_alloc(p);
    uintptr_t lo = a ? (uintptr_t)a->start : 0, hi = lo + (a ? a->size : 0);
    if (!a) snprintf(s, sizeof s, "%#lx is not device memory", (unsigned long)p);
    else if (a->held) snprintf(s, sizeof s, "%#lx is in a freed %zu-byte allocation (held by the pool)", (unsigned long)p, a->size);
    else if (p >= hi) snprintf(s, sizeof s, "%#lx is %lu bytes past the end of a %zu-byte allocation at %#lx",
                               (unsigned long)p, (unsigned long)(p - hi), a->size, (unsigned long)lo);
    else if (p < lo) snprintf(s, sizeof s, "%#lx is %lu bytes before the start of a %zu-byte allocation at %#lx",
                              (unsigned long)p, (unsigned long)(lo - p), a->size, (unsigned long)lo);
    else snprintf(s, sizeof s, "%#lx straddles the end of a %zu-byte allocation at %#lx", (unsigned long)p, a->size, (unsigned long)lo);
    return s;
}

// ---- launches, blocks, fibers -----------------------------------------------------------
enum Kind { OK, BOUNDS, RACE, UNINIT, ORDER, BARRIER, WARP, DEADLOCK, TRAP, FAULT, FPE, STACK_OVERFLOW };
const char* ORDERS[] = {"forward", "reverse", "shuffled"};

struct Launch {
    const mn_emu_kernel* k;
    uint3 grid, block;
    const char* params;         // the cuLaunchKernel parameter buffer
    size_t params_len;
    bool checked;
    int order = 0;               // 0 forward, 1 reverse, 2 shuffled: of blocks and of threads
    unsigned seed;
    long long nblocks;
    std::vector<long long> perm; // the shuffled block order
    std::atomic<long long> next{0};
    std::atomic<bool> failed{false}, fp_atomics{false};
    std::mutex m;
    int kind = OK;
    char msg[2048] = "";
};

enum State { READY, RUNNING, AT_BARRIER, AT_WARP, DONE };
struct Fiber {
    ucontext_t uc;
    jmp_buf jb;
    char *lo, *hi;               // the stack
    bool started, guarded;
    int state, line;
    unsigned flat, warp_seq, mask;
    uint3 tid;
};

struct Warp {   // slots of ops n % 2; count, mask and/or: a full-warp op's arrivals in O(1)
    uint64_t val[2][32];
    unsigned mask[2][32], op[2][32], seq[32], aseq[2], count[2], mand[2], mor[2];
};
struct Shadow { int w_tid, w_epoch, r_tid, r_epoch; };   // per 4-byte word of shared memory

struct Block {
    uint3 idx;
    int n, live, arrived;
    unsigned gen;
    const char* bar_file;
    int bar_line;
    unsigned long long progress;
    int first_epoch, epoch;
    Warp warps[MAX_THREADS / 32];
};

struct Module { char* tls; size_t tls_len; uintptr_t img_lo, img_hi; };

struct Worker {
    Launch* L = nullptr;
    Fiber* cur = nullptr;
    std::vector<Fiber> fibers;
    std::vector<int> order;
    jmp_buf sched;
    ucontext_t sched_uc;
    sigjmp_buf recover;
    volatile bool in_kernel = false;
    volatile int sig = 0;
    volatile uintptr_t fault_addr = 0;
    Block block;
    std::map<void*, Module> modules;   // by the module's tls() function
    Module mod{};
    std::vector<Shadow> shadow;
    int epochs = 0;
    const Alloc* last = nullptr;
    std::vector<char> altstack;
};
thread_local Worker* me;

Worker& worker() {
    if (me) return *me;
    me = new Worker();   // one per OS thread, kept: its fibers' stacks are reused
    me->fibers.resize(MAX_THREADS);
    char* stacks = (char*)mmap(nullptr, MAX_THREADS * (STACK + PAGE), PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    for (size_t i = 0; i < MAX_THREADS; ++i) {
        Fiber& f = me->fibers[i];
        f.lo = stacks + i * (STACK + PAGE) + PAGE;   // the page below: a guard, once used
        f.hi = f.lo + STACK;
        f.started = f.guarded = false;
        f.uc.uc_link = nullptr;
    }
    stack_t old;
    if (sigaltstack(nullptr, &old) == 0 && (old.ss_flags & SS_DISABLE)) {   // for stack overflows
        me->altstack.resize(64 << 10);
        stack_t ss{me->altstack.data(), 0, me->altstack.size()};
        sigaltstack(&ss, nullptr);
    }
    return *me;
}

uint3 unflatten(long long i, uint3 d) {
    return {unsigned(i % d.x), unsigned(i / d.x % d.y), unsigned(i / ((long long)d.x * d.y))};
}

std::string where(Worker& w) {
    char s[160];
    uint3 b = w.block.idx;
    int n = snprintf(s, sizeof s, "block (%u,%u,%u)", b.x, b.y, b.z);
    if (w.cur) snprintf(s + n, sizeof s - n, " thread (%u,%u,%u)", w.cur->tid.x, w.cur->tid.y, w.cur->tid.z);
    return s;
}

// Record the launch's first error, naming the kernel, block, thread (and order, if checked).
void record(Worker& w, int kind, const std::string& text) {
    Launch& L = *w.L;
    std::lock_guard<std::mutex> g(L.m);
    if (L.kind != OK) return;
    L.kind = kind;
    snprintf(L.msg, sizeof L.msg, "%s %s%s%s: %s", L.k->name, where(w).c_str(),
             L.checked ? ", thread order " : "", L.checked ? ORDERS[L.order] : "", text.c_str());
}

// Record and abandon the block (from a fiber, a hook or the scheduler).
__attribute__((format(printf, 3, 4))) [[noreturn]] void fail(Worker& w, int kind, const char* fmt, ...) {
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    record(w, kind, text);
    w.L->failed = true;
    siglongjmp(w.recover, 1);
}

void yield(Worker& w) {
    if (!_setjmp(w.cur->jb)) _longjmp(w.sched, 1);
}

void fiber_main() {
    for (;;) {   // one kernel thread per pass; the fiber is reused by the next block
        Worker& w = *me;
        w.L->k->thunk(w.L->k->fn, w.L->params);
        w.cur->state = DONE;
        w.block.live--;
        w.block.progress++;
        yield(w);
    }
}

void resume(Worker& w, Fiber& f) {
    w.cur = &f;
    if (!_setjmp(w.sched)) {
        if (f.started) _longjmp(f.jb, 1);
        if (!f.guarded) f.guarded = !mprotect(f.lo - PAGE, PAGE, PROT_NONE);
        f.started = true;
        getcontext(&f.uc);
        f.uc.uc_stack.ss_sp = f.lo;
        f.uc.uc_stack.ss_size = STACK;
        makecontext(&f.uc, fiber_main, 0);
        swapcontext(&w.sched_uc, &f.uc);
    }
    w.cur = nullptr;
}

// ---- shared memory: the module's TLS block on this OS thread holds exactly its __shared__ ----
int find_module(dl_phdr_info* info, size_t, void* data) {
    auto* q = (std::pair<uintptr_t, Module>*)data;
    if (info->dlpi_addr != q->first) return 0;
    for (int i = 0; i < info->dlpi_phnum; ++i) {
        const ElfW(Phdr)& ph = info->dlpi_phdr[i];
        if (ph.p_type == PT_TLS) {
            q->second.tls = (char*)info->dlpi_tls_data;
            q->second.tls_len = ph.p_memsz;
        } else if (ph.p_type == PT_LOAD) {
            uintptr_t lo = info->dlpi_addr + ph.p_vaddr, hi = lo + ph.p_memsz;
            q->second.img_lo = q->second.img_lo ? std::min(q->second.img_lo, lo) : lo;
            q->second.img_hi = std::max(q->second.img_hi, hi);
        }
    }
    return 1;
}

void locate_module(Worker& w, const mn_emu_kernel* k) {
    auto it = w.modules.find((void*)k->tls);
    if (it == w.modules.end()) {
        char* anchor = (char*)k->tls();   // allocates this thread's instance of the TLS block
        Dl_info d;
        std::pair<uintptr_t, Module> q{0, Module{}};
        if (dladdr((void*)k->tls, &d)) q.first = (uintptr_t)d.dli_fbase;
        dl_iterate_phdr(find_module, &q);
        if (anchor < q.second.tls || anchor >= q.second.tls + q.second.tls_len)   // not its block
            q.second.tls = nullptr, q.second.tls_len = 0;
        it = w.modules.emplace((void*)k->tls, q.second).first;
    }
    w.mod = it->second;
    if (w.L->checked && w.shadow.size() < w.mod.tls_len / 4 + 1) w.shadow.resize(w.mod.tls_len / 4 + 1);
}

[[noreturn]] void race(Worker& w, size_t off, const char* what, const char* other, int tid) {
    uint3 t = unflatten(tid, w.L->block);
    if (tid < 0) fail(w, RACE, "shared-memory race at shared+0x%zx: it %s a word read by several other "
                      "threads since the last __syncthreads", off, what);
    fail(w, RACE, "shared-memory race at shared+0x%zx: it %s a word %s thread (%u,%u,%u) since the "
         "last __syncthreads", off, what, other, t.x, t.y, t.z);
}

// Per shared word: the last writer and reader and their barrier epochs. Another thread's
// access in the same epoch is a race whatever the schedule; a read before any write in this
// block is a read of uninitialised (poisoned) memory.
void shared_access(Worker& w, size_t off, size_t n, bool write) {
    int t = w.cur->flat, ep = w.block.epoch;
    for (size_t g = off / 4; g <= (off + n - 1) / 4; ++g) {
        Shadow& s = w.shadow[g];
        if (s.w_epoch == ep && s.w_tid != t) race(w, off, write ? "writes" : "reads", "written by", s.w_tid);
        if (write) {
            if (s.r_epoch == ep && s.r_tid != t) race(w, off, "writes", "read by", s.r_tid);
            s.w_epoch = ep;
            s.w_tid = t;
            continue;
        }
        if (s.w_epoch < w.block.first_epoch)
            fail(w, UNINIT, "reads shared+0x%zx, which no thread of this block has written", off);
        s.r_tid = s.r_epoch == ep && s.r_tid != t ? -1 : t;
        s.r_epoch = ep;
    }
}

void check_global(Worker& w, uintptr_t p, size_t n, bool write) {
    if (inside(w.last, p, n) || (p >= w.mod.img_lo && p + n <= w.mod.img_hi)) return;
    const Alloc* a = find_alloc(p);
    if (!inside(a, p, n))
        fail(w, BOUNDS, "%s of %zu bytes out of bounds: %s", write ? "write" : "read", n, describe_address(p).c_str());
    w.last = a;
}

// Every load and store of a checked build (GCC -fsanitize=thread calls these).
inline void access(void* a, size_t n, bool write) {
    Worker* w = me;
    if (!w || !w->in_kernel || !w->cur) return;
    uintptr_t p = (uintptr_t)a;
    if (p - (uintptr_t)w->mod.tls < w->mod.tls_len) return shared_access(*w, p - (uintptr_t)w->mod.tls, n, write);
    if (p >= (uintptr_t)w->cur->lo && p < (uintptr_t)w->cur->hi) return;   // its own stack
    if (p - (uintptr_t)w->L->params < w->L->params_len) return;             // the thunk's reads
    check_global(*w, p, n, write);
}

// ---- the scheduler ------------------------------------------------------------------------
[[noreturn]] void deadlock(Worker& w) {
    int bar = 0, warp = 0, bar_line = 0, warp_line = 0;
    for (int i = 0; i < w.block.n; ++i) {
        Fiber& f = w.fibers[i];
        if (f.state == AT_BARRIER) bar++, bar_line = f.line;
        if (f.state != AT_WARP) continue;
        warp++, warp_line = f.line;
        for (unsigned m = f.mask; m; m &= m - 1)
            if (w.fibers[(i & ~31) + __builtin_ctz(m)].state == DONE) {
                w.cur = &f;
                fail(w, WARP, "line %d: lane %d, named in the mask %#x, has exited", f.line,
                     __builtin_ctz(m), f.mask);
            }
    }
    fail(w, DEADLOCK, "deadlock: %d threads wait at __syncthreads (line %d), %d in a warp operation "
         "(line %d), %d have exited", bar, bar_line, warp, warp_line, w.block.n - w.block.live);
}

void thread_order(Worker& w, int n, long long b) {
    w.order.resize(n);
    for (int i = 0; i < n; ++i) w.order[i] = w.L->order == 1 ? n - 1 - i : i;
    if (w.L->order == 2) std::shuffle(w.order.begin(), w.order.end(), std::mt19937(w.L->seed + b));
}

void run_block(Worker& w, long long b) {
    Launch& L = *w.L;
    Block& B = w.block;
    int n = L.block.x * L.block.y * L.block.z;
    B.idx = unflatten(b, L.grid);
    B.n = B.live = n;
    B.arrived = 0;
    B.gen = 0;
    B.progress = 0;
    B.first_epoch = B.epoch = ++w.epochs;
    memset(B.warps, 0, sizeof(Warp) * ((n + 31) / 32));
    if (w.mod.tls_len) memset(w.mod.tls, 0xff, w.mod.tls_len);   // poison: NaN, -1
    for (int i = 0; i < n; ++i) {
        Fiber& f = w.fibers[i];
        f.state = READY;
        f.flat = i;
        f.tid = unflatten(i, L.block);
        f.warp_seq = 0;
    }
    thread_order(w, n, b);
    while (B.live > 0) {
        unsigned long long before = B.progress;
        for (int i : w.order)
            if (w.fibers[i].state != DONE) resume(w, w.fibers[i]);
        if (B.live > 0 && B.progress == before) deadlock(w);
    }
}

long long block_number(Launch& L, long long i) {
    return L.order == 0 ? i : L.order == 1 ? L.nblocks - 1 - i : L.perm[i];
}

void describe_signal(Worker& w) {
    Fiber* f = w.cur;
    uintptr_t p = w.fault_addr;
    if (w.sig == SIGFPE) return record(w, FPE, "arithmetic exception (an integer division by zero)");
    if (f && p >= (uintptr_t)f->lo - PAGE && p < (uintptr_t)f->lo)
        return record(w, STACK_OVERFLOW, "stack overflow (the emulator gives each thread 256 KiB)");
    record(w, find_alloc(p) ? BOUNDS : FAULT, "invalid access: " + describe_address(p));
}

void run_blocks(Launch& L) {
    Worker& w = worker();
    w.L = &L;
    w.last = nullptr;
    locate_module(w, L.k);
    if (sigsetjmp(w.recover, 1)) {   // an error: fail(), or a signal in the kernel
        w.in_kernel = false;
        if (w.sig) describe_signal(w);
        w.sig = 0;
        L.failed = true;
        w.cur = nullptr;
        for (Fiber& f : w.fibers) f.started = false;   // their stacks are abandoned
        return;
    }
    w.in_kernel = true;
    for (long long i; !L.failed && (i = L.next++) < L.nblocks;) run_block(w, block_number(L, i));
    w.in_kernel = false;
}

// ---- blocks in parallel on a small pool of OS threads ------------------------------------
struct Pool {
    std::mutex m;
    std::condition_variable go, done;
    std::vector<std::thread> threads;
    Launch* job = nullptr;
    unsigned long gen = 0;
    int running = 0;
    pid_t pid = getpid();

    explicit Pool(int n) {
        for (int i = 0; i < n; ++i) threads.emplace_back([this] { loop(); });
    }
    void loop() {
        for (unsigned long seen = 0;;) {
            Launch* L;
            {
                std::unique_lock<std::mutex> g(m);
                go.wait(g, [&] { return gen != seen; });
                seen = gen;
                L = job;
            }
            run_blocks(*L);
            std::lock_guard<std::mutex> g(m);
            if (--running == 0) done.notify_all();
        }
    }
    void run(Launch& L) {
        {
            std::lock_guard<std::mutex> g(m);
            job = &L;
            ++gen;
            running = (int)threads.size();
        }
        go.notify_all();
        run_blocks(L);
        std::unique_lock<std::mutex> g(m);
        done.wait(g, [&] { return running == 0; });
    }
};
Pool* pool;           // never destroyed: its threads wait for work until the process exits
int pool_threads = 0;

void run_fast(Launch& L) {
    if (pool_threads > 0 && L.nblocks > 1) {
        if (!pool || pool->pid != getpid()) pool = new Pool(pool_threads);   // again after fork
        pool->run(L);
    } else {
        run_blocks(L);
    }
}

// ---- checked launches: every order must give the same bytes --------------------------------
using Snapshot = std::vector<std::pair<const Alloc*, std::vector<char>>>;

Snapshot snapshot() {
    Snapshot s;
    for (auto& kv : allocs)
        if (!kv.second.held) s.emplace_back(&kv.second, std::vector<char>(kv.second.start, kv.second.start + kv.second.size));
    return s;
}

void restore(const Snapshot& s) {
    for (auto& [a, bytes] : s) memcpy(a->start, bytes.data(), bytes.size());
}

void compare(Launch& L, const Snapshot& first) {
    for (auto& [a, bytes] : first) {
        if (!memcmp(a->start, bytes.data(), bytes.size())) continue;
        size_t i = 0;
        while (a->start[i] == bytes[i]) ++i;
        L.kind = ORDER;
        snprintf(L.msg, sizeof L.msg, "%s: the result depends on the thread order: byte %zu of the "
                 "%zu-byte allocation at %p differs between the forward and the %s order (a race, "
                 "or a missing __syncthreads)", L.k->name, i, a->size, (void*)a->start, ORDERS[L.order]);
        L.failed = true;
        return;
    }
}

void run_checked(Launch& L) {
    Snapshot before = snapshot(), first;
    L.perm.resize(L.nblocks);
    for (long long i = 0; i < L.nblocks; ++i) L.perm[i] = i;
    std::shuffle(L.perm.begin(), L.perm.end(), std::mt19937(L.seed));
    for (L.order = 0; L.order < 3 && !L.failed; ++L.order) {
        if (L.order) restore(before);
        L.next = 0;
        run_blocks(L);
        if (L.failed) return;
        if (L.order == 0) first = snapshot();
        else if (!L.fp_atomics) compare(L, first);   // float atomics legitimately round differently
    }
}

struct sigaction saved[3];
const int SIGNALS[3] = {SIGSEGV, SIGBUS, SIGFPE};

void on_signal(int sig, siginfo_t* si, void*) {
    Worker* w = me;
    if (w && w->in_kernel) {
        w->sig = sig;
        w->fault_addr = (uintptr_t)si->si_addr;
        siglongjmp(w->recover, 1);
    }
    for (int i = 0; i < 3; ++i)   // not a kernel's: put the old handler back and fault again
        if (SIGNALS[i] == sig) sigaction(sig, &saved[i], nullptr);
}

template <typename T> T apply(int op, T old, T v, T cmp) {
    switch (op) {
        case mn_emu::ADD: return old + v;
        case mn_emu::SUB: return old - v;
        case mn_emu::EXCH: return v;
        case mn_emu::MIN: return v < old ? v : old;
        case mn_emu::MAX: return old < v ? v : old;
        case mn_emu::CAS: return old == cmp ? v : old;
    }
    if constexpr (std::is_integral<T>::value) {
        if (op == mn_emu::AND) return old & v;
        if (op == mn_emu::OR) return old | v;
        if (op == mn_emu::XOR) return old ^ v;
    }
    return old;
}

template <typename T> uint64_t rmw(int op, void* addr, uint64_t v, uint64_t cmp) {
    using U = typename std::conditional<sizeof(T) == 4, uint32_t, uint64_t>::type;
    U* p = (U*)addr;
    U cur = __atomic_load_n(p, __ATOMIC_RELAXED);
    for (;;) {
        T old = mn_emu::unbits<T>(cur);
        U next = (U)mn_emu::bits(apply<T>(op, old, mn_emu::unbits<T>(v), mn_emu::unbits<T>(cmp)));
        if (__atomic_compare_exchange_n(p, &cur, next, false, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
            return mn_emu::bits(old);
    }
}

// Post this lane's value and wait until every lane of the mask has posted its op of the same
// number; the values of op n live in slot n % 2 until op n + 2, which no lane can reach
// before all have read op n.
Warp& warp_op(Worker& w, unsigned mask, uint64_t v, int line, int& parity) {
    Fiber& f = *w.cur;
    Block& B = w.block;
    unsigned base = f.flat & ~31u, lane = f.flat & 31, have = std::min(32u, B.n - base);
    unsigned exist = have == 32 ? ~0u : (1u << have) - 1;
    if (!(mask >> lane & 1))
        fail(w, WARP, "line %d: a warp operation whose mask %#x leaves out the calling lane %u", line, mask, lane);
    if (mask & ~exist)
        fail(w, WARP, "line %d: the mask %#x names lanes that do not exist (the warp has %u)", line, mask, have);
    Warp& W = B.warps[f.flat / 32];
    unsigned seq = ++f.warp_seq;
    parity = seq & 1;
    W.val[parity][lane] = v;
    W.mask[parity][lane] = mask;
    W.seq[lane] = W.op[parity][lane] = seq;
    if (W.aseq[parity] != seq) W.aseq[parity] = seq, W.count[parity] = 0, W.mand[parity] = ~0u, W.mor[parity] = 0;
    W.count[parity]++;
    W.mand[parity] &= mask;
    W.mor[parity] |= mask;
    B.progress++;
    f.state = AT_WARP;
    f.line = line;
    f.mask = mask;
    if (mask == exist) {   // the whole warp: wait for its count
        while (W.count[parity] < have) yield(w);
        f.state = RUNNING;
        if (W.mand[parity] != mask || W.mor[parity] != mask)
            fail(w, WARP, "line %d: the lanes disagree on the mask (%#x here; together %#x, in common %#x)",
                 line, mask, W.mor[parity], W.mand[parity]);
        return W;
    }
    for (unsigned missing = mask;;) {   // lanes only move forward: re-check the missing ones
        for (unsigned m = missing; m; m &= m - 1)
            if (W.seq[__builtin_ctz(m)] >= seq) missing &= ~(1u << __builtin_ctz(m));
        if (!missing) break;
        yield(w);
    }
    f.state = RUNNING;
    for (unsigned m = mask; m; m &= m - 1) {
        unsigned l = __builtin_ctz(m);
        if (W.op[parity][l] != seq)
            fail(w, WARP, "line %d: lane %u is at its warp operation %u, lane %u at its %u (lanes that "
                 "diverge over partial-mask warp operations are not emulated)", line, lane, seq, l, W.op[parity][l]);
        if (W.mask[parity][l] != mask)
            fail(w, WARP, "line %d: lanes %u and %u disagree on the mask (%#x, %#x)", line, lane, l,
                 mask, W.mask[parity][l]);
    }
    return W;
}

}  // namespace

// ---- what the kernels call (cuda_emu.h) -----------------------------------------------------
EXPORT uint3 mn_emu_thread_idx() { return me->cur->tid; }
EXPORT uint3 mn_emu_block_idx() { return me->block.idx; }
EXPORT uint3 mn_emu_block_dim() { return me->L->block; }
EXPORT uint3 mn_emu_grid_dim() { return me->L->grid; }

EXPORT void mn_emu_syncthreads(const char* file, int line) {
    Worker& w = *me;
    Block& B = w.block;
    Fiber& f = *w.cur;
    if (B.arrived == 0) B.bar_file = file, B.bar_line = line;
    else if (B.bar_line != line || strcmp(B.bar_file, file))
        fail(w, BARRIER, "divergent __syncthreads: this thread waits at %s:%d, others at %s:%d",
             file, line, B.bar_file, B.bar_line);
    unsigned gen = B.gen;
    B.arrived++;
    B.progress++;
    f.state = AT_BARRIER;
    f.line = line;
    while (B.gen == gen) {
        if (B.arrived < B.live) { yield(w); continue; }
        B.gen++;   // all live threads are here (exited threads do not count, as on hardware)
        B.arrived = 0;
        B.epoch = ++w.epochs;
    }
    f.state = RUNNING;
}

EXPORT uint64_t mn_emu_shfl(unsigned mask, uint64_t v, int src, int line) {
    Worker& w = *me;
    int p;
    Warp& W = warp_op(w, mask, v, line, p);
    if (!(mask >> src & 1)) fail(w, WARP, "line %d: reads lane %d, which is not in the mask %#x", line, src, mask);
    return W.val[p][src];
}

EXPORT unsigned mn_emu_ballot(unsigned mask, int pred, int line) {
    int p;
    Warp& W = warp_op(*me, mask, pred != 0, line, p);
    unsigned r = 0;
    for (unsigned l = 0; l < 32; ++l)
        if ((mask >> l & 1) && W.val[p][l]) r |= 1u << l;
    return r;
}

EXPORT unsigned mn_emu_activemask() {
    Worker& w = *me;
    unsigned base = w.cur->flat & ~31u, r = 0;
    for (unsigned l = 0; l < 32 && (int)(base + l) < w.block.n; ++l)
        if (w.fibers[base + l].state != DONE) r |= 1u << l;
    return r;
}

EXPORT uint64_t mn_emu_atomic(int op, int kind, void* addr, uint64_t v, uint64_t cmp) {
    Worker& w = *me;
    size_t size = kind == 0 || kind == 1 || kind == 4 ? 4 : 8;
    uintptr_t p = (uintptr_t)addr;
    if (w.L->checked && !(p - (uintptr_t)w.mod.tls < w.mod.tls_len)) check_global(w, p, size, true);
    if (kind >= 4 && (op == mn_emu::ADD || op == mn_emu::SUB)) w.L->fp_atomics = true;
    switch (kind) {
        case 0: return rmw<int32_t>(op, addr, v, cmp);
        case 1: return rmw<uint32_t>(op, addr, v, cmp);
        case 2: return rmw<int64_t>(op, addr, v, cmp);
        case 3: return rmw<uint64_t>(op, addr, v, cmp);
        case 4: return rmw<float>(op, addr, v, cmp);
        default: return rmw<double>(op, addr, v, cmp);
    }
}

EXPORT void mn_emu_fail(const char* what, const char* file, int line) {
    fail(*me, TRAP, "%s at %s:%d", what, file, line);
}

#define HOOKS(N)                                                                         \
    EXPORT void __tsan_read##N(void* p) { access(p, N, false); }                         \
    EXPORT void __tsan_write##N(void* p) { access(p, N, true); }                         \
    EXPORT void __tsan_unaligned_read##N(void* p) { access(p, N, false); }               \
    EXPORT void __tsan_unaligned_write##N(void* p) { access(p, N, true); }
HOOKS(1) HOOKS(2) HOOKS(4) HOOKS(8) HOOKS(16)
EXPORT void __tsan_read_range(void* p, unsigned long n) { if (n) access(p, n, false); }
EXPORT void __tsan_write_range(void* p, unsigned long n) { if (n) access(p, n, true); }
EXPORT void __tsan_init() {}
EXPORT void __tsan_func_entry(void*) {}
EXPORT void __tsan_func_exit() {}
EXPORT void __tsan_vptr_update(void**, void*) {}
EXPORT void __tsan_vptr_read(void**) {}
EXPORT void __tsan_atomic_thread_fence(int) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
#define ATOMIC_HOOKS(N, T)                                                                       \
    EXPORT T __tsan_atomic##N##_load(const volatile T* a, int) { return __atomic_load_n(a, __ATOMIC_SEQ_CST); } \
    EXPORT void __tsan_atomic##N##_store(volatile T* a, T v, int) { __atomic_store_n(a, v, __ATOMIC_SEQ_CST); }
ATOMIC_HOOKS(8, uint8_t) ATOMIC_HOOKS(16, uint16_t) ATOMIC_HOOKS(32, uint32_t) ATOMIC_HOOKS(64, uint64_t)
EXPORT void __tsan_atomic_signal_fence(int) {}

// ---- what the Python driver calls ---------------------------------------------------------------
EXPORT void* mn_emu_alloc(size_t size) {
    size_t data = (size + PAGE - 1) / PAGE * PAGE, len = data + 2 * PAGE;
    if (size == 0) return nullptr;
    char* map = (char*)mmap(nullptr, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (map == MAP_FAILED) return nullptr;
    if (mprotect(map + PAGE, data, PROT_READ | PROT_WRITE)) { munmap(map, len); return nullptr; }
    char* start = map + PAGE + data - size;
    memset(start, 0xff, size);   // fresh device memory reads as NaN / -1, never as zeros
    std::lock_guard<std::mutex> g(lock);
    allocs[(uintptr_t)start] = {map, start, len, size, false};
    return start;
}

EXPORT int mn_emu_free(void* p) {
    std::lock_guard<std::mutex> g(lock);
    auto it = allocs.find((uintptr_t)p);
    if (it == allocs.end()) return -1;
    munmap(it->second.map, it->second.map_len);
    allocs.erase(it);
    return 0;
}

// A pool-held (freed) block is made inaccessible until the pool hands it out again.
EXPORT int mn_emu_hold(void* p, int held) {
    std::lock_guard<std::mutex> g(lock);
    auto it = allocs.find((uintptr_t)p);
    if (it == allocs.end()) return -1;
    Alloc& a = it->second;
    a.held = held;
    return mprotect(a.map + PAGE, a.map_len - 2 * PAGE, held ? PROT_NONE : PROT_READ | PROT_WRITE);
}

// The live allocation holding [p, p + n), for host copies: its start, or 0.
EXPORT uintptr_t mn_emu_owner(uintptr_t p, size_t n) {
    std::lock_guard<std::mutex> g(lock);
    const Alloc* a = find_alloc(p);
    return inside(a, p, n) ? (uintptr_t)a->start : 0;
}

EXPORT void mn_emu_set_threads(int n) { pool_threads = n > 1 ? n - 1 : 0; }

EXPORT int mn_emu_launch(const mn_emu_kernel* k, const unsigned* grid, const unsigned* block,
                         const char* params, size_t params_len, int checked, unsigned seed, char* msg, size_t len) {
    std::lock_guard<std::mutex> g(lock);
    Launch L;
    L.k = k;
    L.grid = {grid[0], grid[1], grid[2]};
    L.block = {block[0], block[1], block[2]};
    L.params = params;
    L.params_len = params_len;
    L.checked = checked;
    L.seed = seed;
    L.nblocks = (long long)grid[0] * grid[1] * grid[2];
    struct sigaction sa {};
    sa.sa_sigaction = on_signal;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    for (int i = 0; i < 3; ++i) sigaction(SIGNALS[i], &sa, &saved[i]);
    if (checked) run_checked(L);
    else run_fast(L);
    for (int i = 0; i < 3; ++i) sigaction(SIGNALS[i], &saved[i], nullptr);
    snprintf(msg, len, "%s", L.msg);
    return L.kind;
}
