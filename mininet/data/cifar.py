"""CIFAR-10 from the standard `cifar-10-batches-py` pickles (data_batch_1..5, test_batch),
found in --data-dir, else $MININET_CIFAR_DATA, else ~/.cache/mininet/cifar10; when
missing, the archive is downloaded (md5-verified) and unpacked atomically.

The pickles are read with an unpickler that admits only what numpy arrays need, so a
tampered file cannot run code."""
import io
import os
import pickle
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from .dataset import Dataset, pixels_to_float
from .fetch import FetchError, dataset_dir, fetch

FOLDER = "cifar-10-batches-py"
TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST = ("test_batch",)
ARCHIVE = "cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
MIRRORS = ("https://www.cs.toronto.edu/~kriz/",)
# what unpickling a numpy array needs (numpy 1 and 2 module names), nothing else
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype"), ("copyreg", "_reconstructor"),
            ("_codecs", "encode")}   # protocol-2 pickles written by Python 3 carry bytes this way


class CIFARError(RuntimeError):
    """A missing, corrupt or unreadable CIFAR-10 file; the message names it."""


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if name == "_reconstruct":   # numpy 2 moved numpy.core to numpy._core
            core = np._core if hasattr(np, "_core") else np.core
            return core.multiarray._reconstruct
        return super().find_class(module, name)


def read_batch(path):
    """(images uint8 (N, 3, 32, 32), labels int64 (N,)) from one CIFAR-10 batch file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            d = _ArraysOnly(io.BytesIO(f.read()), encoding="bytes").load()
        data, labels = d[b"data"], d[b"labels"]
    except (OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError, ValueError,
            AttributeError, IndexError) as e:
        raise CIFARError(f"{path}: not a CIFAR-10 batch, or truncated/corrupt "
                         f"({type(e).__name__}: {e})") from None
    data = np.asarray(data)
    labels = np.asarray(labels, dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise CIFARError(f"{path}: data must be uint8 rows of 3072 bytes, got {data.dtype} "
                         f"{data.shape}")
    if labels.shape != (len(data),):
        raise CIFARError(f"{path}: {len(data)} images but {labels.size} labels")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise CIFARError(f"{path}: labels must be 0-9, found {labels.min()}..{labels.max()}")
    return data.reshape(-1, 3, 32, 32), labels


def data_dir(path=None):
    return dataset_dir(path, "MININET_CIFAR_DATA", "cifar10")


def _batches_folder(folder):
    """folder itself if it holds the batch files, else its cifar-10-batches-py."""
    return folder if (folder / TEST[0]).exists() else folder / FOLDER


def ensure_cifar10(path=None, download=True, progress=None):
    """The folder holding the six batch files, downloading and unpacking the archive."""
    folder = data_dir(path)
    batches = _batches_folder(folder)
    missing = [n for n in TRAIN + TEST if not (batches / n).exists()]
    if not missing:
        return batches
    if not download:
        raise CIFARError(f"{batches / missing[0]} not found. Put the CIFAR-10 python batches "
                         f"({', '.join(TRAIN + TEST)}) in {batches}, or set --data-dir / "
                         f"MININET_CIFAR_DATA.")
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

    def __init__(self, base_folder, train=True, transforms=None):
        super().__init__(transforms)
        folder = _batches_folder(Path(base_folder))
        parts = [read_batch(folder / name) for name in (TRAIN if train else TEST)]
        self.pixels = np.concatenate([p for p, _ in parts])
        self.labels = np.concatenate([y for _, y in parts])

    @classmethod
    def load(cls, split="train", path=None, download=True, progress=None, **kw):
        return cls(ensure_cifar10(path, download, progress), split == "train", **kw)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        x = pixels_to_float(self.pixels[index])
        return self.apply_transforms(x, batched=np.ndim(index) > 0), self.labels[index]
