"""Inference latency of the conv-BN-ReLU models, eval mode: mininet as built, mininet
after fuse_modules (BN folded, ReLU as the conv's epilogue) and PyTorch eval with the same
weights, timed in interleaved turns in one run; medians in ms.

    python bench/fusion_latency.py [--batch 64] [--threads 2] [--rounds 7] [--min-time 2]
"""
import argparse
import statistics

import numpy as np

from mininet import get_num_threads, set_num_threads
from mininet.benchmark.harness import measure
from mininet.cli.bench_latency import _torch_threads, latency_case
from mininet.nn.utils import find_fusable, fuse_modules


def fused_fn(model, x):
    from mininet import Tensor, no_grad
    fused = fuse_modules(model, find_fusable(model))
    tx = Tensor(x)

    def run():
        with no_grad():
            return fused(tx)
    return run


def bench(name, batch, rounds, min_time):
    fns, x, model, _ = latency_case(name, batch)
    fns["fused"] = fused_fn(model, x)
    got, want = fns["fused"]().numpy(), fns["mininet"]().numpy()
    assert np.allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max()), name
    samples = {impl: [] for impl in fns}
    for _ in range(rounds):   # turns: a slow spell of the shared machine hits every impl
        for impl, fn in fns.items():
            samples[impl] += measure(fn, min_time=min_time / rounds)
    return {impl: statistics.median(s) * 1e3 for impl, s in samples.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="cifar-cnn,resnet9")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--min-time", type=float, default=2.0)
    a = ap.parse_args()
    old = get_num_threads()
    set_num_threads(a.threads)
    _torch_threads(a.threads)
    try:
        print(f"batch {a.batch}, {a.threads} threads; median ms per forward")
        print(f"{'model':10} {'mininet':>9} {'fused':>9} {'torch':>9} {'fused/plain':>12} "
              f"{'fused/torch':>12}")
        for name in a.models.split(","):
            r = bench(name, a.batch, a.rounds, a.min_time)
            torch_ms = r.get("torch", float("nan"))
            print(f"{name:10} {r['mininet']:9.2f} {r['fused']:9.2f} {torch_ms:9.2f} "
                  f"{r['fused'] / r['mininet']:12.2f} {r['fused'] / torch_ms:12.2f}")
    finally:
        set_num_threads(old)


if __name__ == "__main__":
    main()
