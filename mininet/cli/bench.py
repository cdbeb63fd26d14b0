"""Benchmarks behind `mininet bench`: each times its cases with the harness
(mininet.benchmark.harness) and returns them as Case records; bench_cmds.py draws the
tables, prints the rows and saves the runs."""
import numpy as np

from mininet_ext import matmul as _mm
from mininet_ext.buffer import Buffer

from .. import get_num_threads, set_num_threads
from ..benchmark.harness import Case, PeakRSS, blas_threads, measure, measure_together
from ..ndarray import NDArray

TORCH_MISSING = "torch not installed (pip install 'mininet-dl[torch]')"


class CaseTimer:
    """Times cases one after another with the harness. progress(done, total, label) is
    called before each case and once more (done == total) after the last."""

    def __init__(self, total, min_time=0.2, repeat=None, progress=None):
        self.total, self.done = total, 0
        self.min_time, self.repeat = min_time, repeat
        self.progress = progress or (lambda done, total, label: None)

    def time(self, name, impl, params, fn, *, threads, flops=None, nbytes=None, sync=None,
             repeat=None, warmup=1):
        """The Case of fn: its samples, the process's peak RSS while it ran (PeakRSS)."""
        self.progress(self.done, self.total, name)
        with PeakRSS() as rss:
            samples = measure(fn, min_time=self.min_time, repeat=repeat or self.repeat,
                              warmup=warmup, sync=sync)
        self.done += 1
        if self.done == self.total:
            self.progress(self.done, self.total, name)
        return Case(name=name, impl=impl, params=params, threads=threads, samples=samples,
                    flops=flops, nbytes=nbytes, peak_rss_mb=rss.mb)

    def time_together(self, cases, *, sync=None):
        """Cases timed in turns (harness.measure_together), each a dict of time()'s
        arguments (name, impl, params, fn, threads, and flops, nbytes where defined): their
        ratios then hold on a machine whose speed moves between phases. Their peak RSS
        is the group's."""
        for c in cases:
            self.progress(self.done, self.total, c["name"])
        with PeakRSS() as rss:
            samples = measure_together({c["name"]: c["fn"] for c in cases},
                                       min_time=self.min_time, repeat=self.repeat, sync=sync)
        self.done += len(cases)
        if self.done == self.total:
            self.progress(self.done, self.total, cases[-1]["name"])
        return [Case(name=c["name"], impl=c["impl"], params=c["params"], threads=c["threads"],
                     samples=samples[c["name"]], flops=c.get("flops"), nbytes=c.get("nbytes"),
                     peak_rss_mb=rss.mb) for c in cases]


class _Threads:
    """mininet (and torch, when asked) on `threads` threads inside the block; back after."""

    def __init__(self, threads, torch=None):
        self.threads, self.torch = threads, torch

    def __enter__(self):
        self.old = get_num_threads()
        if self.threads:
            set_num_threads(self.threads)
        if self.torch is not None:
            self.old_torch = self.torch.get_num_threads()
            self.torch.set_num_threads(get_num_threads())
        return get_num_threads()

    def __exit__(self, *exc):
        set_num_threads(self.old)
        if self.torch is not None:
            self.torch.set_num_threads(self.old_torch)
        return False


def torch_or_none():
    """PyTorch, or None where it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def unique(items):
    return list(dict.fromkeys(items))


# matmul -------------------------------------------------------------------------------------
def parse_shapes(spec):
    """'256,512' -> square sizes; '100x784x100' -> (M, K, N); repeats dropped."""
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
    return unique(shapes)


def shape_name(m, k, n):
    return f"{m}x{k}x{n}"


def matmul_work(m, k, n, dtype):
    """(flops, bytes) of one product: 2MNK, and A, B and C each moved once."""
    return 2.0 * m * n * k, float(np.dtype(dtype).itemsize * (m * k + k * n + m * n))


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


def _has_simple(shape, dtype, simple):
    m, k, n = shape
    return simple and dtype == "float32" and m * n * k <= 2048 ** 3


def matmul_impls(shapes, dtype, simple=True):
    """The implementations timed per shape, in order (for the case count)."""
    return [["mininet", "numpy"] + (["simple-tiled"] if _has_simple(s, dtype, simple) else [])
            for s in shapes]


def bench_matmul(shapes, dtype="float32", threads=None, min_time=0.2, repeat=None, simple=True,
                 progress=None):
    """mininet's matmul, numpy's (its BLAS on the same thread count where it can be set)
    and the course's tiled kernel, per shape."""
    timer = CaseTimer(sum(map(len, matmul_impls(shapes, dtype, simple))), min_time, repeat,
                      progress)
    cases = []
    with _Threads(threads) as n_threads, blas_threads(n_threads) as n_blas:
        for m, k, n in shapes:
            rng = np.random.default_rng(0)
            x = rng.standard_normal((m, k)).astype(dtype)
            y = rng.standard_normal((k, n)).astype(dtype)
            a, b = NDArray(x), NDArray(y)
            flops, nbytes = matmul_work(m, k, n, dtype)
            impls = {"mininet": (lambda: a @ b, n_threads), "numpy": (lambda: x @ y, n_blas)}
            if _has_simple((m, k, n), dtype, simple):
                impls["simple-tiled"] = (_simple_matmul(x, y), n_threads)
            for impl, (fn, used) in impls.items():
                params = {"m": m, "k": k, "n": n, "dtype": dtype, "device": "cpu"}
                cases.append(timer.time(f"matmul {shape_name(m, k, n)} {dtype} {impl}", impl,
                                        params, fn, threads=used, flops=flops, nbytes=nbytes))
    return cases


BF16_IMPLS = ("mininet", "mininet-fp32", "torch-bf16")


def matmul_bf16_impls(shapes, torch):
    """The implementations bench_matmul_bf16 times per shape (torch's where installed)."""
    return [list(BF16_IMPLS if torch is not None else BF16_IMPLS[:2]) for _ in shapes]


def bench_matmul_bf16(shapes, threads=None, min_time=0.2, repeat=None, progress=None):
    """mininet's bf16 GEMM (float32 in and out, bf16-rounded inputs, float32 sums: what
    mininet.autocast("bf16") runs) next to mininet's float32 matmul and torch's bfloat16
    matmul (torch.bfloat16 tensors), same thread count, per shape."""
    from ..amp import matmul as ac_matmul
    torch = torch_or_none()
    impls_per = matmul_bf16_impls(shapes, torch)
    timer = CaseTimer(sum(map(len, impls_per)), min_time, repeat, progress)
    cases = []
    with _Threads(threads, torch) as n_threads:
        for (m, k, n), names in zip(shapes, impls_per):
            rng = np.random.default_rng(0)
            x = rng.standard_normal((m, k)).astype(np.float32)
            y = rng.standard_normal((k, n)).astype(np.float32)
            a, b = NDArray(x), NDArray(y)
            fns = {"mininet": lambda: ac_matmul(a, b, "bf16"), "mininet-fp32": lambda: a @ b}
            if torch is not None:
                tx, ty = torch.from_numpy(x).bfloat16(), torch.from_numpy(y).bfloat16()
                fns["torch-bf16"] = lambda: tx @ ty
            flops, nbytes = matmul_work(m, k, n, "float32")
            for impl in names:
                params = {"m": m, "k": k, "n": n, "dtype": "bf16", "device": "cpu"}
                cases.append(timer.time(f"matmul {shape_name(m, k, n)} bf16 {impl}", impl,
                                        params, fns[impl], threads=n_threads, flops=flops,
                                        nbytes=nbytes))
    return cases


# elementwise --------------------------------------------------------------------------------
def bench_ewise(size=4 * 1024 * 1024, rows=4096, cols=1024, threads=None, min_time=0.2,
                repeat=None, progress=None):
    """Contiguous add of two `size` arrays, and a (rows, cols) + (cols,) broadcast add."""
    rng = np.random.default_rng(0)
    inputs = {
        f"add {size}": (rng.standard_normal(size).astype(np.float32),
                        rng.standard_normal(size).astype(np.float32)),
        f"add {rows}x{cols} + {cols}": (rng.standard_normal((rows, cols)).astype(np.float32),
                                          rng.standard_normal(cols).astype(np.float32)),
    }
    timer = CaseTimer(2 * len(inputs), min_time, repeat, progress)
    cases = []
    with _Threads(threads) as n_threads:
        for case, (x, y) in inputs.items():
            a, b = NDArray(x), NDArray(y)
            out = np.broadcast_shapes(x.shape, y.shape)
            size_out = int(np.prod(out))
            nbytes = float((x.size + y.size + size_out) * 4)
            for impl, fn, used in (("mininet", lambda: a + b, n_threads),
                                   ("numpy", lambda: x + y, 1)):   # numpy's ufuncs: one thread
                params = {"case": case, "dtype": "float32", "device": "cpu"}
                cases.append(timer.time(f"ewise {case} float32 {impl}", impl, params, fn,
                                        threads=used, flops=float(size_out), nbytes=nbytes))
    return cases


# convolution --------------------------------------------------------------------------------
# The MNIST CNN's two layers (batch 100), a ResNet-style 64-channel layer at 56x56, then at
# batch 64: every distinct conv layer of the cifar-cnn and resnet9 registry models, and a
# ResNet-18-style 3x3 stack (64, 128, 256 channels at 32x32 and 16x16).
CONV_SHAPES_MNIST = "100,1,28,28,16,5,1,2;100,16,14,14,32,5,1,2;8,64,56,56,64,3,1,1"
CONV_SHAPES_CIFAR_CNN = "64,3,32,32,32,3,1,1;64,32,16,16,64,3,1,1;64,64,8,8,128,3,1,1"
CONV_SHAPES_RESNET9 = ("64,3,32,32,16,7,4,3;64,16,8,8,32,3,2,1;64,32,4,4,32,3,1,1;"
                       "64,32,4,4,64,3,2,1;64,64,2,2,128,3,2,1;64,128,1,1,128,3,1,1")
CONV_SHAPES_RESNET18 = "64,64,32,32,64,3,1,1;64,128,16,16,128,3,1,1;64,256,16,16,256,3,1,1"
CONV_SHAPES = ";".join((CONV_SHAPES_MNIST, CONV_SHAPES_CIFAR_CNN, CONV_SHAPES_RESNET9,
                        CONV_SHAPES_RESNET18))
CONV_MODES = ("fwd", "fwd+bwd")


def parse_conv_shapes(spec):
    """'N,C,H,W,K,k,stride,pad;...' -> list of 8-tuples (repeats dropped)."""
    shapes = []
    for part in spec.split(";"):
        try:
            dims = tuple(int(d) for d in part.split(","))
        except ValueError:
            dims = ()
        if len(dims) != 8 or min(dims[:7]) < 1 or dims[7] < 0:
            raise ValueError(f"bad conv shape {part!r}: use N,C,H,W,K,k,stride,pad with positive "
                             "integers (pad >= 0), several separated by ';'")
        n, c, h, w, k, ks, stride, pad = dims
        if h + 2 * pad < ks or w + 2 * pad < ks:
            raise ValueError(f"conv shape {part!r}: kernel {ks} is larger than the padded input")
        shapes.append(dims)
    return unique(shapes)


def conv_work(shape, mode):
    """(flops, bytes) of one call: the forward's 2*N*K*OH*OW*C*k*k (the backward's two
    products make fwd+bwd three times that), and each tensor read or written once per pass
    (forward: x, w, b, y; backward: g, x, w in, dx, dw, db out)."""
    n, c, h, wd, k, ks, stride, pad = shape
    oh, ow = (h + 2 * pad - ks) // stride + 1, (wd + 2 * pad - ks) // stride + 1
    flops = 2.0 * n * k * oh * ow * c * ks * ks
    x, w, y = n * c * h * wd, k * c * ks * ks, n * k * oh * ow
    if mode == "fwd":
        return flops, 4.0 * (x + w + k + y)
    return 3 * flops, 4.0 * (3 * x + 3 * w + 2 * k + 2 * y)


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


def _mininet_conv(x, w, b, stride, pad, dev):
    """(forward, forward+backward) of mininet's conv on dev."""
    from ..autograd import Tensor, no_grad
    from ..ops import conv
    mx, mw, mb = (Tensor(a, device=dev, requires_grad=True) for a in (x, w, b))
    with no_grad():
        g = Tensor(np.ones(conv(mx, mw, mb, stride, pad).shape, np.float32), device=dev)

    def fwd():
        with no_grad():
            return conv(mx, mw, mb, stride, pad)

    def fwd_bwd():
        mx.grad = mw.grad = mb.grad = None
        conv(mx, mw, mb, stride, pad).backward(g)
        return mx.grad
    return fwd, fwd_bwd


def _naive_conv(x, w, stride, pad):
    def fwd_bwd():
        y, back = conv_direct(x, w, stride, pad)
        return back(np.ones_like(y))
    return (lambda: conv_direct(x, w, stride, pad)), fwd_bwd


def _torch_conv(torch, x, w, b, stride, pad):
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))

    def fwd():
        with torch.no_grad():
            return torch.nn.functional.conv2d(tx, tw, tb, stride, pad)

    def fwd_bwd():
        tx.grad = tw.grad = tb.grad = None
        y = torch.nn.functional.conv2d(tx, tw, tb, stride, pad)
        y.backward(torch.ones_like(y))
        return tx.grad
    return fwd, fwd_bwd


def conv_impls(naive=True, torch=None):
    """The implementations timed per shape, in order."""
    return ["mininet"] + (["torch"] if torch is not None else []) + (["naive"] if naive else [])


def bench_conv(shapes, threads=None, min_time=0.2, repeat=None, device="cpu", naive=True,
               progress=None):
    """Forward and forward+backward of mininet's conv on `device`, PyTorch's on the CPU
    (when installed) and a naive direct convolution (numpy, timed once: it is slow)."""
    from ..backend import get_device
    dev = get_device(device)
    torch = torch_or_none()
    impls = conv_impls(naive, torch)
    timer = CaseTimer(len(shapes) * len(impls) * len(CONV_MODES), min_time, repeat, progress)
    cases = []
    with _Threads(threads, torch) as n_threads, blas_threads(n_threads) as n_blas:
        for shape in shapes:
            n, c, h, wd, k, ks, stride, pad = shape
            rng = np.random.default_rng(0)
            x = rng.standard_normal((n, c, h, wd)).astype(np.float32)
            w = (rng.standard_normal((k, c, ks, ks)) / np.sqrt(c * ks * ks)).astype(np.float32)
            b = rng.standard_normal(k).astype(np.float32)
            fns = {"mininet": _mininet_conv(x, w, b, stride, pad, dev)}
            if torch is not None:
                fns["torch"] = _torch_conv(torch, x, w, b, stride, pad)
            if naive:
                fns["naive"] = _naive_conv(x, w, stride, pad)
            timed = {}   # (impl, mode) -> Case
            for mode_i, mode in enumerate(CONV_MODES):
                entries = {}
                for impl in impls:
                    on_gpu = impl == "mininet" and device != "cpu"
                    flops, nbytes = conv_work(shape, mode)
                    params = {"shape": ",".join(map(str, shape)), "mode": mode,
                              "device": device if impl == "mininet" else "cpu", "dtype": "float32"}
                    where = f" {device}" if on_gpu else ""
                    entries[impl] = {
                        "name": f"conv {params['shape']} {mode} {impl}{where}", "impl": impl,
                        "params": params, "fn": fns[impl][mode_i], "flops": flops,
                        "nbytes": nbytes,
                        "threads": None if on_gpu else n_blas if impl == "naive" else n_threads}
                # mininet and PyTorch in turns, so their ratio holds on a machine whose
                # speed moves; the naive conv (slow) once, on its own
                together = [entries[i] for i in impls if i != "naive"]
                sync = {entries["mininet"]["name"]: dev.synchronize} if device != "cpu" else None
                for case in timer.time_together(together, sync=sync):
                    timed[(case.impl, mode)] = case
                if "naive" in entries:
                    e = entries["naive"]
                    timed[("naive", mode)] = timer.time(
                        e["name"], "naive", e["params"], e["fn"], flops=e["flops"],
                        nbytes=e["nbytes"], threads=e["threads"], repeat=1)
            cases += [timed[(impl, mode)] for impl in impls for mode in CONV_MODES]
    return cases


# % of peak ----------------------------------------------------------------------------------
def add_roofline(cases, peak):
    """Each CPU case's params gain its arithmetic intensity ("flop_per_byte") and, with a
    peak (mininet.benchmark.peak's dict), "pct_peak" (of the compute peak at its thread
    count), "bound" (compute or memory: which roof its intensity is under) and
    "attainable_gflops"."""
    for case in cases:
        if not case.flops or not case.nbytes:
            continue
        case.params["flop_per_byte"] = case.flops / case.nbytes
        if peak is None or case.params.get("device") != "cpu" or case.threads is None:
            continue
        from ..benchmark.peak import roofline
        r = roofline(case.flops, case.nbytes, case.median, peak,
                     dtype=case.params.get("dtype", "float32"), threads=case.threads)
        case.params.update(pct_peak=r["pct_peak"], bound=r["bound"],
                           attainable_gflops=r["attainable_gflops"])
    return cases
