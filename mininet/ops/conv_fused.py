"""Convolution with a ReLU epilogue: relu(conv(x, w, b)) as one op.

Inference of a conv-BN-ReLU network spends a whole pass over every activation map on
the ReLU alone; a device with the "conv2d_relu" capability (the CPU) applies max(0, .)
as its convolution writes the output (implicit GEMM, Winograd, or im2col's to_nchw), so
the map is written once. Any other device runs the convolution, then the ReLU in place on
the fresh output: the same values, one allocation fewer than conv then relu.

ConvReLU is a Conv: the gradient masks the output grad by y > 0 (the same as the
pre-activation's sign) and hands it to the convolution's gradient ops, so the input,
weight and bias gradients, and gradients of any order, are the convolution's.
"""
from ..autograd import Tensor, grad_enabled
from ..ndarray import NDArray
from ..backend.opcodes import UNARY
from .. import amp as _ac
from .conv import Conv, conv_call, conv_forward
from .math import ReLUGrad


def conv_relu_forward(x, w, b, p, precision=None):
    """(relu(conv(x, w, b)), col); col (the input's columns) is None when fused;
    precision as conv_forward's."""
    dev = x.device
    if dev.has("conv2d_relu"):   # its conv2d and to_nchw take the ReLU as an epilogue
        return conv_forward(x, w, b, p, relu=True, precision=precision)
    out, col = conv_forward(x, w, b, p, precision=precision)
    dev.unary(UNARY["relu"], out, out)   # elementwise, same index: safe in place
    return out, col


class ConvReLU(Conv):
    """y = max(0, conv(x, w, b)); gradients: the convolution's, of g * (y > 0)."""

    def compute(self, x, w, b=None):
        self.precision = self.precision or _ac._state.precision   # bf16: as Conv
        out, self.col = conv_relu_forward(x, w, b, self.p, self.precision)
        return out

    def gradient(self, g, node):
        # the mask is a constant: relu's second derivative is zero almost everywhere
        y = node.cached_data
        if self._mask_and_sum(g, node):
            masked = Tensor.make_const(NDArray.make(y.shape, device=y.device, dtype=y.dtype))
            db = NDArray.make((y.shape[1],), device=y.device, dtype=y.dtype)
            y.device.relu_grad_bias(g.cached_data, y, masked.cached_data, db)
            self.bias_grad = (masked.cached_data, db)   # ConvGradBias takes it
        else:
            masked = ReLUGrad()(g, Tensor.make_const(y))
        return super().gradient(masked, node)

    @staticmethod
    def _mask_and_sum(g, node):
        """Whether the masked grad and the bias gradient come from one kernel pass: a
        training step's backward (nothing recorded: a recorded graph needs the ReLUGrad
        op) of a layer whose bias wants a gradient, on a device with that kernel."""
        if grad_enabled() or len(node.inputs) < 3 or not node.inputs[2].requires_grad:
            return False
        gd, y = g.cached_data, node.cached_data
        return (y.device.has("relu_grad_bias") and gd.device is y.device
                and gd.dtype == y.dtype and gd.shape == y.shape and gd.is_compact())


def conv_relu(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """relu(conv(x, weight, bias)) in one op: x (N, C, H, W), weight (K, C/groups, kh, kw),
    bias (K,) or None; the same checks and errors as ops.conv."""
    return conv_call(ConvReLU, "conv_relu", x, weight, bias, stride, padding, dilation, groups)


conv2d_relu = conv_relu
