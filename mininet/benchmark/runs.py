"""Saved benchmark runs (`mininet bench ... --save run.json`): every raw sample of every
case, with what it ran on, so two runs can be compared later (mininet.benchmark.compare).

The document (schema "mininet-bench/1"):
    {"schema", "created" (ISO-8601), "command" (argv), "benchmark" ("matmul", ...),
     "machine": {"cpu_model", "cores", "isa_flags", "caches" (level and type -> bytes)},
     "software": {"mininet", "commit" (git, "-dirty" when the work tree has changes; null
                  outside a checkout), "numpy", "blas", "torch" (null: not installed),
                  "python", "compiler_flags" (what mininet_ext was built with)},
     "cases": [{"name" (unique), "impl", "params", "threads" (null: not a CPU thread
                count, a GPU kernel), "samples" (seconds per call), "median", "q1", "q3",
                "best", "flops", "nbytes" (per call, or null), "peak_rss_mb" (the process's
                peak RSS while the case ran: harness.PeakRSS; null where not measured)}]}
Fields beyond these are kept and ignored."""
import datetime
import glob
import json
import math
import os
import platform
import subprocess
import sys

from ..interop.atomic import write_atomically

SCHEMA = "mininet-bench/1"
MAX_RUN_BYTES = 64 << 20     # a run is a few thousand numbers; anything bigger is not one
ISA_PREFIXES = ("sse", "ssse", "avx", "fma", "f16c", "amx", "bmi", "neon", "asimd", "sve", "vsx")


# what the run ran on ------------------------------------------------------------------------
def _cpuinfo():
    """(model name, flags) from /proc/cpuinfo; ("", []) where it cannot be read."""
    model, flags = "", []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "hardware", "cpu model") and not model:
                    model = " ".join(value.split())
                elif key in ("flags", "features") and not flags:
                    flags = value.split()
    except OSError:
        pass
    return model, flags


def cache_sizes(root="/sys/devices/system/cpu/cpu0/cache"):
    """{"L1d": bytes, "L1i": ..., "L2": ..., "L3": ...} of cpu0 (Linux sysfs; {} elsewhere)."""
    caches = {}
    for index in sorted(glob.glob(os.path.join(root, "index*"))):
        try:
            level = _read(index, "level")
            kind = _read(index, "type")
            size = _read(index, "size").upper()
            scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(size[-1:], 1)
            nbytes = int(size.rstrip("KMG")) * scale
        except (OSError, ValueError):
            continue
        suffix = {"Data": "d", "Instruction": "i"}.get(kind, "")
        caches[f"L{level}{suffix}"] = nbytes
    return caches


def _read(folder, name):
    with open(os.path.join(folder, name)) as f:
        return f.read(64).strip()


def machine_info():
    """The run's "machine" section: cpu_model, cores, isa_flags (sorted), caches."""
    model, flags = _cpuinfo()
    return {"cpu_model": model or platform.processor() or platform.machine() or "unknown",
            "cores": os.cpu_count() or 1,
            "isa_flags": sorted(f for f in set(flags) if f.startswith(ISA_PREFIXES)),
            "caches": cache_sizes()}


def git_commit(folder=None):
    """The commit of the checkout mininet was imported from ("-dirty" with uncommitted
    changes to tracked files), or None (an installed copy, no git)."""
    folder = folder or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if not os.path.exists(os.path.join(folder, ".git")):
        return None
    try:
        head = subprocess.run(["git", "-C", folder, "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", folder, "diff", "--quiet", "HEAD", "--"],
                               capture_output=True, timeout=10).returncode != 0
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("-dirty" if dirty else "")


def blas_info():
    """numpy's BLAS: threadpoolctl's view of the loaded library where installed, else
    what numpy was built against."""
    try:
        from threadpoolctl import threadpool_info
        libs = [p for p in threadpool_info() if p.get("user_api") == "blas"]
        if libs:
            p = libs[0]
            return (f"{p.get('internal_api')} {p.get('version')} ({p.get('architecture')}, "
                    f"{p.get('num_threads')} threads, {p.get('filepath')})")
    except ImportError:
        pass
    import numpy as np
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    except (TypeError, KeyError):     # numpy < 1.25 prints its config, has no dicts
        return "unknown"
    text = f"{blas.get('name', 'unknown')} {blas.get('version', '')}".strip()
    config = blas.get("openblas configuration")
    return f"{text} ({config})" if config else text


def _version_of(package):
    from importlib import metadata
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def software_info():
    """The run's "software" section: mininet, commit, numpy, blas, torch (None when not
    installed), python, compiler_flags."""
    import numpy as np
    from .. import __version__
    try:
        from mininet_ext import _build_info
        flags = _build_info.CFLAGS
    except ImportError:
        flags = "unknown (no build record)"
    return {"mininet": __version__, "commit": git_commit(), "numpy": np.__version__,
            "blas": blas_info(), "torch": _version_of("torch"),
            "python": platform.python_version(), "compiler_flags": flags}


def new_run(benchmark, cases, command=None):
    """The document for `cases` (harness.Case records or their dicts)."""
    return {"schema": SCHEMA,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": list(sys.argv if command is None else command),
            "benchmark": benchmark,
            "machine": machine_info(),
            "software": software_info(),
            "cases": [c.to_dict() if hasattr(c, "to_dict") else dict(c) for c in cases]}


# writing and reading ------------------------------------------------------------------------
def dumps(run):
    """The run as the JSON text write_run writes (NaN and infinities refused)."""
    return json.dumps(run, indent=1, allow_nan=False) + "\n"


def write_run(path, run):
    """Write the run (validated first) to path, whole or not at all; "-" writes it to
    stdout."""
    validate_run(run, "the run to save" if path == "-" else str(path))
    text = dumps(run)
    if path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    write_atomically(os.fspath(path), lambda f: f.write(text.encode()), "benchmark run")


def load_run(path):
    """The run saved at path, validated; ValueError naming the file and the field."""
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
        if size > MAX_RUN_BYTES:
            raise ValueError(f"{path}: {size} bytes is too large for a saved run "
                             f"(at most {MAX_RUN_BYTES})")
        with open(path, "rb") as f:
            data = f.read(MAX_RUN_BYTES + 1)
    except OSError as e:
        raise ValueError(f"cannot read saved run {path}: {e.strerror or e}") from None
    try:
        run = json.loads(data, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{path}: not a saved run: not JSON ({e})") from None
    return validate_run(run, path)


def _no_constant(name):
    raise ValueError(f"{name} is not a number JSON allows")


class _Bad(ValueError):
    pass


def validate_run(run, source):
    """run itself when it follows the schema; else ValueError "source: field: problem"."""
    try:
        _check_run(run)
    except _Bad as e:
        raise ValueError(f"{source}: {e}") from None
    return run


def _fail(field, problem):
    raise _Bad(f"{field}: {problem}")


def _check_run(run):
    if not isinstance(run, dict):
        raise _Bad(f"a saved run is a JSON object, not {type(run).__name__}")
    if run.get("schema") != SCHEMA:
        _fail("schema", f"{run.get('schema')!r} is not {SCHEMA!r} (not a saved run, or "
                        "one from another version of mininet)")
    _field(run, "created", str, "run")
    try:
        datetime.datetime.fromisoformat(run["created"])
    except ValueError:
        _fail("created", f"{run['created']!r} is not an ISO-8601 time")
    command = _field(run, "command", list, "run")
    if not all(isinstance(a, str) for a in command):
        _fail("command", "must be a list of strings")
    if not _field(run, "benchmark", str, "run"):
        _fail("benchmark", "is empty")
    machine = _field(run, "machine", dict, "run")
    _field(machine, "cpu_model", str, "machine")
    if _field(machine, "cores", int, "machine") < 1:
        _fail("machine.cores", "must be at least 1")
    if not all(isinstance(f, str) for f in _field(machine, "isa_flags", list, "machine")):
        _fail("machine.isa_flags", "must be a list of strings")
    _field(machine, "caches", dict, "machine")
    software = _field(run, "software", dict, "run")
    for key in ("mininet", "numpy", "blas", "python", "compiler_flags"):
        _field(software, key, str, "software")
    for key in ("commit", "torch"):
        _field(software, key, (str, type(None)), "software")
    cases = _field(run, "cases", list, "run")
    if not cases:
        _fail("cases", "no cases")
    names = set()
    for i, case in enumerate(cases):
        _check_case(case, f"cases[{i}]")
        if case["name"] in names:
            _fail(f"cases[{i}].name", f"{case['name']!r} appears twice")
        names.add(case["name"])


def _field(obj, key, kind, where):
    where = "" if where == "run" else where + "."
    if key not in obj:
        _fail(f"{where}{key}", "missing")
    value = obj[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        names = " or ".join(_KIND.get(k, k.__name__) for k in kinds)
        _fail(f"{where}{key}", f"must be {names}, got {_describe(value)}")
    return value


_KIND = {str: "a string", int: "an integer", float: "a number", list: "a list",
         dict: "an object", type(None): "null"}


def _describe(value):
    text = json.dumps(value) if not isinstance(value, (dict, list)) else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_case(case, where):
    if not isinstance(case, dict):
        _fail(where, f"must be an object, got {_describe(case)}")
    if not _field(case, "name", str, where):
        _fail(f"{where}.name", "is empty")
    _field(case, "impl", str, where)
    _field(case, "params", dict, where)
    threads = _field(case, "threads", (int, type(None)), where)
    if threads is not None and threads < 1:
        _fail(f"{where}.threads", f"must be at least 1 (or null), got {threads}")
    samples = _field(case, "samples", list, where)
    if not samples:
        _fail(f"{where}.samples", "no samples")
    for j, s in enumerate(samples):
        if not _number(s) or s <= 0:
            _fail(f"{where}.samples[{j}]",
                  f"must be a positive number of seconds, got {_describe(s)}")
    for key in ("median", "q1", "q3", "best"):
        value = case.get(key)
        if key not in case:
            _fail(f"{where}.{key}", "missing")
        if not _number(value) or value <= 0:
            _fail(f"{where}.{key}", f"must be a positive number of seconds, got {_describe(value)}")
    if not case["best"] <= case["q1"] <= case["median"] <= case["q3"]:
        _fail(where, "best <= q1 <= median <= q3 does not hold")
    for key in ("flops", "nbytes", "peak_rss_mb"):
        value = _field(case, key, (int, float, type(None)), where)
        if value is not None and (not math.isfinite(value) or value < 0):
            _fail(f"{where}.{key}", f"must be a number >= 0 or null, got {_describe(value)}")
