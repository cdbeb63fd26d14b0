"""float32 exp where the kernels take it from libm / libmvec (the elementwise exp and
sigmoid; the softmax and cross-entropy rows, vectorised at 512 bits on AVX-512 builds)
against numpy's float64 exp: within libmvec's documented 4 ulp over the whole range
where the result is a normal float, the denormal range within a denormal step, NaN and
infinities as numpy's float32 exp gives them."""
import numpy as np
import pytest

import mininet
from mininet import ops
from mininet.autograd import Tensor


def _ulps(got, want64):
    """|got - want| in units of the float32 spacing at want (the exact value rounded)."""
    want = want64.astype(np.float32)
    return np.abs(got.astype(np.float64) - want64) / np.spacing(np.abs(want)).astype(np.float64)


def _exp32(x):
    return Tensor(x, dtype="float32").exp().numpy()


def test_exp_is_within_four_ulp_where_the_result_is_normal():
    r = np.random.default_rng(0)
    x = np.concatenate([np.linspace(-87.33, 88.72, 2_000_001, dtype=np.float32),
                        r.uniform(-87.33, 88.72, 1_000_000).astype(np.float32),
                        r.uniform(-1e-3, 1e-3, 100_000).astype(np.float32),
                        np.float32([0.0, -0.0, 1.0, -1.0, 0.5, 2.0, 10.0, -10.0])])
    got = _exp32(x)
    want = np.exp(x.astype(np.float64))
    err = _ulps(got, want)
    assert err.max() <= 4.0, (x[err.argmax()], got[err.argmax()], want[err.argmax()])
    assert got[np.where(x == 0)[0]].tolist() == [1.0, 1.0]   # exp(0) is exactly 1


def test_exp_edges_infinities_and_nan():
    x = np.float32([np.nan, np.inf, -np.inf, 88.7229, 88.8, 100.0, 3e38, -104.5, -200.0,
                    -3e38])
    got = _exp32(x)
    assert np.isnan(got[0])
    assert got[1:6].tolist() == [np.inf, 0.0, np.inf, np.inf, np.inf]
    assert got[6] == np.inf and got[7:].tolist() == [0.0, 0.0, 0.0]
    with np.errstate(over="ignore"):
        assert got[3] == np.exp(np.float32(88.7229))   # past FLT_MAX in float32 too


def test_exp_in_the_denormal_range_is_within_one_denormal_step():
    x = np.linspace(-103.9, -87.34, 100_001, dtype=np.float32)
    got = _exp32(x).astype(np.float64)
    want = np.exp(x.astype(np.float64))
    # the least denormal is 2^-149; a result there is rounded to a multiple of it
    assert np.abs(got - want).max() <= 2.0 ** -149
    assert (got > 0).mean() > 0.99


def test_sigmoid_float32_is_within_a_few_ulp():
    x = np.linspace(-100, 100, 400_001, dtype=np.float32)
    got = Tensor(x, dtype="float32").sigmoid().numpy()
    want = 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
    normal = want > np.finfo(np.float32).tiny
    assert _ulps(got[normal], want[normal]).max() <= 4.0
    assert got[0] < 1e-40 and got[-1] == 1.0


@pytest.mark.parametrize("spread", [1.0, 30.0, 100.0])
def test_softmax_rows_of_wide_logits_match_float64(spread):
    r = np.random.default_rng(int(spread))
    z = (r.standard_normal((37, 1001)) * spread).astype(np.float32)
    got = ops.softmax(Tensor(z, dtype="float32")).numpy()
    # the shift z - max is rounded to float32 in the kernel as in any float32 softmax
    # (an error of |z - max| 2^-24 in the exponent): the reference exponentiates it
    e = np.exp((z - z.max(1, keepdims=True)).astype(np.float64))
    want = e / e.sum(1, keepdims=True)
    normal = want > np.finfo(np.float32).tiny
    np.testing.assert_allclose(got[normal], want[normal], rtol=1e-6)
    assert np.abs(got[~normal] - want[~normal]).max(initial=0) <= 2.0 ** -148


def test_cross_entropy_of_wide_logits_matches_float64():
    r = np.random.default_rng(5)
    z = (r.standard_normal((64, 5000)) * 20).astype(np.float32)
    y = r.integers(0, 5000, 64)
    loss = mininet.nn.functional.cross_entropy(Tensor(z, dtype="float32"), Tensor(y))
    z64 = z.astype(np.float64)
    m = z64.max(1)
    want = np.mean(np.log(np.exp(z64 - m[:, None]).sum(1)) + m - z64[np.arange(64), y])
    np.testing.assert_allclose(float(loss.numpy()), want, rtol=1e-6)
