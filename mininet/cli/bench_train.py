"""`mininet bench train`: one training epoch of a registry model in mininet and in its
PyTorch twin (built from the same spec: models/registry.py), timed in turns in one run."""
import time

import numpy as np

from .. import get_num_threads, set_num_threads
from ..models import registry


# at most this many samples an epoch for the slower image models
MAX_SAMPLES = {"cifar-cnn": 10000, "resnet9": 5120}
# the language models' case (rnn, lstm, transformer; each against the registry's PyTorch
# twin): LM_STEPS windows of the entry's sequence length and batch (35 x 20), embedding
# and hidden 256 (the Transformer's feed-forward width), 2 layers, a vocabulary of 10,000
LM_KWARGS = {"vocab_size": 10000, "embedding_size": 256, "hidden_size": 256, "num_layers": 2}
LM_STEPS = 20
TORCH_MISSING = "torch not installed (pip install 'mininet-dl[torch]')"


def time_epochs(epochs, repeat, warmup):
    """{name: [seconds of each timed epoch]} for epochs (a dict name -> function running
    one epoch), run in turns (one epoch of each per round, after `warmup` rounds), so a
    slow spell of a shared machine hits every implementation alike. The one place
    `bench train` times anything."""
    for _ in range(warmup):
        for fn in epochs.values():
            fn()
    samples = {name: [] for name in epochs}
    for _ in range(repeat):
        for name, fn in epochs.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return samples


def paired_ratio(mine, theirs):
    """The median of round-by-round ratios mine[i] / theirs[i] of epochs timed in turns
    (time_epochs): each round's two epochs ran seconds apart, so a slow spell of a shared
    machine falls on both. The ratio of the two medians mixes rounds instead: on a VM
    switching between two speeds it read 0.80 and 0.96 for the LSTM LM where the rounds'
    own ratios had a median of 0.71. Lists of unequal length: the ratio of the medians."""
    if len(mine) != len(theirs) or not mine:
        return float(np.median(mine)) / float(np.median(theirs))
    return float(np.median([m / t for m, t in zip(mine, theirs)]))


def train_case(name, samples, batch_size, rng):
    """(x, y, batch size, mininet model) of an image model's case: random data of the
    model's input shape, at most MAX_SAMPLES of it; batch_size None: the model's default."""
    entry = registry.get(name)
    n = min(samples, MAX_SAMPLES.get(entry.name, samples))
    x = rng.random((n,) + entry.input_shape, dtype=np.float32)
    y = rng.integers(0, 10, n)
    return x, y, batch_size or entry.batch_size, entry.build()


def bench_train(models=("mlp", "resnet"), samples=60000, batch_size=None, threads=None, repeat=1,
                precision=None, graph=False):
    """Rows {impl, model, seconds (the median), best_seconds, epoch_seconds (each timed
    epoch), threads, samples, batch_size, samples_per_s, precision}: seconds for one
    training epoch (Adam) of each model on random data of its input shape, mininet
    and, where PyTorch is installed, its twin. An image model trains on `samples` samples
    (at most MAX_SAMPLES); a language model LM_STEPS windows (samples are tokens).
    batch_size None: each model's default; threads None: all cores (or
    MININET_NUM_THREADS). precision "bf16": both forward passes under bf16 autocast
    (mininet.autocast, torch.autocast("cpu", torch.bfloat16)); image models only. graph:
    mininet replays its step as a KernelGraph (train_epoch's and train_lm_epoch's graph,
    as `mininet train` does); the row's "graph" says so."""
    if precision not in (None, "bf16"):
        raise ValueError(f"precision must be None or 'bf16', got {precision!r}")
    lms = [m for m in models if registry.get(m).language_model]
    if precision and lms:
        raise ValueError(f"bf16 precision: {', '.join(lms)} (language models) train in fp32 "
                         f"only; choose image models")
    threads = threads or get_num_threads()
    rng = np.random.default_rng(0)
    rows = []
    old = get_num_threads()
    set_num_threads(threads)
    try:
        for name in models:
            entry = registry.get(name)
            if entry.language_model:
                epochs, n, batch, warmup = _lm_case(entry, samples, batch_size, threads, rng,
                                                    graph)
            else:
                epochs, n, batch, warmup = _image_case(entry, samples, batch_size, threads, rng,
                                                       precision, graph)
            for impl, times in time_epochs(epochs, repeat, warmup).items():
                t = float(np.median(times))
                rows.append({"impl": impl, "model": name, "seconds": t, "threads": threads,
                             "samples": n, "batch_size": batch, "samples_per_s": n / t,
                             "best_seconds": min(times), "epoch_seconds": times,
                             "precision": precision or "fp32",
                             "graph": bool(graph and impl == "mininet")})
    finally:
        set_num_threads(old)
    return rows


def _torch(threads):
    """PyTorch set to threads, or None where it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    return torch


def _image_case(entry, samples, batch_size, threads, rng, precision=None, graph=False):
    """({impl: one epoch}, samples, batch, warm-up epochs) of an image model."""
    from ..data import DataLoader, TensorDataset
    from ..training import make_optimizer, train_epoch
    x, y, batch, model = train_case(entry.name, samples, batch_size, rng)
    opt = make_optimizer("adam", model.parameters(), 1e-3)
    loader = DataLoader(TensorDataset(x, y), batch, shuffle=True, seed=0)
    epochs = {"mininet": lambda: train_epoch(model, loader, opt, precision=precision,
                                             graph=graph)}
    torch = _torch(threads)
    if torch is not None:
        epochs["torch"] = _torch_epoch(torch, entry.build_torch(), x, y, batch, precision)
    # under bf16 the first epoch also times the bf16 path choice and the libraries' setup
    return epochs, len(x), batch, 1 if precision else 0


def _torch_epoch(torch, model, x, y, batch_size, precision=None):
    """A function training PyTorch's twin one epoch over (x, y), shuffled; precision
    "bf16": the forward pass and loss under torch.autocast("cpu", torch.bfloat16)."""
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    loss_fn = torch.nn.CrossEntropyLoss()
    gen = np.random.default_rng(0)
    mixed = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision is not None)

    def epoch():
        model.train()
        order = torch.from_numpy(gen.permutation(len(x)))
        for b in range(0, len(x), batch_size):
            idx = order[b:b + batch_size]
            opt.zero_grad()
            with mixed:
                loss = loss_fn(model(tx[idx]), ty[idx])
            loss.backward()
            opt.step()
            loss.item()
    return epoch


def _lm_case(entry, samples, batch_size, threads, rng, graph=False):
    """({impl: LM_STEPS training steps}, tokens, batch, warm-up epochs) of a language model:
    truncated BPTT over random tokens, the state carried and detached between windows."""
    from .. import optim
    from ..data import batchify, get_batch
    from ..training import train_lm_epoch
    seq, batch = entry.input_shape[0], batch_size or entry.batch_size
    tokens = rng.integers(0, LM_KWARGS["vocab_size"], (LM_STEPS * seq + 1) * batch)
    batches = batchify(tokens, batch)            # LM_STEPS windows of seq rows, and targets
    model = entry.build(**LM_KWARGS)
    opt = optim.Adam(model.parameters(), 1e-3)
    epochs = {"mininet": lambda: train_lm_epoch(model, batches, opt, seq, graph=graph)}
    torch = _torch(threads)
    if torch is not None:
        windows = [tuple(torch.from_numpy(t.numpy()) for t in get_batch(batches, i, seq))
                   for i in range(0, len(batches) - 1, seq)]
        epochs["torch"] = _torch_lm_epoch(torch, entry.build_torch(**LM_KWARGS), windows)
    return epochs, LM_STEPS * seq * batch, batch, 1


def _torch_lm_epoch(torch, model, windows):
    opt = torch.optim.Adam(model.parameters(), 1e-3)

    def epoch():
        model.train()
        state = None
        for x, y in windows:
            opt.zero_grad()
            out, state = model(x, state)
            loss = torch.nn.functional.cross_entropy(out, y)
            loss.backward()
            opt.step()
            loss.item()
            state = _detach(state)
    return epoch


def _detach(state):
    if state is None:
        return None
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
