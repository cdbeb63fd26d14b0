"""Empty or too-small data (issue item 4) is an error naming the file and the sizes, before
training starts (exit 2, one line), never a perfect-looking metric (a loss of 0.0000, an
accuracy of 0.00%, a perplexity of 1.00); the training and evaluation functions refuse
0 samples themselves. A data loader's error is one line and exit 2 whatever its class."""
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import assert_one_line_error, cli as _cli, write_cifar_folder, write_idx
from mininet.data import DataLoader, TensorDataset, batchify
from mininet.models import build_model, evaluate, train_epoch
from mininet.models.train import evaluate_lm, make_optimizer, train_lm_epoch


def _mnist(folder, n_train, n_test):
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return folder


@pytest.mark.parametrize("n_train, n_test, file", [
    (0, 20, "train-images-idx3-ubyte.gz"), (20, 0, "t10k-images-idx3-ubyte.gz")])
def test_an_empty_mnist_split_is_an_error_naming_the_file(tmp_path, n_train, n_test, file):
    """Before: 0 training images printed `train loss 0.0000` and exited 0 (the loader may
    refuse the empty file itself, or the CLI's check before training does)."""
    _mnist(tmp_path, n_train, n_test)
    r = _cli("train", "mnist", "--data-dir", tmp_path, "--epochs", "1", "--model", "softmax")
    assert_one_line_error(r, str(tmp_path / file))
    assert any(w in r.stderr for w in ("0 training images", "0 test images", "no images")), r.stderr


@pytest.mark.parametrize("n_train, n_test, words", [
    (0, 20, ["train-images-idx3-ubyte.gz", "0 training images", "(0 training, 20 test)"]),
    (20, 0, ["t10k-images-idx3-ubyte.gz", "0 test images", "(20 training, 0 test)"]),
])
def test_the_cli_checks_the_sizes_before_training(tmp_path, n_train, n_test, words):
    """The check itself, whatever the loaders accept."""
    from mininet.cli.train import check_sizes
    _mnist(tmp_path, 1, 1)
    with pytest.raises(ValueError) as info:
        check_sizes("mnist", str(tmp_path), n_train, n_test)
    for w in [str(tmp_path)] + words:
        assert w in str(info.value), (w, str(info.value))
    check_sizes("mnist", str(tmp_path), 1, 1)


def test_an_empty_cifar_training_set_is_an_error_naming_the_files(tmp_path):
    write_cifar_folder(tmp_path, train_size=0, test_size=5)
    r = _cli("train", "cifar10", "--data-dir", tmp_path, "--epochs", "1")
    assert_one_line_error(r, "data_batch_1", "0 training images")


def _corpus(folder, train_words, valid_words):
    (folder / "train.txt").write_text(" ".join(["w"] * train_words) + "\n")
    (folder / "valid.txt").write_text(" ".join(["v"] * valid_words) + "\n")
    (folder / "test.txt").write_text("t\n")
    return folder


@pytest.mark.parametrize("train_words, valid_words, file, tokens", [
    (40, 4, "valid.txt", 5),    # 5 tokens (4 words and <eos>): one row of 4, no window
    (6, 40, "train.txt", 7),
    (40, 1, "valid.txt", 2),    # fewer tokens than one row: used to be batchify's error
])
def test_a_ptb_split_too_small_for_a_window_is_an_error_naming_the_file(
        tmp_path, train_words, valid_words, file, tokens):
    """Before: a split of fewer than 2 x batch size tokens printed `valid ppl 1.00`."""
    _corpus(tmp_path, train_words, valid_words)
    r = _cli("train", "ptb", "--data-dir", tmp_path, "--epochs", "1", "--batch-size", "4",
             "--hidden-size", "8", "--embedding-size", "8", "--layers", "1")
    assert_one_line_error(r, str(tmp_path / file), f"{tokens} tokens", "--batch-size 4",
                          "at least 8")


def test_train_and_evaluate_refuse_an_empty_loader():
    model = build_model("softmax")
    opt = make_optimizer("adam", model.parameters(), 1e-3)
    empty = DataLoader(TensorDataset(np.zeros((0, 784), np.float32), np.zeros(0, np.int64)), 10)
    with pytest.raises(ValueError, match="train_epoch: the loader gave no samples"):
        train_epoch(model, empty, opt)
    with pytest.raises(ValueError, match="evaluate: the loader gave no samples"):
        evaluate(model, empty)
    one = DataLoader(TensorDataset(np.zeros((3, 784), np.float32), np.zeros(3, np.int64)), 10)
    loss, acc = evaluate(model, one)
    assert np.isfinite(loss) and 0 <= acc <= 1


def test_language_model_epochs_refuse_a_single_row():
    from mininet.models import LanguageModel
    model = LanguageModel(8, 5, 8, 1, "lstm")
    opt = make_optimizer("adam", model.parameters(), 1e-3)
    one_row = batchify(np.arange(5) % 5, 4)      # 5 tokens, batch 4: one row, no target
    assert one_row.shape == (1, 4)
    with pytest.raises(ValueError, match="evaluate_lm: 1 row"):
        evaluate_lm(model, one_row, 3)
    with pytest.raises(ValueError, match="train_lm_epoch: 1 row"):
        train_lm_epoch(model, one_row, opt, 3)
    assert np.isfinite(evaluate_lm(model, batchify(np.arange(8) % 5, 4), 3))


LOADER_ERROR = """if True:
    import sys
    import mininet.data.mnist as mnist
    from mininet.data import DataError

    class HostileFileError(DataError):
        '''A loader error class the CLI has never heard of, defined outside mininet.data.'''

    def load(*a, **k):
        raise HostileFileError("/data/train-images-idx3-ubyte.gz: header says 10**12 images")
    mnist.MNISTDataset.load = classmethod(load)
    sys.argv = ["mininet", "train", "mnist", "--epochs", "1"]
    from mininet.cli import main
    main()
"""


def test_a_loader_error_of_any_class_is_one_line_exit_2():
    """The loaders' errors share one base class, DataError, which the CLI catches (it used to
    scan sys.modules for the classes mininet.data's modules define)."""
    from mininet.data import CIFARError, CorpusError, DataError, MNISTError
    assert all(issubclass(e, DataError) for e in (CIFARError, CorpusError, MNISTError))
    r = subprocess.run([sys.executable, "-c", LOADER_ERROR], capture_output=True, text=True,
                       timeout=120, env=dict(os.environ, MININET_NUM_THREADS="1", COLUMNS="200"))
    assert_one_line_error(r, "train-images-idx3-ubyte.gz", "10**12 images")


def test_corrupt_data_files_are_one_line_exit_2(tmp_path):
    """Whatever the loaders raise for them (the data helper's classes), one line naming it."""
    _mnist(tmp_path, 20, 20)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b not really gzip")
    r = _cli("train", "mnist", "--data-dir", tmp_path, "--epochs", "1", "--model", "softmax")
    assert_one_line_error(r, "t10k-labels-idx1-ubyte.gz")
    cifar = tmp_path / "c"
    cifar.mkdir()
    write_cifar_folder(cifar, train_size=3, test_size=3)
    (cifar / "cifar-10-batches-py" / "test_batch").write_bytes(b"\x80\x04junk")
    r = _cli("train", "cifar10", "--data-dir", cifar, "--epochs", "1")
    assert_one_line_error(r, "test_batch")
    (tmp_path / "p").mkdir()
    corpus = _corpus(tmp_path / "p", 40, 40)
    (corpus / "valid.txt").write_bytes(b"\xff\xfe bad utf-8 \xc3\x28\n")
    r = _cli("train", "ptb", "--data-dir", corpus, "--epochs", "1", "--batch-size", "4")
    assert_one_line_error(r, "valid.txt")
