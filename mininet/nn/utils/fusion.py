"""Module fusion for inference (torch.nn.utils.fusion and torch.ao.quantization's
fuse_modules, eager mode).

In eval mode a BatchNorm2d is a fixed per-channel affine map, so the convolution before
it can absorb it: W' = W * s, b' = (b - mean) * s + beta with s = gamma / sqrt(var + eps).
A ReLU after a convolution becomes the convolution's epilogue (ConvReLU2d, one op:
F.conv2d_relu). fuse_modules rewrites a model so: the first module of each listed group
becomes the fused module, the others Identity.
"""
import copy

import numpy as np

from ...autograd import Tensor
from .. import functional as F
from ..activation import ReLU
from ..container import ModuleDict, ModuleList, Sequential
from ..layers import Conv
from ..module import Identity, Module, Parameter
from ..norm import BatchNorm2d


class ConvReLU2d(Sequential):
    """relu(conv(x)) in one op (torch.ao.nn.intrinsic.ConvReLU2d): holds the Conv2d as
    child 0 and the ReLU as child 1, so its state dict is the conv's under "0." as
    torch's fused module (mininet's checkpoints spell it "modules_list.0.", as for any
    Sequential). Input and output shapes are the conv's."""

    def __init__(self, conv, relu=None):
        if not isinstance(conv, Conv):
            raise TypeError(f"ConvReLU2d: needs a Conv2d, got {type(conv).__name__}")
        relu = ReLU() if relu is None else relu
        if type(relu) is not ReLU:
            raise TypeError(f"ConvReLU2d: needs a ReLU, got {type(relu).__name__}")
        super().__init__(conv, relu)
        self.training = conv.training

    def forward(self, x):
        c = self.modules_list[0]
        return F.conv2d_relu(x, c.weight, c.bias, c.stride, c.padding, c.dilation, c.groups)


# conv + batch norm ------------------------------------------------------------------------
def _numpy(t, default, n):
    return np.full(n, default) if t is None else t.numpy().astype(np.float64)


def fuse_conv_bn_weights(conv_w, conv_b, bn_rm, bn_rv, bn_eps, bn_w, bn_b, transpose=False):
    """(weight, bias) Parameters of a convolution that computes conv then eval-mode batch
    norm: conv_w (K, C/groups, kh, kw), conv_b (K,) or None; bn_rm, bn_rv the running mean
    and variance (K,); bn_w, bn_b the affine (K,) or None (ones, zeros). Folded in float64,
    returned in conv_w's dtype and on its device."""
    if transpose:
        raise NotImplementedError("fuse_conv_bn_weights: mininet has no transposed convolution")
    k = conv_w.shape[0]
    if bn_rm is None or bn_rv is None:
        raise ValueError("fuse_conv_bn_weights: the batch norm keeps no running statistics "
                         "(track_running_stats=False): there is nothing to fold")
    for name, t in (("running_mean", bn_rm), ("running_var", bn_rv), ("weight", bn_w),
                    ("bias", bn_b), ("conv bias", conv_b)):
        if t is not None and tuple(t.shape) != (k,):
            raise ValueError(f"fuse_conv_bn_weights: batch norm {name} of shape {tuple(t.shape)} "
                             f"does not match the conv's {k} output channels")
    scale = _numpy(bn_w, 1.0, k) / np.sqrt(bn_rv.numpy().astype(np.float64) + float(bn_eps))
    w = conv_w.numpy().astype(np.float64) * scale.reshape(-1, 1, 1, 1)
    b = (_numpy(conv_b, 0.0, k) - bn_rm.numpy().astype(np.float64)) * scale + _numpy(bn_b, 0.0, k)
    like = dict(dtype=conv_w.dtype, device=conv_w.device, requires_grad=conv_w.requires_grad)
    return Parameter(w, **like), Parameter(b, **like)


def _require_eval(what, *modules):
    for m in modules:
        if m.training:
            raise RuntimeError(f"{what}: {m._get_name()} is in training mode; fusion folds the "
                               "running statistics, so it works in eval mode only: call "
                               "model.eval() first")


def fuse_conv_bn_eval(conv, bn, transpose=False):
    """A new Conv2d computing bn(conv(x)) for an eval-mode conv and BatchNorm2d (as
    torch.nn.utils.fusion.fuse_conv_bn_eval); the two modules are left unchanged. A module
    in training mode raises RuntimeError; a bn of another width, ValueError."""
    if not isinstance(conv, Conv) or not isinstance(bn, BatchNorm2d):
        raise TypeError(f"fuse_conv_bn_eval: needs a Conv2d and a BatchNorm2d, got "
                        f"{type(conv).__name__} and {type(bn).__name__}")
    _require_eval("fuse_conv_bn_eval", conv, bn)
    fused = copy.copy(conv)   # its hyper-parameters; the Parameters are replaced below
    fused.weight, fused.bias = fuse_conv_bn_weights(
        conv.weight, conv.bias, getattr(bn, "running_mean", None),
        getattr(bn, "running_var", None), bn.eps, getattr(bn, "weight", None),
        getattr(bn, "bias", None), transpose)
    return fused


# fuse_modules ----------------------------------------------------------------------------
def _fuse_conv_relu(conv, relu):
    return ConvReLU2d(conv, relu)


def _fuse_conv_bn(conv, bn):
    return fuse_conv_bn_eval(conv, bn)


def _fuse_conv_bn_relu(conv, bn, relu):
    return ConvReLU2d(fuse_conv_bn_eval(conv, bn), relu)


# the patterns fuse_modules knows: module types -> the fused module
FUSERS = {(Conv, BatchNorm2d): _fuse_conv_bn, (Conv, ReLU): _fuse_conv_relu,
          (Conv, BatchNorm2d, ReLU): _fuse_conv_bn_relu}


def _pattern(modules):
    for types, fuser in FUSERS.items():
        if len(types) == len(modules) and all(type(m) is t for m, t in zip(modules, types)):
            return fuser
    got = ", ".join(m._get_name() for m in modules)
    known = "; ".join(", ".join("Conv2d" if t is Conv else t.__name__ for t in types)
                      for types in FUSERS)
    raise ValueError(f"fuse_modules: cannot fuse ({got}); the known patterns are {known}")


def _child(parent, part, path):
    """parent's child named part: an attribute, a Sequential / ModuleList index or key,
    or a list / dict item (so "net.0" and "net.modules_list.0" name the same module)."""
    try:
        if isinstance(parent, (ModuleDict, dict)):
            return parent[part]
        if isinstance(parent, (list, tuple)) or (part.isdigit() and
                                                 isinstance(parent, (Sequential, ModuleList))):
            return parent[int(part)]
        return getattr(parent, part)
    except (AttributeError, IndexError, KeyError, TypeError):
        raise KeyError(f"fuse_modules: the model has no submodule {path!r} (no {part!r})") from None


def _get(model, path):
    m = model
    for part in path.split("."):
        m = _child(m, part, path)
    if not isinstance(m, Module):
        raise KeyError(f"fuse_modules: {path!r} is a {type(m).__name__}, not a module")
    return m


def _set(model, path, new):
    *parents, last = path.split(".")
    parent = model
    for part in parents:
        parent = _child(parent, part, path)
    keys = getattr(parent, "_keys", None) if isinstance(parent, Sequential) else None
    if keys and last in keys:   # a Sequential built from an OrderedDict
        parent[keys.index(last)] = new
    elif isinstance(parent, ModuleDict):
        parent[last] = new
    elif isinstance(parent, list) or (last.isdigit() and
                                      isinstance(parent, (Sequential, ModuleList))):
        parent[int(last)] = new
    elif isinstance(parent, dict):
        parent[last] = new
    else:
        setattr(parent, last, new)


def _copy(model):
    """A deep copy with fresh copies of every parameter and buffer (their device buffers
    cannot be pickled, so deepcopy is told what each becomes)."""
    memo = {}
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) not in memo:
            cls = Parameter if isinstance(t, Parameter) else Tensor
            memo[id(t)] = cls(t.numpy().copy(), dtype=t.dtype, device=t.device,
                              requires_grad=t.requires_grad)
    try:
        return copy.deepcopy(model, memo)
    except TypeError as e:   # some other attribute holds device memory
        raise TypeError(f"fuse_modules: cannot copy {model._get_name()} ({e}); pass "
                        "inplace=True to fuse the model itself") from None


def _groups(modules_to_fuse):
    if not modules_to_fuse:
        return []
    if all(isinstance(n, str) for n in modules_to_fuse):
        return [list(modules_to_fuse)]   # one group given flat, as torch accepts
    return [list(g) for g in modules_to_fuse]


def fuse_modules(model, modules_to_fuse, inplace=False):
    """Fuse each group of submodule names in modules_to_fuse (a list of lists, or one list)
    as torch.ao.quantization.fuse_modules: [conv, bn] -> a Conv2d with the batch norm
    folded in, [conv, bn, relu] and [conv, relu] -> ConvReLU2d; the first module of the
    group is replaced by the fused one, the others by Identity. Names are dotted paths
    ("net.0.0", or "net.modules_list.0.modules_list.0" as named_modules spells them).
    Returns the fused model: a copy unless inplace. Batch norm groups need eval mode
    (RuntimeError otherwise); an unknown pattern or name raises ValueError / KeyError."""
    groups = _groups(modules_to_fuse)
    names = [n for g in groups for n in g]
    if len(set(names)) != len(names):
        raise ValueError(f"fuse_modules: a module is named in more than one place: {groups}")
    for g in groups:   # every group checked before the model is touched
        if len(g) < 2:
            raise ValueError(f"fuse_modules: a group names at least two modules, got {g}")
        _pattern([_get(model, n) for n in g])
    if not inplace:
        model = _copy(model)
    for g in groups:
        modules = [_get(model, n) for n in g]
        fused = _pattern(modules)(*modules)
        _set(model, g[0], fused)
        for n in g[1:]:
            identity = Identity()
            identity.training = fused.training
            _set(model, n, identity)
    return model


def find_fusable(model):
    """The groups fuse_modules can fuse in model, as lists of dotted names ("net.0.0"):
    each Conv2d followed, inside a Sequential, by a BatchNorm2d and / or a ReLU."""
    found = []
    for prefix, m in _walk(model, ""):
        if isinstance(m, Sequential) and not isinstance(m, ConvReLU2d):
            found += _runs(list(m), [_join(prefix, label) for label in m._labels()])
    return found


def _join(prefix, name):
    return f"{prefix}.{name}" if prefix else name


def _walk(module, prefix):
    """(dotted name, module) for module and those under it, Sequential children named by
    their index or key as torch names them."""
    yield prefix, module
    if isinstance(module, Sequential):
        children = zip(module._labels(), module)
    else:
        children = module.named_children()
    for name, child in children:
        yield from _walk(child, _join(prefix, name))


def _runs(children, names):
    runs, i = [], 0
    while i < len(children):
        for size in (3, 2):
            types = tuple(type(c) for c in children[i:i + size])
            if types in FUSERS:
                runs.append(names[i:i + size])
                i += size - 1
                break
        i += 1
    return runs
