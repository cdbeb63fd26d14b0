"""The emulator's stand-in for pycuda.driver: what the CUDA backend calls, raising what
PyCUDA raises (LogicError for invalid arguments, LaunchError for launches). Kernel bugs
found while running are KernelError, a LaunchError naming the kernel, block and thread."""
import atexit
import ctypes
import json
import os
import re
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np

from .. import cuda_build
from . import AUTO_CHECKED_LAUNCHES, mode, threads

EMULATED = True
COMPUTE_CAPABILITY = (8, 0)
MAX_DYNAMIC_SHARED = 48 * 1024
KINDS = ("ok", "bounds", "race", "uninitialised", "order", "barrier", "warp", "deadlock", "trap",
         "fault", "fpe", "stack")


class Error(Exception):
    pass


class LogicError(Error):
    pass


class LaunchError(Error):
    pass


class RuntimeError(Error):  # noqa: A001 (PyCUDA's name)
    pass


class MemoryError(Error):  # noqa: A001
    pass


class KernelError(LaunchError):
    """A bug the emulator found while running a kernel; `kind` is one of KINDS."""

    def __init__(self, kernel, kind, message):
        super().__init__(f"cuLaunchKernel (emulator): {message}")
        self.kernel, self.kind = kernel, kind


# ---- the runtime library ---------------------------------------------------------------
_lib = None
_lock = threading.Lock()


def _runtime():
    global _lib
    with _lock:
        if _lib is None:
            lib = ctypes.CDLL(str(cuda_build.compile_host_runtime()))
            lib.mn_emu_alloc.restype = ctypes.c_void_p
            lib.mn_emu_alloc.argtypes = [ctypes.c_size_t]
            lib.mn_emu_free.argtypes = [ctypes.c_void_p]
            lib.mn_emu_hold.argtypes = [ctypes.c_void_p, ctypes.c_int]
            lib.mn_emu_owner.restype = ctypes.c_size_t
            lib.mn_emu_owner.argtypes = [ctypes.c_size_t, ctypes.c_size_t]
            lib.mn_emu_launch.argtypes = [ctypes.c_void_p, ctypes.c_uint * 3, ctypes.c_uint * 3,
                                          ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_uint,
                                          ctypes.c_char_p, ctypes.c_size_t]
            lib.mn_emu_set_threads(threads())
            _lib = lib
    return _lib


# ---- init, device, context ---------------------------------------------------------------
_initialized = False
_local = threading.local()   # the context stack is per host thread, as in CUDA


def init(flags=0):
    global _initialized
    cuda_build.host_compiler()   # raises when there is no g++ to build the kernels with
    _initialized = True


def _stack():
    if not hasattr(_local, "stack"):
        _local.stack = []
    return _local.stack


def _need_init(what):
    if not _initialized:
        raise LogicError(f"{what} failed: initialization error")


def _need_context(what):
    if not _stack():
        raise LogicError(f"{what} failed: invalid device context")


class Device:
    def __init__(self, ordinal):
        _need_init("cuDeviceGet")
        if ordinal != 0:
            raise LogicError("cuDeviceGet failed: invalid device ordinal")
        self.ordinal = ordinal

    @staticmethod
    def count():
        _need_init("cuDeviceGetCount")
        return 1

    def name(self):
        return "mininet CUDA emulator (CPU)"

    def compute_capability(self):
        return COMPUTE_CAPABILITY

    def total_memory(self):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")

    def retain_primary_context(self):
        return _primary


class Context:
    def push(self):
        _stack().append(self)

    @staticmethod
    def pop():
        if not _stack():
            raise LogicError("cuCtxPopCurrent failed: invalid device context")
        _stack().pop()

    @staticmethod
    def get_current():
        return _stack()[-1] if _stack() else None

    @staticmethod
    def synchronize():   # launches are synchronous
        _need_context("cuCtxSynchronize")

    def get_device(self):
        return Device(0)

    def detach(self):
        pass


_primary = Context()


# ---- memory -------------------------------------------------------------------------------
def _alloc(nbytes):
    """A fresh block (its address), as cuMemAlloc."""
    ptr = _runtime().mn_emu_alloc(int(nbytes))
    if not ptr:
        raise MemoryError("cuMemAlloc failed: out of memory")
    return ptr


def _free(ptr):
    if _runtime().mn_emu_free(ptr):
        raise LogicError(f"cuMemFree failed: invalid value (emulator: {ptr:#x} is not a live "
                         f"allocation)")


def _hold(ptr, held):
    """Make a block the pool holds inaccessible (held) or usable again."""
    if _runtime().mn_emu_hold(ptr, int(held)):
        raise LogicError(f"emulator: the pool's block at {ptr:#x} is not a live allocation")


class DeviceAllocation:
    """As PyCUDA's: int() stays the address after free(); freeing twice is an error."""
    kind = "device_allocation"

    def __init__(self, ptr, size):
        self.ptr, self.size, self._valid = ptr, size, True

    def __int__(self):
        return self.ptr

    __index__ = __int__

    def free(self):
        if not self._valid:
            raise LogicError(f"{self.kind}::free failed: invalid resource handle")
        self._valid = False
        self._release()

    def _release(self):
        _free(self.ptr)

    def __del__(self):
        try:
            if self._valid:
                self.free()
        except Exception:   # interpreter shutdown
            pass


def mem_alloc(nbytes):
    _need_context("cuMemAlloc")
    if int(nbytes) <= 0:
        raise LogicError("cuMemAlloc failed: invalid argument")
    return DeviceAllocation(_alloc(nbytes), int(nbytes))


def mem_get_info():
    total = Device(0).total_memory()
    return total, total


def _device_range(what, ptr, nbytes):
    """A copy must stay inside one live allocation (the driver would fault or refuse)."""
    ptr = int(ptr)
    if nbytes and not _runtime().mn_emu_owner(ptr, nbytes):
        raise LogicError(f"{what} failed: invalid argument (emulator: {nbytes} bytes at {ptr:#x} "
                         f"are not inside one live device allocation)")
    return ptr


def _host(buf, writable):
    a = np.asarray(buf)
    if not (a.flags.c_contiguous or a.flags.f_contiguous):
        raise TypeError("the host buffer must be contiguous")
    if writable and not a.flags.writeable:
        raise TypeError("the host buffer must be writable")
    return a.__array_interface__["data"][0], a.nbytes


def memcpy_htod(dest, src):
    _need_context("cuMemcpyHtoD")
    addr, n = _host(src, False)
    ctypes.memmove(_device_range("cuMemcpyHtoD", dest, n), addr, n)


def memcpy_dtoh(dest, src):
    _need_context("cuMemcpyDtoH")
    addr, n = _host(dest, True)
    ctypes.memmove(addr, _device_range("cuMemcpyDtoH", src, n), n)


def memcpy_dtod(dest, src, size):
    _need_context("cuMemcpyDtoD")
    ctypes.memmove(_device_range("cuMemcpyDtoD", dest, size), _device_range("cuMemcpyDtoD", src, size), size)


# ---- events: launches are synchronous, so host time is the time --------------------------
class Event:
    def __init__(self, flags=0):
        self._t = None

    def record(self, stream=None):
        _need_context("cuEventRecord")
        self._t = time.perf_counter()
        return self

    def synchronize(self):
        return self

    def query(self):
        return True

    def time_till(self, end):
        return _elapsed(self, end)

    def time_since(self, start):
        return _elapsed(start, self)


def _elapsed(start, end):
    if start._t is None or end._t is None:
        raise LogicError("cuEventElapsedTime failed: invalid resource handle")
    return (end._t - start._t) * 1e3


# ---- modules and functions ---------------------------------------------------------------------
class _Kernel(ctypes.Structure):   # cuda_emu.h: struct mn_emu_kernel
    _fields_ = [("name", ctypes.c_char_p), ("fn", ctypes.c_void_p), ("thunk", ctypes.c_void_p),
                ("signature", ctypes.c_char_p), ("tls", ctypes.c_void_p)]


def module_from_file(path):
    """Load a module file of the host build: the manifest cuda_build.compile_host wrote."""
    _need_context("cuModuleLoad")
    path = Path(path)
    if not path.exists():
        raise RuntimeError("cuModuleLoad failed: file not found")
    if path.suffix != ".json":
        raise LogicError(f"cuModuleLoad failed: device kernel image is invalid (emulator: {path.name} "
                         f"is not a host build; use cuda_build.compile_host)")
    return Module(json.loads(path.read_text()))


class Module:
    def __init__(self, manifest):
        self.source, self.source_dir = manifest["source"], manifest.get("source_dir")
        self.kernels = {k["name"]: k for k in manifest["kernels"]}
        self._tables = {}

    def get_function(self, name):
        if name not in self.kernels:
            raise LogicError("cuModuleGetFunction failed: named symbol not found")
        return Function(self, self.kernels[name])

    def table(self, checked):
        """{name: (address of its mn_emu_kernel, signature)} of the fast or checked library."""
        if checked not in self._tables:
            runtime = _runtime()
            lib = ctypes.CDLL(str(cuda_build.compile_host_library(self.source, checked,
                                                                   src_dir=self.source_dir)))
            same = ctypes.cast(lib.mn_emu_syncthreads, ctypes.c_void_p).value == \
                ctypes.cast(runtime.mn_emu_syncthreads, ctypes.c_void_p).value
            if not same:
                raise RuntimeError(f"cuModuleLoad failed: {self.source} loaded a second emulator runtime")
            first = ctypes.POINTER(_Kernel)()
            count = lib.mn_emu_kernels(ctypes.byref(first))
            base, size = ctypes.cast(first, ctypes.c_void_p).value, ctypes.sizeof(_Kernel)
            self._tables[checked] = (lib, {first[i].name.decode(): (base + i * size, first[i].signature.decode())
                                           for i in range(count)})
        return self._tables[checked][1]


_launches: dict[str, list[int]] = {}   # kernel name -> [fast launches, checked launches]


class Function:
    def __init__(self, module, info):
        self.module, self.info, self.name = module, info, info["name"]
        self.arg_format = None
        self._verified = set()

    def prepare(self, arg_types):
        if not isinstance(arg_types, str):
            arg_types = "".join(t if isinstance(t, str) else np.dtype(t).char for t in arg_types)
        self.arg_format = arg_types
        return self

    def prepared_call(self, grid, block, *args, shared_size=0):
        _need_context("cuLaunchKernel")
        params = struct.pack(self.arg_format, *args)   # struct.error on a wrong count or type
        grid, block = _dims(grid), _dims(block)
        _validate(self, grid, block, shared_size)
        counts = _launches.setdefault(self.name, [0, 0])
        checked = {"checked": True, "fast": False}.get(mode(), counts[1] < AUTO_CHECKED_LAUNCHES)
        address, signature = self.module.table(checked)[self.name]
        if checked not in self._verified:
            _match(self, signature)
            self._verified.add(checked)
        msg = ctypes.create_string_buffer(2048)
        seed = zlib.crc32(self.name.encode()) + sum(counts)
        kind = _runtime().mn_emu_launch(address, (ctypes.c_uint * 3)(*grid), (ctypes.c_uint * 3)(*block),
                                        params, len(params), int(checked), seed & 0xFFFFFFFF, msg, len(msg))
        counts[checked] += 1
        if kind:
            raise KernelError(self.name, KINDS[kind], _name_shared(self.module, checked, msg.value.decode()))


def _dims(d):
    d = tuple(int(v) for v in d)
    return d + (1,) * (3 - len(d))


def _validate(fn, grid, block, shared):
    threads_ = block[0] * block[1] * block[2]
    problems = []
    if min(grid + block) < 1:
        problems.append(f"grid {grid} and block {block} must be at least 1 in every dimension")
    if block[0] > 1024 or block[1] > 1024 or block[2] > 64 or threads_ > 1024:
        problems.append(f"block {block} has {threads_} threads (at most 1024; x, y <= 1024, z <= 64)")
    if grid[0] >= 2 ** 31 or grid[1] > 65535 or grid[2] > 65535:
        problems.append(f"grid {grid} is over the limits (x < 2^31, y and z <= 65535)")
    if not 0 <= shared <= MAX_DYNAMIC_SHARED:
        problems.append(f"{shared} bytes of dynamic shared memory (at most {MAX_DYNAMIC_SHARED})")
    if problems:
        raise LogicError(f"cuLaunchKernel failed: invalid argument (emulator: {fn.name}: {'; '.join(problems)})")
    bound = fn.info.get("max_threads")
    if bound and threads_ > bound:
        raise LaunchError(f"cuLaunchKernel failed: too many resources requested for launch (emulator: "
                          f"{fn.name} has __launch_bounds__({bound}); the block has {threads_} threads)")


# ---- the prepared format against the kernel's parameters ------------------------------------------
def _format_items(fmt):
    """(char, byte offset, size) of each item, laid out as struct.pack does (native)."""
    items, prefix = [], ""
    for count, ch in re.findall(r"(\d*)([a-zA-Z?])", fmt):
        for _ in range(int(count or 1)):
            prefix += ch
            items.append((ch, struct.calcsize(prefix) - struct.calcsize(ch), struct.calcsize(ch)))
    return items


def _kind(ch):
    return "P" if ch == "P" else "f" if ch in "efd" else "i" if ch in "bBhHiIlLqQnN?" else ch


def _mismatch(fmt, signature):
    """None, or (parameter number, why) for the first parameter the format does not fit."""
    items, at, i = _format_items(fmt), 0, 0
    for n, p in enumerate(signature.split()):
        kind, size, align = p[0], *map(int, p[1:].split("."))  # type: ignore[misc]  # mypy cannot count a starred map
        off = -(-at // align) * align
        at = off + size
        if kind == "S":   # a struct by value: items must tile it
            j = i
            while j < len(items) and items[j][1] < at:
                j += 1
            end = items[j - 1][1] + items[j - 1][2] if j > i else -1
            if j == i or items[i][1] != off or not at - align < end <= at:
                return n, f"a {size}-byte struct at byte {off}"
            i = j
        elif i >= len(items) or items[i][1:] != (off, size) or _kind(items[i][0]) != kind:
            what = {"P": "pointer", "f": "floating-point", "i": "integer"}[kind]
            return n, f"a {size}-byte {what} at byte {off}"
        else:
            i += 1
    return (n + 1, "no parameter (the format has more items)") if i < len(items) else None


def _match(fn, signature):
    bad = _mismatch(fn.arg_format, signature)
    if bad:
        n, why = bad
        params = [p.strip() for p in fn.info["params"].split(",")]
        name = params[n] if n < len(params) else "-"
        raise LogicError(f"cuLaunchKernel failed: invalid argument (emulator: the prepared format "
                         f"{fn.arg_format!r} does not match {fn.name}({fn.info['params']}): parameter "
                         f"{n + 1} ({name}) is {why})")


def _name_shared(module, checked, message):
    """Name the __shared__ variable behind 'shared+0x..' (the library's TLS symbols)."""
    m = re.search(r"shared\+0x([0-9a-f]+)", message)
    if not m:
        return message
    lib = module._tables[checked][0]
    offset = int(m.group(1), 16)
    for name, start, size in _tls_symbols(lib._name):
        if start <= offset < start + size:
            return message.replace(m.group(0), f"{m.group(0)} ({name} + {offset - start})")
    return message


def _tls_symbols(path):
    import subprocess
    try:
        out = subprocess.run(["readelf", "-sW", "--demangle", path], capture_output=True, text=True).stdout
    except OSError:
        return []
    rows = (line.split(None, 7) for line in out.splitlines() if " TLS " in line)
    return [(r[7], int(r[1], 16), int(r[2])) for r in rows if len(r) == 8]


# ---- coverage ---------------------------------------------------------------------------------------
def coverage():
    """{kernel name: {"fast": launches, "checked": launches}} in this process."""
    return {k: {"fast": v[0], "checked": v[1]} for k, v in sorted(_launches.items())}


def _save_coverage():
    path = os.environ.get("MININET_CUDA_EMU_COVERAGE")
    if not path or not _launches:
        return
    try:
        old = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        old = {}
    for k, v in coverage().items():
        o = old.setdefault(k, {"fast": 0, "checked": 0})
        o["fast"] += v["fast"]
        o["checked"] += v["checked"]
    Path(path).write_text(json.dumps(old, indent=1, sort_keys=True))


atexit.register(_save_coverage)
