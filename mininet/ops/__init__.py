"""Ops: each an Op class (compute + gradient) and a lowercase function."""
from .math import (abs, add, add_scalar, clamp, clip, divide, divide_scalar, exp, expm1, linear, log,
                   log1p, matmul, maximum, mul_scalar, multiply, negate, power, power_scalar, relu,
                   leaky_relu, elu, softplus, gelu, sigmoid, silu, sqrt, tanh, unbroadcast)
from .math import logical_and, logical_not, logical_or, logical_xor
from .conv import conv, conv2d
from .pool import avg_pool2d, max_pool2d
from .nn import (batch_norm, batch_norm_relu, embedding, layer_norm, one_hot,
                 softmax_cross_entropy)
from .rnn import lstm_gates, lstm_layer
from .reduce import logsoftmax, logsumexp, max, mean, norm2, softmax, summation
from .shape import (broadcast_to, cat, concatenate, dilate, flatten, flip, get_item, make_tuple, pad,
                    permute, reshape, split, stack, transpose, tuple_get_item, undilate)
from .index import (cast, clone, cumsum, erf, gather, index_select, masked_fill, prod, to_device,
                    where)
from .index import getitem, mask_select, masked_select, setitem
