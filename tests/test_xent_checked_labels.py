"""The cross-entropy path whose kernel range-checks int64 labels (capability
"xent_checks_labels"): the same values and gradients as PyTorch, and the host checks'
errors and ignore_index handling whenever a label lies outside [0, C)."""
import numpy as np
import pytest

import mininet
from mininet import nn

torch = pytest.importorskip("torch")


def _pair(n=7, c=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, c)), rng.integers(0, c, n)


def _mn_loss(z, y, **kw):
    logits = mininet.Tensor(z, requires_grad=True)
    loss = nn.CrossEntropyLoss(**kw)(logits, mininet.Tensor(y.astype(np.int64)))
    loss.backward()
    return loss.numpy(), logits.grad.numpy()


def _torch_loss(z, y, **kw):
    logits = torch.tensor(z, requires_grad=True)
    loss = torch.nn.CrossEntropyLoss(**kw)(logits, torch.tensor(y))
    loss.backward()
    return loss.detach().numpy(), logits.grad.numpy()


@pytest.mark.parametrize("kw", [{}, {"ignore_index": 2}, {"ignore_index": -100}])
def test_labels_in_range_match_torch(kw):
    z, y = _pair()
    for a, b in zip(_mn_loss(z, y, **kw), _torch_loss(z, y, **kw)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_ignored_labels_fall_back_to_the_host_path():
    z, y = _pair()
    y[[1, 4]] = -100
    for a, b in zip(_mn_loss(z, y), _torch_loss(z, y)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("bad", [5, -1, 10**9])
def test_out_of_range_label_is_named(bad):
    z, y = _pair()
    y[3] = bad
    with pytest.raises((ValueError, IndexError), match=str(bad)):
        _mn_loss(z, y)


def test_labels_written_in_place_after_forward_do_not_change_the_gradient():
    z, y = _pair()
    logits = mininet.Tensor(z, requires_grad=True)
    labels = mininet.Tensor(y.astype(np.int64))
    loss = nn.CrossEntropyLoss()(logits, labels)
    labels.cached_data.fill(0)   # in place: backward must read the labels of forward
    loss.backward()
    np.testing.assert_allclose(logits.grad.numpy(), _torch_loss(z, y)[1], rtol=1e-10,
                               atol=1e-12)
