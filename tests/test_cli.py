"""The command line as a user runs it: errors are one line on stderr with exit 2 (never on
stdout under --json), training stops on a non-finite loss, --save/--resume are checked,
Ctrl-C leaves a usable checkpoint. Runs `python -m mininet.cli` on a small generated MNIST."""
import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from conftest import (SENTENCES, assert_one_line_error, cli, run_python, write_cifar_folder,
                      write_corpus)


@pytest.mark.parametrize("args, words", [
    (["train", "mnist", "--device", "foo", "--json"], ["--device", "foo"]),
    (["bench", "matmul", "--device", "foo"], ["--device"]),
    (["bench", "train", "--models", "foo", "--json"], ["--models", "foo"]),
    (["train", "mnist", "--threads", "-2"], ["--threads"]),
    (["bench", "matmul", "--threads", "0"], ["--threads"]),
    (["bench", "matmul", "--sizes", "abc", "--json"], ["--sizes", "abc"]),
    (["bench", "conv", "--shapes", "1,2,3"], ["--shapes"]),
    (["train", "mnist", "--lr", "-1"], ["--lr"]),
    (["train", "mnist", "--lr", "nan"], ["--lr"]),
    (["train", "mnist", "--lr", "abc"], ["--lr"]),
    (["train", "mnist", "--weight-decay", "-0.1"], ["--weight-decay"]),
    (["train", "mnist", "--optimizer", "foo"], ["--optimizer"]),
    (["train", "mnist", "--model", "foo"], ["--model"]),
    (["train", "mnist", "--bogus"], ["--bogus"]),
])
def test_bad_flags_are_one_line_errors(args, words):
    assert_one_line_error(cli(*args), *words)


def test_cuda_without_pycuda_or_gpu_is_a_clear_error():
    from mininet.backend import cuda_status
    if cuda_status()[0]:
        pytest.skip("CUDA is available here: this checks the error where it is not")
    for args in (["train", "mnist", "--device", "cuda"], ["bench", "matmul", "--device", "cuda"],
                 ["bench", "conv", "--device", "cuda", "--json"]):
        assert_one_line_error(cli(*args), "--device cuda", "unavailable")


@pytest.mark.parametrize("value", ["abc", "0", "-3"])
def test_bad_thread_variable(value):
    r = cli("--version", env={"MININET_NUM_THREADS": value})
    assert r.returncode == 0 and "mininet" in r.stdout      # --version still works
    r = cli("bench", "matmul", "--sizes", "8", "--json", env={"MININET_NUM_THREADS": value})
    assert_one_line_error(r, "MININET_NUM_THREADS", repr(value))
    r = run_python("import mininet; print(mininet.get_num_threads())",
                   env=dict(os.environ, MININET_NUM_THREADS=value))
    assert r.returncode == 0 and int(r.stdout) >= 1 and r.stderr == ""   # import never fails


def test_save_is_checked_before_training(tmp_path, tiny_mnist):
    assert_one_line_error(cli("train", "mnist", "--save", str(tmp_path), "--data-dir", str(tiny_mnist)),
                          "--save", "directory")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = cli("train", "mnist", "--save", str(blocker / "ck.npz"), "--data-dir", str(tiny_mnist))
    assert_one_line_error(r, "--save", str(blocker / "ck.npz"))
    assert ".tmp" not in r.stderr


def _train(tiny_mnist, *extra, **kw):
    return cli("train", "mnist", "--data-dir", str(tiny_mnist), "--batch-size", "50", *extra, **kw)


@pytest.mark.slow
def test_train_save_resume_and_checks(tmp_path, tiny_mnist):
    ck = tmp_path / "ck.npz"
    (tmp_path / ".ck.npz.stale.tmp").write_bytes(b"left by a killed save")
    r = _train(tiny_mnist, "--epochs", "2", "--save", str(ck))
    assert r.returncode == 0, r.stderr
    for k in (1, 2):                                    # one line per epoch, as it ends
        assert f"epoch {k}/2: train loss" in r.stdout
    assert stat.S_IMODE(os.stat(ck).st_mode) == 0o666 & ~_umask()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.npz"]   # stale temp file removed

    r = _train(tiny_mnist, "--epochs", "2", "--resume", str(ck))
    assert r.returncode == 0 and "nothing to do" in r.stderr and "2 epochs" in r.stderr
    assert_one_line_error(_train(tiny_mnist, "--epochs", "3", "--model", "cnn", "--resume", str(ck)),
                          "--model mlp", "not cnn")
    assert_one_line_error(cli("train", "fashion-mnist", "--data-dir", str(tiny_mnist), "--epochs", "3",
                              "--resume", str(ck)), "dataset mnist", "not fashion-mnist")
    assert_one_line_error(_train(tiny_mnist, "--epochs", "3", "--optimizer", "sgd", "--resume", str(ck)),
                          "--optimizer adam", "not sgd")
    r = _train(tiny_mnist, "--epochs", "3", "--resume", str(ck), "--json")
    assert r.returncode == 0, r.stderr
    import json
    assert [e["epoch"] for e in json.loads(r.stdout)["epochs"]] == [1, 2, 3]   # with the saved ones


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("damage", ["empty", "truncated", "flipped", "text"])
def test_damaged_resume_file(tmp_path, tiny_mnist, damage):
    ck = tmp_path / "ck.npz"
    assert _train(tiny_mnist, "--epochs", "1", "--save", str(ck)).returncode == 0
    raw = bytearray(ck.read_bytes())
    if damage == "empty":
        raw = b""
    elif damage == "truncated":
        raw = raw[:len(raw) // 2]
    elif damage == "flipped":
        for i in range(100, len(raw), 97):
            raw[i] ^= 0xFF
    else:
        raw = b"hello"
    ck.write_bytes(bytes(raw))
    assert_one_line_error(_train(tiny_mnist, "--epochs", "2", "--resume", str(ck)), "--resume",
                          str(ck))


def test_corrupt_gzip_names_the_file(tmp_path, tiny_mnist):
    import shutil
    folder = tmp_path / "mnist"
    shutil.copytree(tiny_mnist, folder)
    f = folder / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(f.read_bytes())
    raw[-12] ^= 0x55           # inside the deflate stream, before the crc trailer
    f.write_bytes(bytes(raw))
    r = _train(folder, "--epochs", "1", "--json")
    assert_one_line_error(r, str(f))


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, tiny_mnist):
    ck = tmp_path / "ck.npz"
    assert _train(tiny_mnist, "--epochs", "1", "--save", str(ck)).returncode == 0
    good = ck.read_bytes()
    r = _train(tiny_mnist, "--epochs", "3", "--lr", "1e30", "--optimizer", "sgd", "--save", str(ck),
               "--model", "softmax")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "loss is" in r.stderr and ("nan" in r.stderr or "inf" in r.stderr)
    assert ck.read_bytes() == good


def test_ctrl_c_names_the_checkpoint_and_exits_130(tmp_path, tiny_mnist):
    ck = tmp_path / "ck.npz"
    e = dict(os.environ, MININET_NUM_THREADS="1", COLUMNS="200")
    p = subprocess.Popen([sys.executable, "-m", "mininet.cli", "train", "mnist", "--data-dir",
                          str(tiny_mnist), "--batch-size", "10", "--epochs", "1000", "--save",
                          str(ck)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e)
    deadline = time.time() + 60
    while not ck.exists() and time.time() < deadline:
        time.sleep(0.1)
    assert ck.exists(), "no checkpoint within 60 s"
    time.sleep(0.3)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "interrupted" in lines[0] and str(ck) in lines[0], err
    assert "--resume" in lines[0]
    assert "train loss" in out          # the finished epochs' table
    from mininet.models import build_model, load_checkpoint
    from mininet.models.train import make_optimizer
    model = build_model("mlp")
    assert load_checkpoint(ck, model, make_optimizer("adam", model.parameters(), 1e-3))["epoch"] >= 1


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    return write_corpus(folder, SENTENCES * 20, SENTENCES, SENTENCES[:1])


def _ptb(folder, *extra):
    return cli("train", "ptb", "--data-dir", str(folder), "--batch-size", "4", "--seq-len", "8",
               "--hidden-size", "32", "--embedding-size", "16", "--layers", "1", "--lr", "0.02",
               *extra)


def test_train_ptb_lowers_perplexity_saves_and_resumes(tmp_path, tiny_corpus):
    import json
    ck = tmp_path / "lm.npz"
    r = _ptb(tiny_corpus, "--epochs", "3", "--json", "--save", str(ck))
    assert r.returncode == 0, r.stderr
    ppl = [e["valid_ppl"] for e in json.loads(r.stdout)["epochs"]]
    assert ppl[0] > ppl[-1] and ppl[-1] < 3, ppl
    assert "epoch 3/3: train ppl" in r.stderr
    r = _ptb(tiny_corpus, "--epochs", "4", "--json", "--resume", str(ck))
    assert r.returncode == 0, r.stderr
    assert [e["epoch"] for e in json.loads(r.stdout)["epochs"]] == [1, 2, 3, 4]
    assert_one_line_error(_ptb(tiny_corpus, "--epochs", "5", "--model", "rnn", "--resume", str(ck)),
                          "--model lstm", "not rnn")


def test_train_ptb_transformer(tiny_corpus):
    import json
    r = _ptb(tiny_corpus, "--epochs", "2", "--model", "transformer", "--json")
    assert r.returncode == 0, r.stderr
    ppl = [e["valid_ppl"] for e in json.loads(r.stdout)["epochs"]]
    assert ppl[-1] < ppl[0], ppl


def test_train_ptb_errors(tmp_path, tiny_corpus):
    assert_one_line_error(_ptb(tiny_corpus, "--model", "cnn"), "--model", "rnn, lstm, transformer")
    # nothing there and no internet: the download fails with the offline advice
    r = _ptb(tmp_path, "--epochs", "1")
    assert_one_line_error(r, str(tmp_path), "MININET_PTB_DATA")
    assert list(tmp_path.glob("*.part")) == []
    assert_one_line_error(_ptb(tiny_corpus, "--clip", "-1"), "--clip")


def test_train_cifar10_resnet9_on_generated_batches(tmp_path):
    """`mininet train cifar10` reads the standard pickles (written here) and trains ResNet9."""
    import json
    write_cifar_folder(tmp_path)
    r = cli("train", "cifar10", "--data-dir", str(tmp_path), "--epochs", "1", "--batch-size", "25",
            "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["dataset"] == "cifar10" and out["model"] == "resnet9" and len(out["epochs"]) == 1
    assert_one_line_error(cli("train", "cifar10", "--model", "cnn", "--data-dir", str(tmp_path)),
                          "--model", "resnet9")
    assert_one_line_error(cli("train", "cifar10", "--data-dir", str(tmp_path / "none")),
                          f"no CIFAR-10 files in {tmp_path / 'none'}", "--download")
    assert_one_line_error(cli("train", "cifar10", "--data-dir", str(tmp_path / "none"), "--download"),
                          "could not download", "cifar-10-python.tar.gz", "MININET_OFFLINE")
