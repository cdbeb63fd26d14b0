"""Containers: Sequential, ModuleList, ModuleDict (PyTorch's behaviour).

Sequential(*modules) keeps its modules in self.modules_list, so their state-dict names are
modules_list.0.weight, ... as mininet's checkpoints have always had them (torch's are
0.weight: mininet.interop maps the two); printing, indexing and iteration are torch's.
Sequential(OrderedDict), ModuleList and ModuleDict name their items as torch does:
layers.0.weight, blocks.conv.weight.
"""
import operator
from collections import OrderedDict
from typing import Any

from ..autograd import _observers
from .activation import ReLU
from .module import Module
from .layers import Conv, Linear
from .norm import BatchNorm1d, BatchNorm2d

_FUSED_WITH_RELU = (BatchNorm1d, BatchNorm2d, Conv, Linear)   # classes with forward_relu
_FUSED_ALWAYS = (Conv, Linear)   # in eval too (a BatchNorm fuses only while training)


def _module(what, m):
    if not isinstance(m, Module):
        raise TypeError(f"{what}: {type(m).__name__} is not a Module")
    return m


def _index(what, i, n):
    """i as an index into n items (negative from the end), else IndexError."""
    try:
        i = operator.index(i)
    except TypeError:
        raise TypeError(f"{what}: indices must be ints or slices, got {type(i).__name__}") from None
    if not -n <= i < n:
        raise IndexError(f"{what}: index {i} is out of range for {n} modules")
    return i % n


def _key(what, key):
    if not isinstance(key, str) or not key or "." in key:
        raise KeyError(f"{what}: a module name must be a non-empty str without '.', got {key!r}")
    return key


class Sequential(Module):
    """Modules called in order, each on the previous one's output: forward(x) takes the
    shape the first module takes and gives what the last gives. Built from modules
    (children named 0, 1, ...) or from one OrderedDict of name -> module (children named by
    their keys, reachable as attributes), as torch's. Indexing gives a module, a slice a new
    Sequential."""

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            self._keys = [_key("Sequential", k) for k in modules[0]]
            modules = tuple(modules[0].values())
        else:
            self._keys = None
        self.modules_list = [_module("Sequential", m) for m in modules]

    def _attributes(self):
        if self._keys is None:
            return super()._attributes()
        return list(zip(self._keys, self.modules_list))

    def _labels(self):
        return self._keys if self._keys is not None else [str(i) for i in range(len(self))]

    def _repr_children(self):
        return [(label, repr(m)) for label, m in zip(self._labels(), self.modules_list)]

    def __getattr__(self, name):   # only for names not found the usual way: a keyed module
        keys = self.__dict__.get("_keys")
        if keys is not None and name in keys:
            return self.modules_list[keys.index(name)]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def forward(self, x: Any) -> Any:
        """x through every module in order: returns the last module's output (its
        shape is what that module gives; the input shape is what the first takes).
        A training BatchNorm, or a Linear or Conv2d, followed by a ReLU runs as one fused op
        (same result)."""
        mods = self.modules_list
        fused = self._bn_relu_pairs(mods)
        if not fused or _observers:   # the profiler and ONNX tracer see every module
            for m in mods:
                x = m(x)
            return x
        i, n = 0, len(mods)
        while i < n:
            m = mods[i]
            if i in fused and (m.training or type(m) in _FUSED_ALWAYS):
                x, i = m.forward_relu(x), i + 2
            else:
                x, i = m(x), i + 1
        return x

    def _bn_relu_pairs(self, mods):
        """Indices i of mods where a BatchNorm1d/2d, Linear or Conv2d is followed by a ReLU (those
        classes exactly: a subclass may change forward), cached until the modules' types
        change."""
        key = tuple(map(type, mods))
        cache = self.__dict__.get("_pairs")
        if cache is None or cache[0] != key:
            pairs = frozenset(i for i in range(len(mods) - 1)
                              if key[i] in _FUSED_WITH_RELU and key[i + 1] is ReLU)
            cache = self.__dict__["_pairs"] = (key, pairs)
        return cache[1]

    def __getitem__(self, i):
        if isinstance(i, slice):
            if self._keys is None:
                return Sequential(*self.modules_list[i])
            return Sequential(OrderedDict(zip(self._keys[i], self.modules_list[i])))
        return self.modules_list[_index("Sequential", i, len(self))]

    def __setitem__(self, i, m):
        self.modules_list[_index("Sequential", i, len(self))] = _module("Sequential", m)

    def __delitem__(self, i):
        if not isinstance(i, slice):
            i = _index("Sequential", i, len(self))
        del self.modules_list[i]
        if self._keys is not None:
            del self._keys[i]

    def __len__(self):
        return len(self.modules_list)

    def __iter__(self):
        return iter(list(self.modules_list))

    def append(self, m):
        """Add module `m` at the end (named by the next free index); returns self."""
        return self.insert(len(self), m)

    def extend(self, modules):
        """Add each module of the iterable `modules` at the end, in order; returns
        self."""
        for m in modules:
            self.append(m)
        return self

    def insert(self, index, m):
        """Insert module `m` before position `index` (negative counts from the end);
        the children after it are renamed. Returns self."""
        n = len(self)
        if not isinstance(index, int) or not -n <= index <= n:
            raise IndexError(f"Sequential.insert: index {index!r} is out of range for {n} modules")
        index = index + n if index < 0 else index
        self.modules_list.insert(index, _module("Sequential", m))
        if self._keys is not None:
            self._keys.insert(index, _key("Sequential", self._free_key()))
        return self

    def _free_key(self):
        k = len(self._keys)
        while str(k) in self._keys:
            k += 1
        return str(k)

    def pop(self, index=-1):
        """Remove and return the module at position `index` (default the last);
        IndexError when out of range."""
        m = self[index]
        del self[index]
        return m


class ModuleList(Module):
    """A list of modules, children named 0, 1, ..., whose parameters the parent sees
    (a plain Python list would hide them). It has no forward of its own, so no input or output
    shape: index it and call the modules."""

    def __init__(self, modules=None):
        super().__init__()
        self._items = []
        if modules is not None:
            self.extend(modules)

    def _attributes(self):
        return [(str(i), m) for i, m in enumerate(self._items)]

    def _repr_children(self):
        """Runs of identical modules as torch prints them: (0-2): 3 x Linear(...)."""
        out, texts, i = [], [repr(m) for m in self._items], 0
        while i < len(texts):
            j = i
            while j + 1 < len(texts) and texts[j + 1] == texts[i]:
                j += 1
            out.append((str(i), texts[i]) if i == j else (f"{i}-{j}", f"{j - i + 1} x {texts[i]}"))
            i = j + 1
        return out

    def __getitem__(self, i):
        if isinstance(i, slice):
            return ModuleList(self._items[i])
        return self._items[_index("ModuleList", i, len(self))]

    def __setitem__(self, i, m):
        self._items[_index("ModuleList", i, len(self))] = _module("ModuleList", m)

    def __delitem__(self, i):
        del self._items[i if isinstance(i, slice) else _index("ModuleList", i, len(self))]

    def __len__(self):
        return len(self._items)

    def __iter__(self):
        return iter(list(self._items))

    def __iadd__(self, modules):
        return self.extend(modules)

    def __add__(self, other):
        return ModuleList(list(self) + list(other))

    def append(self, m):
        """Add module `m` at the end; returns self."""
        self._items.append(_module("ModuleList", m))
        return self

    def extend(self, modules):
        """Add each module of the iterable `modules` at the end, in order; returns
        self."""
        if isinstance(modules, (Module, str)) or not hasattr(modules, "__iter__"):
            raise TypeError(f"ModuleList.extend: takes an iterable of modules, got "
                            f"{type(modules).__name__}")
        for m in modules:
            self.append(m)
        return self

    def insert(self, index, m):
        """Insert module `m` before position `index` (the children after it are
        renamed)."""
        self._items.insert(index, _module("ModuleList", m))

    def pop(self, index=-1):
        """Remove and return the module at position `index` (default the last);
        IndexError when out of range."""
        return self._items.pop(_index("ModuleList", index, len(self)))

    def index(self, m):
        """The position of m (by identity), else ValueError."""
        for i, item in enumerate(self._items):
            if item is m:
                return i
        raise ValueError(f"ModuleList.index: {type(m).__name__} is not in the list")


class ModuleDict(Module):
    """An ordered dict of modules, children named by their keys (reachable as
    d["key"] or d.key). It has no forward of its own, so no input or output shape: look up and
    call the modules. Keys must be non-empty strings without "." (KeyError otherwise)."""

    def __init__(self, modules=None):
        super().__init__()
        self._items = OrderedDict()
        if modules is not None:
            self.update(modules)

    def _attributes(self):
        return list(self._items.items())

    def __getattr__(self, name):   # d.key as d["key"], as torch's
        items = self.__dict__.get("_items")
        if items is not None and name in items:
            return items[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __getitem__(self, key):
        if key not in self._items:
            raise KeyError(f"ModuleDict: no module named {key!r}")
        return self._items[key]

    def __setitem__(self, key, m):
        self._items[_key("ModuleDict", key)] = _module("ModuleDict", m)

    def __delitem__(self, key):
        del self._items[key]

    def __len__(self):
        return len(self._items)

    def __iter__(self):
        return iter(list(self._items))

    def __contains__(self, key):
        return key in self._items

    def keys(self):
        """The keys (module names), in insertion order, as a dict view."""
        return self._items.keys()

    def values(self):
        """The modules, in insertion order, as a dict view."""
        return self._items.values()

    def items(self):
        """(name, module) pairs, in insertion order, as a dict view."""
        return self._items.items()

    def update(self, modules):
        """Add or replace modules from a mapping or an iterable of (name, module)
        pairs, in their order."""
        pairs = modules.items() if hasattr(modules, "items") else modules
        for pair in pairs:
            if len(pair) != 2:
                raise ValueError(f"ModuleDict.update: expected (name, module) pairs, got {pair!r}")
            self[pair[0]] = pair[1]

    def pop(self, key):
        """Remove the module named `key` and return it; KeyError when absent."""
        m = self[key]
        del self._items[key]
        return m

    def clear(self):
        """Remove every module from the dict (and from the parent's children)."""
        self._items.clear()
