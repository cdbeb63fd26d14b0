"""safetensors files (the Hugging Face format): save_file, load_file, load_metadata.

Layout: an 8-byte little-endian header length N, N bytes of UTF-8 JSON
{name: {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, ...,
"__metadata__": {str: str}}, then the data: every tensor C-contiguous and little-endian,
offsets relative to the data's start, covering it without gaps or overlaps.

Loading reads the header within bounds (DESIGN rule 10) and refuses, naming the file, the
malformed files the reference implementation refuses, and duplicate names besides. The
tensors are then, by default, views over a private (copy-on-write) memory map of the
file: nothing is copied or read until used, a write to a tensor stays in this process,
and the map lives as long as any of its tensors (truncating the file in place meanwhile
would fault on access, as with any map; save_file renames, which is safe). mmap=False
reads each tensor once into its own buffer instead and keeps no map.
"""
from __future__ import annotations

import json
import math
import mmap as _mmap
import os
import struct
import sys
from typing import Any, Mapping, TYPE_CHECKING

import numpy as np

from ..autograd import Tensor
from ..backend import cpu, get_device
from ..ndarray import NDArray, bool_, float32, int64
from .atomic import write_atomically

if TYPE_CHECKING:
    from ..backend._typing import DeviceLike

MAX_HEADER = 100_000_000   # the reference implementation's limit
MAX_DIMS = 64

NATIVE = {"F32": np.dtype("<f4"), "F64": np.dtype("<f8"), "I64": np.dtype("<i8")}
# loaded as a converted copy: smaller integers as int64, half floats as float32, and bools
# as bool (a copy too: a byte other than 0 or 1 in the file becomes True, never a bool that
# reads as neither)
CONVERTED = {"BOOL": (np.dtype("|b1"), bool_), "U8": (np.dtype("|u1"), int64),
             "I8": (np.dtype("|i1"), int64), "I16": (np.dtype("<i2"), int64),
             "U16": (np.dtype("<u2"), int64), "I32": (np.dtype("<i4"), int64),
             "U32": (np.dtype("<u4"), int64), "F16": (np.dtype("<f2"), float32),
             "BF16": (np.dtype("<u2"), float32)}
# valid in the format, not loadable here (an U64 may not fit an int64)
REFUSED = {"U64", "C64", "F8_E5M2", "F8_E4M3", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4"}
# what save_file writes for each numpy dtype (little-endian)
CODES = {"<f4": "F32", "<f8": "F64", "<i8": "I64", "<i4": "I32", "<i2": "I16", "|i1": "I8",
         "|u1": "U8", "<u2": "U16", "<u4": "U32", "<u8": "U64", "<f2": "F16", "|b1": "BOOL"}
LITTLE = sys.byteorder == "little"


class SafetensorsError(ValueError):
    """A file that is not a valid safetensors file; the message names it."""


# saving --------------------------------------------------------------------------------------
def save_file(tensors: Mapping[str, Any], path: str | os.PathLike[str],
              metadata: dict[str, str] | None = None) -> None:
    """Write {name: Tensor, NDArray or numpy array} to path, with optional metadata
    {str: str}: to a temp file in the same folder, then renamed over path."""
    if metadata is not None and not (isinstance(metadata, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())):
        raise TypeError(f"save_file: metadata must map strings to strings, got {metadata!r}")
    arrays = [(name, _host_array(name, value)) for name, value in tensors.items()]
    arrays.sort(key=lambda e: (-e[1].dtype.itemsize, e[0]))   # keeps every tensor aligned
    header: dict[str, Any]
    header, pos = {}, 0
    if metadata:
        header["__metadata__"] = dict(metadata)
    for name, arr in arrays:
        header[name] = {"dtype": CODES[arr.dtype.str], "shape": list(arr.shape),
                        "data_offsets": [pos, pos + arr.nbytes]}
        pos += arr.nbytes
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)   # the data starts 8-byte aligned, as the reference pads
    chunks = [struct.pack("<Q", len(text)), text] + [arr for _, arr in arrays]
    write_atomically(os.fspath(path), lambda f: f.writelines(chunks),
                     "safetensors file")


def _host_array(name, value):
    """A C-contiguous little-endian numpy array of value; a view for compact CPU arrays."""
    if not isinstance(name, str) or name == "__metadata__":
        raise ValueError(f"save_file: tensor names are strings other than '__metadata__', "
                         f"got {name!r}")
    if isinstance(value, Tensor):
        value = value.cached_data
    if isinstance(value, NDArray):
        arr = value.device.array_view(value.compact()) if value.device.has("share_host") \
            else value.numpy()
    elif isinstance(value, np.ndarray):
        arr = value
    else:
        raise TypeError(f"save_file: {name!r} is a {type(value).__name__}, not a Tensor, "
                        "NDArray or numpy array")
    little = arr.dtype.newbyteorder("<")
    if little.str not in CODES:
        raise TypeError(f"save_file: {name!r} has dtype {arr.dtype}, which safetensors "
                        f"files do not hold")
    return np.asarray(arr, dtype=little, order="C")   # (ascontiguousarray makes 0-d 1-d)


# loading -------------------------------------------------------------------------------------
def load_file(path: str | os.PathLike[str], device: DeviceLike = None,
              mmap: bool = True) -> dict[str, Tensor]:
    """{name: Tensor} of a safetensors file, in the order of their data, each of the shape
    its header records. F32, F64 and I64
    are loaded as they are (mmap=True: views over the file's private map, no copy;
    mmap=False: one read into a buffer each); BOOL becomes bool, U8-U32, I8-I32 int64 and
    F16, BF16 float32 (a copy). device: put them there (a copy off the CPU)."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            entries, _, start = _read_header(f, path)
            data = _map(f, path, start) if mmap and entries else None
            arrays = {e[0]: _load(f, path, data, start, *e) for e in entries}
    except OSError as e:
        raise OSError(f"cannot read safetensors file {path}: {e.strerror or e}") from None
    device = get_device(device) if device is not None else None
    return {name: Tensor.make_const(a if device in (None, a.device) else a.to(device))
            for name, a in arrays.items()}


def load_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The file's __metadata__ ({} when it has none), its header checked as load_file's."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            return _read_header(f, path)[1]
    except OSError as e:
        raise OSError(f"cannot read safetensors file {path}: {e.strerror or e}") from None


def _bad(path, why):
    raise SafetensorsError(f"safetensors file {path}: {why}")


def _read_header(f, path):
    """(entries sorted by offset, metadata, byte position of the data) after every check."""
    size = os.fstat(f.fileno()).st_size
    if size < 8:
        _bad(path, f"{size} bytes, too short (it starts with an 8-byte header length)")
    (n,) = struct.unpack("<Q", f.read(8))
    if n > MAX_HEADER:
        _bad(path, f"header length {n} is over the {MAX_HEADER}-byte limit")
    if n > size - 8:
        _bad(path, f"header length {n} runs past the end of the file ({size} bytes)")
    raw = f.read(n)
    if len(raw) != n:
        _bad(path, "the file ended inside the header (truncated while being read?)")
    header = _parse(raw, path)
    metadata = header.pop("__metadata__", None)
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        _bad(path, f"__metadata__ must map strings to strings, got {_short(metadata)}")
    return _entries(header, size - 8 - n, path), metadata, 8 + n


def _parse(raw, path):
    def pairs(items):
        out = {}
        for k, v in items:
            if k in out:
                raise ValueError(f"duplicate name {k!r}")
            out[k] = v
        return out

    def constant(name):
        raise ValueError(f"{name} is not JSON")

    why = None
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=pairs, parse_constant=constant)
    except UnicodeDecodeError:
        why = "the header is not UTF-8 text"
    except (ValueError, RecursionError) as e:   # JSONDecodeError is a ValueError
        why = f"the header is not valid JSON ({_short(str(e) or type(e).__name__)})"
    if why is not None:   # raised here, not in the handler, so no JSON traceback is chained
        _bad(path, why)
    if not isinstance(header, dict):
        _bad(path, f"the header is a JSON {type(header).__name__}, not an object")
    return header


def _entries(header, data_size, path):
    entries = []
    for name, info in header.items():
        code, shape, (begin, end) = _entry(name, info, data_size, path)
        entries.append((name, code, shape, begin, end))
    entries.sort(key=lambda e: (e[3], e[4]))
    pos, prev = 0, None
    for name, _, _, begin, end in entries:
        if begin < pos:
            _bad(path, f"tensor {name!r} (bytes [{begin}, {end})) overlaps tensor {prev!r}")
        if begin > pos:
            _bad(path, f"bytes [{pos}, {begin}) of the data belong to no tensor (the data "
                       "must be covered without gaps)")
        pos, prev = end, name
    if pos != data_size:
        _bad(path, f"the tensors cover {pos} of the {data_size} data bytes")
    return entries


def _entry(name, info, data_size, path):
    what = f"tensor {name!r}"
    if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= info.keys():
        _bad(path, f"{what}: needs dtype, shape and data_offsets, got {_short(info)}")
    code, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(code, str) or (code not in NATIVE and code not in CONVERTED):
        if code in REFUSED:
            _bad(path, f"{what}: dtype {code} is not supported (mininet loads F32, F64, I64 "
                       f"and converts {', '.join(CONVERTED)})")
        _bad(path, f"{what}: unknown dtype {_short(code)}")
    if not _ints(shape) or len(shape) > MAX_DIMS:
        _bad(path, f"{what}: shape must be a list of at most {MAX_DIMS} integers >= 0, "
                   f"got {_short(shape)}")
    if not _ints(offsets) or len(offsets) != 2:
        _bad(path, f"{what}: data_offsets must be two integers >= 0, got {_short(offsets)}")
    begin, end = offsets
    if begin > end:
        _bad(path, f"{what}: data_offsets [{begin}, {end}] run backwards")
    if end > data_size:
        _bad(path, f"{what}: data_offsets [{begin}, {end}] lie outside the data ({data_size} bytes)")
    if math.prod(max(d, 1) for d in shape) > 2 ** 62:
        _bad(path, f"{what}: shape {shape} is too large")
    nbytes = math.prod(shape) * _itemsize(code)
    if nbytes != end - begin:
        _bad(path, f"{what}: shape {shape} of {code} is {nbytes} bytes, but data_offsets "
                   f"[{begin}, {end}] hold {end - begin}")
    return code, tuple(shape), (begin, end)


def _ints(x):
    return isinstance(x, list) and all(type(v) is int and v >= 0 for v in x)


def _itemsize(code):
    return NATIVE[code].itemsize if code in NATIVE else CONVERTED[code][0].itemsize


def _short(x, limit=80):
    text = repr(x)
    return text if len(text) <= limit else text[:limit] + "..."


def _map(f, path, start):
    """A private writable map of the whole file: writes stay in this process."""
    data = _mmap.mmap(f.fileno(), 0, access=_mmap.ACCESS_COPY)
    if len(data) != os.fstat(f.fileno()).st_size or len(data) < start:
        _bad(path, "the file changed size while being read")
    return data


def _load(f, path, data, start, name, code, shape, begin, end):
    """NDArray of one checked entry: a view over the map when the dtype is native and its
    bytes are aligned, else one read (and a conversion for the other dtypes)."""
    if code in NATIVE:
        dtype = NATIVE[code].newbyteorder("=")
        if end == begin:
            return NDArray.make(shape, dtype=dtype)
        if LITTLE and data is not None and (start + begin) % dtype.itemsize == 0:
            raw = np.frombuffer(data, dtype=np.uint8, count=end - begin, offset=start + begin)
            return NDArray.make(shape, handle=cpu().share(raw), dtype=dtype)
        if LITTLE:
            out = NDArray.make(shape, dtype=dtype)
            _read_into(f, path, start + begin, memoryview(out.handle), data)
            return out
    raw = np.empty(end - begin, dtype=np.uint8)
    _read_into(f, path, start + begin, memoryview(raw), data)
    return NDArray(_convert(raw, code, shape))


def _read_into(f, path, pos, view, data):
    """view[:] = the file's bytes from pos (from the map when there is one)."""
    if data is not None:
        np.frombuffer(view, dtype=np.uint8)[:] = np.frombuffer(data, np.uint8, len(view), pos)
        return
    f.seek(pos)
    got = 0
    while got < len(view):
        n = f.readinto(view[got:])
        if not n:
            _bad(path, "the file ended inside the data (truncated while being read?)")
        got += n


def _convert(raw, code, shape):
    if code in NATIVE:   # a big-endian machine
        return raw.view(NATIVE[code]).astype(NATIVE[code].newbyteorder("=")).reshape(shape)
    src, dst = CONVERTED[code]
    if code == "BF16":   # the high half of a float32
        return (raw.view(src).astype(np.uint32) << 16).view(np.float32).reshape(shape)
    if code == "BOOL":
        return (raw != 0).reshape(shape)
    return raw.view(src).astype(dst).reshape(shape)
