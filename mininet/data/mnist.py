"""MNIST from the standard IDX files (gzipped or not), found in --data-dir,
else $MININET_DATA, else ~/.cache/mininet/mnist; downloaded, verified and
written atomically when missing."""
import contextlib
import gzip
import math
import os
import struct
import zlib
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .dataset import Dataset, pixels_to_float
from .errors import DataError
from .fetch import FetchError, fetch, open_regular, read_into

FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
# md5 of the official files, as published with torchvision's MNIST loader
MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/",
           "https://storage.googleapis.com/cvdf-datasets/mnist/")
# Fashion-MNIST: the same four file names and format (Zalando's published md5s)
FASHION_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
FASHION_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
# name -> (md5 table, mirrors, environment variable, folders tried before the cache)
DATASETS = {
    "mnist": (MD5, MIRRORS, "MININET_DATA", ()),
    # Debian's dataset-fashion-mnist package installs the files here
    "fashion-mnist": (FASHION_MD5, FASHION_MIRRORS, "MININET_FASHION_DATA",
                      ("/usr/share/datasets/fashion-mnist",)),
}
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
GZIP_RATIO = 1032   # deflate's largest expansion: a gzip file inflates to at most this x its size


class IdxSpec(NamedTuple):
    """What one MNIST file must hold, checked against its header before its data is read."""
    what: str              # "images" or "labels", for messages
    codes: tuple           # the IDX type codes allowed
    types: str             # those types, in words
    item_shape: tuple      # the shape after the first (count) dimension


IMAGES = IdxSpec("images", (0x08,), "uint8 (IDX type code 0x08)", (28, 28))
LABELS = IdxSpec("labels", (0x08, 0x09, 0x0B, 0x0C), "integers (uint8, int8, int16 or int32)", ())


class MNISTError(DataError):
    """A missing, corrupt or unreadable MNIST file; the message says what to do."""


def data_dir(path: str | os.PathLike[str] | None = None, dataset: str = "mnist") -> Path:
    """--data-dir, else the dataset's variable (MININET_DATA for MNIST), else a system
    folder that holds the files (Debian's Fashion-MNIST), else ~/.cache/mininet/<name>."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    _, _, var, system = DATASETS[dataset]
    if path:
        return Path(path).expanduser()
    if os.environ.get(var):
        return Path(os.environ[var]).expanduser()
    for folder in map(Path, system):
        if all(find_file(folder, name) for name in FILES.values()):
            return folder
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mininet" / dataset


def find_file(folder, name):
    """The file, gzipped or not."""
    for candidate in (folder / name, folder / name[:-3]):
        if candidate.exists():
            return candidate
    return None


def read_idx(path, expect_ndim=None, spec=None):
    """Parse an IDX file (optionally gzipped) into a numpy array. The header (magic, type,
    dimensions; with spec, the file's known type and item shape) and the size it declares
    are checked before the data is read, in chunks, against the file's own size: a plain
    file must hold exactly that data, and a gzipped one cannot inflate to more than
    GZIP_RATIO times its size; so a file never makes this allocate more than it can hold."""
    path = Path(path)
    if spec is not None:
        expect_ndim = 1 + len(spec.item_shape)
    try:
        with open_regular(path, MNISTError) as raw, _inflated(raw, path) as f:
            code, shape = _read_header(f, path, expect_ndim)
            dtype = np.dtype(IDX_DTYPES[code])
            if spec is not None:
                _check_spec(path, spec, code, shape)
            _check_size(path, raw, f is not raw, math.prod(shape) * dtype.itemsize, shape)
            return _read_data(f, path, shape, dtype)
    except (OSError, EOFError, zlib.error) as e:   # BadGzipFile is an OSError
        raise MNISTError(f"{path}: cannot read the file ({e}); it may be truncated or corrupt. "
                         f"Delete it so it can be fetched again, or replace it.") from None


def _inflated(raw, path):
    """The file's data stream: raw itself, or its gzip decompression (.gz)."""
    if path.suffix == ".gz":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    return contextlib.nullcontext(raw)


def _read_header(f, path, expect_ndim):
    """(type code, shape) from the magic number and the dimensions that follow it."""
    magic = f.read(4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0:
        raise MNISTError(f"{path}: bad magic number {magic.hex() or '(empty)'} (an IDX file "
                         f"starts with two zero bytes): not an IDX file")
    code, ndim = magic[2], magic[3]
    if code not in IDX_DTYPES or (expect_ndim is not None and ndim != expect_ndim):
        raise MNISTError(f"{path}: bad magic number {magic.hex()}: expected an IDX file of "
                         f"{expect_ndim} dimensions with a known type code "
                         f"({', '.join(f'{c:02x}' for c in IDX_DTYPES)})")
    dims = f.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise MNISTError(f"{path}: truncated header (the file ends after {4 + len(dims)} bytes)")
    return code, struct.unpack(f">{ndim}I", dims)


def _check_spec(path, spec, code, shape):
    """The type and item shape the dataset allows (MNIST: uint8 28x28 images)."""
    if code not in spec.codes:
        raise MNISTError(f"{path}: {spec.what} must be {spec.types}, found "
                         f"{np.dtype(IDX_DTYPES[code]).name} (IDX type code 0x{code:02x})")
    if shape[1:] != spec.item_shape:
        raise MNISTError(f"{path}: {spec.what} must be {'x'.join(map(str, spec.item_shape))}, "
                         f"found {'x'.join(map(str, shape[1:]))}")


def _check_size(path, raw, gzipped, need, shape):
    """need, the bytes of data the header declares (an exact product: numpy's would wrap
    around), must fit the file: all that follows the header of a plain file, at most
    GZIP_RATIO times the size of a gzipped one."""
    size = os.fstat(raw.fileno()).st_size
    if gzipped:
        if need > GZIP_RATIO * size:
            raise MNISTError(f"{path}: the header declares shape {shape} ({need:,} bytes), more "
                             f"than a gzip file of {size:,} bytes can hold (deflate inflates at "
                             f"most {GZIP_RATIO}x): the file is corrupt or not this IDX file")
        return
    have = size - raw.tell()
    if need > have:
        raise MNISTError(f"{path}: the header declares shape {shape} ({need:,} bytes of data), "
                         f"more than the {have:,} bytes after it: the file is truncated or corrupt")
    if need < have:
        raise _longer(path, shape, need)


def _longer(path, shape, need):
    return MNISTError(f"{path}: header says shape {shape} ({need:,} bytes of data) but the file "
                      f"holds more data than that: it is corrupt or not this IDX file")


def _read_data(f, path, shape, dtype):
    """The data the header declares, read a chunk at a time; a short or long file is refused."""
    data = np.empty(shape, dtype)
    got = read_into(f, data)
    if got < data.nbytes:
        raise MNISTError(f"{path}: header says shape {shape} ({data.nbytes:,} bytes of data) but "
                         f"the file ends after {got:,}: the file is truncated or corrupt")
    if f.read(1):
        raise _longer(path, shape, data.nbytes)
    return data


def download(name, folder, progress=None, mirrors=MIRRORS, md5=MD5):
    """Fetch one file into folder atomically (temp file + rename) and verify its md5."""
    try:
        return fetch(name, folder, mirrors, md5[name], progress)
    except FetchError as e:
        raise MNISTError(
            f"could not download {name} ({e}). Offline? Put the four files "
            f"({', '.join(FILES.values())}) in {folder}, or point --data-dir at them.") from None


def ensure_mnist(path: str | os.PathLike[str] | None = None, download_missing: bool = True,
                 progress: Any = None, dataset: str = "mnist") -> Path:
    """The folder holding the four files, downloading the missing ones."""
    folder = data_dir(path, dataset)
    md5, mirrors, var, _ = DATASETS[dataset]
    title = "MNIST" if dataset == "mnist" else "Fashion-MNIST"
    for name in FILES.values():
        if find_file(folder, name) is None:
            if not download_missing:
                raise MNISTError(f"{folder / name} not found. Put the four {title} files "
                                 f"({', '.join(FILES.values())}) in {folder}, set --data-dir / "
                                 f"{var}, or pass --download to fetch them there.")
            download(name, folder, progress, mirrors, md5)
    return folder


class MNISTDataset(Dataset):
    """Images as float32 in [0, 1], flattened to (784,) (or (1, 28, 28) with flatten=False);
    labels as int64. `pixels` keeps the raw bytes (N, 1, 28, 28), converted per batch;
    transforms see (1, 28, 28) float images."""
    batch_indexing = True   # dataset[index_array] gives a whole batch (DataLoader's fast path)

    def __init__(self, image_file: str | os.PathLike[str], label_file: str | os.PathLike[str],
                 transforms: Any = None, flatten: bool = True) -> None:
        super().__init__(transforms)
        images = read_idx(image_file, spec=IMAGES)
        labels = read_idx(label_file, spec=LABELS)
        if len(images) == 0:
            raise MNISTError(f"{image_file}: holds no images")
        if len(images) != len(labels):
            raise MNISTError(f"{image_file} has {len(images)} images but {label_file} has "
                             f"{len(labels)} labels")
        outside = labels[(labels < 0) | (labels > 9)]
        if outside.size:
            raise MNISTError(f"{label_file}: labels must be 0-9, found {outside[0]}")
        self.pixels = images[:, None]  # uint8 (N, 1, 28, 28): a quarter of float32's memory
        self.flatten = flatten
        self.labels = labels.astype(np.int64)

    @classmethod
    def load(cls, split="train", path=None, download=True, progress=None, dataset="mnist", **kw):
        """The split of MNIST, or of Fashion-MNIST (dataset="fashion-mnist": same format)."""
        folder = ensure_mnist(path, download, progress, dataset)
        key = "train" if split == "train" else "test"
        return cls(find_file(folder, FILES[f"{key}_images"]),
                   find_file(folder, FILES[f"{key}_labels"]), **kw)

    def __len__(self):
        return len(self.labels)

    @property
    def images(self):
        """All images as float32 in [0, 1], (N, 1, 28, 28) (a new array)."""
        return pixels_to_float(self.pixels)

    def __getitem__(self, index):
        """Transforms see (1, 28, 28) float images; flattening comes after them."""
        x = self.apply_transforms(pixels_to_float(self.pixels[index]), batched=np.ndim(index) > 0)
        if self.flatten:
            x = x.reshape(x.shape[:-3] + (-1,))
        return x, self.labels[index]
