"""Training and evaluation on CUDA against the same on the CPU, end to end: the MNIST MLP
epoch of `mininet train`, the MNIST CNN on 1,000 real test images, the PTB LSTM language
model (a generated corpus). Marked gpu: under MININET_CUDA=emulate in CI, on a real GPU
when one is lent."""
import json

import numpy as np
import pytest

import mininet
from mininet import nn, optim
from mininet.autograd import Tensor, no_grad
from mininet.data import Corpus, MNISTDataset, batchify, get_batch
from mininet.models import LanguageModel, build_model
from mininet.models.train import evaluate_lm, train_lm_epoch
from conftest import SENTENCES, run_cli, write_corpus

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def gpu():
    return mininet.cuda()


def rel(a, b):
    return abs(a - b) / abs(b)


def cli_json(*args):
    r = run_cli("train", *args, "--json", timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)


@pytest.mark.slow
def test_an_mnist_mlp_epoch_on_cuda_matches_the_cpu(mnist_path):
    """`mininet train mnist --epochs 1` (the MLP, the 5k training subset, the 10k test set):
    the same seed on both devices gives test accuracies within 0.5 percentage points."""
    runs = {dev: cli_json("mnist", "--epochs", "1", "--seed", "0", "--data-dir", mnist_path,
                          "--device", dev) for dev in ("cpu", "cuda")}
    cpu, cuda = (runs[d]["epochs"][0] for d in ("cpu", "cuda"))
    assert cpu["test_acc"] > 0.8
    assert abs(cuda["test_acc"] - cpu["test_acc"]) <= 0.005, (cpu, cuda)
    assert rel(cuda["train_loss"], cpu["train_loss"]) < 1e-3
    assert rel(cuda["test_loss"], cpu["test_loss"]) < 1e-3


@pytest.mark.slow
def test_the_train_header_names_the_gpu_not_the_cpu_threads(gpu, mnist_path):
    r = run_cli("train", "mnist", "--epochs", "1", "--seed", "0", "--data-dir", mnist_path,
                "--device", "cuda", timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    head = r.stdout.splitlines()[0]
    assert "5000 train / 10000 test, cuda(" in " ".join(r.stdout.split()), head
    assert "thread" not in head


def _small_runs_first(fn, *args):
    """Two runs on a few samples: the emulator checks (race detector, three block orders) the
    first two launches of every kernel, ~10x slower than the rest; let those be small ones."""
    for _ in range(2):
        fn(*args)


@pytest.mark.slow
def test_the_mnist_cnn_on_1000_test_images_on_cuda_matches_the_cpu(gpu, mnist_path):
    """Weights trained on the CPU (10 Adam steps): the same test loss (1e-4 relative) and the
    same predictions on 1,000 real MNIST test images."""
    train = MNISTDataset.load("train", mnist_path, download=False, flatten=False)
    test = MNISTDataset.load("test", mnist_path, download=False, flatten=False)
    mininet.manual_seed(0)
    net = build_model("cnn")
    opt = optim.Adam(net.parameters(), 2e-3)
    rng = np.random.default_rng(0)      # the files are sorted by label: random batches
    for _ in range(10):
        x, y = train[rng.choice(len(train), 50, replace=False)]
        opt.zero_grad()
        nn.SoftmaxLoss()(net(Tensor(x)), Tensor(y)).backward()
        opt.step()
    net.eval()
    x, y = test[np.arange(1000)]

    def evaluate(dev, x, y):
        with no_grad():
            logits = net(Tensor(x, device=dev))
            loss = nn.SoftmaxLoss()(logits, Tensor(y, device=dev)).item()
        return loss, logits.numpy()

    cpu_loss, cpu_logits = evaluate("cpu", x, y)
    net.to(gpu)
    _small_runs_first(evaluate, gpu, x[:4], y[:4])
    gpu_loss, gpu_logits = evaluate(gpu, x, y)
    assert (cpu_logits.argmax(1) == y).mean() > 0.5          # trained: predictions mean something
    np.testing.assert_array_equal(gpu_logits.argmax(1), cpu_logits.argmax(1))
    assert rel(gpu_loss, cpu_loss) < 1e-4
    np.testing.assert_allclose(gpu_logits, cpu_logits, rtol=1e-4, atol=1e-4)


# the PTB language model ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("ptb"), SENTENCES * 12, SENTENCES[:1] * 4,
                        SENTENCES[1:2] * 4)


def _lm(vocab, dev):
    mininet.manual_seed(0)
    return LanguageModel(16, vocab, 32, 2, "lstm").to(dev)


def test_the_lstm_language_model_on_cuda_matches_the_cpu(gpu, corpus_dir):
    """The same weights: the loss of a forward, of three truncated-BPTT training steps
    (Adam, gradient clipping, the state carried between windows) and of the first window
    again after them, to 1e-4 relative."""
    c = Corpus(corpus_dir, download=False)
    data = batchify(c.train, 4)
    losses, params = {}, {}
    for dev in ("cpu", gpu):
        model = _lm(len(c.dictionary), dev)
        opt = optim.Adam(model.parameters(), lr=0.02)
        with no_grad():
            x, y = get_batch(data, 0, 8, device=dev)
            run = [nn.SoftmaxLoss()(model(x)[0], y).item()]
        state = None
        for i in range(0, 24, 8):
            x, y = get_batch(data, i, 8, device=dev)
            opt.zero_grad()
            out, state = model(x, state)
            loss = nn.SoftmaxLoss()(out, y)
            loss.backward()
            optim.clip_grad_norm(opt.params, 0.25)
            opt.step()
            state = tuple(s.detach() for s in state)
            run.append(loss.item())
        with no_grad():
            x, y = get_batch(data, 0, 8, device=dev)
            run.append(nn.SoftmaxLoss()(model(x)[0], y).item())
        losses[dev == "cpu"] = run
        params[dev == "cpu"] = [p.numpy() for p in model.parameters()]
    for got, want in zip(losses[False], losses[True]):
        assert rel(got, want) < 1e-4, (losses[False], losses[True])
    assert losses[True][-1] < losses[True][0] - 0.1            # it learnt that window
    for got, want in zip(params[False], params[True]):
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)


def test_lm_epochs_run_on_the_models_device(gpu, corpus_dir):
    """train_lm_epoch and evaluate_lm move each window to where the parameters are."""
    c = Corpus(corpus_dir, download=False)
    train, valid = batchify(c.train, 4), batchify(c.valid, 4)
    results = []
    for dev in ("cpu", gpu):
        model = _lm(len(c.dictionary), dev)
        opt = optim.Adam(model.parameters(), lr=0.01)
        results.append((train_lm_epoch(model, train, opt, 8, clip=0.25),
                        evaluate_lm(model, valid, 8)))
    for got, want in zip(results[1], results[0]):
        assert rel(got, want) < 1e-4, results


def test_mininet_train_ptb_on_cuda_matches_the_cpu(corpus_dir):
    """`mininet train ptb --device cuda` trains (it was refused before the CUDA device had
    the lstm, rows and softmax_xent kernels): perplexities as on the CPU."""
    args = ("ptb", "--data-dir", corpus_dir, "--epochs", "2", "--batch-size", "4",
            "--seq-len", "8", "--embedding-size", "16", "--hidden-size", "32", "--layers", "2")
    runs = [cli_json(*args, "--device", dev)["epochs"] for dev in ("cpu", "cuda")]
    for cpu, cuda in zip(*runs):
        assert rel(cuda["train_ppl"], cpu["train_ppl"]) < 1e-4, runs
        assert rel(cuda["valid_ppl"], cpu["valid_ppl"]) < 1e-4, runs


def _tiny_loader(gpu, n=80, batch=8):
    from mininet.data import DataLoader, TensorDataset
    rng = np.random.default_rng(4)
    x = rng.standard_normal((n, 12)).astype(np.float32)
    y = rng.integers(0, 3, n)
    return DataLoader(TensorDataset(x, y), batch, device=gpu)


def test_a_cuda_epoch_reads_the_loss_back_only_at_the_checks(gpu, monkeypatch):
    """No host round trip per step: the loss and hit counts stay on the device and are read
    every CHECK_EVERY steps and at the end."""
    from mininet import training as T
    model = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 3))
    model.to(gpu)
    opt = optim.SGD(model.parameters(), lr=0.1)
    reads = []
    real = type(gpu).to_numpy
    monkeypatch.setattr(type(gpu), "to_numpy", lambda self, a: reads.append(a.shape) or real(self, a))
    monkeypatch.setattr(T, "CHECK_EVERY", 4)
    loss, acc = T.train_epoch(model, _tiny_loader(gpu), opt)    # 10 steps
    assert len(reads) == 2 + 2    # the checks after steps 4 and 8 read the loss; the end reads both
    assert np.isfinite(loss) and 0 <= acc <= 1


def test_a_nan_loss_on_cuda_stops_training_at_the_next_check(gpu, monkeypatch):
    from mininet import training as T
    model = nn.Sequential(nn.Linear(12, 3))
    model.to(gpu)
    opt = optim.SGD(model.parameters(), lr=1e38)
    monkeypatch.setattr(T, "CHECK_EVERY", 3)
    with pytest.raises(T.TrainingDiverged, match=r"between \d+ and \d+ samples of this epoch"):
        T.train_epoch(model, _tiny_loader(gpu), opt)
