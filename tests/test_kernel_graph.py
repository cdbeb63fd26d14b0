"""mininet.KernelGraph: a training step captured once and replayed must train exactly as the
same steps run eagerly, and what a replay cannot repeat must be refused while capturing."""
import threading

import numpy as np
import pytest

import mininet
from mininet import nn, optim
from mininet.backend.cpu import CPUDevice

RNG = np.random.default_rng(7)


def batches(count, shape, classes=10):
    return [(RNG.random(shape, dtype=np.float32), RNG.integers(0, classes, shape[0]))
            for _ in range(count)]


def mlp():
    return nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 10))


def cnn():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 4 * 4, 10))


def train(build, make_opt, data, graph, sched=None):
    """Losses and final parameters (and buffers) of one step per batch, eagerly or by
    replaying a step captured on the first batch."""
    mininet.manual_seed(3)
    model = build()
    model.train()
    opt = make_opt(model.parameters())
    scheduler = sched(opt) if sched else None
    loss_fn = nn.SoftmaxLoss()
    x, y = mininet.Tensor(data[0][0]), mininet.Tensor(data[0][1])
    losses = []
    g = mininet.KernelGraph()
    for i, (xb, yb) in enumerate(data):
        if graph and i:
            x.copy_(xb)
            y.copy_(yb)
            g.replay()
        elif graph:
            with g.capture():
                opt.zero_grad()
                loss = loss_fn(model(x), y)
                loss.backward()
                opt.step()
        else:
            x, y = mininet.Tensor(xb), mininet.Tensor(yb)
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
        losses.append(loss.item())
        if scheduler:
            scheduler.step()
    state = {k: np.array(v) for k, v in model.state_dict().items()}
    return np.array(losses), state, g


def run_steps(step, data, x, y, graph):
    """step() once per batch of data, copied into the inputs x and y: eagerly, or with
    graph captured on the first batch and replayed after; the losses."""
    g, losses = mininet.KernelGraph(), []
    for i, (xb, yb) in enumerate(data):
        x.copy_(xb)
        y.copy_(yb)
        if graph and i:
            g.replay()
        elif graph:
            with g.capture():
                loss = step()
        else:
            loss = step()
        losses.append(loss.item())
    return losses


def assert_same_training(build, make_opt, data, sched=None):
    eager_losses, eager_state, _ = train(build, make_opt, data, False, sched)
    graph_losses, graph_state, g = train(build, make_opt, data, True, sched)
    np.testing.assert_allclose(graph_losses, eager_losses, rtol=1e-5, atol=1e-6)
    assert graph_state.keys() == eager_state.keys()
    for k in eager_state:
        np.testing.assert_allclose(graph_state[k], eager_state[k], rtol=1e-5, atol=1e-6,
                                   err_msg=k)
    # the steps trained: the parameters moved and the losses are not all alike
    assert len(set(np.round(graph_losses, 6))) > 1
    return g


def test_mlp_adam_replay_trains_as_eager():
    g = assert_same_training(mlp, lambda p: optim.Adam(p, 1e-2), batches(6, (32, 20)))
    assert g.captured and len(g) > 3
    assert "calls" in repr(g)


def test_cnn_batchnorm_momentum_sgd_replay_trains_as_eager():
    """Convolution, batch norm (its running statistics updated in place at each replay),
    pooling and SGD with momentum."""
    assert_same_training(cnn, lambda p: optim.SGD(p, 0.05, momentum=0.9),
                         batches(5, (8, 3, 8, 8)))


def test_scheduler_between_replays_is_seen():
    """The optimizer's step runs again in Python at each replay: a learning rate changed
    by a scheduler between replays is used, as eagerly."""
    assert_same_training(mlp, lambda p: optim.SGD(p, 0.1),
                         batches(6, (16, 20)), sched=lambda o: optim.StepLR(o, 2, 0.1))


def test_batchnorm_running_stats_are_updated_in_place():
    bn = nn.BatchNorm1d(4)
    before = bn.running_mean
    bn(mininet.Tensor(RNG.random((8, 4), dtype=np.float32) + 1.0))
    assert bn.running_mean is before
    assert np.all(bn.running_mean.numpy() > 0.05)


def test_static_outputs_hold_each_replays_values():
    model = mlp()
    x = mininet.Tensor(RNG.random((4, 20), dtype=np.float32))
    g = mininet.KernelGraph()
    with mininet.no_grad(), g.capture():
        out = model(x)
    new = RNG.random((4, 20), dtype=np.float32)
    x.copy_(new)
    g.replay()
    with mininet.no_grad():
        want = model(mininet.Tensor(new)).numpy()
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-6)


def capture_refused(block, match):
    g = mininet.KernelGraph()
    with pytest.raises(mininet.CaptureError, match=match):
        with g.capture():
            block()
    assert not g.captured and len(g) == 0
    # the device's methods are its own again
    assert CPUDevice.binary is vars(CPUDevice)["binary"]
    assert not hasattr(CPUDevice.binary, "__wrapped__")


def test_host_read_is_refused():
    x = mininet.Tensor(RNG.random((3, 3), dtype=np.float32))
    capture_refused(lambda: (x * 2).sum().item(), "host")
    capture_refused(lambda: (x * 2).numpy(), "host")


def test_host_data_is_refused():
    capture_refused(lambda: mininet.Tensor(np.ones(3, np.float32)) * 2, "static input")


def mlp_dropout():
    return nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 10))


def test_dropout_replay_draws_new_masks_as_eager():
    """Random draws are host calls: each replay draws the next masks from the generator,
    so replayed training with dropout matches eager training draw for draw."""
    assert_same_training(mlp_dropout, lambda p: optim.Adam(p, 1e-2), batches(6, (32, 20)))


def test_random_draws_in_a_capture_follow_the_generator():
    g = mininet.KernelGraph()
    mininet.manual_seed(11)
    with g.capture():
        a = mininet.rand(3, 4)
        b = mininet.randn(5) * 2.0
        c = mininet.randint(0, 100, (6,))
        d = mininet.init.randb(7, p=0.3)
    got = [[a.numpy(), b.numpy(), c.numpy(), d.numpy()]]
    for _ in range(2):
        g.replay()
        got.append([a.numpy(), b.numpy(), c.numpy(), d.numpy()])
    mininet.manual_seed(11)
    for step in got:
        want = [mininet.rand(3, 4).numpy(), (mininet.randn(5) * 2.0).numpy(),
                mininet.randint(0, 100, (6,)).numpy(), mininet.init.randb(7, p=0.3).numpy()]
        for x, y in zip(step, want):
            np.testing.assert_array_equal(x, y)
    assert not np.array_equal(got[0][0], got[1][0])


def test_gradient_accumulated_into_an_older_grad_is_refused():
    model = mlp()
    x = mininet.Tensor(RNG.random((4, 20), dtype=np.float32))
    model(x).sum().backward()   # .grad exists before the capture

    capture_refused(lambda: model(x).sum().backward(), "zero_grad")


def test_eager_runs_after_a_refused_capture():
    x = mininet.Tensor(np.arange(4, dtype=np.float32))
    capture_refused(lambda: x.sum().item(), "host")
    np.testing.assert_array_equal((x * 2).numpy(), [0, 2, 4, 6])


def test_misuse_raises():
    g = mininet.KernelGraph()
    with pytest.raises(mininet.CaptureError, match="nothing captured"):
        g.replay()
    x = mininet.Tensor(np.ones(3, np.float32))
    with g.capture():
        with pytest.raises(mininet.CaptureError, match="nest"):
            with mininet.KernelGraph().capture():
                pass
        y = x + 1
    with pytest.raises(mininet.CaptureError, match="holds a capture"):
        with g.capture():
            pass
    g.reset()
    assert not g.captured
    with g.capture():
        y = x * 3
    g.replay()
    np.testing.assert_array_equal(y.numpy(), [3, 3, 3])


def test_replaced_parameter_buffer_is_refused_at_replay():
    model = mlp()
    opt = optim.SGD(model.parameters(), 0.1)
    x = mininet.Tensor(RNG.random((4, 20), dtype=np.float32))
    y = mininet.Tensor(RNG.integers(0, 10, 4))
    g = mininet.KernelGraph()
    with g.capture():
        opt.zero_grad()
        nn.SoftmaxLoss()(model(x), y).backward()
        opt.step()
    g.replay()
    w = model.parameters()[0]
    w.data = mininet.NDArray(w.numpy())   # a new buffer: the graph's kernels would miss it
    with pytest.raises(mininet.CaptureError, match="new buffer"):
        g.replay()


@pytest.mark.parametrize("make", [lambda p: optim.SGD(p, 0.1), optim.LBFGS],
                         ids=["base step", "subclass step"])
def test_step_with_a_closure_is_refused(make):
    """Optimizer.step's own check and a subclass's wrapped step() (LBFGS) alike."""
    model = mlp()
    opt = make(model.parameters())
    x = mininet.Tensor(RNG.random((4, 20), dtype=np.float32))

    def closure():
        opt.zero_grad()
        loss = model(x).sum()
        loss.backward()
        return loss
    capture_refused(lambda: opt.step(closure), "closure")


def test_other_threads_are_not_recorded():
    """Only the capturing thread's kernel calls enter the graph; another thread's run
    eagerly, as usual."""
    a = mininet.Tensor(np.arange(6, dtype=np.float32))
    got = {}
    started, go = threading.Event(), threading.Event()

    def other():
        started.set()
        go.wait(10)
        got["v"] = (a * 10).numpy()   # a host read too: refused only in the capturing thread

    t = threading.Thread(target=other)
    t.start()
    started.wait(10)
    g = mininet.KernelGraph()
    with g.capture():
        b = a + 1
        go.set()
        t.join(10)
    assert len(g) == 1
    np.testing.assert_array_equal(got["v"], np.arange(6) * 10)
    np.testing.assert_array_equal(b.numpy(), np.arange(6) + 1)


def mlp_refused():
    """A model whose forward reads a value on the host: the capture is refused."""
    class Peek(nn.Module):
        def forward(self, x):
            x.sum().item()
            return x
    return nn.Sequential(nn.Linear(20, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2),
                         Peek(), nn.Linear(16, 10))


@pytest.mark.parametrize("build", [mlp, cnn, mlp_dropout, mlp_refused],
                         ids=["mlp", "cnn-batchnorm", "dropout", "refused-eager"])
def test_train_epoch_graph_trains_as_eager(build):
    """train_epoch(graph=True): full batches replayed, the last smaller one eager, two epochs
    (a capture each); a model the capture refuses trains eagerly, its batch norm statistics
    and random draws as if the attempt had not been made."""
    from mininet.data import DataLoader, TensorDataset
    from mininet.training import train_epoch
    shape = (3, 8, 8) if build is cnn else (20,)
    X = RNG.random((45,) + shape, dtype=np.float32)
    Y = RNG.integers(0, 10, 45)
    results = []
    for graph in (False, True):
        mininet.manual_seed(5)
        model = build()
        opt = optim.Adam(model.parameters(), 1e-2)
        loader = DataLoader(TensorDataset(X, Y), batch_size=10)
        epochs = [train_epoch(model, loader, opt, graph=graph) for _ in range(2)]
        results.append((epochs, {k: np.array(v) for k, v in model.state_dict().items()}))
    (eager, eager_state), (graphed, graph_state) = results
    np.testing.assert_allclose(np.array(graphed), np.array(eager), rtol=1e-5)
    for k in eager_state:
        np.testing.assert_allclose(graph_state[k], eager_state[k], rtol=1e-5, atol=1e-6,
                                   err_msg=k)


def test_train_cli_takes_no_graph():
    from mininet.cli.train import TrainConfig
    assert TrainConfig().graph is True
    assert TrainConfig(graph=False).checked().graph is False


def test_checkpoint_with_dropout_replays_as_eager():
    """nn.Checkpoint's saved generator state is a host call too: the recomputation in
    backward repeats each replay's own dropout masks."""
    def build():
        return nn.Sequential(nn.Linear(20, 16),
                             nn.Checkpoint(nn.Sequential(nn.Linear(16, 16), nn.ReLU(),
                                                         nn.Dropout(0.5))),
                             nn.Linear(16, 10))
    assert_same_training(build, lambda p: optim.Adam(p, 1e-2), batches(5, (16, 20)))


def test_scheduler_stepped_inside_the_block_replays_as_eager():
    """A per-batch schedule (OneCycleLR) stepped in the captured block, and made there on
    the first step: its first step once, its step() again at each replay."""
    made = []

    def make_opt(params):
        made.clear()
        return optim.SGD(params, 0.1)

    data = batches(6, (16, 20))

    def run(graph):
        mininet.manual_seed(3)
        model = mlp()
        opt = make_opt(model.parameters())
        x, y = mininet.Tensor(data[0][0]), mininet.Tensor(data[0][1])

        def step():
            if not made:
                made.append(optim.OneCycleLR(opt, max_lr=0.5, total_steps=6))
            opt.zero_grad()
            loss = nn.SoftmaxLoss()(model(x), y)
            loss.backward()
            opt.step()
            made[0].step()
            return loss
        losses = run_steps(step, data, x, y, graph)
        return losses, opt.param_groups[0]["lr"]
    eager, graphed = run(False), run(True)
    np.testing.assert_allclose(graphed[0], eager[0], rtol=1e-6)
    assert graphed[1] == eager[1]


def test_load_state_dict_after_capture_is_seen_by_replays():
    """load_state_dict writes into the existing buffers (as torch's), so a graph captured
    before it trains from the loaded values, frozen parameters and statistics included."""
    def run(graph):
        mininet.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
        model[0].requires_grad_(False)
        opt = optim.SGD(model[2].parameters(), 0.1)
        x = mininet.Tensor(np.random.default_rng(0).random((8, 4), dtype=np.float32))
        g = mininet.KernelGraph()

        def step():
            model.zero_grad()
            loss = model(x).sum()
            loss.backward()
            opt.step()
            return loss
        if graph:
            with g.capture():
                loss = step()
        else:
            loss = step()
        model.load_state_dict({"0.weight": np.ones((4, 4), np.float32),
                               "0.bias": np.zeros(4, np.float32),
                               "1.running_mean": np.zeros(4, np.float32),
                               "1.running_var": np.ones(4, np.float32)}, strict=False)
        for _ in range(3):
            if graph:
                g.replay()
            else:
                loss = step()
        return loss.item(), model[1].running_mean.numpy(), model[2].weight.numpy()
    for a, b in zip(run(False), run(True)):
        np.testing.assert_allclose(b, a, rtol=1e-6)


def test_gradient_accumulation_inside_one_capture():
    """Two backward passes into gradients the capture reset (zero_grad, to None or to
    zeros) replay as eager; a backward whose gradient was never reset is refused."""
    for set_to_none in (True, False):
        results = []
        for graph in (False, True):
            mininet.manual_seed(1)
            model = nn.Linear(4, 3)
            opt = optim.SGD(model.parameters(), 0.1)
            model(mininet.Tensor(np.ones((1, 4), np.float32))).sum().backward()
            x1 = mininet.Tensor(np.arange(8, dtype=np.float32).reshape(2, 4) / 8)
            x2 = mininet.Tensor(np.ones((2, 4), np.float32))
            g = mininet.KernelGraph()

            def step():
                opt.zero_grad(set_to_none=set_to_none)
                model(x1).sum().backward()
                model(x2).sum().backward()
                opt.step()
            for i in range(3):
                if graph and i:
                    g.replay()
                elif graph:
                    with g.capture():
                        step()
                else:
                    step()
            results.append(model.weight.numpy())
        np.testing.assert_allclose(results[1], results[0], rtol=1e-6)
    model = nn.Linear(4, 3)
    x = mininet.Tensor(np.ones((1, 4), np.float32))
    capture_refused(lambda: model(x).sum().backward(), "zero_grad")


def test_unreplayable_python_is_refused():
    model = mlp()
    x = mininet.Tensor(RNG.random((4, 20), dtype=np.float32))
    w = model[0].weight
    capture_refused(lambda: setattr(w, "data", w.cached_data.copy()), "rebinding")
    capture_refused(lambda: mininet.from_numpy(np.ones(3, np.float32)) * 2, "host memory")
    capture_refused(lambda: mininet.from_dlpack(np.ones(3, np.float32)) * 2, "host memory")
    capture_refused(lambda: np.from_dlpack(x), "DLPack")


def test_optimizer_moving_a_parameter_is_refused():
    """An offset parameter is made compact (a new buffer) by the optimizer's step: the
    replay's forward would read the old one. Refused before the step is taken."""
    big = mininet.Tensor(RNG.random((21, 4), dtype=np.float32))
    model = nn.Linear(20, 4)
    model.weight.data = big.cached_data[1:]
    opt = optim.SGD(model.parameters(), 0.1)
    x = mininet.Tensor(RNG.random((4, 20), dtype=np.float32))

    def step():
        opt.zero_grad()
        model(x).sum().backward()
        opt.step()
    before = model.weight.numpy()
    capture_refused(step, "move a parameter")
    # refused before the update: a caller that then steps eagerly steps once
    assert opt.step_count == 0
    np.testing.assert_array_equal(model.weight.numpy(), before)


def test_lstm_with_default_state_replays_as_eager():
    """Zero initial states are filled on the device (init.zeros): recorded, not refused."""
    def build():
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.lstm, self.head = nn.LSTM(20, 8), nn.Linear(8, 10)

            def forward(self, x):
                out, _ = self.lstm(x.reshape((4, 8, 20)))
                return self.head(out.reshape((32, 8)))
        return Net()
    assert_same_training(build, lambda p: optim.Adam(p, 1e-2), batches(4, (32, 20)))


def test_train_epoch_replay_a_loss_refuses_runs_eagerly():
    """A batch whose label the fused loss leaves to the host (ignore_index) makes the
    replay raise: train_epoch undoes it (batch norm statistics) and steps that batch
    eagerly, as a run without graphs."""
    from mininet.data import DataLoader, TensorDataset
    from mininet.training import train_epoch
    X = RNG.random((40, 20), dtype=np.float32)
    Y = RNG.integers(0, 10, 40)
    Y[25] = -100
    results = []
    for graph in (False, True):
        mininet.manual_seed(2)
        model = nn.Sequential(nn.Linear(20, 16), nn.BatchNorm1d(16), nn.ReLU(),
                              nn.Linear(16, 10))
        opt = optim.Adam(model.parameters(), 1e-2)
        loader = DataLoader(TensorDataset(X, Y), batch_size=10)
        out = train_epoch(model, loader, opt, loss_fn=nn.CrossEntropyLoss(), graph=graph)
        results.append((out, {k: np.array(v) for k, v in model.state_dict().items()}))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-6)
    for k in results[0][1]:
        np.testing.assert_allclose(results[1][1][k], results[0][1][k], rtol=1e-5, atol=1e-7)


def test_a_device_class_made_during_a_capture_is_wrapped():
    from mininet.backend.device import Device
    g = mininet.KernelGraph()
    with pytest.raises(mininet.CaptureError, match="only the CPU"):
        with g.capture():
            class Late(Device):
                name = "late"

                def fill(self, dst, value):
                    pass
            Late().fill(None, 0)
    assert not hasattr(vars(Late)["fill"], "__wrapped__")


@pytest.mark.parametrize("kind", ["rnn", "lstm", "transformer"])
def test_train_lm_epoch_graph_trains_as_eager(kind):
    """train_lm_epoch(graph=True): the state carried through the captured buffers, the
    gradient clipped by a host call, a shorter last window eager; two epochs."""
    from mininet.models.language import LanguageModel
    from mininet.training import train_lm_epoch
    ids = RNG.integers(0, 50, (47, 4))   # windows of 10 rows: 4 full, then one of 6
    results = []
    for graph in (False, True):
        mininet.manual_seed(4)
        model = LanguageModel(16, 50, 16, 2, kind)
        opt = optim.Adam(model.parameters(), 1e-2)
        losses = [train_lm_epoch(model, ids, opt, 10, clip=0.1, graph=graph) for _ in range(2)]
        results.append((losses, [p.numpy() for p in model.parameters()]))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-5)
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_clip_grad_norm_scales_in_place_and_replays():
    p = mininet.Tensor(np.ones(4, np.float32), requires_grad=True)
    (p * mininet.Tensor(np.full(4, 3.0, np.float32))).sum().backward()
    g = p.grad
    total = optim.clip_grad_norm([p], 1.0)
    assert total == pytest.approx(6.0) and p.grad is g
    np.testing.assert_allclose(g.numpy(), np.full(4, 0.5), rtol=1e-5)

    assert_same_training(mlp, lambda params: _ClippedSGD(params, 0.5), batches(5, (16, 20)))


class _ClippedSGD(optim.SGD):
    """SGD whose step first clips the gradient norm to 0.05 (clip_grad_norm inside the
    captured block, as a host call before the optimizer's)."""

    def step(self, closure=None):
        optim.clip_grad_norm(self.params, 0.05)
        return super().step(closure)


def test_embedding_indices_on_the_device_are_checked_and_captured():
    emb = nn.Embedding(10, 4)
    with pytest.raises(IndexError,
                       match=r"embedding: row index 10 at position 1 is outside \[0, 10\)"):
        emb(mininet.Tensor(np.array([1, 10])))
    ids = mininet.Tensor(np.array([[1, 2], [3, 9]]))
    g = mininet.KernelGraph()
    with mininet.no_grad(), g.capture():
        out = emb(ids)
    ids.copy_(np.array([[0, 0], [5, 6]]))
    g.replay()
    np.testing.assert_array_equal(out.numpy(), emb.weight.numpy()[[[0, 0], [5, 6]]])


def epochs_alike(build, make_opt=lambda p: optim.Adam(p, 1e-2), on_batch=None, epochs=2,
                 shape=(20,)):
    """train_epoch with and without graph(s): the same results, parameters and buffers."""
    from mininet.data import DataLoader, TensorDataset
    from mininet.training import train_epoch
    X = np.random.default_rng(8).random((60,) + shape, dtype=np.float32)
    Y = np.random.default_rng(9).integers(0, 10, 60)
    results = []
    for graph in (False, True):
        mininet.manual_seed(6)
        model = build()
        opt = make_opt(model.parameters())
        loader = DataLoader(TensorDataset(X, Y), batch_size=10)
        hook = on_batch(model, opt) if on_batch else None
        out = [train_epoch(model, loader, opt, on_batch=hook, graph=graph)
               for _ in range(epochs)]
        results.append((out, {k: np.array(v) for k, v in model.state_dict().items()}))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-5)
    assert results[0][1].keys() == results[1][1].keys()
    for k in results[0][1]:
        np.testing.assert_allclose(results[1][1][k], results[0][1][k], rtol=1e-5, atol=1e-6,
                                   err_msg=k)


class LazyState(nn.Module):
    """State made on the first forward (a zero buffer, a random projection), updated in
    place after: made once eagerly, so never inside the capture (the warm-up step)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(20, 10)
        self.mean = None
        self.proj = None

    def forward(self, x):
        if self.mean is None:
            self.mean = mininet.init.zeros(20)
            self.proj = mininet.init.randn(10, 10)
        self.mean.cached_data[...] = self.mean.cached_data * 0.9 + \
            x.cached_data.sum((0,)) * 0.01
        return self.lin(x) @ self.proj


class RebindingNorm(nn.Module):
    """needle's BatchNorm habit: the running mean rebound to a new tensor each step."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(20, 10)
        self.register_buffer("running", mininet.init.zeros(20))

    def forward(self, x):
        self.running = mininet.Tensor.make_const(
            self.running.cached_data * 0.9 + x.cached_data.sum((0,)) * 0.01)
        return self.lin(x)


def test_lazy_state_is_made_by_the_warm_up_step():
    epochs_alike(LazyState)


def test_rebound_buffers_train_eagerly():
    epochs_alike(RebindingNorm)


def test_model_changes_between_batches_mean_a_new_capture():
    """on_batch puts the model in eval mode, freezes a layer, then undoes both: each change
    is seen by the steps after it, as eagerly."""
    def on_batch(model, opt):
        seen = []

        def hook(n):
            seen.append(n)
            k = len(seen) % 6
            model.train(k not in (2, 3))
            model[0].requires_grad_(k not in (4, 5))
        return hook
    epochs_alike(lambda: nn.Sequential(nn.Linear(20, 16), nn.BatchNorm1d(16), nn.ReLU(),
                                       nn.Dropout(0.2), nn.Linear(16, 10)),
                 make_opt=lambda p: optim.SGD(p, 0.1), on_batch=on_batch)


class CountingAdam(optim.Adam):
    """torch's habit: step() overridden, with Python state of its own (a warm-up lr)."""

    def __init__(self, params):
        super().__init__(params, 1e-2)
        self.t = 0

    def step(self, closure=None):
        self.t += 1
        self.param_groups[0]["lr"] = 1e-2 * min(1.0, self.t / 3)
        return super().step(closure)


class WarmupLR(optim.StepLR):
    def __init__(self, opt):
        self.calls = 0
        super().__init__(opt, 2, 0.5)

    def step(self, epoch=None):
        self.calls += 1
        super().step(epoch)


def test_overridden_steps_are_host_calls_as_a_whole():
    assert_same_training(mlp, CountingAdam, batches(6, (16, 20)))

    def per_batch(opt):
        return WarmupLR(opt)
    made = []

    def make_opt(p):
        opt = optim.SGD(p, 0.1)
        made.append(per_batch(opt))
        return opt

    def step_fn_run(graph):
        made.clear()
        mininet.manual_seed(3)
        model = mlp()
        opt = make_opt(model.parameters())
        sched = made[0]
        data = DATA6
        x, y = mininet.Tensor(data[0][0]), mininet.Tensor(data[0][1])

        def step():
            opt.zero_grad()
            loss = nn.SoftmaxLoss()(model(x), y)
            loss.backward()
            opt.step()
            sched.step()
            return loss
        losses = run_steps(step, data, x, y, graph)
        return losses, sched.calls, opt.param_groups[0]["lr"]
    eager, graphed = step_fn_run(False), step_fn_run(True)
    np.testing.assert_allclose(graphed[0], eager[0], rtol=1e-6)
    assert graphed[1:] == eager[1:]


DATA6 = batches(6, (16, 20))


def test_init_constant_keeps_numpys_rules():
    with pytest.raises(TypeError):
        mininet.init.zeros(2.5)
    with pytest.raises(TypeError, match="float"):
        mininet.init.ones(3, dtype="int64", requires_grad=True)
    big = mininet.init.constant(2, c=2 ** 53 + 1, dtype="int64").numpy()
    assert big.tolist() == [2 ** 53 + 1] * 2
    np.testing.assert_array_equal(mininet.init.constant(2, 3, c=1.5).numpy(), np.full((2, 3), 1.5))


def test_plain_products_replay_with_new_inputs_and_matmul_new_is_refused(monkeypatch):
    """Outside a capture a 2-D product is allocated and computed in one device call
    (matmul_new); inside one it goes through alloc and matmul, so a replay writes the
    captured output with the new inputs' product; matmul_new itself is refused there."""
    calls = []
    real = CPUDevice.matmul_new
    monkeypatch.setattr(CPUDevice, "matmul_new",
                        lambda self, *a: calls.append(a[2:]) or real(self, *a))
    a0, b0 = RNG.random((5, 7), dtype=np.float32), RNG.random((7, 3), dtype=np.float32)
    a, b = mininet.NDArray(a0), mininet.NDArray(b0)
    np.testing.assert_allclose((a @ b).numpy(), a0 @ b0, rtol=1e-6)
    assert calls == [(5, 3, 7)]
    g = mininet.KernelGraph()
    with g.capture():
        out = a @ b
        with pytest.raises(mininet.CaptureError, match="matmul_new returns a new buffer"):
            a.device.matmul_new(a, b, 5, 3, 7)
    assert calls == [(5, 3, 7)]
    a1 = RNG.random((5, 7), dtype=np.float32)
    a.device.from_numpy(a1, a)
    g.replay()
    np.testing.assert_allclose(out.numpy(), a1 @ b0, rtol=1e-6)
