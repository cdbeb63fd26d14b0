"""The conv op's per-layer caches (ops/conv.py: conv_params, _call_plan, _layer) follow
changed arguments: a cached answer is never served for other strides, padding, shapes,
dtypes or devices' capabilities, and bad input still gets its error every call."""
import importlib

import numpy as np
import pytest
import torch

from mininet import ops
from mininet.autograd import Tensor
from mininet.backend.cpu import CPUDevice

conv_mod = importlib.import_module("mininet.ops.conv")


def _torch_conv(x, w, b, **kw):
    return torch.nn.functional.conv2d(torch.tensor(x, dtype=torch.float64),
                                      torch.tensor(w, dtype=torch.float64),
                                      None if b is None else torch.tensor(b, dtype=torch.float64),
                                      **kw).numpy()


def _data(shape, k, ks, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((k, shape[1], ks, ks)).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    return x, w, b


def test_params_cached_per_arguments():
    p = conv_mod.conv_params(2, 1)
    assert conv_mod.conv_params(2, 1) is p                      # made once
    assert conv_mod.conv_params((2, 2), (1, 1)) == p            # equal params hash equal
    assert hash(conv_mod.conv_params((2, 2), (1, 1))) == hash(p)
    assert conv_mod.conv_params(1, 1).stride == (1, 1)          # another key, another answer
    assert conv_mod.conv_params([2, 3], [0, 1]).stride == (2, 3)   # lists: not cached, same
    assert conv_mod.conv_params(2, 1) != conv_mod.conv_params(2, 1, groups=2)


@pytest.mark.parametrize("bad, match", [
    (dict(stride=0), "must be >= 1"),
    (dict(padding=-1), "padding"),
    (dict(stride=(1, 2, 3)), "stride must be an int or a pair"),
    (dict(groups=0), "groups"),
])
def test_bad_params_error_every_call(bad, match):
    x, w, _ = _data((1, 2, 5, 5), 2, 3)
    for _ in range(2):   # an error is never cached as an answer
        with pytest.raises(ValueError, match=match):
            ops.conv(Tensor(x), Tensor(w), **bad)


def test_float_stride_is_not_served_an_int_entry():
    x, w, _ = _data((1, 2, 5, 5), 2, 3)
    ops.conv(Tensor(x), Tensor(w), stride=1)   # caches stride=1
    with pytest.raises(TypeError):
        ops.conv(Tensor(x), Tensor(w), stride=1.5)


@pytest.mark.parametrize("stride, padding", [(1, 0), (1, 1), (2, 1), (2, 0), (3, 2), (1, 1)])
def test_repeated_calls_follow_changed_arguments(stride, padding):
    # the same tensors through many geometries in turn (each cached), then again
    x, w, b = _data((2, 3, 7, 6), 4, 3)
    for _ in range(2):
        got = ops.conv(Tensor(x), Tensor(w), Tensor(b), stride=stride, padding=padding).numpy()
        np.testing.assert_allclose(got, _torch_conv(x, w, b, stride=stride, padding=padding),
                                   rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", [(2, 3, 7, 6), (1, 3, 7, 6), (2, 3, 1, 1), (2, 3, 2, 2),
                                   (3, 3, 5, 9), (2, 3, 7, 6)])
def test_shapes_follow(shape):
    # the 1x1 and 2x2 maps take the one-tap crop or the dense GEMM: cached per shape
    x, w, b = _data(shape, 5, 3, seed=len(shape) + shape[2])
    mx, mw, mb = (Tensor(a, requires_grad=True) for a in (x, w, b))
    y = ops.conv(mx, mw, mb, stride=2, padding=1)
    np.testing.assert_allclose(y.numpy(), _torch_conv(x, w, b, stride=2, padding=1),
                               rtol=1e-4, atol=1e-4)
    y.sum().backward()
    tx, tw, tb = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, w, b))
    torch.nn.functional.conv2d(tx, tw, tb, stride=2, padding=1).sum().backward()
    for m, t in ((mx, tx), (mw, tw), (mb, tb)):
        np.testing.assert_allclose(m.grad.numpy(), t.grad.numpy(), rtol=1e-4, atol=1e-4)


def test_errors_after_a_cached_good_call():
    x, w, b = _data((1, 4, 6, 6), 4, 3)
    ops.conv(Tensor(x), Tensor(w), Tensor(b), padding=1)          # cached layer
    with pytest.raises(ValueError, match="bias of shape"):
        ops.conv(Tensor(x), Tensor(w), Tensor(b[:3]), padding=1)
    with pytest.raises(ValueError, match="channels"):
        ops.conv(Tensor(x[:, :3]), Tensor(w), padding=1)
    with pytest.raises(ValueError, match="groups=3 must divide"):
        ops.conv(Tensor(x), Tensor(w), padding=1, groups=3)
    with pytest.raises(ValueError, match="larger than"):
        ops.conv(Tensor(x[:, :, :1, :1]), Tensor(w), padding=0)
    with pytest.raises(ValueError, match="dtypes differ"):
        ops.conv(Tensor(x), Tensor(w.astype(np.float64)), padding=1)
    with pytest.raises(TypeError, match="float32 or float64"):
        ops.conv(Tensor(x.astype(np.int64)), Tensor(w.astype(np.int64)), padding=1)
    for _ in range(2):   # and the cached layer still runs right
        got = ops.conv(Tensor(x), Tensor(w), Tensor(b), padding=1).numpy()
        np.testing.assert_allclose(got, _torch_conv(x, w, b, padding=1), rtol=1e-4, atol=1e-4)


def test_dtype_change_same_shapes():
    x, w, b = _data((2, 3, 5, 5), 2, 3)
    y32 = ops.conv(Tensor(x), Tensor(w), Tensor(b), padding=1)
    y64 = ops.conv(Tensor(x.astype(np.float64)), Tensor(w.astype(np.float64)),
                   Tensor(b.astype(np.float64)), padding=1)
    assert y32.dtype == np.float32 and y64.dtype == np.float64
    np.testing.assert_allclose(y64.numpy(), _torch_conv(x, w, b, padding=1), rtol=1e-10,
                               atol=1e-10)


@pytest.mark.parametrize("has_bias_act", [True, False])
def test_capability_change_reroutes_a_cached_layer(monkeypatch, has_bias_act):
    # a 1x1 output map: the dense GEMM (bias epilogue) or the cropped one-tap weight; the
    # device's capability is asked every call, not cached with the layer
    x, w, b = _data((3, 4, 1, 1), 5, 3)
    ops.conv(Tensor(x), Tensor(w), Tensor(b), padding=1)
    caps = CPUDevice.capabilities if has_bias_act else CPUDevice.capabilities - {"bias_act"}
    monkeypatch.setattr(CPUDevice, "capabilities", caps)
    mx, mw, mb = (Tensor(a, requires_grad=True) for a in (x, w, b))
    y = ops.conv(mx, mw, mb, padding=1)
    assert (type(y.inputs[1].op).__name__ == "GetItem") != has_bias_act   # the crop's slice
    np.testing.assert_allclose(y.numpy(), _torch_conv(x, w, b, padding=1), rtol=1e-4,
                               atol=1e-4)
    y.sum().backward()
    tw = torch.tensor(w, dtype=torch.float64, requires_grad=True)
    torch.nn.functional.conv2d(torch.tensor(x, dtype=torch.float64), tw, None,
                               padding=1).sum().backward()
    np.testing.assert_allclose(mw.grad.numpy(), tw.grad.numpy(), rtol=1e-4, atol=1e-4)


def test_min_pixels_change_reroutes_a_cached_layer(monkeypatch):
    # the fused-or-im2col choice is the device's, asked every call
    x, w, b = _data((2, 4, 9, 9), 6, 3)
    want = _torch_conv(x, w, b, padding=1)
    for pixels in (10 ** 9, 0, 10 ** 9):
        monkeypatch.setattr(CPUDevice, "conv2d_min_pixels", pixels)
        out, col = conv_mod.conv_forward(Tensor(x).cached_data, Tensor(w).cached_data,
                                         Tensor(b).cached_data, conv_mod.conv_params(1, 1))
        assert (col is None) == (pixels == 0)
        np.testing.assert_allclose(out.numpy(), want, rtol=1e-4, atol=1e-4)


def test_views_of_noncompact_weight():
    # the direct views (_grouped, _dense_weight) read a strided weight right
    x, w, b = _data((2, 3, 1, 1), 4, 3)
    wt = np.ascontiguousarray(w.transpose(1, 0, 2, 3))         # (C, K, kh, kw)
    mw = Tensor(wt).permute(1, 0, 2, 3)                          # non-compact (K, C, kh, kw)
    for pad, xs in ((1, x), (0, np.random.default_rng(1).standard_normal((2, 3, 3, 3))
                                .astype(np.float32))):
        got = ops.conv(Tensor(xs), mw, Tensor(b), padding=pad).numpy()
        np.testing.assert_allclose(got, _torch_conv(xs, w, b, padding=pad), rtol=1e-4,
                                   atol=1e-4)
    # groups: the (groups, K/groups, C/groups*T) view of a permuted weight
    xg = np.random.default_rng(2).standard_normal((2, 4, 5, 5)).astype(np.float32)
    wg = np.random.default_rng(3).standard_normal((6, 2, 3, 3)).astype(np.float32)
    mwg = Tensor(np.ascontiguousarray(wg.transpose(2, 3, 0, 1))).permute(2, 3, 0, 1)
    got = ops.conv(Tensor(xg), mwg, stride=2, padding=1, groups=2).numpy()
    np.testing.assert_allclose(got, _torch_conv(xg, wg, None, stride=2, padding=1, groups=2),
                               rtol=1e-4, atol=1e-4)
