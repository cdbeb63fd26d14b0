"""Hostile MNIST, CIFAR-10 and PTB files (tests/hostile_files.py writes them): every one is
refused with one clear error line naming the file, within bounded memory (peak RSS at
most 200 MB over the process after import; no MemoryError under an address-space limit
of its size after import + 1 GB) and CPU time, without a traceback and without running
code; real files of the formats (CIFAR-10 as Python 2 and 3 wrote it, IDX files larger
than MNIST's) still load."""
import gzip
import io
import json
import os
import pickle
import pickletools
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import hostile_files
from hostile_files import CASES, RSS_LIMIT_MB

CPU_BOUND_S = 5   # a case's CPU seconds; each takes well under one

HERE = Path(__file__).resolve().parent
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
       "MININET_NUM_THREADS": "1", "MININET_OFFLINE": "1"}


@pytest.fixture(scope="module")
def hostile_root(tmp_path_factory):
    """A folder per case (hostile_files.CASES), each holding its bad file."""
    root = tmp_path_factory.mktemp("hostile")
    hostile_files.write_all(root)
    return root


@pytest.fixture(scope="module")
def hostile(hostile_root):
    """{case: (bad file, outcome)}: all cases loaded by one subprocess, each in a fork."""
    proc = subprocess.run([sys.executable, str(HERE / "hostile_files.py"), str(hostile_root)],
                          env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    outcomes = {r["case"]: r for r in map(json.loads, proc.stdout.splitlines())}
    return {name: (str(hostile_files.bad_file(hostile_root / name)), outcomes[name])
            for name in CASES}


def check_refused_clearly(hostile, name):
    path, out = hostile[name]
    assert out["error"] in ("MNISTError", "CIFARError", "CorpusError"), out
    message = out["message"]
    assert "\n" not in message, message
    assert path in message, f"the error does not name {path}: {message}"
    assert re.search(CASES[name].expect, message), f"{message!r} !~ {CASES[name].expect!r}"
    assert not out["code_ran"], "a pickle ran code"


def check_bounded(hostile, name):
    """Within the memory bound and a CPU-time bound (the child's RLIMIT_CPU is higher, so
    that a slow case is reported here rather than killed)."""
    _, out = hostile[name]
    assert out["rss_growth_mb"] is not None and out["rss_growth_mb"] <= RSS_LIMIT_MB, out
    assert out["cpu_s"] is not None and out["cpu_s"] <= CPU_BOUND_S, out
    assert "MemoryError" not in (out["error"] or ""), out


@pytest.mark.parametrize("name", list(CASES))
def test_every_hostile_file_is_one_clear_error_in_bounded_memory(hostile, name):
    """The whole generator (truncated, wrong magic, wrong dtype, huge sizes, code-running
    and memory-blowing pickles, pickles that take minutes of CPU): one error line naming
    the file and the problem, bounded memory and CPU time, no traceback, no code run."""
    check_bounded(hostile, name)
    check_refused_clearly(hostile, name)


def limit_address_space(nbytes=3 << 30):
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (nbytes, nbytes))


@pytest.mark.parametrize("name, dataset", [
    ("idx_labels_float32", "mnist"), ("idx_images_huge_count_and_a_gigabyte_of_zeros", "mnist"),
    ("cifar_data_is_memo_references_to_one_megabyte", "cifar10"),
    ("cifar_global_os_system", "cifar10"), ("ptb_empty_valid_split", "ptb")])
def test_cli_train_on_a_hostile_file_exits_2_with_one_line_naming_it(hostile, hostile_root,
                                                                       name, dataset):
    """The CLI turns the loaders' errors into exit code 2 and one line (under a 3 GB
    address-space limit, so that a bomb the loaders let through fails rather than swaps)."""
    path, _ = hostile[name]
    proc = subprocess.run([sys.executable, "-m", "mininet.cli", "train", dataset, "--data-dir",
                           str(hostile_root / name), "--epochs", "1", "--batch-size", "20"],
                          env=ENV, capture_output=True, text=True, timeout=120,
                          preexec_fn=limit_address_space)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and path in lines[0], proc.stderr[-2000:]
    assert not (hostile_root / name / hostile_files.MARKER).exists()


def words_by_lines(text, max_lines=None):
    """The reference: each line (universal newlines) split on whitespace, then <eos>."""
    words = []
    for k, line in enumerate(io.StringIO(text, newline=None)):
        if max_lines is not None and k >= max_lines:
            break
        words += line.split() + ["<eos>"]
    return words


@pytest.mark.parametrize("text", [
    "the cat sat \n  on the  mat\nlongwordhere and more",
    "a\r\nb c\rd\n\n\u00e9t\u00e9 \u2028 x\u3000y\n",
    "one line and no newline of many words, cut anywhere " * 20],
    ids=["lines", "newlines-and-spaces", "one-line"])
@pytest.mark.parametrize("max_lines", [None, 2])
def test_corpus_lines_are_read_in_chunks_with_the_same_words(tmp_path, monkeypatch, text,
                                                             max_lines):
    """A corpus on one line (text8) is read CHUNK characters at a time: the words and the
    <eos> marks are those of reading whole lines, wherever a chunk cuts a word."""
    from mininet.data import Corpus, ptb
    for split in ("train", "valid", "test"):
        (tmp_path / f"{split}.txt").write_text(text, newline="")
    for chunk in (1, 3, 7, 1 << 20):
        monkeypatch.setattr(ptb, "CHUNK", chunk)
        c = Corpus(tmp_path, max_lines=max_lines, download=False)
        assert [c.dictionary.idx2word[i] for i in c.train] == words_by_lines(text, max_lines)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_cifar_batches_of_every_pickle_protocol_still_load(tmp_path, protocol):
    """The guarded unpickler reads what numpy writes at every protocol: C and Fortran
    order, labels as a list or as an integer array."""
    from mininet.data.cifar import read_batch
    data = np.random.default_rng(protocol).integers(0, 256, (3, 3072), dtype=np.uint8)
    for labels, pixels in [([1, 2, 3], data), (np.array([1, 2, 3]), np.asfortranarray(data)),
                           (np.array([1, 2, 3], np.uint8), data)]:
        path = tmp_path / "batch"
        path.write_bytes(pickle.dumps({b"batch_label": b"b", b"data": pixels, b"labels": labels,
                                       b"filenames": [b"a.png"] * 3}, protocol=protocol))
        x, y = read_batch(path)
        np.testing.assert_array_equal(x.reshape(3, -1), data)
        assert y.dtype == np.int64 and y.tolist() == [1, 2, 3]


class Python2Pickle:
    """A batch as Python 2's cPickle wrote CIFAR-10's (protocol 2): str as SHORT_BINSTRING or
    BINSTRING (bytes here), every object but an int memoized (BINPUT from 1, then
    LONG_BINPUT), numpy.core's names, the dtype's byte order a str, lists and dicts in
    batches of 1000."""

    def __init__(self):
        self.out, self.memo = [b"\x80\x02"], 0

    def put(self):
        self.memo += 1
        return b"q" + bytes([self.memo]) if self.memo < 256 else b"r" + struct.pack("<I", self.memo)

    def str(self, data):
        size = bytes([len(data)]) if len(data) < 256 else struct.pack("<i", len(data))
        return (b"U" if len(data) < 256 else b"T") + size + data + self.put()

    @staticmethod
    def int(n):
        return b"K" + bytes([n]) if n < 256 else b"M" + struct.pack("<H", n)

    def global_(self, module, name):
        return b"c" + module + b"\n" + name + b"\n" + self.put()

    def array(self, data):
        """numpy 1's reduce of a uint8 (N, 3072) array, as Python 2 pickled it."""
        rows, cols = data.shape
        dtype = (self.global_(b"numpy", b"dtype") + self.str(b"u1") + b"K\x00K\x01\x87"
                 + self.put() + b"R" + self.put() + b"(K\x03" + self.str(b"|") + b"NNN"
                 + b"J\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t" + self.put() + b"b")
        return (self.global_(b"numpy.core.multiarray", b"_reconstruct")
                + self.global_(b"numpy", b"ndarray") + b"K\x00\x85" + self.put() + self.str(b"b")
                + b"\x87" + self.put() + b"R" + self.put() + b"(K\x01" + self.int(rows)
                + self.int(cols) + b"\x86" + self.put() + dtype + b"\x89"
                + self.str(data.tobytes()) + b"t" + self.put() + b"b")

    def list(self, items):
        out = [b"]", self.put()]
        for i in range(0, len(items), 1000):
            out += [b"("] + items[i:i + 1000] + [b"e"]
        return b"".join(out)

    def batch(self, batch):
        self.out += [b"}", self.put(), b"("]
        for key, value in batch.items():
            self.out.append(self.str(key))
            if isinstance(value, np.ndarray):
                self.out.append(self.array(value))
            elif isinstance(value, list):
                self.out.append(self.list([self.int(v) if isinstance(v, int) else self.str(v)
                                           for v in value]))
            else:
                self.out.append(self.str(value))
        return b"".join(self.out + [b"u."])


def real_batch(n=10_000):
    rng = np.random.default_rng(0)
    return {b"batch_label": b"training batch 1 of 5",
            b"labels": rng.integers(0, 10, n).tolist(),
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [b"leptodactylus_pentadactylus_s_%06d.png" % i for i in range(n)]}


@pytest.mark.parametrize("writer", ["python2", 0, 1, 2, 3, 4, 5])
def test_real_size_cifar_batches_load_as_python_2_and_3_wrote_them(tmp_path, writer):
    """A batch of 10,000 images as Python 2's cPickle wrote CIFAR-10, and as Python 3 writes
    one at each protocol, loads: within the opcode and dict-entry caps, with room to spare,
    and within the memory budget."""
    from mininet.data import cifar
    batch = real_batch()
    raw = Python2Pickle().batch(batch) if writer == "python2" else pickle.dumps(batch, writer)
    assert sum(1 for _ in pickletools.genops(raw)) <= cifar.MAX_OPCODES // 2
    (tmp_path / "data_batch_1").write_bytes(raw)
    del raw
    x, y = cifar.read_batch(tmp_path / "data_batch_1")
    np.testing.assert_array_equal(x.reshape(len(x), -1), batch[b"data"])
    assert y.dtype == np.int64 and y.tolist() == batch[b"labels"]


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_an_idx_data_set_larger_than_mnist_loads(tmp_path, gz):
    """70,000 images (EMNIST-digits has 240,000): the files' own sizes bound what is read,
    not MNIST's sizes (a cap of 60,000 images and 64 MB refused them)."""
    from mininet.data import MNISTDataset
    images = (np.arange(70_000 * 784) % 251).astype(np.uint8).reshape(70_000, 28, 28)
    labels = (np.arange(70_000) % 10).astype(np.uint8)
    files = [tmp_path / f"{name}.gz" if gz else tmp_path / name for name in ("images", "labels")]
    for path, array in zip(files, (images, labels)):
        raw = hostile_files.idx_bytes(array)
        path.write_bytes(gzip.compress(raw, 1) if gz else raw)
    ds = MNISTDataset(*files)
    assert len(ds) == 70_000 and ds.labels[-1] == 9
    np.testing.assert_array_equal(ds.pixels[-1, 0], images[-1])


@pytest.mark.parametrize("kind", ["mnist", "cifar", "ptb"])
def test_a_fifo_swapped_in_after_the_check_is_refused_without_blocking(tmp_path, monkeypatch,
                                                                       kind):
    """The path is checked on the descriptor that is read: a regular file swapped for a FIFO
    between a stat and an open made the open wait for a writer forever (os.stat reports a
    regular file here, as it did before the swap)."""
    import signal
    from mininet.data import CIFARError, Corpus, CorpusError, Dictionary, MNISTError, read_idx
    from mininet.data.cifar import read_batch
    path = tmp_path / {"mnist": "images", "cifar": "data_batch_1", "ptb": "train.txt"}[kind]
    os.mkfifo(path)
    regular, real_stat = os.stat(HERE / "conftest.py"), os.stat
    monkeypatch.setattr(os, "stat", lambda p, *a, **k: regular if str(p) == str(path)
                        else real_stat(p, *a, **k))
    corpus = Corpus.__new__(Corpus)
    corpus.dictionary = Dictionary()
    load = {"mnist": lambda: read_idx(path, 3), "cifar": lambda: read_batch(path),
            "ptb": lambda: corpus.tokenize(path)}[kind]
    previous = signal.signal(signal.SIGALRM, lambda *_: pytest.fail("the open blocked"))
    signal.alarm(5)
    try:
        with pytest.raises((MNISTError, CIFARError, CorpusError), match="not a regular file"):
            load()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("max_lines", [0, -1, 1.5])
def test_corpus_max_lines_below_one_is_refused(tmp_path, max_lines):
    """max_lines=0 read every line (the count never equalled 0)."""
    from mininet.data import Corpus
    for split in ("train", "valid", "test"):
        (tmp_path / f"{split}.txt").write_text("a b\nc d\n")
    with pytest.raises(ValueError, match="max_lines must be None.*>= 1"):
        Corpus(tmp_path, max_lines=max_lines, download=False)
    assert len(Corpus(tmp_path, max_lines=1, download=False).train) == 3
