"""mininet.nn.init: torch.nn.init's in-place initialisers on needle's layouts (statistics
against the formulas, the same object filled, still trainable), and calculate_gain."""
import math

import numpy as np
import pytest

import mininet
import mininet.nn as nn
from mininet import Tensor
from mininet.nn import init

torch = pytest.importorskip("torch")


def values(t):
    return t.numpy().astype(np.float64)


def fresh(*shape):
    return nn.Parameter(np.full(shape, 7.0, np.float32))


def filled_in_place(fn, p, *args, **kw):
    """fn(p, ...) returns p itself, changed, still a trainable Parameter with no graph."""
    view = p.data   # shares p's memory: an in-place fill shows through it
    out = fn(p, *args, **kw)
    assert out is p and isinstance(p, nn.Parameter) and p.requires_grad and p.op is None
    assert not np.all(values(p) == 7.0)
    np.testing.assert_array_equal(view.numpy(), p.numpy())
    return values(p)


def test_fans_follow_needles_layouts():
    lin = nn.Linear(300, 40)                      # weight (in, out) = (300, 40)
    assert init._calculate_fan_in_and_fan_out(lin.weight) == (300, 40)
    conv = nn.Conv2d(6, 10, 3)                    # weight (out, in, kh, kw), as torch
    assert init._calculate_fan_in_and_fan_out(conv.weight) == (54, 90)
    assert init._calculate_fan_in_and_fan_out(conv.weight) == \
        torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(10, 6, 3, 3))
    with pytest.raises(ValueError, match="2 or more dims"):
        init.xavier_uniform_(fresh(5))


@pytest.mark.parametrize("mode,fan", [("fan_in", 400), ("fan_out", 300)])
def test_kaiming_uniform_bound_and_std(mode, fan):
    p = fresh(400, 300)                           # a Linear(400, 300) weight
    v = filled_in_place(init.kaiming_uniform_, p, a=0.1, mode=mode)
    bound = math.sqrt(2.0 / (1 + 0.1 ** 2)) * math.sqrt(3.0 / fan)
    assert np.abs(v).max() <= bound and np.abs(v).max() > 0.99 * bound
    assert v.std() == pytest.approx(bound / math.sqrt(3), rel=0.02)
    # torch's twin is the transposed (out, in) tensor: the same bound there
    t = torch.nn.init.kaiming_uniform_(torch.empty(300, 400), a=0.1, mode=mode)
    assert t.abs().max().item() == pytest.approx(np.abs(v).max(), rel=0.01)


@pytest.mark.parametrize("nonlinearity", ["relu", "leaky_relu", "tanh", "linear", "selu"])
def test_kaiming_normal_std(nonlinearity):
    v = filled_in_place(init.kaiming_normal_, fresh(500, 200), nonlinearity=nonlinearity)
    std = init.calculate_gain(nonlinearity) / math.sqrt(500)
    assert v.std() == pytest.approx(std, rel=0.02) and abs(v.mean()) < 0.02 * std * 10
    # 73,728 draws: the std's own spread is 0.26%, not 2.1% (a 16 x 8 x 3 x 3 weight's
    # 1,152 draws missed the 5% tolerance now and then)
    conv = nn.Conv2d(64, 128, 3)
    v = filled_in_place(init.kaiming_normal_, conv.weight, mode="fan_out", nonlinearity="relu")
    assert v.std() == pytest.approx(math.sqrt(2.0 / (128 * 9)), rel=0.05)


def test_xavier():
    v = filled_in_place(init.xavier_uniform_, fresh(300, 500), gain=2.0)
    a = 2.0 * math.sqrt(6.0 / 800)
    assert np.abs(v).max() <= a and np.abs(v).max() > 0.99 * a
    v = filled_in_place(init.xavier_normal_, fresh(300, 500))
    assert v.std() == pytest.approx(math.sqrt(2.0 / 800), rel=0.02)


def test_uniform_normal_constant_eye():
    v = filled_in_place(init.uniform_, fresh(200, 100), -3.0, -1.0)
    assert v.min() >= -3 and v.max() < -1 and v.mean() == pytest.approx(-2, abs=0.02)
    v = filled_in_place(init.normal_, fresh(200, 100), mean=5.0, std=0.5)
    # 20,000 draws: the mean's spread is 0.0035
    assert v.mean() == pytest.approx(5, abs=0.02) and v.std() == pytest.approx(0.5, rel=0.02)
    assert np.all(filled_in_place(init.constant_, fresh(3, 2), 0.25) == 0.25)
    assert np.all(filled_in_place(init.zeros_, fresh(4)) == 0)
    assert np.all(filled_in_place(init.ones_, fresh(2, 2, 2)) == 1)
    np.testing.assert_array_equal(filled_in_place(init.eye_, fresh(3, 5)), np.eye(3, 5))
    with pytest.raises(ValueError, match="2-D"):
        init.eye_(fresh(2, 2, 2))


@pytest.mark.parametrize("shape", [(40, 10), (10, 40), (6, 3, 2, 2)])
def test_orthogonal(shape):
    v = filled_in_place(init.orthogonal_, fresh(*shape), gain=1.5).reshape(shape[0], -1)
    small = v @ v.T if v.shape[0] <= v.shape[1] else v.T @ v
    np.testing.assert_allclose(small, 2.25 * np.eye(len(small)), atol=1e-5)


def test_calculate_gain_is_torchs():
    for name in ["linear", "conv2d", "conv_transpose3d", "sigmoid", "tanh", "relu", "selu",
                 "leaky_relu"]:
        assert init.calculate_gain(name) == pytest.approx(torch.nn.init.calculate_gain(name))
    assert init.calculate_gain("leaky_relu", 0.2) == pytest.approx(
        torch.nn.init.calculate_gain("leaky_relu", 0.2))
    with pytest.raises(ValueError, match="unsupported nonlinearity"):
        init.calculate_gain("swish")
    with pytest.raises(ValueError, match="slope"):
        init.calculate_gain("leaky_relu", "big")


def test_fills_work_while_grad_is_on_and_record_nothing():
    layer = nn.Linear(4, 3)
    init.kaiming_uniform_(layer.weight, nonlinearity="relu")
    init.zeros_(layer.bias)
    out = layer(Tensor(np.ones((2, 4), np.float32))).sum()
    out.backward()
    assert layer.weight.grad.shape == (4, 3) and np.all(layer.bias.numpy() == 0)


def test_manual_seed_repeats_and_generator_is_used():
    mininet.manual_seed(5)
    a = values(init.normal_(fresh(4, 4)))
    mininet.manual_seed(5)
    np.testing.assert_array_equal(values(init.normal_(fresh(4, 4))), a)
    g1, g2 = np.random.default_rng(1), np.random.default_rng(1)
    np.testing.assert_array_equal(values(init.uniform_(fresh(3), generator=g1)),
                                  values(init.uniform_(fresh(3), generator=g2)))


def test_float64_and_plain_tensors():
    t = Tensor(np.zeros((50, 60)), dtype="float64")
    assert init.xavier_uniform_(t) is t and t.dtype == np.float64 and np.any(values(t) != 0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="mode"):
        init.kaiming_uniform_(fresh(3, 3), mode="fan_avg")
    with pytest.raises(TypeError, match="Tensor"):
        init.zeros_(np.zeros(3))
    with pytest.raises(ValueError, match="std"):
        init.normal_(fresh(3), std=-1.0)
    with pytest.raises(ValueError, match="a must be <= b"):
        init.uniform_(fresh(3), 1.0, 0.0)


def test_needles_initialisers_stay():
    w = mininet.init.xavier_uniform(30, 20)
    assert w.shape == (30, 20) and np.abs(w.numpy()).max() <= math.sqrt(6 / 50)
    w = mininet.init.kaiming_uniform(30, 20, nonlinearity="leaky_relu")
    assert np.abs(w.numpy()).max() <= init.calculate_gain("leaky_relu") * math.sqrt(3 / 30)
    assert nn.init is init and mininet.init.calculate_gain is init.calculate_gain
