"""Hostile MNIST, CIFAR-10 and PTB files (tests/hostile_files.py writes them): every one is
refused with one clear error line naming the file, within bounded memory (peak RSS at
most 200 MB over the process after import; no MemoryError under an address-space limit
of its size after import + 1 GB), without a traceback and without running code."""
import io
import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import hostile_files
from hostile_files import CASES, RSS_LIMIT_MB

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


def check_bounded_memory(hostile, name):
    _, out = hostile[name]
    assert out["rss_growth_mb"] is not None and out["rss_growth_mb"] <= RSS_LIMIT_MB, out
    assert "MemoryError" not in (out["error"] or ""), out


def names(*prefixes):
    return [n for n in CASES if n.startswith(prefixes)]


BOMBS = ["idx_images_huge_count_and_a_gigabyte_of_zeros",
         "idx_labels_huge_count_and_a_gigabyte_of_zeros",
         "idx_valid_header_then_a_gigabyte_of_zeros", "idx_images_more_than_the_cap",
         "idx_device_instead_of_a_file",
         "cifar_data_is_memo_references_to_one_megabyte",
         "cifar_labels_are_memo_references_to_one_long_list",
         "cifar_reconstruct_of_a_huge_shape", "cifar_object_array_of_a_huge_shape",
         "cifar_byteswapped_arrays_sharing_one_buffer",
         "cifar_byteswapped_builds_on_protocol_5_arrays",
         "cifar_ndarray_called_with_a_huge_shape", "cifar_ndarray_newobj_of_a_huge_shape",
         "cifar_codecs_encode_of_one_string_many_times", "cifar_memo_index_near_two_to_the_31",
         "cifar_bytes_of_a_terabyte_declared", "cifar_two_million_empty_sets",
         "cifar_device_instead_of_a_file", "cifar_file_larger_than_any_batch",
         "ptb_device_instead_of_a_file", "ptb_256_megabytes_of_nul_characters"]


@pytest.mark.parametrize("name", BOMBS)
def test_memory_bomb_is_refused_within_bounded_memory(hostile, name):
    """Issue 10: header and declared sizes checked first, streams read in chunks, pickles
    limited in what they materialise."""
    check_bounded_memory(hostile, name)
    check_refused_clearly(hostile, name)


@pytest.mark.parametrize("name", names("cifar_labels", "cifar_label_", "cifar_reconstruct"))
def test_cifar_bad_labels_and_shapes_raise_cifar_error_naming_the_file(hostile, name):
    """Issue 11: labels None, 2**63, strings, floats, nested lists; _reconstruct of 2**40."""
    check_refused_clearly(hostile, name)


@pytest.mark.parametrize("name", ["idx_images_27x27", "idx_images_float32", "idx_images_int32",
                                  "idx_labels_float32", "idx_labels_negative_int8",
                                  "cifar_label_is_a_float", "cifar_data_float32"])
def test_wrong_types_and_shapes_are_refused_at_load(hostile, name):
    """Issue 12: float labels are not truncated, float/int32 images not divided by 255,
    negative labels and 27x27 images not left to fail in a loss or Linear layer."""
    check_refused_clearly(hostile, name)


@pytest.mark.parametrize("name", ["ptb_empty_valid_split", "ptb_blank_lines_only",
                                  "ptb_valid_split_shorter_than_a_batch",
                                  "idx_shape_product_wraps_to_zero",
                                  "idx_shape_product_wraps_to_zero_generic_reader"])
def test_errors_name_the_file_and_the_problem(hostile, name):
    """Issue 13: an empty or short PTB split, an IDX header whose size product wraps."""
    check_refused_clearly(hostile, name)


@pytest.mark.parametrize("name", list(CASES))
def test_every_hostile_file_is_one_clear_error_in_bounded_memory(hostile, name):
    """Issue 17: the whole generator (truncated, wrong magic, wrong dtype, huge sizes,
    code-running and memory-blowing pickles): one error line naming the file, bounded
    memory, no traceback, no code run."""
    check_bounded_memory(hostile, name)
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
