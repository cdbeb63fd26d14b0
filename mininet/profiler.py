"""An op-level profiler, shaped like PyTorch's:

    with mininet.profiler.profile() as prof:
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
    print(prof.table(sort_by="self_time", row_limit=20))
    prof.export_chrome_trace("trace.json")      # chrome://tracing or ui.perfetto.dev

It records every op's forward and backward (calls, wall time, time inside device
kernels, input shapes, FLOPs, bytes moved), the module each op ran in (module scopes
are events of their own), backward passes and optimizer steps. An op built while
another op's gradient runs belongs to the backward phase, as a child of that gradient.

How: autograd's op observers (begin/end around an op's forward and around a node's
gradient; module_begin/module_end around Module.__call__). While a profiler runs it
also wraps, class-wide, every kernel of the Device protocol (kernels run in op.compute,
in gradients computed straight on NDArrays and in optimizer updates alike),
Optimizer.step and autograd's backward pass; the last profiler to stop restores them.
With no profiler running the library pays autograd's one list check per op.

Times are wall clock (perf_counter_ns). "self" excludes the events nested inside,
"total" includes them. On an asynchronous device (CUDA) a kernel's time is its launch
unless profile(synchronize=True) waits for each kernel.
"""
from __future__ import annotations

import collections
import functools
import json
import math
import os
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import autograd, optim
from .backend.device import CORE_KERNELS, KERNELS, Device
from .interop.atomic import write_atomically

_now = time.perf_counter_ns

# protocol calls that hand out memory rather than compute
_NOT_KERNELS = ("alloc", "share", "array_view")
# matmul_new: a device's optional allocate-and-multiply (the CPU's 2-D products)
KERNEL_NAMES = tuple(n for n in CORE_KERNELS + sum(KERNELS.values(), ()) + ("matmul_new",)
                     if n not in _NOT_KERNELS)

# one finished scope: an op's forward or backward, a module call, a backward pass, an
# optimizer step or a record_function block. Times in ns; flops/nbytes None if unknown.
Event = collections.namedtuple("Event", [
    "name", "cat", "tid", "start", "dur", "self_ns", "kernel_ns", "self_kernel_ns", "flops",
    "nbytes", "shapes", "module", "args"])


# FLOPs per op class ------------------------------------------------------------------
# Counted as the kernels compute: matmul and convolution 2 per multiply-add (bias adds
# left out, as PyTorch's counter does), elementwise ops 1 per output element, reductions
# 1 per input element, fused ops the sum of their steps per element. ins are the input
# arrays (an NDArray, or a tuple of them for a TensorTuple), out the output.
def _size(shape):
    return math.prod(shape)


def _matmul(a, b):
    """2 M N K for each product of the broadcast batch."""
    batch = _size(np.broadcast_shapes(a[:-2], b[:-2]))
    return 2 * batch * a[-2] * a[-1] * b[-1]


def _linear(x, w):
    return 2 * _size(x[:-1]) * w[0] * w[1]


def _per_output(n):
    return lambda op, ins, out: n * out.size


def _per_input(n):
    return lambda op, ins, out: n * ins[0].size


def _conv(op, ins, out):
    """2 N K (C/groups) kh kw Hout Wout: the output's size times 2 (C/groups) kh kw."""
    return 2 * out.size * _size(ins[1].shape[1:])


def _conv_grad_input(op, ins, out):   # ins: output grad (N, K, oh, ow), weight
    return 2 * ins[0].size * _size(ins[1].shape[1:])


def _conv_grad_weight(op, ins, out):  # ins: output grad, input; out: dW (K, C/g, kh, kw)
    return 2 * ins[0].size * _size(out.shape[1:])


def _pool(op, ins, out):
    """One per window element: the window's size per output (per input grad of the adjoint)."""
    return _size(op.kernel) * (ins[0].size if getattr(op, "backward", False) else out.size)


def _lstm_layer(op, ins, out):
    s, b, n4 = ins[0].shape
    return s * (2 * b * (n4 // 4) * n4 + b * n4 + 9 * b * (n4 // 4))


def _gru_layer(op, ins, out):
    """Per step: h_t @ w_hh, then per unit r and z (add, sigmoid), n (product, add, tanh),
    h' = n + z (h - n); b_hh's adds left out, as Linear's bias."""
    s, b, n3 = ins[0].shape
    return s * (2 * b * (n3 // 3) * n3 + 10 * b * (n3 // 3))


def _rnn_layer(op, ins, out):
    """Per step: h_t @ w_hh, the add, tanh or relu."""
    s, b, n = ins[0].shape
    return s * (2 * b * n * n + 2 * b * n)


_ELEMENTWISE = ("EWiseAdd AddScalar EWiseMul MulScalar EWiseDiv DivScalar PowerScalar EWisePow "
                "Negate Exp Log Log1p Expm1 Abs Clip Sqrt Tanh Sigmoid ReLU ReLUGrad Maximum "
                "MaskPass Erf Gelu GeluGrad GeluTanh GeluTanhGrad SiLU SiLUGrad TanhGrad "
                "SigmoidGrad LeakyReLU ELU ELUSlope Softplus SoftplusSlope Cumsum").split()
_REDUCTIONS = ("Summation Max Prod ConvGradBias EmbeddingGrad MaxPoolScatter "
               "TakeAdjoint").split()
# no arithmetic: views and copies (their bytes count unless the output is a view)
_DATA_MOVES = ("Reshape Permute BroadcastTo GetItem ScatterItem Stack Concatenate Split "
               "MakeTuple TupleGetItem Take Cast ToDevice Clone EmbeddingLookup "
               "MaxPoolGather").split()

FORWARD_FLOPS = {
    **{name: _per_output(1) for name in _ELEMENTWISE},
    **{name: _per_input(1) for name in _REDUCTIONS},
    **{name: (lambda op, ins, out: 0) for name in _DATA_MOVES},
    "MatMul": lambda op, ins, out: _matmul(ins[0].shape, ins[1].shape),
    "Linear": lambda op, ins, out: _linear(ins[0].shape, ins[1].shape),
    "Conv": _conv, "ConvGradInput": _conv_grad_input, "ConvGradWeight": _conv_grad_weight,
    "ConvReLU": lambda op, ins, out: _conv(op, ins, out) + out.size,   # conv, then max(0, .)
    "MaxPool2d": _pool, "AvgPool2d": _pool,
    "Norm2": _per_input(2),            # square, add
    "ProdOthers": _per_input(3),       # two running products, one product
    "LogSumExp": _per_input(4),        # max, subtract, exp, add
    "LogSoftmax": _per_input(5),       # max, subtract, exp, add, subtract
    "Softmax": _per_input(5),          # max, subtract, exp, add, divide
    "SoftmaxCrossEntropy": _per_input(5),
    "SoftmaxCrossEntropyGrad": _per_input(2),
    "BatchNorm": _per_input(7),        # mean, centre, square and add, scale, weight, bias
    # per unit: 3 sigmoids, 2 tanh, f*c + i*g, o*tanh(c)
    "LSTMGates": lambda op, ins, out: 9 * ins[1].size,
    "LSTMLayer": _lstm_layer,
    "GRULayer": _gru_layer,
    "RNNLayer": _rnn_layer,
}


# A gradient that runs kernels itself (on NDArrays, when no graph of it is recorded) does
# this many FLOPs; `recorded`: grad mode was on, so it built ops, which count themselves.
# An op known above but absent here builds its gradient from ops: 0 of its own.
def _matmul_backward(op, ins, req, recorded):
    return 0 if recorded else _matmul(ins[0].shape, ins[1].shape) * sum(req[:2])


def _linear_backward(op, ins, req, recorded):
    if recorded:
        return 0
    bias = ins[0].size // ins[0].shape[-1] * ins[1].shape[1] if len(ins) == 3 and req[2] else 0
    return _linear(ins[0].shape, ins[1].shape) * sum(req[:2]) + bias


def _fused_backward(per_unit, which):
    """per_unit FLOPs for each element of input `which`, unless the gradient is recorded."""
    return lambda op, ins, req, recorded: 0 if recorded else per_unit * ins[which].size


def _lstm_layer_backward(op, ins, req, recorded):
    """Per step: dh += dhs[t], the gate gradient (22 per unit), dh = dz[t] @ w_hh^T; then
    w_hh's gradient as one product over all steps."""
    if recorded:
        return 0
    s, b, n4 = ins[0].shape
    n = n4 // 4
    return s * (23 * b * n + 2 * b * n4 * n) + 2 * n * s * b * n4


def _gru_layer_backward(op, ins, req, recorded):
    """Per step: the gates' gradient (15 per unit), dh = dhp[t] @ w_hh^T plus dh z; then
    w_hh's gradient as one product over all steps, b_hh's as one sum."""
    if recorded:
        return 0
    s, b, n3 = ins[0].shape
    n = n3 // 3
    bias = s * b * n3 if len(ins) == 4 else 0
    return s * (16 * b * n + 2 * b * n3 * n) + 2 * n * s * b * n3 + bias


def _rnn_layer_backward(op, ins, req, recorded):
    """Per step: dh + dhs[t] times the derivative (4 per unit), dh = dz[t] @ w_hh^T; then
    w_hh's gradient as one product over all steps."""
    if recorded:
        return 0
    s, b, n = ins[0].shape
    return s * (4 * b * n + 2 * b * n * n) + 2 * n * s * b * n


BACKWARD_FLOPS = {
    "MatMul": _matmul_backward,
    "Linear": _linear_backward,
    # sums of g and g * xhat, then dx = (N g - sum g - xhat sum(g xhat)) w inv / N
    "BatchNorm": lambda op, ins, req, recorded: (0 if recorded or not op.fused
                                                 else 8 * ins[0].size),
    "LSTMGates": _fused_backward(22, 1),   # dct, four gate blocks, dc_prev
    "LSTMLayer": _lstm_layer_backward,
    "GRULayer": _gru_layer_backward,
    "RNNLayer": _rnn_layer_backward,
    "Abs": lambda op, ins, req, recorded: ins[0].size,          # the sign mask
    "Clip": lambda op, ins, req, recorded: 3 * ins[0].size,     # two compares, a product
    "Max": lambda op, ins, req, recorded: 4 * ins[0].size,      # compare, sum, divide
}


def _arrays(data):
    return data if isinstance(data, tuple) else (data,)


def _nbytes(data):
    if isinstance(data, tuple):
        return sum(a.size * a.dtype.itemsize for a in data)
    return data.size * data.dtype.itemsize


def _shape(data):
    return tuple([a.shape for a in data]) if isinstance(data, tuple) else data.shape


def _is_view(ins, out):
    """Every output array shares a buffer with an input: nothing was moved."""
    handles = {id(a.handle) for x in ins for a in _arrays(x)}
    return all(id(a.handle) in handles for a in _arrays(out))


def forward_cost(op: autograd.Op, ins: Sequence[Any], out: Any) -> tuple[int | None, int]:
    """(FLOPs or None, bytes read and written) of op.compute(*ins) -> out (NDArrays)."""
    name = type(op).__name__
    if name in _DATA_MOVES and _is_view(ins, out):
        return 0, 0
    count = FORWARD_FLOPS.get(name)
    nbytes = _nbytes(out)
    for x in ins:
        nbytes += _nbytes(x)
    return (None if count is None else count(op, ins, out)), nbytes


def backward_cost(op: autograd.Op, ins: Sequence[Any], requires: Sequence[bool], recorded: Any,
                  grads: Any) -> tuple[int | None, int | None]:
    """(FLOPs, bytes) that op's gradient computes itself; (None, None) for unknown ops."""
    name = type(op).__name__
    count = BACKWARD_FLOPS.get(name)
    if count is None:
        return (0, 0) if name in FORWARD_FLOPS else (None, None)
    flops = count(op, ins, requires, recorded)
    if not flops:
        return 0, 0
    written = sum(_nbytes(g.cached_data) for g in grads if g is not None)
    return flops, sum(_nbytes(x) for x in ins) + written


# timing kernels and scopes while a profiler runs ----------------------------------------
class _KernelClock(threading.local):
    """cell[0]: nanoseconds this thread has spent inside device kernels (outermost calls
    only: a kernel that calls another counts once); cell[1]: 1 inside one. A list, so
    the wrapper reaches the thread-local once per call."""

    def __init__(self):
        self.cell = [0, 0]


_kernels = _KernelClock()
_active: list[profile] = []    # running profilers, in the order they started
_sync = False   # some running profiler waits for each kernel


def _kernel_ns():
    return _kernels.cell[0]


def _timed_kernel(fn):
    @functools.wraps(fn)
    def kernel(device, *args, **kwargs):
        cell = _kernels.cell
        if cell[1]:
            return fn(device, *args, **kwargs)
        cell[1] = 1
        start = _now()
        try:
            out = fn(device, *args, **kwargs)
            if _sync and not device.synchronous:
                device.synchronize()
            return out
        finally:
            cell[0] += _now() - start
            cell[1] = 0
    return kernel


def _scoped(fn, cat, name_of):
    """fn as an event of category cat in every running profiler."""
    @functools.wraps(fn)
    def scoped(*args, **kwargs):
        if not _active:
            return fn(*args, **kwargs)
        frames = [p._open_scope(name_of(args), cat) for p in _active]
        try:
            return fn(*args, **kwargs)
        finally:
            for frame in reversed(frames):
                frame.owner._close(frame)
    return scoped


def _subclasses(cls):
    out, todo = [], [cls]
    while todo:
        c = todo.pop()
        out.append(c)
        todo.extend(c.__subclasses__())
    return out


class _Patches:
    """The wrappers installed while at least one profiler runs."""

    def __init__(self):
        self.saved = []   # (owner, name, original), in the order replaced

    def install(self):
        for cls in _subclasses(Device)[1:]:
            for name in KERNEL_NAMES:
                if name in vars(cls):
                    self._replace(cls, name, _timed_kernel(vars(cls)[name]))
        for cls in _subclasses(optim.Optimizer):
            if "step" in vars(cls):
                self._replace(cls, "step", _scoped(vars(cls)["step"], "optimizer",
                                                   lambda a: f"{type(a[0]).__name__}.step"))
        self._replace(autograd, "compute_gradient_of_variables",
                      _scoped(autograd.compute_gradient_of_variables, "backward",
                              lambda a: "autograd.backward"))

    def _replace(self, owner, name, new):
        self.saved.append((owner, name, vars(owner)[name]))
        setattr(owner, name, new)

    def remove(self):
        while self.saved:
            owner, name, old = self.saved.pop()
            setattr(owner, name, old)


_patches = _Patches()


def _set_active(profiler, running):
    """Add or remove a running profiler; the first installs the wrappers, the last removes
    them."""
    global _sync
    if running:
        _active.append(profiler)
        if len(_active) == 1:
            _patches.install()
    elif profiler in _active:
        _active.remove(profiler)
        if not _active:
            _patches.remove()
    _sync = any(p.synchronize for p in _active)


# the profiler -------------------------------------------------------------------------
class _Frame:
    """An open scope on one thread's stack."""
    __slots__ = ("owner", "stack", "depth", "name", "cat", "backward", "module", "paths",
                 "op", "inputs", "recorded", "args", "start", "kernel0", "child_ns",
                 "child_kernel")

    def __init__(self, owner, stack, name, cat, backward, module, paths, op=None, inputs=None):
        self.owner, self.stack, self.depth = owner, stack, len(stack)
        self.name, self.cat, self.backward = name, cat, backward
        self.module, self.paths = module, paths
        self.op, self.inputs, self.args = op, inputs, None
        self.child_ns = self.child_kernel = 0


class _Stack(list):
    __slots__ = ("tid",)


SORT_KEYS = {"self_time": "self_ms", "total_time": "total_ms", "kernel_time": "kernel_ms",
             "calls": "calls", "flops": "flops",
             # PyTorch's names for the same orders
             "self_cpu_time_total": "self_ms", "cpu_time_total": "total_ms", "count": "calls"}
TABLE_COLUMNS = ("Name", "Phase", "Calls", "Self ms", "Total ms", "Kernel ms", "Self %",
                 "GFLOPS", "MB")


class profile:
    """Records ops, module scopes, backward passes and optimizer steps run inside the
    `with` block (on every thread). record_shapes: keep each op's input shapes;
    synchronize: wait for each kernel on asynchronous devices so kernel times are true."""

    def __init__(self, record_shapes=True, synchronize=False):
        self.record_shapes, self.synchronize = record_shapes, synchronize
        self.start_ns = self.stop_ns = None
        self.kernel_ns = 0         # kernel time on the thread that ran the block
        self._kernel0 = 0
        self._records = []         # Event fields as plain tuples (cheaper to make)
        self._tls = threading.local()
        self._stacks = []
        self._op_modules = {}      # id(forward op) -> (weakref to it, its module)
        self._module_paths = {}    # id(root module) -> (root, {id(module): path})

    # starting and stopping --------------------------------------------------------------
    def __enter__(self):
        if self.start_ns is not None:
            raise RuntimeError("profile: this profiler has run already; make a new one")
        try:
            _set_active(self, True)
            autograd.add_observer(self)
        except BaseException:
            self._detach()
            raise
        self._kernel0 = _kernel_ns()
        self.start_ns = _now()
        return self

    def __exit__(self, *exc):
        self.stop_ns = _now()
        self.kernel_ns = _kernel_ns() - self._kernel0
        self._detach()
        for stack in self._stacks:   # scopes an exception left open end now
            while stack:
                self._finish(stack.pop(), self.stop_ns, _kernel_ns(), unfinished=True)
        return False

    def _detach(self):
        if self in autograd._observers:
            autograd.remove_observer(self)
        _set_active(self, False)

    @property
    def events(self) -> list[Event]:
        """The finished scopes (Event tuples), in the order they ended."""
        return [Event._make(r) for r in self._records]

    @property
    def wall_ns(self) -> int:
        """The profiled time: the block's, or so far while it runs."""
        if self.start_ns is None:
            return 0
        return (self.stop_ns if self.stop_ns is not None else _now()) - self.start_ns

    # the observer protocol (mininet.autograd) ----------------------------------------------
    def begin(self, op, inputs, phase):
        """Observer protocol: op (an Op) starts its forward (phase "forward") or its
        gradient ("backward") on inputs; returns the frame that end() closes."""
        stack = self._stack()
        parent = stack[-1] if stack else None
        if phase == "backward":
            module = parent.module if parent is not None else None
            entry = self._op_modules.get(id(op))
            if entry is not None and entry[0]() is op:   # the module its forward ran in
                module = entry[1]
            frame = _Frame(self, stack, type(op).__name__, "backward", True, module,
                           parent.paths if parent is not None else None, op, inputs)
            frame.recorded = autograd.grad_enabled()
        elif parent is None:
            frame = _Frame(self, stack, type(op).__name__, "forward", False, None, None, op, inputs)
        else:
            frame = _Frame(self, stack, type(op).__name__,
                           "backward" if parent.backward else "forward", parent.backward,
                           parent.module, parent.paths, op, inputs)
        self._open(frame)
        return frame

    def end(self, frame: Any, result: Any) -> None:   # the observer protocol's name for _close
        """Observer protocol: the op begin() opened has finished with result."""
        self._close(frame, result)

    def module_begin(self, module: Any, args: Sequence[Any]) -> Any:
        """Observer protocol: a Module call starts (a scope named by its class and path)."""
        stack = self._stack()
        parent = stack[-1] if stack else None
        paths = parent.paths if parent is not None and parent.paths is not None \
            else self._paths_of(module)
        cls = type(module).__name__
        path = paths.get(id(module))
        name = f"{cls} ({path})" if path else cls
        frame = _Frame(self, stack, name, "module", parent is not None and parent.backward,
                       name, paths)
        self._open(frame)
        return frame

    def module_end(self, frame: Any, output: Any) -> None:
        """Observer protocol: the Module call module_begin() opened has returned output."""
        self._close(frame)

    # scopes ------------------------------------------------------------------------------
    def _stack(self):
        try:
            return self._tls.stack
        except AttributeError:
            stack = self._tls.stack = _Stack()
            stack.tid = threading.get_native_id()
            self._stacks.append(stack)
            return stack

    def _open_scope(self, name, cat, args=None):
        stack = self._stack()
        parent = stack[-1] if stack else None
        if parent is None:
            frame = _Frame(self, stack, name, cat, cat == "backward", None, None)
        else:
            frame = _Frame(self, stack, name, cat, cat == "backward" or parent.backward,
                           parent.module, parent.paths)
        frame.args = args
        self._open(frame)
        return frame

    @staticmethod
    def _open(frame):
        frame.stack.append(frame)
        frame.kernel0 = _kernels.cell[0]
        frame.start = _now()

    def _close(self, frame, result=None):
        now, kernel = _now(), _kernels.cell[0]
        stack, depth = frame.stack, frame.depth
        if len(stack) <= depth or stack[depth] is not frame:
            return   # ended already: an enclosing scope closed it, or the profiler stopped
        while len(stack) > depth + 1:   # scopes an exception left open inside it
            self._finish(stack.pop(), now, kernel, unfinished=True)
        stack.pop()
        self._finish(frame, now, kernel, result)

    def _finish(self, frame, now, kernel, result=None, unfinished=False):
        stack = frame.stack
        dur, kernel_ns = now - frame.start, kernel - frame.kernel0
        if stack:
            parent = stack[-1]
            parent.child_ns += dur
            parent.child_kernel += kernel_ns
        flops = nbytes = shapes = None
        if frame.op is not None:
            if self.record_shapes:
                shapes = tuple([_shape(x.cached_data) for x in frame.inputs])
            if result is not None:
                flops, nbytes = self._cost(frame, result)
        args = {**(frame.args or {}), "unfinished": True} if unfinished else frame.args
        self._records.append((frame.name, frame.cat, stack.tid, frame.start, dur,
                              dur - frame.child_ns, kernel_ns, kernel_ns - frame.child_kernel,
                              flops, nbytes, shapes, frame.module, args))

    def _cost(self, frame, result):
        op, inputs = frame.op, frame.inputs
        ins = [x.cached_data for x in inputs]
        if isinstance(result, autograd.Value):      # a forward: the value it built
            if result.op is not None:   # kept for backward: remember its module
                self._op_modules[id(op)] = (weakref.ref(op), frame.module)
            return forward_cost(op, ins, result.cached_data)
        requires = [x.requires_grad for x in inputs]
        return backward_cost(op, ins, requires, frame.recorded, result)

    def _paths_of(self, root):
        """{id(module): dotted path} for root's modules (root itself: "")."""
        entry = self._module_paths.get(id(root))
        if entry is None or entry[0] is not root:
            entry = (root, {id(m): path for path, m in root.named_modules()})
            self._module_paths[id(root)] = entry
        return entry[1]

    # results -----------------------------------------------------------------------------
    def key_averages(self, group_by_input_shape=False):
        """One dict per (name, phase) (and input shapes when grouped by them): calls, self_ms,
        total_ms, kernel_ms (self), kernel_total_ms, self_pct (of the profiled time), flops,
        gflops (per self second), bytes, mb, input_shapes; in order of first appearance."""
        groups = {}
        for e in self.events:
            key = (e.name, e.cat, e.shapes) if group_by_input_shape else (e.name, e.cat)
            groups.setdefault(key, []).append(e)
        wall = self.wall_ns
        return [_row(events, wall) for events in groups.values()]

    def table(self, sort_by: str = "self_time", row_limit: int | None = 20,
              group_by_input_shape: bool = False) -> str:
        """The top rows as text, like PyTorch's prof.key_averages().table(); row_limit None
        (or < 0) shows every row."""
        rows = sort_rows(self.key_averages(group_by_input_shape), sort_by, row_limit)
        return format_table(rows, group_by_input_shape) + "\n" + self.summary_line() + "\n"

    def summary(self) -> dict[str, Any]:
        """The profiled time, kernel time (the thread that ran the block) and the share of
        time outside kernels."""
        wall = self.wall_ns
        if self.start_ns is None:
            kernel = 0
        elif self.stop_ns is not None:
            kernel = self.kernel_ns
        else:
            kernel = _kernel_ns() - self._kernel0
        return {"wall_ms": wall / 1e6, "kernel_ms": kernel / 1e6,
                "outside_kernels": 1.0 - kernel / wall if wall else 0.0,
                "events": len(self.events)}

    def summary_line(self) -> str:
        """summary() as the one line table() ends with."""
        s = self.summary()
        return (f"Profiled time: {s['wall_ms']:.3f} ms; in kernels: {s['kernel_ms']:.3f} ms; "
                f"outside kernels: {100 * s['outside_kernels']:.1f}%")

    def __str__(self):
        return self.table()

    def chrome_trace(self) -> dict[str, Any]:
        """The events in Chrome's Trace Event Format: complete ("X") events, microseconds
        from the start of the profile; parents before their children."""
        pid, t0 = os.getpid(), self.start_ns or 0
        out = []
        for e in sorted(self.events, key=lambda e: (e.start, -e.dur)):
            args = {"self_us": e.self_ns / 1e3, "kernel_us": e.kernel_ns / 1e3}
            for key, value in (("input_shapes", e.shapes), ("flops", e.flops),
                               ("bytes", e.nbytes), ("module", e.module)):
                if value is not None:
                    args[key] = value
            args.update(e.args or {})
            out.append({"name": e.name, "cat": e.cat, "ph": "X", "ts": (e.start - t0) / 1e3,
                        "dur": e.dur / 1e3, "pid": pid, "tid": e.tid, "args": args})
        return {"traceEvents": out, "displayTimeUnit": "ms"}

    def export_chrome_trace(self, path: str | os.PathLike[str]) -> None:
        """Write chrome_trace() as JSON to path (atomically)."""
        data = json.dumps(self.chrome_trace()).encode()
        write_atomically(os.fspath(path), lambda f: f.write(data), "profiler trace")


class record_function:
    """A named scope (category "user") in every running profiler; nothing when none runs.
    args: a dict shown with the event in the trace."""

    def __init__(self, name, args=None):
        self.name, self.args, self.frames = name, args, []

    def __enter__(self):
        self.frames = [(p, p._open_scope(self.name, "user", self.args)) for p in _active]
        return self

    def __exit__(self, *exc):
        for p, frame in reversed(self.frames):
            p._close(frame)
        self.frames = []
        return False


# rows and the table ----------------------------------------------------------------------
def _row(events, wall_ns):
    first = events[0]
    self_ns = sum(e.self_ns for e in events)
    flops = None if any(e.flops is None for e in events) else sum(e.flops for e in events)
    nbytes = None if any(e.nbytes is None for e in events) else sum(e.nbytes for e in events)
    shapes = list(dict.fromkeys(e.shapes for e in events if e.shapes is not None))
    return {"name": first.name, "phase": first.cat, "calls": len(events),
            "self_ms": self_ns / 1e6, "total_ms": sum(e.dur for e in events) / 1e6,
            "kernel_ms": sum(e.self_kernel_ns for e in events) / 1e6,
            "kernel_total_ms": sum(e.kernel_ns for e in events) / 1e6,
            "self_pct": 100.0 * self_ns / wall_ns if wall_ns else 0.0,
            "flops": flops, "gflops": flops / self_ns if flops is not None and self_ns else None,
            "bytes": nbytes, "mb": None if nbytes is None else nbytes / 1e6,
            "input_shapes": [_jsonable(s) for s in shapes]}


def _jsonable(shape):
    return [_jsonable(s) if isinstance(s, tuple) else s for s in shape]


def sort_rows(rows: list[dict[str, Any]], sort_by: str = "self_time",
              row_limit: int | None = 20) -> list[dict[str, Any]]:
    """rows by sort_by (largest first: self_time, total_time, kernel_time, calls, flops),
    the first row_limit of them (None or < 0: all)."""
    if sort_by not in SORT_KEYS:
        raise ValueError(f"sort_by must be one of {', '.join(SORT_KEYS)}, got {sort_by!r}")
    key = SORT_KEYS[sort_by]
    rows = sorted(rows, key=lambda r: -1 if r[key] is None else r[key], reverse=True)
    return rows if row_limit is None or row_limit < 0 else rows[:row_limit]


def format_row(row: dict[str, Any]) -> tuple[str, ...]:
    """A row's cells for TABLE_COLUMNS ("-" where FLOPs or bytes are unknown)."""
    def maybe(value, fmt):
        return "-" if value is None else format(value, fmt)
    return (row["name"], row["phase"], str(row["calls"]), f"{row['self_ms']:.3f}",
            f"{row['total_ms']:.3f}", f"{row['kernel_ms']:.3f}", f"{row['self_pct']:.2f}%",
            maybe(row["gflops"], ".2f"), maybe(row["mb"], ".2f"))


def format_table(rows: list[dict[str, Any]], with_shapes: bool = False) -> str:
    """rows (key_averages dicts) as a text table between rules of dashes."""
    headers = TABLE_COLUMNS + (("Input shapes",) if with_shapes else ())
    cells = [format_row(r) + ((_shapes_text(r),) if with_shapes else ()) for r in rows]
    return _text_table(headers, cells)


def _shapes_text(row):
    return str(row["input_shapes"][0]) if row["input_shapes"] else ""


def _text_table(headers, cells, max_name=48):
    cells = [(c[0] if len(c[0]) <= max_name else c[0][:max_name - 3] + "...",) + tuple(c[1:])
             for c in cells]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(headers)]
    rule = "  ".join("-" * w for w in widths)

    def line(values):   # the name left-aligned, numbers right-aligned
        return "  ".join(v.ljust(w) if i < 2 or i > 8 else v.rjust(w)
                         for i, (v, w) in enumerate(zip(values, widths))).rstrip()
    return "\n".join([rule, line(headers), rule, *(line(c) for c in cells), rule])
