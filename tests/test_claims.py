"""Work claims (mininet_ext/_claim.h): the convolution passes' threads each take their own
contiguous share of chunks first, then the back of whichever share has the most left."""
import pytest

from mininet_ext import _omp

pytestmark = pytest.mark.skipif(not _omp.openmp_enabled(), reason="a build without OpenMP")


@pytest.mark.parametrize("n,nt", [(0, 2), (1, 2), (2, 2), (5, 1), (7, 2), (7, 3), (64, 2),
                                  (3, 4)])
def test_every_chunk_runs_once(n, nt):
    who = _omp.claims_trace(n, nt, chunk_s=1e-5)
    assert len(who) == n
    assert all(0 <= t < nt for t in who), who   # -1: never ran, -2: ran twice


def test_each_thread_starts_on_its_own_share():
    _omp.claims_trace(2, 2)   # the team started
    who = _omp.claims_trace(8, 2, chunk_s=0.01)
    # a thread runs its own share's first chunk unless it comes ~70 ms late
    assert who[0] == 0 and who[4] == 1, who


def test_a_late_thread_leaves_its_share_to_the_others():
    who = _omp.claims_trace(8, 2, late=1, late_s=0.3, chunk_s=0.002)
    assert who == [0] * 8, who
    if set(_omp.claims_trace(3, 3, chunk_s=0.02)) != {0, 1, 2}:
        pytest.skip("OpenMP gave fewer than 3 threads (OMP_THREAD_LIMIT?)")
    who = _omp.claims_trace(9, 3, late=0, late_s=0.3, chunk_s=0.002)
    assert all(t in (1, 2) for t in who), who


def test_bad_arguments():
    with pytest.raises(ValueError, match="n must be >= 0"):
        _omp.claims_trace(-1, 2)
    with pytest.raises(ValueError, match="nt >= 1"):
        _omp.claims_trace(4, 0)
