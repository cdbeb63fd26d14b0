"""Kernel graphs: a training step's kernel calls captured once, then replayed on the same
buffers with none of the Python that issued them (torch.cuda.CUDAGraph's habits, on the
CPU device).

    x, y = mininet.Tensor(xb0), mininet.Tensor(yb0)     # static inputs, made outside
    step()                                              # one eager step: lazy state made
    g = mininet.KernelGraph()
    with g.capture():                                   # runs the step once, eagerly
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
    for xb, yb in batches:
        x.copy_(xb); y.copy_(yb)                        # new values, same buffers
        g.replay()                                      # the same kernels again
        print(loss.item())                              # static outputs: read after replay

While a capture runs (in the thread that started it), every call of a CPU device method
runs and is also appended to the graph's tape, with its arguments: the arrays whose
buffers it reads and writes, shapes, scalars. replay() calls the same methods again with
the same arguments. Buffers allocated during the capture are kept by the graph, so the
tensors the step made (the loss, the gradients) hold the new values after each replay.

What a replay cannot repeat is refused during the capture with CaptureError, never
frozen silently: a value read on the host (loss.item(), .numpy(), DLPack, a boolean
mask's count), host data brought in (a Tensor made from numpy, from_numpy or from_dlpack
inside the step: make static inputs before capturing and copy into them), a tensor
rebound to other memory (t.data = ...), a device other than the CPU, a kernel that
returns a value to Python, an optimizer's step(closure), an optimizer that moves a
parameter to a new buffer, and a backward that stores a gradient the capture did not
reset (eagerly it would add to the old one: call zero_grad() inside the block).

Host calls run again in Python at each replay, kept in the tape at their place: an
optimizer's step() (its step counts, bias corrections and learning rate advance as
eagerly; a subclass's own step() as a whole), a scheduler's step() taken inside the block,
clip_grad_norm, the random draws of mininet.init (rand, randn, randint, randb, so
dropout: new masks from the generator, in the eager order, into the captured buffers)
and nn.Checkpoint's saving and restoring of the generator. Other Python in the block runs
at the capture only: its decisions (a branch, a module's attribute) are frozen, and a
tensor it makes is made again by every replay's kernels. So run the step once eagerly
before capturing, as torch asks of CUDA graphs, so that state made lazily (on a first
forward, an optimizer's first step) exists before the capture (train_epoch does so).

Gradients are static: a replay's backward writes the .grad tensors the capture made,
afresh, and the optimizer's parameters get those tensors back before each replay (an
eager step in between may have replaced them). A replay reads and writes the buffers the
capture saw; load_state_dict writes into them (as torch's), so loaded values are seen.
Rebinding a tensor afterwards (t.data = ...) is not seen: the optimizer's parameters are
checked at each replay (CaptureError: capture again), and KernelGraph.watch(tensors)
checks others."""
from __future__ import annotations

import functools
import inspect
import threading
from contextlib import contextmanager
from typing import Any, Callable

from .device import Device


class CaptureError(RuntimeError):
    """An operation a kernel graph cannot replay was met while capturing (or a replay
    found its buffers replaced)."""


# Device methods that run during a capture but are not recorded: they allocate, or answer
# a question from shapes and settings alone (the same answer at replay).
_PASS = frozenset({"alloc", "has", "enabled", "synchronize", "conv2d_small",
                   "bf16_path", "conv2d_bf16_fits", "conv2d_nhwc_shape"})
# Device methods refused while capturing, and why.
_REFUSE = {
    "to_numpy": "reads a value on the host (.item(), .numpy(), printing, a mask's count); "
                "the replay would not read it again: read the graph's outputs after replay()",
    "array_view": "reads an array's memory on the host; the replay would not read it again",
    "share": "wraps host memory (mininet.from_numpy, from_dlpack); a replay would read the "
             "same memory, not the next array: make static input tensors before capturing "
             "and copy new values into them (x.copy_(batch)) between replays",
    "from_numpy": "copies host data in; the replay would copy the same values again: make "
                  "static input tensors before capturing and copy new values into them "
                  "(x.copy_(batch)) between replays",
    "matmul_new": "returns a new buffer, which a replay would allocate afresh where the "
                  "captured step's tensors hold the old one: use alloc and matmul (as "
                  "ndarray.matmul does while capturing)",
    "dropout_mask": "draws random numbers on the device; the replay would repeat the same "
                    "mask: run the step eagerly",
    "a random draw": "(a Philox key for a device's dropout) would repeat the same numbers "
                     "at each replay: run the step eagerly",
    "a host read": "of an array's memory (.item(), np.asarray, DLPack) would not be "
                   "repeated by a replay: read the graph's outputs after replay()",
    "a rebinding": "of a tensor to other memory (t.data = ...) would not be repeated: a "
                   "replay's kernels keep the buffers the capture saw; write into the tensor "
                   "instead (t.copy_(...)), or rebind it outside the captured block",
    "a closure": "(optimizer.step(closure)) re-evaluates the loss in Python at each replay "
                 "and its value is lost: call backward in the block and step() without one",
}

_lock = threading.Lock()
_active: "_Capture | None" = None   # the capture in progress (one at a time)


class _Capture:
    def __init__(self) -> None:
        self.thread = threading.get_ident()
        self.tape: list[tuple[Callable[..., Any], tuple, dict | None]] = []
        self.pool: list[Any] = []       # buffers allocated while capturing
        self.pool_ids: set[int] = set()
        self.depth = 0                  # > 0 inside a recorded call or a host call
        self.param_checks: list[Callable[[], None]] = []
        self.zeroed: set[int] = set()   # ids of tensors whose .grad zero_grad reset
        self.saved: list[tuple[type, str, Any]] = []   # the Device methods wrapped


def capturing() -> bool:
    """True in the thread of a capture in progress (outside the calls it records)."""
    cap = _active
    return cap is not None and cap.thread == threading.get_ident() and not cap.depth


def note_zeroed(tensors) -> None:
    """While capturing: these tensors' gradients were reset (zero_grad) in the capture, so
    a backward may make their .grad afresh, as a replay will."""
    cap = _active
    if cap is not None and cap.thread == threading.get_ident():
        cap.zeroed.update(id(t) for t in tensors)


def check_new_grad(leaf) -> None:
    """While capturing, before backward stores a leaf's gradient: a replay's backward writes
    the gradient afresh, so the capture must have reset it (zero_grad), or made the leaf;
    a .grad from before the capture, or none never reset, would accumulate eagerly."""
    cap = _active
    if cap is None or cap.thread != threading.get_ident() or cap.depth:
        return
    grad = leaf.grad
    if grad is not None and id(grad.cached_data.handle) in cap.pool_ids:
        return   # made in this capture (zero_grad(set_to_none=False), a second backward)
    if grad is None and (id(leaf) in cap.zeroed or id(leaf.cached_data.handle) in cap.pool_ids):
        return
    raise CaptureError("kernel graph capture: backward stores a gradient into a .grad that "
                       "the capture did not reset: each replay would write it afresh where "
                       "eager steps add to it; call opt.zero_grad() (or model.zero_grad()) "
                       "inside the captured block")


def refuse(what: str) -> None:
    """CaptureError in a capture's thread (outside the calls it records): `what` (a key of
    the refusals above) cannot be replayed. For host work that is not a device call: an
    array's memory read in place, a random draw."""
    if capturing():
        raise CaptureError(f"kernel graph capture: {what} {_REFUSE[what]}")


def host_call(fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args) now; while capturing, also kept in the tape as a host call that replay()
    runs again in Python (an optimizer's step). Device calls inside it are not recorded."""
    cap = _active
    if cap is None or cap.thread != threading.get_ident() or cap.depth:
        return fn(*args)
    cap.depth += 1
    try:
        out = fn(*args)
    finally:
        cap.depth -= 1
    cap.tape.append((fn, args, None))
    return out


def wrap_own_method(cls, name: str, when_capturing: Callable[..., Any]) -> None:
    """cls's own method `name` (a subclass overriding it), if it has one, wrapped so that
    while capturing when_capturing(self, run, args, kwargs) runs instead, run() calling the
    method: an optimizer's or a scheduler's own step() kept as one host call."""
    own = cls.__dict__.get(name)
    if own is None or getattr(own, "_captured", False):
        return

    @functools.wraps(own)
    def method(self, *args, **kwargs):
        if capturing():
            return when_capturing(self, lambda: own(self, *args, **kwargs), args, kwargs)
        return own(self, *args, **kwargs)
    method._captured = True   # type: ignore[attr-defined]
    setattr(cls, name, method)


def uncaptured(fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args) now and never again: while capturing, nothing it does enters the tape (a
    scheduler's first step when it is made inside the captured block, which eagerly
    happens once)."""
    cap = _active
    if cap is None or cap.thread != threading.get_ident():
        return fn(*args)
    cap.depth += 1
    try:
        return fn(*args)
    finally:
        cap.depth -= 1


def _recording(name: str, fn: Callable[..., Any], cpu: type) -> Callable[..., Any]:
    def method(self, *args, **kw):
        cap = _active
        if cap is None or cap.thread != threading.get_ident() or cap.depth:
            return fn(self, *args, **kw)
        if not isinstance(self, cpu):
            raise CaptureError(f"kernel graph capture: {self.name}.{name}: only the CPU "
                               "device's kernels can be captured")
        if name in _REFUSE:
            raise CaptureError(f"kernel graph capture: {name} {_REFUSE[name]}")
        cap.depth += 1
        try:
            out = fn(self, *args, **kw)
        finally:
            cap.depth -= 1
        if name == "alloc":
            cap.pool.append(out)
            cap.pool_ids.add(id(out))
            return out
        if name in _PASS:
            return out
        if out is not None:
            raise CaptureError(f"kernel graph capture: {name} returned a value to Python, "
                               "which a replay would not see again")
        cap.tape.append((fn.__get__(self), args, kw or None))
        return out
    return functools.update_wrapper(method, fn)


def _device_classes():
    out, todo = [], [Device]
    while todo:
        cls = todo.pop()
        out.append(cls)
        todo.extend(cls.__subclasses__())
    return out


def _static(name: str, fn: Callable[..., Any]) -> staticmethod:
    """A static device method (the CPU's alloc) wrapped: its buffers join the pool."""
    def method(*args, **kw):
        out = fn(*args, **kw)
        cap = _active
        if cap is not None and cap.thread == threading.get_ident() and not cap.depth \
                and name == "alloc":
            cap.pool.append(out)
            cap.pool_ids.add(id(out))
        return out
    return staticmethod(method)


_wrappers: dict[tuple[type, str], tuple[Any, Any]] = {}   # (class, name): (raw, wrapped)


def _patch_class(cls, saved) -> None:
    from .cpu import CPUDevice
    for name, raw in list(vars(cls).items()):
        if name.startswith("_"):
            continue
        made = _wrappers.get((cls, name))
        if made is not None and made[0] is raw:   # wrapped before: the same wrapper
            wrapped = made[1]
        elif inspect.isfunction(raw):
            wrapped = _recording(name, raw, CPUDevice)
        elif isinstance(raw, staticmethod) and name in _PASS:
            wrapped = _static(name, raw.__func__)
        else:
            continue
        _wrappers[(cls, name)] = (raw, wrapped)
        saved.append((cls, name, raw))
        setattr(cls, name, wrapped)


def _patch(cap):
    """Every public method of every Device class wrapped (restored by _unpatch)."""
    for cls in _device_classes():
        _patch_class(cls, cap.saved)


def new_device_class(cls) -> None:
    """Device.__init_subclass__: a Device class defined (its module first imported) during a
    capture is wrapped too, so its calls are refused rather than missed."""
    cap = _active
    if cap is not None:
        _patch_class(cls, cap.saved)


def _unpatch(saved):
    for cls, name, raw in reversed(saved):
        setattr(cls, name, raw)


class KernelGraph:
    """A step's kernel calls, captured with `with g.capture(): ...` and run again on the
    same buffers by g.replay() (the module's docstring: what is captured, what is
    refused). The graph keeps the buffers the capture allocated."""

    def __init__(self) -> None:
        self._tape: list[tuple[Callable[..., Any], tuple, dict | None]] = []
        self._pool: list[Any] = []
        self._checks: list[Callable[[], None]] = []
        self._captured = False

    @contextmanager
    def capture(self):
        """Run the block once, eagerly, recording its kernel calls into this graph (which
        must be empty: reset() first to capture again). An exception leaves it empty."""
        global _active
        if self._captured:
            raise CaptureError("KernelGraph.capture: this graph holds a capture already; "
                               "reset() it or make a new KernelGraph")
        with _lock:
            if _active is not None:
                raise CaptureError("KernelGraph.capture: another capture is in progress "
                                   "(captures do not nest)")
            cap = _active = _Capture()
        try:
            _patch(cap)
            yield self
        except BaseException:
            self._tape, self._pool = [], []
            raise
        else:
            self._tape, self._pool = cap.tape, cap.pool
            self._checks = self._checks + cap.param_checks
            self._captured = True
        finally:
            _unpatch(cap.saved)
            _active = None

    def replay(self) -> None:
        """The captured kernel calls again, in order, on the captured buffers (and the host
        calls, an optimizer's step, in Python)."""
        if not self._captured:
            raise CaptureError("KernelGraph.replay: nothing captured yet (use "
                               "`with graph.capture(): ...` first)")
        if _active is not None and _active.thread == threading.get_ident():
            raise CaptureError("KernelGraph.replay: called while capturing")
        for check in self._checks:
            check()
        i = 0
        try:
            for i, (f, a, k) in enumerate(self._tape):
                if k is None:
                    f(*a)
                else:
                    f(*a, **k)
        except Exception as e:
            name = getattr(self._tape[i][0], "__name__", "a call")
            e.add_note(f"KernelGraph.replay: raised by call {i + 1} of {len(self._tape)} "
                       f"({name}); the calls before it have run (a half-done step)")
            raise

    def watch(self, tensors, what: str = "a tensor") -> None:
        """Have every replay check that these tensors still hold the buffers they hold now
        (CaptureError otherwise: a load_state_dict or `t.data = ...` since the capture
        would be missed by the replay's kernels). Call it after capturing."""
        self._checks.append(_buffer_check(tensors, what))

    def reset(self) -> None:
        """Forget the capture (its buffers are freed once no tensor holds them)."""
        self._tape, self._pool, self._checks, self._captured = [], [], [], False

    @property
    def captured(self) -> bool:
        """Whether the graph holds a capture (replay() can run)."""
        return self._captured

    def __len__(self) -> int:
        """The number of calls a replay makes (kernel calls and host calls)."""
        return len(self._tape)

    def __repr__(self):
        return f"KernelGraph({len(self._tape)} calls)" if self._captured else "KernelGraph()"


def _buffer_check(tensors, what, grads=False):
    held = [(t, t.cached_data.handle, t.cached_data.offset, t.grad if grads else None)
            for t in tensors]

    def check():
        for t, handle, offset, grad in held:
            data = t.cached_data
            if data.handle is not handle or data.offset != offset:
                raise CaptureError(f"KernelGraph.replay: {what} has a new buffer since the "
                                   "capture (load_state_dict or t.data = ...); capture "
                                   "the step again")
            if grads and t.grad is not grad:   # an eager step (or zero_grad) since: the
                t.grad = grad                  # replay's backward writes the captured ones
    return check


def check_params(params, what: str) -> Callable[[], None] | None:
    """While capturing, after an optimizer's step: its parameters' buffers and gradients
    as they are now, checked at every replay (and their .grad given back the captured
    gradient tensors). Returns the check (None when not capturing)."""
    cap = _active
    if cap is None or cap.thread != threading.get_ident():
        return None
    check = _buffer_check(params, f"a parameter of {what}", grads=True)
    cap.param_checks.append(check)
    return check
