"""The CUDA fused-kernel wrappers (mininet/backend/cuda_nn.py) check every buffer they
hand a kernel: a compact array of exactly the shape and dtype the kernel assumes, else a
ValueError before any launch (a wrong size would be a silent out-of-bounds write on a
GPU). And the weight gradient's split-K path: the reduction spread over gridDim.z
slices still matches the CPU. Marked gpu: a real GPU or the emulator."""
import re

import numpy as np
import pytest

import mininet
from mininet import ops
from mininet.autograd import Tensor
from mininet.ndarray import NDArray
from conftest import assert_near

pytestmark = pytest.mark.gpu
rng = np.random.default_rng(7)


@pytest.fixture(scope="module")
def gpu():
    return mininet.cuda()


@pytest.fixture
def no_launch(gpu, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError(f"a kernel was launched: {args[:2]}")
    monkeypatch.setattr(type(gpu), "_launch", fail)
    return gpu


def arr(gpu, *shape, dtype=np.float64):
    return NDArray(np.zeros(shape, dtype), device=gpu)


def idx(gpu, n, rows=5):
    return NDArray(np.arange(n, dtype=np.int64) % rows, device=gpu)


CONV = ((1, 1), (0, 0), (1, 1), 1)   # stride, padding, dilation, groups


def calls(gpu):
    """name -> (args, {position: argument name} of the buffers the kernel writes)."""
    a = lambda *s: arr(gpu, *s)   # noqa: E731
    return {
        "take_rows": ((a(5, 3), idx(gpu, 4), a(4, 3)), {2: "out"}),
        "add_rows": ((a(4, 3), idx(gpu, 4), a(5, 3)), {2: "out"}),
        "softmax_xent": ((a(4, 5), idx(gpu, 4), a(4, 5), a()), {2: "probs", 3: "loss"}),
        "softmax_xent_grad": ((a(4, 5), idx(gpu, 4), a(), 0.5, a(4, 5)), {4: "out"}),
        "batchnorm": ((a(4, 3, 2), a(3), a(3), a(4, 3, 2), a(4, 3, 2), a(3), a(3), a(3), 1e-5),
                      {3: "xhat", 4: "y", 5: "mean", 6: "var", 7: "inv"}),
        "batchnorm_backward": ((a(4, 3, 2), a(4, 3, 2), a(3), a(3), a(4, 3, 2), a(3), a(3)),
                               {4: "dx", 5: "dw", 6: "db"}),
        "lstm_gates": ((a(2, 12), a(2, 3), a(2, 15), a(2, 3), a(2, 3)),
                       {2: "act", 3: "c_new", 4: "h_new"}),
        "lstm_gates_grad": ((a(2, 15), a(2, 3), a(2, 3), a(2, 3), a(2, 12), a(2, 3)),
                            {4: "dz", 5: "dc_prev"}),
        "conv2d": ((a(2, 3, 6, 6), a(4, 3, 3, 3), a(4), a(2, 4, 4, 4), *CONV), {3: "out"}),
        "conv2d_grad_input": ((a(2, 4, 4, 4), a(4, 3, 3, 3), a(2, 3, 6, 6), *CONV), {2: "dx"}),
        "conv2d_grad_weight": ((a(2, 4, 4, 4), a(2, 3, 6, 6), a(4, 3, 3, 3), *CONV),
                               {2: "dw"}),
        "conv2d_grad_bias": ((a(2, 4, 4, 4), a(4)), {1: "db"}),
    }


def wrong_sized(a, axis):
    """An array with one more element along axis (a scalar becomes 2 values)."""
    shape = list(a.shape) or [1]
    shape[axis] += 1
    return NDArray.make(tuple(shape), device=a.device, dtype=a.dtype)


@pytest.mark.parametrize("name", ["take_rows", "add_rows", "softmax_xent", "softmax_xent_grad",
                                  "batchnorm", "batchnorm_backward", "lstm_gates",
                                  "lstm_gates_grad", "conv2d", "conv2d_grad_input",
                                  "conv2d_grad_weight", "conv2d_grad_bias"])
def test_a_wrong_sized_output_is_refused_before_any_launch(gpu, no_launch, name):
    args, outs = calls(gpu)[name]
    for pos, arg in outs.items():
        bad = list(args)
        # a conv's output is blamed for the sizes its inputs fix (batch, channels): its
        # spatial sizes are also the geometry's, there a mismatch names the other array
        bad[pos] = wrong_sized(args[pos], 0 if name.startswith("conv2d") else -1)
        want = (f"{name}: {arg} must be a compact float64 array of shape {args[pos].shape}, "
                f"got float64 of shape {bad[pos].shape}")
        with pytest.raises(ValueError, match=re.escape(want)):
            getattr(gpu, name)(*bad)


def test_a_wrong_dtype_or_a_strided_output_is_refused(gpu, no_launch):
    args, _ = calls(gpu)["lstm_gates"]
    bad = list(args)
    bad[3] = arr(gpu, 2, 3, dtype=np.float32)
    with pytest.raises(ValueError, match="lstm_gates: c_new must be a compact float64"):
        gpu.lstm_gates(*bad)
    bad[3] = arr(gpu, 3, 2).permute((1, 0))
    with pytest.raises(ValueError, match=r"c_new .* \(not compact\)"):
        gpu.lstm_gates(*bad)
    mask = arr(gpu, 4, 6).permute((1, 0))
    with pytest.raises(ValueError, match=r"dropout_mask: mask .*\(not compact\)"):
        gpu.dropout_mask(mask, 0.5, 2.0, 1, 0)


def test_indices_must_match_the_rows_they_address(gpu, no_launch):
    """take_rows checks its indices against the output's rows, not against themselves."""
    with pytest.raises(ValueError, match=r"take_rows: indices .* shape \(4,\), got int64 of "
                                         r"shape \(6,\)"):
        gpu.take_rows(arr(gpu, 5, 3), idx(gpu, 6), arr(gpu, 4, 3))
    with pytest.raises(ValueError, match=r"add_rows: indices .* shape \(4,\)"):
        gpu.add_rows(arr(gpu, 4, 3), idx(gpu, 3), arr(gpu, 5, 3))
    with pytest.raises(ValueError, match=r"softmax_xent: indices .* int64"):
        gpu.softmax_xent(arr(gpu, 4, 5), arr(gpu, 4), arr(gpu, 4, 5), arr(gpu))


def test_conv_inputs_must_fit_the_geometry(gpu, no_launch):
    args, _ = calls(gpu)["conv2d"]
    with pytest.raises(ValueError, match=r"conv2d: out must be .* shape \(2, 4, 2, 2\)"):
        gpu.conv2d(*args[:3], args[3], (2, 2), (0, 0), (1, 1), 1)
    with pytest.raises(ValueError, match=r"conv2d: weight \(4, 3, 3, 3\) does not fit"):
        gpu.conv2d(*args[:4], (1, 1), (0, 0), (1, 1), 2)
    with pytest.raises(ValueError, match=r"conv2d: bias must be .* shape \(4,\)"):
        gpu.conv2d(args[0], args[1], arr(gpu, 3), args[3], *CONV)


# split-K weight gradient ---------------------------------------------------------------
def _conv_grads(dev, x, w, stride, pad, groups):
    tx, tw = (Tensor(a, device=dev, requires_grad=True) for a in (x, w))
    out = ops.conv(tx, tw, None, stride=stride, padding=pad, groups=groups)
    gout = np.linspace(-1, 1, out.numpy().size).reshape(out.shape).astype(x.dtype)
    out.backward(Tensor(gout, device=dev))
    return out.numpy(), tx.grad.numpy(), tw.grad.numpy()


def _grid_z(gpu, monkeypatch):
    grids = []
    launch = type(gpu)._launch

    def spy(self, module, name, *args, **kwargs):
        if name.startswith("conv2d_grad_weight"):
            grids.append(kwargs["grid"])
        return launch(self, module, name, *args, **kwargs)
    monkeypatch.setattr(type(gpu), "_launch", spy)
    return grids


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("xs,ws,stride,pad,groups,chunk", [
    ((8, 1, 28, 28), (16, 5, 5), (1, 1), (0, 0), 1, None),   # MNIST's first layer
    ((3, 4, 11, 9), (6, 3, 3), (2, 1), (1, 1), 2, 32),       # groups, a short last slice
])
def test_the_split_k_weight_gradient_matches_the_cpu(gpu, monkeypatch, dtype, xs, ws, stride,
                                                      pad, groups, chunk):
    if chunk:
        monkeypatch.setattr(type(gpu), "conv_split_chunk", chunk)
    grids = _grid_z(gpu, monkeypatch)
    k, kh, kw = ws
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal((k, xs[1] // groups, kh, kw)).astype(dtype)
    want = _conv_grads(mininet.cpu(), x, w, stride, pad, groups)
    got = _conv_grads(gpu, x, w, stride, pad, groups)
    assert grids and grids[0][2] > groups and grids[0][2] % groups == 0, grids
    scale = np.sqrt(xs[0] * xs[2] * xs[3])
    for g_, c_ in zip(got, want):
        assert_near(g_, c_, (1e-5 if dtype == np.float32 else 1e-11) * 10 * scale)


def test_the_mnist_first_layer_fills_the_gpu(gpu):
    """(1, 1, 1) blocks before the split; now enough slices for 2 x 132 SMs, none empty."""
    assert gpu.conv_split_chunk == 256
    assert gpu._conv_splits(1, 8 * 24 * 24) == (18, 256)
    assert gpu._conv_splits(1, 128 * 24 * 24) == (256, 288)   # 264 blocks' worth, rounded
    assert gpu._conv_splits(1, 200) == (1, 200)          # a short reduction: one block
    assert gpu._conv_splits(300, 10 ** 6) == (1, 10 ** 6)   # the grid is full already
