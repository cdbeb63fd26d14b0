"""Channels-last (NHWC) convolution against the NCHW paths, per layer of `mininet bench conv`.

For each layer (N,C,H,W,K,k,stride,pad; default: mininet.cli.bench.CONV_SHAPES), float32,
forward and forward+backward (dx, dW, db), four implementations timed interleaved (one
sample of each in turn, so load on a shared machine hits them alike), medians reported:
  nchw     mininet's conv op (mininet.ops.conv: Winograd / implicit GEMM / im2col), NCHW
  nhwc     CPUDevice.conv2d_nhwc and its gradients (mininet_ext/conv_nhwc.pyx) on NHWC arrays
  torch    torch.nn.functional.conv2d, NCHW
  torch_cl the same on channels_last tensors (x.to(memory_format=torch.channels_last))
Each sample runs a call enough times to last at least --sample-ms. The JSON output also
holds each implementation's fastest sample (<impl>_min): on a shared machine a descheduled
thread stalls a whole 2-thread call, and the minimum shows what the code itself costs.

    python bench/conv_nhwc.py [--threads 2] [--repeat 31] [--sample-ms 5] [--shapes 'N,C,H,W,K,k,s,p;...']
        [--json out.json]
"""
import argparse
import json
import os
import statistics
import sys
import time


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=31, help="samples per implementation")
    ap.add_argument("--sample-ms", type=float, default=5.0)
    ap.add_argument("--shapes", default=None)
    ap.add_argument("--json", default=None, help="write the medians here")
    return ap.parse_args()


ARGS = parse_args()
os.environ["MININET_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = str(ARGS.threads)

import numpy as np   # noqa: E402  (after the thread settings)
import torch         # noqa: E402

from mininet.backend.cpu import cpu                                   # noqa: E402
from mininet.cli.bench import CONV_SHAPES, _mininet_conv, parse_conv_shapes  # noqa: E402
from mininet.ndarray import NDArray                                   # noqa: E402

IMPLS = ("nchw", "nhwc", "torch", "torch_cl")
MODES = ("fwd", "fwd+bwd")


def nhwc_fns(x, w, b, stride, pad):
    """(forward, forward+backward) on CPUDevice's NHWC kernels; outputs allocated per call
    as an op would."""
    dev = cpu()
    xn = NDArray(np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
    wn = NDArray(np.ascontiguousarray(w.transpose(2, 3, 1, 0)))
    bn = NDArray(b)
    geo = ((stride, stride), (pad, pad))
    shape = dev.conv2d_nhwc_shape(xn.shape, wn.shape, *geo)
    g = NDArray(np.ones(shape, np.float32))
    f32 = np.dtype("float32")

    def fwd():
        out = NDArray.make(shape, dtype=f32)
        dev.conv2d_nhwc(xn, wn, bn, out, *geo)
        return out

    def fwd_bwd():
        fwd()
        dx, dw, db = (NDArray.make(a.shape, dtype=f32) for a in (xn, wn, bn))
        dev.conv2d_nhwc_grad_input(g, wn, dx, *geo)
        dev.conv2d_nhwc_grad_weight(g, xn, dw, *geo)
        dev.conv2d_nhwc_grad_bias(g, db)
        return dx
    return fwd, fwd_bwd


def torch_fns(x, w, b, stride, pad, channels_last):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    tx = torch.tensor(x).to(memory_format=fmt).requires_grad_()
    tw = torch.tensor(w).to(memory_format=fmt).requires_grad_()
    tb = torch.tensor(b).requires_grad_()
    F = torch.nn.functional

    def fwd():
        with torch.no_grad():
            return F.conv2d(tx, tw, tb, stride, pad)

    def fwd_bwd():
        tx.grad = tw.grad = tb.grad = None
        y = F.conv2d(tx, tw, tb, stride, pad)
        y.backward(torch.ones_like(y))   # ones_like keeps y's memory format
        return tx.grad
    return fwd, fwd_bwd


def calls_per_sample(fn, ms):
    fn()
    t = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t, 1e-6)
    return max(1, int(ms / 1e3 / one))


def sample(fn, calls):
    t = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t) / calls


def bench_layer(shape):
    n, c, h, wd, k, ks, stride, pad = shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, wd)).astype(np.float32)
    w = (rng.standard_normal((k, c, ks, ks)) / np.sqrt(c * ks * ks)).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    fns = {"nchw": _mininet_conv(x, w, b, stride, pad, cpu()),
           "nhwc": nhwc_fns(x, w, b, stride, pad),
           "torch": torch_fns(x, w, b, stride, pad, False),
           "torch_cl": torch_fns(x, w, b, stride, pad, True)}
    result = {}
    for m, mode in enumerate(MODES):
        calls = {impl: calls_per_sample(fns[impl][m], ARGS.sample_ms) for impl in IMPLS}
        times = {impl: [] for impl in IMPLS}
        for _ in range(ARGS.repeat):
            for impl in IMPLS:
                times[impl].append(sample(fns[impl][m], calls[impl]))
        result[mode] = {impl: statistics.median(ts) * 1e3 for impl, ts in times.items()}
        result[mode].update({f"{impl}_min": min(ts) * 1e3 for impl, ts in times.items()})
    return result


def main():
    torch.set_num_threads(ARGS.threads)
    shapes = parse_conv_shapes(ARGS.shapes or CONV_SHAPES)
    print(f"threads {ARGS.threads}, {ARGS.repeat} interleaved samples, medians in ms; "
          f"ratios: nhwc time / other's time (< 1: nhwc wins)")
    print(f"{'layer N,C,H,W,K,k,s,p':26} {'mode':8} " + " ".join(f"{i:>9}" for i in IMPLS)
          + "  nhwc/nchw nhwc/torch nhwc/t_cl")
    rows = []
    for shape in shapes:
        res = bench_layer(shape)
        for mode in MODES:
            r = res[mode]
            print(f"{','.join(map(str, shape)):26} {mode:8} "
                  + " ".join(f"{r[i]:9.3f}" for i in IMPLS)
                  + f"  {r['nhwc'] / r['nchw']:9.2f} {r['nhwc'] / r['torch']:10.2f}"
                  + f" {r['nhwc'] / r['torch_cl']:10.2f}", flush=True)
            rows.append({"shape": shape, "mode": mode, **r})
    if ARGS.json:
        with open(ARGS.json, "w") as f:
            json.dump({"threads": ARGS.threads, "repeat": ARGS.repeat, "ms": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
