"""The CUDA device's fused kernels (cuda_src/nn.cu, conv2d.cu) against the CPU backend's:
softmax cross-entropy, batch norm, embedding rows, LSTM steps and the implicit-GEMM
convolution, on odd shapes, views that start past their buffer's start, non-contiguous
inputs through the ops, float32 and float64. Marked gpu: they run on a real GPU or
under the emulator (MININET_CUDA=emulate)."""
import numpy as np
import pytest

import mininet
from mininet import nn, ops
from mininet.autograd import Tensor
from mininet.ndarray import NDArray
from conftest import assert_near

pytestmark = pytest.mark.gpu
rng = np.random.default_rng(23)
DTYPES = [np.float32, np.float64]


@pytest.fixture(scope="module")
def gpu():
    return mininet.cuda()


def tol(dtype, scale=1.0):
    return (1e-5 if dtype == np.float32 else 1e-11) * scale


def on_both(x, gpu, offset=True):
    """x on the CPU and the GPU; with offset, as views one row into a larger buffer."""
    if not offset:
        return NDArray(x), NDArray(x, device=gpu)
    pad = np.concatenate([np.full((1,) + x.shape[1:], np.nan, x.dtype), x])
    return NDArray(pad)[1:], NDArray(pad, device=gpu)[1:]


def empty_like(a, dev, shape=None):
    return NDArray.make(a.shape if shape is None else shape, device=dev, dtype=a.dtype)


def test_the_cuda_device_declares_the_fused_capabilities(gpu):
    for cap in ("softmax_xent", "batchnorm", "rows", "lstm", "conv2d", "dropout", "layernorm",
                "softmax"):
        assert gpu.has(cap), cap


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,c", [(1, 1), (7, 10), (33, 300), (3, 1025)])
def test_softmax_xent_forward_and_grad_match_the_cpu(gpu, dtype, n, c):
    z = (rng.standard_normal((n, c)) * 4).astype(dtype)
    y = rng.integers(0, c, n)
    (cz, gz), (cy, gy) = on_both(z, gpu), on_both(y, gpu, offset=False)
    results = []
    for dev, zz, yy in ((mininet.cpu(), cz, cy), (gpu, gz, gy)):
        probs, out = empty_like(zz, dev), empty_like(zz, dev)
        loss, g = (NDArray(np.array(v, dtype), device=dev) for v in (0.0, 2.0))
        dev.softmax_xent(zz, yy, probs, loss)
        dev.softmax_xent_grad(probs, yy, g, 0.25, out)
        results.append((float(loss.numpy()), probs.numpy(), out.numpy()))
    (cl, cp, cg), (gl, gp, gg) = results
    assert abs(cl - gl) <= tol(dtype, 10) * max(1.0, abs(cl))
    assert_near(gp, cp, tol(dtype))
    assert_near(gg, cg, tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_xent_keeps_the_loss_of_huge_and_nan_logits(gpu, dtype):
    z = np.array([[1e17, 1e17], [np.nan, 0.0], [3.0, -1e30]], dtype=dtype)
    y = np.array([0, 1, 1])
    gz, gy = NDArray(z, device=gpu), NDArray(y, device=gpu)
    loss = NDArray(np.array(0.0, dtype), device=gpu)
    gpu.softmax_xent(gz, gy, empty_like(gz, gpu), loss)
    assert np.isnan(loss.numpy())   # the NaN row, as torch
    gpu.softmax_xent(gz[:1], gy[:1], empty_like(gz[:1], gpu), loss)
    assert float(loss.numpy()) == pytest.approx(np.log(2), rel=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(5, 3), (4, 6, 7, 5), (1, 2, 1), (300, 17)])
def test_batchnorm_forward_and_backward_match_the_cpu(gpu, dtype, shape):
    c = shape[1]
    x = rng.standard_normal(shape).astype(dtype) * 3 + 1
    w, b = rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    outs = []
    for dev, off in ((mininet.cpu(), False), (gpu, True)):
        xx = on_both(x, gpu, off)[dev is gpu]
        ww, bb = NDArray(w, device=dev), NDArray(b, device=dev)
        xhat, yy = empty_like(xx, dev), empty_like(xx, dev)
        mean, var, inv = (empty_like(ww, dev) for _ in range(3))
        dev.batchnorm(xx, ww, bb, xhat, yy, mean, var, inv, 1e-5)
        gg = on_both(g, gpu, off)[dev is gpu]
        dx, dw, db = empty_like(xx, dev), empty_like(ww, dev), empty_like(ww, dev)
        dev.batchnorm_backward(gg, xhat, ww, inv, dx, dw, db)
        outs.append([a.numpy() for a in (yy, mean, var, inv, dx, dw, db)])
    for got, want in zip(outs[1], outs[0]):
        assert_near(got, want, tol(dtype, 20))


def test_batchnorm_refuses_an_empty_batch_on_the_gpu(gpu):
    x = NDArray(np.zeros((0, 3), np.float32), device=gpu)
    w = NDArray(np.ones(3, np.float32), device=gpu)
    with pytest.raises(ValueError, match="no values"):
        gpu.batchnorm(x, w, w, x, x, w, w, w, 1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (9, 33), (2, 3, 70)])
@pytest.mark.parametrize("affine", [(True, True), (True, False), (False, True), (False, False)])
def test_layer_norm_and_softmax_rows_match_the_cpu(gpu, dtype, shape, affine):
    """ops.layer_norm and ops.softmax (the row kernels on both devices): outputs and every
    gradient, through a permuted (non-compact) input."""
    x = (rng.standard_normal(shape[::-1]) * 3 + 1).astype(dtype)
    d = shape[-1]
    w = (rng.standard_normal(d) + 1).astype(dtype) if affine[0] else None
    b = rng.standard_normal(d).astype(dtype) if affine[1] else None
    g = rng.standard_normal(shape).astype(dtype)
    got = []
    for dev in (mininet.cpu(), gpu):
        tx = Tensor(x, device=dev, requires_grad=True)
        xt = ops.permute(tx, tuple(range(len(shape)))[::-1])
        tw, tb = (None if a is None else Tensor(a, device=dev, requires_grad=True)
                  for a in (w, b))
        y = ops.layer_norm(xt, 1, tw, tb, 1e-5)
        s = ops.softmax(xt * 2, -1)
        ((y + s) * Tensor(g, device=dev)).sum().backward()
        got.append([y.numpy(), s.numpy(), tx.grad.numpy()]
                   + [t.grad.numpy() for t in (tw, tb) if t is not None])
    for a, c in zip(got[1], got[0]):
        assert_near(a, c, tol(dtype, 10))


def test_the_row_kernels_run_on_the_gpu(gpu, monkeypatch):
    """The ops above take the CUDA device's kernels, not the composed ops."""
    calls = []
    for name in ("layernorm", "layernorm_backward", "softmax", "softmax_backward"):
        kernel = getattr(type(gpu), name)
        monkeypatch.setattr(type(gpu), name,
                            lambda self, *a, _k=kernel, _n=name: calls.append(_n) or _k(self, *a))
    x = Tensor(rng.standard_normal((4, 6)).astype(np.float32), device=gpu, requires_grad=True)
    w = Tensor(np.ones(6, np.float32), device=gpu, requires_grad=True)
    (ops.layer_norm(x, 1, w) + ops.softmax(x, -1)).sum().backward()
    assert sorted(calls) == ["layernorm", "layernorm_backward", "softmax", "softmax_backward"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_embedding_rows_gather_and_scatter_add_match_the_cpu(gpu, dtype):
    table = rng.standard_normal((11, 5)).astype(dtype)
    idx = np.array([[3, 0, 3], [10, 3, 1]])        # repeats add up in the gradient
    g = rng.standard_normal((2, 3, 5)).astype(dtype)
    got = []
    for dev in (mininet.cpu(), gpu):
        w = Tensor(table, device=dev, requires_grad=True)
        out = ops.embedding(Tensor(idx, device=dev), w)
        out.backward(Tensor(g, device=dev))
        got.append((out.numpy(), w.grad.numpy()))
    assert_near(got[1][0], table[idx], 0)
    assert_near(got[1][1], got[0][1], tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("b,n", [(1, 1), (3, 7), (5, 33)])
def test_lstm_gates_and_their_gradient_match_the_cpu(gpu, dtype, b, n):
    z = rng.standard_normal((b, 4 * n)).astype(dtype) * 2
    c = rng.standard_normal((b, n)).astype(dtype)
    dh, dc = rng.standard_normal((b, n)).astype(dtype), rng.standard_normal((b, n)).astype(dtype)
    outs = []
    for dev, off in ((mininet.cpu(), False), (gpu, True)):
        zz, cc = (on_both(a, gpu, off)[dev is gpu] for a in (z, c))
        act = NDArray.make((b, 5 * n), device=dev, dtype=z.dtype)
        c_new, h_new = empty_like(cc, dev), empty_like(cc, dev)
        dev.lstm_gates(zz, cc, act, c_new, h_new)
        dz, dc_prev = empty_like(zz, dev), empty_like(cc, dev)
        ddh, ddc = (on_both(a, gpu, off)[dev is gpu] for a in (dh, dc))
        dev.lstm_gates_grad(act, cc, ddh, ddc, dz, dc_prev)
        outs.append([a.numpy() for a in (act, c_new, h_new, dz, dc_prev)])
    for got, want in zip(outs[1], outs[0]):
        assert_near(got, want, tol(dtype, 10))


def test_lstm_module_trains_the_same_on_both_devices(gpu):
    x = rng.standard_normal((4, 3, 5))
    results = []
    for dev in (mininet.cpu(), gpu):
        m = nn.LSTM(5, 6, 2, dtype="float64", device=dev)
        if dev is gpu:    # the CPU model's weights
            for p, q in zip(m.parameters(), results[0][1]):
                p.data = Tensor(q, device=dev)
        out, (h, c) = m(Tensor(x, device=dev, dtype="float64"))
        ((out * out).sum() + (c * h).sum()).backward()
        results.append((out.numpy(), [p.numpy() for p in m.parameters()],
                        [p.grad.numpy() for p in m.parameters()]))
    assert_near(results[1][0], results[0][0], 1e-11)
    for got, want in zip(results[1][2], results[0][2]):
        assert_near(got, want, 1e-10)


CONV_CASES = [   # (N, C, H, W), (K, kh, kw), stride, padding, dilation, groups
    ((2, 3, 9, 8), (5, 3, 3), (1, 1), (1, 1), (1, 1), 1),
    ((1, 4, 16, 15), (6, 5, 3), (2, 1), (2, 0), (1, 2), 2),
    ((3, 2, 7, 7), (4, 1, 1), (1, 1), (0, 0), (1, 1), 1),
    ((2, 6, 20, 20), (6, 3, 3), (1, 1), (1, 1), (1, 1), 3),
    ((1, 1, 5, 5), (1, 5, 5), (1, 1), (0, 0), (1, 1), 1),
    ((2, 66, 15, 14), (70, 3, 3), (2, 2), (1, 1), (1, 1), 1),   # more than one 64-tile
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs,ws,stride,pad,dil,groups", CONV_CASES)
def test_implicit_gemm_conv_and_its_gradients_match_the_cpu(gpu, dtype, xs, ws, stride, pad,
                                                            dil, groups):
    n, c = xs[:2]
    k, kh, kw = ws
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal((k, c // groups, kh, kw)).astype(dtype)
    bias = rng.standard_normal(k).astype(dtype)
    got = []
    for dev in (mininet.cpu(), gpu):
        # non-contiguous input: a transposed copy transposed back
        tx = Tensor(np.ascontiguousarray(x.transpose(0, 1, 3, 2)), device=dev,
                    requires_grad=True)
        xx = tx.permute((0, 1, 3, 2))
        tw, tb = (Tensor(a, device=dev, requires_grad=True) for a in (w, bias))
        out = ops.conv(xx, tw, tb, stride=stride, padding=pad, dilation=dil, groups=groups)
        gout = np.linspace(-1, 1, out.numpy().size).reshape(out.shape).astype(dtype)
        out.backward(Tensor(gout, device=dev))
        got.append([out.numpy(), tx.grad.numpy(), tw.grad.numpy(), tb.grad.numpy()])
    scale = np.sqrt(c * kh * kw * n)
    for g_, c_ in zip(got[1], got[0]):
        assert_near(g_, c_, tol(dtype, 10 * scale))


def test_conv_kernels_are_the_implicit_gemm_on_the_gpu(gpu, monkeypatch):
    """No im2col on the GPU, even for small maps (the CPU's threshold is its own)."""
    def no_im2col(*_):
        raise AssertionError("im2col called on the GPU")
    monkeypatch.setattr(type(gpu), "im2col", no_im2col)
    x = Tensor(rng.standard_normal((1, 2, 4, 4)), device=gpu, requires_grad=True)
    w = Tensor(rng.standard_normal((3, 2, 3, 3)), device=gpu, requires_grad=True)
    ops.conv(x, w, None, padding=1).sum().backward()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(37, 5, 3, 4), (2, 600, 1, 1), (300, 1, 7, 9), (1, 3, 0, 5)])
def test_conv_bias_gradient_sums_every_image_and_pixel(gpu, dtype, shape):
    """db[k] = the sum of gout[:, k] (blocks over channels and slices of the images, then
    the partials summed in order): against numpy's float64 sum, and the same twice."""
    g = np.random.default_rng(sum(shape)).standard_normal(shape).astype(dtype)
    db = NDArray.make((shape[1],), device=gpu, dtype=np.dtype(dtype))
    gpu.conv2d_grad_bias(NDArray(g, device=gpu), db)
    first = db.numpy().copy()
    assert_near(first, g.astype(np.float64).sum(axis=(0, 2, 3)), tol(dtype, np.sqrt(g.size)))
    gpu.conv2d_grad_bias(NDArray(g, device=gpu), db)
    np.testing.assert_array_equal(db.numpy(), first)
