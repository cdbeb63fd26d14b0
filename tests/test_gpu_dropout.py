"""Dropout masks from the counter-based generator (cuda_src/nn.cu: dropout_mask_*,
Philox-4x32-10): bit for bit against a numpy Philox written here from the published
algorithm, the keep fraction, reproducibility from manual_seed, and nn.checkpoint's replay.
The CPU keeps its masks (mininet's numpy generator), pinned by the one unmarked test."""
import numpy as np
import pytest

import mininet
from mininet import init, nn
from mininet.autograd import Tensor
from mininet.ndarray import NDArray

# Philox-4x32-10 (Salmon, Moraes, Dror, Shaw: "Parallel random numbers: as easy as 1, 2, 3",
# SC'11): the multipliers, the Weyl key increments, 10 rounds.
M0, M1 = 0xD2511F53, 0xCD9E8D57
W0, W1 = 0x9E3779B9, 0xBB67AE85
MASK32 = 0xFFFFFFFF
# Random123's tests/kat_vectors, the three "philox4x32 10" lines: counter, key, result.
KAT = [((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
       ((MASK32,) * 4, (MASK32,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
       ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))]


def philox4x32_10(ctr, key):
    """The four output words for counters ctr (four arrays of 32-bit words) and key (k0, k1).
    A round: (hi0, lo0) = M0 * x0, (hi1, lo1) = M1 * x2, x = (hi1 ^ x1 ^ k0, lo1,
    hi0 ^ x3 ^ k1, lo0); the key grows by (W0, W1) between rounds."""
    x0, x1, x2, x3 = (np.asarray(c, dtype=np.uint64) & MASK32 for c in ctr)
    k0, k1 = key
    for _ in range(10):
        p0, p1 = np.uint64(M0) * x0, np.uint64(M1) * x2      # exact: both factors < 2^32
        x0, x1, x2, x3 = ((p1 >> 32) ^ x1 ^ np.uint64(k0), p1 & MASK32,
                          (p0 >> 32) ^ x3 ^ np.uint64(k1), p0 & MASK32)
        k0, k1 = (k0 + W0) & MASK32, (k1 + W1) & MASK32
    return x0, x1, x2, x3


def reference_mask(n, keep, scale, seed, counter, dtype):
    """The kernel's contract: element e takes word e % 4 of Philox((counter + e // 4) mod 2^64
    as the low two counter words, key seed), u = (word >> 8) / 2^24, mask = scale if u < keep."""
    e = np.arange(n, dtype=np.uint64)
    ctr = np.full(n, counter, dtype=np.uint64) + e // np.uint64(4)    # wraps mod 2^64
    zero = np.zeros(n, dtype=np.uint64)
    words = np.stack(philox4x32_10((ctr & MASK32, ctr >> np.uint64(32), zero, zero),
                                   (seed & MASK32, seed >> 32)))
    bits = np.take_along_axis(words, (e % np.uint64(4)).astype(np.intp)[None], 0)[0]
    u = (bits >> np.uint64(8)).astype(np.float64) / 2.0 ** 24
    return np.where(u < keep, dtype(scale), dtype(0)).astype(dtype)


@pytest.fixture
def gpu():
    return mininet.cuda()


def device_mask(gpu, n, keep, seed, counter, dtype):
    mask = NDArray.make((n,), device=gpu, dtype=np.dtype(dtype))
    gpu.dropout_mask(mask, keep, 1.0 / keep, seed, counter)
    return mask.numpy()


@pytest.mark.parametrize("ctr,key,want", KAT)
def test_the_numpy_philox_gives_random123s_known_answers(ctr, key, want):
    got = philox4x32_10([np.array([c]) for c in ctr], key)
    assert [int(w[0]) for w in got] == list(want)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,keep,seed,counter", [
    (1, 0.5, 0, 0),
    (4099, 0.9, 0x0123456789ABCDEF, 7),                 # a tail that is not a whole counter
    (3000, 0.3, 2 ** 64 - 1, 2 ** 32 - 300),            # the low counter word carries
    (2001, 0.75, 0xDEADBEEF00C0FFEE, 2 ** 64 - 100)])   # the counter wraps mod 2^64
def test_the_kernels_masks_equal_the_reference_bit_for_bit(gpu, dtype, n, keep, seed, counter):
    got = device_mask(gpu, n, keep, seed, counter, dtype)
    want = reference_mask(n, keep, 1.0 / keep, seed, counter, dtype)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, want)


@pytest.mark.gpu
@pytest.mark.parametrize("keep", [0.1, 0.5, 0.8])
def test_the_keep_fraction_is_right_in_every_lane(gpu, keep):
    """Over 2^18 draws the kept fraction is within 5 standard deviations of keep, overall and
    in each of the four words of a Philox output; kept values are exactly 1/keep."""
    n = 1 << 18
    mask = device_mask(gpu, n, keep, 12345, 0, np.float32)
    assert set(np.unique(mask)) <= {np.float32(0), np.float32(1 / keep)}
    kept = mask != 0
    sd = np.sqrt(keep * (1 - keep) / n)
    assert abs(kept.mean() - keep) < 5 * sd
    for lane in range(4):
        assert abs(kept[lane::4].mean() - keep) < 10 * sd, lane
    # neighbouring elements (the words of one counter, and the next counter) are uncorrelated
    k = kept.astype(np.float64) - kept.mean()
    for lag in (1, 4):
        assert abs((k[:-lag] * k[lag:]).mean()) / k.var() < 5 / np.sqrt(n)


@pytest.mark.gpu
def test_dropout_on_cuda_uses_the_kernel_and_repeats_from_a_seed(gpu, monkeypatch):
    calls = []
    real = type(gpu).dropout_mask
    monkeypatch.setattr(type(gpu), "dropout_mask",
                        lambda self, *a: calls.append(a[1:]) or real(self, *a))
    drop = nn.Dropout(0.3)
    x = Tensor(np.ones((64, 50), dtype=np.float32), device=gpu)
    mininet.manual_seed(5)
    a, b = drop(x).numpy(), drop(x).numpy()
    mininet.manual_seed(5)
    a2, b2 = drop(x).numpy(), drop(x).numpy()
    np.testing.assert_array_equal(a, a2)
    np.testing.assert_array_equal(b, b2)
    assert (a != b).any()                        # a fresh key per mask
    assert len(calls) == 4 and calls[0] == calls[2] and calls[0] != calls[1]
    keep, scale, seed, counter = calls[0]
    assert keep == pytest.approx(0.7) and scale == pytest.approx(1 / 0.7)
    # the key is two words of mininet's generator, so manual_seed and saved states replay it
    words = np.random.default_rng(5).integers(0, 2 ** 64, size=2, dtype=np.uint64)
    assert (seed, counter) == tuple(int(w) for w in words)
    np.testing.assert_array_equal(a.reshape(-1),
                                  reference_mask(a.size, keep, scale, seed, counter, np.float32))
    drop.eval()
    assert drop(x) is x


@pytest.mark.gpu
def test_checkpointed_dropout_gives_the_plain_runs_gradients_on_cuda(gpu, monkeypatch):
    """nn.checkpoint replays the generator in backward: the recomputed masks are the forward's,
    so loss and every gradient equal the plain run's, bit for bit."""
    calls = []
    real = type(gpu).dropout_mask
    monkeypatch.setattr(type(gpu), "dropout_mask",
                        lambda self, *a: calls.append(a[2:]) or real(self, *a))
    mininet.manual_seed(0)
    blocks = [nn.Sequential(nn.Linear(6, 6, dtype="float64"), nn.Tanh(), nn.Dropout(0.4),
                            nn.Linear(6, 6, dtype="float64"), nn.ReLU()).to(gpu)
              for _ in range(3)]
    x = np.random.default_rng(0).standard_normal((5, 6))

    def run(how):
        mininet.manual_seed(1)
        t = Tensor(x, dtype="float64", device=gpu, requires_grad=True)
        h = t
        for b in blocks:
            h = how(b, h)
        loss = (h * h).sum() + h.sum()
        loss.backward()
        out = [p.grad.numpy() for b in blocks for p in b.parameters()] + [t.grad.numpy()]
        for b in blocks:
            for p in b.parameters():
                p.grad = None
        return loss.item(), out

    plain = run(lambda b, h: b(h))
    assert len(calls) == 3
    ck = run(lambda b, h: nn.checkpoint(b, h))
    # the same keys in forward, then again in backward (the blocks in reverse order)
    assert len(calls) == 9 and calls[3:6] == calls[:3] and calls[6:] == calls[2::-1]
    assert ck[0] == plain[0]
    for a, e in zip(ck[1], plain[1]):
        np.testing.assert_array_equal(a, e)


def test_the_cpu_keeps_its_masks():
    """The CPU (no dropout capability) draws its masks from the numpy generator, as always."""
    assert not mininet.cpu().has("dropout")
    mininet.manual_seed(3)
    y = nn.Dropout(0.25)(Tensor(np.ones((7, 9), dtype=np.float32))).numpy()
    kept = np.random.default_rng(3).random((7, 9)) < 0.75
    want = kept.astype(np.float32) * np.float32(1 / 0.75)
    np.testing.assert_array_equal(y, want)
    mininet.manual_seed(3)
    m = init.dropout_mask(7, 9, keep=0.75).numpy()
    np.testing.assert_array_equal(m, want)
