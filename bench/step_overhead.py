"""Per-step time of a small model's training step (forward, SoftmaxLoss, backward, Adam,
zero_grad, loss.item()) in mininet and PyTorch, interleaved in one run (issue 25, item 4).

    python bench/step_overhead.py [--model mlp] [--threads 1,2] [--rounds 15] [--steps 50]
    python bench/step_overhead.py --tiny         # an 8-8-10 MLP, batch 4: overhead alone
    python bench/step_overhead.py --profile      # cProfile of mininet's steps, top entries
    python bench/step_overhead.py --ab           # also mininet with fixed size thresholds
    python bench/step_overhead.py --kernels      # time in each CPU kernel call, per step

--ab adds "fixed": the same mininet step with the adaptive team use off (threads_timed
as threads_for: size floors only, the behaviour before issue 25.4), interleaved round by
round, with fixed/adaptive per round.

Prints the median ms per step of each round for each library, their ratio, and for an
MLP the time of the step's products alone (mininet's GEMM, same shapes) and step / GEMM:
how far the step is from its arithmetic at this machine's GEMM rate. On a shared machine
the medians wobble; the ratios, taken round by round, much less."""
import argparse
import cProfile
import inspect
import pstats
import time

import numpy as np

import mininet
from mininet import nn, optim
from mininet.models import registry


def _input(entry, batch, rng, kw):
    shape = (kw["in_dim"],) if "in_dim" in kw else entry.input_shape
    return rng.random((batch,) + shape, dtype=np.float32)


def _mininet_setup(name, batch, kw):
    """A registry model in training mode, Adam, the loss and one batch of inputs."""
    entry = registry.get(name)
    model = entry.build(**kw)
    model.train()
    rng = np.random.default_rng(0)
    x = mininet.Tensor(_input(entry, batch, rng, kw))
    y = mininet.Tensor(rng.integers(0, 10, batch))
    return model, optim.Adam(model.parameters(), 1e-3), nn.SoftmaxLoss(), x, y


def _train_step(model, opt, loss_fn, x, y, read=True):
    """One training step; read: loss.item() before backward, as a training loop's tally
    (not in a KernelGraph's capture, which refuses host reads)."""
    def step():
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        if read:
            loss.item()
        loss.backward()
        opt.step()
        return loss
    return step


def mininet_step(name, batch, **kw):
    return _train_step(*_mininet_setup(name, batch, kw))


def mininet_graph_step(name, batch, **kw):
    """The same step captured as a mininet.KernelGraph (after one eager step, as
    train_epoch does), then replayed: its kernels without the Python of autograd, ops and
    nn (the optimizer's step still runs in Python); loss.item() read after each replay."""
    eager = _train_step(*_mininet_setup(name, batch, kw), read=False)
    eager()
    graph = mininet.KernelGraph()
    with graph.capture():
        loss = eager()

    def step():
        graph.replay()
        loss.item()
    return step


def torch_step(name, batch, **kw):
    import torch
    entry = registry.get(name)
    model = entry.build_torch(**kw)
    model.train()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    rng = np.random.default_rng(0)
    x = torch.from_numpy(_input(entry, batch, rng, kw))
    y = torch.from_numpy(rng.integers(0, 10, batch))

    def step():
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.item()
        loss.backward()
        opt.step()
    return step


def gemm_only(name, batch, **kw):
    """The products of one MLP step alone (forward x @ W per layer; backward g @ W^T for
    every layer but the first, x^T @ g for each): the step's arithmetic at the rate of
    mininet's own GEMM, in the same run (the floor the step is held against)."""
    from mininet.ndarray import NDArray
    entry = registry.get(name)
    opts = entry.options(kw)
    hidden = opts["hidden"] if isinstance(opts["hidden"], (list, tuple)) else [opts["hidden"]]
    widths = [opts["in_dim"]] + list(hidden) + [opts["num_classes"]]
    rng = np.random.default_rng(0)
    acts = [NDArray(rng.random((batch, w), dtype=np.float32)) for w in widths]
    weights = [NDArray(rng.random((a, b), dtype=np.float32)) for a, b in zip(widths, widths[1:])]

    def step():
        for x, w in zip(acts, weights):
            x @ w
        for k, (x, w) in enumerate(zip(acts, weights)):
            g = acts[k + 1]
            x.swapaxes(0, 1) @ g
            if k:
                g @ w.swapaxes(0, 1)
    return step


def per_step(fn, steps):
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) / steps


def fixed_thresholds(fn):
    """fn run with the adaptive team use off (size floors only)."""
    from mininet_ext import _omp

    def step():
        old = _omp.set_adaptive(False)
        try:
            fn()
        finally:
            _omp.set_adaptive(old)
    return step


def run(name, batch, threads, rounds, steps, ab=False, **kw):
    import torch
    mininet.set_num_threads(threads)
    torch.set_num_threads(threads)
    fns = {"mininet": mininet_step(name, batch, **kw), "torch": torch_step(name, batch, **kw),
           "graph": mininet_graph_step(name, batch, **kw)}
    if ab:
        fns["fixed"] = fixed_thresholds(mininet_step(name, batch, **kw))
    if name.startswith("mlp"):
        fns["gemm"] = gemm_only(name, batch, **kw)
    for fn in fns.values():
        per_step(fn, steps)   # warm-up
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            times[k].append(per_step(fn, steps))
    med = {k: float(np.median(v)) * 1e3 for k, v in times.items()}
    per_round = {k: np.array(v) for k, v in times.items()}
    ratio = float(np.median(per_round["torch"] / per_round["mininet"]))
    what = f"{name}{kw or ''}"
    line = (f"{what} batch {batch}, {threads} thread(s): mininet {med['mininet']:.3f} ms, "
            f"torch {med['torch']:.3f} ms, torch/mininet {ratio:.2f}x")
    if "gemm" in med:
        over = float(np.median(per_round["mininet"] / per_round["gemm"]))
        line += f"; its GEMMs alone {med['gemm']:.3f} ms, step/GEMM {over:.2f}x"
    line += f"; KernelGraph replay {med['graph']:.3f} ms"
    if "gemm" in med:
        over = float(np.median(per_round["graph"] / per_round["gemm"]))
        line += f", replay/GEMM {over:.2f}x"
    if "fixed" in med:
        gain = float(np.median(per_round["fixed"] / per_round["mininet"]))
        line += f"; fixed thresholds {med['fixed']:.3f} ms, fixed/adaptive {gain:.2f}x"
    print(line)
    return med, ratio


def profile(name, batch, threads, steps, top, **kw):
    mininet.set_num_threads(threads)
    fn = mininet_step(name, batch, **kw)
    per_step(fn, 20)
    prof = cProfile.Profile()
    prof.enable()
    per_step(fn, steps)
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(top)


KERNELS = ("matmul", "bias_act", "binary", "binary_scalar", "unary", "reduce", "softmax_xent",
           "softmax_xent_grad", "adam_steps", "fill", "copy", "from_numpy", "to_numpy", "alloc",
           "conv2d", "conv2d_grad_input", "conv2d_grad_weight", "conv2d_grad_bias", "im2col",
           "col2im", "to_nchw", "maxpool", "maxpool_backward", "batchnorm",
           "batchnorm_backward", "take_rows", "relu_grad_bias")


def kernel_times(name, batch, threads, steps, **kw):
    """Each CPU device method's time per step (its Python wrapper included), by wrapping
    the methods of the CPU device's class for `steps` steps; the rest of the step (the
    step's time without the wrappers, less theirs) is the Python of autograd, ops, nn
    and optim. The wrappers cost ~0.2 us a call."""
    import collections
    from mininet.backend.cpu import CPUDevice
    mininet.set_num_threads(threads)
    fn = mininet_step(name, batch, **kw)
    per_step(fn, 50)
    plain = min(per_step(fn, steps) for _ in range(5))
    spent, calls, saved = collections.Counter(), collections.Counter(), {}
    for k in KERNELS:
        saved[k] = inspect.getattr_static(CPUDevice, k)   # (alloc is a staticmethod)
        method, static = getattr(CPUDevice, k), isinstance(saved[k], staticmethod)

        def timed(self, *args, _method=method, _k=k, _static=static, **kwargs):
            start = time.perf_counter()
            try:
                return _method(*args, **kwargs) if _static else _method(self, *args, **kwargs)
            finally:
                spent[_k] += time.perf_counter() - start
                calls[_k] += 1
        setattr(CPUDevice, k, timed)
    try:
        per_step(fn, steps)
    finally:
        for k, method in saved.items():
            setattr(CPUDevice, k, method)
    print(f"{name}{kw or ''} batch {batch}, {threads} thread(s): step {plain * 1e3:.3f} ms")
    for k, t in spent.most_common():
        print(f"  {k:18s} {t / steps * 1e6:8.1f} us  ({calls[k] / steps:.0f} calls)")
    inside = sum(t for k, t in spent.items() if k != "alloc") / steps
    print(f"  {'kernels':18s} {inside * 1e6:8.1f} us; the rest {(plain - inside) * 1e6:.1f} us")


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="mlp")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--tiny", action="store_true",
                   help="an 8-8-10 MLP on batch 4: the step's overhead with next to no arithmetic")
    p.add_argument("--top", type=int, default=40)
    p.add_argument("--kernels", action="store_true",
                   help="time in each CPU kernel call per step (and the rest: Python)")
    p.add_argument("--ab", action="store_true",
                   help="also time mininet with fixed size thresholds (adaptive team use off)")
    a = p.parse_args()
    threads = [int(t) for t in a.threads.split(",")]
    kw, batch = ({"in_dim": 8, "hidden": 8}, 4) if a.tiny else ({}, a.batch)
    if a.profile:
        profile(a.model, batch, threads[0], a.steps * 10, a.top, **kw)
        return
    if a.kernels:
        for t in threads:
            kernel_times(a.model, batch, t, a.steps * 20, **kw)
        return
    for t in threads:
        run(a.model, batch, t, a.rounds, a.steps, ab=a.ab, **kw)


if __name__ == "__main__":
    main()
