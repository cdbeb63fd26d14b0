"""nn layers, losses and functional forms against PyTorch (CPU, float64): values and first
gradients, every reduction, ignore_index, label_smoothing, and bad arguments."""
import numpy as np
import pytest

import mininet
import mininet.nn as nn
import mininet.nn.functional as F
from mininet import Tensor

torch = pytest.importorskip("torch")
tnn, TF = torch.nn, torch.nn.functional
F64 = "float64"


def r(*shape, low=-2.0, high=2.0, seed=0):
    return np.random.default_rng(seed + sum(shape)).uniform(low, high, shape)


def ours(a, grad=True):
    return Tensor(a, dtype=F64, requires_grad=grad)


def theirs(a, grad=True):
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


def close(a, b, tol=1e-9):
    a = a.numpy() if hasattr(a, "numpy") and not isinstance(a, torch.Tensor) else a
    b = b.detach().numpy() if isinstance(b, torch.Tensor) else b
    assert np.shape(a) == np.shape(b), (np.shape(a), np.shape(b))
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


def same_line(our_fn, torch_fn, *arrays, seed=1):
    """our_fn and torch_fn on the same float64 inputs: equal values and equal gradients of
    a random weighting of the output with respect to every input."""
    xs, ts = [ours(a) for a in arrays], [theirs(a) for a in arrays]
    out, ref = our_fn(*xs), torch_fn(*ts)
    close(out, ref)
    g = np.random.default_rng(seed).standard_normal(tuple(ref.shape))
    (out * Tensor(g, dtype=F64)).sum().backward()
    (ref * torch.tensor(g)).sum().backward()
    for x, t in zip(xs, ts):
        close(x.grad, t.grad)
    return out, ref


# activations: module and functional ---------------------------------------------------------
ACTIVATIONS = [
    ("relu", lambda: nn.ReLU(), lambda: tnn.ReLU(), r(3, 4) + 0.01),
    ("gelu", lambda: nn.GELU(), lambda: tnn.GELU(), r(3, 4, low=-4, high=4)),
    ("gelu_tanh", lambda: nn.GELU("tanh"), lambda: tnn.GELU("tanh"), r(3, 4, low=-4, high=4)),
    ("silu", lambda: nn.SiLU(), lambda: tnn.SiLU(), r(3, 4)),
    ("leaky_relu", lambda: nn.LeakyReLU(0.2), lambda: tnn.LeakyReLU(0.2), r(3, 4) + 0.01),
    ("elu", lambda: nn.ELU(1.3), lambda: tnn.ELU(1.3), r(3, 4, low=-5, high=5)),
    ("elu_large", lambda: nn.ELU(), lambda: tnn.ELU(), np.array([-800.0, -1.0, 0.5, 800.0])),
    ("softplus", lambda: nn.Softplus(), lambda: tnn.Softplus(), r(3, 4, low=-30, high=30)),
    ("softplus_beta", lambda: nn.Softplus(2.0, 5.0), lambda: tnn.Softplus(2.0, 5.0),
     r(3, 4, low=-6, high=6)),
    ("softmax", lambda: nn.Softmax(dim=0), lambda: tnn.Softmax(dim=0), r(3, 4)),
    ("softmax_last", lambda: nn.Softmax(dim=-1), lambda: tnn.Softmax(dim=-1), r(2, 3, 4)),
    ("softmax_implicit", lambda: nn.Softmax(), lambda: tnn.Softmax(), r(2, 3, 4)),
    ("log_softmax", lambda: nn.LogSoftmax(1), lambda: tnn.LogSoftmax(1), r(2, 3, 4) * 10),
    ("tanh", lambda: nn.Tanh(), lambda: tnn.Tanh(), r(3, 4)),
    ("sigmoid", lambda: nn.Sigmoid(), lambda: tnn.Sigmoid(), r(3, 4)),
]


@pytest.mark.filterwarnings("ignore:Implicit dimension choice")   # torch's, for Softmax()
@pytest.mark.parametrize("name,mine,torchs,x", ACTIVATIONS, ids=[a[0] for a in ACTIVATIONS])
def test_activation_modules(name, mine, torchs, x):
    m, t = mine(), torchs()
    same_line(m, t, x)
    assert repr(m) == repr(t)


FUNCTIONAL = [
    ("elu", lambda L, x: _F(L).elu(x, alpha=0.7), r(3, 4, low=-4, high=4)),
    ("silu", lambda L, x: _F(L).silu(x), r(3, 4)),
    ("gelu", lambda L, x: _F(L).gelu(x), r(3, 4)),
    ("leaky_relu", lambda L, x: _F(L).leaky_relu(x, 0.3), r(3, 4) + 0.01),
    ("softplus", lambda L, x: _F(L).softplus(x, beta=0.5, threshold=3.0), r(3, 4, low=-9, high=9)),
    ("group_norm", lambda L, x: _F(L).group_norm(x, 2), r(2, 4, 3, 3)),
    ("group_norm_3d", lambda L, x: _F(L).group_norm(x, 3, eps=1e-3), r(2, 6, 5)),
    ("layer_norm", lambda L, x: _F(L).layer_norm(x, (3, 4)), r(2, 3, 4)),
]


def _F(L):
    return TF if L is torch else F


@pytest.mark.parametrize("name,line,x", FUNCTIONAL, ids=[f[0] for f in FUNCTIONAL])
def test_functional(name, line, x):
    same_line(lambda a: line(mininet, a), lambda a: line(torch, a), x)


def test_functional_has_torchs_names():
    names = ("relu gelu silu leaky_relu elu softplus softmax log_softmax cross_entropy nll_loss "
             "mse_loss l1_loss smooth_l1_loss binary_cross_entropy binary_cross_entropy_with_logits "
             "linear conv2d max_pool2d avg_pool2d dropout dropout2d layer_norm group_norm embedding "
             "pad one_hot").split()
    assert [n for n in names if not callable(getattr(F, n, None))] == []


def test_group_norm_with_affine_and_its_gradients():
    x, w, b = r(2, 4, 3, 3), r(4, seed=5), r(4, seed=6)
    same_line(lambda a, c, d: F.group_norm(a, 2, c, d), lambda a, c, d: TF.group_norm(a, 2, c, d),
              x, w, b)


# shape layers -------------------------------------------------------------------------------
@pytest.mark.parametrize("args", [(), (0, 1), (1, 2), (0, -1), (2, 3)])
def test_flatten(args):
    m, t = nn.Flatten(*args), tnn.Flatten(*args)
    same_line(m, t, r(2, 3, 4, 5))
    assert repr(m) == repr(t)


@pytest.mark.parametrize("dim,sizes", [(1, (2, 3)), (-1, (2, -1)), (0, (1, 2)), (2, (4,))])
def test_unflatten(dim, sizes):
    m, t = nn.Unflatten(dim, sizes), tnn.Unflatten(dim, sizes)
    same_line(m, t, r(2, 6, 4))
    assert repr(m) == repr(t)


def test_unflatten_refuses_sizes_that_do_not_fit():
    with pytest.raises(ValueError, match="cannot be split"):
        nn.Unflatten(1, (4, 2))(Tensor(r(2, 6)))
    with pytest.raises(ValueError, match="unflattened_size"):
        nn.Unflatten(1, (0, 2))


# normalisation ------------------------------------------------------------------------------
def twin_params(m, t):
    """Give m and t the same random parameters (float64); return their pairs."""
    pairs = []
    for k, (name, p) in enumerate(m.named_parameters()):
        value = np.random.default_rng(k).standard_normal(p.shape)
        p.data = mininet.NDArray(value, dtype=F64)
        tp = dict(t.named_parameters())[name]
        with torch.no_grad():
            tp.copy_(torch.tensor(value))
        pairs.append((p, tp))
    assert len(pairs) == len(list(t.parameters()))
    return pairs


NORMS = [
    ("layer_norm", lambda: nn.LayerNorm(4, dtype=F64), lambda: tnn.LayerNorm(4).double(), r(3, 4)),
    ("layer_norm_2d", lambda: nn.LayerNorm((3, 4), eps=1e-3, dtype=F64),
     lambda: tnn.LayerNorm((3, 4), eps=1e-3).double(), r(2, 3, 4)),
    ("layer_norm_no_bias", lambda: nn.LayerNorm([4], bias=False, dtype=F64),
     lambda: tnn.LayerNorm([4], bias=False).double(), r(2, 5, 4)),
    ("layer_norm_no_affine", lambda: nn.LayerNorm(4, elementwise_affine=False, dtype=F64),
     lambda: tnn.LayerNorm(4, elementwise_affine=False).double(), r(3, 4)),
    ("group_norm", lambda: nn.GroupNorm(2, 4, dtype=F64), lambda: tnn.GroupNorm(2, 4).double(),
     r(2, 4, 3, 3)),
    ("group_norm_one", lambda: nn.GroupNorm(1, 4, dtype=F64), lambda: tnn.GroupNorm(1, 4).double(),
     r(3, 4, 5)),
    ("group_norm_each", lambda: nn.GroupNorm(4, 4, eps=1e-2, dtype=F64),
     lambda: tnn.GroupNorm(4, 4, eps=1e-2).double(), r(2, 4, 2, 3)),
    ("group_norm_no_affine", lambda: nn.GroupNorm(2, 6, affine=False, dtype=F64),
     lambda: tnn.GroupNorm(2, 6, affine=False).double(), r(2, 6, 4)),
]


@pytest.mark.parametrize("name,mine,torchs,x", NORMS, ids=[n[0] for n in NORMS])
def test_norm_layers_values_and_gradients(name, mine, torchs, x):
    m, t = mine(), torchs()
    pairs = twin_params(m, t)
    same_line(m, t, x)
    for p, tp in pairs:
        close(p.grad, tp.grad)
    assert repr(m) == repr(t)
    assert list(m.state_dict()) == list(t.state_dict())


def test_norm_layers_start_as_torchs():
    m, t = nn.GroupNorm(3, 6), tnn.GroupNorm(3, 6)
    close(m.weight, t.weight)
    close(m.bias, t.bias)
    ln = nn.LayerNorm((2, 3))
    assert ln.weight.shape == (2, 3) and ln.weight.requires_grad and ln.bias.numpy().sum() == 0


# dropout ------------------------------------------------------------------------------------
def test_dropout2d_drops_whole_channels():
    mininet.manual_seed(0)
    x = Tensor(np.ones((8, 16, 3, 2)), requires_grad=True)
    m = nn.Dropout2d(0.25)
    y = m(x).numpy()
    planes = y.reshape(8, 16, -1)
    assert np.all(planes.std(-1) == 0)                    # each (n, c) plane one value
    kept = planes[:, :, 0]
    assert set(np.unique(kept)) == {0.0, 1 / 0.75}
    assert 0.5 < (kept > 0).mean() < 0.95
    m(x).sum().backward()                                   # the same mask scales the gradient
    np.testing.assert_array_equal(np.unique(x.grad.numpy()), [0.0, 1 / 0.75])
    assert m.eval()(x) is x
    assert repr(m) == repr(tnn.Dropout2d(0.25))


def test_dropout2d_three_dims_and_edges():
    mininet.manual_seed(1)
    y = F.dropout2d(Tensor(np.ones((4, 6, 5))), 0.5).numpy()
    assert np.all(y.std(-1) == 0) and set(np.unique(y)) <= {0.0, 2.0}
    x = Tensor(r(2, 3, 2, 2))
    assert F.dropout2d(x, 0.0) is x
    assert np.all(F.dropout2d(x, 1.0).numpy() == 0)
    # 2-D (N, C): torch 2.13 warns (deprecated) and drops each element (feature_dropout)
    with pytest.warns(UserWarning, match="2-D input to dropout2d"):
        y = F.dropout2d(Tensor(np.ones((40, 50))), 0.5).numpy()
    assert set(np.unique(y)) == {0.0, 2.0} and len(set(map(tuple, y))) > 1
    assert not np.all(y == y[:, :1])   # not whole rows: element-wise
    with pytest.warns(UserWarning, match="1-D input"), pytest.raises(ValueError, match="dropout2d"):
        F.dropout2d(Tensor(r(4)), 0.5)


def test_dropout_p_one_and_its_repr():
    m = nn.Dropout(1.0)
    assert np.all(m(Tensor(r(3, 4))).numpy() == 0)
    assert repr(nn.Dropout(0.3)) == repr(tnn.Dropout(0.3))


# losses -------------------------------------------------------------------------------------
REDUCTIONS = ["mean", "sum", "none"]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name,mine,torchs,arrays", [
    ("mse", lambda red: nn.MSELoss(reduction=red), lambda red: tnn.MSELoss(reduction=red),
     [r(3, 4), r(3, 4, seed=9)]),
    ("l1", lambda red: nn.L1Loss(reduction=red), lambda red: tnn.L1Loss(reduction=red),
     [r(3, 4), r(3, 4, seed=9)]),
    ("smooth_l1", lambda red: nn.SmoothL1Loss(reduction=red),
     lambda red: tnn.SmoothL1Loss(reduction=red), [r(3, 4) * 2, r(3, 4, seed=9)]),
    ("smooth_l1_beta", lambda red: nn.SmoothL1Loss(reduction=red, beta=0.3),
     lambda red: tnn.SmoothL1Loss(reduction=red, beta=0.3), [r(3, 4), r(3, 4, seed=9)]),
    ("smooth_l1_beta0", lambda red: nn.SmoothL1Loss(reduction=red, beta=0.0),
     lambda red: tnn.SmoothL1Loss(reduction=red, beta=0.0), [r(3, 4), r(3, 4, seed=9)]),
    ("bce", lambda red: nn.BCELoss(reduction=red), lambda red: tnn.BCELoss(reduction=red),
     [r(3, 4, low=0.05, high=0.95), r(3, 4, low=0, high=1, seed=9)]),
    ("bce_logits", lambda red: nn.BCEWithLogitsLoss(reduction=red),
     lambda red: tnn.BCEWithLogitsLoss(reduction=red),
     [r(3, 4, low=-60, high=60), r(3, 4, low=0, high=1, seed=9)]),
], ids=lambda v: v if isinstance(v, str) else "")
def test_pointwise_losses(name, mine, torchs, arrays, reduction):
    m, t = mine(reduction), torchs(reduction)
    same_line(m, t, *arrays)
    assert repr(m) == repr(t)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_weights_and_pos_weight(reduction):
    w, pw = r(4, low=0.5, high=2, seed=3), r(4, low=0.5, high=3, seed=4)
    x, y = r(3, 4, low=-30, high=30), r(3, 4, low=0, high=1, seed=9)
    m = nn.BCEWithLogitsLoss(weight=Tensor(w, dtype=F64), reduction=reduction,
                             pos_weight=Tensor(pw, dtype=F64))
    t = tnn.BCEWithLogitsLoss(weight=torch.tensor(w), reduction=reduction,
                              pos_weight=torch.tensor(pw))
    same_line(m, t, x, y)
    assert set(m.state_dict()) == set(t.state_dict()) == {"weight", "pos_weight"}
    p = r(3, 4, low=0.05, high=0.95)
    same_line(nn.BCELoss(weight=Tensor(w, dtype=F64), reduction=reduction),
              tnn.BCELoss(weight=torch.tensor(w), reduction=reduction), p, y)


def test_bce_with_logits_is_stable_far_out():
    x = ours(np.array([-1000.0, -50.0, 50.0, 1000.0]))
    y = Tensor(np.array([1.0, 0.0, 1.0, 0.0]), dtype=F64)
    loss = nn.BCEWithLogitsLoss(reduction="none")(x, y)
    ref = TF.binary_cross_entropy_with_logits(theirs(x.numpy()), torch.tensor(y.numpy()),
                                              reduction="none")
    close(loss, ref)
    assert np.all(np.isfinite(loss.numpy()))


LABELS = np.array([0, 3, 1, 2, 3])


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kw", [{}, {"ignore_index": 1}, {"ignore_index": 3, "weight": True},
                                {"weight": True}])
def test_nll_loss(reduction, kw):
    w = r(4, low=0.2, high=2, seed=7)
    ours_kw = dict(kw, weight=Tensor(w, dtype=F64)) if kw.get("weight") else kw
    torch_kw = dict(kw, weight=torch.tensor(w)) if kw.get("weight") else kw
    m, t = nn.NLLLoss(reduction=reduction, **ours_kw), tnn.NLLLoss(reduction=reduction, **torch_kw)
    same_line(lambda x: m(x.log_softmax(1), Tensor(LABELS)),
              lambda x: t(x.log_softmax(1), torch.tensor(LABELS)), r(5, 4))


CE_CASES = [
    {}, {"label_smoothing": 0.2}, {"ignore_index": 3}, {"ignore_index": 3, "label_smoothing": 0.1},
    {"weight": True}, {"weight": True, "label_smoothing": 0.3},
    {"weight": True, "label_smoothing": 0.3, "ignore_index": 0},
]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kw", CE_CASES, ids=[str(sorted(c)) for c in CE_CASES])
def test_cross_entropy_module(reduction, kw):
    w = r(4, low=0.2, high=2, seed=8)
    ours_kw = dict(kw, weight=Tensor(w, dtype=F64)) if kw.get("weight") else kw
    torch_kw = dict(kw, weight=torch.tensor(w)) if kw.get("weight") else kw
    m = nn.CrossEntropyLoss(reduction=reduction, **ours_kw)
    t = tnn.CrossEntropyLoss(reduction=reduction, **torch_kw)
    same_line(lambda x: m(x, Tensor(LABELS)), lambda x: t(x, torch.tensor(LABELS)), r(5, 4) * 3)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_spatial_and_probabilities(reduction):
    y = np.array([[[0, 2], [1, -100]], [[2, 2], [0, 1]]])
    m, t = nn.CrossEntropyLoss(reduction=reduction), tnn.CrossEntropyLoss(reduction=reduction)
    same_line(lambda x: m(x, Tensor(y)), lambda x: t(x, torch.tensor(y)), r(2, 3, 2, 2))
    probs = np.random.default_rng(2).dirichlet(np.ones(4), size=5)
    m = nn.CrossEntropyLoss(reduction=reduction, label_smoothing=0.1)
    t = tnn.CrossEntropyLoss(reduction=reduction, label_smoothing=0.1)
    same_line(lambda x: m(x, Tensor(probs, dtype=F64)), lambda x: t(x, torch.tensor(probs)), r(5, 4))


def test_cross_entropy_defaults_keep_the_fused_op():
    x = ours(r(5, 4) * 3)
    loss = nn.CrossEntropyLoss()(x, Tensor(LABELS))
    assert type(loss.op).__name__ == "SoftmaxCrossEntropy"
    close(loss, TF.cross_entropy(theirs(x.numpy()), torch.tensor(LABELS)))
    # needle's float labels still take that path
    assert type(nn.SoftmaxLoss()(x, Tensor(LABELS.astype(np.float32))).op).__name__ == \
        "SoftmaxCrossEntropy"
    # a label equal to ignore_index is skipped, as torch, not refused
    y = np.array([0, -100, 1, 2, -100])
    same_line(lambda a: nn.CrossEntropyLoss()(a, Tensor(y)),
              lambda a: tnn.CrossEntropyLoss()(a, torch.tensor(y)), r(5, 4))
    assert type(nn.CrossEntropyLoss(label_smoothing=0.1)(x, Tensor(LABELS)).op).__name__ != \
        "SoftmaxCrossEntropy"


# bad arguments ------------------------------------------------------------------------------
@pytest.mark.parametrize("build,words", [
    (lambda: nn.Linear(0, 3), "in_features"),
    (lambda: nn.Linear(3, 0), "out_features"),
    (lambda: nn.Linear(2.5, 3), "in_features"),
    (lambda: nn.Linear(True, 3), "in_features"),
    (lambda: nn.Conv2d(0, 4, 3), "in_channels"),
    (lambda: nn.Conv2d(3, -1, 3), "out_channels"),
    (lambda: nn.Conv2d(3, 4, 0), "kernel_size"),
    (lambda: nn.Conv2d(3, 4, (3, 0)), "kernel_size"),
    (lambda: nn.Conv2d(3, 4, 3, stride=0), "stride"),
    (lambda: nn.Conv2d(3, 4, 3, padding=-1), "padding"),
    (lambda: nn.Conv2d(3, 4, 3, dilation=0), "dilation"),
    (lambda: nn.Conv2d(3, 4, 3, groups=0), "groups"),
    (lambda: nn.Embedding(0, 3), "num_embeddings"),
    (lambda: nn.Embedding(5, -2), "embedding_dim"),
    (lambda: nn.Dropout(-0.1), "p"),
    (lambda: nn.Dropout(1.5), "p"),
    (lambda: nn.Dropout2d(2), "p"),
    (lambda: nn.LayerNorm(4, eps=0), "eps"),
    (lambda: nn.LayerNorm(4, eps=-1e-5), "eps"),
    (lambda: nn.LayerNorm(0), "normalized_shape"),
    (lambda: nn.GroupNorm(3, 4), "divisible"),
    (lambda: nn.GroupNorm(0, 4), "num_groups"),
    (lambda: nn.GroupNorm(2, 4, eps=0.0), "eps"),
    (lambda: nn.BatchNorm1d(0), "num_features"),
    (lambda: nn.GELU("fast"), "approximate"),
    (lambda: nn.MSELoss(reduction="avg"), "reduction"),
    (lambda: nn.CrossEntropyLoss(reduction="batchmean"), "reduction"),
    (lambda: nn.CrossEntropyLoss(label_smoothing=1.5), "label_smoothing"),
    (lambda: nn.SmoothL1Loss(beta=-1), "beta"),
    (lambda: nn.Softplus(beta=0), "beta"),
])
def test_bad_arguments_are_value_errors_naming_the_argument(build, words):
    with pytest.raises(ValueError, match=words):
        build()


def test_bad_argument_types():
    with pytest.raises(TypeError, match="weight"):
        nn.CrossEntropyLoss(weight=[1.0, 2.0])
    with pytest.raises(TypeError, match="ignore_index"):
        nn.NLLLoss(ignore_index=1.5)
    with pytest.raises(TypeError, match="start_dim"):
        nn.Flatten(start_dim="1")
    with pytest.raises(ValueError, match="groups"):
        nn.Conv2d(3, 4, 3, groups=2)


def test_linear_and_conv_work_after_the_checks():
    lin = nn.Linear(np.int64(3), 2)
    assert lin(Tensor(r(4, 3), dtype="float32")).shape == (4, 2)
    conv = nn.Conv2d(2, 4, (3, 1), stride=(2, 1), padding=(1, 0), bias=False)
    assert conv(Tensor(r(1, 2, 5, 5), dtype="float32")).shape == (1, 4, 3, 5)
    assert repr(conv) == repr(tnn.Conv2d(2, 4, (3, 1), stride=(2, 1), padding=(1, 0), bias=False))
