"""mininet: a small, fast deep-learning library (needle's API, PyTorch's habits)."""
__version__ = "0.1.0"

from mininet_ext._omp import get_num_threads, set_num_threads

from .backend import cpu, cuda, cuda_available, default_device
from .ndarray import NDArray, float32, float64, int64
