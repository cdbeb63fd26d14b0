"""NDArray: an n-d view (shape, strides, offset) onto a device buffer.

Views are metadata: reshape, permute, broadcast_to and basic slicing only
change shape/strides/offset. Strides and offsets count items, not bytes.
Every computation goes to the array's device (mininet.backend).
"""
import functools
import math
import numbers

import numpy as np
from numpy.exceptions import AxisError

from .backend import capture as _capture
from .backend import default_device, get_device
from .backend import dlpack as _dlpack
from .backend.device import DTYPES, LOGICAL
from .backend.opcodes import BINARY, COMPARE_OPS, REDUCE, UNARY

float32 = np.dtype("float32")
float64 = np.dtype("float64")
int64 = np.dtype("int64")
bool_ = np.dtype("bool")   # one byte, 0 or 1 (numpy's and torch's bool)
_FLOATS = (float32, float64)
_COMPARE = frozenset(COMPARE_OPS)


def as_dtype(dtype):
    """Normalise a dtype spec; refuse those mininet cannot hold."""
    if dtype is None:
        return float32
    try:
        d = np.dtype(getattr(dtype, "name", dtype) if not isinstance(dtype, np.dtype) else dtype)
    except TypeError:
        raise TypeError(f"unsupported dtype {dtype!r}: use float32, float64, int64 or bool") from None
    if d not in DTYPES:
        raise TypeError(f"unsupported dtype {d}: mininet arrays are float32, float64, int64 or bool")
    return d


@functools.lru_cache(maxsize=4096)
def compact_strides(shape):
    strides, s = [], 1
    for n in reversed(shape):
        strides.append(s)
        s *= n
    return tuple(reversed(strides))


prod = math.prod   # of a shape tuple; 1 for ()
_RANGES = [list(range(n)) for n in range(33)]   # sorted(axes) of a permutation of n dims


def broadcast_shapes(*shapes):
    """numpy's broadcasting rule; ValueError naming the shapes when they clash."""
    ndim = max(len(s) for s in shapes)
    out = []
    for i in range(ndim):
        dims = {s[i - ndim + len(s)] for s in shapes if i - ndim + len(s) >= 0} - {1}
        if len(dims) > 1:
            raise ValueError("shapes " + " and ".join(str(tuple(s)) for s in shapes)
                             + " cannot be broadcast together")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def check_axis(axis, ndim, what="axis", span=None):
    """axis in [-span, span) (span: ndim by default) as a non-negative int; numpy's AxisError
    (a ValueError and an IndexError) otherwise, so neither a wrapped nor a list index error
    hides the mistake."""
    span = ndim if span is None else span
    if not -span <= axis < span:
        raise AxisError(f"{what}: axis {axis} is out of range for an array of {ndim} dimensions")
    return axis % span


def _normalize_axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    if type(axis) is int and -ndim <= axis < ndim:   # the common case, without the ABC check
        return (axis % ndim,)
    axes = (axis,) if isinstance(axis, numbers.Integral) else tuple(axis)
    # a 0-d array takes axis 0 or -1, as torch, and has no axis to reduce (as axis=None)
    out = [check_axis(a, ndim, "reduction", max(ndim, 1)) for a in axes]
    if len(set(out)) != len(out):
        raise ValueError(f"repeated axis in {axis}")
    return tuple(sorted(out)) if ndim else ()


class NDArray:
    """needle's strided n-d array: a device buffer (`handle`) read through `shape`,
    `strides` and `offset` (in elements), with a `dtype` (float32, float64, int64 or bool) and
    a `device`. Views (reshape of a compact array, permute, broadcast_to, basic slicing) share
    the buffer; the math methods return new arrays. The value under a Tensor (its
    cached_data); NDArray(data, dtype=None, device=None) copies a numpy array, nested lists, a
    scalar or another NDArray."""
    __slots__ = ("handle", "shape", "strides", "offset", "dtype", "device", "__weakref__")

    def __init__(self, data, dtype=None, device=None):
        """Build from a numpy array, a Python (nested) list or scalar, or an NDArray (copied)."""
        device = get_device(device) if device is not None else None
        if isinstance(data, NDArray):
            src = data if dtype is None else data.astype(dtype)
            arr = src.to(device or src.device) if (device or src.device) != src.device else src.copy()
            self._init_from(arr)
            return
        arr = _to_numpy_input(data, dtype)
        out = NDArray.make(arr.shape, dtype=arr.dtype, device=device or default_device())
        out.device.from_numpy(arr, out)
        self._init_from(out)

    def _init_from(self, other):
        self.handle, self.shape, self.strides = other.handle, other.shape, other.strides
        self.offset, self.dtype, self.device = other.offset, other.dtype, other.device

    @staticmethod
    def make(shape, strides=None, device=None, handle=None, offset=0, dtype=float32):
        """A new array object; allocates a compact buffer when handle is None."""
        arr = object.__new__(NDArray)
        if type(shape) is not tuple:
            shape = tuple(shape)
        if strides is None:   # (up to 2 dims written out: the cached function costs more)
            n = len(shape)
            strides = (shape[1], 1) if n == 2 else (1,) if n == 1 else () if n == 0 else \
                compact_strides(shape)
        elif type(strides) is not tuple:
            strides = tuple(strides)
        if device is None:
            device = default_device()
        arr.shape, arr.strides, arr.offset = shape, strides, offset
        arr.device, arr.dtype = device, dtype
        arr.handle = handle if handle is not None else device.alloc(prod(shape) * dtype.itemsize)
        return arr

    def _view(self, shape, strides, offset):
        return NDArray.make(shape, strides, self.device, self.handle, offset, self.dtype)

    # properties -------------------------------------------------------------
    @property
    def ndim(self):
        """The number of dimensions, len(shape) (0 for a scalar array)."""
        return len(self.shape)

    @property
    def size(self):
        """The number of elements, the product of shape (1 for shape ())."""
        return prod(self.shape)

    @property
    def itemsize(self):
        """The size of one element in bytes (4 for float32, 8 for float64 and int64)."""
        return self.dtype.itemsize

    @property
    def nbytes(self):
        """size * itemsize: the bytes the elements take (not the whole buffer)."""
        return self.size * self.dtype.itemsize

    def __len__(self):
        if not self.shape:
            raise TypeError("len() of a 0-d array")
        return self.shape[0]

    def __bool__(self):
        if self.size != 1:
            raise ValueError(f"the truth value of an array of shape {self.shape} is ambiguous: "
                             "use .any() or .all()" if self.size else
                             "the truth value of an empty array is ambiguous")
        return bool(self.item())

    # numpy defers to our reflected operators (np.float32(2) * a is a.__rmul__)
    __array_ufunc__ = None

    def __repr__(self):
        body = np.array2string(self.numpy(), separator=", ", prefix="NDArray(")
        return f"NDArray({body}, dtype={self.dtype}, device={self.device!r})"

    def __str__(self):
        return str(self.numpy())

    # conversion -----------------------------------------------------------------
    def numpy(self):
        """A numpy copy of the data."""
        return self.device.to_numpy(self)

    def __array__(self, dtype=None, copy=None):
        a = self.numpy()
        return a if dtype is None else a.astype(dtype)

    # zero-copy interchange (CPU): DLPack and numpy's array interface, views with any
    # strides and offset; the consumer's view keeps this array's buffer alive
    def __dlpack__(self, stream=None, *, max_version=None, dl_device=None, copy=None):
        """A DLPack capsule over this array's memory (np.from_dlpack, torch.from_dlpack);
        copy=True exports a compact copy instead."""
        _capture.refuse("a host read")
        src = self.copy() if copy else self
        return _dlpack.export(src, stream, max_version, dl_device, copied=bool(copy))

    def __dlpack_device__(self):
        return _dlpack.device_of(self.device)

    @property
    def __array_interface__(self):
        """np.asarray(a) is a view of a (CPU arrays); np.array(a) and a.numpy() copy."""
        _capture.refuse("a host read")
        return _dlpack.array_interface(self)

    def item(self):
        """The one element as a Python float, int or bool."""
        if self.size != 1:
            raise ValueError(f"item(): array of shape {self.shape} has {self.size} elements, not 1")
        if self.device.has("share_host"):   # read in place: no copy of the array (~3x faster)
            _capture.refuse("a host read")
            at = self.offset * self.dtype.itemsize
            return np.frombuffer(self.handle, self.dtype, 1, at)[0].item()
        return self.numpy().reshape(-1)[0].item()

    def __float__(self):
        return float(self.item())

    def to(self, device):
        """This array on `device` (a Device or a name such as "cpu", "cuda"): itself
        when already there, else a copy of the same shape and dtype."""
        device = get_device(device)
        if device == self.device:
            return self
        return NDArray(self.numpy(), dtype=self.dtype, device=device)

    def astype(self, dtype):
        """This array as `dtype` (a dtype, its name or a numpy dtype): itself when
        it already is, else a converted copy of the same shape."""
        dtype = as_dtype(dtype)
        if dtype == self.dtype:
            return self
        out = NDArray.make(self.shape, device=self.device, dtype=dtype)
        self.device.cast(self, out)
        return out

    def copy(self):
        """A compact copy of the same shape, dtype and device (its own buffer)."""
        out = NDArray.make(self.shape, device=self.device, dtype=self.dtype)
        self.device.copy(self, out)
        return out

    # layout -----------------------------------------------------------------------
    def is_compact(self):
        """Whether the array is row-major contiguous (any offset; size <= 1 always counts),
        so its elements can be read as one flat run."""
        shape, strides = self.shape, self.strides
        if len(shape) == 2:   # (a matrix, the common case: no cache lookup)
            return (strides[1] == 1 and strides[0] == shape[1]) or shape[0] * shape[1] <= 1
        return strides == compact_strides(shape) or prod(shape) <= 1

    def compact(self):
        """Itself when compact, else a compact copy (same shape, dtype, device)."""
        return self if self.is_compact() else self.copy()

    def _check_writable(self):
        # an empty array has nothing to write, and its compact strides hold zeros ((2, 0) has
        # strides (0, 1)) that are no broadcast
        if 0 in self.strides and self.size and \
                any(s == 0 and n > 1 for n, s in zip(self.shape, self.strides)):
            raise ValueError(f"cannot write to a broadcast view (shape {self.shape}, strides "
                             f"{self.strides}): its elements share memory; copy() it first")

    def fill(self, value):
        """Set every element to `value`, in place, and return self. A broadcast view
        (stride 0 over a dim > 1) raises ValueError: its elements share memory."""
        self._check_writable()
        self.device.fill(self, value)
        return self

    def reshape(self, *shape):
        """A view when the strides allow (as numpy), otherwise a compact copy."""
        shape = _shape_arg(shape)
        if shape == self.shape:
            return self
        shape = _infer_shape(shape, self.size, self.shape)
        if shape == self.shape:
            return self
        if self.is_compact():
            return self._view(shape, compact_strides(shape), self.offset)
        strides = _nocopy_strides(self.shape, self.strides, shape)
        if strides is None:
            return self.copy().reshape(shape)
        return self._view(shape, strides, self.offset)

    def permute(self, *axes):
        """A view with the axes reordered: axes (a permutation of 0 .. ndim - 1,
        varargs or one tuple) give shape[axes[i]] as the new dim i, e.g. (N, C, H, W) permuted by
        (0, 2, 3, 1) is (N, H, W, C). ValueError when axes is not a permutation."""
        axes = _shape_arg(axes)
        n = len(self.shape)
        if len(axes) == n < 33 and sorted(axes) == _RANGES[n]:   # a permutation of 0..n-1
            shape, strides = self.shape, self.strides
            return self._view(tuple([shape[a] for a in axes]), tuple([strides[a] for a in axes]),
                              self.offset)
        if len(axes) != self.ndim or any(not -self.ndim <= a < self.ndim for a in axes):
            raise ValueError(f"permute: axes {axes} are not a permutation of {self.ndim} dimensions")
        axes = [a % self.ndim for a in axes]
        if len(set(axes)) != self.ndim:
            raise ValueError(f"permute: axes {axes} are not a permutation (an axis repeats)")
        return self._view(tuple(self.shape[a] for a in axes), tuple(self.strides[a] for a in axes),
                          self.offset)

    def transpose(self, *axes):
        """numpy's transpose: reverse the axes, or permute by `axes`."""
        axes = _shape_arg(axes) if axes else tuple(reversed(range(self.ndim)))
        return self.permute(axes)

    @property
    def T(self):
        """The transpose (all axes reversed), a view: shape (a, b, c) becomes (c, b, a)."""
        return self.transpose()

    def swapaxes(self, a, b):
        """A view with axes a and b exchanged (negative from the end); IndexError
        for an axis out of range."""
        if len(self.shape) == 2 and -2 <= a <= 1 and -2 <= b <= 1 and (a - b) % 2:
            # a matrix transposed (backward's, several a step): the view built in line
            (m, n), (s, t) = self.shape, self.strides
            view = object.__new__(NDArray)
            view.shape, view.strides, view.offset = (n, m), (t, s), self.offset
            view.handle, view.device, view.dtype = self.handle, self.device, self.dtype
            return view
        a, b = check_axis(a, self.ndim, "swapaxes"), check_axis(b, self.ndim, "swapaxes")
        axes = list(range(self.ndim))
        axes[a], axes[b] = axes[b], axes[a]
        return self.permute(axes)

    def broadcast_to(self, *shape):
        """A stride-0 view; never write through it."""
        shape = _shape_arg(shape)
        if shape == self.shape:
            return self
        lead = len(shape) - len(self.shape)
        if lead < 0 or (shape and min(shape) < 0):
            raise ValueError(f"cannot broadcast shape {self.shape} to {shape}")
        strides = [0] * lead
        for n, s, want in zip(self.shape, self.strides, shape[lead:]):
            if n == want:
                strides.append(s)
            elif n == 1:
                strides.append(0)
            else:
                raise ValueError(f"cannot broadcast shape {self.shape} to {shape}")
        return NDArray.make(shape, tuple(strides), self.device, self.handle, self.offset,
                            self.dtype)

    def expand_dims(self, axis):
        """A view with a new dim of size 1 at position `axis` (numpy's
        expand_dims): shape (a, b) with axis=1 becomes (a, 1, b)."""
        axis = check_axis(axis, self.ndim + 1, "expand_dims")
        return self.reshape(self.shape[:axis] + (1,) + self.shape[axis:])

    # indexing ---------------------------------------------------------------------
    def __getitem__(self, idx):
        mask = _bool_mask(idx)
        if mask is not None:
            return self._masked_select(mask)
        shape, strides, offset = [], [], self.offset
        dim = 0
        for item in _expand_index(idx, self.ndim):
            if item is None:
                shape.append(1)
                strides.append(0)
                continue
            n, s = self.shape[dim], self.strides[dim]
            if isinstance(item, slice):
                start, stop, step = item.indices(n)
                length = len(range(start, stop, step))
                offset += start * s if length else 0
                shape.append(length)
                strides.append(s * step)
            else:
                i = _check_index(item, n, dim)
                offset += i * s
            dim += 1
        return self._view(tuple(shape), tuple(strides), offset)

    def __setitem__(self, idx, value):
        self._check_writable()
        mask = _bool_mask(idx)
        if mask is not None:
            self._masked_write(mask, value)
            return
        view = self[idx]
        if isinstance(value, numbers.Number):
            view.fill(value)
            return
        value = value if isinstance(value, NDArray) else NDArray(value, dtype=self.dtype,
                                                                  device=self.device)
        if value.device != self.device:
            value = value.to(self.device)
        if value.dtype != self.dtype:
            value = value.astype(self.dtype)
        if value.handle is self.handle:  # may overlap: read everything before writing
            value = value.copy()
        try:
            src = value.broadcast_to(view.shape)
        except ValueError:
            raise ValueError(f"could not assign an array of shape {value.shape} "
                             f"to a slice of shape {view.shape}") from None
        self.device.copy(src, view)

    # boolean masks: x[mask] (a copy, row-major order) and x[mask] = value ------------------
    def _masked_select(self, mask):
        return select_rows(self, *mask_index(mask, self.shape))

    def _masked_write(self, mask, value):
        """self[mask] = value (a number, or values for each selected entry): on the host,
        then copied back (the selected count is known there only)."""
        idx, rest = mask_index(mask, self.shape)
        host = self.numpy()
        flat = host.reshape((prod(mask.shape),) + rest)
        value = value.numpy() if isinstance(value, NDArray) else value
        try:
            flat[idx] = value
        except ValueError:
            raise ValueError(f"could not assign {np.shape(value)} values to the {idx.size} "
                             f"entries of shape {rest} that the mask selects") from None
        self[...] = host

    # elementwise ----------------------------------------------------------------------
    def _binary(self, other, name, reverse=False):
        if isinstance(other, numbers.Number):
            if self.dtype is bool_ and name not in _COMPARE:
                return self._bool_scalar(other, name, reverse)
            a = self.astype(float64) if self.dtype is bool_ else self._as_float()
            out = NDArray.make(a.shape, device=a.device,
                               dtype=bool_ if name in _COMPARE else a.dtype)
            a.device.binary_scalar(BINARY[name], a, float(other), reverse, out)
            return out
        if not isinstance(other, NDArray):
            # array data is an array of its own dtype (a numpy float64 array stays float64),
            # then promotes by the README's table; only scalars take self's dtype
            other = NDArray(other, device=self.device)
        a, b = (other, self) if reverse else (self, other)
        return _ewise(a, b, name)

    def _bool_scalar(self, value, name, reverse):
        """bool array op number, as torch: the number as a 0-d array of its kind (bool,
        int64 or float32), then _bool_arith's table."""
        if name == "pow" and not reverse:
            if isinstance(value, bool):   # x ** True is x, x ** False is all True
                return self.copy() if value else full(self.shape, True, bool_, self.device)
            if isinstance(value, numbers.Integral) and value < 0:
                raise ValueError(f"bool ** {value}: integers to negative integer powers are "
                                 "not allowed (as torch); use a float exponent")
        other = _scalar_array(value, self.device)
        return _ewise(other, self, name) if reverse else _ewise(self, other, name)

    def add_(self, other):
        """In place, self += other (broadcast to self's shape, same dtype); self must be
        compact, so no element is written twice."""
        if not self.is_compact() or (other.dtype is not self.dtype and other.dtype != self.dtype) \
                or self.dtype not in _FLOATS:
            raise ValueError(f"add_: needs a compact target and equal float dtypes, got {self.dtype} "
                             f"{self.shape} += {other.dtype} {other.shape}")
        self.device.binary(BINARY["add"], self, other.broadcast_to(self.shape), self)
        return self

    def _as_float(self):
        """Float arrays as they are; bool as float32 (torch's default float), int64 as
        float64 (exact below 2^53)."""
        if self.dtype in _FLOATS:
            return self
        return self.astype(float32 if self.dtype is bool_ else float64)

    def __add__(self, o): return self._binary(o, "add")
    def __radd__(self, o): return self._binary(o, "add", True)
    def __sub__(self, o): return self._binary(o, "sub")
    def __rsub__(self, o): return self._binary(o, "sub", True)
    def __mul__(self, o): return self._binary(o, "mul")
    def __rmul__(self, o): return self._binary(o, "mul", True)
    def __truediv__(self, o): return self._binary(o, "div")
    def __rtruediv__(self, o): return self._binary(o, "div", True)
    def __pow__(self, o): return self._binary(o, "pow")
    def __rpow__(self, o): return self._binary(o, "pow", True)
    def __lt__(self, o): return self._binary(o, "lt")
    def __le__(self, o): return self._binary(o, "le")
    def __gt__(self, o): return self._binary(o, "gt")
    def __ge__(self, o): return self._binary(o, "ge")
    def __neg__(self): return self._unary("neg")
    def __abs__(self): return self.abs()
    __hash__ = None  # type: ignore[assignment]  # unhashable (elementwise ==), as numpy's arrays

    def __eq__(self, o):
        """Elementwise, a bool array; == None is False (as torch), not an error."""
        return False if o is None else self._binary(o, "eq")

    def __ne__(self, o):
        return True if o is None else self._binary(o, "ne")

    # logical ops: bool with bool only (torch refuses bitwise ops on floats)
    def _logical(self, other, name, symbol):
        if isinstance(other, (bool, np.bool_)):
            other = _scalar_array(bool(other), self.device)
        elif not isinstance(other, NDArray):
            other = NDArray(other, device=self.device)
        if self.dtype is not bool_ or other.dtype is not bool_:
            raise TypeError(f"{symbol}: needs bool arrays (logical {name}), got {self.dtype} and "
                            f"{other.dtype}; compare first (x > 0) or convert with .astype(bool)")
        if self.device != other.device:
            raise ValueError(f"arrays are on different devices: {self.device} and {other.device}")
        shape = self.shape if self.shape == other.shape else broadcast_shapes(self.shape, other.shape)
        out = NDArray.make(shape, device=self.device, dtype=bool_)
        self.device.logical(LOGICAL[name], self.broadcast_to(shape), other.broadcast_to(shape), out)
        return out

    def __and__(self, o): return self._logical(o, "and", "&")
    def __or__(self, o): return self._logical(o, "or", "|")
    def __xor__(self, o): return self._logical(o, "xor", "^")
    __rand__, __ror__, __rxor__ = __and__, __or__, __xor__

    def __invert__(self):
        if self.dtype is not bool_:
            raise TypeError(f"~: only bool arrays can be inverted (logical not), got {self.dtype}")
        return self._logical(True, "xor", "~")

    def logical_not(self):
        """not x for any dtype (nonzero is true), a bool array."""
        return ~self.astype(bool_)

    def maximum(self, o):
        """The elementwise maximum with `o` (an array broadcasting against this one,
        or a scalar), a new array."""
        return self._binary(o, "maximum")

    def minimum(self, o):
        """The elementwise minimum with `o` (an array broadcasting against this one,
        or a scalar), a new array."""
        return self._binary(o, "minimum")

    def _unary(self, name):
        if self.dtype is bool_ and name == "neg":
            raise TypeError("negation (-) of a bool array is not supported: use ~ (logical "
                            "not) to invert a mask")
        a = self._as_float()
        out = NDArray.make(a.shape, device=a.device, dtype=a.dtype)
        a.device.unary(UNARY[name], a, out)
        return out

    def exp(self):
        """exp(x), elementwise: a new array of the same shape, float (an int64 or bool array is read as float32 first)."""
        return self._unary("exp")

    def log(self):
        """The natural log, elementwise: a new array of the same shape, float (an int64 or bool array is read as float32 first)."""
        return self._unary("log")

    def sqrt(self):
        """The square root, elementwise: a new array of the same shape, float (an int64 or bool array is read as float32 first)."""
        return self._unary("sqrt")

    def tanh(self):
        """tanh(x), elementwise: a new array of the same shape, float (an int64 or bool array is read as float32 first)."""
        return self._unary("tanh")

    def sigmoid(self):
        """1 / (1 + exp(-x)), elementwise: a new array of the same shape, float (an int64 or bool array is read as float32 first)."""
        return self._unary("sigmoid")

    def relu(self):
        """max(x, 0), elementwise: a new array of the same shape, float (an int64 or bool array is read as float32 first)."""
        return self._unary("relu")

    def square(self):
        """x * x, elementwise: a new array of the same shape, float (an int64 or bool array is read as float32 first)."""
        return self._unary("square")

    def log1p(self):
        """log(1 + x), elementwise, exact for small x: a new array of the same shape, float (an int64 or bool array is read as float32 first)."""
        return self._unary("log1p")

    def expm1(self):
        """exp(x) - 1, elementwise, exact for small x: a new array of the same shape, float (an int64 or bool array is read as float32 first)."""
        return self._unary("expm1")

    def silu(self):
        """x sigmoid(x), elementwise: a new array of the same shape, float (an int64 or bool array is read as float32 first)."""
        return self._unary("silu")

    def erf(self):
        """The error function, elementwise: a new array of the same shape, float (an int64 or bool array is read as float32 first)."""
        return self._unary("erf")

    def gelu(self):
        """x Phi(x) (Phi the standard normal CDF: exact GELU), elementwise: a new array of the same shape, float (an int64 or bool array is read as float32 first)."""
        return self._unary("gelu")

    def abs(self):
        """|x|, elementwise, a new array of the same shape (a bool array is copied, as
        numpy's)."""
        return self.copy() if self.dtype is bool_ else self._unary("abs")   # numpy's

    def sign(self):
        """-1, 0 or 1 by the sign of x, elementwise, a new array of the same shape (a
        bool array is copied)."""
        return self.copy() if self.dtype is bool_ else self._unary("sign")

    def clip(self, lo=None, hi=None):
        """x clamped to [lo, hi] elementwise (either bound None: no bound there), a new
        array of the same shape."""
        out = self if lo is None else self.maximum(lo)
        return out if hi is None else out.minimum(hi)

    # reductions --------------------------------------------------------------------------
    def _reduce(self, name, axis, keepdims):
        shape = self.shape
        axes = _normalize_axes(axis, len(shape))
        if axes and axes[-1] - axes[0] + 1 == len(axes) and self.dtype in _FLOATS:
            # (one run of dims of a float array, the common case: _reduce_layout and the
            # comprehensions in line)
            first, last = axes[0], axes[-1] + 1
            a, outer, red, inner = (self.compact(), prod(shape[:first]), prod(shape[first:last]),
                                    prod(shape[last:]))
            final = shape[:first] + (1,) * (last - first) + shape[last:] if keepdims else \
                shape[:first] + shape[last:]
        else:
            final = tuple([1 if i in axes else n for i, n in enumerate(shape)]) if keepdims \
                else tuple([n for i, n in enumerate(shape) if i not in axes])
            a, outer, red, inner = self._reduce_layout(axes)
        if red == 0 and name != "sum":
            raise ValueError(f"{name}: zero-size array has no {name} along axis {axis}")
        dtype = int64 if name.startswith("arg") else a.dtype
        out = NDArray.make(final, device=a.device, dtype=dtype)
        a.device.reduce(REDUCE[name], a, outer, red, inner, out)
        return out

    def _reduce_layout(self, axes):
        """(compact array, outer, red, inner) with the reduced axes contiguous in the middle."""
        a = self if self.dtype in _FLOATS else self._as_float()
        first, last = (axes[0], axes[-1]) if axes else (0, -1)
        if axes and last - first + 1 == len(axes):   # (sorted, distinct: one run of dims)
            shape = a.shape
            return (a.compact(), prod(shape[:first]), prod(shape[first:last + 1]),
                    prod(shape[last + 1:]))
        keep = [i for i in range(a.ndim) if i not in axes]
        c = a.permute(keep + list(axes)).compact()
        return c, prod(a.shape[i] for i in keep), prod(a.shape[i] for i in axes), 1

    def sum(self, axis=None, keepdims=False):
        """The sum; of a bool array the count of True, int64 (as torch)."""
        if self.dtype is bool_:   # counts in float64: exact below 2^53
            return self.astype(float64)._reduce("sum", axis, keepdims).astype(int64)
        return self._reduce("sum", axis, keepdims)

    def mean(self, axis=None, keepdims=False):
        """The mean over `axis` (None: all; an int or a tuple), the reduced dims
        dropped or kept as 1 with keepdims. A bool array raises TypeError; an empty reduction
        gives NaN."""
        if self.dtype is bool_:
            raise TypeError("mean: not defined for bool arrays (as torch): convert first, "
                            ".astype(float32).mean() (the fraction of True)")
        axes = _normalize_axes(axis, self.ndim)
        count = prod(self.shape[i] for i in axes)
        total = self.sum(axis, keepdims)
        return total * (1.0 / count) if count else total * float("nan")

    def max(self, axis=None, keepdims=False):
        """The maximum over `axis` (None: all; an int or a tuple), the reduced dims
        dropped or kept as 1 with keepdims. A zero-size reduction raises ValueError."""
        if self.dtype is bool_:
            return self.astype(float32)._reduce("max", axis, keepdims).astype(bool_)
        return self._reduce("max", axis, keepdims)

    def min(self, axis=None, keepdims=False):
        """The minimum over `axis` (None: all; an int or a tuple), the reduced dims
        dropped or kept as 1 with keepdims. A zero-size reduction raises ValueError."""
        if self.dtype is bool_:
            return self.astype(float32)._reduce("min", axis, keepdims).astype(bool_)
        return self._reduce("min", axis, keepdims)

    def any(self, axis=None, keepdims=False):
        """Whether any element (along axis) is nonzero: a bool array, on the device."""
        return self._count_true(axis, keepdims) > 0

    def all(self, axis=None, keepdims=False):
        """Whether every element (along axis) is nonzero (true for none): a bool array."""
        count = prod(self.shape[i] for i in _normalize_axes(axis, self.ndim))
        return self._count_true(axis, keepdims) == count

    def _count_true(self, axis, keepdims):
        """The number of nonzero elements along axis (float64, exact below 2^53); an empty
        axis counts 0."""
        mask = self if self.dtype is bool_ else self != 0
        return mask.astype(float64)._reduce("sum", axis, keepdims)

    def argmax(self, axis=None, keepdims=False):
        """The int64 index of the maximum along `axis` (None: into the flattened
        array, shape ()), the axis dropped or kept as 1 with keepdims."""
        return self._arg("argmax", axis, keepdims)

    def argmin(self, axis=None, keepdims=False):
        """The int64 index of the minimum along `axis` (None: into the flattened
        array, shape ()), the axis dropped or kept as 1 with keepdims."""
        return self._arg("argmin", axis, keepdims)

    def _arg(self, name, axis, keepdims):
        if axis is None:  # numpy: index into the flattened array
            return self.reshape(-1)._reduce(name, 0, False).reshape((1,) * self.ndim if keepdims else ())
        if not isinstance(axis, numbers.Integral):
            raise TypeError(f"{name}: axis must be an int or None, got {axis!r}")
        return self._reduce(name, axis, keepdims)

    # matmul ------------------------------------------------------------------------------
    def __matmul__(self, other):   # replaced by the module's matmul itself, below it
        return matmul(self, other)

    def __rmatmul__(self, other):
        return matmul(NDArray(other, device=self.device), self)


# module-level helpers ----------------------------------------------------------------------
def _to_numpy_input(data, dtype):
    arr = np.asarray(data) if not isinstance(data, np.ndarray) else data
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"cannot make an NDArray from data of dtype {arr.dtype}: "
                        "mininet holds float32, float64, int64 and bool")
    if dtype is None:  # the README's rule: bools stay bool, ints are int64, floats keep float64
        kind = arr.dtype.kind
        dtype = arr.dtype if arr.dtype in _FLOATS else bool_ if kind == "b" else \
            int64 if kind in "iu" else float32
    return arr.astype(as_dtype(dtype), copy=False)


def _scalar_array(value, device):
    """A Python or numpy number as a 0-d array of its kind: bool, int64 or float32 (a float
    meeting a bool array takes torch's default float)."""
    dtype = bool_ if isinstance(value, (bool, np.bool_)) else \
        int64 if isinstance(value, numbers.Integral) else float32
    return NDArray.make((), device=device, dtype=dtype).fill(value)


def _promote(a, b):
    """The README's table (PyTorch's rule): float64 if either is float64, else float32 if
    either is float32 (an int64 array meeting a float32 one computes in float32), else
    float64 (int64 with int64: there are no integer kernels)."""
    floats = {a.dtype, b.dtype} & set(_FLOATS)
    dtype = float64 if float64 in floats or not floats else float32
    a, b = (x if x.dtype == dtype else x.astype(dtype) for x in (a, b))
    if a.device != b.device:
        raise ValueError(f"arrays are on different devices: {a.device} and {b.device}")
    return a, b


def _ewise(a, b, name):
    """a op b elementwise (broadcast): comparisons give bool arrays; an operand of bool
    dtype promotes as torch's table (_bool_arith)."""
    dtype = a.dtype
    if dtype is not b.dtype or dtype not in _FLOATS or a.device is not b.device:
        if (a.dtype is bool_ or b.dtype is bool_) and name not in _COMPARE:   # (one bool dtype)
            return _bool_arith(a, b, name)
        a, b = _promote(a, b)
        dtype = a.dtype
    shape = a.shape
    if shape != b.shape:
        shape = broadcast_shapes(shape, b.shape)
        a, b = a.broadcast_to(shape), b.broadcast_to(shape)
    out = NDArray.make(shape, device=a.device, dtype=bool_ if name in _COMPARE else dtype)
    a.device.binary(BINARY[name], a, b, out)
    return out


# bool with bool: the logical kernel for the ops whose result is a bool (torch's)
_BOOL_AS_LOGICAL = {"add": "or", "maximum": "or", "mul": "and", "minimum": "and"}
_BOOL_REFUSED = {"sub": "subtraction (-) of two bool arrays is not supported: use ^ (logical xor)",
                 "pow": "pow (**) of two bool arrays is not supported: convert one first"}


def _bool_arith(a, b, name):
    """An arithmetic op with a bool operand, as torch: with a float array the float's
    dtype; bool with bool a bool (+ and maximum are or, * and minimum and); bool with
    int64 int64 (computed in float64, exact below 2^53); true division float32."""
    dtypes = {a.dtype, b.dtype}
    if dtypes & set(_FLOATS) or name == "pass_pos":   # the bool side cast once, to the float
        f = float64 if float64 in dtypes else float32
        a, b = (x.astype(f) if x.dtype is bool_ else x for x in (a, b))
        return _ewise(a, b, name)
    if dtypes == {bool_}:
        if name in _BOOL_AS_LOGICAL:
            return a._logical(b, _BOOL_AS_LOGICAL[name], name)
        if name in _BOOL_REFUSED:
            raise TypeError(_BOOL_REFUSED[name])
    if name == "div":
        return _ewise(a.astype(float32), b.astype(float32), name)
    return _ewise(a.astype(float64), b.astype(float64), name).astype(int64)


def matmul(a, b, precision=None):
    """numpy's matmul: 1-d operands are promoted, batch dims broadcast. precision "bf16":
    the device rounds float32 inputs to bfloat16 and sums in float32 (mininet.amp)."""
    if not isinstance(b, NDArray):
        b = NDArray(b, device=a.device)   # its own dtype, promoted below as every binary op
    sa, sb = a.shape, b.shape
    dev, dt = a.device, a.dtype
    if (len(sa) == 2 and len(sb) == 2 and dt is b.dtype and dt in _FLOATS
            and sa[1] == sb[0] and dev is b.device):
        # the common case (a layer's product) without the general path's checks, its
        # output built in line: a 64^3 product takes 5 us, and each call costs 0.1
        m, n = sa[0], sb[1]
        out = object.__new__(NDArray)
        out.shape, out.strides, out.offset, out.dtype, out.device = (m, n), (n, 1), 0, dt, dev
        new = dev.matmul_new
        if precision is None and new is not None and _capture._active is None:
            out.handle = new(a, b, m, n, sa[1])   # allocated and written in one call
            return out
        out.handle = dev.alloc(m * n * dt.itemsize)
        if precision is None:
            dev.matmul(a, b, out, m, n, sa[1])
        else:
            dev.matmul(a, b, out, m, n, sa[1], precision=precision)
        return out
    kw = {} if precision is None else {"precision": precision}
    a, b = _promote(a, b)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: operands must be at least 1-d, got shapes {a.shape} and {b.shape}")
    va = a.reshape(1, a.shape[0]) if a.ndim == 1 else a
    vb = b.reshape(b.shape[0], 1) if b.ndim == 1 else b
    m, k = va.shape[-2:]
    k2, n = vb.shape[-2:]
    if k != k2:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not align ({k} != {k2})")
    try:
        batch = broadcast_shapes(va.shape[:-2], vb.shape[:-2])
    except ValueError:
        raise ValueError(f"matmul: batch dimensions of {a.shape} and {b.shape} do not broadcast") from None
    if batch and vb.ndim == 2 and va.shape[:-2] == batch:
        # a stack of rows times one matrix (a Linear on (N, L, D)): one product of
        # (N*L, D) rows where the batch dims fold into the rows without a copy (twice the
        # rate of N small ones; an item's sums may then round differently with N, as the
        # GEMM picks its blocking from N*L)
        rows = prod(batch) * m
        strides = _nocopy_strides(va.shape[:-1], va.strides[:-1], (rows,)) \
            if rows > 1 and n and k else None
        if strides is None and rows > 1 and n >= 16 and k:
            # a compact copy of the rows costs less than the small products (a gradient
            # in a permuted layout: attention's key projection)
            va = va.compact()
            strides = (k,)
        if strides is not None:
            flat = va._view((rows, k), strides + (va.strides[-1],), va.offset)
            out = NDArray.make((rows, n), device=a.device, dtype=a.dtype)
            a.device.matmul(flat, vb, out, rows, n, k, **kw)
            shape = batch + (m, n)   # (a has batch dims: it is not 1-d)
            return out.reshape(shape[:-1] if b.ndim == 1 else shape)
    out = NDArray.make(batch + (m, n), device=a.device, dtype=a.dtype)
    if batch:
        va = va.broadcast_to(batch + (m, k))
        vb = vb.broadcast_to(batch + (k, n))
        a.device.matmul(va, vb, out, m, n, k, _batch_offsets(va, batch), _batch_offsets(vb, batch),
                        **kw)
    else:
        a.device.matmul(va, vb, out, m, n, k, **kw)
    shape = out.shape
    if a.ndim == 1:
        shape = shape[:-2] + shape[-1:]
    if b.ndim == 1:
        shape = shape[:-1]
    return out.reshape(shape)


# a @ b runs matmul with no method frame in between: a 64^3 product takes about 5 us, the
# frame 0.1 of them, and numpy's whole call about 4.5
NDArray.__matmul__ = matmul  # type: ignore[method-assign]


def _batch_offsets(x, batch):
    """Item offset of each batch matrix (row-major over the batch dims)."""
    idx = np.indices(batch).reshape(len(batch), -1)
    strides = np.array(x.strides[:len(batch)], dtype=np.int64).reshape(-1, 1)
    return np.ascontiguousarray((idx * strides).sum(axis=0), dtype=np.int64)


def _shape_arg(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = shape[0]
        if type(shape) is tuple and all(type(s) is int for s in shape):
            return shape  # the common case: already a tuple of ints
    return tuple(int(s) for s in shape)


def _infer_shape(shape, size, old):
    if shape.count(-1) > 1:
        raise ValueError(f"reshape: only one dimension can be -1, got {shape}")
    if -1 in shape:
        known = prod(s for s in shape if s != -1)
        if known == 0 or size % known:
            raise ValueError(f"cannot reshape array of shape {old} into {shape}")
        shape = tuple(size // known if s == -1 else s for s in shape)
    if any(s < 0 for s in shape) or prod(shape) != size:
        raise ValueError(f"cannot reshape array of shape {old} (size {size}) into {shape}")
    return shape


def _nocopy_strides(old_shape, old_strides, new_shape):
    """Strides viewing old as new without a copy, or None (numpy's algorithm)."""
    olds = [(n, s) for n, s in zip(old_shape, old_strides) if n != 1]
    new_strides = [0] * len(new_shape)
    oi = ni = 0
    while oi < len(olds) and ni < len(new_shape):
        if new_shape[ni] == 1:
            ni += 1
            continue
        oj, nj = oi + 1, ni + 1
        op, np_ = olds[oi][0], new_shape[ni]
        while op != np_:
            if np_ < op:
                np_ *= new_shape[nj]
                nj += 1
            else:
                op *= olds[oj][0]
                oj += 1
        for k in range(oi, oj - 1):  # the old dims merged here must be contiguous
            if olds[k][1] != olds[k + 1][0] * olds[k + 1][1]:
                return None
        new_strides[nj - 1] = olds[oj - 1][1]
        for k in range(nj - 1, ni, -1):
            new_strides[k - 1] = new_strides[k] * new_shape[k]
        oi, ni = oj, nj
    return tuple(new_strides)


def _expand_index(idx, ndim):
    if not isinstance(idx, tuple):
        idx = (idx,)
    for item in idx:
        if isinstance(item, (bool, np.bool_)):
            raise IndexError(f"boolean index {item!r} is not supported: use an integer or a slice")
        if not (item is None or item is Ellipsis or isinstance(item, (slice, numbers.Integral))
                or (isinstance(item, np.ndarray) and item.ndim == 0 and item.dtype.kind in "iu")):
            raise IndexError(f"only integers, slices, None and ... are valid indices, got {item!r}")
    if sum(1 for i in idx if i is Ellipsis) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    used = sum(1 for i in idx if i is not None and i is not Ellipsis)
    if used > ndim:
        raise IndexError(f"too many indices: array is {ndim}-dimensional, but {used} were indexed")
    out = []
    for item in idx:
        if item is Ellipsis:
            out.extend([slice(None)] * (ndim - used))
        else:
            out.append(item)
    if Ellipsis not in idx:
        out.extend([slice(None)] * (ndim - used))
    return out


def mask_index(mask, shape):
    """(the int64 positions of mask's True entries, a numpy array; the shape of one
    selected entry) for a bool mask over the leading dims of shape, as torch's x[mask].
    The count is read on the host: it sets the result's shape."""
    k = mask.ndim
    if tuple(mask.shape) != tuple(shape[:k]):
        raise IndexError(f"the boolean mask of shape {tuple(mask.shape)} does not match the "
                         f"indexed shape {tuple(shape)} (it must cover its leading dims)")
    m = mask.numpy() if isinstance(mask, NDArray) else np.asarray(mask)
    return np.flatnonzero(m).astype(np.int64), tuple(shape[k:])


def select_rows(x, idx, rest):
    """x seen as (rows, *rest): the rows at idx (int64 numpy), a new (len(idx), *rest) array
    (the device's row gather for floats, else on the host)."""
    d, dev = prod(rest), x.device
    out_shape = (idx.size,) + tuple(rest)
    if not idx.size or not d:
        return NDArray.make(out_shape, device=dev, dtype=x.dtype)
    if x.dtype in _FLOATS and dev.has("rows"):
        out = NDArray.make((idx.size, d), device=dev, dtype=x.dtype)
        dev.take_rows(x.compact().reshape(x.size // d, d), NDArray(idx, dtype=int64, device=dev), out)
        return out.reshape(out_shape)
    host = x.numpy().reshape(x.size // d, d)[idx]
    return NDArray(host.reshape(out_shape), dtype=x.dtype, device=dev)


def place_rows(shape, idx, rows):
    """zeros(shape) with its rows (shape seen as (n, *rows.shape[1:])) at idx set to rows:
    select_rows' adjoint, for distinct idx."""
    d, dev = prod(rows.shape[1:]), rows.device
    out = NDArray.make(shape, device=dev, dtype=rows.dtype).fill(0)
    if not idx.size or not d:
        return out
    if rows.dtype in _FLOATS and dev.has("rows"):
        dev.add_rows(rows.compact().reshape(idx.size, d), NDArray(idx, dtype=int64, device=dev),
                     out.reshape(out.size // d, d))
        return out
    host = out.numpy()
    host.reshape((-1,) + rows.shape[1:])[idx] = rows.numpy()
    return NDArray(host, dtype=rows.dtype, device=dev)


def _bool_mask(idx):
    """idx as a boolean mask (an NDArray or numpy array of bool dtype, at least 1-d), or
    None for any other index."""
    if isinstance(idx, (NDArray, np.ndarray)) and idx.dtype is bool_ and idx.ndim:
        return idx
    return None


def _check_index(i, n, dim):
    i = int(i)
    if not -n <= i < n:
        raise IndexError(f"index {i} is out of bounds for dimension {dim} with size {n}")
    return i % n


def share_numpy(arr, device=None):
    """An NDArray over a numpy array's memory, not a copy (as torch.from_numpy), when the
    device can share host memory and arr is C-contiguous, writable and of a mininet
    dtype; else a copy. For fresh arrays nothing else writes, such as a loader's batch."""
    device = get_device(device) if device is not None else default_device()
    if (device.has("share_host") and isinstance(arr, np.ndarray) and arr.dtype in DTYPES
            and arr.flags.c_contiguous and arr.flags.writeable):
        return NDArray.make(arr.shape, device=device, handle=device.share(arr), dtype=arr.dtype)
    return NDArray(arr, device=device)


def from_dlpack(obj, copy=None):
    """An NDArray over the memory of obj (anything with __dlpack__: numpy arrays, PyTorch
    CPU tensors; or a DLPack capsule), strides kept, no copy. copy=True copies; read-only
    memory is copied unless copy=False, which refuses it."""
    _capture.refuse("share")
    handle, shape, strides, offset, dtype = _dlpack.adopt(obj, copy)
    return NDArray.make(shape, strides, get_device("cpu"), handle, offset, dtype)


def array(data, dtype=None, device=None):
    return NDArray(data, dtype=dtype, device=device)


def empty(shape, dtype=float32, device=None):
    shape = (int(shape),) if isinstance(shape, numbers.Integral) else tuple(int(s) for s in shape)
    return NDArray.make(shape, dtype=as_dtype(dtype), device=get_device(device) if device else None)


def full(shape, value, dtype=float32, device=None):
    return empty(shape, dtype, device).fill(value)


def zeros(shape, dtype=float32, device=None):
    return full(shape, 0.0, dtype, device)


def ones(shape, dtype=float32, device=None):
    return full(shape, 1.0, dtype, device)


def stack(arrays, axis=0):
    """Join same-shaped arrays along a new axis."""
    arrays = list(arrays)
    if not arrays:
        raise ValueError("stack: need at least one array")
    shape = arrays[0].shape
    for a in arrays:
        if a.shape != shape:
            raise ValueError(f"stack: all arrays must have the same shape, got {shape} and {a.shape}")
    axis = check_axis(axis, len(shape) + 1, "stack")
    out = empty(shape[:axis] + (len(arrays),) + shape[axis:], dtype=arrays[0].dtype,
                device=arrays[0].device)
    for i, a in enumerate(arrays):
        out[(slice(None),) * axis + (i,)] = a
    return out


def concatenate(arrays, axis=0):
    """Join arrays along an existing axis."""
    arrays = list(arrays)
    if not arrays:
        raise ValueError("concatenate: need at least one array")
    first = arrays[0]
    if first.ndim == 0:
        raise ValueError("concatenate: 0-d arrays cannot be concatenated (stack them)")
    axis = check_axis(axis, first.ndim, "concatenate")
    for a in arrays:
        if a.ndim != first.ndim or a.shape[:axis] + a.shape[axis + 1:] != first.shape[:axis] + first.shape[axis + 1:]:
            raise ValueError(f"concatenate: shapes {first.shape} and {a.shape} differ off axis {axis}")
    total = sum(a.shape[axis] for a in arrays)
    out = empty(first.shape[:axis] + (total,) + first.shape[axis + 1:], dtype=first.dtype,
                device=first.device)
    start = 0
    for a in arrays:
        out[(slice(None),) * axis + (slice(start, start + a.shape[axis]),)] = a
        start += a.shape[axis]
    return out


def maximum(a, b):
    return a.maximum(b)


def minimum(a, b):
    return a.minimum(b)
