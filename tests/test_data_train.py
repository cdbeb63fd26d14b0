"""MNIST loading (real files and corrupt ones), DataLoader, training, checkpoints."""
import gzip

import numpy as np
import pytest

import mininet
from mininet.data import DataLoader, MNISTDataset, MNISTError, TensorDataset, read_idx
from mininet.data.mnist import ensure_mnist
from mininet.models import MLP, build_model, evaluate, fit, load_checkpoint, save_checkpoint
from mininet.models.train import make_optimizer
from conftest import write_idx


def test_real_mnist(mnist_path):
    train = MNISTDataset.load("train", mnist_path, download=False)
    test = MNISTDataset.load("test", mnist_path, download=False)
    assert len(train) == 5000 and len(test) == 10000
    x, y = test[np.arange(3)]
    assert x.shape == (3, 784) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    assert np.bincount(test.labels).sum() == 10000 and set(test.labels) == set(range(10))
    assert np.bincount(train.labels).tolist() == [500] * 10


def test_generated_idx_plain_and_gzipped(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    labels = np.arange(7, dtype=np.uint8)
    write_idx(tmp_path / "i.gz", imgs)
    write_idx(tmp_path / "l", labels, gz=False)
    ds = MNISTDataset(tmp_path / "i.gz", tmp_path / "l", flatten=False)
    np.testing.assert_allclose(ds.images[:, 0] * 255, imgs, atol=1e-4)
    np.testing.assert_array_equal(ds.labels, labels)


def test_corrupt_files_name_the_file(tmp_path):
    imgs = np.zeros((4, 28, 28), np.uint8)
    write_idx(tmp_path / "good.gz", imgs)
    raw = gzip.open(tmp_path / "good.gz").read()
    with gzip.open(tmp_path / "trunc.gz", "wb") as f:
        f.write(raw[:-100])
    with pytest.raises(MNISTError, match="trunc.gz.*truncated"):
        read_idx(tmp_path / "trunc.gz", 3)
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\x12\x34\x08\x03" + raw[4:]))
    with pytest.raises(MNISTError, match="bad.gz.*magic"):
        read_idx(tmp_path / "bad.gz", 3)
    (tmp_path / "broken.gz").write_bytes(open(tmp_path / "good.gz", "rb").read()[:30])
    with pytest.raises(MNISTError, match="broken.gz"):
        read_idx(tmp_path / "broken.gz", 3)
    with pytest.raises(MNISTError, match="expected an IDX file of 1"):
        read_idx(tmp_path / "good.gz", 1)


def test_missing_files_offline_message(tmp_path):
    with pytest.raises(MNISTError, match="not found.*Put the four MNIST files"):
        ensure_mnist(tmp_path, download_missing=False)


def test_download_failure_leaves_no_partial_file(tmp_path, monkeypatch):
    from mininet.data import mnist
    monkeypatch.delenv("MININET_OFFLINE")   # a closed loopback port: no real download
    with pytest.raises(MNISTError, match="could not download"):
        mnist.download("t10k-labels-idx1-ubyte.gz", tmp_path, mirrors=("http://127.0.0.1:9/",))
    assert list(tmp_path.iterdir()) == []


def test_dataloader_batches_shuffle_droplast():
    ds = TensorDataset(np.arange(10, dtype=np.float32).reshape(10, 1), np.arange(10))
    batches = list(DataLoader(ds, batch_size=4))
    assert [b[0].shape[0] for b in batches] == [4, 4, 2]
    assert batches[0][1].dtype == np.int64
    assert len(DataLoader(ds, 4, drop_last=True)) == 2
    a = [b[1].numpy().tolist() for b in DataLoader(ds, 10, shuffle=True, seed=1)]
    b = [b[1].numpy().tolist() for b in DataLoader(ds, 10, shuffle=True, seed=1)]
    assert a == b and sorted(a[0]) == list(range(10)) and a[0] != list(range(10))


def _loaders(mnist_path, flatten=True):
    train = MNISTDataset.load("train", mnist_path, download=False, flatten=flatten)
    test = MNISTDataset.load("test", mnist_path, download=False, flatten=flatten)
    return DataLoader(train, 100, shuffle=True, seed=0), DataLoader(test, 1000)


def test_short_training_reaches_sane_accuracy(mnist_path):
    mininet.init.manual_seed(0)
    train, test = _loaders(mnist_path)
    model = MLP()
    opt = make_optimizer("adam", model.parameters(), 2e-3)
    hist = fit(model, train, test, opt, epochs=3)
    assert hist[-1]["test_acc"] > 0.88, hist


@pytest.mark.slow
def test_short_cnn_run_beats_the_mlp(mnist_path):
    """Same data, epochs and optimizer: the CNN ends above the MLP."""
    accs = {}
    for name in ("mlp", "cnn"):
        mininet.init.manual_seed(0)
        train, test = _loaders(mnist_path, flatten=name != "cnn")
        model = build_model(name)
        opt = make_optimizer("adam", model.parameters(), 2e-3)
        accs[name] = fit(model, train, test, opt, epochs=2)[-1]["test_acc"]
    assert accs["cnn"] > accs["mlp"] and accs["cnn"] > 0.93, accs


def test_checkpoint_resume_is_identical(mnist_path, tmp_path):
    def run(epochs, resume=None, save=None):
        mininet.init.manual_seed(0)
        train, test = _loaders(mnist_path)
        model = build_model("mlp")
        opt = make_optimizer("momentum", model.parameters(), 0.05)
        start = 0
        if resume:
            start = load_checkpoint(resume, model, opt)["epoch"]
            train.rng = np.random.default_rng(100 + start)
        for e in range(start, epochs):
            train.rng = np.random.default_rng(100 + e)
            fit(model, train, test, opt, e + 1, e)
            if save:
                save_checkpoint(save, model, opt, e + 1)
        return model.state_dict()

    straight = run(2)
    run(1, save=tmp_path / "ck.npz")
    resumed = run(2, resume=tmp_path / "ck.npz")
    for k in straight:
        np.testing.assert_array_equal(straight[k], resumed[k])


def test_crash_while_saving_keeps_old_checkpoint(tmp_path, monkeypatch):
    model = MLP(hidden=8)
    opt = make_optimizer("adam", model.parameters(), 1e-3)
    path = tmp_path / "ck.npz"
    save_checkpoint(path, model, opt, 1)
    before = path.read_bytes()

    def boom(*a, **k):
        raise KeyboardInterrupt("power cut")
    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, model, opt, 2)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ck.npz"]
    (tmp_path / "junk.npz").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.npz"):
        load_checkpoint(tmp_path / "junk.npz", model, opt)


class _Always:
    """A transform that records what it was given and flips horizontally."""

    def __init__(self):
        self.seen = []

    def __call__(self, x):
        self.seen.append(x.shape)
        return x[..., ::-1].copy()


def test_mnist_transforms_see_images_not_flat_rows(tmp_path):
    from mininet.data.transforms import RandomCrop, RandomFlipHorizontal
    imgs = np.random.default_rng(1).integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "i.gz", imgs)
    write_idx(tmp_path / "l", np.arange(5, dtype=np.uint8), gz=False)
    rec = _Always()
    ds = MNISTDataset(tmp_path / "i.gz", tmp_path / "l", transforms=[rec])
    x, _ = ds[np.arange(5)]
    assert rec.seen == [(1, 28, 28)] * 5                 # once per image, as an image
    np.testing.assert_allclose(x.reshape(5, 28, 28) * 255, imgs[:, :, ::-1], atol=1e-4)
    x1, _ = ds[2]
    np.testing.assert_allclose(x1.reshape(28, 28) * 255, imgs[2, :, ::-1], atol=1e-4)
    flip = MNISTDataset(tmp_path / "i.gz", tmp_path / "l", transforms=[RandomFlipHorizontal(1.0)])
    np.testing.assert_allclose(flip[np.arange(5)][0].reshape(5, 28, 28) * 255, imgs[:, :, ::-1],
                               atol=1e-4)                 # a mirror image, not a 180-degree turn
    crop = MNISTDataset(tmp_path / "i.gz", tmp_path / "l", transforms=[RandomCrop(3)],
                        flatten=False)
    xc, _ = crop[np.arange(5)]
    assert xc.shape == (5, 1, 28, 28)
    for i in range(5):   # each image is its own shift of the original (zero-filled border)
        src = np.pad(imgs[i], 3)
        assert any(np.allclose(xc[i, 0] * 255, src[3 + a:31 + a, 3 + b:31 + b], atol=1e-3)
                   for a in range(-3, 4) for b in range(-3, 4))


def test_every_byte_flip_of_a_gzip_is_an_mnist_error_or_harmless(tmp_path):
    """zlib.error (a flip inside the deflate stream) used to escape as a traceback."""
    labels = (np.arange(300) * 7 % 10).astype(np.uint8)
    write_idx(tmp_path / "l.gz", labels)
    raw = (tmp_path / "l.gz").read_bytes()
    kinds = set()
    for i in range(len(raw)):
        bad = bytearray(raw)
        bad[i] ^= 0x55
        (tmp_path / "bad.gz").write_bytes(bytes(bad))
        try:
            read_idx(tmp_path / "bad.gz", expect_ndim=1)   # a flip in the name or mtime
        except MNISTError as e:
            assert "bad.gz" in str(e)
            kinds.add(str(e).split("(")[1][:12])
    assert any("Error -3" in k for k in kinds), kinds      # zlib's own error was among them


def test_fashion_mnist_folder_and_files(tmp_path, monkeypatch):
    """Fashion-MNIST: the same four IDX files; --data-dir, then MININET_FASHION_DATA, then
    Debian's /usr/share/datasets/fashion-mnist, then the cache (never MNIST's variable)."""
    from mininet.data.mnist import data_dir
    imgs = np.random.default_rng(3).integers(0, 256, size=(6, 28, 28), dtype=np.uint8)
    for split in ("train", "t10k"):
        write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", imgs)
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", np.arange(6, dtype=np.uint8))
    monkeypatch.setenv("MININET_DATA", "/nonexistent")
    monkeypatch.setenv("MININET_FASHION_DATA", str(tmp_path))
    assert data_dir(None, "fashion-mnist") == tmp_path
    ds = MNISTDataset.load("test", download=False, dataset="fashion-mnist", flatten=False)
    np.testing.assert_allclose(ds.images[:, 0] * 255, imgs, atol=1e-4)
    monkeypatch.delenv("MININET_FASHION_DATA")
    folder = data_dir(None, "fashion-mnist")
    assert folder.name == "fashion-mnist" and "nonexistent" not in str(folder)
    with pytest.raises(ValueError, match="unknown dataset"):
        data_dir(None, "cifar")


def test_offline_switch_stops_every_download(tmp_path):
    from mininet.data.cifar import CIFARError, ensure_cifar10
    from mininet.data.ptb import CorpusError, ensure_ptb
    with pytest.raises(MNISTError, match="MININET_OFFLINE"):
        ensure_mnist(tmp_path / "m")
    with pytest.raises(CIFARError, match="MININET_OFFLINE"):
        ensure_cifar10(tmp_path / "c")
    with pytest.raises(CorpusError, match="MININET_OFFLINE"):
        ensure_ptb(tmp_path / "p")
    assert not any(tmp_path.rglob("*.part"))
