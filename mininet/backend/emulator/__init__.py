"""The CUDA emulator: `MININET_CUDA=emulate` runs the real cuda_src/*.cu kernels on the CPU.

It stands in for PyCUDA (`driver`, `tools`: the calls the CUDA backend makes, raising what
PyCUDA raises) and for nvcc (cuda_build.compile_host / compile_host_library: the same .cu
files compiled by g++ against `cuda_emu.h`, cached like cubins). Nothing here runs at
import; the runtime (`runtime.cpp`, built to libmnemu-<key>.so) loads with the first kernel.

How a launch runs
  * Every thread of a block is a fiber (ucontext to start, _setjmp/_longjmp to switch); a
    fiber runs until it reaches `__syncthreads`, a warp operation or its end, so threads
    never interleave between those points. `__syncthreads` is a real barrier (exited
    threads stop counting, as on hardware); threads waiting at different `__syncthreads`
    lines are an error, and a round in which no thread can move is reported as a deadlock.
  * Warp shuffles and votes exchange values among the 32 lanes of a warp: each lane posts
    its value and waits for every lane of the mask (double-buffered by sequence number).
    A mask that leaves out the caller, names lanes past the block or an exited lane, or
    that the lanes disagree on, is an error.
  * `__shared__` compiles to `thread_local` (block-scope, hence static): the blocks of a
    launch run on a small pool of OS threads, one block at a time per thread, so each
    block has its own shared memory, including arrays declared in `__device__` helpers
    such as `block_sum`. The host library's TLS block holds exactly its `__shared__` data;
    it is filled with 0xFF (NaN, -1) before every block.
  * Device memory: every allocation ends exactly at a PROT_NONE guard page (another guard
    page before it), fresh memory is 0xFF-filled, and blocks held by the pool are made
    PROT_NONE until reused. A fault inside a kernel becomes an error naming the kernel,
    block, thread and the allocation missed (SIGSEGV, SIGBUS, SIGFPE are caught during
    a launch only, chained otherwise). Host copies must lie inside one live allocation.
  * Launches are validated as the driver does: block <= 1024 threads (z <= 64), grid
    y/z <= 65535, x < 2^31, dynamic shared memory <= 48 KiB, `__launch_bounds__`; and the
    prepared format is checked against the kernel's real parameter list (the real driver
    cannot see a wrong format; the emulator reads the types from the kernel's C++ type).

Checked launches (the "checked" variant of each host library)
  * Built with GCC's `-fsanitize=thread` instrumentation but without libtsan: every load
    and store calls `__tsan_readN/__tsan_writeN`, which the runtime defines. A global
    access must lie inside one live allocation (or on the thread's stack, or in the
    library's static data); a shared access is race-checked: per 4-byte word the last
    writer and reader and their barrier epoch; an access by another thread in the same
    epoch (between two `__syncthreads`) is a race, in whatever order threads ran, and a
    read of a word no thread of the block has written is reported as uninitialised.
  * The launch runs three times from the same starting memory: blocks and threads in
    forward, reverse and a seeded shuffled order, and all device memory must come out
    byte-identical (skipped when the kernel used floating-point atomics, whose order
    legitimately changes the rounding). Blocks run one at a time, so errors reproduce.

Modes (MININET_CUDA_EMU): `auto` (default) checks the first 2 launches of every kernel and
runs the rest fast (plain build, one order, blocks in parallel); `checked` checks every
launch; `fast` never. MININET_CUDA_EMU_THREADS sets the OS threads for blocks (default:
the CPU count). MININET_CUDA_EMU_COVERAGE=<file.json> records the launches per kernel;
`python -m mininet.backend.emulator <file.json>` lists which extern "C" entry points ran.

What it cannot check
  * Performance: coalescing, bank conflicts, occupancy, register pressure and spills,
    timing (events measure host wall time); `__launch_bounds__` is checked only as a
    block-size limit.
  * Memory-model subtleties: fibers never interleave between synchronisation points, so a
    missing `__threadfence`, or a race between *blocks* in global memory, shows up only as a
    difference between block orders; warp-synchronous code that relies on implicit lockstep
    without `__syncwarp` is not modelled (the race checker only knows `__syncthreads`).
  * Accesses the compiler does not instrument: block copies through memcpy/memset inside a
    kernel, and accesses in libm; overflows there are still caught by the guard pages, but
    only past the end of an allocation (not within the pool's 256-byte minimum, and not
    small underflows into the slack before the start).
  * A `__shared__` array the kernel never writes at all is folded to zeros by g++ (a static
    nothing stores to is read-only), so neither the poison nor the checker sees it read.
  * Numerics: host libm instead of CUDA's (no --use_fast_math approximations, no FMA
    contraction, no flush-to-zero), so results agree with a GPU only to rounding.
  * Not emulated: dynamic (`extern __shared__`) shared memory, textures, surfaces,
    `__constant__` copies from the host, streams (launches are synchronous), cooperative
    groups, half precision; kernels must be `extern "C"`. Errors are not sticky: after a
    kernel error the context stays usable, unlike a real one.
"""
import os

MODES = ("auto", "checked", "fast")
AUTO_CHECKED_LAUNCHES = 2


def mode():
    value = os.environ.get("MININET_CUDA_EMU", "auto") or "auto"
    if value not in MODES:
        raise ValueError(f"MININET_CUDA_EMU={value!r}: expected one of {', '.join(MODES)}")
    return value


def threads():
    value = os.environ.get("MININET_CUDA_EMU_THREADS")
    if value:
        return max(1, int(value))
    return os.cpu_count() or 1
