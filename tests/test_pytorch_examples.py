"""A training script written as PyTorch's MNIST example is (our own text, in its style:
Conv2d/Dropout/Linear, F.relu, F.max_pool2d, torch.flatten, F.log_softmax, F.nll_loss,
Adadelta + StepLR, torch.no_grad, .to(device), .item(), argmax/eq/view_as, torch.save /
load_state_dict(torch.load(...))), run twice with only its imports changed: once with
`import mininet as torch`, once with `import torch`, on the same slice of the real MNIST
with the same seed. Both must learn, and to within a few points of each other (the two
libraries draw different initial weights and dropout masks from the same seed, so the
runs agree in distribution, not bit for bit). Then the regression example's habits the
same way, and the spellings other PyTorch examples use that mininet lacks (strict xfails)."""
import gzip
import linecache
import time

import numpy as np
import pytest

from conftest import TORCH_MISSING, mnist_dir

import mininet

SCRIPT = '''\
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = self.dropout1(F.max_pool2d(x, 2))
        x = torch.flatten(x, 1)
        x = self.dropout2(F.relu(self.fc1(x)))
        return F.log_softmax(self.fc2(x), dim=1)


def train(model, device, loader, optimizer, epoch, log_interval):
    model.train()
    for batch_idx, (data, target) in enumerate(loader):
        data, target = data.to(device), target.to(device)
        optimizer.zero_grad()
        output = model(data)
        loss = F.nll_loss(output, target)
        loss.backward()
        optimizer.step()
        if batch_idx % log_interval == 0:
            print("Train Epoch: {} [{}/{} ({:.0f}%)]\\tLoss: {:.6f}".format(
                epoch, batch_idx * len(data), len(loader.dataset),
                100.0 * batch_idx / len(loader), loss.item()))


def test(model, device, loader):
    model.eval()
    test_loss, correct = 0.0, 0
    with torch.no_grad():
        for data, target in loader:
            data, target = data.to(device), target.to(device)
            output = model(data)
            test_loss += F.nll_loss(output, target, reduction="sum").item()
            pred = output.argmax(dim=1, keepdim=True)
            correct += pred.eq(target.view_as(pred)).sum().item()
    n = len(loader.dataset)
    print("Test set: Average loss: {:.4f}, Accuracy: {}/{}".format(test_loss / n, correct, n))
    return test_loss / n, correct / n


def main(train_arrays, test_arrays, epochs=1, seed=1, log_interval=10):
    torch.manual_seed(seed)
    device = torch.device("cpu")
    train_set = TensorDataset(*[torch.from_numpy(a) for a in train_arrays])
    test_set = TensorDataset(*[torch.from_numpy(a) for a in test_arrays])
    train_loader = DataLoader(train_set, batch_size=64, shuffle=True)
    test_loader = DataLoader(test_set, batch_size=1000)
    model = Net().to(device)
    optimizer = optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = StepLR(optimizer, step_size=1, gamma=0.7)
    results = []
    for epoch in range(1, epochs + 1):
        train(model, device, train_loader, optimizer, epoch, log_interval)
        results.append(test(model, device, test_loader))
        scheduler.step()
    return model, results, optimizer.param_groups[0]["lr"]


def save_and_reload(model, path):
    torch.save(model.state_dict(), path)
    fresh = Net()
    fresh.load_state_dict(torch.load(path))
    return fresh
'''

# The only lines that differ between the two runs.
IMPORTS = {
    "mininet": ("import mininet as torch\n"
                "import mininet.nn as nn\n"
                "import mininet.nn.functional as F\n"
                "import mininet.optim as optim\n"
                "from mininet.optim.lr_scheduler import StepLR\n"
                "from mininet.utils.data import DataLoader, TensorDataset\n"),
    "torch": ("import torch\n"
              "import torch.nn as nn\n"
              "import torch.nn.functional as F\n"
              "import torch.optim as optim\n"
              "from torch.optim.lr_scheduler import StepLR\n"
              "from torch.utils.data import DataLoader, TensorDataset\n"),
}


def script(lib):
    """SCRIPT's functions with `lib`'s imports (tracebacks show the script's lines)."""
    source = IMPORTS[lib] + SCRIPT
    filename = f"<pytorch-style mnist script, {lib} imports>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace = {"__name__": f"pytorch_style_mnist_{lib}"}
    exec(compile(source, filename, "exec"), namespace)
    return namespace


# data: a shuffled slice of the 5,000-image training subset (grouped by class in the
# files) and the first images of the test set, normalised as the PyTorch example does.
N_TRAIN, N_TEST = 2560, 2000   # one epoch: about 8 s for mininet, 12 s for torch, 1 thread


def read_idx(folder, prefix):
    with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
    with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    images = (images.astype(np.float32) / 255.0 - 0.1307) / 0.3081
    return images.astype(np.float32), labels.astype(np.int64)


@pytest.fixture(scope="module")
def mnist_slice():
    folder = mnist_dir()
    if folder is None:
        pytest.skip("real MNIST not found: set MININET_DATA or provide ../shared/data/mnist")
    x, y = read_idx(folder, "train")
    pick = np.random.default_rng(0).permutation(len(y))[:N_TRAIN]
    xt, yt = read_idx(folder, "t10k")
    return (np.ascontiguousarray(x[pick]), y[pick]), (xt[:N_TEST].copy(), yt[:N_TEST].copy())


@pytest.fixture(scope="module")
def mininet_run(mnist_slice):
    start = time.perf_counter()
    model, results, lr = script("mininet")["main"](*mnist_slice, epochs=1, seed=1)
    return model, results, lr, time.perf_counter() - start


@pytest.mark.slow
def test_mininet_runs_the_script_and_learns(mininet_run):
    model, [(loss, accuracy)], lr, _ = mininet_run
    assert isinstance(model, mininet.nn.Module)
    assert accuracy > 0.8, accuracy           # chance is 0.1; seeds 1-6 gave 0.87-0.90
    assert 0 < loss < 0.6, loss               # seeds 1-6 gave 0.35-0.40
    assert lr == pytest.approx(0.7)           # StepLR(step_size=1, gamma=0.7) after one epoch


def test_the_script_prints_progress(mnist_slice, capsys):
    small = tuple(a[:128] for a in mnist_slice[0]), tuple(a[:1000] for a in mnist_slice[1])
    script("mininet")["main"](*small, epochs=1, seed=1, log_interval=1)
    out = capsys.readouterr().out
    assert "Train Epoch: 1 [0/128 (0%)]\tLoss: " in out
    assert "Train Epoch: 1 [64/128 (50%)]\tLoss: " in out
    assert "Test set: Average loss: " in out and "/1000" in out


@pytest.mark.slow
@pytest.mark.torch
def test_mininet_accuracy_within_a_few_points_of_torch(mininet_run, mnist_slice):
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, mininet.get_num_threads()))
    try:
        _, [(torch_loss, torch_accuracy)], torch_lr = script("torch")["main"](*mnist_slice,
                                                                             epochs=1, seed=1)
    finally:
        torch.set_num_threads(threads)
    _, [(loss, accuracy)], lr, seconds = mininet_run
    # The libraries draw different initial weights and dropout masks from one seed, and
    # Adadelta at lr=1.0 now and then takes a bad step: over seeds 1-6 the two agreed to
    # 0.2-1.6 points but once torch fell 10 points behind. So mininet may not trail torch
    # by more than 5 points (a broken op costs far more), and a lead is only bounded.
    seen = f"mininet {accuracy:.4f} (loss {loss:.3f}, {seconds:.1f} s), torch {torch_accuracy:.4f} " \
           f"(loss {torch_loss:.3f})"
    assert torch_accuracy - 0.05 < accuracy < torch_accuracy + 0.12, seen
    assert loss < torch_loss + 0.15, seen
    assert lr == pytest.approx(torch_lr)


NO_SAVE = pytest.mark.xfail(not hasattr(mininet, "save"), raises=AttributeError, strict=True,
                            reason="mininet.save / mininet.load (torch.save / torch.load) are missing")


@pytest.mark.parametrize("lib", [pytest.param("torch", marks=pytest.mark.torch),
                                 pytest.param("mininet", marks=NO_SAVE)])
def test_save_state_dict_and_load_it_back(lib, tmp_path):
    ns = script(lib)
    L = ns["torch"]
    L.manual_seed(1)
    model = ns["Net"]().eval()
    fresh = ns["save_and_reload"](model, tmp_path / "mnist_cnn.pt").eval()   # a new init, then loaded
    x = L.from_numpy(np.random.default_rng(0).standard_normal((4, 1, 28, 28)).astype(np.float32))
    with L.no_grad():
        np.testing.assert_array_equal(fresh(x).numpy(), model(x).numpy())
    assert list(fresh.state_dict()) == list(model.state_dict())


# PyTorch's regression example (fit a degree-4 polynomial with one Linear layer, SGD by
# hand through param.data.add_), in our words; the two spellings it needs that mininet
# lacks (Tensor.mm, format() of a 0-d tensor) are written around here and tested below.
REGRESSION = '''\
def fit(degree=4, batch_size=32, max_batches=5000):
    torch.manual_seed(0)
    w_target = torch.randn(degree, 1) * 5
    b_target = torch.randn(1) * 5

    def features(x):
        x = x.unsqueeze(1)
        return torch.cat([x ** i for i in range(1, degree + 1)], 1)

    def batch():
        x = features(torch.randn(batch_size))
        return x, x @ w_target + b_target.item()

    fc = torch.nn.Linear(w_target.size(0), 1)
    for batch_idx in range(1, max_batches + 1):
        batch_x, batch_y = batch()
        fc.zero_grad()
        output = F.smooth_l1_loss(fc(batch_x), batch_y)
        loss = output.item()
        output.backward()
        for param in fc.parameters():
            param.data.add_(-0.1 * param.grad)
        if loss < 1e-3:
            break
    learned = [float(w) for w in fc.weight.detach().view(-1)] + [float(fc.bias.detach()[0])]
    actual = [float(w) for w in w_target.view(-1)] + [float(b_target[0])]
    return loss, batch_idx, learned, actual
'''


@pytest.mark.parametrize("lib", ["mininet", pytest.param("torch", marks=pytest.mark.torch)])
def test_regression_example_converges(lib):
    header = {"mininet": "import mininet as torch\nimport mininet.nn.functional as F\n",
              "torch": "import torch\nimport torch.nn.functional as F\n"}[lib]
    ns = {}
    exec(compile(header + REGRESSION, f"<pytorch-style regression, {lib} imports>", "exec"), ns)
    loss, batches, learned, actual = ns["fit"]()
    assert loss < 1e-3 and batches < 5000, (loss, batches)
    np.testing.assert_allclose(learned, actual, atol=0.2)


# Spellings PyTorch's examples use that mininet lacks today (each found by running one of
# them with its imports changed). Strict xfails: the day one lands, its test says so.
def missing(ok, why):
    return pytest.mark.xfail(not ok, strict=True, reason=why)


def test_tensor_mm():
    a, b = np.arange(6.0).reshape(2, 3), np.arange(12.0).reshape(3, 4)
    np.testing.assert_allclose(mininet.tensor(a).mm(mininet.tensor(b)).numpy(), a @ b)


def test_format_of_a_0d_tensor():
    w = mininet.tensor([5.375, -2.0])
    assert "{:+.2f} {:.1f}".format(w[0], w[1]) == "+5.38 -2.0"


def test_lstm_batch_first():
    lstm = mininet.nn.LSTM(input_size=28, hidden_size=8, batch_first=True)
    out, _ = lstm(mininet.randn(5, 3, 28))   # (batch, seq, feature)
    assert tuple(out.shape) == (5, 3, 8)


def test_module_double():
    m = mininet.nn.Linear(3, 2).double()
    assert all(p.dtype == mininet.float64 for p in m.parameters())


@missing(hasattr(mininet.optim, "LBFGS"), "optim.LBFGS (time_sequence_prediction/train.py)")
def test_lbfgs_exists():
    assert callable(mininet.optim.LBFGS)


@pytest.mark.torch
def test_the_torch_run_really_is_torch():
    """The yardstick runs PyTorch itself, not mininet under another name."""
    import torch
    ns = script("torch")
    assert ns["torch"] is torch and ns["F"] is torch.nn.functional
    assert script("mininet")["torch"] is mininet and TORCH_MISSING is None
