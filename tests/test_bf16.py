"""bfloat16 mixed precision: the bf16 GEMM (mininet_ext/_bf16.h, matmul.gemm_bf16) against
float64 products of bf16-rounded inputs (tight) and float32 products (bf16-level), under
every kernel set this CPU runs; mininet.autocast's state, its gradients against
torch.autocast and finite differences; the bench and train flags."""
import json
import re

import numpy as np
import pytest

import mininet as mn
from conftest import assert_one_line_error, cli, run_python
from mininet import amp as ac
from mininet.ndarray import NDArray
from mininet_ext import _isa

torch = pytest.importorskip("torch")


def bf16(x):
    """x rounded to the nearest bfloat16 value (ties to even), as float32: the reference
    rounding, by the bits."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    r = (((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16).astype(np.uint32).view(np.float32)
    nan = np.isnan(x)
    return np.where(nan, np.float32("nan"), r).astype(np.float32)


def gemm16(a, b):
    """a @ b through the bf16 GEMM (NDArrays in, numpy out)."""
    return ac.matmul(a, b, "bf16").numpy()


def ref16(a, b):
    """float64 product of the bf16-rounded float32 inputs."""
    return bf16(a).astype(np.float64) @ bf16(b).astype(np.float64)


def check_tight(got, want, k):
    """fp32 accumulation of exact bf16 products: float32 rounding over k terms."""
    scale = max(1.0, float(np.abs(want).max(initial=0.0)))
    err = float(np.abs(got - want).max(initial=0.0))
    assert got.shape == want.shape
    assert err <= 3e-7 * max(1.0, np.sqrt(k)) * 4 * scale, err


SHAPES = [(1, 1, 1), (1, 7, 1), (3, 5, 2), (12, 32, 2), (13, 33, 3), (11, 31, 17), (25, 65, 64),
          (100, 130, 257), (37, 1, 300), (1, 300, 45), (197, 203, 801), (64, 2100, 40)]


@pytest.mark.parametrize("m,n,k", SHAPES)
def test_gemm_matches_float64_product_of_rounded_inputs(m, n, k):
    rng = np.random.default_rng(m * 1000 + n + k)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    got = gemm16(NDArray(a), NDArray(b))
    assert got.dtype == np.float32
    check_tight(got, ref16(a, b), k)
    # against plain float32: bf16 keeps 8 significant bits (rounding off by at most 2^-8
    # relative), so each product is off by about 2^-7, the sum by 2^-7 of sum |a| |b|
    err = np.abs(got - a.astype(np.float64) @ b)
    bound = 2 ** -7 * (np.abs(a).astype(np.float64) @ np.abs(b)) * 1.01 + 1e-6
    assert (err <= bound).all(), (err - bound).max()


@pytest.mark.parametrize("ta,tb", [(0, 1), (1, 0), (1, 1)])
def test_gemm_reads_transposed_and_sliced_operands(ta, tb):
    rng = np.random.default_rng(1)
    m, n, k = 29, 45, 67
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
    A, B = NDArray(a), NDArray(b)
    A, B = (A.swapaxes(0, 1) if ta else A), (B.swapaxes(0, 1) if tb else B)
    an, bn = (a.T if ta else a), (b.T if tb else b)
    check_tight(gemm16(A, B), ref16(an, bn), k)
    # a column slice: row stride larger than the row
    wide = rng.standard_normal((m, k + 9)).astype(np.float32)
    check_tight(gemm16(NDArray(wide)[:, 3:3 + k], NDArray(bn.copy())), ref16(wide[:, 3:3 + k], bn), k)


def test_gemm_batched_broadcast_and_1d():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((3, 1, 9, 14)).astype(np.float32)
    b = rng.standard_normal((4, 14, 6)).astype(np.float32)
    got = gemm16(NDArray(a), NDArray(b))
    assert got.shape == (3, 4, 9, 6)
    check_tight(got, np.matmul(bf16(a).astype(np.float64), bf16(b).astype(np.float64)), 14)
    v = rng.standard_normal(14).astype(np.float32)
    check_tight(gemm16(NDArray(v), NDArray(b[0])), ref16(v[None], b[0])[0], 14)
    check_tight(gemm16(NDArray(b[0].T.copy()), NDArray(v)), ref16(b[0].T, v[:, None])[:, 0], 14)


@pytest.mark.parametrize("m,n,k", [(0, 5, 3), (4, 0, 3), (4, 5, 0), (0, 0, 0)])
def test_gemm_zero_sizes(m, n, k):
    got = gemm16(NDArray(np.ones((m, k), np.float32)), NDArray(np.ones((k, n), np.float32)))
    assert got.shape == (m, n) and not got.any()


def test_gemm_on_two_threads_matches_one():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((300, 500)).astype(np.float32)
    b = rng.standard_normal((500, 260)).astype(np.float32)
    old = mn.get_num_threads()
    try:
        mn.set_num_threads(1)
        one = gemm16(NDArray(a), NDArray(b))
        mn.set_num_threads(2)
        two = gemm16(NDArray(a), NDArray(b))
    finally:
        mn.set_num_threads(old)
    check_tight(one, ref16(a, b), 500)
    np.testing.assert_array_equal(one, two)   # threads split C, not K: same sums


def test_rounding_matches_torch_bfloat16_ties_nan_inf_denormals():
    special = np.array([0.0, -0.0, 1.0, 1.00390625, 1.005859375, 1.0078125 + 2 ** -8,
                        np.inf, -np.inf, 3.4e38, 1e-40, -1e-39, 2 ** -133, np.nan],
                       dtype=np.float32)
    ties = (np.arange(1, 200, dtype=np.uint32) << 15 | 0x3F800000).view(np.float32)
    x = np.concatenate([special, ties, np.random.default_rng(4).standard_normal(1000)
                        .astype(np.float32)])
    out = NDArray.make(x.shape, device=mn.cpu(), dtype=mn.float32)
    mn.cpu().round_bf16(NDArray(x), out)
    got = out.numpy()
    want = torch.from_numpy(x).bfloat16().float().numpy()
    np.testing.assert_array_equal(got[~np.isnan(x)], want[~np.isnan(x)])
    np.testing.assert_array_equal(got, bf16(x))   # bitwise, NaN included
    assert np.isnan(got[np.isnan(x)]).all()


def test_bad_precision_and_dtype_are_refused():
    a = NDArray(np.ones((2, 2), np.float64))
    out = NDArray.make((2, 2), device=mn.cpu(), dtype=mn.float64)
    with pytest.raises(TypeError, match="float32"):
        mn.cpu().matmul(a, a, out, 2, 2, 2, precision="bf16")
    f = NDArray(np.ones((2, 2), np.float32))
    with pytest.raises(ValueError, match="precision"):
        mn.cpu().matmul(f, f, NDArray.make((2, 2), device=mn.cpu(), dtype=mn.float32), 2, 2, 2,
                        precision="fp8")
    # float64 under autocast: left alone (float64 products)
    x = mn.Tensor(np.full((2, 3), 1 + 2 ** -12), dtype="float64")
    with mn.autocast("bf16"):
        y = x @ x.transpose()
    assert y.dtype == np.float64 and np.allclose(y.numpy(), 3 * (1 + 2 ** -12) ** 2, rtol=1e-14)


# every kernel set this CPU runs, in a fresh process each (the set is chosen at import)
ISA_CHECK = r"""
import json, numpy as np
from mininet import amp as ac
from mininet.ndarray import NDArray
from mininet_ext import matmul
import mininet as mn

def bf16(x):
    u = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    return (((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16).astype(np.uint32).view(np.float32)

rng = np.random.default_rng(0)
worst, exact = 0.0, True
for m, n, k in [(1, 1, 1), (13, 33, 1), (12, 32, 2), (25, 65, 17), (100, 130, 257),
                (197, 203, 801), (7, 300, 5)]:
    for ta in (0, 1):
        a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        A = NDArray(a).swapaxes(0, 1) if ta else NDArray(a)
        an = a.T if ta else a
        got = ac.matmul(A, NDArray(b), "bf16").numpy()
        want = bf16(an).astype(np.float64) @ bf16(b).astype(np.float64)
        worst = max(worst, float(np.abs(got - want).max() / max(1, np.abs(want).max()) / np.sqrt(k)))
        if k == 1:   # one exact product per element: identical on every set
            exact = exact and bool((got == want.astype(np.float32)).all())
print(json.dumps({"isa": matmul.kernel_isa(), "native": matmul.bf16_info()["native"],
                  "worst": worst, "exact": exact}))
"""


@pytest.mark.parametrize("isa", _isa.ISAS)
def test_gemm_under_each_kernel_set(isa):
    if isa not in _isa.supported():
        pytest.skip(f"this CPU or build cannot run {isa}")
    import os
    env = {k: v for k, v in os.environ.items() if k not in ("MININET_ISA",
                                                             "MININET_ISA_PRETEND_MISSING")}
    r = run_python(ISA_CHECK, env={**env, "MININET_ISA": isa, "MININET_NUM_THREADS": "2"},
                   timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["isa"] == isa and out["native"] == (isa == "avx512bf16")
    assert out["worst"] < 1.2e-6 and out["exact"], out


# autocast ---------------------------------------------------------------------------
def test_state_nesting_enabled_and_spellings():
    assert ac.current() is None
    with mn.autocast("bf16") as outer:
        assert ac.current() == "bf16" and outer.precision == "bf16"
        with mn.autocast("bf16", enabled=False):
            assert ac.current() is None
            with mn.autocast("cpu", dtype=mn.bfloat16):
                assert ac.current() == "bf16"
            assert ac.current() is None
        assert ac.current() == "bf16"
    assert ac.current() is None
    for args, kw in ((("bfloat16",), {}), ((), {"dtype": mn.bfloat16}), (("cpu",), {}),
                     (("CPU",), {"dtype": "bf16"})):
        with mn.autocast(*args, **kw):
            assert ac.current() == "bf16"
    with pytest.raises(ValueError, match="bfloat16"):
        mn.autocast("fp16")
    with pytest.raises(ValueError, match="bfloat16"):
        mn.autocast("cpu", dtype="float16")
    with pytest.raises(NotImplementedError, match="CPU"):
        mn.autocast("cuda", dtype=mn.bfloat16)

    @mn.autocast("bf16")
    def inside():
        return ac.current()
    assert inside() == "bf16" and ac.current() is None


def test_state_is_per_thread_and_restored_after_an_error():
    import threading
    seen = []
    with mn.autocast("bf16"):
        t = threading.Thread(target=lambda: seen.append(ac.current()))
        t.start()
        t.join()
    assert seen == [None]
    with pytest.raises(RuntimeError):
        with mn.autocast("bf16"):
            raise RuntimeError("boom")
    assert ac.current() is None


def test_products_inside_are_bf16_outside_float32():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, 40)).astype(np.float32)
    w = rng.standard_normal((40, 9)).astype(np.float32)
    X, W = mn.Tensor(x), mn.Tensor(w)
    with mn.autocast("bf16"):
        y = X @ W
        z = mn.nn.functional.linear(X, W.transpose()) if hasattr(mn.nn, "functional") else None
        h = y.relu() + 1.0
    outside = X @ W
    for t in (y, h, outside):
        assert t.dtype == np.float32
    check_tight(y.numpy(), ref16(x, w), 40)
    assert np.abs(outside.numpy() - x.astype(np.float64) @ w).max() < 1e-4
    assert np.abs(outside.numpy() - y.numpy()).max() > 1e-4   # it did round
    if z is not None:
        check_tight(z.numpy(), ref16(x, w), 40)


def _mlp_grads(x, w1, b1, w2, labels, where):
    """Loss and grads of a 2-layer MLP; where: 'inside' (backward in the block),
    'after' (forward in, backward out), 'fp32' (no autocast)."""
    X = mn.Tensor(x, requires_grad=True)
    W1, B1, W2 = (mn.Tensor(v, requires_grad=True) for v in (w1, b1, w2))
    lin = mn.nn.Linear(w1.shape[0], w1.shape[1])
    ctx = mn.autocast("bf16", enabled=where != "fp32")
    with ctx:
        h = mn.ops.relu(mn.ops.linear(X, W1, B1)) if hasattr(mn.ops, "linear") else \
            mn.ops.relu(X @ W1 + B1)
        out = h @ W2
        loss = mn.nn.SoftmaxLoss()(out, mn.Tensor(labels, dtype="int64"))
        if where == "inside":
            loss.backward()
    if where != "inside":
        loss.backward()
    del lin
    assert loss.dtype == np.float32
    return [t.grad.numpy() for t in (X, W1, B1, W2)]


def _torch_mlp_grads(x, w1, b1, w2, labels):
    T = [torch.tensor(v, requires_grad=True) for v in (x, w1, b1, w2)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = torch.relu(T[0] @ T[1] + T[2])
        out = h @ T[3]
    loss = torch.nn.functional.cross_entropy(out.float(), torch.tensor(labels))
    loss.backward()
    return [t.grad.numpy() for t in T]


def test_mlp_gradients_against_torch_autocast_and_backward_after_the_block():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((16, 30)).astype(np.float32)
    w1 = (rng.standard_normal((30, 24)) / 5).astype(np.float32)
    b1 = (rng.standard_normal(24) / 5).astype(np.float32)
    w2 = (rng.standard_normal((24, 10)) / 5).astype(np.float32)
    labels = rng.integers(0, 10, 16)
    inside = _mlp_grads(x, w1, b1, w2, labels, "inside")
    after = _mlp_grads(x, w1, b1, w2, labels, "after")
    fp32 = _mlp_grads(x, w1, b1, w2, labels, "fp32")
    ref = _torch_mlp_grads(x, w1, b1, w2, labels)
    for g_in, g_after, g32, g_t in zip(inside, after, fp32, ref):
        assert g_in.dtype == np.float32
        np.testing.assert_array_equal(g_in, g_after)   # the nodes kept their precision
        scale = np.abs(g_t).max()
        # torch rounds activations and outputs to bf16 too: a few bf16 ulps apart
        assert np.abs(g_in - g_t).max() <= 3e-2 * scale
        assert np.abs(g32 - g_t).max() <= 3e-2 * scale
    assert any(np.abs(a - b).max() > 0 for a, b in zip(inside, fp32))


def test_gradients_against_finite_differences_of_the_rounded_function():
    """L = sum(c * (X @ W)) with c a bf16 value grid: under autocast dL/dX is
    c @ bf16(W)^T, the derivative of X -> sum(c * (X @ bf16(W))) in float64."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((5, 21)).astype(np.float32)
    w = rng.standard_normal((21, 7)).astype(np.float32)
    c = (rng.integers(-8, 9, (5, 7)) / 8).astype(np.float32)   # exact in bf16
    X, W = mn.Tensor(x, requires_grad=True), mn.Tensor(w, requires_grad=True)
    with mn.autocast("bf16"):
        loss = (X @ W * mn.Tensor(c)).sum()
    loss.backward()

    def f(xv, wv):
        return float((c * (xv @ bf16(wv).astype(np.float64))).sum())

    def fd(fun, v, eps=1e-3):
        g = np.zeros_like(v, dtype=np.float64)
        for i in np.ndindex(v.shape):
            p, m = v.astype(np.float64), v.astype(np.float64)
            p[i] += eps
            m[i] -= eps
            g[i] = (fun(p) - fun(m)) / (2 * eps)
        return g
    gx = fd(lambda v: f(v, w), x)
    gw = fd(lambda v: float((c * (bf16(x).astype(np.float64) @ v)).sum()), w)
    assert np.abs(X.grad.numpy() - gx).max() < 1e-5 * np.abs(gx).max()
    assert np.abs(W.grad.numpy() - gw).max() < 1e-5 * np.abs(gw).max()


def test_recorded_gradients_keep_the_precision():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((4, 9)).astype(np.float32)
    w = rng.standard_normal((9, 3)).astype(np.float32)
    grads = []
    for create in (False, True):
        X, W = mn.Tensor(x, requires_grad=True), mn.Tensor(w, requires_grad=True)
        with mn.autocast("bf16"):
            loss = ((X @ W) * (X @ W)).sum()
        loss.backward(create_graph=create)
        grads.append(X.grad.numpy())
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-5, atol=1e-5)


def test_conv_under_autocast_is_the_float32_conv_of_rounded_values():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 3, 11, 11)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    X, W, B = (mn.Tensor(v, requires_grad=True) for v in (x, w, b))
    with mn.autocast("bf16"):
        y = mn.nn.functional.conv2d(X, W, B, padding=1) if hasattr(mn.nn, "functional") else \
            mn.ops.conv(X, W, B, padding=1)
    assert y.dtype == np.float32
    g = rng.standard_normal(y.shape).astype(np.float32)
    (y * mn.Tensor(g)).sum().backward()
    tx, tw, tb = (torch.tensor(bf16(v).astype(np.float64), requires_grad=True) for v in (x, w, b))
    ty = torch.nn.functional.conv2d(tx, tw, torch.tensor(b, dtype=torch.float64), padding=1)
    ty.backward(torch.tensor(bf16(g), dtype=torch.float64))
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), atol=2e-5)
    np.testing.assert_allclose(X.grad.numpy(), tx.grad.numpy(), atol=2e-5)
    np.testing.assert_allclose(W.grad.numpy(), tw.grad.numpy(), atol=1e-4)
    np.testing.assert_allclose(B.grad.numpy(), g.sum((0, 2, 3)), atol=1e-4)   # bias: float32
    # torch's own bf16 autocast conv: a loose match (it also rounds the output)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        t2 = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(w), torch.tensor(b), padding=1)
    assert np.abs(y.numpy() - t2.float().numpy()).max() < 3e-2 * np.abs(y.numpy()).max()


def test_fit_with_bf16_keeps_float32_weights_and_learns():
    from mininet.data import DataLoader, TensorDataset
    from mininet.training import fit, make_optimizer
    rng = np.random.default_rng(10)
    x = rng.standard_normal((200, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    mn.manual_seed(0)
    model = mn.nn.Sequential(mn.nn.Linear(8, 16), mn.nn.ReLU(), mn.nn.Linear(16, 2))
    opt = make_optimizer("adam", model.parameters(), 1e-2)
    loader = DataLoader(TensorDataset(x, y), batch_size=20, shuffle=True)
    hist = fit(model, loader, DataLoader(TensorDataset(x, y), batch_size=50), opt, 5,
               precision="bf16")
    assert hist[-1]["test_acc"] > 0.8 and hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert all(p.dtype == np.float32 for p in model.parameters())
    assert ac.current() is None


# command line ------------------------------------------------------------------------
def test_bench_matmul_bf16_rows():
    r = cli("bench", "matmul", "--dtype", "bf16", "--sizes", "48,20x30x40", "--min-time", "0.01",
            "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    rows = rows.get("rows", rows) if isinstance(rows, dict) else rows
    impls = {row["impl"] for row in rows}
    assert {"mininet", "mininet-fp32", "torch-bf16"} <= impls
    assert all(row["params"]["dtype"] == "bf16" if "params" in row else True for row in rows)


def test_bench_and_train_flags_refuse_what_they_cannot_run(tiny_mnist):
    assert_one_line_error(cli("bench", "matmul", "--dtype", "bf16", "--device", "cuda"),
                          "bf16", "cpu")
    assert_one_line_error(cli("bench", "matmul", "--dtype", "fp16"), "--dtype")
    assert_one_line_error(cli("train", "mnist", "--precision", "fp16", "--data-dir",
                              str(tiny_mnist)), "--precision")


def test_train_precision_bf16_runs(tiny_mnist):
    r = cli("train", "mnist", "--model", "mlp", "--epochs", "2", "--precision", "bf16",
            "--data-dir", str(tiny_mnist), "--json", timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout[r.stdout.index("{"):])
    assert out["final_test_acc"] > 0.5


def test_autocast_cuda_disabled_is_a_no_op():
    """torch.autocast(device.type, enabled=use_amp) with use_amp False: no error, float32."""
    with mn.autocast("cuda", enabled=False):
        assert ac.current() is None
    with pytest.raises(NotImplementedError, match="CPU only"):
        mn.autocast("cuda")


def test_bf16_kernels_check_their_buffers():
    from mininet_ext import matmul as mm
    from mininet_ext.buffer import Buffer
    with pytest.raises(ValueError, match="round_bf16: src"):
        mm.round_bf16(Buffer(16), 0, Buffer(16), 0, 10 ** 6)
    with pytest.raises(ValueError, match="gemm_bf16: A"):
        mm.gemm_bf16(Buffer(16), 0, 4, 1, Buffer(64), 0, 4, 1, Buffer(64), 0, 4, 4, 4)
    with pytest.raises(ValueError, match="gemm_bf16: C"):
        mm.gemm_bf16(Buffer(64), 0, 4, 1, Buffer(64), 0, 4, 1, Buffer(16), 0, 4, 4, 4)


# where vdpbf16ps is slower than float32 FMAs (a Sapphire Rapids core), bf16 products run as
# the float32 GEMM of rounded inputs: the same values, float32 sums -------------------------
def need_amx():
    from mininet_ext import matmul
    ok, why = matmul.amx_available()
    if not ok:
        pytest.skip(f"no AMX here: {why}")


@pytest.mark.parametrize("path", ["amx", "native", "fp32"])
@pytest.mark.parametrize("m,n,k", [(1, 7, 1), (13, 33, 3), (100, 130, 257), (64, 2100, 40)])
def test_gemm_on_either_path_matches_rounded_inputs(path, m, n, k, monkeypatch):
    if path == "amx":
        need_amx()
    monkeypatch.setenv("MININET_BF16_GEMM", path)
    assert mn.cpu().bf16_path() == path
    rng = np.random.default_rng(m + n + k)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    check_tight(gemm16(NDArray(a), NDArray(b)), ref16(a, b), k)
    at = NDArray(np.ascontiguousarray(a.T)).swapaxes(0, 1)   # a transposed view
    check_tight(gemm16(at, NDArray(b)), ref16(a, b), k)


def test_bf16_path_choice_is_cached_and_checked(monkeypatch):
    from mininet.backend.cpu import CPUDevice
    monkeypatch.delenv("MININET_BF16_GEMM", raising=False)
    monkeypatch.setattr(CPUDevice, "_bf16_choice", None)
    first = mn.cpu().bf16_path()
    assert first in ("amx", "native", "fp32")
    assert CPUDevice._bf16_choice == first and mn.cpu().bf16_path() == first
    from mininet_ext import matmul
    if not matmul.bf16_info()["native"] and not matmul.amx_available()[0]:
        assert first == "native"   # no vdpbf16ps: rounding while packing is the cheaper way
    monkeypatch.setenv("MININET_BF16_GEMM", "fast")
    with pytest.raises(ValueError, match="MININET_BF16_GEMM must be amx, native or fp32"):
        mn.cpu().bf16_path()


# AMX tiles (Sapphire Rapids and later): the same products as the other paths ---------
def amx16(a, b, threads=None):
    """a @ b (NDArray views: any strides) through gemm_bf16's AMX kernels, numpy out."""
    from mininet_ext import matmul
    m, k = a.shape
    n = b.shape[1]
    out = NDArray.make((m, n), device=mn.cpu(), dtype=mn.float32)
    old = mn.get_num_threads()
    try:
        if threads:
            mn.set_num_threads(threads)
        matmul.gemm_bf16(a.handle, a.offset, *a.strides, b.handle, b.offset, *b.strides,
                         out.handle, out.offset, m, n, k, None, None, "amx")
    finally:
        mn.set_num_threads(old)
    return out.numpy()


AMX_SHAPES = SHAPES + [(32, 32, 32), (33, 31, 33), (64, 96, 1100), (300, 500, 600),
                       (257, 2050, 70), (5, 3, 2049)]


@pytest.mark.parametrize("m,n,k", AMX_SHAPES)
def test_amx_gemm_matches_float64_product_of_rounded_inputs(m, n, k):
    need_amx()
    rng = np.random.default_rng(m * 7 + n * 3 + k)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    want = ref16(a, b)
    # row-major, A in columns (a transposed view), B in columns, both
    at = NDArray(np.ascontiguousarray(a.T)).swapaxes(0, 1)
    bt = NDArray(np.ascontiguousarray(b.T)).swapaxes(0, 1)
    for A, B in ((NDArray(a), NDArray(b)), (at, NDArray(b)), (NDArray(a), bt), (at, bt)):
        check_tight(amx16(A, B), want, k)


def test_amx_gemm_reads_any_strides_and_keeps_c_exact_across_threads():
    need_amx()
    rng = np.random.default_rng(11)
    # neither operand has a unit stride: every other column of every other row
    a = rng.standard_normal((2 * 70, 2 * 130)).astype(np.float32)
    b = rng.standard_normal((2 * 130, 2 * 45)).astype(np.float32)
    A, B = NDArray(a)[::2, ::2], NDArray(b)[::2, ::2]
    assert A.strides[1] == 2 and B.strides[1] == 2
    check_tight(amx16(A, B), ref16(a[::2, ::2], b[::2, ::2]), 130)
    # threads split C, not K: the same sums in the same order
    x = rng.standard_normal((300, 700)).astype(np.float32)
    y = rng.standard_normal((700, 260)).astype(np.float32)
    np.testing.assert_array_equal(amx16(NDArray(x), NDArray(y), 1),
                                  amx16(NDArray(x), NDArray(y), 2))


def test_amx_gemm_propagates_inf_and_nan():
    need_amx()
    a = np.ones((40, 64), np.float32)
    b = np.ones((64, 40), np.float32)
    a[3, 5], a[7, 9], b[2, 30] = np.inf, np.nan, -np.inf
    got = amx16(NDArray(a), NDArray(b))
    with np.errstate(invalid="ignore"):   # inf - inf: NaN in the reference too
        want = a.astype(np.float64) @ b.astype(np.float64)   # exact: bf16 holds these
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    fin = ~np.isnan(want)
    np.testing.assert_array_equal(got[fin], want[fin])


AMX_REFUSED = """
import json, os
import mininet as mn
from mininet_ext import matmul
ok, why = matmul.amx_available()
try:
    mn.cpu().bf16_path()
    err = None
except ValueError as e:
    err = str(e)
print(json.dumps({"ok": ok, "why": why, "err": err}))
"""


@pytest.mark.parametrize("how", ["cpu", "isa"])
def test_amx_refused_with_the_reason(how):
    """Without AMX (a CPU feature pretended missing, or a kernel set without it), the AMX
    path is unavailable with the reason, and MININET_BF16_GEMM=amx is refused with it."""
    import os
    if how == "isa" and "avx512" not in _isa.supported():
        pytest.skip("this CPU or build cannot run the avx512 set")
    env = {k: v for k, v in os.environ.items() if k not in ("MININET_ISA",
                                                             "MININET_ISA_PRETEND_MISSING")}
    env["MININET_BF16_GEMM"] = "amx"
    if how == "cpu":
        env["MININET_ISA_PRETEND_MISSING"] = "amx-bf16"
    else:
        env["MININET_ISA"] = "avx512"
    r = run_python(AMX_REFUSED, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert not out["ok"]
    if how == "cpu" and _isa.active() == "avx512bf16" and "amx" in dir(
            __import__("mininet_ext._kern_avx512bf16", fromlist=["x"])):
        # (a CPU without AMX at all names amx-tile first: "lacks amx-tile, amx-bf16")
        assert re.search(r"lacks (amx-tile, )?amx-bf16$", out["why"]), out
    if how == "isa":
        assert "avx512 kernel set has no AMX kernels" in out["why"], out
    assert out["err"].startswith("MININET_BF16_GEMM=amx: AMX cannot run here: ") and \
        out["why"] in out["err"], out


def test_info_names_the_bf16_path_and_why_not_amx():
    auto = {"MININET_ISA": "", "MININET_ISA_PRETEND_MISSING": ""}
    r = cli("info", "--json", env={**auto, "MININET_BF16_GEMM": "native"})
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)["bf16_gemm"]
    assert row.startswith("native (")
    from mininet_ext import matmul
    if matmul.amx_available()[0]:
        assert "no AMX" not in row
        r = cli("info", "--json", env={**auto, "MININET_BF16_GEMM": "native",
                                       "MININET_ISA_PRETEND_MISSING": "amx-tile"})
        row = json.loads(r.stdout)["bf16_gemm"]
        assert "no AMX: this CPU lacks amx-tile" in row, row
        r = cli("info", "--json", env={**auto, "MININET_BF16_GEMM": "amx"})
        assert json.loads(r.stdout)["bf16_gemm"].startswith("amx (")
    else:
        assert "no AMX: " in row, row


def test_bench_train_under_bf16_autocast_and_its_refusals():
    r = cli("bench", "train", "--models", "softmax,mlp", "--samples", "200", "--threads", "1",
            "--precision", "bf16", "--json", timeout=300)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert {row["model"] for row in rows} == {"softmax", "mlp"}
    assert all(row["precision"] == "bf16" and row["seconds"] > 0 for row in rows)
    r = cli("bench", "train", "--models", "softmax", "--samples", "200", "--threads", "1",
            "--precision", "bf16", timeout=300)
    assert r.returncode == 0 and "bf16 autocast" in r.stdout, r.stderr
    assert_one_line_error(cli("bench", "train", "--precision", "fp16"), "--precision", "fp16")
    assert_one_line_error(cli("bench", "train", "--models", "mlp,lstm", "--precision", "bf16"),
                          "--precision", "lstm")
    assert_one_line_error(cli("bench", "train", "--precision", "bf16", "--ranks", "1"),
                          "--precision", "--ranks")
    from mininet.cli.bench_train import bench_train
    with pytest.raises(ValueError, match="language models"):
        bench_train(("transformer",), precision="bf16")


# convolutions on AMX tiles (stride 1, no im2col) ------------------------------------------
def _conv64(x, w, pad):
    return torch.nn.functional.conv2d(torch.tensor(bf16(x), dtype=torch.float64),
                                      torch.tensor(bf16(w), dtype=torch.float64),
                                      padding=pad).numpy()


def _buf(a):
    from mininet_ext.buffer import Buffer
    b = Buffer(max(a.size, 1) * 4)
    np.frombuffer(b, np.float32)[:a.size] = a.ravel()
    return b


AMX_CONVS = [(2, 16, 14, 14, 32, 5, 2), (3, 3, 9, 11, 16, 3, 1), (2, 17, 20, 37, 40, 3, 1),
             (1, 64, 8, 8, 64, 3, 1), (2, 33, 5, 5, 17, 3, 0), (1, 16, 1, 1, 16, 1, 0),
             (2, 8, 7, 3, 48, 3, 2), (1, 40, 3, 19, 16, (1, 3), (0, 1)), (1, 16, 2, 2, 16, 1, 0),
             (3, 16, 6, 40, 20, (2, 4), (1, 2)), (2, 48, 7, 7, 33, 3, 1),
             (2, 16, 10, 10, 20, 3, 1)]


@pytest.mark.parametrize("n,c,h,w,k,ks,pad", AMX_CONVS)
def test_amx_conv_and_its_input_gradient_match_float64_of_rounded_inputs(n, c, h, w, k, ks, pad):
    """Odd channels, K not a multiple of 16 or 32, OH odd or 1, OW past 16 (chunks that
    overlap), kernels 1x1 to 5x5 and 1x3, against float64 products of the bf16 values."""
    need_amx()
    from mininet_ext import matmul
    kh, kw = ks if isinstance(ks, tuple) else (ks, ks)
    ph, pw = pad if isinstance(pad, tuple) else (pad, pad)
    rng = np.random.default_rng(n * 100 + c + k)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((k, c, kh, kw)).astype(np.float32)
    oh, ow = h + 2 * ph - kh + 1, w + 2 * pw - kw + 1
    from mininet_ext.buffer import Buffer
    y = Buffer(n * k * oh * ow * 4 + 64)
    np.frombuffer(y, np.float32)[:] = 7.0   # the guard past the end stays
    matmul.conv_bf16_amx(_buf(x), 0, _buf(wt), 0, y, 0, n, c, h, w, k, kh, kw, ph, pw)
    out = np.frombuffer(y, np.float32)
    want = _conv64(x, wt, (ph, pw))
    check_tight(out[:want.size].reshape(want.shape), want, c * kh * kw)
    assert (out[want.size:] == 7.0).all()
    if c >= 16 and kh - 1 >= ph and kw - 1 >= pw:   # the input gradient: flipped weights
        g = rng.standard_normal((n, k, oh, ow)).astype(np.float32)
        dx = Buffer(n * c * h * w * 4)
        matmul.conv_bf16_amx(_buf(g), 0, _buf(wt), 0, dx, 0, n, k, oh, ow, c, kh, kw,
                             kh - 1 - ph, kw - 1 - pw, flip=True)
        want = torch.nn.grad.conv2d_input(
            (n, c, h, w), torch.tensor(bf16(wt), dtype=torch.float64),
            torch.tensor(bf16(g), dtype=torch.float64), padding=(ph, pw)).numpy()
        check_tight(np.frombuffer(dx, np.float32).reshape(want.shape), want, k * kh * kw)
        # the weight gradient: sums over every image and pixel, channels padded to 16s
        dw = Buffer(k * c * kh * kw * 4)
        matmul.conv_bf16_amx_wgrad(_buf(g), 0, _buf(x), 0, dw, 0, n, c, h, w, k, kh, kw,
                                   ph, pw)
        want = torch.nn.grad.conv2d_weight(
            torch.tensor(bf16(x), dtype=torch.float64), (k, c, kh, kw),
            torch.tensor(bf16(g), dtype=torch.float64), padding=(ph, pw)).numpy()
        check_tight(np.frombuffer(dw, np.float32).reshape(want.shape), want, n * oh * ow)


def test_amx_conv_refuses_what_it_does_not_take():
    need_amx()
    from mininet_ext import matmul
    from mininet_ext.buffer import Buffer
    with pytest.raises(ValueError, match="K >= 16"):
        matmul.conv_bf16_amx(Buffer(64), 0, Buffer(64), 0, Buffer(64), 0, 1, 1, 2, 2, 8, 1, 1, 0, 0)
    with pytest.raises(ValueError, match="conv_bf16_amx: y"):
        matmul.conv_bf16_amx(Buffer(4 * 16 * 9), 0, Buffer(4 * 256), 0, Buffer(64), 0,
                             1, 16, 3, 3, 16, 1, 1, 0, 0)


def _conv_step(x, w, b, g, create):
    X, W, B = (mn.Tensor(v, requires_grad=True) for v in (x, w, b))
    with mn.autocast("bf16"):
        y = mn.nn.functional.conv2d(X, W, B, padding=2).relu()
    loss = (y * mn.Tensor(g)).sum()
    loss.backward(create_graph=create)
    out = [y.numpy(), X.grad.numpy(), W.grad.numpy(), B.grad.numpy()]
    if create:   # a second-order term through the bf16 convolution's gradient
        (X.grad * X.grad).sum().backward()
        out.append(W.grad.numpy())
    return out


def test_conv_under_autocast_runs_on_amx_and_matches_the_other_bf16_path(monkeypatch):
    need_amx()
    from mininet.backend.cpu import CPUDevice
    calls = []
    real = CPUDevice.conv2d_bf16, CPUDevice.conv2d_bf16_grad_input
    monkeypatch.setattr(CPUDevice, "conv2d_bf16",
                        lambda self, *a, **k: calls.append("fwd") or real[0](self, *a, **k))
    monkeypatch.setattr(CPUDevice, "conv2d_bf16_grad_input",
                        lambda self, *a, **k: calls.append("dx") or real[1](self, *a, **k))
    real_dw = CPUDevice.conv2d_bf16_grad_weight
    monkeypatch.setattr(CPUDevice, "conv2d_bf16_grad_weight",
                        lambda self, *a, **k: calls.append("dw") or real_dw(self, *a, **k))
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 16, 12, 12)).astype(np.float32)
    w = (rng.standard_normal((32, 16, 5, 5)) * 0.1).astype(np.float32)
    b = rng.standard_normal(32).astype(np.float32)
    g = rng.standard_normal((3, 32, 12, 12)).astype(np.float32)
    monkeypatch.setenv("MININET_BF16_GEMM", "amx")
    amx = _conv_step(x, w, b, g, create=True)
    assert {"fwd", "dx", "dw"} <= set(calls)
    calls.clear()
    monkeypatch.setenv("MININET_BF16_GEMM", "fp32")   # the fused float32 kernels, rounded
    other = _conv_step(x, w, b, g, create=True)
    assert not calls
    for a, o in zip(amx, other):
        np.testing.assert_allclose(a, o, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(o).max()))
    # and against float64 of the rounded values
    tx, tw = (torch.tensor(bf16(v).astype(np.float64), requires_grad=True) for v in (x, w))
    ty = torch.nn.functional.conv2d(tx, tw, torch.tensor(b, dtype=torch.float64), padding=2)
    np.testing.assert_allclose(amx[0], ty.relu().detach().numpy(), atol=2e-5)


def test_bias_planes_adds_per_channel_and_keeps_nan_under_relu():
    """The AMX convolution's epilogue (conv.bias_planes): to_nchw's, NaN kept by the ReLU."""
    from mininet_ext import _isa
    conv = _isa.variant("conv")
    rng = np.random.default_rng(12)
    y = rng.standard_normal((2, 3, 5)).astype(np.float32)
    y[1, 2, 3] = np.nan
    b = rng.standard_normal(3).astype(np.float32)
    for relu in (False, True):
        yb = _buf(y)
        conv.bias_planes(yb, 0, _buf(b), 0, 2, 3, 5, 4, relu)
        want = y + b[None, :, None]
        want = np.where(want > 0, want, 0).astype(np.float32) if relu else want
        want[1, 2, 3] = np.nan
        got = np.frombuffer(yb, np.float32).reshape(2, 3, 5)
        np.testing.assert_array_equal(got, want)
