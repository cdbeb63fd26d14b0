"""Build the Cython kernels in mininet_ext/ with -O3, OpenMP (probed) and -march=native.

The GEMM and convolution kernels (_isa.h) are built once per ISA instead, into
mininet_ext._kern_<isa>, with that ISA's flags and never -march=native: on x86-64
generic (the x86-64 baseline), avx2, avx512 and avx512bf16, each where the compiler
accepts its flags; elsewhere generic only. mininet_ext._isa picks one at import.

MININET_PORTABLE=1 drops -march=native from the other modules (for wheels that run on
other CPUs); the kernel sets are the same in both builds. The modules with vector loops
of their own (VARIANT_MODULES) are built per kernel set as well.
MININET_NO_OPENMP=1 builds serial kernels even when the compiler has OpenMP.
MININET_DEBUG=1 keeps the debug info (-g) that is otherwise left out.
"""
import glob
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.sdist import sdist

MODULES = ["_omp", "buffer", "strided", "elementwise", "reduce", "matmul", "conv", "convgemm", "optim", "losses", "norm", "rnn", "dlpack", "peak", "_isa", "winograd", "conv_nhwc", "conv_direct", "rows"]


def compiler_accepts(flags):
    """Compile and link a tiny OpenMP-using C file with `flags`; True if it works."""
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    src = "#include <omp.h>\nint main(void){return omp_get_max_threads() > 0 ? 0 : 1;}\n"
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "probe.c")
        with open(path, "w") as f:
            f.write(src)
        cmd = cc.split() + [path, "-o", os.path.join(tmp, "probe")] + flags
        try:
            return subprocess.run(cmd, capture_output=True).returncode == 0
        except OSError:
            return False


LIBMVEC_PROBE = """#include <math.h>
#pragma omp declare simd notinbranch
float expf(float);
int main(void) { float a[64], o[64]; for (int i = 0; i < 64; i++) a[i] = i * 0.01f;
  for (int i = 0; i < 64; i++) o[i] = expf(a[i]); return o[1] > 1.0f ? 0 : 1; }
"""


def libmvec_works(flags):
    """glibc's vector math library links and runs (x86-64 glibc): the kernels' exp, log,
    tanh vectorise through it (_vecmath.h)."""
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = os.path.join(tmp, "mvec.c"), os.path.join(tmp, "mvec")
        with open(src, "w") as f:
            f.write(LIBMVEC_PROBE)
        try:
            built = subprocess.run(cc.split() + [src, "-o", exe] + flags + ["-lmvec", "-lm"],
                                   capture_output=True).returncode == 0
            return built and subprocess.run([exe], capture_output=True).returncode == 0
        except OSError:
            return False


def compiles(src, flags):
    """Compile (without linking) the C source `src` with `flags`; True if it works."""
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "probe.c")
        with open(path, "w") as f:
            f.write(src)
        try:
            return subprocess.run(cc.split() + ["-c", path, "-o", os.path.join(tmp, "probe.o")]
                                  + flags, capture_output=True).returncode == 0
        except OSError:
            return False


# Kernel sets: name -> flags, best last (mininet_ext/_isa.pyx knows the same names and the
# CPU features each needs). Every x86-64 set starts from the baseline, so that an -march
# in the environment's CFLAGS cannot leak wider instructions into a narrower set.
X86_BASE = ["-march=x86-64", "-mtune=generic"]
X86_ISAS = {
    "generic": X86_BASE,
    "avx2": X86_BASE + ["-mavx2", "-mfma"],
    "avx512": X86_BASE + ["-mavx2", "-mfma", "-mavx512f", "-mavx512bw", "-mavx512dq",
                          "-mavx512vl"],
    "avx512bf16": X86_BASE + ["-mavx2", "-mfma", "-mavx512f", "-mavx512bw", "-mavx512dq",
                              "-mavx512vl", "-mavx512bf16"],
}
# The avx512bf16 set also carries the AMX bf16 kernels (_amx.h) where the compiler takes
# these flags: they only enable the tile intrinsics, which nothing calls before _isa.pyx
# has found AMX on the CPU and the OS's permission to use it.
AMX_FLAGS = ["-mamx-tile", "-mamx-bf16", "-DMN_AMX=1"]
AMX_PROBE = """#include <immintrin.h>
void probe(void) { _tile_zero(0); _tile_release(); }
"""
KERNEL_HEADERS = ["_kern.h", "_isa.h", "_gemm.h", "_tr16.h", "_gemm_sse2.h", "_gemm_small.h",
                  "_convpack.h", "_bf16.h", "_amx.h", "_peak_fma.h"]
KERNEL_ARGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-Wno-unused-function",
               "-Wno-psabi"]
ISA_PROBE = """typedef float v16 __attribute__((vector_size(64)));
v16 probe(v16 a, v16 b, v16 c) { return a * b + c; }
"""


def kernel_sets():
    """{isa: compile flags} of the kernel sets this compiler can build for this target."""
    if not compiles("#ifndef __x86_64__\n#error not x86-64\n#endif\n", []):
        return {"generic": []}
    sets = {isa: flags for isa, flags in X86_ISAS.items()
            if isa == "generic" or compiles(ISA_PROBE, flags)}
    if "avx512bf16" in sets and compiles(AMX_PROBE, sets["avx512bf16"] + AMX_FLAGS):
        sets["avx512bf16"] = sets["avx512bf16"] + AMX_FLAGS
    return sets


def write_if_changed(path, text):
    """A generated source file, rewritten only when its text changes (an unchanged one
    keeps its time stamp, so nothing that depends on it is rebuilt)."""
    if not os.path.exists(path) or open(path).read() != text:
        with open(path, "w") as f:
            f.write(text)


def kernel_extension(isa, flags):
    """mininet_ext._kern_<isa>: a generated two-line C file that includes _kern.h."""
    path = os.path.join("mininet_ext", f"_kern_{isa}.c")
    text = (f"/* Generated by setup.py: the {isa} kernel set (mininet_ext/_kern.h). */\n"
            f"#define MN_ISA {isa}\n#include \"_kern.h\"\n")
    write_if_changed(path, text)
    return Extension(f"mininet_ext._kern_{isa}", [path], include_dirs=["mininet_ext"],
                     depends=[os.path.join("mininet_ext", h) for h in KERNEL_HEADERS],
                     extra_compile_args=KERNEL_ARGS + NO_DEBUG + flags)


# Modules whose own vector code (the convolution kernels of _conv_direct.h, _conv_nhwc.h
# and _winograd*.h, written for the vector width the flags give; the loops of batch norm,
# pooling, the fused reductions, the optimizers, the losses and the LSTM gates, vectorised
# by the compiler, exp and tanh through libmvec) is built once per kernel set as well, into
# mininet_ext._<isa>.<name>, besides the default build (-march=native, or the x86-64
# baseline under MININET_PORTABLE). _isa.variant picks the one to import: a portable
# wheel's default build ran these kernels 1.2-3.5x slower than -march=native, and trained
# the CIFAR CNN 1.64x slower (Xeon model 167).
VARIANT_MODULES = ["conv_direct", "conv_nhwc", "winograd", "norm", "conv", "reduce", "optim",
                   "losses", "rnn", "rows"]


def module_extension(name, source, depends, compile_args, link_args):
    """mininet_ext.<name> from a .pyx (or the C that includes one's Cython output); the C
    headers (the generated _ops.h among them) are dependencies too: an edit rebuilds it.
    No module uses numpy's C API, so numpy is not needed to build (nor installed for it:
    ~3 s of an isolated build)."""
    return Extension(f"mininet_ext.{name}", [source], include_dirs=["mininet_ext"],
                     depends=sorted(depends + glob.glob(os.path.join("mininet_ext", "*.h"))),
                     extra_compile_args=compile_args, extra_link_args=link_args)


def variant_extensions(isas, portable, compile_args, link_args):
    """mininet_ext._<isa>.<name> for each VARIANT_MODULES name: a generated C file that
    includes Cython's mininet_ext/<name>.c, compiled with the set's flags (its own object
    file). avx512bf16 takes the avx512 build (no bf16 code here, and so none of its AMX
    flags); a portable build has no generic one (its default build is that)."""
    base = [a for a in compile_args if not a.startswith("-march=")]
    exts = []
    # off x86-64 (one generic set, no flags) the default build is all there is
    plan = {isa: flags for isa, flags in isas.items() if len(isas) > 1 and
            isa != "avx512bf16" and not (isa == "generic" and portable)}
    for isa in ("generic", "avx2", "avx512"):   # no stale builds of an earlier plan
        if isa not in plan:
            shutil.rmtree(os.path.join("mininet_ext", f"_{isa}"), ignore_errors=True)
    for isa, flags in plan.items():
        os.makedirs(os.path.join("mininet_ext", f"_{isa}"), exist_ok=True)
        for name in VARIANT_MODULES:
            path = os.path.join("mininet_ext", f"_{isa}", f"{name}.c")
            write_if_changed(path, f"/* Generated by setup.py: mininet_ext/{name}.pyx for the "
                                   f"{isa} set. */\n#include \"../{name}.c\"\n")
            exts.append(module_extension(f"_{isa}.{name}", path,
                                         [os.path.join("mininet_ext", f"{name}.c")],
                                         base + flags, link_args))
    return exts


# Python's own CFLAGS carry -g: debug info took a third of the compile time (conv_nhwc.c
# 9.5 -> 6.6 s; a wheel from the sdist with the per-set modules 99 -> 80 s on 2 cores) and
# most of each module's size; the symbol table (perf's function names) stays.
# MININET_DEBUG=1 keeps it.
NO_DEBUG = [] if os.environ.get("MININET_DEBUG", "") not in ("", "0") else ["-g0"]


def build_flags():
    compile_args = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-Wno-unused-function",
                    "-Wno-unreachable-code", "-Wno-maybe-uninitialized"] + NO_DEBUG
    link_args = []
    portable = os.environ.get("MININET_PORTABLE", "") not in ("", "0")
    if not portable:
        compile_args.append("-march=native")
    openmp = False
    if os.environ.get("MININET_NO_OPENMP", "") in ("", "0") and compiler_accepts(["-fopenmp"]):
        compile_args.append("-fopenmp")
        link_args.append("-fopenmp")
        openmp = True
    if openmp and os.environ.get("MININET_NO_LIBMVEC", "") in ("", "0") and \
            libmvec_works(["-O2", "-fopenmp", "-fno-math-errno"] + (["-march=native"] if not portable else [])):
        compile_args.append("-DMN_LIBMVEC")
        link_args.append("-lmvec")
    return compile_args, link_args, openmp, portable


def source_hash(root):
    """sha256 of the kernel sources under root (*.pyx, *.pxd, *.pxi, *.h, by relative path), so
    `mininet info` can tell a stale build; mininet/cli/info.py computes the same."""
    import hashlib
    h = hashlib.sha256()
    names = sorted(os.path.relpath(os.path.join(d, f), root).replace(os.sep, "/")
                   for d, _, fs in os.walk(root) for f in fs
                   if f.endswith((".pyx", ".pxd", ".pxi", ".h")))
    for name in names:
        with open(os.path.join(root, name), "rb") as f:
            h.update(name.encode() + b"\0" + f.read() + b"\0")
    return h.hexdigest()


def write_build_info(compile_args, openmp, portable, isas):
    info = (
        "# Written by setup.py at build time.\n"
        f"CFLAGS = {' '.join(compile_args)!r}\n"
        f"ISAS = {list(isas)!r}\n"
        f"OPENMP = {openmp!r}\n"
        f"PORTABLE = {portable!r}\n"
        f"PYTHON = {sys.version.split()[0]!r}\n"
        f"SOURCE_HASH = {source_hash('mininet_ext')!r}\n"
    )
    with open(os.path.join("mininet_ext", "_build_info.py"), "w") as f:
        f.write(info)


class BuildExt(build_ext):
    def finalize_options(self):
        super().finalize_options()
        if self.parallel is None:
            self.parallel = os.cpu_count() or 1


def write_op_header():
    """mininet_ext/_ops.h from the one op table (mininet/backend/opcodes.py), run as a plain
    file: nothing of mininet is built yet."""
    import runpy
    table = runpy.run_path(os.path.join("mininet", "backend", "opcodes.py"))
    text = table["c_header"]()
    write_if_changed(os.path.join("mininet_ext", "_ops.h"), text)


write_op_header()
compile_args, link_args, openmp, portable = build_flags()
isas = kernel_sets()
write_build_info(compile_args, openmp, portable, isas)
if not openmp:
    print("mininet: compiler has no OpenMP; building serial kernels", file=sys.stderr)

def default_build_args(name):
    """A module's flags in the default build. In a portable build the per-set modules' own
    default build runs only on CPUs without AVX2 (or under MININET_ISA=generic): -O2 there,
    which compiled them in 0.6x the time of -O3 (conv_nhwc 10.0 -> 5.9 s, winograd 7.9 ->
    4.0, rnn 4.0 -> 2.8; Xeon model 207): about 19 s of the ~216 s of compiles a portable
    build runs, for the 90 s the sdist's wheel should take on 2 cores. Their kernels are
    written with vector types, which -O2 compiles as they are."""
    if portable and name in VARIANT_MODULES:
        return ["-O2" if a == "-O3" else a for a in compile_args]
    if name in COLD_MODULES:
        return ["-O1" if a == "-O3" else a for a in compile_args]
    return compile_args


# Modules with no loop anyone times (the CPU probes and the kernel-set choice, DLPack's
# capsules, Cython's shared utility code: the memoryview class): -O1 compiled them in
# about half the time of -O3 (_cyutility 3.9 -> 1.7 s, _isa 2.5 -> 1.3 s, dlpack 1.0 ->
# 0.5 s; Xeon model 207), while a broadcast batched matmul (memoryviews of its batch
# offsets) and _isa.active() took the same time.
COLD_MODULES = ("_isa", "dlpack", "_cyutility")


# Cython's utility code (the typed-memoryview class and its helpers, the type conversions)
# is generated once, into this module, which the others import at init, instead of into
# each of the ~50 modules compiled: 3-5 s less to compile matmul, peak or _omp, ~1 s less
# for most (Cython >= 3.1; Xeon model 207)
SHARED_UTILITY = "mininet_ext._cyutility"

# Cython's C output ships in the sdist (Sdist below), but Cython compares time stamps, and
# the Cython a wheel build installs into its isolated environment is newer than any file
# of the sdist: every module was translated again (~5 s on 2 cores). So a stamp, written
# after each cythonize that completes, names what the C came from: setup.py and the
# Cython version (the options), the kernel sources, and each C file's sha256. Where all of
# it matches this tree, the C is dated as new as its inputs and cythonize keeps it. Other
# options (a directive edited in setup.py, another Cython) translate everything again
# (force); other sources leave the C to Cython's own time stamps, as before; a C file that
# is not the one stamped (an interrupted cythonize) is never re-dated.
CYTHON_STAMP = os.path.join("mininet_ext", "_cython_stamp.txt")


def file_sha256(path):
    import hashlib
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def cython_keys():
    """(options key, sources key) of this tree."""
    import hashlib
    import Cython
    with open(__file__, "rb") as f:
        options = hashlib.sha256(f.read() + b"\0" + Cython.__version__.encode()).hexdigest()
    return options, source_hash("mininet_ext")


def generated_c():
    return [os.path.join("mininet_ext", f"{n}.c") for n in MODULES + ["_cyutility"]]


def read_stamp():
    """(options, sources, {C file: sha256}), or None without a readable stamp."""
    try:
        with open(CYTHON_STAMP) as f:
            lines = f.read().split("\n")
        return lines[0], lines[1], dict(line.split(" ", 1)[::-1] for line in lines[2:] if line)
    except (OSError, IndexError, ValueError):
        return None


def reuse_shipped_c(keys, stamp):
    """Date each stamped C file no older than anything cythonize compares it with (Cython's
    own .pxd files, ours, our headers), so that it is kept; never later than that, so a
    build tree's compiled modules stay newer than their C."""
    import Cython
    if stamp is None or stamp[:2] != keys:
        return
    keep = [c for c in generated_c() if os.path.exists(c) and stamp[2].get(c) == file_sha256(c)]
    if not keep:
        return
    roots = [os.path.join(os.path.dirname(Cython.__file__), "Includes"), "mininet_ext"]
    newest = max(os.stat(os.path.join(d, f)).st_mtime_ns for root in roots
                 for d, _, fs in os.walk(root) for f in fs
                 if f.endswith((".pyx", ".pxd", ".pxi", ".h")))
    for c in keep:
        if os.stat(c).st_mtime_ns < newest:
            os.utime(c, ns=(newest, newest))


def write_stamp(keys):
    lines = list(keys) + [f"{file_sha256(c)} {c}" for c in generated_c() if os.path.exists(c)]
    write_if_changed(CYTHON_STAMP, "\n".join(lines) + "\n")


CYTHON_KEYS = cython_keys()
STAMP = read_stamp()
reuse_shipped_c(CYTHON_KEYS, STAMP)

extensions = [
    # the module's own Cython parts (convgemm_*.pxi, pulled in by `include`) rebuild it too
    module_extension(name, f"mininet_ext/{name}.pyx",
                     glob.glob(os.path.join("mininet_ext", f"{name}_*.pxi")),
                     default_build_args(name), link_args)
    for name in MODULES
] + [Extension(SHARED_UTILITY, [os.path.join("mininet_ext", "_cyutility.c")],
               extra_compile_args=default_build_args("_cyutility"), extra_link_args=link_args)]

cythonized = cythonize(
    extensions,
    language_level=3,
    nthreads=os.cpu_count() or 1,
    shared_utility_qualified_name=SHARED_UTILITY,
    compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True,
                         "initializedcheck": False},
    force=STAMP is None or STAMP[0] != CYTHON_KEYS[0],
)
write_stamp(CYTHON_KEYS)   # cythonize completed: every module's C is current


class Sdist(sdist):
    """The sdist with Cython's C output and its stamp: the files of MODULES alone (not
    every *.c a working tree holds: a removed module's would ride along)."""
    def make_distribution(self):
        for path in generated_c() + [CYTHON_STAMP]:
            if os.path.exists(path) and path not in self.filelist.files:
                self.filelist.files.append(path)
        super().make_distribution()


setup(
    ext_modules=cythonized + [kernel_extension(isa, flags) for isa, flags in isas.items()]
    + variant_extensions(isas, portable, compile_args, link_args),
    cmdclass={"build_ext": BuildExt, "sdist": Sdist},
)
