import os
from pathlib import Path

os.environ["MININET_OFFLINE"] = "1"   # tests never download (data/fetch.py)

import numpy as np
import pytest

# One tolerance table for every comparison: (rtol, atol) per dtype.
TOL = {np.float32: (2e-5, 2e-6), np.float64: (1e-11, 1e-12)}


def assert_close(actual, expected, dtype=np.float32, scale=1.0):
    """Compare with the dtype's tolerance; `scale` widens atol for long reductions."""
    rtol, atol = TOL[np.dtype(dtype).type]
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected,
                               rtol=rtol * max(1.0, np.sqrt(scale)), atol=atol * scale)


def mnist_dir():
    """The real MNIST folder of ../shared (via MININET_DATA in make test)."""
    env = os.environ.get("MININET_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist")
    for c in candidates:
        if (c / "t10k-images-idx3-ubyte.gz").exists():
            return c
    return None


@pytest.fixture
def mnist_path():
    path = mnist_dir()
    if path is None:
        pytest.skip("real MNIST not found: set MININET_DATA or provide ../shared/data/mnist")
    return path


def pytest_collection_modifyitems(config, items):
    from mininet.backend import cuda_status
    ok, why = cuda_status()
    if ok:
        return
    skip = pytest.mark.skip(reason=f"no CUDA: {why}")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def check_batchnorm_against_torch(mb, tb, x, rng):
    """A mininet batch-norm module against PyTorch's (float64) with the same random weight
    and bias: training output, input/weight/bias grads and running stats, then eval."""
    import torch
    from mininet.autograd import Tensor
    c = x.shape[1]
    w, b = rng.standard_normal(c), rng.standard_normal(c)
    with torch.no_grad():
        tb.weight.copy_(torch.tensor(w))
        tb.bias.copy_(torch.tensor(b))
    mb.weight.data = Tensor(w, dtype="float64")
    mb.bias.data = Tensor(b, dtype="float64")
    tx = torch.tensor(x, requires_grad=True)
    mx = Tensor(x, dtype="float64", requires_grad=True)
    g = rng.standard_normal(x.shape)
    ty = tb(tx)
    (ty * torch.tensor(g)).sum().backward()
    y = mb(mx)
    y.backward(Tensor(g, dtype="float64"))
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-10, atol=1e-11)
    np.testing.assert_allclose(mx.grad.numpy(), tx.grad.numpy(), rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(mb.weight.grad.numpy(), tb.weight.grad.numpy(), rtol=1e-9)
    np.testing.assert_allclose(mb.bias.grad.numpy(), tb.bias.grad.numpy(), rtol=1e-9)
    np.testing.assert_allclose(mb.running_mean.numpy(), tb.running_mean.numpy(), rtol=1e-10)
    np.testing.assert_allclose(mb.running_var.numpy(), tb.running_var.numpy(), rtol=1e-10)
    tb.eval()
    mb.eval()
    x2 = rng.standard_normal(x.shape)
    np.testing.assert_allclose(mb(Tensor(x2, dtype="float64")).numpy(),
                               tb(torch.tensor(x2)).detach().numpy(), rtol=1e-10, atol=1e-11)


def write_cifar_folder(root, train_size=20, test_size=20, seed=0):
    """root/cifar-10-batches-py with five training batches and a test batch of random
    images in the standard pickle format."""
    import pickle
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(seed)
    for name, n in [(f"data_batch_{i}", train_size) for i in range(1, 6)] + [("test_batch", test_size)]:
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         b"labels": [int(v) for v in rng.integers(0, 10, n)]}, f)
    return root
