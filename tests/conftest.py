import os
from pathlib import Path

import numpy as np
import pytest

# One tolerance table for every comparison: (rtol, atol) per dtype.
TOL = {np.float32: (2e-5, 2e-6), np.float64: (1e-11, 1e-12)}


def assert_close(actual, expected, dtype=np.float32, scale=1.0):
    """Compare with the dtype's tolerance; `scale` widens atol for long reductions."""
    rtol, atol = TOL[np.dtype(dtype).type]
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected,
                               rtol=rtol * max(1.0, np.sqrt(scale)), atol=atol * scale)


def mnist_dir():
    """The real MNIST folder of ../shared (via MININET_DATA in make test)."""
    env = os.environ.get("MININET_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist")
    for c in candidates:
        if (c / "t10k-images-idx3-ubyte.gz").exists():
            return c
    return None


@pytest.fixture
def mnist_path():
    path = mnist_dir()
    if path is None:
        pytest.skip("real MNIST not found: set MININET_DATA or provide ../shared/data/mnist")
    return path


def pytest_collection_modifyitems(config, items):
    from mininet.backend import cuda_status
    ok, why = cuda_status()
    if ok:
        return
    skip = pytest.mark.skip(reason=f"no CUDA: {why}")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
