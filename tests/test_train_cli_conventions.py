"""`mininet train`'s conventions (issue 23 item 8) and checkpoints that rebuild their model
(issue 24 item 4): --help names every dataset; a --data-dir the user names is read, not
created or filled, unless --download; each epoch is printed once; a resumed run's --json
holds the epochs before the resume; --plot draws the history; a checkpoint records the
model's registry name and arguments and a format version."""
import json
import shutil
import sys
import types

import numpy as np
import pytest

from mininet import training
from mininet.autograd import Tensor
from mininet.cli.train import DATASETS, TrainConfig, run
from mininet.data import DataError
from mininet.models import registry
from mininet.training import CheckpointError, build_from_checkpoint, load_checkpoint
from conftest import SENTENCES, assert_one_line_error, cli, write_corpus


def _train(folder, *extra):
    return cli("train", "mnist", "--data-dir", str(folder), "--batch-size", "50", *extra)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"), SENTENCES * 20, SENTENCES, SENTENCES[:1])


def _ptb(folder, *extra):
    return cli("train", "ptb", "--data-dir", str(folder), "--batch-size", "4", "--seq-len", "8",
               "--hidden-size", "16", "--embedding-size", "8", "--layers", "1", "--lr", "0.02",
               *extra)


# --help, TrainConfig ---------------------------------------------------------------------------
def test_help_names_every_dataset_and_model():
    r = cli("train", "--help")
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.replace("│", " ").split())
    for title in ("MNIST", "Fashion-MNIST", "CIFAR-10", "PTB"):
        assert title in text, title
    for name in registry.MODELS:
        assert name in text, name
    assert "--download" in text and "--plot" in text


def test_train_config_fills_the_registry_defaults_and_names_bad_flags():
    cfg = TrainConfig().checked()
    assert (cfg.model, cfg.epochs, cfg.batch_size) == ("mlp", 20, 100)
    assert TrainConfig(model="cnn").checked().epochs == 10
    lm = TrainConfig("ptb", model="lstm-lm").checked()
    assert (lm.model, lm.batch_size) == ("lstm", 20)
    assert TrainConfig("cifar10").checked().model == "resnet9"
    for cfg, words in ((TrainConfig(lr=0.0), "--lr"), (TrainConfig(model="lstm"), "--model must be"),
                       (TrainConfig("imagenet"), "unknown dataset"),
                       (TrainConfig(optimizer="lbfgs"), "--optimizer"),
                       (TrainConfig("ptb", clip=-1.0), "--clip")):
        with pytest.raises(ValueError, match=words):
            cfg.checked()


# --data-dir and --download ---------------------------------------------------------------------
@pytest.mark.parametrize("dataset", list(DATASETS))
def test_a_named_data_dir_that_is_not_there_is_reported_and_not_created(tmp_path, dataset):
    missing = tmp_path / "typo"
    r = cli("train", dataset, "--data-dir", str(missing), "--epochs", "1")
    assert_one_line_error(r, f"no {DATASETS[dataset]} files in {missing}",
                          "pass --download to fetch them there")
    assert not missing.exists()


@pytest.mark.parametrize("dataset", list(DATASETS))
def test_a_named_data_dir_without_the_files_is_not_filled(tmp_path, dataset):
    """Not a download attempt (that would say "could not download": MININET_OFFLINE is
    set): the files are missing, and --download is how to fetch them."""
    r = cli("train", dataset, "--data-dir", str(tmp_path), "--epochs", "1")
    assert_one_line_error(r, str(tmp_path), "not found", "--download")
    assert list(tmp_path.iterdir()) == []


def test_download_fetches_into_a_named_folder(tmp_path):
    missing = tmp_path / "new"
    r = cli("train", "mnist", "--data-dir", str(missing), "--download", "--epochs", "1")
    assert_one_line_error(r, "could not download", "MININET_OFFLINE")   # it tried


@pytest.fixture
def fake_download(monkeypatch, tiny_mnist):
    """MNIST's download replaced by a copy from tiny_mnist; the folders it filled."""
    from mininet.data import mnist
    filled = []

    def download(name, folder, progress=None, mirrors=None, md5=None):
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(tiny_mnist / name, folder / name)
        filled.append(folder)
        return folder / name
    monkeypatch.setattr(mnist, "download", download)
    return filled


def _quiet(cfg):
    from rich.console import Console
    return run(cfg, console=Console(quiet=True))


def test_the_default_folder_is_created_and_filled(tmp_path, monkeypatch, fake_download, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("MININET_DATA", raising=False)
    result = _quiet(TrainConfig(model="softmax", epochs=1, threads=1, json_out=True))
    default = tmp_path / "cache" / "mininet" / "mnist"
    assert set(fake_download) == {default} and len(fake_download) == 4
    assert sorted(p.name for p in default.iterdir()) == sorted(
        ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
         "t10k-labels-idx1-ubyte.gz"])
    assert len(result["epochs"]) == 1


def test_a_named_folder_is_filled_only_with_download(tmp_path, fake_download, capsys):
    named = tmp_path / "named"
    with pytest.raises(DataError, match="no MNIST files in .*named"):
        _quiet(TrainConfig(model="softmax", epochs=1, threads=1, data_dir=str(named)))
    assert fake_download == [] and not named.exists()
    _quiet(TrainConfig(model="softmax", epochs=1, threads=1, data_dir=str(named), download=True,
                       json_out=True))
    assert set(fake_download) == {named} and len(fake_download) == 4


# output -------------------------------------------------------------------------------------------
def test_each_epoch_is_printed_once(tiny_mnist):
    r = _train(tiny_mnist, "--epochs", "2", "--model", "softmax")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    for k in (1, 2):
        mine = [line for line in lines if line.startswith(f"epoch {k}/2:")]
        assert len(mine) == 1, r.stdout
        loss = mine[0].split("train loss ")[1].split(",")[0]
        assert sum(loss in line for line in lines) == 1, r.stdout   # no table repeats it
    assert lines[-1].startswith("final test accuracy:")
    assert "(300 train / 100 test, 1 thread)" in lines[0]


def test_a_resumed_json_holds_the_epochs_before_the_resume(tmp_path, tiny_mnist):
    ck = tmp_path / "ck.npz"
    first = _train(tiny_mnist, "--epochs", "2", "--save", str(ck), "--json")
    assert first.returncode == 0, first.stderr
    before = json.loads(first.stdout)["epochs"]
    assert [row["epoch"] for row in training.read_checkpoint_header(ck)["history"]] == [1, 2]
    r = _train(tiny_mnist, "--epochs", "3", "--resume", str(ck), "--json")
    assert r.returncode == 0, r.stderr
    after = json.loads(r.stdout)
    assert [row["epoch"] for row in after["epochs"]] == [1, 2, 3]
    assert after["epochs"][:2] == before
    assert after["final_test_acc"] == after["epochs"][-1]["test_acc"]
    assert "epoch 1/3" not in r.stderr and "epoch 3/3" in r.stderr   # the new epoch alone printed


def test_a_resumed_ptb_json_holds_the_epochs_before_the_resume(tmp_path, corpus):
    ck = tmp_path / "lm.npz"
    first = _ptb(corpus, "--epochs", "1", "--json", "--save", str(ck))
    assert first.returncode == 0, first.stderr
    r = _ptb(corpus, "--epochs", "2", "--json", "--resume", str(ck))
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)["epochs"]
    assert [row["epoch"] for row in rows] == [1, 2]
    assert rows[0] == json.loads(first.stdout)["epochs"][0]


# --plot ---------------------------------------------------------------------------------------
@pytest.fixture
def fake_plot(monkeypatch):
    """mininet.benchmark.plot replaced by a recorder of plot_training's calls."""
    calls = []
    module = types.ModuleType("mininet.benchmark.plot")
    module.plot_training = lambda history, path, metric="accuracy": calls.append(
        (history, str(path), metric))
    monkeypatch.setitem(sys.modules, "mininet.benchmark.plot", module)
    return calls


def test_plot_gets_the_history_with_its_metric(tmp_path, tiny_mnist, corpus, fake_plot, capsys):
    out = tmp_path / "out.png"
    _quiet(TrainConfig(model="softmax", epochs=2, threads=1, data_dir=str(tiny_mnist),
                       plot=str(out), json_out=True))
    history, path, metric = fake_plot[-1]
    assert path == str(out) and metric == "accuracy" and [h["epoch"] for h in history] == [1, 2]
    assert set(history[0]) == {"epoch", "train_loss", "train_acc", "test_loss", "test_acc"}
    assert all(0 <= h["test_acc"] <= 1 and h["train_loss"] > 0 for h in history)
    result = _quiet(TrainConfig("ptb", epochs=1, threads=1, data_dir=str(corpus), batch_size=4,
                                seq_len=8, hidden_size=8, embedding_size=8, layers=1,
                                plot=str(out), json_out=True))
    history, _, metric = fake_plot[-1]
    assert metric == "perplexity" and history[0]["train_acc"] is None
    # the mean loss per token, whose exp is the perplexity that --json reports
    assert np.isclose(np.exp(history[0]["test_loss"]), result["epochs"][0]["valid_ppl"])
    assert np.isclose(np.exp(history[0]["train_loss"]), result["epochs"][0]["train_ppl"])


def test_plot_draws_a_file(tmp_path, tiny_mnist):
    """With mininet.benchmark.plot and what it draws with installed."""
    pytest.importorskip("mininet.benchmark.plot")
    out = tmp_path / "out.png"
    r = _train(tiny_mnist, "--epochs", "2", "--model", "softmax", "--plot", str(out))
    if r.returncode == 2 and "cannot draw plots here" in r.stderr:
        pytest.skip(r.stderr)
    assert r.returncode == 0, r.stderr
    assert out.stat().st_size > 0 and f"plot written to {out}" in r.stdout


def test_plot_to_a_folder_fails_before_training(tmp_path, tiny_mnist):
    assert_one_line_error(_train(tiny_mnist, "--epochs", "1", "--plot", str(tmp_path)),
                          "--plot", "directory")


def test_plot_to_a_file_type_it_cannot_write_fails_before_training(tmp_path, tiny_mnist):
    pytest.importorskip("mininet.benchmark.plot")
    r = _train(tiny_mnist, "--epochs", "1", "--plot", str(tmp_path / "out.jpg"))
    assert_one_line_error(r, "--plot", "out.jpg", ".png or .svg")


# checkpoints: version, arch, history; rebuilding the model -----------------------------------
def test_a_checkpoint_records_the_model_and_rebuilds_it(tmp_path, tiny_mnist):
    ck = tmp_path / "cnn.npz"
    assert _train(tiny_mnist, "--epochs", "1", "--model", "cnn", "--save", str(ck)).returncode == 0
    header = training.read_checkpoint_header(ck)
    assert header["version"] == training.CHECKPOINT_VERSION == 2
    assert header["arch"] == {"name": "cnn", "kwargs": registry._plain(dict(registry.get("cnn").kwargs))}
    model, header = build_from_checkpoint(ck)
    assert type(model).__name__ == "CNN" and header["epoch"] == 1 and not model.training
    with np.load(ck) as stored:
        for k, v in model.state_dict().items():
            np.testing.assert_array_equal(v, stored[f"model/{k}"])
    x = Tensor(np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32))
    assert model(x).shape == (2, 10)


def test_a_ptb_checkpoint_records_the_sizes_and_the_vocabulary(tmp_path, corpus):
    ck = tmp_path / "lm.npz"
    assert _ptb(corpus, "--epochs", "1", "--save", str(ck), "--model", "rnn").returncode == 0
    header = training.read_checkpoint_header(ck)
    vocab = header["meta"]["vocab"]
    assert header["arch"] == {"name": "rnn", "kwargs": {"vocab_size": vocab, "embedding_size": 8,
                                                       "hidden_size": 16, "num_layers": 1}}
    model, _ = build_from_checkpoint(ck)
    out, h = model(Tensor(np.zeros((3, 2), np.int64), dtype="int64"))
    assert out.shape == (6, vocab) and h.shape == (1, 2, 16)


def _as_version_1(src, dst):
    """The checkpoint as mininet wrote it before the version field."""
    with np.load(src) as d:
        data = {k: d[k] for k in d.files}
    h = json.loads(bytes(data["header"]).decode())
    for key in ("version", "arch", "history"):
        del h[key]
    data["header"] = np.frombuffer(json.dumps(h).encode(), dtype=np.uint8)
    np.savez(dst, **data)
    return dst


def test_a_version_1_checkpoint_still_loads_resumes_and_rebuilds(tmp_path, tiny_mnist, corpus):
    ck = tmp_path / "ck.npz"
    assert _train(tiny_mnist, "--epochs", "1", "--model", "softmax", "--save", str(ck)).returncode == 0
    old = _as_version_1(ck, tmp_path / "old.npz")
    header = training.read_checkpoint_header(old)
    assert (header["version"], header["arch"], header["history"]) == (1, None, [])
    model, _ = build_from_checkpoint(old)                   # the meta's model at its defaults
    assert type(model).__name__ == "SoftmaxRegression"
    r = _train(tiny_mnist, "--epochs", "2", "--model", "softmax", "--resume", str(old), "--json")
    assert r.returncode == 0, r.stderr
    assert [row["epoch"] for row in json.loads(r.stdout)["epochs"]] == [2]   # no history kept
    lm = tmp_path / "lm.npz"
    assert _ptb(corpus, "--epochs", "1", "--save", str(lm)).returncode == 0
    with pytest.raises(CheckpointError, match="format version 1 records model 'lstm' but not the "
                                              "model's constructor arguments"):
        build_from_checkpoint(_as_version_1(lm, tmp_path / "old_lm.npz"))


def _retagged(src, dst, **fields):
    with np.load(src) as d:
        data = {k: d[k] for k in d.files}
    h = {**json.loads(bytes(data["header"]).decode()), **fields}
    data["header"] = np.frombuffer(json.dumps(h).encode(), dtype=np.uint8)
    np.savez(dst, **data)
    return dst


@pytest.fixture
def saved(tmp_path):
    model = registry.build("softmax")
    opt = training.make_optimizer("adam", model.parameters(), 1e-3)
    path = tmp_path / "good.npz"
    training.save_checkpoint(path, model, opt, 2, {"model": "softmax"},
                             history=[{"epoch": 1, "train_loss": 0.5, "train_acc": None},
                                      {"epoch": 2, "train_loss": 0.4, "train_acc": 0.9}])
    return path


def test_a_newer_version_is_refused_saying_so(saved, tmp_path):
    bad = _retagged(saved, tmp_path / "v3.npz", version=3)
    model = registry.build("softmax")
    with pytest.raises(CheckpointError, match=r"v3.npz: format version 3 was written by a newer "
                                              r"mininet; this one reads versions 1 to 2"):
        load_checkpoint(bad, model)
    assert training.checkpoint_epoch(bad) is None


@pytest.mark.parametrize("field, value", [
    ("version", 0), ("version", "2"), ("version", 1.5), ("version", True),
    ("arch", "mlp"), ("arch", {"name": "mlp"}), ("arch", {"name": 3, "kwargs": {}}),
    ("arch", {"name": "mlp", "kwargs": {"hidden": {"deep": 1}}}),
    ("history", {"epoch": 1}), ("history", [{"epoch": 1}] * 3), ("history", [{"epoch": 7}]),
    ("history", [{"epoch": 1, "loss": "low"}]), ("history", [{"loss": 1.0}]),
    ("history", [{"epoch": 1, **{f"k{i}": 1.0 for i in range(20)}}]),
])
def test_tampered_new_fields_are_checkpoint_errors(saved, tmp_path, field, value):
    bad = _retagged(saved, tmp_path / "bad.npz", **{field: value})
    with pytest.raises(CheckpointError, match="bad.npz") as info:
        load_checkpoint(bad, registry.build("softmax"))
    assert field in str(info.value)


def test_build_from_checkpoint_refuses_an_unknown_model(saved, tmp_path):
    bad = _retagged(saved, tmp_path / "vgg.npz", arch={"name": "vgg", "kwargs": {}})
    with pytest.raises(CheckpointError, match="vgg.npz: cannot build its model 'vgg'"):
        build_from_checkpoint(bad)
    bad = _retagged(saved, tmp_path / "wide.npz", arch={"name": "softmax", "kwargs": {"in_dim": 5}})
    with pytest.raises(CheckpointError, match="wide.npz: does not fit"):
        build_from_checkpoint(bad)


def test_the_model_alone_loads_without_reading_the_optimizer(saved):
    """load_checkpoint(path, model) restores the weights and reads no optimizer entry."""
    model = registry.build("softmax")
    header = load_checkpoint(saved, model)
    assert header["epoch"] == 2 and [r["epoch"] for r in header["history"]] == [1, 2]
    with np.load(saved) as d:
        np.testing.assert_array_equal(model.state_dict()["linear.weight"], d["model/linear.weight"])


def test_a_history_too_long_for_the_header_is_refused_before_writing(tmp_path):
    model = registry.build("softmax")
    opt = training.make_optimizer("sgd", model.parameters(), 0.1)
    path = tmp_path / "long.npz"
    rows = [{"epoch": 1, **{f"metric_{i}": 1.0 / 3 for i in range(15)}}] * 60000
    with pytest.raises(ValueError, match="history|header"):
        training.save_checkpoint(path, model, opt, 60000, history=rows)
    assert not path.exists()
