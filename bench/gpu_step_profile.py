#!/usr/bin/env python3
"""Where a CUDA training step's time goes: the MNIST CNN (Adam, batch 100) on --device cuda.

    python3 bench/gpu_step_profile.py [--steps 50] [--batch 100]
    MININET_CUDA=emulate python3 bench/gpu_step_profile.py --steps 2 --batch 4   # a dry run

Prints one JSON object: the step's wall time (synchronised), the kernel launches per step
by entry point, the host time spent issuing them (inside the device's _launch), and, per
convolution layer, the GPU time of the forward and of each gradient kernel (input, weight,
bias) timed alone with synchronisation. A step much longer than its kernels' GPU time is
bound by the host (Python and PyCUDA launches), not by the kernels.
"""
import argparse
import collections
import importlib
import json
import time

import numpy as np

import mininet
from mininet.autograd import Tensor
from mininet.models import build_model
from mininet.models.train import make_optimizer
from mininet.ndarray import NDArray
from mininet.nn import functional as F


def timed(fn, dev, reps):
    fn()
    dev.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    dev.synchronize()
    return (time.perf_counter() - start) / reps


def step_profile(dev, batch, steps):
    rng = np.random.default_rng(0)
    x = Tensor(rng.random((batch, 1, 28, 28), dtype=np.float32), device=dev)
    y = Tensor(rng.integers(0, 10, batch), device=dev)
    mininet.manual_seed(0)
    model = build_model("cnn")
    model.to(dev)
    opt = make_optimizer("adam", model.parameters(), 1e-3)

    def step():
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()

    step_s = timed(step, dev, steps)
    counts, host = collections.Counter(), [0.0]
    launch = type(dev)._launch

    def counting(self, module, name, *args, **kw):
        counts[name] += 1
        t0 = time.perf_counter()
        try:
            return launch(self, module, name, *args, **kw)
        finally:
            host[0] += time.perf_counter() - t0
    type(dev)._launch = counting
    try:
        step()
        dev.synchronize()
    finally:
        type(dev)._launch = launch
    return {"step_ms": step_s * 1e3, "launches_per_step": sum(counts.values()),
            "launch_host_ms_per_step": host[0] * 1e3,
            "launches_by_kernel": dict(counts.most_common())}


def conv_parts(dev, batch, reps):
    conv_mod = importlib.import_module("mininet.ops.conv")   # (ops.conv is the function)
    out = {}
    for (c, hw, k, ks, pad) in ((1, 28, 16, 5, 2), (16, 14, 32, 5, 2)):
        rng = np.random.default_rng(1)
        x = NDArray(rng.standard_normal((batch, c, hw, hw)).astype(np.float32), device=dev)
        w = NDArray(rng.standard_normal((k, c, ks, ks)).astype(np.float32), device=dev)
        b = NDArray(np.zeros(k, np.float32), device=dev)
        p = conv_mod.conv_params(1, pad)
        y, _ = conv_mod.conv_forward(x, w, b, p)
        parts = {"fwd": lambda: conv_mod.conv_forward(x, w, b, p),
                 "dx": lambda: conv_mod.conv_grad_input(y, w, x.shape, p),
                 "dw": lambda: conv_mod.conv_grad_weight(y, x, w.shape, p),
                 "db": lambda: conv_mod.conv_grad_bias(y)}
        out[f"{batch},{c},{hw},{hw},{k},{ks},1,{pad}"] = {
            name: round(timed(fn, dev, reps) * 1e3, 4) for name, fn in parts.items()}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--batch", type=int, default=100)
    args = ap.parse_args()
    dev = mininet.cuda()
    report = {"device": repr(dev), "batch": args.batch,
              "step": step_profile(dev, args.batch, args.steps),
              "conv_ms": conv_parts(dev, args.batch, max(args.steps // 5, 1))}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
