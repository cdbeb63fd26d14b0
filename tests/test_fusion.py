"""Fused inference paths: F.conv2d_relu (the ConvReLU op, all its gradients), ConvReLU2d,
fuse_conv_bn_eval / fuse_conv_bn_weights and fuse_modules, against PyTorch (float64)
and central differences; the fused models against the unfused ones."""
from collections import OrderedDict

import numpy as np
import pytest

import mininet as mn
from mininet import nn
from mininet.autograd import Tensor
from mininet.models import ResNet9
from mininet.models.mlp import CifarCNN
from mininet.nn import functional as MF
from mininet.nn.utils import find_fusable, fuse_conv_bn_eval, fuse_conv_bn_weights, fuse_modules
from conftest import gradcheck, t64, torch

F = torch.nn.functional if torch is not None else None
rng = np.random.default_rng(25)

# N, C, H, W, K, k, stride, padding, dilation, groups
CASES = [
    (2, 3, 7, 9, 4, 3, 1, 1, 1, 1),
    (1, 4, 8, 8, 6, 3, 2, 1, 1, 2),       # stride 2, groups
    (3, 6, 11, 10, 6, 3, 2, 2, 2, 3),     # dilation, odd sizes
    (2, 3, 5, 5, 5, 1, 1, 0, 1, 1),       # 1x1
    (2, 4, 9, 9, 4, 3, 1, 0, 1, 4),       # depthwise
    (2, 8, 1, 1, 6, 3, 1, 1, 1, 1),       # one live tap (the kernel is cropped)
    (2, 16, 12, 12, 16, 3, 1, 1, 1, 1),   # a Winograd-sized layer
]


@pytest.fixture(params=["epilogue", "im2col-epilogue", "fused", "im2col"])
def conv_path(request, monkeypatch):
    """The CPU's four ways: the ReLU epilogue in the convolution kernel (capability
    conv2d_relu) or in im2col's to_nchw; the fused convolution then an in-place ReLU; and
    im2col + GEMM then the ReLU (a device without fused kernels)."""
    from mininet.backend.cpu import CPUDevice
    caps = CPUDevice.capabilities
    if "epilogue" in request.param and "conv2d_relu" not in caps:
        pytest.skip("the CPU device has no conv2d_relu capability (ReLU epilogue)")
    drop = {"epilogue": set(), "im2col-epilogue": {"conv2d"}, "fused": {"conv2d_relu"},
            "im2col": {"conv2d", "conv2d_relu"}}[request.param]
    monkeypatch.setattr(CPUDevice, "capabilities", caps - drop)
    monkeypatch.setattr(CPUDevice, "conv2d_min_pixels", 0)   # small test images too
    return request.param


def arrays(case, dtype=np.float64):
    n, c, h, w, k, ks, s, p, d, g = case
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((k, c // g, ks, ks)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    return x, wt, b, dict(stride=s, padding=p, dilation=d, groups=g)


# F.conv2d_relu ----------------------------------------------------------------------------
@pytest.mark.torch
@pytest.mark.parametrize("case", CASES, ids=[str(c) for c in CASES])
@pytest.mark.parametrize("bias", [True, False])
def test_conv2d_relu_matches_torch(case, bias, conv_path):
    """Forward and the three gradients of sum(relu(conv) * r), float64."""
    x, w, b, geo = arrays(case)
    mins = [t64(x), t64(w)] + ([t64(b)] if bias else [])
    tins = [torch.tensor(a, requires_grad=True) for a in ([x, w, b] if bias else [x, w])]
    y = MF.conv2d_relu(*mins[:2], mins[2] if bias else None, **geo)
    ty = F.relu(F.conv2d(*tins[:2], tins[2] if bias else None, **geo))
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-10, atol=1e-11)
    r = rng.standard_normal(ty.shape)
    y.backward(Tensor(r, dtype="float64"))
    (ty * torch.tensor(r)).sum().backward()
    for m, t in zip(mins, tins):
        np.testing.assert_allclose(m.grad.numpy(), t.grad.numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", CASES[:3], ids=[str(c) for c in CASES[:3]])
def test_conv2d_relu_float32_matches_conv_then_relu(case, conv_path):
    x, w, b, geo = arrays(case, np.float32)
    want = MF.relu(MF.conv2d(Tensor(x), Tensor(w), Tensor(b), **geo)).numpy()
    got = MF.conv2d_relu(Tensor(x), Tensor(w), Tensor(b), **geo).numpy()
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert (got >= 0).all()


def test_conv2d_relu_gradcheck(conv_path):
    """Central differences of the input, weight and bias gradients (float64)."""
    x, w, b, geo = arrays((2, 3, 5, 6, 4, 3, 1, 1, 1, 1))
    gradcheck(lambda a, c, d: MF.conv2d_relu(a, c, d, **geo), x, w, b)


@pytest.mark.torch
@pytest.mark.parametrize("case", [CASES[0], CASES[1], CASES[5]], ids=str)
def test_conv2d_relu_second_order_matches_torch(case, conv_path):
    """d/dx, d/dw and d/db of |dL/dw|^2 + |dL/dx|^2 with L = sum(y^2 r): the output grad
    2 y r depends on x, so the double backward runs through the mask, the gradient ops and
    the forward again."""
    x, w, b, geo = arrays(case)
    r = rng.standard_normal(F.conv2d(torch.tensor(x), torch.tensor(w), **geo).shape)
    mx, mw, mb = t64(x), t64(w), t64(b)
    y = MF.conv2d_relu(mx, mw, mb, **geo)
    (y * y * Tensor(r, dtype="float64")).sum().backward(create_graph=True)
    gx, gw = mx.grad, mw.grad
    mx.grad = mw.grad = mb.grad = None
    ((gw * gw).sum() + (gx * gx).sum()).backward()
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = F.relu(F.conv2d(tx, tw, tb, **geo))
    tgx, tgw = torch.autograd.grad((ty * ty * torch.tensor(r)).sum(), (tx, tw), create_graph=True)
    ((tgw * tgw).sum() + (tgx * tgx).sum()).backward()
    for m, t in ((mx, tx), (mw, tw), (mb, tb)):
        np.testing.assert_allclose(m.grad.numpy(), t.grad.numpy(), rtol=1e-9, atol=1e-9)


def test_conv2d_relu_second_order_gradcheck(conv_path):
    """s(x, w) = sum(dL/dx * v), L = sum(y^2 r): its autograd gradients against central
    differences of s (float64)."""
    x, w, b, geo = arrays((1, 2, 5, 5, 3, 3, 1, 1, 1, 1))
    r, v = rng.standard_normal((1, 3, 5, 5)), rng.standard_normal(x.shape)

    def s(xa, wa, graph):
        xt, wt = t64(xa), t64(wa, graph)
        y = MF.conv2d_relu(xt, wt, t64(b, False), **geo)
        (y * y * Tensor(r, dtype="float64")).sum().backward(create_graph=graph)
        return (xt.grad * Tensor(v, dtype="float64")).sum(), xt, wt

    out, xt, wt = s(x, w, True)
    xt.grad = wt.grad = None
    out.backward()
    eps = 1e-6
    for a, t in ((x, xt), (w, wt)):
        num = np.zeros_like(a)
        for i in range(a.size):
            old = a.flat[i]
            a.flat[i] = old + eps
            up = s(x, w, False)[0].numpy()
            a.flat[i] = old - eps
            down = s(x, w, False)[0].numpy()
            a.flat[i] = old
            num.flat[i] = (up - down) / (2 * eps)
        np.testing.assert_allclose(t.grad.numpy(), num, rtol=1e-5, atol=1e-5)


def test_conv2d_relu_views_and_empty_batch(conv_path):
    """A permuted (non-contiguous) input, an input starting past its buffer's start, a
    zero-size batch; string padding."""
    x, w, b, geo = arrays((3, 4, 6, 5, 5, 3, 1, 1, 1, 1))
    xt = Tensor(np.ascontiguousarray(x.transpose(0, 1, 3, 2)), dtype="float64")
    xt = xt.permute((0, 1, 3, 2))
    want = MF.relu(MF.conv2d(t64(x, False), t64(w, False), t64(b, False), **geo)).numpy()
    np.testing.assert_allclose(MF.conv2d_relu(xt, t64(w, False), t64(b, False), **geo).numpy(),
                               want, rtol=1e-12, atol=1e-12)
    tail = t64(x, False)[1:]
    np.testing.assert_allclose(MF.conv2d_relu(tail, t64(w, False), t64(b, False), **geo).numpy(),
                               want[1:], rtol=1e-12, atol=1e-12)
    same = MF.conv2d_relu(t64(x, False), t64(w, False), t64(b, False), padding="same")
    np.testing.assert_allclose(same.numpy(), want, rtol=1e-12, atol=1e-12)
    empty = MF.conv2d_relu(t64(x[:0]), t64(w), t64(b), padding=1)
    assert empty.shape == (0, 5, 6, 5)
    empty.sum().backward()


def test_conv2d_relu_asks_the_device_for_its_epilogue(monkeypatch):
    """A device with the conv2d_relu capability gets relu=True in one conv2d call (here a
    stand-in kernel records it) and no separate ReLU pass."""
    from mininet.backend.cpu import CPUDevice
    from mininet.backend.opcodes import UNARY
    calls, real, real_unary = [], CPUDevice.conv2d, CPUDevice.unary

    def conv2d(self, x, w, b, out, *geometry, relu=False):
        calls.append(relu)
        real(self, x, w, b, out, *geometry)
        if relu:
            real_unary(self, UNARY["relu"], out, out)

    def unary(self, op, a, out):
        assert op != UNARY["relu"], "the ReLU ran as a separate pass"
        real_unary(self, op, a, out)
    monkeypatch.setattr(CPUDevice, "capabilities", CPUDevice.capabilities | {"conv2d_relu"})
    monkeypatch.setattr(CPUDevice, "conv2d_min_pixels", 0)
    monkeypatch.setattr(CPUDevice, "conv2d", conv2d)
    monkeypatch.setattr(CPUDevice, "unary", unary)
    x, w, b, geo = arrays(CASES[0])
    got = MF.conv2d_relu(t64(x, False), t64(w, False), t64(b, False), **geo).numpy()
    monkeypatch.undo()
    want = MF.relu(MF.conv2d(t64(x, False), t64(w, False), t64(b, False), **geo)).numpy()
    assert calls == [True]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_conv2d_relu_under_bf16_autocast():
    """Under autocast the op rounds its operands as conv2d does: the same output and grads."""
    x, w, b, geo = arrays(CASES[0], np.float32)
    outs = []
    for fn in (lambda *a: MF.conv2d_relu(*a, **geo), lambda *a: MF.relu(MF.conv2d(*a, **geo))):
        ts = [Tensor(a, requires_grad=True) for a in (x, w, b)]
        with mn.autocast("bf16"):
            y = fn(*ts)
        y.sum().backward()
        outs.append([y.numpy()] + [t.grad.numpy() for t in ts])
    for a, c in zip(*outs):
        np.testing.assert_array_equal(a, c)


def test_conv2d_relu_errors():
    x = Tensor(np.ones((1, 3, 5, 5), np.float32))
    w = Tensor(np.ones((4, 3, 3, 3), np.float32))
    with pytest.raises(ValueError, match="dtypes differ"):
        MF.conv2d_relu(x, Tensor(np.ones((4, 3, 3, 3)), dtype="float64"))
    with pytest.raises(TypeError, match="float32 or float64"):
        MF.conv2d_relu(Tensor(np.ones((1, 3, 5, 5), np.int64)), w)
    with pytest.raises(ValueError, match="channels"):
        MF.conv2d_relu(Tensor(np.ones((1, 2, 5, 5), np.float32)), w)
    with pytest.raises(ValueError, match="bias"):
        MF.conv2d_relu(x, w, Tensor(np.ones(3, np.float32)))
    with pytest.raises(ValueError, match="larger than"):
        MF.conv2d_relu(Tensor(np.ones((1, 3, 2, 2), np.float32)), w)


# ConvReLU2d -------------------------------------------------------------------------------
@pytest.mark.torch
def test_conv_relu2d_module_and_state_dict_names():
    import torch.ao.nn.intrinsic as tin
    from mininet import interop
    conv = nn.Conv2d(3, 5, 3, stride=2, padding=1, dtype="float64")
    m = nn.ConvReLU2d(conv)
    t = tin.ConvReLU2d(torch.nn.Conv2d(3, 5, 3, stride=2, padding=1).double(), torch.nn.ReLU())
    assert list(interop.torch_state_dict(m)) == list(t.state_dict())
    interop.load_torch_state_dict(m, t.state_dict())
    x = rng.standard_normal((2, 3, 9, 7))
    np.testing.assert_allclose(m(Tensor(x, dtype="float64")).numpy(),
                               t(torch.tensor(x)).detach().numpy(), rtol=1e-12, atol=1e-12)
    assert m[0] is conv and type(m[1]) is nn.ReLU
    assert repr(m).startswith("ConvReLU2d(")
    with pytest.raises(TypeError, match="Conv2d"):
        nn.ConvReLU2d(nn.ReLU())


# conv + batch norm -----------------------------------------------------------------------
def random_bn(bn, rng):
    k = bn.dim
    dt = bn.weight.dtype
    bn.running_mean = Tensor(rng.standard_normal(k), dtype=dt)
    bn.running_var = Tensor(rng.uniform(0.3, 3.0, k), dtype=dt)
    bn.weight.data = Tensor(rng.standard_normal(k), dtype=dt)
    bn.bias.data = Tensor(rng.standard_normal(k), dtype=dt)
    return bn


def torch_conv_bn(conv, bn):
    """torch's Conv2d and BatchNorm2d (eval) with the same weights and statistics."""
    g = conv.groups
    tc = torch.nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                         conv.padding, conv.dilation, g, bias=conv.bias is not None).double()
    tb = torch.nn.BatchNorm2d(bn.dim, eps=bn.eps).double()
    with torch.no_grad():
        tc.weight.copy_(torch.tensor(conv.weight.numpy()))
        if conv.bias is not None:
            tc.bias.copy_(torch.tensor(conv.bias.numpy()))
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(tb, name).copy_(torch.tensor(getattr(bn, name).numpy()))
    return tc.eval(), tb.eval()


@pytest.mark.torch
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("groups", [1, 2])
def test_fuse_conv_bn_eval_matches_torch(bias, groups):
    from torch.nn.utils.fusion import fuse_conv_bn_eval as torch_fuse
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=groups, bias=bias, dtype="float64")
    bn = random_bn(nn.BatchNorm2d(6, eps=1e-3, dtype="float64"), rng)
    conv.eval(), bn.eval()
    before = conv.weight.numpy().copy()
    fused = fuse_conv_bn_eval(conv, bn)
    tc, tb = torch_conv_bn(conv, bn)
    tf = torch_fuse(tc, tb)
    for ours, theirs in ((fused.weight, tf.weight), (fused.bias, tf.bias)):
        np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), rtol=1e-12, atol=1e-12)
    x = rng.standard_normal((2, 4, 7, 8))
    want = tb(tc(torch.tensor(x))).detach().numpy()
    got = fused(Tensor(x, dtype="float64")).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(conv.weight.numpy(), before)   # the inputs are untouched
    assert fused is not conv and fused.weight is not conv.weight and not fused.training


@pytest.mark.torch
def test_fuse_conv_bn_weights_matches_torch():
    from torch.nn.utils.fusion import fuse_conv_bn_weights as torch_fuse
    w, b = rng.standard_normal((5, 3, 3, 3)), rng.standard_normal(5)
    rm, rv = rng.standard_normal(5), rng.uniform(0.5, 2, 5)
    gw, gb = rng.standard_normal(5), rng.standard_normal(5)
    for conv_b in (b, None):
        got = fuse_conv_bn_weights(Tensor(w, dtype="float64"),
                                   None if conv_b is None else Tensor(conv_b, dtype="float64"),
                                   Tensor(rm, dtype="float64"), Tensor(rv, dtype="float64"), 1e-5,
                                   Tensor(gw, dtype="float64"), Tensor(gb, dtype="float64"))
        want = torch_fuse(torch.tensor(w), None if conv_b is None else torch.tensor(conv_b),
                          torch.tensor(rm), torch.tensor(rv), 1e-5, torch.tensor(gw),
                          torch.tensor(gb))
        for g, t in zip(got, want):
            assert isinstance(g, nn.Parameter) and g.dtype == np.float64
            np.testing.assert_allclose(g.numpy(), t.detach().numpy(), rtol=1e-12, atol=1e-12)


def test_fuse_conv_bn_float32_keeps_dtype_and_affine_defaults():
    w = Tensor(rng.standard_normal((4, 2, 1, 1)).astype(np.float32))
    rm, rv = Tensor(np.zeros(4, np.float32)), Tensor(np.full(4, 4.0, np.float32))
    fw, fb = fuse_conv_bn_weights(w, None, rm, rv, 0.0, None, None)
    assert fw.dtype == np.float32 and fb.dtype == np.float32
    np.testing.assert_allclose(fw.numpy(), w.numpy() / 2, rtol=1e-7)
    np.testing.assert_array_equal(fb.numpy(), np.zeros(4, np.float32))


def test_fuse_conv_bn_errors():
    conv, bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)
    with pytest.raises(RuntimeError, match="training mode.*eval"):
        fuse_conv_bn_eval(conv, bn)
    conv.eval()
    with pytest.raises(RuntimeError, match="BatchNorm2d is in training mode"):
        fuse_conv_bn_eval(conv, bn)
    with pytest.raises(ValueError, match="5 output channels"):
        fuse_conv_bn_eval(nn.Conv2d(3, 5, 3).eval(), bn.eval())
    with pytest.raises(TypeError, match="BatchNorm2d"):
        fuse_conv_bn_eval(conv, nn.BatchNorm1d(4).eval())
    with pytest.raises(NotImplementedError, match="transposed"):
        fuse_conv_bn_eval(conv, bn, transpose=True)


# fuse_modules -----------------------------------------------------------------------------
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, dtype="float64"),
                                      nn.BatchNorm2d(8, dtype="float64"), nn.ReLU(),
                                      nn.Conv2d(8, 8, 3, stride=2, dtype="float64"), nn.ReLU(),
                                      nn.MaxPool2d(2))
        self.head = nn.Sequential(OrderedDict(conv=nn.Conv2d(8, 4, 1, bias=False, dtype="float64"),
                                              bn=nn.BatchNorm2d(4, dtype="float64")))

    def forward(self, x):
        return self.head(self.features(x))


def eval_net():
    net = Net()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            random_bn(m, rng)
    return net.eval()


GROUPS = [["features.0", "features.1", "features.2"], ["features.3", "features.4"],
          ["head.conv", "head.bn"]]


def test_fuse_modules_matches_the_model():
    net = eval_net()
    x = Tensor(rng.standard_normal((2, 3, 10, 10)), dtype="float64")
    want = net(x).numpy()
    fused = fuse_modules(net, GROUPS)
    assert find_fusable(net) == GROUPS
    np.testing.assert_allclose(fused(x).numpy(), want, rtol=1e-11, atol=1e-11)
    f = fused.features
    assert type(f[0]) is nn.ConvReLU2d and type(f[1]) is nn.Identity and type(f[2]) is nn.Identity
    assert type(f[3]) is nn.ConvReLU2d and type(f[4]) is nn.Identity
    assert type(fused.head.conv) is nn.Conv2d and type(fused.head.bn) is nn.Identity
    assert fused.head.conv.bias is not None and not f[0].training
    # the original is left as it was, its parameters not shared
    assert type(net.features[0]) is nn.Conv2d and type(net.head.bn) is nn.BatchNorm2d
    np.testing.assert_array_equal(net(x).numpy(), want)
    assert not ({id(p) for p in fused.parameters()} & {id(p) for p in net.parameters()})
    assert find_fusable(fused) == []


def test_fuse_modules_inplace_and_named_modules_spelling():
    net = eval_net()
    x = Tensor(rng.standard_normal((1, 3, 8, 8)), dtype="float64")
    want = net(x).numpy()
    out = fuse_modules(net, ["features.modules_list.3", "features.modules_list.4"], inplace=True)
    assert out is net and type(net.features[3]) is nn.ConvReLU2d
    np.testing.assert_allclose(net(x).numpy(), want, rtol=1e-12, atol=1e-12)


def test_fuse_modules_conv_relu_trains():
    """conv + ReLU needs no statistics: fusable in training mode, and the gradients are
    those of the unfused model."""
    net = Net()
    fused = fuse_modules(net, [GROUPS[1]])
    x = rng.standard_normal((2, 3, 10, 10))
    for m in (net, fused):
        m(t64(x, False)).sum().backward()
    np.testing.assert_allclose(fused.features[3][0].weight.grad.numpy(),
                               net.features[3].weight.grad.numpy(), rtol=1e-11, atol=1e-11)


def test_fuse_modules_errors():
    net = eval_net()
    with pytest.raises(ValueError, match=r"cannot fuse \(Conv2d, MaxPool2d\).*known patterns"):
        fuse_modules(net, [["features.3", "features.5"]])
    with pytest.raises(ValueError, match=r"cannot fuse \(ReLU, Conv2d\)"):
        fuse_modules(net, [["features.2", "features.3"]])
    with pytest.raises(KeyError, match="features.9"):
        fuse_modules(net, [["features.3", "features.9"]])
    with pytest.raises(KeyError, match="nothing"):
        fuse_modules(net, [["nothing.0", "features.1"]])
    with pytest.raises(ValueError, match="more than one place"):
        fuse_modules(net, [GROUPS[1], ["features.3", "features.4"]])
    with pytest.raises(ValueError, match="at least two"):
        fuse_modules(net, [["features.3"]])
    net.train()
    with pytest.raises(RuntimeError, match="training mode"):
        fuse_modules(net, [GROUPS[0]])
    assert type(net.features[0]) is nn.Conv2d   # nothing was changed


@pytest.mark.parametrize("model", [CifarCNN, ResNet9])
def test_fused_models_match(model):
    """Every conv-BN-ReLU of the CIFAR CNN and of ResNet9 fused (float32, eval)."""
    m = model()
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            random_bn(mod, rng)
    m.eval()
    groups = find_fusable(m)
    assert len(groups) == {CifarCNN: 3, ResNet9: 8}[model]
    fused = fuse_modules(m, groups)
    x = Tensor(rng.standard_normal((3, 3, 32, 32)).astype(np.float32))
    with mn.no_grad():
        want, got = m(x).numpy(), fused(x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


# ONNX -------------------------------------------------------------------------------------
def test_onnx_exports_conv_relu_as_conv_and_relu(tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    import mininet.onnx as mo
    m = CifarCNN()
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            random_bn(mod, rng)
    fused = fuse_modules(m.eval(), find_fusable(m))
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    path = tmp_path / "fused.onnx"
    mo.export(fused, Tensor(x), path)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    kinds = [n.op_type for n in proto.graph.node]
    assert kinds.count("Conv") == 3 and kinds.count("Relu") == 3
    assert "BatchNormalization" not in kinds and "ReduceMean" not in kinds
    for i, n in enumerate(proto.graph.node):
        if n.op_type == "Conv":
            assert proto.graph.node[i + 1].op_type == "Relu"
            assert proto.graph.node[i + 1].input[0] == n.output[0]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    x3 = rng.standard_normal((3, 3, 32, 32)).astype(np.float32)   # another batch size
    (got,) = sess.run(None, {sess.get_inputs()[0].name: x3})
    with mn.no_grad():
        want = fused(Tensor(x3)).numpy()
    # float32 through three convolutions and a linear layer, summed in other orders (and
    # the GEMM's thread split may be chosen by timing): errors scale with the logits (~10;
    # a logit near 0 was off by 1.1e-5 once, with the absolute tolerance 1e-5)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(want).max()))


# the CUDA device (no ReLU epilogue: conv, then the ReLU in place) -------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_conv2d_relu_on_the_gpu_matches_the_cpu(dtype):
    gpu = mn.cuda()
    x, w, b, geo = arrays((2, 3, 7, 6, 4, 3, 2, 1, 1, 1), np.dtype(dtype))
    outs = []
    for dev in (mn.cpu(), gpu):
        xt, wt, bt = (Tensor(a, dtype=dtype, device=dev, requires_grad=True) for a in (x, w, b))
        y = MF.conv2d_relu(xt, wt, bt, **geo)
        (y * y).sum().backward()
        outs.append([y.numpy(), xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()])
    tol = 1e-4 if dtype == "float32" else 1e-10
    for c, g in zip(*outs):
        np.testing.assert_allclose(g, c, rtol=tol, atol=tol)
