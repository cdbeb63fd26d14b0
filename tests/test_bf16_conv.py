"""Convolution under bf16 autocast: the forward, input and weight gradients (whichever
kernel runs them: the fused fp32 kernels on rounded operands, or im2col + the bf16 GEMM)
against torch's float64 convolution of bf16-rounded inputs, with a bound from float32
summation; second order; the path each layer shape takes."""
import importlib

import numpy as np
import pytest

import mininet as mn
from mininet.ndarray import float32, float64

torch = pytest.importorskip("torch")
convmod = importlib.import_module("mininet.ops.conv")

EPS32 = 2.0 ** -24


def bf16(x):
    """x rounded to the nearest bfloat16 (ties to even), as float32."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return (((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16).astype(np.uint32).view(np.float32)


def torch_conv(x, w, g, stride, pad, dil, groups):
    """(y, dx, dw) of the float64 conv with the upstream grad g, and the same of |x|, |w|,
    |g| (the size of the sums, for the float32 rounding bound)."""
    out = []
    for f in (lambda a: a, np.abs):
        tx, tw = (torch.tensor(f(a).astype(np.float64), requires_grad=True) for a in (x, w))
        ty = torch.nn.functional.conv2d(tx, tw, None, stride, pad, dil, groups)
        ty.backward(torch.tensor(f(g).astype(np.float64)))
        out.append((ty.detach().numpy(), tx.grad.numpy(), tw.grad.numpy()))
    return out


def assert_fp32_close(got, want, size, terms):
    """|got - want| within float32 summation error of `terms` products of total size `size`."""
    bound = 4 * terms * EPS32 * size + 1e-30
    err = np.abs(got.astype(np.float64) - want)
    assert (err <= bound).all(), f"max error {err.max():.3g} (bound {bound.max():.3g})"


# (N, C, H, W, K, kh, kw, stride, pad, dilation, groups)
CASES = [
    (2, 3, 11, 11, 4, 3, 3, 1, 1, 1, 1),      # small map: im2col + bf16 GEMM
    (3, 5, 16, 15, 7, 3, 3, 1, 1, 1, 1),      # >= 196 pixels: fused kernels, odd sizes
    (2, 4, 14, 14, 6, 5, 5, 1, 2, 1, 1),      # 5x5, MNIST-like
    (2, 64, 9, 9, 8, 3, 3, 2, 1, 1, 1),       # strided, deep: im2col + bf16 GEMM
    (2, 3, 17, 17, 5, 7, 7, 2, 3, 1, 1),      # strided, shallow
    (2, 64, 9, 8, 6, 3, 3, 2, 1, 1, 2),       # strided, 32 channels a group: batched GEMM
    (3, 33, 7, 9, 5, 1, 1, 2, 0, 1, 1),       # 1x1 stride 2, odd sizes
    (2, 40, 11, 10, 3, 3, 2, 3, 1, 2, 1),     # 3x2 kernel, stride 3, dilation 2
    (2, 6, 10, 9, 4, 3, 3, 1, 1, 1, 2),       # groups
    (1, 8, 13, 12, 8, 3, 3, 1, 0, 1, 4),      # groups, no padding
    (2, 3, 12, 12, 4, 3, 3, 1, 2, 2, 1),      # dilation
    (2, 5, 7, 7, 3, 1, 1, 1, 0, 1, 1),        # 1x1
    (0, 3, 8, 8, 4, 3, 3, 1, 1, 1, 1),        # empty batch
]


@pytest.mark.torch
@pytest.mark.parametrize("case", CASES, ids=[str(c) for c in CASES])
@pytest.mark.parametrize("min_pixels", [None, 0])
def test_conv_forward_and_gradients_match_float64_of_rounded_inputs(case, min_pixels,
                                                                    monkeypatch):
    if min_pixels is not None:   # every shape on the fused kernels' side of the test
        from mininet.backend.cpu import CPUDevice
        monkeypatch.setattr(CPUDevice, "conv2d_min_pixels", min_pixels)
    n, c, h, wd, k, kh, kw, s, pad, dil, grp = case
    rng = np.random.default_rng(sum(case))
    x = rng.standard_normal((n, c, h, wd)).astype(np.float32)
    w = rng.standard_normal((k, c // grp, kh, kw)).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    X, W, B = (mn.Tensor(v, requires_grad=True) for v in (x, w, b))
    with mn.autocast("bf16"):
        y = mn.nn.functional.conv2d(X, W, B, stride=s, padding=pad, dilation=dil, groups=grp)
    g = rng.standard_normal(y.shape).astype(np.float32)
    (y * mn.Tensor(g)).sum().backward()   # after the block: the recorded precision holds
    (ry, rdx, rdw), (ay, adx, adw) = torch_conv(bf16(x), bf16(w), bf16(g), s, pad, dil, grp)
    taps = (c // grp) * kh * kw
    assert_fp32_close(y.numpy(), ry + b.reshape(1, -1, 1, 1), ay + np.abs(b).reshape(1, -1, 1, 1),
                      taps + 1)
    assert_fp32_close(X.grad.numpy(), rdx, adx, (k // grp) * kh * kw)
    assert_fp32_close(W.grad.numpy(), rdw, adw, n * y.shape[2] * y.shape[3])
    np.testing.assert_allclose(B.grad.numpy(), g.sum((0, 2, 3)), rtol=1e-5, atol=1e-4)


def test_the_bound_tells_rounded_from_unrounded_inputs():
    """The tolerance above is tight enough to catch a conv that forgot to round."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 64, 9, 9)).astype(np.float32)
    w = rng.standard_normal((8, 64, 3, 3)).astype(np.float32)
    y = mn.nn.functional.conv2d(mn.Tensor(x), mn.Tensor(w), stride=2, padding=1).numpy()
    (ry, _, _), (ay, _, _) = torch_conv(bf16(x), bf16(w), np.ones(y.shape), 2, 1, 1, 1)
    with pytest.raises(AssertionError):
        assert_fp32_close(y, ry, ay, 64 * 9)


@pytest.mark.torch
@pytest.mark.parametrize("stride,c", [(1, 3), (2, 64)])
def test_second_order_through_autocast(stride, c):
    """d/dx |dL/dW|^2 with dL/dW from a bf16 conv: torch's float64 second order with the
    rounded x and w as leaves (the rounding passes gradients through unchanged)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, c, 9, 9)).astype(np.float32)
    w = rng.standard_normal((4, c, 3, 3)).astype(np.float32)
    X, W = mn.Tensor(x, requires_grad=True), mn.Tensor(w, requires_grad=True)
    with mn.autocast("bf16"):
        y = mn.nn.functional.conv2d(X, W, stride=stride, padding=1)
    y.backward(mn.Tensor(np.ones(y.shape, np.float32)), create_graph=True)
    gw = W.grad
    X.grad = None
    (gw * gw).sum().backward()
    tx, tw = (torch.tensor(bf16(a).astype(np.float64), requires_grad=True) for a in (x, w))
    ty = torch.nn.functional.conv2d(tx, tw, stride=stride, padding=1)
    (tgw,) = torch.autograd.grad(ty.sum(), tw, create_graph=True)
    (tgw * tgw).sum().backward()
    np.testing.assert_allclose(gw.numpy(), tgw.detach().numpy(), rtol=1e-4, atol=1e-3)
    want = tx.grad.numpy()
    np.testing.assert_allclose(X.grad.numpy(), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_non_contiguous_input_view():
    rng = np.random.default_rng(7)
    big = rng.standard_normal((3, 64, 12, 12)).astype(np.float32)
    w = rng.standard_normal((8, 64, 3, 3)).astype(np.float32)
    X = mn.Tensor(big)[1:, :, 1:10, 2:11]
    with mn.autocast("bf16"):
        y = mn.nn.functional.conv2d(X, mn.Tensor(w), stride=2, padding=1).numpy()
    x = big[1:, :, 1:10, 2:11]
    (ry, _, _), (ay, _, _) = torch_conv(bf16(x), bf16(w), np.ones(y.shape), 2, 1, 1, 1)
    assert_fp32_close(y, ry, ay, 64 * 9)


def test_path_choice_by_shape():
    """Under bf16, deep strided layers leave the fused kernels for im2col + the bf16 GEMM;
    stride-1 layers keep the path float32 chooses; float64 keeps float32's choice."""
    dev = mn.cpu()
    p1, p2 = convmod.ConvParams(1, 1), convmod.ConvParams(2, 1)
    assert convmod._fused_at("bf16", dev, 32, 32, (64, 64, 3, 3), p1)
    assert convmod._fused_at(None, dev, 16, 16, (128, 64, 3, 3), p2) == \
        convmod._fused(dev, 16, 16, (128, 64, 3, 3), p2)
    assert not convmod._fused_at("bf16", dev, 16, 16, (128, 64, 3, 3), p2)
    for wshape in ((64, 3, 7, 7), (64, 64, 5, 5), (64, 16, 3, 3)):   # the fused kernels won
        assert convmod._fused_at("bf16", dev, 16, 16, wshape, p2) == \
            convmod._fused(dev, 16, 16, wshape, p2)
    assert not convmod._fused_at("bf16", dev, 16, 16, (256, 128, 1, 1), convmod.ConvParams(2))
    assert convmod._lowp("bf16", float64) is None and convmod._lowp("bf16", float32) == "bf16"


def test_conv_relu_under_autocast_matches_conv_then_relu():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 64, 10, 10)).astype(np.float32)
    w = rng.standard_normal((8, 64, 3, 3)).astype(np.float32)
    outs = []
    for fused in (True, False):
        X, W = mn.Tensor(x, requires_grad=True), mn.Tensor(w, requires_grad=True)
        with mn.autocast("bf16"):
            if fused:
                y = mn.nn.functional.conv2d_relu(X, W, stride=2, padding=1)
            else:
                y = mn.nn.functional.conv2d(X, W, stride=2, padding=1).relu()
        y.sum().backward()
        outs.append((y.numpy(), X.grad.numpy(), W.grad.numpy()))
    for a, b in zip(*outs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4 * np.abs(b).max())
