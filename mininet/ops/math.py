"""Elementwise and matrix ops with their gradients (numpy broadcasting)."""
import math
import numbers

from ..autograd import Op, Tensor, grad_enabled
from ..ndarray import NDArray, _ewise as nd_ewise, matmul as nd_matmul
from .. import amp as _ac


def require_float(what, *xs):
    """Fused ops compute in float32/float64 only (the README's promotion rule)."""
    for x in xs:
        if x is not None and x.dtype.kind != "f":
            raise TypeError(f"{what}: needs float32 or float64 input, got {x.dtype}; convert "
                            "with .astype('float32') or Tensor(..., dtype='float32')")


def unbroadcast(x, shape):
    """Sum x (a Tensor, or an NDArray inside a kernel-level gradient) over the dims that
    broadcasting added or stretched, back to `shape`."""
    shape = tuple(shape)
    if x.shape == shape:
        return x
    lead = len(x.shape) - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape)
                                      if n == 1 and x.shape[lead + i] != 1)
    if isinstance(x, NDArray):
        return (x.sum(axes) if axes else x).reshape(shape)
    from .reduce import summation
    from .shape import reshape
    return reshape(summation(x, axes), shape) if axes else reshape(x, shape)


class EWiseAdd(Op):
    saves_output = False   # its gradient does not read its output (autograd._check_versions)

    def compute(self, a, b):
        return a + b

    def gradient(self, g, node):
        a, b = node.inputs
        return (unbroadcast(g, a.shape) if a.requires_grad else None,
                unbroadcast(g, b.shape) if b.requires_grad else None)


class AddScalar(Op):
    saves_output = False   # its gradient does not read its output (autograd._check_versions)

    def __init__(self, scalar):
        self.scalar = scalar

    def compute(self, a):
        return a + self.scalar

    def gradient(self, g, node):
        return g


class EWiseMul(Op):
    saves_output = False   # its gradient does not read its output (autograd._check_versions)

    def compute(self, a, b):
        return a * b

    def gradient(self, g, node):
        a, b = node.inputs
        return unbroadcast(g * b, a.shape), unbroadcast(g * a, b.shape)


class MulScalar(Op):
    saves_output = False   # its gradient does not read its output (autograd._check_versions)

    def __init__(self, scalar):
        self.scalar = scalar

    def compute(self, a):
        return a * self.scalar

    def gradient(self, g, node):
        return g * self.scalar


class EWiseDiv(Op):
    saves_output = False   # its gradient does not read its output (autograd._check_versions)

    def compute(self, a, b):
        return a / b

    def gradient(self, g, node):
        a, b = node.inputs
        return unbroadcast(g / b, a.shape), unbroadcast(-g * a / (b * b), b.shape)


class DivScalar(Op):
    saves_output = False   # its gradient does not read its output (autograd._check_versions)

    def __init__(self, scalar):
        self.scalar = scalar

    def compute(self, a):
        return a * _reciprocal(self.scalar)

    def gradient(self, g, node):
        return g * _reciprocal(self.scalar)


def _reciprocal(s):
    """1 / s, with IEEE's signed infinity for s = +-0 (x * inf is x / 0 for every x, NaN at
    0), where Python would raise ZeroDivisionError."""
    return 1.0 / s if s else math.copysign(math.inf, s)


class PowerScalar(Op):
    """a ** p for a scalar p."""
    saves_output = False   # its gradient does not read its output (autograd._check_versions)

    def __init__(self, scalar):
        self.scalar = scalar

    def compute(self, a):
        if self.scalar == 2 and a.dtype.kind == "f":
            return a.square()
        return a ** self.scalar

    def gradient(self, g, node):
        a = node.inputs[0]
        if self.scalar == 2:
            return g * a * 2.0
        if self.scalar == 0:   # flat (as torch), where 0 * a^-1 would be NaN at a = 0
            return g * 0.0
        return g * power_scalar(a, self.scalar - 1) * self.scalar


class EWisePow(Op):
    def compute(self, a, b):
        return a ** b

    def gradient(self, g, node):
        from .index import MaskPass
        a, b = node.inputs
        ga = None
        if a.requires_grad:   # b a^(b-1), 0 where b == 0 (as torch: not 0 * 0^-1 = NaN at a = 0)
            nonzero = (b.cached_data != 0.0).broadcast_to(node.shape).compact()
            ga = unbroadcast(MaskPass(nonzero)(g * b * power(a, b - 1.0)), a.shape)
        if not b.requires_grad:
            return ga, None
        # d/db a^b = a^b log(a); 0 where a == 0 and b >= 0 (as torch: 0^b is flat there,
        # where log(0) = -inf would make 0 * -inf a NaN)
        live = ~((a.cached_data == 0.0) & (b.cached_data >= 0.0))
        keep = MaskPass(live.broadcast_to(node.shape).compact())
        return ga, unbroadcast(keep(g * node * log(a)), b.shape)


class ScalarPower(Op):
    """base ** a for a number base (2 ** x); gradient log(base) * base ** a."""

    def __init__(self, base):
        self.base = base

    def compute(self, a):
        return self.base ** a

    def gradient(self, g, node):
        if self.base > 0:
            return g * node * math.log(self.base)
        if self.base == 0:   # flat where a >= 0 (as torch); 0 ** a = inf below
            from .index import MaskPass
            return MaskPass(node.inputs[0].cached_data < 0.0)(g * node * -math.inf)
        return g * node * math.nan   # log of a negative base


class Negate(Op):
    saves_output = False   # its gradient does not read its output (autograd._check_versions)

    def compute(self, a):
        return -a

    def gradient(self, g, node):
        return -g


class Exp(Op):
    def compute(self, a):
        return a.exp()

    def gradient(self, g, node):
        return g * node


class Log(Op):
    saves_output = False   # its gradient does not read its output (autograd._check_versions)

    def compute(self, a):
        return a.log()

    def gradient(self, g, node):
        return g / node.inputs[0]


class Log1p(Op):
    """log(1 + a), accurate for small a."""
    saves_output = False   # its gradient does not read its output (autograd._check_versions)

    def compute(self, a):
        return a.log1p()

    def gradient(self, g, node):
        return g / (node.inputs[0] + 1.0)


class Expm1(Op):
    """exp(a) - 1, accurate for small a."""

    def compute(self, a):
        return a.expm1()

    def gradient(self, g, node):
        return g * (node + 1.0)


class Abs(Op):
    saves_output = False   # its gradient does not read its output (autograd._check_versions)

    def compute(self, a):
        return a.abs()

    def gradient(self, g, node):
        # sign(a): 0 at 0, as PyTorch's abs backward
        return g * Tensor.make_const(node.inputs[0].cached_data.sign())


class Clip(Op):
    """min(max(a, lo), hi); the gradient passes where lo <= a <= hi (as torch.clamp)."""
    saves_output = False   # its gradient does not read its output (autograd._check_versions)

    def __init__(self, lo, hi):
        self.lo, self.hi = lo, hi

    def compute(self, a):
        return a.clip(self.lo, self.hi)

    def gradient(self, g, node):
        x = node.inputs[0].cached_data
        inside = (x >= (-float("inf") if self.lo is None else self.lo)) * \
                 (x <= (float("inf") if self.hi is None else self.hi))
        return g * Tensor.make_const(inside)


class Sqrt(Op):
    def compute(self, a):
        return a.sqrt()

    def gradient(self, g, node):
        return g / (node * 2.0)


class Tanh(Op):
    def compute(self, a):
        return a.tanh()

    def gradient(self, g, node):
        return TanhGrad()(g, node)


class TanhGrad(Op):
    """g (1 - y^2) for y = tanh(z), in one kernel pass; linear in g."""

    def compute(self, g, y):
        return nd_ewise(g, y, "tanh_grad")

    def gradient(self, h, node):
        g, y = node.inputs
        return TanhGrad()(h, y), h * g * y * -2.0


class Sigmoid(Op):
    def compute(self, a):
        return a.sigmoid()

    def gradient(self, g, node):
        return SigmoidGrad()(g, node)


class SigmoidGrad(Op):
    """g y (1 - y) for y = sigmoid(z), in one kernel pass; linear in g."""

    def compute(self, g, y):
        return nd_ewise(g, y, "sigmoid_grad")

    def gradient(self, h, node):
        g, y = node.inputs
        return SigmoidGrad()(h, y), h * g * (1.0 - y * 2.0)


class LeakyReLU(Op):
    """x where x > 0, else slope * x, in one kernel pass (binary op leaky with the slope
    as a scalar)."""
    saves_output = False   # its gradient does not read its output

    def __init__(self, slope):
        self.slope = float(slope)

    def compute(self, a):
        return a._binary(self.slope, "leaky")

    def gradient(self, g, node):
        # the derivative is piecewise constant in x: 1 or slope, a constant factor
        x = node.inputs[0].cached_data
        return g * Tensor.make_const(x._binary(self.slope, "leaky_slope"))


class ELU(Op):
    """x where x > 0, else alpha (exp(x) - 1), in one kernel pass (binary op elu with
    alpha as a scalar)."""
    saves_output = False   # its gradient does not read its output

    def __init__(self, alpha):
        self.alpha = float(alpha)

    def compute(self, a):
        return a._binary(self.alpha, "elu")

    def gradient(self, g, node):
        return g * ELUSlope(self.alpha)(node.inputs[0])


class ELUSlope(Op):
    """ELU's derivative: 1 where x > 0, else alpha exp(x)."""

    def __init__(self, alpha):
        self.alpha = float(alpha)

    def compute(self, x):
        return x._binary(self.alpha, "elu_slope")

    def gradient(self, h, node):
        # its own derivative: 0 where x > 0, else itself
        x = node.inputs[0].cached_data
        return h * (node - Tensor.make_const((x > 0).astype(x.dtype)))


class Softplus(Op):
    """log(1 + exp(x)), x itself where x > threshold, in one kernel pass (binary op
    softplus with the threshold as a scalar)."""
    saves_output = False   # its gradient does not read its output

    def __init__(self, threshold):
        self.threshold = float(threshold)

    def compute(self, a):
        return a._binary(self.threshold, "softplus")

    def gradient(self, g, node):
        return g * SoftplusSlope(self.threshold)(node.inputs[0])


class SoftplusSlope(Op):
    """Softplus's derivative: sigmoid(x), 1 where x > threshold."""

    def __init__(self, threshold):
        self.threshold = float(threshold)

    def compute(self, x):
        return x._binary(self.threshold, "softplus_slope")

    def gradient(self, h, node):
        # sigmoid's derivative s (1 - s); 0 above the threshold, where s is 1
        return h * node * (1.0 - node)


class SiLU(Op):
    """x sigmoid(x) (swish), in one kernel pass."""
    saves_output = False   # its gradient does not read its output

    def compute(self, a):
        return a.silu()

    def gradient(self, g, node):
        return SiLUGrad()(g, node.inputs[0])


class SiLUGrad(Op):
    """g SiLU'(x) = g s (1 + x (1 - s)), s = sigmoid(x), in one kernel pass; linear in g."""
    saves_output = False

    def compute(self, g, x):
        return nd_ewise(g, x, "silu_grad")

    def gradient(self, h, node):
        g, x = node.inputs
        s = sigmoid(x)
        # SiLU''(x) = s (1 - s) (2 + x (1 - 2 s))
        return SiLUGrad()(h, x), h * g * s * (1.0 - s) * (2.0 + x * (1.0 - s * 2.0))


# exact GELU and its tanh form: one kernel pass each way (elementwise table: gelu,
# gelu_grad, gelu_tanh, gelu_tanh_grad)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


class Gelu(Op):
    """x Phi(x), Phi the standard normal CDF (exact GELU)."""
    saves_output = False   # its gradient does not read its output

    def compute(self, a):
        return a.gelu()

    def gradient(self, g, node):
        return GeluGrad()(g, node.inputs[0])


class GeluGrad(Op):
    """g GELU'(x) = g (Phi(x) + x phi(x)) in one kernel pass; linear in g."""
    saves_output = False

    def compute(self, g, x):
        return nd_ewise(g, x, "gelu_grad")

    def gradient(self, h, node):
        g, x = node.inputs
        # GELU''(x) = phi(x) (2 - x^2)
        phi = exp(x * x * -0.5) * _INV_SQRT_2PI
        return GeluGrad()(h, x), h * g * phi * (2.0 - x * x)


_C_TANH = math.sqrt(2.0 / math.pi)
_A_TANH = 0.044715


class GeluTanh(Op):
    """GELU's tanh form, x (1 + tanh(c (x + a x^3))) / 2 (torch's approximate='tanh')."""
    saves_output = False   # its gradient does not read its output

    def compute(self, a):
        return a._unary("gelu_tanh")

    def gradient(self, g, node):
        return GeluTanhGrad()(g, node.inputs[0])


class GeluTanhGrad(Op):
    """g G'(x) for GeluTanh's G, in one kernel pass; linear in g."""
    saves_output = False

    def compute(self, g, x):
        return nd_ewise(g, x, "gelu_tanh_grad")

    def gradient(self, h, node):
        g, x = node.inputs
        # G'' = (1 - t^2) (u' - x t u'^2 + x u'' / 2), u = c (x + a x^3), t = tanh(u)
        t = tanh((x + x * x * x * _A_TANH) * _C_TANH)
        du = (x * x * (3.0 * _A_TANH) + 1.0) * _C_TANH
        d2 = (1.0 - t * t) * (du - x * t * du * du + x * x * (3.0 * _A_TANH * _C_TANH))
        return GeluTanhGrad()(h, x), h * g * d2


class ReLU(Op):
    saves_output = False   # its gradient does not read its output (autograd._check_versions)

    def compute(self, a):
        return a.relu()

    def gradient(self, g, node):
        return ReLUGrad()(g, Tensor.make_const(node.inputs[0].cached_data))


class ReLUGrad(Op):
    """g where x > 0, else 0 (one kernel pass); linear in g, constant in x."""
    saves_output = False   # its gradient does not read its output (autograd._check_versions)

    def compute(self, g, x):
        return nd_ewise(g, x, "pass_pos")

    def gradient(self, h, node):
        return ReLUGrad()(h, node.inputs[1]), None


class Maximum(Op):
    saves_output = False   # its gradient does not read its output (autograd._check_versions)

    def compute(self, a, b):
        return a.maximum(b)

    def gradient(self, g, node):
        a, b = node.inputs
        mask = a.cached_data >= b.cached_data
        return (unbroadcast(g * Tensor.make_const(mask), a.shape),
                unbroadcast(g * Tensor.make_const(~mask), b.shape))


class MatMul(Op):
    saves_output = False   # its gradient does not read its output (autograd._check_versions)
    precision = None   # "bf16": set from mininet.autocast at forward, used by the gradient

    def compute(self, a, b):
        p = self.precision = self.precision or _ac._state.precision
        return nd_matmul(a, b) if p is None else _ac.matmul(a, b, p)

    def gradient(self, g, node):
        from .shape import transpose
        a, b = node.inputs
        p = self.precision
        if not grad_enabled():  # no graph to record: the products straight on NDArrays
            gd, ad, bd = g.cached_data, a.cached_data, b.cached_data
            ga = unbroadcast(_ac.matmul(gd, bd.swapaxes(-1, -2), p), a.shape) if a.requires_grad else None
            gb = unbroadcast(_ac.matmul(ad.swapaxes(-1, -2), gd, p), b.shape) if b.requires_grad else None
            return (None if ga is None else Tensor.make_const(ga),
                    None if gb is None else Tensor.make_const(gb))
        # skip the product for an input that needs no gradient (e.g. the data batch)
        ga = unbroadcast(matmul(g, transpose(b), p), a.shape) if a.requires_grad else None
        gb = unbroadcast(matmul(transpose(a), g, p), b.shape) if b.requires_grad else None
        return ga, gb


class Linear(Op):
    """x @ W + b for x (..., in), W (in, out), b (out,) or absent: one product and an
    in-place bias add instead of three ops (product, broadcast, add). relu=True gives
    max(x @ W + b, 0) from the same pass over the product (Sequential fuses a Linear
    followed by a ReLU): one op node and one kernel fewer; its gradient masks g by the
    output > 0, as ReLU's by its input."""
    saves_output = False   # its gradient does not read its output (autograd._check_versions)

    precision = None   # as MatMul's

    def __init__(self, relu=False):
        if relu:
            self.relu = True
            self.saves_output = True   # the mask is read from the output

    relu = False

    def compute(self, x, w, b=None):
        p = self.precision = self.precision or _ac._state.precision
        y = nd_matmul(x, w) if p is None else _ac.matmul(x, w, p)
        if b is None and not self.relu:
            return y
        dev = y.device
        if dev.has("bias_act") and y.dtype is x.dtype:   # epilogue in one pass
            dev.bias_act(y, b, self.relu)
            return y
        if b is not None:
            y = y.add_(b)
        return y.relu() if self.relu else y

    def gradient(self, g, node):
        if not grad_enabled():
            return self._gradient_now(g.cached_data, node)
        if self.relu:
            g = ReLUGrad()(g, Tensor.make_const(node.cached_data))
        x, w = node.inputs[:2]
        b = node.inputs[2] if len(node.inputs) == 3 else None
        p = self.precision
        # recorded: built from ops, differentiable again
        gx = matmul(g, _transpose(w), p) if x.requires_grad else None
        g2 = g.reshape((-1, g.shape[-1]))
        gw = matmul(_transpose(x.reshape((-1, x.shape[-1]))), g2, p) if w.requires_grad else None
        from .reduce import summation
        gb = summation(g2, (0,)) if b is not None and b.requires_grad else None
        return gx, gw, gb

    def _gradient_now(self, gd, node):
        """The gradient straight on NDArrays, nothing recorded (every training step's
        backward): the products and the bias's column sums, each wrapped once."""
        if self.relu:
            gd = nd_ewise(gd, node.cached_data, "pass_pos")
        inputs, p, const = node.inputs, self.precision, Tensor.make_const
        x, w = inputs[0], inputs[1]
        xd, wd = x.cached_data, w.cached_data
        g2 = gd if len(gd.shape) == 2 else gd.reshape(-1, gd.shape[-1])
        x2 = xd if len(xd.shape) == 2 else xd.reshape(-1, xd.shape[-1])
        product = nd_matmul if p is None else _ac.matmul
        args = () if p is None else (p,)
        gx = const(product(gd, wd.swapaxes(0, 1), *args)) if x.requires_grad else None
        with_bias = len(inputs) == 3 and inputs[2].requires_grad
        if (with_bias and w.requires_grad and p is None and g2.size >= BIAS_IN_PRODUCT
                and g2.shape[1] >= 2 * x2.shape[1]):
            gw, gb = _weight_and_bias_grads(x2, g2)
            return gx, const(gw), const(gb)
        gw = const(product(x2.swapaxes(0, 1), g2, *args)) if w.requires_grad else None
        if len(inputs) == 2:
            return gx, gw
        return gx, gw, const(g2.sum(0)) if with_bias else None


# output gradients of at least this many items, and at least twice as wide as the input,
# take the bias's gradient in the weight's product (_weight_and_bias_grads): the sums' own
# pass over g cost more than the product's extra row and the copy of x (a language
# model's logits, 700 x 10,000: 1.4 ms against 0.1 ms, Xeon). Its sums then round as the
# weight's do (their count of K slices follows the thread count)
BIAS_IN_PRODUCT = 1 << 18


def _weight_and_bias_grads(x2, g2):
    """(x2^T @ g2, g2's column sums) from one product: x2 with a column of ones appended,
    whose row of the result holds the sums."""
    rows, k = x2.shape
    xa = NDArray.make((rows, k + 1), device=x2.device, dtype=x2.dtype)
    xa[:, :k] = x2
    xa[:, k:] = 1.0
    both = nd_matmul(xa.swapaxes(0, 1), g2)
    return both[:k], both[k]


def _transpose(a):
    from .shape import transpose
    return transpose(a)


def linear(x, weight, bias=None, relu=False):
    """x @ weight + bias (weight (in, out), as needle's Linear); relu=True: max(., 0) of
    it, in the same op."""
    xs, ws = x.shape, weight.shape   # (each property read costs: read once)
    if len(ws) != 2 or len(xs) < 1 or xs[-1] != ws[0]:
        raise ValueError(f"linear: input {xs} and weight {ws} do not align")
    if bias is not None and bias.shape != (ws[1],):
        raise ValueError(f"linear: bias of shape {bias.shape} does not match weight {ws}")
    dtype, wdtype = x.dtype, weight.dtype
    # (numpy dtypes compared by identity first: == costs ~0.1 us, and one dtype is the rule)
    if (dtype is not wdtype and dtype != wdtype) or \
            (bias is not None and bias.dtype is not dtype and bias.dtype != dtype):
        # mixed dtypes promote as the separate ops do
        y = matmul(x, weight)
        y = y if bias is None else y + bias
        return ReLU()(y) if relu else y
    op = Linear(True) if relu else Linear()
    return op(x, weight) if bias is None else op(x, weight, bias)


def _tensor(x, like):
    """x as a Tensor on like's device, dtyped by the README's table: a scalar takes a float
    tensor's dtype (an int64 one's gives float64), array data keeps its own (a numpy
    float64 array is float64), so that the op then promotes as NDArray's do."""
    if isinstance(x, Tensor):
        return x
    if _is_number(x):
        return Tensor(x, dtype=like.dtype if like.dtype.kind == "f" else "float64", device=like.device)
    return Tensor(x, device=like.device)


def add(a, b):
    if isinstance(b, Tensor):
        return EWiseAdd()(a, b)
    if isinstance(a, Tensor) and _is_number(b):
        return AddScalar(b)(a)
    return EWiseAdd()(a, _tensor(b, a))


def add_scalar(a, scalar):
    return AddScalar(scalar)(a)


def multiply(a, b):
    if isinstance(b, Tensor):
        return EWiseMul()(a, b)
    if _is_number(b):
        return MulScalar(b)(a)
    return EWiseMul()(a, _tensor(b, a))


def mul_scalar(a, scalar):
    return MulScalar(scalar)(a)


def divide(a, b):
    if isinstance(b, Tensor):
        return EWiseDiv()(a, b)
    if _is_number(b):
        return DivScalar(b)(a)
    return EWiseDiv()(a, _tensor(b, a))


def divide_scalar(a, scalar):
    return DivScalar(scalar)(a)


def power_scalar(a, scalar):
    return PowerScalar(scalar)(a)


def power(a, b):
    """a ** b elementwise: a and b tensors (or one of them a number or array data)."""
    if _is_number(a):
        return ScalarPower(a)(b)
    if _is_number(b):
        return PowerScalar(b)(a)
    a = a if isinstance(a, Tensor) else _tensor(a, b)
    return EWisePow()(a, _tensor(b, a))


def negate(a):
    return Negate()(a)


def exp(a):
    return Exp()(a)


def log(a):
    return Log()(a)


def sqrt(a):
    return Sqrt()(a)


def log1p(a):
    return Log1p()(a)


def expm1(a):
    return Expm1()(a)


def abs(a):
    if a.dtype == "bool":
        raise TypeError("abs: not defined for bool tensors (as torch)")
    return Abs()(a)


def clip(a, min=None, max=None):
    """Clamp a to [min, max] (either bound may be None), as torch.clamp / numpy.clip."""
    if min is None and max is None:
        raise ValueError("clip: give min, max or both")
    return Clip(None if min is None else float(min), None if max is None else float(max))(a)


clamp = clip


def tanh(a):
    return Tanh()(a)


def sigmoid(a):
    return Sigmoid()(a)


def silu(a):
    return SiLU()(a)


def gelu(x, approximate="none"):
    """x Phi(x) (exact GELU), or its tanh form with approximate='tanh'."""
    return GeluTanh()(x) if approximate == "tanh" else Gelu()(x)


def leaky_relu(a, slope=0.01):
    return LeakyReLU(slope)(a)


def elu(a, alpha=1.0):
    return ELU(alpha)(a)


def softplus(a, threshold=20.0):
    """log(1 + exp(a)), a itself where a > threshold."""
    return Softplus(threshold)(a)


def relu(a):
    return ReLU()(a)


def maximum(a, b):
    return Maximum()(a, _tensor(b, a))


def matmul(a, b, precision=None):
    """numpy's matmul; 1-d operands are lifted to matrices so MatMul sees >= 2-d.
    precision: "bf16" for a product that must run in bf16 whatever the autocast state
    (a recorded gradient of one that ran under autocast)."""
    op = MatMul()
    if precision is not None:
        op.precision = precision
    if a.ndim >= 2 and b.ndim >= 2:
        return op(a, b)
    from .shape import reshape
    a2 = reshape(a, (1, a.shape[0])) if a.ndim == 1 else a
    b2 = reshape(b, (b.shape[0], 1)) if b.ndim == 1 else b
    out = op(a2, b2)
    shape = out.shape[:-2] + (out.shape[-2:-1] if a.ndim > 1 else ()) + (out.shape[-1:] if b.ndim > 1 else ())
    return reshape(out, shape)


def _is_number(x):
    return isinstance(x, numbers.Number)


# logical ops: any dtype in (nonzero is true), bool out, no gradient (as torch) --------------
def _bool_data(x, like=None):
    if isinstance(x, Tensor):
        d = x.cached_data
    elif isinstance(x, NDArray):
        d = x
    else:
        d = NDArray(x, device=None if like is None else like.device)
    return d if d.dtype == "bool" else d.astype("bool")


def logical_not(a):
    """not a (nonzero is True), elementwise: a bool Tensor of a's shape (no gradient)."""
    return Tensor.make_const(~_bool_data(a))


def logical_and(a, b):
    """a and b (nonzero is True), elementwise with broadcasting: a bool Tensor of the
    broadcast shape (no gradient)."""
    return Tensor.make_const(_bool_data(a) & _bool_data(b, a))


def logical_or(a, b):
    """a or b (nonzero is True), elementwise with broadcasting: a bool Tensor of the
    broadcast shape (no gradient)."""
    return Tensor.make_const(_bool_data(a) | _bool_data(b, a))


def logical_xor(a, b):
    """a xor b (nonzero is True), elementwise with broadcasting: a bool Tensor of the
    broadcast shape (no gradient)."""
    return Tensor.make_const(_bool_data(a) ^ _bool_data(b, a))
