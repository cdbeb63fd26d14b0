# cython: boundscheck=False, wraparound=False, cdivision=True
"""Which kernel set (ISA) this process runs, chosen once at import.

One build holds the GEMM and convolution kernels (_isa.h) for several ISAs, as the
modules mininet_ext._kern_<isa>: on x86-64 generic (the x86-64 baseline, SSE2),
avx2 (AVX2 + FMA), avx512 (AVX-512 F/BW/DQ/VL) and avx512bf16 (the same with BF16);
elsewhere generic only. The best one that this CPU supports (cpuid, through
__builtin_cpu_supports, which also checks that the OS saves the vector registers)
and this build holds is imported; nothing else runs at import.

MININET_ISA=generic|avx2|avx512|avx512bf16 forces one (auto or empty: the default).
A set the CPU cannot run, one the build lacks, or an unknown name is refused with
an error naming the missing features or the choices: running it anyway would die
on an illegal instruction, and silently running another would hide the mistake.

Test hook: MININET_ISA_PRETEND_MISSING=avx512f[,...] makes the named CPU features
count as absent (in the automatic choice as well), so that the refusal can be
tested on a CPU that has everything.
"""
import importlib
import importlib.util
import os

cdef extern from *:
    """
    #if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
    #define MN_X86 1
    #include <cpuid.h>
    /* AMX by cpuid itself: not every compiler's __builtin_cpu_supports knows its names */
    static int mn_cpuid_edx7(int bit)
    {
        unsigned a, b, c, d;
        if (__get_cpuid_max(0, 0) < 7) return 0;
        __cpuid_count(7, 0, a, b, c, d);
        return (d >> bit) & 1;
    }

    /* Whether the CPU lists tile palette 1 with what _amx.h configures (8 tiles of 16
       rows x 64 bytes): a VM can advertise AMX and list no palette, and then the first
       ldtilecfg faults (cpuid leaf 0x1D). */
    static int mn_amx_palette(void)
    {
        unsigned a, b, c, d;
        if (__get_cpuid_max(0, 0) < 0x1d) return 0;
        __cpuid_count(0x1d, 0, a, b, c, d);
        if (a < 1) return 0;
        __cpuid_count(0x1d, 1, a, b, c, d);
        return (b & 0xffff) >= 64 && (b >> 16) >= 8 && (c & 0xffff) >= 16;
    }
    static int mn_cpu_feature(int i)
    {
        /* __builtin_cpu_supports takes string literals only: one per feature, in the
           order of _isa.FEATURES */
        __builtin_cpu_init();
        switch (i) {
        case 0: return __builtin_cpu_supports("avx2") != 0;
        case 1: return __builtin_cpu_supports("fma") != 0;
        case 2: return __builtin_cpu_supports("avx512f") != 0;
        case 3: return __builtin_cpu_supports("avx512bw") != 0;
        case 4: return __builtin_cpu_supports("avx512dq") != 0;
        case 5: return __builtin_cpu_supports("avx512vl") != 0;
        case 6: return __builtin_cpu_supports("avx512bf16") != 0;
        case 7: return mn_cpuid_edx7(24);   /* amx-tile */
        case 8: return mn_cpuid_edx7(22);   /* amx-bf16 */
        }
        return 0;
    }
    #else
    #define MN_X86 0
    static int mn_cpu_feature(int i) { (void)i; return 0; }
    static int mn_amx_palette(void) { return 0; }
    #endif

    /* Linux hands out AMX's 8 KB of tile state only to a process that asks for it:
       0, or the errno of the refusal (ENOSPC: a thread's signal stack is too small to
       hold the state; EINVAL/ENOSYS: no AMX support in this kernel). */
    #if defined(__linux__) && defined(__x86_64__)
    #include <errno.h>
    #include <unistd.h>
    #include <sys/syscall.h>
    static int mn_amx_permission(void)
    {
        if (syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */,
                    18 /* XFEATURE_XTILEDATA */) == 0)
            return 0;
        return errno ? errno : -1;
    }
    #define MN_AMX_LINUX 1
    #else
    #define MN_AMX_LINUX 0
    static int mn_amx_permission(void) { return -1; }
    #endif

    /* ns a spin of `spins` spins, each as a waiting libgomp thread spins (a relaxed load
       of the flag it waits on, then the CPU's pause hint: config/linux/wait.h) */
    #include <time.h>
    static double mn_spin_ns(long spins)
    {
        static volatile int flag = 0;
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        for (long i = 0; i < spins; i++) {
            if (__atomic_load_n(&flag, __ATOMIC_RELAXED))
                break;
    #if MN_X86
            __builtin_ia32_pause();
    #else
            __asm__ volatile("" ::: "memory");
    #endif
        }
        clock_gettime(CLOCK_MONOTONIC, &b);
        return ((double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec)) / spins;
    }
    """
    int MN_X86
    int MN_AMX_LINUX
    int mn_cpu_feature(int i)
    int mn_amx_palette()
    int mn_amx_permission()
    double mn_spin_ns(long spins) nogil

FEATURES = ("avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512bf16",
            "amx-tile", "amx-bf16")
ISAS = ("generic", "avx2", "avx512", "avx512bf16")    # in order of preference, last best
REQUIRES = {
    "generic": (),
    "avx2": ("avx2", "fma"),
    "avx512": ("avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl"),
    "avx512bf16": ("avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512bf16"),
}


def spin_ns(long spins=2000, int rounds=3):
    """ns one spin of a waiting OpenMP thread takes on this CPU (libgomp's loop: a load and
    the pause hint), the least of `rounds` timings of `spins` spins: ~13 ns on a
    Sapphire-Rapids-class Xeon, 16-32 ns on a Zen 4 EPYC (10000 spins were 160-320 us
    there, session 13), both under KVM. GOMP_SPINCOUNT counts spins, so mininet_ext
    sizes it from this."""
    if spins < 1 or rounds < 1:
        raise ValueError(f"spin_ns: spins and rounds must be >= 1, got {spins} and {rounds}")
    cdef double best = mn_spin_ns(spins)
    for _ in range(rounds - 1):
        best = min(best, mn_spin_ns(spins))
    return best


def cpu_features():
    """The features of FEATURES this CPU has (less those MININET_ISA_PRETEND_MISSING
    names), as a tuple."""
    pretend = [f.strip() for f in os.environ.get("MININET_ISA_PRETEND_MISSING", "").split(",")
               if f.strip()]
    unknown = [f for f in pretend if f not in FEATURES]
    if unknown:
        raise RuntimeError(f"MININET_ISA_PRETEND_MISSING names unknown CPU features "
                           f"{', '.join(unknown)}: choose from {', '.join(FEATURES)}")
    return tuple(f for i, f in enumerate(FEATURES) if mn_cpu_feature(i) and f not in pretend)


def built():
    """The kernel sets this build holds (a mininet_ext._kern_<isa> module each)."""
    return tuple(isa for isa in ISAS if importlib.util.find_spec(f"mininet_ext._kern_{isa}"))


def missing_features(isa, have=None):
    have = cpu_features() if have is None else have
    return tuple(f for f in REQUIRES[isa] if f not in have)


def supported():
    """The kernel sets this build holds and this CPU can run, worst to best."""
    have = cpu_features()
    return tuple(isa for isa in built() if not missing_features(isa, have))


def _choose():
    """(isa, forced): MININET_ISA's set, or the best supported one."""
    want = os.environ.get("MININET_ISA", "").strip().lower()
    have, holds = cpu_features(), built()
    if want in ("", "auto"):
        runnable = [isa for isa in holds if not missing_features(isa, have)]
        if not runnable:
            raise ImportError("mininet: no kernel set in this build (no mininet_ext._kern_* "
                              "module): rebuild the extensions")
        return runnable[len(runnable) - 1], False   # (no [-1]: wraparound is off)
    if want not in ISAS:
        raise RuntimeError(f"MININET_ISA={want!r} is not a kernel set: choose one of "
                           f"{', '.join(ISAS)}, or auto (the best this CPU runs)")
    if want not in holds:
        why = "the build is for another architecture" if not MN_X86 else \
              "the compiler did not accept its flags when it was built"
        raise RuntimeError(f"MININET_ISA={want}: this build has no {want} kernels ({why}); "
                           f"it holds {', '.join(holds) or 'none'}")
    lacks = missing_features(want, have)
    if lacks:
        can = [isa for isa in holds if not missing_features(isa, have)]
        raise RuntimeError(f"MININET_ISA={want}: this CPU lacks {', '.join(lacks)}, which the "
                           f"{want} kernels need; it can run {', '.join(can)} (or unset "
                           f"MININET_ISA to pick the best)")
    return want, True


_ACTIVE, FORCED = _choose()
KERNELS = importlib.import_module(f"mininet_ext._kern_{_ACTIVE}").kernels   # a PyCapsule


def active():
    """The kernel set this process runs: generic, avx2, avx512 or avx512bf16."""
    return _ACTIVE


# The modules built once per kernel set besides their default build (setup.py's
# VARIANT_MODULES: those with vector loops of their own), as mininet_ext._<set>.<name>;
# avx512bf16 runs the avx512 build.
VARIANT_OF = {"generic": "generic", "avx2": "avx2", "avx512": "avx512", "avx512bf16": "avx512"}


def _portable():
    try:
        from mininet_ext import _build_info
    except ImportError:   # a build without its record: take it as -march=native
        return False
    return bool(_build_info.PORTABLE)


def variant(name):
    """mininet_ext.<name> as built for the kernel set this process runs: in a portable
    build, or whenever MININET_ISA forces a set (even the one the automatic choice would
    take: that is how the tests reach these builds), mininet_ext._<set>.<name>; else, in a
    -march=native build, the module's default build. A build without that variant (a
    portable build has no generic one: its default build is generic) gives the default."""
    import sys
    if FORCED or _portable():
        pkg = f"mininet_ext._{VARIANT_OF[_ACTIVE]}"
        try:
            mod = importlib.import_module(f"{pkg}.{name}")
        except ModuleNotFoundError as e:
            if e.name not in (pkg, f"{pkg}.{name}"):
                raise   # something the variant itself imports is missing
        else:
            # Cython's module init also registers the module under the name its source
            # was compiled as (mininet_ext.<name>) when that is free: undo it, so that
            # mininet_ext.<name> stays the default build whatever was imported first
            if sys.modules.get(f"mininet_ext.{name}") is mod:
                del sys.modules[f"mininet_ext.{name}"]
            return mod
    return importlib.import_module(f"mininet_ext.{name}")


def describe():
    """One line for `mininet info`: the set, why, and the others on offer."""
    how = "forced by MININET_ISA" if FORCED else "best this CPU supports"
    return f"{_ACTIVE} ({how}; this CPU and build: {', '.join(supported())})"


def describe_variants():
    """One line for `mininet info`: which build of the per-set modules (VARIANT_OF) this
    process runs."""
    pkg = variant("norm").__name__.rpartition(".")[0]
    if pkg == "mininet_ext":
        flags = ("the x86-64 baseline" if MN_X86 else "no -march") if _portable() \
            else "-march=native"
        return f"the default build ({flags})"
    return f"the {pkg.rpartition('._')[2]} build ({pkg}.*)"


def peak_kernels(str isa):
    """The FMA peak kernel of kernel set `isa` (a PyCapsule, mininet_ext.peak), compiled
    with that set's flags: refused, with the reason, for a set this CPU or build lacks."""
    if isa not in ISAS:
        raise ValueError(f"isa {isa!r} is not a kernel set: choose one of {', '.join(ISAS)}")
    if isa not in built():
        raise RuntimeError(f"this build has no {isa} kernels; it holds {', '.join(built())}")
    lacks = missing_features(isa)
    if lacks:
        raise RuntimeError(f"this CPU lacks {', '.join(lacks)}, which the {isa} kernels need")
    return importlib.import_module(f"mininet_ext._kern_{isa}").peak


_amx = None   # (capsule or None, why not), decided on first use


def amx():
    """(capsule, reason): the AMX bf16 kernels (a PyCapsule, mininet_ext.amx) where the
    active kernel set holds them, the CPU has AMX-TILE and AMX-BF16 and Linux grants this
    process the tile state; else (None, why not). The request is made once, on the first
    call (not at import: a process that never multiplies in bf16 never asks)."""
    global _amx
    if _amx is None:
        _amx = _find_amx()
    return _amx


def _find_amx():
    import errno
    module = importlib.import_module(f"mininet_ext._kern_{_ACTIVE}")
    if not hasattr(module, "amx"):
        why = "the avx512bf16 kernel set was built without AMX" if _ACTIVE == "avx512bf16" \
            else f"the {_ACTIVE} kernel set has no AMX kernels"
        return None, why
    lacks = [f for f in ("amx-tile", "amx-bf16") if f not in cpu_features()]
    if lacks:
        return None, f"this CPU lacks {', '.join(lacks)}"
    if not mn_amx_palette():
        return None, "the CPU lists no tile palette of 8 tiles x 16 rows x 64 bytes"
    if not MN_AMX_LINUX:
        return None, "AMX is used on Linux only (the tile state is asked of Linux)"
    err = mn_amx_permission()
    if err:
        name = errno.errorcode.get(err, str(err))
        why = " (a thread's signal stack is too small for the tile state)" \
            if err == errno.ENOSPC else ""
        return None, f"the OS refused this process the AMX tile state ({name}){why}"
    return module.amx, "AMX-BF16 tiles"
