#!/usr/bin/env python3
"""float32 matmul on --device cuda for each operand layout (A @ B, A @ B^T, A^T @ B,
A^T @ B^T: the forward, input-gradient and weight-gradient products of a Linear layer)
against PyTorch's (cuBLAS, TF32 off), at the sizes given.

    python3 bench/gpu_gemm_layouts.py [--sizes 1024,4096] [--reps 20]

Prints one JSON object: TFLOPS per size and layout for mininet and torch (torch omitted
where it is not installed or has no CUDA).
"""
import argparse
import json
import time

import numpy as np

import mininet
from mininet.ndarray import NDArray

LAYOUTS = ("rr", "rt", "tr", "tt")


def timed(fn, sync, reps):
    fn()
    sync()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    sync()
    return (time.perf_counter() - start) / reps


def operands(n, layout, make):
    """A, B (n x n) views in the layout: "t" is a transposed view of a stored matrix."""
    rng = np.random.default_rng(0)
    a, b = (make(rng.standard_normal((n, n)).astype(np.float32)) for _ in range(2))
    return (a.T if layout[0] == "t" else a), (b.T if layout[1] == "t" else b)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1024,4096")
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args()
    dev = mininet.cuda()
    try:
        import torch
        torch.backends.cuda.matmul.allow_tf32 = False
        cuda = torch.cuda.is_available()
    except ImportError:
        cuda = False
    report = {"device": repr(dev)}
    for n in (int(s) for s in args.sizes.split(",")):
        flops = 2.0 * n ** 3
        for layout in LAYOUTS:
            a, b = operands(n, layout, lambda x: NDArray(x, device=dev))
            row = {"mininet_tflops": flops / timed(lambda: a @ b, dev.synchronize, args.reps) / 1e12}
            if cuda:
                ta, tb = operands(n, layout, lambda x: torch.from_numpy(x).cuda())
                row["torch_tflops"] = flops / timed(lambda: ta @ tb, torch.cuda.synchronize,
                                                    args.reps) / 1e12
                row["mininet_vs_torch"] = row["mininet_tflops"] / row["torch_tflops"]
            report[f"{n} {layout}"] = {k: round(v, 3) for k, v in row.items()}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
