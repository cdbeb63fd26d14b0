"""Module and Parameter: parameters are found by walking attributes."""
from collections import OrderedDict

from ..autograd import Tensor, _observers
from ..ndarray import NDArray


class Parameter(Tensor):
    """A Tensor that a Module owns and an optimizer updates."""

    def __init__(self, data, dtype=None, device=None, requires_grad=True):
        super().__init__(data, dtype=dtype, device=device, requires_grad=requires_grad)


def _children(value, prefix):
    """(name, Parameter | Module) pairs inside value, recursing into lists/tuples/dicts."""
    if isinstance(value, (Parameter, Module)):
        yield prefix, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _children(v, f"{prefix}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _children(v, f"{prefix}.{i}")


class Module:
    def __init__(self):
        self.training = True

    def named_children(self):
        for name, value in vars(self).items():
            for child_name, child in _children(value, name):
                if isinstance(child, Module):
                    yield child_name, child

    def named_modules(self, prefix=""):
        yield prefix, self
        for name, child in self.named_children():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        return [m for _, m in self.named_modules()]

    def named_parameters(self, prefix=""):
        for name, value in vars(self).items():
            for child_name, child in _children(value, name):
                full = f"{prefix}.{child_name}" if prefix else child_name
                if isinstance(child, Parameter):
                    yield full, child
                else:
                    yield from child.named_parameters(full)

    def parameters(self):
        seen, out = set(), []
        for _, p in self.named_parameters():
            if id(p) not in seen:
                seen.add(id(p))
                out.append(p)
        return out

    def named_buffers(self, prefix=""):
        """Non-trainable state (e.g. running means) declared in _buffers."""
        for name in getattr(self, "_buffers", ()):
            yield (f"{prefix}.{name}" if prefix else name), name, self
        for name, child in self.named_children():
            yield from child.named_buffers(f"{prefix}.{name}" if prefix else name)

    def train(self, mode=True):
        for m in self.modules():
            m.training = mode
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def state_dict(self):
        """name -> numpy copy of every parameter and buffer."""
        state = OrderedDict((name, p.numpy()) for name, p in self.named_parameters())
        for full, name, owner in self.named_buffers():
            state[full] = getattr(owner, name).numpy()
        return state

    def load_state_dict(self, state):
        expected = {name for name, _ in self.named_parameters()} | {f for f, _, _ in self.named_buffers()}
        missing, unexpected = expected - set(state), set(state) - expected
        if missing or unexpected:
            raise KeyError(f"load_state_dict: missing keys {sorted(missing)}, unexpected keys {sorted(unexpected)}")
        for name, p in self.named_parameters():
            self._check_shape(name, p.shape, state[name])
            p.data = NDArray(state[name], dtype=p.dtype, device=p.device)
        for full, name, owner in self.named_buffers():
            old = getattr(owner, name)
            self._check_shape(full, old.shape, state[full])
            setattr(owner, name, Tensor(state[full], dtype=old.dtype, device=old.device))

    @staticmethod
    def _check_shape(name, shape, value):
        if tuple(value.shape) != tuple(shape):
            raise ValueError(f"load_state_dict: {name} has shape {tuple(value.shape)}, the model expects {tuple(shape)}")

    def to(self, device):
        for _, p in self.named_parameters():
            p.cached_data = p.cached_data.to(device)
        for _, name, owner in self.named_buffers():
            setattr(owner, name, getattr(owner, name).to(device))
        return self

    def forward(self, *args):
        raise NotImplementedError

    def __call__(self, *args, **kwargs):
        if not _observers:
            return self.forward(*args, **kwargs)
        # the profiler and the ONNX tracer see which module each op runs in
        scopes = [(o, o.module_begin(self, args)) for o in _observers if hasattr(o, "module_begin")]
        out = self.forward(*args, **kwargs)
        for o, token in reversed(scopes):
            o.module_end(token, out)
        return out


class Identity(Module):
    def forward(self, x):
        return x


class Sequential(Module):
    def __init__(self, *modules):
        super().__init__()
        self.modules_list = list(modules)

    def forward(self, x):
        for m in self.modules_list:
            x = m(x)
        return x

    def __getitem__(self, i):
        return self.modules_list[i]

    def __len__(self):
        return len(self.modules_list)


class Residual(Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x) + x
