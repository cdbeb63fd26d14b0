"""bfloat16 mixed precision: `with mininet.autocast("bf16"):` (torch.autocast's habits; the
module is mininet.amp, as torch.amp, so that mininet.autocast can be the class).

Inside the block, matrix products (MatMul, Linear) and convolutions of float32 tensors
read their inputs rounded to bfloat16 (round to nearest even) and accumulate in float32:
the CPU GEMM rounds while it packs and runs vdpbf16ps where the CPU has AVX512_BF16, or
the float32 micro-kernel on the rounded values elsewhere (mininet_ext/_bf16.h). A
convolution (forward, input and weight gradients) runs im2col + that bf16 GEMM where it
measured faster than the fused float32 kernels (layers the float32 dispatch already sends
to im2col; strided layers of >= 32 channels and kernels up to 3x3: ops/conv.py), and the
fused float32 kernels on operands rounded to bfloat16 elsewhere (stride-1 implicit GEMM
and Winograd stay faster): the same numbers either way, up to the order of float32 sums.

Storage never changes: every tensor, inside the block or out, is float32 (there is no
bfloat16 array dtype; `mininet.bfloat16` names the autocast precision only). Weights
keep their float32 master copy, the optimizer sees float32 gradients, and ops that
autocast does not touch (sums, softmax, the loss) run in float32. An op records the
precision at forward time and its gradient uses it too, so `loss.backward()` after
the block still runs that node's products in bf16, as torch's saved bf16 tensors do.
float64 tensors are left alone. CUDA: autocast("cuda") and bf16 products of CUDA
tensors raise NotImplementedError.

The state is per thread (as torch's); blocks nest, and enabled=False turns autocast
off inside an enclosing block.
"""
import functools
import threading

from .ndarray import NDArray, float32, matmul as nd_matmul


class _Precision:
    """A reduced precision autocast can run products in (not an array dtype)."""

    def __init__(self, name, short):
        self.name, self.short = name, short

    def __repr__(self):
        return f"mininet.{self.name}"


bfloat16 = _Precision("bfloat16", "bf16")
_NAMES = {"bf16": "bf16", "bfloat16": "bf16", bfloat16: "bf16"}
_DEVICES = ("cpu", "cuda")


class _State(threading.local):
    precision = None   # "bf16" inside an enabled block, else None


_state = _State()


def current():
    """The precision products run in on this thread now: "bf16", or None (float32)."""
    return _state.precision


def _parse(first, dtype):
    """(device, precision) from autocast's arguments: a precision first ("bf16"), or a
    device type first and the precision as dtype (torch's order; bfloat16 by default)."""
    if isinstance(first, str) and first.lower() in _DEVICES:
        device = first.lower()
        want = bfloat16 if dtype is None else dtype
    else:
        device = "cpu"
        want = first if first is not None else bfloat16
        if dtype is not None and _NAMES.get(_key(dtype)) != _NAMES.get(_key(want)):
            raise ValueError(f"autocast: unsupported precision {dtype!r}, or it disagrees with "
                             f"{want!r}: only bfloat16 (\"bf16\", \"bfloat16\" or "
                             f"mininet.bfloat16)")
    precision = _NAMES.get(_key(want))
    if precision is None:
        raise ValueError(f"autocast: unsupported precision {want!r}: only bfloat16 "
                         f"(\"bf16\", \"bfloat16\" or mininet.bfloat16)")
    return device, precision


def _key(x):
    return x.lower() if isinstance(x, str) else x


class autocast:
    """Run matrix products and convolutions in bfloat16 mixed precision inside the block.

    autocast("bf16"), autocast(dtype=mininet.bfloat16), or torch's
    autocast("cpu", dtype=mininet.bfloat16); enabled=False switches autocast off inside
    (also inside an enclosing block). Usable as a decorator."""

    def __init__(self, device_type="bf16", dtype=None, enabled=True, cache_enabled=None):
        device, self.precision = _parse(device_type, dtype)
        if device == "cuda" and enabled:   # autocast("cuda", enabled=False): a no-op, as torch
            raise NotImplementedError("autocast: bf16 mixed precision runs on the CPU only; "
                                      "CUDA tensors compute in float32")
        self.enabled = bool(enabled)
        self._saved = []

    def __enter__(self):
        self._saved.append(_state.precision)
        _state.precision = self.precision if self.enabled else None
        return self

    def __exit__(self, *exc):
        _state.precision = self._saved.pop()
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            with autocast(self.precision, enabled=self.enabled):
                return fn(*args, **kwargs)
        return wrapped


def _lowp(x, what):
    """Refuse a bf16 product of x unless x is on the CPU (NotImplementedError naming
    `what` and x's device)."""
    if x.device.name != "cpu":
        raise NotImplementedError(f"{what}: bf16 autocast runs on the CPU only, got a tensor "
                                  f"on {x.device.name}")


def matmul(a, b, precision):
    """NDArray a @ b (numpy's matmul) with products at `precision` (None: float32, as
    ndarray.matmul). Only float32 pairs change; anything else goes to ndarray.matmul."""
    if precision is None or a.dtype is not float32 or not isinstance(b, NDArray) \
            or b.dtype is not float32:
        return nd_matmul(a, b)
    _lowp(a, "matmul")
    if a.device.bf16_path() == "fp32":   # (the CPU's, where vdpbf16ps is slower)
        return nd_matmul(round_to(a, precision), round_to(b, precision))
    return nd_matmul(a, b, precision)


def round_to(x, precision):
    """NDArray x's values rounded to `precision` (bf16), as a new compact float32 array;
    x itself when there is nothing to round (None, or not float32)."""
    if precision is None or x.dtype is not float32:
        return x
    _lowp(x, "conv")
    x = x.compact()
    out = NDArray.make(x.shape, device=x.device, dtype=float32)
    x.device.round_bf16(x, out)
    return out
