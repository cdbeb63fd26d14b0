"""Activation checkpointing: trade compute for memory.

checkpoint(module, x) runs module without recording its graph, so none of its inner
activations stay alive until backward; only x and the output do. Backward runs the
module again (with the same random draws, so dropout masks repeat) and takes the
gradients of that recomputed graph. Gradients equal the plain run's; the cost is one
more forward of the module. Checkpoint every few layers of a deep stack (Checkpoint
wraps a module) to keep about one segment's activations at a time.
"""
from typing import Any

from ..autograd import Op, Tensor, enable_grad, grad_enabled, no_grad, partial_grads
from .. import init
from ..backend.capture import host_call
from .module import Module


class CheckpointOp(Op):
    """inputs: the function's tensor arguments, then the parameters it uses."""

    def __init__(self, fn, n_args):
        self.fn, self.n_args = fn, n_args
        # host calls in a kernel graph's capture: each replay saves and swaps the generator
        # state again, so the recomputation repeats that replay's draws (its dropout masks)
        host_call(self._save_rng)

    def _save_rng(self):
        self.rng_state = init.generator().bit_generator.state

    def _rng_to_forward(self):
        rng = init.generator().bit_generator
        self.rng_now, rng.state = rng.state, self.rng_state

    def _rng_back(self):
        init.generator().bit_generator.state = self.rng_now

    def compute(self, *arrays):
        with no_grad():
            out = self.fn(*[Tensor.make_const(a) for a in arrays[:self.n_args]])
        if not isinstance(out, Tensor):
            raise TypeError(f"checkpoint: the function must return one Tensor, got "
                            f"{type(out).__name__}")
        return out.cached_data

    def gradient(self, out_grad, node):
        if grad_enabled():
            raise NotImplementedError("checkpoint: gradients of gradients (create_graph=True) "
                                      "are not supported; run that model without checkpoint")
        args, params = node.inputs[:self.n_args], node.inputs[self.n_args:]
        leaves = [Tensor.make_const(a.cached_data, requires_grad=a.requires_grad) for a in args]
        host_call(self._rng_to_forward)   # replay forward's random draws
        try:
            with enable_grad():
                out = self.fn(*leaves)
        finally:
            host_call(self._rng_back)   # and back to the generator's own state
        wanted = [x for x in (*leaves, *params) if x.requires_grad]
        found = iter(partial_grads(out, wanted, out_grad))
        return tuple(next(found) if x.requires_grad else None for x in (*leaves, *params))


def checkpoint(function, *args, params=None):
    """function(*args) with its activations recomputed in backward instead of kept.
    function: a Module (its parameters are found) or a callable, whose parameters must
    then be passed as params. Returns one Tensor, as function does."""
    if params is None:
        if not isinstance(function, Module):
            raise TypeError("checkpoint: pass params=[...] with a plain function (the "
                            "tensors it reads besides its arguments), or give a Module")
        params = function.parameters()
    args = [a if isinstance(a, Tensor) else Tensor(a) for a in args]
    params = [p for p in params if p.requires_grad]
    if not grad_enabled() or not any(x.requires_grad for x in (*args, *params)):
        return function(*args)   # no backward will come: nothing to save
    return CheckpointOp(function, len(args))(*args, *params)


class Checkpoint(Module):
    """A module whose forward is checkpointed (mininet.nn.checkpoint): the wrapped
    module's activations are not kept but recomputed in backward, trading compute for memory.
    Inputs and outputs have the shapes the wrapped module takes and gives:
    Sequential(Checkpoint(block), ...)."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, *args: Any) -> Any:
        """The wrapped module's forward on `args` (Tensors, or values made into
        Tensors), its activations recomputed in backward; the output has the shape the module
        gives."""
        return checkpoint(self.module, *args)
