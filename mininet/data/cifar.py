"""CIFAR-10 from the standard `cifar-10-batches-py` pickles (data_batch_1..5, test_batch),
found in --data-dir, else $MININET_CIFAR_DATA, else ~/.cache/mininet/cifar10; when
missing, the archive is downloaded (md5-verified) and unpacked atomically.

The pickles are read with an unpickler that admits only what numpy arrays need, so a
tampered file cannot run code, and within bounds set by the file's size: its opcodes are
counted and costed before any runs (pickletools), and every array or bytes object the
admitted callables make is charged as it is made."""
import io
import math
import os
import pickle
import pickletools
import reprlib
import sys
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .dataset import Dataset, pixels_to_float
from .errors import DataError
from .fetch import FetchError, dataset_dir, fetch, open_regular

FOLDER = "cifar-10-batches-py"
TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST = ("test_batch",)
ARCHIVE = "cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
MIRRORS = ("https://www.cs.toronto.edu/~kriz/",)
MAX_FILE_BYTES = 64 << 20   # a batch is 31 MB (46 MB written by Python 3 at protocol 2)
# A batch of 10,000 images is 30,000 opcodes (protocols 3-5, Python 2's cPickle), 90,000
# (protocol 2) or 120,000 (protocol 0); a file of MAX_FILE_BYTES, at most twice that.
MAX_OPCODES = 1 << 18
# dict and set entries in all (a batch has 4): keys of one hash (k * (2**61 - 1), or pairs
# of ints solved for one tuple hash) make each insertion cost as much as all before it
MAX_ENTRIES = 1024
# what an opcode's object costs beyond its argument: the object (up to 64 bytes), its
# slots on the stack and in a container, the allocator's rounding
OBJECT_BYTES = 96
MAX_DIMENSION = 1 << 40     # checked before the dimensions are multiplied


class CIFARError(DataError):
    """A missing, corrupt or unreadable CIFAR-10 file; the message names it."""


class _Repr(reprlib.Repr):
    """reprlib's, without converting a huge integer to decimal or copying a long bytes."""

    def repr_int(self, x, level):
        return f"<an integer of {x.bit_length()} bits>" if x.bit_length() > 64 else repr(x)

    def repr_bytes(self, x, level):
        return repr(x[:self.maxstring]) + ("..." if len(x) > self.maxstring else "")

    repr_bytearray = repr_bytes


_REPR = _Repr()


def _short(value):
    """An untrusted value, in a few characters on one line."""
    if type(value) is str and value.isprintable() and len(value) <= 60:
        return value
    return _REPR.repr(value)


class _Budget:
    """The bytes an unpickling may still materialise; charge() refuses going past them."""

    def __init__(self, limit):
        self.limit = self.left = limit

    def charge(self, nbytes, what):
        self.left -= nbytes
        if self.left < 0:
            raise pickle.UnpicklingError(f"{what} takes the pickle to more than the "
                                         f"{self.limit:,} bytes a batch file of its size may hold")


_MARK = pickletools.markobject
# the dict or set entries each object above its mark makes
_ENTRIES_PER_OBJECT = {"SETITEMS": 0.5, "DICT": 0.5, "ADDITEMS": 1, "FROZENSET": 1}


class _Stack:
    """The unpickler's stack as a depth and the depths of its marks, followed through each
    opcode's signature (pickletools), to count the entries put into dicts and sets."""

    def __init__(self):
        self.depth, self.marks, self.entries = 0, [], 0

    def step(self, op):
        """Follow op: take what it pops (all above the topmost mark, and the mark, for an
        opcode that takes one or a POP of a bare mark), then push what it makes."""
        before = op.stack_before
        if _MARK in before or (op.name == "POP" and self.marks and self.depth == self.marks[-1]):
            self._count(op, self._pop_mark(op) * _ENTRIES_PER_OBJECT.get(op.name, 0))
            before = before[:before.index(_MARK)] if _MARK in before else []
        elif op.name == "SETITEM":
            self._count(op, 1)
        self.depth -= len(before)
        if self.depth < (self.marks[-1] if self.marks else 0):
            raise pickle.UnpicklingError(f"{op.name} pops more than the stack holds")
        if _MARK in op.stack_after:
            self.marks.append(self.depth)
        else:
            self.depth += len(op.stack_after)

    def _pop_mark(self, op):
        """The number of objects above the topmost mark, which is taken off."""
        if not self.marks:
            raise pickle.UnpicklingError(f"{op.name} without a MARK")
        above, self.depth = self.depth - self.marks[-1], self.marks.pop()
        return above

    def _count(self, op, entries):
        self.entries += entries
        if self.entries > MAX_ENTRIES:
            raise pickle.UnpicklingError(f"{op.name}: more than {MAX_ENTRIES:,} dict and set "
                                         f"entries (a CIFAR-10 batch has 4)")


def _cost(op, arg):
    """The bytes an opcode may make the unpickler hold: its object (an empty set's is 216
    bytes) and its argument's."""
    if op.name in ("EMPTY_SET", "FROZENSET"):
        return OBJECT_BYTES + 224
    return OBJECT_BYTES + (sys.getsizeof(arg) if arg is not None else 0)


def _scan(raw, budget):
    """Count and cost the opcodes before any runs: at most MAX_OPCODES and MAX_ENTRIES dict
    and set entries; each opcode's _cost, and the memo table, which the unpickler sizes to
    twice the largest index."""
    memo, stack = 0, _Stack()
    for count, (op, arg, _) in enumerate(pickletools.genops(raw), 1):
        if count > MAX_OPCODES:
            raise pickle.UnpicklingError(f"more than {MAX_OPCODES:,} opcodes: more than a "
                                         f"CIFAR-10 batch file holds")
        budget.charge(_cost(op, arg), op.name)
        stack.step(op)
        if op.name in ("PUT", "BINPUT", "LONG_BINPUT") and arg > memo:
            budget.charge(16 * (arg - memo), f"the memo table (index {arg})")
            memo = arg


def _plain_dtype(dtype):
    """dtype if it is bool, integer or float with no fields or sub-arrays, else refuse."""
    if not (isinstance(dtype, np.dtype) and dtype.kind in "biuf" and dtype.fields is None
            and dtype.subdtype is None):
        raise pickle.UnpicklingError(f"refusing dtype {_short(dtype)}: only bool, integer "
                                     f"and float arrays may be unpickled")
    return dtype


def _text(value):
    return value.decode("latin1") if type(value) is bytes else value


def _plain_type(name):
    """A new numpy dtype for a type string of at most 8 characters: bool, integer or float."""
    if type(name) not in (bytes, str) or len(name) > 8:
        raise pickle.UnpicklingError(f"refusing dtype {_short(name)}")
    return _plain_dtype(np.dtype(_text(name)))


def _byte_order(state):
    """The byte order in numpy.dtype's BUILD state, when it is a plain type's state
    (3, order, None, None, None, -1, -1, 0); any other state is refused."""
    if not (type(state) is tuple and len(state) == 8
            and all(type(v) in (int, str, bytes, type(None)) for v in state)
            and state[0] == 3 and state[2:] == (None, None, None, -1, -1, 0)
            and _text(state[1]) in ("<", ">", "|", "=")):
        raise pickle.UnpicklingError(f"refusing dtype state {_short(state)}: only plain bool, "
                                     f"integer and float types are unpickled")
    return _text(state[1])


class _DtypeName:
    """What numpy.dtype(name, align, copy) unpickles to: the type's name and the byte order
    its BUILD sets, never a numpy dtype (numpy's dtype.__setstate__ takes any fields, flags
    and sizes, and a pickle may BUILD on a dtype again after an array used it: a checked
    dtype could change). Each array gets a new dtype, made from these, that no opcode
    can reach."""
    __slots__ = ("name", "order")

    def __init__(self, name):
        _plain_type(name)
        self.name, self.order = name, "="

    def __setstate__(self, state):
        self.order = _byte_order(state)

    def __repr__(self):
        return f"numpy.dtype({self.name!r})"

    def dtype(self):
        return _plain_dtype(_plain_type(self.name).newbyteorder(self.order))


def _array_dtype(dtype):
    """A new numpy dtype for an array's pickled type: a type string or a _DtypeName."""
    return dtype.dtype() if type(dtype) is _DtypeName else _plain_type(dtype)


def _array_bytes(shape, dtype):
    """The bytes of an array of this shape and dtype; its dimensions are checked before
    they are multiplied (a product of huge integers takes minutes)."""
    if not (type(shape) is tuple and len(shape) <= 32):
        raise pickle.UnpicklingError(f"bad array shape {_short(shape)}")
    for n in shape:
        if type(n) is not int or not 0 <= n <= MAX_DIMENSION:
            raise pickle.UnpicklingError(f"bad array dimension {_short(n)}: dimensions are "
                                         f"integers from 0 to 2**40")
    return math.prod(shape) * dtype.itemsize


class _PickledArray(np.ndarray):
    """An array being unpickled: its __setstate__ (BUILD) checks the shape, dtype and data
    against the budget before numpy allocates anything, and it cannot be written into
    (SETITEM on a 16 MB array is a memset of 16 MB per opcode). Every array the guards
    make is one of these; _batch_data hands on a plain view."""

    @classmethod
    def charged(cls, array, budget):
        array = array.view(cls)
        array._budget = budget
        return array

    def __setitem__(self, index, value):
        raise pickle.UnpicklingError("refusing to write into an array: a batch's pickle only "
                                     "builds them")

    def __setstate__(self, state):
        if type(state) is not tuple or len(state) not in (4, 5):
            raise pickle.UnpicklingError("bad array state")
        shape, dtype, fortran, data = state[-4:]
        dtype = _array_dtype(dtype)
        nbytes = _array_bytes(shape, dtype)
        if type(data) is not bytes or len(data) != nbytes:
            raise pickle.UnpicklingError(f"an array of shape {shape} needs {nbytes:,} bytes of "
                                         f"data, the pickle gives {_short(type(data).__name__)}")
        self._budget.charge(nbytes, f"an array of shape {shape}")
        super().__setstate__((*state[:-3], dtype, fortran, data))


class _NdarrayName:
    """What numpy.ndarray unpickles to: a name _reconstruct accepts, neither a callable nor
    a class (a pickle calling ndarray(`(2**40,)`) would allocate before any check), nor
    open to BUILD (no attributes)."""
    __slots__ = ()


_NDARRAY = _NdarrayName()


def _reconstruct(budget, subtype, shape, dtype):
    """numpy's _reconstruct, charged: the (empty) array that BUILD then fills."""
    if subtype is not _NDARRAY:
        raise pickle.UnpicklingError(f"refusing to reconstruct {_short(subtype)}")
    dtype = _array_dtype(dtype)
    budget.charge(_array_bytes(shape, dtype), f"an array of shape {shape}")
    return _PickledArray.charged(np.ndarray(shape, dtype), budget)


def _frombuffer(budget, buffer, dtype, shape, order="C", axis_order=None):
    """numpy's _frombuffer (protocol-5 pickles): an array over the pickle's own buffer."""
    dtype = _array_dtype(dtype)
    nbytes = _array_bytes(shape, dtype)
    if type(buffer) not in (bytes, bytearray) or len(buffer) != nbytes or order not in "CF":
        raise pickle.UnpicklingError(f"an array of shape {shape} needs {nbytes:,} bytes of "
                                     f"data in C or F order")
    budget.charge(nbytes, f"an array of shape {shape}")
    array = np.frombuffer(buffer, dtype).reshape(shape, order=order)
    return _PickledArray.charged(array, budget)


def _dtype(budget, obj, align=False, copy=False):
    """numpy.dtype(obj): a _DtypeName, for bool, integer and float types only."""
    return _DtypeName(obj)


def _encode(budget, text, encoding="utf-8", errors="strict"):
    """_codecs.encode(str, 'latin1'), the way protocol-2 pickles from Python 3 carry bytes."""
    if type(text) is not str or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refusing to load _codecs.encode("
                                     f"{_short(type(text).__name__)}, {_short(encoding)}): "
                                     f"only latin1 bytes are unpickled")
    budget.charge(len(text), f"bytes of length {len(text):,}")
    return text.encode("latin1")


# what unpickling a numpy array needs (numpy 1 and 2 module names), each guarded
_GUARDS = {("numpy.core.multiarray", "_reconstruct"): _reconstruct,
           ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
           ("numpy.core.numeric", "_frombuffer"): _frombuffer,
           ("numpy._core.numeric", "_frombuffer"): _frombuffer,
           ("numpy", "dtype"): _dtype, ("_codecs", "encode"): _encode}


class _ArraysOnly(pickle.Unpickler):
    def __init__(self, file, budget):
        super().__init__(file, encoding="bytes")
        self.budget = budget

    def find_class(self, module, name):
        if (module, name) == ("numpy", "ndarray"):
            return _NDARRAY
        guard = _GUARDS.get((module, name))
        if guard is None:
            raise pickle.UnpicklingError(f"refusing to load {_short(module)}.{_short(name)}: "
                                         f"only numpy arrays are unpickled")
        return lambda *args: guard(self.budget, *args)


def _read_bounded(path):
    """The file's bytes, refusing a device or pipe and anything larger than a batch file."""
    with open_regular(path, CIFARError) as f:
        size = os.fstat(f.fileno()).st_size
        raw = f.read(MAX_FILE_BYTES + 1) if size <= MAX_FILE_BYTES else b""
    if max(size, len(raw)) > MAX_FILE_BYTES:   # len: the file may have grown meanwhile
        raise CIFARError(f"{path}: more than {MAX_FILE_BYTES:,} bytes: too large for a CIFAR-10 "
                         f"batch file")
    return raw


def _unpickle(path):
    """The pickled object, within a budget of four times the file's size + 16 MB."""
    try:
        raw = _read_bounded(path)
        budget = _Budget(4 * len(raw) + (16 << 20))
        _scan(raw, budget)
        return _ArraysOnly(io.BytesIO(raw), budget).load()
    except (OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError, ValueError,
            AttributeError, IndexError, OverflowError) as e:
        why = " ".join(str(e).split())[:300]
        raise CIFARError(f"{path}: not a CIFAR-10 batch, or truncated/corrupt "
                         f"({type(e).__name__}: {why})") from None


def _batch_data(path, batch):
    """The uint8 (N, 3072) image rows of an unpickled batch."""
    if type(batch) is not dict or b"data" not in batch or b"labels" not in batch:
        raise CIFARError(f"{path}: not a CIFAR-10 batch: expected a dict with data and labels, "
                         f"found {_short(batch if type(batch) is not dict else list(batch))}")
    data = batch[b"data"]
    if not isinstance(data, np.ndarray):
        raise CIFARError(f"{path}: data must be a uint8 array (N, 3072), found "
                         f"{type(data).__name__}")
    if (data.dtype != np.uint8 or data.dtype.fields is not None or data.dtype.hasobject
            or data.ndim != 2 or data.shape[1] != 3072):
        raise CIFARError(f"{path}: data must be a uint8 array (N, 3072), found {data.dtype} "
                         f"{data.shape}")
    return data.view(np.ndarray)


def _batch_labels(path, labels, n):
    """The labels, a list of n ints 0-9 (or such an integer array), as int64."""
    if isinstance(labels, np.ndarray) and labels.ndim == 1 and labels.dtype.kind in "iu":
        labels = labels.tolist()
    if type(labels) is not list:
        raise CIFARError(f"{path}: labels must be a list of ints 0-9, found "
                         f"{type(labels).__name__} {_short(labels)}")
    if len(labels) != n:
        raise CIFARError(f"{path}: {n} images but {len(labels)} labels")
    wrong = next((v for v in labels if type(v) is not int), None)
    if wrong is not None:
        raise CIFARError(f"{path}: labels must be ints 0-9, found {type(wrong).__name__} "
                         f"{_short(wrong)}")
    outside = next((v for v in labels if not 0 <= v <= 9), None)
    if outside is not None:
        raise CIFARError(f"{path}: labels must be 0-9, found {_short(outside)}")
    return np.array(labels, dtype=np.int64)


def read_batch(path):
    """(images uint8 (N, 3, 32, 32), labels int64 (N,)) from one CIFAR-10 batch file."""
    path = Path(path)
    batch = _unpickle(path)
    data = _batch_data(path, batch)
    labels = _batch_labels(path, batch[b"labels"], len(data))
    return data.reshape(-1, 3, 32, 32), labels


def data_dir(path=None):
    return dataset_dir(path, "MININET_CIFAR_DATA", "cifar10")


def batches_folder(folder):
    """folder itself if it holds the batch files, else its cifar-10-batches-py."""
    return folder if (folder / TEST[0]).exists() else folder / FOLDER


def ensure_cifar10(path=None, download=True, progress=None):
    """The folder holding the six batch files, downloading and unpacking the archive."""
    folder = data_dir(path)
    batches = batches_folder(folder)
    missing = [n for n in TRAIN + TEST if not (batches / n).exists()]
    if not missing:
        return batches
    if not download:
        raise CIFARError(f"{batches / missing[0]} not found. Put the CIFAR-10 python batches "
                         f"({', '.join(TRAIN + TEST)}) in {batches}, set --data-dir / "
                         f"MININET_CIFAR_DATA, or pass --download to fetch them there.")
    try:
        archive = fetch(ARCHIVE, folder, MIRRORS, ARCHIVE_MD5, progress)
    except FetchError as e:
        raise CIFARError(f"could not download {ARCHIVE} ({e}). Offline? Put the CIFAR-10 "
                         f"python batches ({', '.join(TRAIN + TEST)}) in {batches}.") from None
    with tempfile.TemporaryDirectory(dir=folder) as tmp, tarfile.open(archive) as tar:
        tar.extractall(tmp, filter="data")          # no paths outside tmp
        os.replace(Path(tmp) / FOLDER, folder / FOLDER)
    archive.unlink()
    return folder / FOLDER


class CIFAR10Dataset(Dataset):
    """Images float32 in [0, 1] of shape (3, 32, 32), labels int64 (needle's
    CIFAR10Dataset). `pixels` keeps the uint8 data; each batch is converted."""
    batch_indexing = True   # dataset[index_array] gives a whole batch (DataLoader's fast path)

    def __init__(self, base_folder: str | os.PathLike[str], train: bool = True,
                 transforms: Sequence[Callable[[Any], Any]] | None = None) -> None:
        super().__init__(transforms)
        folder = batches_folder(Path(base_folder))
        parts = [read_batch(folder / name) for name in (TRAIN if train else TEST)]
        self.pixels = np.concatenate([p for p, _ in parts])
        self.labels = np.concatenate([y for _, y in parts])

    @classmethod
    def load(cls, split="train", path=None, download=True, progress=None, **kw):
        """The CIFAR-10 split 'train' (50000 images) or 'test' (10000), from `path`
        (default the data directory), downloaded and checked there first when missing and
        `download`; `progress` reports the download, `**kw` go to the constructor (transforms).
        Images (3, 32, 32) float32 in [0, 1], labels int64."""
        return cls(ensure_cifar10(path, download, progress), split == "train", **kw)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        x = pixels_to_float(self.pixels[index])
        return self.apply_transforms(x, batched=np.ndim(index) > 0), self.labels[index]
