"""mininet: a small, fast deep-learning library (needle's API, PyTorch's habits)."""
__version__ = "0.1.0"

from mininet_ext._omp import get_num_threads, set_num_threads

from .backend import cpu, cuda, cuda_available, default_device
from .ndarray import NDArray, float32, float64, int64
from .autograd import Tensor, enable_grad, no_grad
from . import ops, init, nn, optim, data, models, distributed
from .init import manual_seed
from .interop import from_dlpack, from_numpy, load_file, save_file

__all__ = ["NDArray", "Tensor", "cpu", "cuda", "cuda_available", "data", "default_device", "distributed",
           "enable_grad", "float32", "float64", "from_dlpack", "from_numpy", "get_num_threads", "init",
           "int64", "load_file", "manual_seed", "models", "nn", "no_grad", "ops", "optim",
           "save_file", "set_num_threads"]
