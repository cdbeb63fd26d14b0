"""Benchmarks behind `mininet bench`: each returns a list of result dicts."""
import numpy as np

from mininet_ext import matmul as _mm
from mininet_ext.buffer import Buffer

from .. import get_num_threads, set_num_threads
from ..ndarray import NDArray
from .timing import best_time, best_times


def parse_shapes(spec):
    """'256,512' -> square sizes; '100x784x100' -> (M, K, N)."""
    shapes = []
    for part in spec.split(","):
        part = part.strip().lower()
        try:
            dims = [int(d) for d in part.split("x")] if part else []
        except ValueError:
            dims = []
        if len(dims) == 1:
            dims = dims * 3
        if len(dims) != 3 or min(dims) < 1:
            raise ValueError(f"bad size {part!r}: use N or MxKxN with positive integers")
        shapes.append(tuple(dims))
    return shapes


def _simple_matmul(x, y):
    """The course's cache-tiled kernel, as a reference point (float32 only)."""
    m, k = x.shape
    n = y.shape[1]
    a, b, c = Buffer(x.nbytes), Buffer(y.nbytes), Buffer(m * n * 4)
    np.frombuffer(a, np.float32)[:] = x.ravel()
    np.frombuffer(b, np.float32)[:] = y.ravel()

    def run():
        c.fill_zero()
        _mm.matmul_simple(a, b, c, m, n, k)
    return run


def bench_matmul(shapes, dtype="float32", threads=None, repeat=5, simple=True, device="cpu"):
    old = get_num_threads()
    if threads:
        set_num_threads(threads)
    rows = []
    try:
        for m, k, n in shapes:
            rng = np.random.default_rng(0)
            x = rng.standard_normal((m, k)).astype(dtype)
            y = rng.standard_normal((k, n)).astype(dtype)
            flops = 2.0 * m * n * k
            a, b = NDArray(x, device=device), NDArray(y, device=device)
            impls = {"mininet": lambda: a @ b, "numpy": lambda: x @ y}
            if simple and dtype == "float32" and m * n * k <= 2048 ** 3:
                impls["simple-tiled"] = _simple_matmul(x, y)
            for impl, fn in impls.items():
                t = best_time(fn, repeat=repeat)
                rows.append({"impl": impl, "m": m, "k": k, "n": n, "dtype": dtype,
                             "threads": get_num_threads(), "seconds": t, "gflops": flops / t / 1e9})
    finally:
        set_num_threads(old)
    return rows


def bench_ewise(size=4 * 1024 * 1024, rows=4096, cols=1024, threads=None, repeat=5):
    """Contiguous add of two `size` arrays, and a (rows, cols) + (cols,) broadcast add."""
    old = get_num_threads()
    if threads:
        set_num_threads(threads)
    out = []
    try:
        rng = np.random.default_rng(0)
        cases = {
            f"add {size}": (rng.standard_normal(size).astype(np.float32),
                            rng.standard_normal(size).astype(np.float32)),
            f"add {rows}x{cols} + {cols}": (rng.standard_normal((rows, cols)).astype(np.float32),
                                              rng.standard_normal(cols).astype(np.float32)),
        }
        for case, (x, y) in cases.items():
            a, b = NDArray(x), NDArray(y)
            nbytes = (x.size * 2 + y.size) * 4
            for impl, fn in {"mininet": lambda: a + b, "numpy": lambda: x + y}.items():
                t = best_time(fn, repeat=repeat)
                out.append({"impl": impl, "case": case, "threads": get_num_threads(), "seconds": t,
                            "gbytes_per_s": nbytes / t / 1e9})
    finally:
        set_num_threads(old)
    return out


def _torch_model(name):
    import torch.nn as tnn
    if name == "cnn":  # the same layers as mininet.models.CNN
        return tnn.Sequential(
            tnn.Conv2d(1, 16, 5, padding=2), tnn.ReLU(), tnn.MaxPool2d(2),
            tnn.Conv2d(16, 32, 5, padding=2), tnn.ReLU(), tnn.MaxPool2d(2),
            tnn.Flatten(), tnn.Linear(32 * 49, 128), tnn.ReLU(), tnn.Linear(128, 10))
    if name == "mlp":
        return tnn.Sequential(tnn.Linear(784, 100), tnn.ReLU(), tnn.Linear(100, 10))

    def block():
        inner = tnn.Sequential(tnn.Linear(100, 50), tnn.BatchNorm1d(50), tnn.ReLU(), tnn.Dropout(0.1),
                               tnn.Linear(50, 100), tnn.BatchNorm1d(100))
        return inner
    class Res(tnn.Module):
        def __init__(self):
            super().__init__()
            self.fn = block()

        def forward(self, x):
            return tnn.functional.relu(self.fn(x) + x)
    return tnn.Sequential(tnn.Linear(784, 100), tnn.ReLU(), Res(), Res(), Res(), tnn.Linear(100, 10))


# the larger models of issue 12, built here for the benchmark only (the same layers in
# both libraries): (input shape of one sample, batch size, samples per epoch at most)
BENCH_ONLY = {"mlp-large": ((784,), 256, 60000), "cifar-cnn": ((3, 32, 32), 100, 10000),
              "resnet9": ((3, 32, 32), 128, 5120)}
TRAIN_MODELS = ("softmax", "mlp", "resnet", "cnn") + tuple(BENCH_ONLY) + ("lstm-lm",)
# issue 13's language-model step: 2 layers, hidden 256, seq 35, batch 20, vocab 10,000
LM = dict(vocab=10000, hidden=256, layers=2, seq=35, batch=20, steps=20)


def _lm_epoch(threads, repeat):
    """Seconds for LM['steps'] training steps (truncated BPTT: the state is carried and
    detached between windows) of mininet's LanguageModel and PyTorch's, random tokens,
    timed in turns."""
    from .. import optim
    from ..data import batchify, get_batch
    from ..models import LanguageModel
    from ..models.train import train_lm_epoch
    v, h, n, s, b, steps = (LM[k] for k in ("vocab", "hidden", "layers", "seq", "batch", "steps"))
    tokens = np.random.default_rng(0).integers(0, v, (steps * s + 1) * b)
    batches = batchify(tokens, b)               # steps windows of s rows, and their targets
    model = LanguageModel(h, v, h, n, "lstm")
    opt = optim.Adam(model.parameters(), 1e-3)
    epochs = {"mininet": lambda: train_lm_epoch(model, batches, opt, s)}
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        torch.set_num_threads(threads)
        emb, lstm, head = torch.nn.Embedding(v, h), torch.nn.LSTM(h, h, n), torch.nn.Linear(h, v)
        topt = torch.optim.Adam([*emb.parameters(), *lstm.parameters(), *head.parameters()], 1e-3)
        twin = [tuple(torch.from_numpy(t.numpy()) for t in get_batch(batches, i, s))
                for i in range(0, len(batches) - 1, s)]

        def tepoch():
            state = None
            for x, y in twin:
                topt.zero_grad()
                out, state = lstm(emb(x), state)
                loss = torch.nn.functional.cross_entropy(head(out.reshape(s * b, h)), y)
                loss.backward()
                topt.step()
                loss.item()
                state = tuple(t.detach() for t in state)
        epochs["torch"] = tepoch
    return list(best_times(epochs, repeat=repeat, warmup=1).items())


def _bench_model(name):
    from .. import nn
    if name == "resnet9":
        from ..models import ResNet9
        return ResNet9()
    if name == "mlp-large":   # 784-1024-1024-10
        return nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(),
                             nn.Linear(1024, 10))
    stages = []               # cifar-cnn: three conv-BN-ReLU-pool stages, 3x32x32 -> 10
    for cin, cout in ((3, 32), (32, 64), (64, 128)):
        stages += [nn.Conv(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2)]
    return nn.Sequential(*stages, nn.Flatten(), nn.Linear(128 * 16, 10))


def _torch_resnet9():
    """The course's ResNet9 in PyTorch, layer for layer as mininet.models.ResNet9."""
    import torch.nn as tnn

    def conv_bn(cin, cout, k, s):
        return tnn.Sequential(tnn.Conv2d(cin, cout, k, s, k // 2), tnn.BatchNorm2d(cout), tnn.ReLU())

    class Residual(tnn.Module):
        def __init__(self, c):
            super().__init__()
            self.fn = tnn.Sequential(conv_bn(c, c, 3, 1), conv_bn(c, c, 3, 1))

        def forward(self, x):
            return self.fn(x) + x
    return tnn.Sequential(conv_bn(3, 16, 7, 4), conv_bn(16, 32, 3, 2), Residual(32),
                          conv_bn(32, 64, 3, 2), conv_bn(64, 128, 3, 2), Residual(128),
                          tnn.Flatten(), tnn.Linear(128, 128), tnn.ReLU(), tnn.Linear(128, 10))


def _torch_bench_model(name):
    import torch.nn as tnn
    if name == "resnet9":
        return _torch_resnet9()
    if name == "mlp-large":
        return tnn.Sequential(tnn.Linear(784, 1024), tnn.ReLU(), tnn.Linear(1024, 1024), tnn.ReLU(),
                              tnn.Linear(1024, 10))
    stages = []
    for cin, cout in ((3, 32), (32, 64), (64, 128)):
        stages += [tnn.Conv2d(cin, cout, 3, padding=1), tnn.BatchNorm2d(cout), tnn.ReLU(),
                   tnn.MaxPool2d(2)]
    return tnn.Sequential(*stages, tnn.Flatten(), tnn.Linear(128 * 16, 10))


def train_case(name, samples, batch_size, rng):
    """(x, y, batch size, model) of a `bench train` case: random data of the model's input
    shape (MNIST's for the models of `mininet train`), capped for the BENCH_ONLY models."""
    from ..models import build_model
    shape, batch, cap = BENCH_ONLY.get(name, ((1, 28, 28) if name == "cnn" else (784,),
                                              batch_size, samples))
    n = min(samples, cap)
    x = rng.random((n,) + shape, dtype=np.float32)
    y = rng.integers(0, 10, n)
    return x, y, batch, _bench_model(name) if name in BENCH_ONLY else build_model(name)


def bench_train(models=("mlp", "resnet"), samples=60000, batch_size=100, threads=2, repeat=1):
    """Seconds for one training epoch (Adam) of each model on random data of its input shape
    (MNIST's for the models of `mininet train`), mininet vs PyTorch. mlp-large trains at
    batch 256 and cifar-cnn on at most 10,000 samples (each row says how many)."""
    from ..data import DataLoader, TensorDataset
    from ..models.train import make_optimizer, train_epoch
    rng = np.random.default_rng(0)
    rows = []
    old = get_num_threads()
    set_num_threads(threads)
    try:
        for name in models:
            if name == "lstm-lm":
                n = LM["steps"] * LM["seq"] * LM["batch"]
                for impl, t in _lm_epoch(threads, repeat):
                    rows.append({"impl": impl, "model": name, "seconds": t, "threads": threads,
                                 "samples": n, "batch_size": LM["batch"], "samples_per_s": n / t})
                continue
            x, y, batch, model = train_case(name, samples, batch_size, rng)
            n = len(x)
            opt = make_optimizer("adam", model.parameters(), 1e-3)
            loader = DataLoader(TensorDataset(x, y), batch, shuffle=True, seed=0)
            epochs = {"mininet": lambda: train_epoch(model, loader, opt)}
            tepoch = _torch_epoch(name, x, y, batch, threads)
            if tepoch is not None:
                epochs["torch"] = tepoch
            for impl, t in best_times(epochs, repeat=repeat, warmup=0).items():
                rows.append({"impl": impl, "model": name, "seconds": t, "threads": threads,
                             "samples": n, "batch_size": batch, "samples_per_s": n / t})
    finally:
        set_num_threads(old)
    return rows


def _torch_epoch(name, x, y, batch_size, threads):
    """A function training PyTorch's version of the model one epoch (None without torch)."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    model = _torch_bench_model(name) if name in BENCH_ONLY else _torch_model(name)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    loss_fn = torch.nn.CrossEntropyLoss()
    gen = np.random.default_rng(0)

    def epoch():
        model.train()
        order = torch.from_numpy(gen.permutation(len(x)))
        for b in range(0, len(x), batch_size):
            idx = order[b:b + batch_size]
            opt.zero_grad()
            loss = loss_fn(model(tx[idx]), ty[idx])
            loss.backward()
            opt.step()
            loss.item()
    return epoch


# convolution ------------------------------------------------------------------------
CONV_SHAPES = "100,1,28,28,16,5,1,2;100,16,14,14,32,5,1,2;8,64,56,56,64,3,1,1"


def parse_conv_shapes(spec):
    """'N,C,H,W,K,k,stride,pad;...' -> list of 8-tuples."""
    shapes = []
    for part in spec.split(";"):
        try:
            dims = tuple(int(d) for d in part.split(","))
        except ValueError:
            dims = ()
        if len(dims) != 8 or min(dims[:7]) < 1 or dims[7] < 0:
            raise ValueError(f"bad conv shape {part!r}: use N,C,H,W,K,k,stride,pad with positive "
                             "integers (pad >= 0), several separated by ';'")
        shapes.append(dims)
    return shapes


def conv_direct(x, w, stride, pad):
    """Reference: direct convolution tap by tap (no im2col), numpy; returns y and a
    backward function (g -> dx, dw)."""
    n, c, h, wd = x.shape
    k, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1

    def tap(a, i, j):
        return a[:, :, i:i + stride * (oh - 1) + 1:stride, j:j + stride * (ow - 1) + 1:stride]

    y = np.zeros((n, k, oh, ow), x.dtype)
    for i in range(kh):
        for j in range(kw):
            y += np.einsum("nchw,kc->nkhw", tap(xp, i, j), w[:, :, i, j], optimize=True)

    def backward(g):
        dxp, dw = np.zeros_like(xp), np.zeros_like(w)
        for i in range(kh):
            for j in range(kw):
                dw[:, :, i, j] = np.einsum("nkhw,nchw->kc", g, tap(xp, i, j), optimize=True)
                tap(dxp, i, j)[...] += np.einsum("nkhw,kc->nchw", g, w[:, :, i, j], optimize=True)
        return dxp[:, :, pad:pad + h, pad:pad + wd], dw
    return y, backward


def _conv_impls(x, w, b, stride, pad, device):
    from ..autograd import Tensor, no_grad
    from ..backend import get_device
    from ..ops import conv
    dev = get_device(device)
    sync = getattr(dev, "synchronize", lambda: None)  # GPU timings wait for the kernels
    mx, mw, mb = (Tensor(a, device=dev, requires_grad=True) for a in (x, w, b))
    with no_grad():
        g = Tensor(np.ones(conv(mx, mw, mb, stride, pad).shape, np.float32), device=dev)

    def mn_fwd():
        with no_grad():
            conv(mx, mw, mb, stride, pad)
        sync()

    def mn_fwd_bwd():
        mx.grad = mw.grad = mb.grad = None
        conv(mx, mw, mb, stride, pad).backward(g)
        sync()

    def naive_fwd_bwd():
        y, back = conv_direct(x, w, stride, pad)
        back(np.ones_like(y))
    impls = {"mininet": (mn_fwd, mn_fwd_bwd),
             "naive": (lambda: conv_direct(x, w, stride, pad), naive_fwd_bwd)}
    try:
        import torch
    except ImportError:
        return impls
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))

    def t_fwd():
        with torch.no_grad():
            torch.nn.functional.conv2d(tx, tw, tb, stride, pad)

    def t_fwd_bwd():
        tx.grad = tw.grad = tb.grad = None
        y = torch.nn.functional.conv2d(tx, tw, tb, stride, pad)
        y.backward(torch.ones_like(y))
    impls["torch"] = (t_fwd, t_fwd_bwd)
    return impls


def bench_conv(shapes, threads=None, repeat=5, device="cpu", naive=True):
    """Forward and forward+backward time and GFLOPS per conv shape, per implementation."""
    old = get_num_threads()
    if threads:
        set_num_threads(threads)
    try:
        import torch
        torch.set_num_threads(get_num_threads())
    except ImportError:
        pass
    rows = []
    try:
        for shape in shapes:
            n, c, h, wd, k, ks, stride, pad = shape
            oh, ow = (h + 2 * pad - ks) // stride + 1, (wd + 2 * pad - ks) // stride + 1
            if oh < 1 or ow < 1:
                raise ValueError(f"conv shape {shape}: kernel {ks} is larger than the padded input")
            rng = np.random.default_rng(0)
            x = rng.standard_normal((n, c, h, wd)).astype(np.float32)
            w = (rng.standard_normal((k, c, ks, ks)) / np.sqrt(c * ks * ks)).astype(np.float32)
            b = rng.standard_normal(k).astype(np.float32)
            flops = 2.0 * n * k * oh * ow * c * ks * ks
            for impl, (fwd, fwd_bwd) in _conv_impls(x, w, b, stride, pad, device).items():
                if impl == "naive" and not naive:
                    continue
                for mode, fn, mult in (("fwd", fwd, 1), ("fwd+bwd", fwd_bwd, 3)):
                    t = best_time(fn, repeat=repeat if impl != "naive" else 1)
                    rows.append({"impl": impl, "shape": ",".join(map(str, shape)), "mode": mode,
                                 "device": device, "threads": get_num_threads(), "seconds": t,
                                 "gflops": mult * flops / t / 1e9})
    finally:
        set_num_threads(old)
    return rows
