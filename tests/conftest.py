"""The one set of test helpers: tolerances and comparisons, float64 leaves and the
central-difference gradient check, the PyTorch reference (optional), generated data
folders (MNIST IDX, CIFAR-10 pickles, text corpora), the real MNIST folder, subprocess
runners (the CLI's among them) and the MPI skip. Test modules import them with
`from conftest import ...`."""
import gzip
import os
import pickle
import signal
import struct
import subprocess
import sys
from pathlib import Path

os.environ["MININET_OFFLINE"] = "1"   # tests never download (data/fetch.py)

# A suite started in the background by a shell without job control (`pytest ... &` in a
# script) inherits SIGINT ignored, and so would every process a test starts: the Ctrl-C
# tests (test_interrupts, test_cli) would then wait out their children. A handler here
# is reset to the default in a child at exec, where SIG_IGN would stay.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

import numpy as np
import pytest

from mininet.autograd import Tensor   # mininet before torch: the order the suite always had

# PyTorch -----------------------------------------------------------------------------------
# The test-only reference (the `torch` extra). Tests that compare against it are marked
# `torch` and skip, with this reason, where it is not installed; `torch` is None there.
# A torch that is installed but fails to import is an error, not a skip.
try:
    import torch
except ModuleNotFoundError as e:
    if e.name != "torch":
        raise
    torch = None
    TORCH_MISSING = ("PyTorch is not installed (the test-only reference this test compares "
                     "against): pip install -e '.[torch]'")
else:
    TORCH_MISSING = None


def pytest_collection_modifyitems(config, items):
    from mininet.backend import cuda_status
    ok, why = cuda_status()
    for item in items:
        if not ok and item.get_closest_marker("gpu"):
            item.add_marker(pytest.mark.skip(reason=f"no CUDA: {why}"))
        if TORCH_MISSING and item.get_closest_marker("torch"):
            item.add_marker(pytest.mark.skip(reason=TORCH_MISSING))


# comparisons -------------------------------------------------------------------------------
# One tolerance table for every comparison: (rtol, atol) per dtype.
TOL = {np.float32: (2e-5, 2e-6), np.float64: (1e-11, 1e-12)}


def assert_close(actual, expected, dtype=np.float32, scale=1.0):
    """Compare with the dtype's tolerance; `scale` widens atol for long reductions."""
    rtol, atol = TOL[np.dtype(dtype).type]
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected,
                               rtol=rtol * max(1.0, np.sqrt(scale)), atol=atol * scale)


def as_numpy(x):
    """An NDArray or Tensor (any device) as a numpy array; arrays and lists as they are."""
    return x.numpy() if hasattr(x, "numpy") else np.asarray(x)


def assert_near(actual, expected, tol):
    """rtol = atol = tol, for either side an array, NDArray or Tensor."""
    np.testing.assert_allclose(as_numpy(actual), as_numpy(expected), rtol=tol, atol=tol)


# float64 leaves and gradient checks ----------------------------------------------------------
def t64(x, grad=True):
    """A float64 Tensor of x, a leaf that requires grad unless grad=False."""
    return Tensor(np.asarray(x, dtype=np.float64), dtype="float64", requires_grad=grad)


def close_in_dtype(got, want, dtype, f64_tol):
    """float64 to f64_tol (assert_near); float32 to 1e-4 of want's largest magnitude
    (against PyTorch's float64 result on the same float32-rounded inputs)."""
    if dtype == "float64" or got.size == 0:
        assert_near(got, want, f64_tol)
    else:
        assert np.abs(got - want).max() <= 1e-4 * max(np.abs(want).max(), 1e-30)


def conv_second_order_vs_torch(x, w, dtype="float64"):
    """d/dx of |d conv / dW|^2 (padding 1) through mininet's conv gradient ops, against
    PyTorch's (in float64), for arrays x (N, C, H, W) and w (K, C, kh, kw) of `dtype`."""
    from mininet import ops
    x, w = np.asarray(x, dtype), np.asarray(w, dtype)
    mx = Tensor(x, dtype=dtype, requires_grad=True)
    mw = Tensor(w, dtype=dtype, requires_grad=True)
    y = ops.conv(mx, mw, padding=1)
    y.backward(Tensor(np.ones(y.shape), dtype=dtype), create_graph=True)
    gw = mw.grad
    mx.grad = None
    (gw * gw).sum().backward()
    tx, tw = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, w))
    ty = torch.nn.functional.conv2d(tx, tw, padding=1)
    (tgw,) = torch.autograd.grad(ty.sum(), tw, create_graph=True)
    (tgw * tgw).sum().backward()
    close_in_dtype(mx.grad.numpy(), tx.grad.numpy(), dtype, 1e-9)


def conv_vs_torch(rng, shape, ksize, pad, dtype="float64"):
    """A conv of `dtype` (bias, padding `pad`) forward and backward for a random x, w, b
    and output gradient from rng, against PyTorch's in float64: the output and the three
    gradients to 1e-10 (float32: to 1e-4 of their largest magnitude). shape: (N, C, H, W,
    K); square ksize filters."""
    from mininet import ops
    n, c, h, wd, k = shape
    x, w, b = rng.standard_normal((n, c, h, wd)), rng.standard_normal((k, c, ksize, ksize)), \
        rng.standard_normal(k)
    x, w, b = (a.astype(dtype) for a in (x, w, b))
    mx, mw, mb = (Tensor(a, dtype=dtype, requires_grad=True) for a in (x, w, b))
    y = ops.conv(mx, mw, mb, padding=pad)
    g = rng.standard_normal(y.shape).astype(dtype)
    y.backward(Tensor(g, dtype=dtype))
    tx, tw, tb = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, w, b))
    ty = torch.nn.functional.conv2d(tx, tw, tb, padding=pad)
    ty.backward(torch.tensor(g, dtype=torch.float64))
    close_in_dtype(y.numpy(), ty.detach().numpy(), dtype, 1e-10)
    for m, t in ((mx, tx), (mw, tw), (mb, tb)):
        close_in_dtype(m.grad.numpy(), t.grad.numpy(), dtype, 1e-10)


_gradcheck_rng = np.random.default_rng(2)


def gradcheck(fn, *arrays, eps=1e-6, tol=1e-6):
    """Compare autograd with central differences of sum(fn(...) * w) for a random w
    (float64; the arrays are perturbed in place and restored)."""
    inputs = [t64(a) for a in arrays]
    out = fn(*inputs)
    w = _gradcheck_rng.standard_normal(out.shape)
    (out * Tensor(w, dtype="float64")).sum().backward()
    for t, a in zip(inputs, arrays):
        num = np.zeros_like(a)
        flat = a.reshape(-1)
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + eps
            up = (fn(*[t64(x, False) for x in arrays]).numpy() * w).sum()
            flat[i] = old - eps
            down = (fn(*[t64(x, False) for x in arrays]).numpy() * w).sum()
            flat[i] = old
            num.reshape(-1)[i] = (up - down) / (2 * eps)
        np.testing.assert_allclose(t.grad.numpy(), num, rtol=tol, atol=tol)


def check_batchnorm_against_torch(mb, tb, x, rng):
    """A mininet batch-norm module against PyTorch's (float64) with the same random weight
    and bias: training output, input/weight/bias grads and running stats, then eval.
    Only from tests marked `torch`."""
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


# data: the real MNIST folder, generated ones ---------------------------------------------------
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


def write_idx(path, array, code=0x08, gz=True):
    """An IDX file (MNIST's format) of array: unsigned bytes for code 0x08; gzipped or plain."""
    header = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(">u1" if code == 0x08 else array.dtype).tobytes()
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(data)


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory):
    """300 training and 100 test images in the four standard files: learnable (each class
    is a bright block at its own place), fast to train."""
    folder = tmp_path_factory.mktemp("mnist")
    rng = np.random.default_rng(0)
    for split, n in (("train", 300), ("t10k", 100)):
        labels = np.arange(n) % 10
        imgs = rng.integers(0, 60, size=(n, 28, 28))
        for i, y in enumerate(labels):
            imgs[i, 2 * y:2 * y + 6, 4:24] = 250
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", imgs)
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", labels)
    return folder


def write_cifar_batch(path, n, rng, protocol=2):
    """One CIFAR-10 batch pickle of n random images, as the real files hold it; returns
    (data, labels)."""
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, n)]
    with open(path, "wb") as f:
        pickle.dump({b"batch_label": b"testing", b"labels": labels, b"data": data,
                     b"filenames": [b"x.png"] * n}, f, protocol=protocol)
    return data, labels


def write_cifar_folder(root, train_size=20, test_size=20, seed=0):
    """root/cifar-10-batches-py with five training batches and a test batch of random
    images in the standard pickle format."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(seed)
    for name, n in [(f"data_batch_{i}", train_size) for i in range(1, 6)] + [("test_batch", test_size)]:
        write_cifar_batch(folder / name, n, rng, protocol=pickle.DEFAULT_PROTOCOL)
    return root


SENTENCES = ["the cat sat on the mat", "a dog ran in the park", "the bird sang a song"]


def write_corpus(folder, train, valid, test):
    """train.txt, valid.txt and test.txt, one sentence (a list of lines each) a line."""
    for name, lines in (("train", train), ("valid", valid), ("test", test)):
        (folder / f"{name}.txt").write_text("\n".join(lines) + "\n")
    return folder


# subprocesses --------------------------------------------------------------------------------
def _run(cmd, env, timeout, **kw):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, **kw)
    except subprocess.TimeoutExpired:
        pytest.fail(f"hung for {timeout} s: {' '.join(map(str, cmd))[:200]}")


def run_python(code, env=None, timeout=120):
    """`python -c code` in a fresh interpreter; env replaces the environment (None: this
    one's). A run past timeout fails the test instead of hanging the suite."""
    return _run([sys.executable, "-c", code], env, timeout)


def run_under_isa(code, isa, threads=None, timeout=120):
    """`code` in a fresh interpreter under MININET_ISA=isa (this environment's dispatch
    variables dropped; MININET_NUM_THREADS=threads where given): the JSON object its last
    line prints. A failed run fails the test with its stderr."""
    import json
    env = {k: v for k, v in os.environ.items()
           if k not in ("MININET_ISA", "MININET_ISA_PRETEND_MISSING")}
    env["MININET_ISA"] = isa
    if threads is not None:
        env["MININET_NUM_THREADS"] = str(threads)
    r = run_python(code, env=env, timeout=timeout)
    assert r.returncode == 0, (r.returncode, r.stderr[-3000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def run_cli(*args, env=None, timeout=120):
    """`python -m mininet.cli args...` with this environment plus env."""
    return _run([sys.executable, "-m", "mininet.cli", *map(str, args)],
                {**os.environ, **(env or {})}, timeout)


# what the CLI's tests run it with: one thread each (2 cores, parallel workers), lines as
# wide as the messages (rich wraps at COLUMNS), never a download
CLI_ENV = {"MININET_NUM_THREADS": "1", "COLUMNS": "200", "MININET_OFFLINE": "1"}


def cli(*args, env=None, timeout=120):
    """run_cli with CLI_ENV, then env."""
    return run_cli(*args, env={**CLI_ENV, **(env or {})}, timeout=timeout)


def assert_one_line_error(r, *words, code=2):
    """A finished run failed with exit `code`, nothing on stdout and one `error:` line on
    stderr holding every one of words."""
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert r.stdout == "", r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


# MPI -----------------------------------------------------------------------------------------
def _mpi_missing():
    """Why MPI runs cannot happen here, or None where they can."""
    try:
        import mpi4py  # noqa: F401
        from mininet.cli.launch import find_mpirun
        find_mpirun()
        return None
    except Exception as e:
        return f"mpi4py/mpirun missing ({type(e).__name__}: {e}): pip install '.[mpi]'"


MPI_MISSING = _mpi_missing()
needs_mpi = pytest.mark.skipif(MPI_MISSING is not None, reason=MPI_MISSING or "")
