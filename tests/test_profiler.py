"""mininet.profiler: op counts and FLOPs against hand counts, phases, module scopes, the
Chrome trace, the table, clean-up on errors, and `mininet bench profile`."""
import json
from collections import Counter

import numpy as np
import pytest

import mininet as mn
from mininet import autograd, optim, profiler
from mininet.backend.cpu import CPUDevice

from conftest import assert_one_line_error, cli


def _counts(prof, phase):
    return Counter(e.name for e in prof.events if e.cat == phase)


def _row(prof, name, phase, **kw):
    rows = [r for r in prof.key_averages(**kw) if r["name"] == name and r["phase"] == phase]
    assert len(rows) == 1, (name, phase, [(r["name"], r["phase"]) for r in prof.key_averages()])
    return rows[0]


def _known_graph(n=5, k=7, m=3):
    rng = np.random.default_rng(0)
    x = mn.Tensor(rng.standard_normal((n, k)).astype(np.float32))
    w = mn.Tensor(rng.standard_normal((k, m)).astype(np.float32), requires_grad=True)
    b = mn.Tensor(rng.standard_normal((m,)).astype(np.float32), requires_grad=True)
    return x, w, b


def test_known_graph_op_counts_flops_and_bytes():
    n, k, m = 5, 7, 3
    x, w, b = _known_graph(n, k, m)
    with profiler.profile() as prof:
        y = mn.ops.relu(x @ w + b)      # MatMul, EWiseAdd (b broadcast in the kernel), ReLU
        y.sum().backward()              # Summation; then the backward pass
    assert _counts(prof, "forward") == {"MatMul": 1, "EWiseAdd": 1, "ReLU": 1, "Summation": 1}
    # one gradient per recorded op, and the ops those gradients build: Summation's reshape
    # and broadcast back to (n, m), ReLU's ReLUGrad, and the add's sum over the batch for b
    assert _counts(prof, "backward") == {
        "autograd.backward": 1, "Summation": 2, "Reshape": 1, "BroadcastTo": 1, "ReLU": 1,
        "ReLUGrad": 1, "EWiseAdd": 1, "MatMul": 1}
    f4 = 4   # bytes per float32
    assert _row(prof, "MatMul", "forward")["flops"] == 2 * n * m * k
    assert _row(prof, "MatMul", "forward")["bytes"] == f4 * (n * k + k * m + n * m)
    assert _row(prof, "EWiseAdd", "forward")["flops"] == n * m
    assert _row(prof, "EWiseAdd", "forward")["bytes"] == f4 * (2 * n * m + m)
    assert _row(prof, "BroadcastTo", "backward")["bytes"] == 0         # a view
    assert _row(prof, "BroadcastTo", "backward")["flops"] == 0
    assert _row(prof, "ReLU", "forward")["flops"] == n * m
    assert _row(prof, "Summation", "forward")["flops"] == n * m
    assert _row(prof, "Summation", "forward")["bytes"] == f4 * (n * m + 1)
    assert _row(prof, "MatMul", "backward")["bytes"] == f4 * (n * k + 2 * k * m)   # x, W, dW
    # backward: only w needs MatMul's gradient (x is data): x^T g, 2 k n m
    assert _row(prof, "MatMul", "backward")["flops"] == 2 * k * n * m
    assert _row(prof, "ReLUGrad", "backward")["flops"] == n * m
    # the sum over the batch for b's gradient: one per element of g (n, m)
    assert _row(prof, "Summation", "backward")["flops"] == n * m
    assert _row(prof, "ReLU", "backward")["flops"] == 0   # built from ops, counted there
    total = sum(r["flops"] for r in prof.key_averages() if r["flops"] is not None)
    assert total == 2 * n * m * k + 3 * n * m + 2 * k * n * m + 2 * n * m


def test_backward_ops_are_children_of_the_gradient_that_built_them():
    x, w, b = _known_graph()
    with profiler.profile() as prof:
        mn.ops.relu(x @ w + b).sum().backward()
    relu_bwd = next(e for e in prof.events if e.name == "ReLU" and e.cat == "backward")
    relu_grad = next(e for e in prof.events if e.name == "ReLUGrad")
    assert relu_grad.cat == "backward"
    assert relu_bwd.start <= relu_grad.start
    assert relu_grad.start + relu_grad.dur <= relu_bwd.start + relu_bwd.dur
    assert relu_bwd.self_ns == relu_bwd.dur - relu_grad.dur   # its child's time is not its own
    pass_event = next(e for e in prof.events if e.name == "autograd.backward")
    for e in prof.events:
        if e.cat == "backward" and e is not pass_event:
            assert pass_event.start <= e.start
            assert e.start + e.dur <= pass_event.start + pass_event.dur


def test_gradient_sums_in_the_pass_are_backward_phase():
    n, k, m = 5, 7, 3
    x, w, _ = _known_graph(n, k, m)
    with profiler.profile() as prof:
        ((x @ w).sum() + (x @ w).sum()).backward()
    assert _counts(prof, "forward") == {"MatMul": 2, "Summation": 2, "EWiseAdd": 1}
    # the add's own gradient (passes g on: 0 FLOPs), then W's two gradient parts summed
    adds = sorted((e for e in prof.events if e.name == "EWiseAdd" and e.cat == "backward"),
                  key=lambda e: e.start)
    assert [e.flops for e in adds] == [0, k * m]


def test_checkpoint_recomputation_is_backward_phase():
    block = mn.nn.Sequential(mn.nn.Linear(4, 4), mn.nn.ReLU())
    model = mn.nn.Sequential(mn.nn.Checkpoint(block), mn.nn.Linear(4, 2))
    x = mn.Tensor(np.ones((3, 4), np.float32), requires_grad=True)
    with profiler.profile() as prof:
        model(x).sum().backward()
    # forward: the block runs once inside CheckpointOp; backward runs it again, inside
    # CheckpointOp's gradient, as modules whose ops belong to the backward phase
    assert _counts(prof, "forward")["ReLU"] == 1 and _counts(prof, "backward")["ReLU"] == 2
    recompute = [e for e in prof.events if e.name == "Linear" and e.cat == "backward"
                 and e.flops == 2 * 3 * 4 * 4]
    assert recompute, [(e.name, e.cat, e.flops) for e in prof.events]
    ckpt = next(e for e in prof.events if e.name == "CheckpointOp" and e.cat == "backward")
    for e in recompute:
        assert ckpt.start <= e.start and e.start + e.dur <= ckpt.start + ckpt.dur


@pytest.mark.parametrize("kind", ["gru", "rnn"])
def test_recurrent_layer_ops_count_the_flops_of_their_steps(monkeypatch, kind):
    """A GRU or RNN layer run as one op (the CPU's sequence kernels) counts the forward
    FLOPs its per-step ops count (matmul, adds, activations; b_hh's adds left out, as
    Linear's bias is); its backward counts at least dh's and w_hh's products."""
    from mininet.ops.rnn import gru_layer, rnn_layer
    rng = np.random.default_rng(2)
    s, b, n = 4, 3, 5
    k = 3 if kind == "gru" else 1
    arrays = [rng.standard_normal((s, b, k * n)), rng.standard_normal((n, k * n)) * 0.3,
              rng.standard_normal((b, n))] + ([rng.standard_normal(3 * n)] if k == 3 else [])
    layer = gru_layer if kind == "gru" else rnn_layer
    forward = []
    for caps in (CPUDevice.capabilities, CPUDevice.capabilities - {f"{kind}_seq"}):
        monkeypatch.setattr(CPUDevice, "capabilities", caps)
        ins = [mn.Tensor(a, dtype="float32", requires_grad=True) for a in arrays]
        with profiler.profile() as prof:
            out, h = layer(*ins)
        forward.append(sum(e.flops or 0 for e in prof.events if e.cat == "forward"))
        if len(forward) == 1:
            with profiler.profile() as prof:
                (out.sum() + h.sum()).backward()
            name = "GRULayer" if kind == "gru" else "RNNLayer"
            per_step = 2 * b * k * n * n     # dh = dz_t @ w_hh^T
            assert _row(prof, name, "backward")["flops"] > s * per_step + 2 * n * s * b * k * n
    want = s * (6 * b * n * n + 10 * b * n) if kind == "gru" else s * (2 * b * n * n + 2 * b * n)
    assert forward == [want, want]


def test_linear_and_conv_flops():
    rng = np.random.default_rng(1)
    n, c, h, wd, kout, kh, kw, groups = 2, 4, 9, 8, 6, 3, 2, 2
    x = mn.Tensor(rng.standard_normal((n, c, h, wd)).astype(np.float32), requires_grad=True)
    weight = mn.Tensor(rng.standard_normal((kout, c // groups, kh, kw)).astype(np.float32),
                       requires_grad=True)
    lin_x = mn.Tensor(rng.standard_normal((10, 12)).astype(np.float32), requires_grad=True)
    lin_w = mn.Tensor(rng.standard_normal((12, 5)).astype(np.float32), requires_grad=True)
    lin_b = mn.Tensor(rng.standard_normal((5,)).astype(np.float32), requires_grad=True)
    with profiler.profile() as prof:
        y = mn.ops.conv(x, weight, stride=2, padding=1, groups=groups)
        z = mn.ops.linear(lin_x, lin_w, lin_b)
        (y.sum() + z.sum()).backward()
    hout, wout = (h + 2 - kh) // 2 + 1, (wd + 2 - kw) // 2 + 1
    assert y.shape == (n, kout, hout, wout)
    conv_flops = 2 * n * kout * (c // groups) * kh * kw * hout * wout
    assert _row(prof, "Conv", "forward")["flops"] == conv_flops
    assert _row(prof, "ConvGradInput", "backward")["flops"] == conv_flops
    assert _row(prof, "ConvGradWeight", "backward")["flops"] == conv_flops
    assert _row(prof, "Linear", "forward")["flops"] == 2 * 10 * 5 * 12
    # x and W gradients (2 M N K each) and the bias gradient (a sum over the batch)
    assert _row(prof, "Linear", "backward")["flops"] == 2 * (2 * 10 * 5 * 12) + 10 * 5


def test_unknown_op_is_timed_with_flops_none():
    class Twice(autograd.Op):
        def compute(self, a):
            return a + a

        def gradient(self, g, node):
            return g * 2.0

    x = mn.Tensor(np.ones((3, 4), np.float32), requires_grad=True)
    with profiler.profile() as prof:
        Twice()(x).sum().backward()
    fwd, bwd = _row(prof, "Twice", "forward"), _row(prof, "Twice", "backward")
    assert fwd["flops"] is None and fwd["gflops"] is None and fwd["calls"] == 1
    assert fwd["bytes"] == 2 * 4 * 12 and fwd["total_ms"] > 0 and fwd["kernel_ms"] > 0
    assert bwd["flops"] is None and bwd["calls"] == 1
    assert "-" in prof.table()   # unknown FLOPs show as "-"


def test_module_scopes_and_nesting():
    model = mn.nn.Sequential(mn.nn.Linear(4, 3), mn.nn.ReLU())
    x = mn.Tensor(np.ones((2, 4), np.float32))
    with profiler.profile() as prof:
        model(x).sum().backward()
    modules = {e.name: e for e in prof.events if e.cat == "module"}
    assert set(modules) == {"Sequential", "Linear (modules_list.0)", "ReLU (modules_list.1)"}
    outer = modules["Sequential"]
    for name in ("Linear (modules_list.0)", "ReLU (modules_list.1)"):
        inner = modules[name]
        assert outer.start <= inner.start and inner.start + inner.dur <= outer.start + outer.dur
    ops = {(e.name, e.cat): e for e in prof.events if e.cat in ("forward", "backward")}
    assert ops["Linear", "forward"].module == "Linear (modules_list.0)"
    assert ops["ReLU", "forward"].module == "ReLU (modules_list.1)"
    assert ops["Summation", "forward"].module is None          # run outside the model
    # a gradient is attributed to the module its forward ran in
    assert ops["Linear", "backward"].module == "Linear (modules_list.0)"
    assert ops["ReLUGrad", "backward"].module == "ReLU (modules_list.1)"
    assert sum(e.self_ns for e in prof.events) <= prof.wall_ns


def test_optimizer_step_is_recorded_and_kernel_time_is_inside_it():
    model = mn.nn.Linear(6, 2)
    opt = optim.Adam(model.parameters(), lr=1e-3)
    x = mn.Tensor(np.ones((3, 6), np.float32))
    model(x).sum().backward()
    with profiler.profile() as prof:
        opt.step()
    step = _row(prof, "Adam.step", "optimizer")
    assert step["calls"] == 1 and 0 < step["kernel_ms"] <= step["total_ms"]


def test_chrome_trace_is_valid_and_nested(tmp_path):
    model = mn.nn.Sequential(mn.nn.Linear(8, 4), mn.nn.ReLU(), mn.nn.Linear(4, 2))
    opt = optim.SGD(model.parameters(), lr=0.1)
    x = mn.Tensor(np.ones((3, 8), np.float32))
    with profiler.profile() as prof:
        for i in range(2):
            with profiler.record_function("step", {"step": i}):
                opt.zero_grad()
                mn.nn.SoftmaxLoss()(model(x), [0, 1, 1]).backward()
                opt.step()
    path = tmp_path / "trace.json"
    prof.export_chrome_trace(path)
    trace = json.loads(path.read_text())
    events = trace["traceEvents"]
    assert len(events) == len(prof.events) > 0
    cats = set()
    for e in events:
        assert set(e) == {"name", "cat", "ph", "ts", "dur", "pid", "tid", "args"}
        assert e["ph"] == "X" and isinstance(e["name"], str) and e["name"]
        assert e["ts"] >= 0 and e["dur"] >= 0 and isinstance(e["tid"], int)
        cats.add(e["cat"])
    assert cats == {"forward", "backward", "module", "optimizer", "user"}
    linear = next(e for e in events if e["name"] == "Linear" and e["cat"] == "forward")
    assert linear["args"]["input_shapes"] == [[3, 8], [8, 4], [4]]
    assert linear["args"]["flops"] == 2 * 3 * 4 * 8
    assert [e["args"]["step"] for e in events if e["name"] == "step"] == [0, 1]
    _assert_nested(events)


def _assert_nested(events, tol=1e-3):
    """On each thread, every event lies inside the event open when it started."""
    for tid in {e["tid"] for e in events}:
        open_ = []
        for e in sorted((e for e in events if e["tid"] == tid), key=lambda e: (e["ts"], -e["dur"])):
            while open_ and open_[-1]["ts"] + open_[-1]["dur"] <= e["ts"] + tol / 2:
                open_.pop()
            if open_:
                parent = open_[-1]
                assert e["ts"] + e["dur"] <= parent["ts"] + parent["dur"] + tol, (e, parent)
            open_.append(e)


def test_table_sorting_and_limit():
    x, w, b = _known_graph(20, 30, 10)
    with profiler.profile() as prof:
        for _ in range(3):
            mn.ops.relu(x @ w + b).sum().backward()
    rows = prof.key_averages()
    for sort_by, key in (("self_time", "self_ms"), ("total_time", "total_ms"),
                         ("calls", "calls"), ("flops", "flops")):
        got = profiler.sort_rows(rows, sort_by, None)
        values = [-1 if r[key] is None else r[key] for r in got]
        assert values == sorted(values, reverse=True)
    text = prof.table(sort_by="calls", row_limit=3)
    lines = text.splitlines()
    assert lines[1].split()[:3] == ["Name", "Phase", "Calls"]
    body = lines[3:3 + 3]
    assert lines[3 + 3].startswith("---") and "Profiled time" in lines[-1]
    top = profiler.sort_rows(rows, "calls", 3)
    assert [ln.split()[0] for ln in body] == [r["name"] for r in top]
    assert [int(ln.split()[2]) for ln in body] == [r["calls"] for r in top]
    with pytest.raises(ValueError, match="sort_by"):
        prof.table(sort_by="speed")
    assert len(prof.table(row_limit=None).splitlines()) == len(rows) + 5
    grouped = prof.table(group_by_input_shape=True)
    assert "Input shapes" in grouped and "[20, 30]" in grouped


def _patched():
    return (CPUDevice.__dict__["binary"], optim.Optimizer.__dict__["step"],
            autograd.compute_gradient_of_variables)


def test_profiler_cleans_up_when_the_body_raises():
    before = _patched()
    x, w, b = _known_graph()
    with pytest.raises(RuntimeError, match="boom"):
        with profiler.profile() as prof:
            y = x @ w + b
            assert autograd._observers == [prof] and _patched() != before
            raise RuntimeError("boom")
    assert not autograd._observers and not profiler._active
    assert _patched() == before
    assert _counts(prof, "forward")["MatMul"] == 1
    np.testing.assert_allclose(y.numpy(), x.numpy() @ w.numpy() + b.numpy(), rtol=1e-5)


def test_an_op_that_raises_leaves_well_nested_events():
    class Boom(autograd.Op):
        def compute(self, a):
            raise ValueError("bad op")

    x, w, b = _known_graph()
    with profiler.profile() as prof:
        with profiler.record_function("outer"):
            with pytest.raises(ValueError):
                Boom()(x)
            (x @ w).sum()
    names = [e.name for e in prof.events]
    assert names.count("Boom") == 1 and names.count("MatMul") == 1
    boom = next(e for e in prof.events if e.name == "Boom")
    assert boom.args == {"unfinished": True} and boom.flops is None
    matmul = next(e for e in prof.events if e.name == "MatMul")
    assert matmul.cat == "forward" and matmul.flops == 2 * 5 * 3 * 7
    _assert_nested(prof.chrome_trace()["traceEvents"])


def test_nested_profilers_both_record_and_restore():
    before = _patched()
    x, w, b = _known_graph()
    with profiler.profile() as outer:
        x @ w
        with profiler.profile() as inner:
            x @ w + b
        assert _patched() != before   # the outer one still runs
        x @ w
    assert _patched() == before and not autograd._observers
    assert _counts(outer, "forward")["MatMul"] == 3 and _counts(inner, "forward")["MatMul"] == 1
    with pytest.raises(RuntimeError, match="run already"):
        with inner:
            pass


def test_profiling_does_not_change_results():
    def train(profiled):
        mn.manual_seed(3)
        model = mn.nn.Sequential(mn.nn.Linear(10, 8), mn.nn.ReLU(), mn.nn.Linear(8, 3))
        opt = optim.Adam(model.parameters(), lr=1e-2)
        x = mn.Tensor(np.random.default_rng(0).standard_normal((6, 10)).astype(np.float32))
        with profiler.profile() if profiled else _nothing():
            for _ in range(3):
                opt.zero_grad()
                mn.nn.SoftmaxLoss()(model(x), [0, 1, 2, 0, 1, 2]).backward()
                opt.step()
        return [p.numpy() for p in model.parameters()]
    for a, b in zip(train(False), train(True)):
        np.testing.assert_array_equal(a, b)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_record_function_without_a_profiler_does_nothing():
    with profiler.record_function("alone"):
        pass
    assert not profiler._active


def test_cli_bench_profile_json(tmp_path):
    trace = tmp_path / "trace.json"
    r = cli("bench", "profile", "--model", "mlp", "--steps", "3", "--json", "--trace", trace)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    events = json.loads(trace.read_text())["traceEvents"]
    assert sum(e["name"] == "train step" for e in events) == 3
    _assert_nested(events)
    assert out["model"] == "mlp" and out["steps"] == 3 and out["batch_size"] == 100
    assert 0.0 <= out["outside_kernels_share"] < 1.0 and out["step_ms"] > 0
    rows = {(row["name"], row["phase"]): row for row in out["rows"]}
    assert rows["Linear", "forward"]["calls"] == 6                 # 2 layers x 3 steps
    assert rows["Linear", "forward"]["flops"] == 3 * 2 * 100 * (784 * 100 + 100 * 10)
    assert rows["Adam.step", "optimizer"]["calls"] == 3
    assert rows["train step", "user"]["calls"] == 3
    selfs = [row["self_ms"] for row in out["rows"]]
    assert selfs == sorted(selfs, reverse=True)


def test_cli_bench_profile_table():
    r = cli("bench", "profile", "--model", "cnn", "--steps", "1", "--warmup", "0",
            "--batch-size", "8", "--sort-by", "flops", "--row-limit", "5")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    header = next(i for i, ln in enumerate(lines) if ln.startswith("Name"))
    body = lines[header + 2:header + 7]
    # the convolutions' forward and weight gradient do the most work (equal FLOPs)
    assert len(body) == 5 and body[0].split()[0] in ("Conv", "ConvGradWeight")
    assert "share of step time outside kernels" in r.stdout


@pytest.mark.parametrize("args, word", [(["--model", "gpt"], "--model"),
                                        (["--sort-by", "speed"], "--sort-by")])
def test_cli_bench_profile_rejects_bad_flags(args, word):
    assert_one_line_error(cli("bench", "profile", "--steps", "1", *args), word)


def test_a_2d_product_counts_as_kernel_time():
    """A 2-D matmul runs as one allocate-and-multiply device call (CPUDevice.matmul_new):
    the profiler times it as a kernel, as it does matmul."""
    x, w, b = _known_graph(n=64, k=64, m=64)
    with profiler.profile() as prof:
        x @ w
    matmul = next(e for e in prof.events if e.name == "MatMul")
    assert matmul.kernel_ns > 0 and matmul.self_kernel_ns > 0
    assert matmul.kernel_ns <= matmul.dur
