"""`mininet bench train`: one training epoch of mininet and of PyTorch's twin of the model."""
import numpy as np

from .. import get_num_threads, set_num_threads
from .timing import best_times


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
