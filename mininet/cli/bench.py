"""Benchmarks behind `mininet bench`: each returns a list of result dicts."""
import numpy as np

from mininet_ext import matmul as _mm
from mininet_ext.buffer import Buffer

from .. import get_num_threads, set_num_threads
from ..ndarray import NDArray
from .timing import best_time


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
