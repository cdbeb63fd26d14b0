"""One recurrent layer's training pass (forward, out.sum() backward) in mininet and
PyTorch, interleaved round by round: the CPU's sequence kernels (a layer's time steps in
one call, capabilities lstm_seq / gru_seq / rnn_seq), the same layer step by step (the
capability removed) and PyTorch's LSTM / GRU / RNN.

    python bench/rnn_layer.py [--seq 35] [--batch 20] [--size 256] [--threads 2] [--rounds 15]

Prints the median ms of each; torch is skipped when it is not installed."""
import argparse
import time

import numpy as np

import mininet
from mininet import nn
from mininet.backend.cpu import CPUDevice

CAPABILITY = {"LSTM": "lstm_seq", "GRU": "gru_seq", "RNN": "rnn_seq"}


def _timed(f):
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def _cases(kind, x, torch):
    """{name: one pass} for one layer kind."""
    size = x.shape[2]
    layer = getattr(nn, kind)(size, size)
    X = mininet.Tensor(x, requires_grad=True)

    def fused():
        out, _ = layer(X)
        out.sum().backward()

    def steps():
        caps = CPUDevice.capabilities
        CPUDevice.capabilities = caps - {CAPABILITY[kind]}
        try:
            fused()
        finally:
            CPUDevice.capabilities = caps
    cases = {"sequence kernels": fused, "step by step": steps}
    if torch is not None:
        ref, TX = getattr(torch.nn, kind)(size, size), torch.from_numpy(x).requires_grad_()

        def theirs():
            out, _ = ref(TX)
            out.sum().backward()
        cases["torch"] = theirs
    return cases


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seq", type=int, default=35)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    try:
        import torch
        torch.set_num_threads(args.threads)
    except ImportError:
        torch = None
    mininet.set_num_threads(args.threads)
    x = np.random.default_rng(0).standard_normal((args.seq, args.batch, args.size))
    x = x.astype(np.float32)
    print(f"one layer, forward + backward, {args.seq} x {args.batch} x {args.size}, "
          f"{args.threads} threads, median of {args.rounds} rounds")
    for kind in CAPABILITY:
        cases = _cases(kind, x, torch)
        times = {name: [] for name in cases}
        for f in cases.values():   # warm-up
            f()
        for _ in range(args.rounds):
            for name, f in cases.items():
                times[name].append(_timed(f))
        print(kind.ljust(5), "  ".join(f"{name} {np.median(t) * 1e3:.2f} ms"
                                      for name, t in times.items()))


if __name__ == "__main__":
    main()
