"""mininet: a small, fast deep-learning library (needle's API, PyTorch's habits)."""
__version__ = "0.1.0"

from mininet_ext._omp import get_num_threads, set_num_threads

from .backend import cpu, cuda, cuda_available, default_device
from .ndarray import NDArray, float32, float64, int64
from .ndarray import bool_ as _bool_dtype
from .autograd import Tensor, enable_grad, no_grad
from . import ops, init, nn, optim, data, models, distributed
from . import utils   # torch.utils.data's spellings
from . import profiler
from .init import manual_seed
from .interop import from_dlpack, from_numpy, load, load_file, save, save_file
from .ops.creation import (accelerator, arange, cat, concat, concatenate, device, empty, empty_like,
                           eye, flatten, full, full_like, get_default_dtype, linspace, ones,
                           ones_like, set_default_dtype, stack, tensor, zeros, zeros_like)
from .ops.index import masked_select, where
from .ops import matmul
from .ops.math import logical_and, logical_not, logical_or, logical_xor
from .init import rand, rand_like, randint, randn, randn_like
from .autograd import grad_enabled as is_grad_enabled
from .amp import autocast, bfloat16   # bf16 mixed precision (storage stays float32)
from .backend.capture import CaptureError, KernelGraph   # a step's kernels, replayed

# torch's dtype aliases (there is no int32: .int() and mininet.long give int64)
long = int64
double = float64
float = float32


def mm(input, mat2):
    """torch.mm: the product of two 2-D tensors (Tensor.mm; shapes checked)."""
    return input.mm(mat2)


bool = _bool_dtype   # mininet.bool, as torch.bool (this module calls no builtin bool())

__all__ = ["CaptureError", "KernelGraph", "NDArray", "Tensor", "autocast", "bfloat16", "cpu", "cuda", "cuda_available", "data", "default_device", "distributed",
           "enable_grad", "float32", "float64", "from_dlpack", "bool", "logical_and", "logical_not",
           "logical_or", "logical_xor", "masked_select", "matmul", "mm", "from_numpy", "get_num_threads", "init",
           "int64", "load", "load_file", "manual_seed", "models", "nn", "no_grad", "ops", "optim",
           "save", "save_file", "set_num_threads", "accelerator", "arange", "cat", "concat", "concatenate",
           "device", "double", "empty", "empty_like", "eye", "flatten", "float", "full", "full_like",
           "get_default_dtype", "is_grad_enabled", "linspace", "long", "ones", "ones_like", "rand",
           "rand_like", "randint", "randn", "randn_like", "set_default_dtype", "stack", "tensor",
           "utils", "where", "zeros", "zeros_like"]
