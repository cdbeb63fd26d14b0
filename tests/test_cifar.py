"""CIFAR-10 loader on files written here in the real format (cifar-10-batches-py
pickles): shapes, dtypes, labels, transforms, and corrupt or hostile files."""
import os
import pickle

import numpy as np
import pytest

from mininet.data import CIFAR10Dataset, CIFARError, DataLoader
from mininet.data.cifar import TEST, TRAIN, ensure_cifar10, read_batch
from conftest import torch, write_cifar_batch

rng = np.random.default_rng(4)


@pytest.fixture
def cifar(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    parts = [write_cifar_batch(folder / name, 7 + i, rng) for i, name in enumerate(TRAIN)]
    test = write_cifar_batch(folder / TEST[0], 5, rng, protocol=4)
    return tmp_path, parts, test


def test_train_and_test_splits(cifar):
    root, parts, (tdata, tlabels) = cifar
    train = CIFAR10Dataset(root, train=True)
    assert len(train) == sum(len(d) for d, _ in parts)
    x, y = train[np.arange(4)]
    assert x.shape == (4, 3, 32, 32) and x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_allclose(x[0] * 255, parts[0][0][0].reshape(3, 32, 32), atol=1e-3)
    test = CIFAR10Dataset.load("test", root / "cifar-10-batches-py", download=False)
    np.testing.assert_array_equal(test.labels, tlabels)
    assert 0 <= test.labels.min() and test.labels.max() <= 9
    xb, yb = next(iter(DataLoader(test, batch_size=5)))
    assert xb.shape == (5, 3, 32, 32) and yb.dtype == np.int64


def test_transforms_per_image(cifar):
    from mininet.data import RandomFlipHorizontal
    root, parts, _ = cifar
    ds = CIFAR10Dataset(root, transforms=[RandomFlipHorizontal(1.0)])
    x, _ = ds[np.arange(3)]
    np.testing.assert_allclose(x[1] * 255, parts[0][0][1].reshape(3, 32, 32)[:, :, ::-1], atol=1e-3)


@pytest.mark.parametrize("damage", ["empty", "truncated", "text", "wrong_shape", "bad_label"])
def test_corrupt_files_name_the_file(cifar, damage):
    root, _, _ = cifar
    path = root / "cifar-10-batches-py" / TEST[0]
    raw = path.read_bytes()
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "truncated":
        path.write_bytes(raw[:len(raw) // 2])
    elif damage == "text":
        path.write_bytes(b"not a pickle")
    elif damage == "wrong_shape":
        with open(path, "wb") as f:
            pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    else:
        with open(path, "wb") as f:
            pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 12]}, f)
    with pytest.raises(CIFARError, match=str(path)):
        read_batch(path)


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))
    path = tmp_path / "test_batch"
    with open(path, "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": [0]}, f)
    with pytest.raises(CIFARError, match="refusing to load"):
        read_batch(path)


def test_missing_files_offline_message(tmp_path):
    with pytest.raises(CIFARError, match="not found.*data_batch_1"):
        ensure_cifar10(tmp_path, download=False)


def torch_resnet9():
    from mininet.models import registry
    return registry.build_torch("resnet9").double()


@pytest.mark.torch
def test_resnet9_steps_match_torch():
    """ResNet9 with PyTorch's weights: the loss of three SGD steps on random CIFAR-shape
    batches matches (float64), so forward, backward and the update agree."""
    from mininet import nn, optim
    from mininet.autograd import Tensor
    from mininet.models import ResNet9
    t = torch_resnet9()
    m = ResNet9(dtype="float64")
    ours = [p for p in m.parameters()]
    theirs = [p for p in t.parameters()]
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        w = b.detach().numpy()
        a.data = Tensor(w.T.copy() if w.ndim == 2 else w.copy(), dtype="float64")  # Linear: (in, out)
    opt, topt = optim.SGD(ours, lr=0.05), torch.optim.SGD(t.parameters(), lr=0.05)
    for step in range(3):
        x = rng.standard_normal((8, 3, 32, 32))
        y = rng.integers(0, 10, 8)
        opt.zero_grad()
        loss = nn.SoftmaxLoss()(m(Tensor(x, dtype="float64")), Tensor(y))
        loss.backward()
        opt.step()
        topt.zero_grad()
        tloss = torch.nn.functional.cross_entropy(t(torch.tensor(x)), torch.tensor(y))
        tloss.backward()
        topt.step()
        np.testing.assert_allclose(loss.item(), tloss.item(), rtol=1e-9)
