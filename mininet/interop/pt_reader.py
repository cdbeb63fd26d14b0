"""PyTorch's .pt files (torch.save's zip format), read and written without PyTorch.

The format (PyTorch 1.6 on): a zip archive whose entries share one top folder
(`archive/`): `data.pkl`, a pickle (protocol 2) of the saved object, in which a tensor is
torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
backward_hooks[, metadata]) (offset, size and stride in elements) and a storage is the
persistent id ("storage", torch.FloatStorage, key, location, numel), its bytes the entry
`data/<key>`, stored uncompressed and 64-byte aligned; `byteorder` ("little" or "big"),
`version` and a few more records beside.

read_pt reads a state dict ({name: tensor}) as a file from anywhere deserves (DESIGN rule
10). Its pickle runs in a restricted unpickler: it makes dicts (string keys only, so no
keys of one hash), lists, tuples, strings and numbers; its only globals are
collections.OrderedDict, torch's tensor and parameter rebuild functions and the storage
types, and any other (os.system, say) is refused by name before it is looked up, so
nothing in the file runs; its opcodes are counted. Every storage must be an entry of
exactly its declared size and every tensor's elements must lie inside its storage; the
zip's directory and the pickle are bounded, and so are the copies made (4x the file's
size + 64 MB), whatever the file declares. C-contiguous tensors are views over a private
(copy-on-write) memory map of the file: nothing is copied or read until used (nor are the
storages' CRCs checked, as torch.load does not check them). Others are
copied to C order; float16 and bfloat16 become float32, smaller integers and bools int64
(a copy each, and a note). Refused with a message saying so: the legacy format (a bare
pickle stream, from PyTorch before 1.6 or _use_new_zipfile_serialization=False) and
TorchScript archives (torch.jit.save).

write_pt writes {name: array} as torch.save writes a state dict; torch.load reads it,
with weights_only=True too.
"""
import io
import math
import mmap as _mmap
import os
import pickle
import pickletools
import stat
import struct
import zipfile
from collections import Counter, OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..autograd import Tensor
from ..ndarray import NDArray
from .atomic import write_atomically

MAX_PICKLE_BYTES = 64 << 20   # data.pkl: ~150 bytes a tensor
MAX_OPCODES = 2_000_000       # ~25 a tensor
MAX_CENTRAL_DIR = 8 << 20     # the zip's directory: ~70 bytes a storage (zipfile makes an
                              # object of ~500 bytes for each record, 46 bytes at least)
MAX_DIMS = 64
MAX_INDEX = 1 << 62           # sizes, strides, offsets and element counts
COPY_SLACK = 64 << 20
ALIGNMENT = 64                # where write_pt puts each storage, as torch.save does


class PtError(ValueError):
    """A file read_pt refuses; the message names it and what is wrong with it."""


class _StorageType:
    """torch.FloatStorage and its kin: the dtype in the file and the one read_pt returns."""
    __slots__ = ("name", "file", "out")

    def __init__(self, name, file, out):
        self.name, self.file, self.out = name, np.dtype(file), np.dtype(out)


STORAGES = {t.name: t for t in (
    _StorageType("FloatStorage", "f4", "f4"), _StorageType("DoubleStorage", "f8", "f8"),
    _StorageType("LongStorage", "i8", "i8"), _StorageType("HalfStorage", "f2", "f4"),
    _StorageType("BFloat16Storage", "u2", "f4"),   # the high halves of float32s
    _StorageType("IntStorage", "i4", "i8"), _StorageType("ShortStorage", "i2", "i8"),
    _StorageType("CharStorage", "i1", "i8"), _StorageType("ByteStorage", "u1", "i8"),
    _StorageType("BoolStorage", "u1", "b1"))}   # any nonzero byte is True
WRITTEN = {"f4": "FloatStorage", "f8": "DoubleStorage", "i8": "LongStorage", "f2": "HalfStorage",
           "i4": "IntStorage", "i2": "ShortStorage", "i1": "CharStorage", "u1": "ByteStorage",
           "b1": "BoolStorage"}


class _Storage:
    __slots__ = ("key", "type", "numel", "info")

    def __init__(self, key, stype, numel, info):
        self.key, self.type, self.numel, self.info = key, stype, numel, info


class _TensorRef:
    """A tensor as the pickle describes it, checked against its storage; no data yet."""
    __slots__ = ("storage", "offset", "shape", "stride")

    def __init__(self, storage, offset, shape, stride):
        self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride


def _short(value, limit=60):
    """An untrusted value in a few characters (no decimal conversion of a huge integer)."""
    if type(value) is int and value.bit_length() > 64:
        return f"<an integer of {value.bit_length()} bits>"
    if type(value) in (str, int, float, bool) or value is None:
        text = repr(value)
        return text if len(text) <= limit else text[:limit] + "..."
    return f"a {type(value).__name__}"


def _plain(text, limit=60):
    """A name from the file, as it is when short and printable."""
    return text if len(text) <= limit and text.isprintable() else repr(text[:limit]) + "..."


# reading -------------------------------------------------------------------------------------
def read_pt(path: str | os.PathLike[str], notes: list[str] | None = None) -> "OrderedDict[str, np.ndarray]":
    """{name: numpy array} of the state dict a torch.save file holds, in the file's order
    (see the module's docstring for what is read, and how). notes: a list that receives a
    line for each conversion made (bfloat16 to float32, ...)."""
    path = os.fspath(path)
    with _open_regular(path) as f:
        try:
            archive = _Archive(path, f)
            refs = archive.load_refs()
            arrays = OrderedDict((name, archive.array(name, ref)) for name, ref in refs.items())
        except PtError:
            raise
        except (zipfile.BadZipFile, zipfile.LargeZipFile, pickle.UnpicklingError, EOFError,
                OSError, ValueError, TypeError, KeyError, IndexError, AttributeError,
                OverflowError, NotImplementedError, RuntimeError, struct.error,
                RecursionError) as e:
            why = " ".join(str(e).split())[:200]
            raise PtError(f"{path}: not a valid torch.save file ({type(e).__name__}: "
                          f"{why})") from None
    if notes is not None:
        notes.extend(f"{path}: {n}" for n in archive.notes())
    return arrays


def _open_regular(path):
    """The file, opened without blocking on a FIFO, refused unless a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise OSError(f"cannot read .pt file {path}: {e.strerror or e}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        raise PtError(f"{path}: {kind}, not a .pt file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


class _Archive:
    """The zip of a .pt file, checked: one top folder, data.pkl, storages by key."""

    def __init__(self, path, f):
        self.path, self.f = path, f
        self.size = os.fstat(f.fileno()).st_size
        self.limit = self.budget = 4 * self.size + COPY_SLACK
        self.map, self.storages, self.buffers = None, {}, {}
        self.converted = Counter()
        _check_container(path, f, self.size)
        self.zip = zipfile.ZipFile(f)
        self.infos = {i.filename: i for i in self.zip.infolist()}
        if len(self.infos) != len(self.zip.infolist()):
            self.fail("the zip archive names an entry twice")
        self.top = self._top_folder()
        self.little = self._byte_order()

    def fail(self, why):
        raise PtError(f"{self.path}: {why}")

    def _top_folder(self):
        names = list(self.infos)
        if not names:
            self.fail("an empty zip archive, not a torch.save file")
        top = names[0].split("/", 1)[0] + "/"
        if top == "/" or not all(n.startswith(top) for n in names):
            self.fail("the zip's entries do not share one top folder, as torch.save writes them")
        if top + "constants.pkl" in self.infos or any(n.startswith(top + "code/") for n in names):
            self.fail("a TorchScript archive (torch.jit.save), not a torch.save file: save its "
                      "state_dict() with torch.save")
        if top + "data.pkl" not in self.infos:
            self.fail(f"no {top}data.pkl entry: not written by torch.save")
        return top

    def _byte_order(self):
        info = self.infos.get(self.top + "byteorder")
        if info is None:
            return True   # files from before the record are little-endian (torch assumes so)
        order = self.zip.read(info) if info.file_size <= 16 else b"?"
        if order not in (b"little", b"big"):
            self.fail(f"byteorder record {_short(order[:16].decode('latin-1'))} is neither "
                      "'little' nor 'big'")
        return order == b"little"

    # the pickle ----------------------------------------------------------------------------
    def load_refs(self):
        """{name: _TensorRef} of data.pkl, through the restricted unpickler."""
        info = self.infos[self.top + "data.pkl"]
        if info.file_size > MAX_PICKLE_BYTES:
            self.fail(f"data.pkl is {info.file_size:,} bytes, over the {MAX_PICKLE_BYTES:,}-byte "
                      "limit (a state dict's is ~150 bytes a tensor)")
        top = _StateUnpickler(self.zip.read(info), self).load()
        if type(top) not in (dict, OrderedDict):
            what = "a tensor" if type(top) is _TensorRef else _short(top)
            self.fail(f"holds {what}, not a state dict: read_pt reads what "
                      "torch.save(model.state_dict(), path) writes")
        for name, value in top.items():
            if type(value) is not _TensorRef:
                self.fail(f"entry {_short(name)} holds {_short(value)}, not a tensor: read_pt "
                          "reads a state dict (name -> tensor), as torch.save(model.state_dict(), "
                          "path) writes it")
        return top

    def storage(self, key, stype, numel):
        """The storage `key` of numel elements of stype: its entry must hold exactly that."""
        if type(key) is not str:
            self.fail(f"a storage key is {_short(key)}, not a string")
        known = self.storages.get(key)
        if known is not None:
            if known.type is not stype or known.numel != numel:
                self.fail(f"storage {_short(key)} is declared twice, with different types or sizes")
            return known
        info = self.infos.get(f"{self.top}data/{key}")
        if info is None:
            self.fail(f"storage {_short(key)} has no entry {self.top}data/{_plain(key)}")
        nbytes = numel * stype.file.itemsize
        if info.file_size != nbytes:
            self.fail(f"storage {_short(key)} declares {numel:,} elements of torch.{stype.name} "
                      f"({nbytes:,} bytes), but its entry holds {info.file_size:,} bytes")
        storage = self.storages[key] = _Storage(key, stype, numel, info)
        return storage

    # the data ------------------------------------------------------------------------------
    def charge(self, nbytes, what):
        self.budget -= nbytes
        if self.budget < 0:
            self.fail(f"{what} takes the copies made while reading past {self.limit:,} bytes, "
                      f"what a file of {self.size:,} bytes may make (4x its size + 64 MB)")

    def array(self, name, ref):
        """The tensor as a C-contiguous numpy array: a view over the file's map when it is
        one there and needs no conversion, else a copy."""
        base = self._buffer(ref.storage)
        shape, item = ref.shape, base.dtype.itemsize
        numel = math.prod(shape)
        if numel == 0:
            out = np.empty(shape, base.dtype)
        elif _c_contiguous(shape, ref.stride):
            out = base[ref.offset:ref.offset + numel].reshape(shape)
        else:
            self.charge(numel * item, f"tensor {_short(name)} (shape {shape}, strides "
                                      f"{ref.stride}), copied to C order,")
            view = np.lib.stride_tricks.as_strided(base[ref.offset:], shape,
                                                   tuple(s * item for s in ref.stride),
                                                   writeable=False)
            out = np.ascontiguousarray(view)
        return self._convert(name, ref.storage.type, out)

    def _convert(self, name, stype, a):
        native = stype.out.newbyteorder("=")
        if stype.file == stype.out and a.dtype == native:
            return a
        self.charge(a.size * native.itemsize, f"tensor {_short(name)} converted to {native}")
        if stype.file != stype.out:   # not a byte swap alone
            self.converted[stype.name] += 1
        if stype.name == "BFloat16Storage":
            return (a.astype(np.uint32) << 16).view(np.float32)
        return a.astype(native)

    def _buffer(self, storage):
        """The storage's elements as a 1-D array of its dtype in the file's byte order."""
        buf = self.buffers.get(storage.key)
        if buf is None:
            buf = self.buffers[storage.key] = self._read_storage(storage)
        return buf

    def _read_storage(self, s):
        dtype = s.type.file.newbyteorder("<" if self.little else ">")
        if s.numel == 0:
            return np.empty(0, dtype)
        start = self._data_start(s.info)
        if start is not None and start % dtype.itemsize == 0:
            return np.frombuffer(self._mapped(), dtype, count=s.numel, offset=start)
        nbytes = s.numel * dtype.itemsize
        self.charge(nbytes, f"storage {_short(s.key)} (compressed or unaligned, so read)")
        out = np.empty(s.numel, dtype)
        view = memoryview(out).cast("B")
        with self.zip.open(s.info) as src:
            got = 0
            while got < nbytes:
                n = src.readinto(view[got:])
                if not n:
                    self.fail(f"the entry of storage {_short(s.key)} ended early (truncated?)")
                got += n
        return out

    def _data_start(self, info):
        """Where an uncompressed entry's bytes start in the file (None if compressed)."""
        if info.flag_bits & 1:
            self.fail(f"entry {info.filename} is encrypted")
        if info.compress_type != zipfile.ZIP_STORED:
            return None
        if info.compress_size != info.file_size:
            self.fail(f"entry {info.filename} is stored uncompressed, but its compressed and "
                      f"uncompressed sizes differ ({info.compress_size}, {info.file_size})")
        self.f.seek(info.header_offset)
        header = self.f.read(30)
        if len(header) != 30 or header[:4] != b"PK\x03\x04":
            self.fail(f"the local header of entry {info.filename} is missing or corrupt")
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        start = info.header_offset + 30 + name_len + extra_len
        if start + info.file_size > self.size:
            self.fail(f"entry {info.filename} ({info.file_size:,} bytes from byte {start:,}) runs "
                      f"past the end of the file ({self.size:,} bytes)")
        return start

    def _mapped(self):
        if self.map is None:
            self.map = _mmap.mmap(self.f.fileno(), 0, access=_mmap.ACCESS_COPY)
            if len(self.map) != self.size:
                self.fail("the file changed size while being read")
        return self.map

    def notes(self):
        return [f"{n} torch.{name} tensor{'s' * (n > 1)} converted to "
                f"{STORAGES[name].out.name} (mininet holds float32, float64 and int64)"
                for name, n in self.converted.items() if n]


def _c_contiguous(shape, stride):
    expected = 1
    for size, st in zip(reversed(shape), reversed(stride)):
        if size != 1 and st != expected:
            return False
        expected *= size
    return True


def _check_container(path, f, size):
    """Refuse, with what the file is, anything but a zip within the directory limits."""
    head = f.read(512)
    if not head:
        raise PtError(f"{path}: an empty file, not a .pt file")
    if len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5:
        raise PtError(f"{path}: the legacy torch.save format (a pickle stream, written before "
                      "PyTorch 1.6 or with _use_new_zipfile_serialization=False), which is not "
                      "read: re-save it with torch.save in a current PyTorch")
    if head[257:262] == b"ustar":
        raise PtError(f"{path}: a tar archive (PyTorch's oldest torch.save format), which is not "
                      "read: re-save it with torch.save in a current PyTorch")
    entries, cd_size = _central_directory(f, size)
    if entries is None:
        why = ("a zip archive without its end record (truncated?)" if head[:4] == b"PK\x03\x04"
               else "not a zip archive, so not a file torch.save writes")
        raise PtError(f"{path}: {why}")
    if cd_size > MAX_CENTRAL_DIR:
        raise PtError(f"{path}: the zip's directory is {cd_size:,} bytes ({entries:,} entries), "
                      f"over the {MAX_CENTRAL_DIR:,}-byte limit")


def _central_directory(f, size):
    """(entries, directory bytes) from the zip's end record (zip64's when it has one), or
    (None, None) when there is no end record."""
    tail_len = min(size, 22 + 65535)
    f.seek(size - tail_len)
    tail = f.read(tail_len)
    pos = tail.rfind(b"PK\x05\x06")
    if pos < 0 or pos + 22 > len(tail):
        return None, None
    entries, cd_size, cd_offset = struct.unpack("<xxxxxxxxxxHLL", tail[pos:pos + 20])
    if entries == 0xFFFF or cd_size == 0xFFFFFFFF or cd_offset == 0xFFFFFFFF:
        loc = tail[pos - 20:pos] if pos >= 20 else b""
        if loc[:4] == b"PK\x06\x07":
            (where,) = struct.unpack("<Q", loc[8:16])
            if where + 56 <= size:
                f.seek(where)
                record = f.read(56)
                if record[:4] == b"PK\x06\x06":
                    entries, cd_size = struct.unpack("<QQ", record[32:48])
    return entries, cd_size


class _Call:
    """A function the pickle may call (through REDUCE), with its arity."""
    __slots__ = ("name", "fn", "least", "most")

    def __init__(self, name, fn, least, most):
        self.name, self.fn, self.least, self.most = name, fn, least, most


def _index(u, value, what, least=0):
    if type(value) is not int or not least <= value <= MAX_INDEX:
        u.fail(f"{what} is {_short(value)}, not an integer in [{least}, 2**62]")
    return value


def _ints(u, value, what):
    if type(value) not in (tuple, list) or len(value) > MAX_DIMS:
        u.fail(f"{what} is {_short(value)}, not a tuple of at most {MAX_DIMS} integers")
    return tuple(_index(u, v, f"{what} entry") for v in value)


def _rebuild_tensor(u, storage, offset, size, stride, requires_grad, hooks, metadata=None):
    """torch._utils._rebuild_tensor_v2, checked: the tensor's elements in its storage."""
    if type(storage) is not _Storage:
        u.fail(f"a tensor's storage is {_short(storage)}, not a storage")
    what = f"a tensor of storage {_short(storage.key)}"
    offset = _index(u, offset, f"{what}: storage offset")
    shape, strides = _ints(u, size, f"{what}: size"), _ints(u, stride, f"{what}: stride")
    if len(shape) != len(strides):
        u.fail(f"{what}: size {shape} and stride {strides} differ in length")
    if type(requires_grad) is not bool or type(hooks) not in (dict, OrderedDict):
        u.fail(f"{what}: requires_grad {_short(requires_grad)} and backward hooks "
               f"{_short(hooks)} are not a bool and a dict")
    numel = 1
    for n in shape:
        numel *= n
        if numel > MAX_INDEX:
            u.fail(f"{what}: size {shape} is too large")
    last = offset + sum((n - 1) * s for n, s in zip(shape, strides)) if numel else offset - 1
    if last >= storage.numel:
        u.fail(f"{what}: size {shape}, stride {strides} and offset {offset} reach element "
               f"{last:,}, past the storage's {storage.numel:,}")
    return _TensorRef(storage, offset, shape, strides)


def _rebuild_parameter(u, data, requires_grad, hooks, state=None):
    if type(data) is not _TensorRef:
        u.fail(f"a parameter's data is {_short(data)}, not a tensor")
    return data


def _ordered_dict(u):
    return OrderedDict()


GLOBALS = {("collections", "OrderedDict"): _Call("collections.OrderedDict", _ordered_dict, 0, 0),
           ("torch._utils", "_rebuild_tensor_v2"):
               _Call("torch._utils._rebuild_tensor_v2", _rebuild_tensor, 6, 7),
           ("torch._utils", "_rebuild_parameter"):
               _Call("torch._utils._rebuild_parameter", _rebuild_parameter, 3, 3),
           ("torch._utils", "_rebuild_parameter_with_state"):
               _Call("torch._utils._rebuild_parameter_with_state", _rebuild_parameter, 4, 4)}

# opcodes run as the pure-Python unpickler runs them; the others below are replaced by
# checked versions, and every opcode not named is refused
PLAIN = ("PROTO", "FRAME", "STOP", "MARK", "POP", "POP_MARK", "NONE", "NEWTRUE", "NEWFALSE",
         "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT",
         "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "SHORT_BINBYTES", "BINBYTES",
         "BINBYTES8", "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "EMPTY_LIST", "LIST",
         "EMPTY_DICT", "BINPUT", "LONG_BINPUT", "MEMOIZE", "BINGET", "LONG_BINGET", "GLOBAL",
         "STACK_GLOBAL", "BINPERSID")   # not PUT and GET: their memo keys are text integers of
                                        # any size, so keys of one hash would be possible
_CODES = {op.name: op.code.encode("latin-1")[0] for op in pickletools.opcodes}


class _StateUnpickler(pickle._Unpickler):
    """The pure-Python unpickler (its opcodes can be replaced, the C one's cannot) with
    the opcodes a state dict needs, globals from GLOBALS and STORAGES only, string dict
    keys and at most MAX_OPCODES opcodes."""

    def __init__(self, raw, archive):
        super().__init__(io.BytesIO(raw))
        self.archive, self.ops = archive, 0

    def fail(self, why):
        self.archive.fail(f"data.pkl: {why}")

    def find_class(self, module, name):
        found = GLOBALS.get((module, name))
        if found is not None:
            return found
        if module == "torch" and name.endswith("Storage"):
            if name in STORAGES:
                return STORAGES[name]
            self.fail(f"storage type torch.{_plain(name)} is not read (read_pt reads float, "
                      "integer and bool storages)")
        self.archive.fail(f"refuses to load global {_plain(module)}.{_plain(name)}: "
                          "only tensors and storages are read")

    def persistent_load(self, pid):
        if type(pid) is not tuple or len(pid) != 5 or pid[0] != "storage":
            self.fail(f"persistent id {_short(pid)} is not ('storage', type, key, location, numel)")
        _, stype, key, location, numel = pid
        if type(stype) is not _StorageType or type(location) is not str:
            self.fail(f"persistent id of storage {_short(key)}: {_short(stype)} is not a storage "
                      f"type, or {_short(location)} not a location")
        return self.archive.storage(key, stype, _index(self, numel, "a storage's numel"))

    # checked opcodes -------------------------------------------------------------------------
    def _reduce(self):
        args = self.stack.pop()
        call = self.stack[-1]
        if type(call) is not _Call:
            self.fail(f"calls {_short(call)}, which is not an admitted function")
        if type(args) is not tuple or not call.least <= len(args) <= call.most:
            self.fail(f"calls {call.name} with {_short(args)}")
        self.stack[-1] = call.fn(self, *args)

    def _build(self):
        state = self.stack.pop()
        if type(self.stack[-1]) not in (dict, OrderedDict) or type(state) is not dict:
            self.fail(f"sets the state of {_short(self.stack[-1])} (only a state dict's "
                      "metadata is set, and it is not needed)")

    def _dict(self, target, items):
        if type(target) not in (dict, OrderedDict):
            self.fail(f"puts items into {_short(target)}, not a dict")
        if len(items) % 2:
            self.fail("a dict's items are not key-value pairs")
        for i in range(0, len(items), 2):
            if type(items[i]) is not str:
                self.fail(f"a dict key is {_short(items[i])}, not a string")
            target[items[i]] = items[i + 1]

    def _setitem(self):
        value = self.stack.pop()
        key = self.stack.pop()
        self._dict(self.stack[-1], (key, value))

    def _setitems(self):
        items = self.pop_mark()
        self._dict(self.stack[-1], items)

    def _new_dict(self):
        items = self.pop_mark()
        self.append({})
        self._dict(self.stack[-1], items)

    def _append(self):
        value = self.stack.pop()
        self._list(self.stack[-1]).append(value)

    def _appends(self):
        items = self.pop_mark()
        self._list(self.stack[-1]).extend(items)

    def _list(self, target):
        if type(target) is not list:
            self.fail(f"appends to {_short(target)}, not a list")
        return target


def _counted(run):
    def op(self):
        self.ops += 1
        if self.ops > MAX_OPCODES:
            self.fail(f"more than {MAX_OPCODES:,} opcodes (a state dict has ~25 a tensor)")
        run(self)
    return op


def _refused(name):
    def op(self):
        self.fail(f"opcode {name} is not one a state dict needs: refused")
    return op


def _dispatch():
    names = {code: name for name, code in _CODES.items()}
    table = {code: _refused(names.get(code, f"0x{code:02x}")) for code in range(256)}
    base = pickle._Unpickler.dispatch
    for name in PLAIN:
        table[_CODES[name]] = _counted(base[_CODES[name]])
    checked = {"REDUCE": _StateUnpickler._reduce, "BUILD": _StateUnpickler._build,
               "SETITEM": _StateUnpickler._setitem, "SETITEMS": _StateUnpickler._setitems,
               "DICT": _StateUnpickler._new_dict, "APPEND": _StateUnpickler._append,
               "APPENDS": _StateUnpickler._appends}
    for name, run in checked.items():
        table[_CODES[name]] = _counted(run)
    return table


_StateUnpickler.dispatch = _dispatch()


# writing -------------------------------------------------------------------------------------
def write_pt(tensors: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Write {name: Tensor, NDArray or numpy array} as torch.save(state_dict, path) does
    (a zip of data.pkl and the storages, 64-byte aligned); atomically (a temp file renamed
    over path)."""
    arrays = [(name, _host_array(name, value)) for name, value in tensors.items()]
    write_atomically(os.fspath(path), lambda f: _write_zip(f, arrays), ".pt file")


def _host_array(name, value):
    if not isinstance(name, str):
        raise TypeError(f"write_pt: tensor names are strings, got {name!r}")
    if isinstance(value, Tensor):
        value = value.cached_data
    if isinstance(value, NDArray):
        value = value.numpy()
    if not isinstance(value, np.ndarray):
        raise TypeError(f"write_pt: {name!r} is a {type(value).__name__}, not a Tensor, NDArray "
                        "or numpy array")
    little = value.dtype.newbyteorder("<")
    if little.str[1:] not in WRITTEN:
        raise TypeError(f"write_pt: {name!r} has dtype {value.dtype}, which write_pt does not write")
    return np.asarray(value, dtype=little, order="C")


def _write_zip(f, arrays):
    top = "archive/"
    with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
        z.writestr(top + "data.pkl", _state_pickle(arrays))
        z.writestr(top + ".format_version", b"1")
        z.writestr(top + ".storage_alignment", str(ALIGNMENT).encode())
        z.writestr(top + "byteorder", b"little")
        for key, (_, arr) in enumerate(arrays):
            _write_aligned(z, f"{top}data/{key}", arr)
        z.writestr(top + "version", b"3\n")


def _write_aligned(z, name, arr):
    """One uncompressed entry whose data starts ALIGNMENT-aligned: the local header's extra
    field pads it (id 0x4246, as torch's writer pads)."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type, info.file_size = zipfile.ZIP_STORED, arr.nbytes
    zip64 = arr.nbytes * 1.05 > zipfile.ZIP64_LIMIT   # zipfile's rule: +20 header bytes
    header = 30 + len(name.encode()) + 4 + (20 if zip64 else 0)
    pad = -(z.fp.tell() + header) % ALIGNMENT
    info.extra = struct.pack("<HH", 0x4246, pad) + bytes(pad)
    with z.open(info, "w", force_zip64=zip64) as dst:
        dst.write(arr.reshape(-1).view(np.uint8).data)


def _state_pickle(arrays):
    """data.pkl of an OrderedDict of tensors, opcode by opcode (protocol 2, as torch)."""
    out = [b"\x80\x02", _global("collections", "OrderedDict"), b")R("]
    for key, (name, arr) in enumerate(arrays):
        storage = WRITTEN[arr.dtype.str[1:]]
        strides = [math.prod(arr.shape[i + 1:]) for i in range(arr.ndim)]
        out += [_text(name), _global("torch._utils", "_rebuild_tensor_v2"), b"((",
                _text("storage"), _global("torch", storage), _text(str(key)), _text("cpu"),
                _int(arr.size), b"tQ", _int(0), _tuple(arr.shape), _tuple(strides), b"\x89",
                _global("collections", "OrderedDict"), b")RtR"]
    out.append(b"u.")
    return b"".join(out)


def _global(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _text(s):
    raw = s.encode("utf-8", "surrogatepass")
    return b"X" + struct.pack("<I", len(raw)) + raw


def _int(n):
    if -2 ** 31 <= n < 2 ** 31:
        return b"J" + struct.pack("<i", n)
    raw = n.to_bytes(n.bit_length() // 8 + 1, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def _tuple(values):
    return b"(" + b"".join(_int(int(v)) for v in values) + b"t"
