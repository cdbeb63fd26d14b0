"""Kernel graphs: a training step's kernel calls captured once, then replayed on the same
buffers with none of the Python that issued them (torch.cuda.CUDAGraph's habits, on the
CPU device).

    g = mininet.KernelGraph()
    x, y = mininet.Tensor(xb0), mininet.Tensor(yb0)     # static inputs, made outside
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
frozen silently: a value read on the host (loss.item(), .numpy(), a boolean mask's
count), host data copied in (a Tensor made from numpy inside the step: make static inputs
before capturing and copy into them), a device other than the CPU, a kernel that returns
a value to Python, and a gradient accumulated into a .grad that existed before the
capture (the replay would add to its old values: zero_grad() inside).
Two things run again in Python at each replay, as host calls kept in the tape at their
place: an optimizer's step() (so its step counts, bias corrections and learning rate,
schedulers included, advance as they do eagerly) and the random draws of mininet.init
(rand, randn, randint, randb, so dropout: new masks from the generator, in the eager
order, into the captured buffers).

Gradients are static too: a replay's backward writes the .grad tensors the capture
made, afresh (start the captured step with opt.zero_grad(), as eagerly), and the
optimizer's parameters get those .grad tensors back before each replay (an eager step in
between may have replaced them). A replay reads the buffers the capture saw: rebinding a tensor to a new buffer afterwards
(load_state_dict, p.data = ...) is not seen. The optimizer's host call checks its
parameters' buffers and raises CaptureError if one was replaced; capture again then."""
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
_PASS = frozenset({"alloc", "share", "has", "enabled", "synchronize", "conv2d_small",
                   "bf16_path", "conv2d_bf16_fits", "conv2d_nhwc_shape"})
# Device methods refused while capturing, and why.
_REFUSE = {
    "to_numpy": "reads a value on the host (.item(), .numpy(), printing, a mask's count); "
                "the replay would not read it again: read the graph's outputs after replay()",
    "array_view": "reads an array's memory on the host; the replay would not read it again",
    "from_numpy": "copies host data in; the replay would copy the same values again: make "
                  "static input tensors before capturing and copy new values into them "
                  "(x.copy_(batch)) between replays",
    "dropout_mask": "draws random numbers on the device; the replay would repeat the same "
                    "mask: run the step eagerly",
    "a random draw": "(a Philox key for a device's dropout) would repeat the same numbers "
                     "at each replay: run the step eagerly",
    "a host read": "of an array's memory (.item(), np.asarray) would not be repeated by a "
                   "replay: read the graph's outputs after replay()",
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


def capturing() -> bool:
    """True in the thread of a capture in progress (outside the calls it records)."""
    cap = _active
    return cap is not None and cap.thread == threading.get_ident() and not cap.depth


def allocated_in_capture(handle) -> bool:
    """Whether a buffer was allocated by the capture in progress."""
    cap = _active
    return cap is not None and id(handle) in cap.pool_ids


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


def _patch():
    """Every public method of every Device class wrapped (restored by _unpatch)."""
    from .cpu import CPUDevice
    saved = []
    for cls in _device_classes():
        for name, raw in list(vars(cls).items()):
            if name.startswith("_") or not inspect.isfunction(raw):
                continue
            saved.append((cls, name, raw))
            setattr(cls, name, _recording(name, raw, CPUDevice))
    return saved


def _unpatch(saved):
    for cls, name, raw in saved:
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
        saved = _patch()
        try:
            yield self
        except BaseException:
            self._tape, self._pool = [], []
            raise
        else:
            self._tape, self._pool, self._checks = cap.tape, cap.pool, cap.param_checks
            self._captured = True
        finally:
            _unpatch(saved)
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
        for f, a, k in self._tape:
            if k is None:
                f(*a)
            else:
                f(*a, **k)

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


def check_params(params, what: str) -> None:
    """While capturing: remember params' buffers, and have every replay of the graph
    check that they are still the ones captured (the kernels read and write those)."""
    cap = _active
    if cap is None or cap.thread != threading.get_ident():
        return
    held = [(p, p.cached_data.handle, p.cached_data.offset, p.grad) for p in params]

    def check():
        for p, handle, offset, grad in held:
            data = p.cached_data
            if data.handle is not handle or data.offset != offset:
                raise CaptureError(f"KernelGraph.replay: a parameter of {what} has a new "
                                   "buffer since the capture (load_state_dict or p.data = "
                                   "...); capture the step again")
            if p.grad is not grad:   # an eager step (or zero_grad) since: the replay's
                p.grad = grad        # backward writes the captured gradients
    cap.param_checks.append(check)
