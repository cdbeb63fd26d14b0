"""What the profiler's hooks cost: an MLP training step (784-100-10, batch 100, Adam)
with no observer installed (the code as it is: one list check per op, per module call
and per backward node) against the code before the hooks (the same functions with the
checks taken out), and with a profiler running.

    python bench/profiler_overhead.py [--rounds 40] [--steps 20] [--threads 1]

The variants run in turns (A B C, B C A, C A B, ...), each turn `steps` steps, so a slow
spell of a shared machine hits all of them; the figure is the median turn, and the median of
the per-round ratios beside it. The pre-hook functions are made from the current source
by removing the hook statements (an AST rewrite), so nothing else differs.
"""
import argparse
import ast
import gc
import inspect
import statistics
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mininet as mn                                  # noqa: E402
from mininet import autograd, profiler               # noqa: E402
from mininet.nn import module as nn_module           # noqa: E402


class _DropHooks(ast.NodeTransformer):
    """`if _observers: A else: B` -> B; statements naming `tokens` go (the per-op hook)."""

    def __init__(self):
        self.removed = 0

    def visit_If(self, node):
        self.generic_visit(node)
        if isinstance(node.test, ast.Name) and node.test.id == "_observers":
            self.removed += 1
            return node.orelse
        return node

    def generic_visit(self, node):
        super().generic_visit(node)
        for field in ("body", "orelse"):
            stmts = getattr(node, field, None)
            if isinstance(stmts, list):
                kept = [s for s in stmts if not _names(s, "tokens")]
                self.removed += len(stmts) - len(kept)
                setattr(node, field, kept)
        return node


def _names(stmt, name):
    return isinstance(stmt, ast.stmt) and any(
        isinstance(n, ast.Name) and n.id == name for n in ast.walk(stmt))


def _without_hooks(fn, module):
    """fn recompiled from its source without the observer statements."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    dropper = _DropHooks()
    tree = ast.fix_missing_locations(dropper.visit(tree))
    if not dropper.removed:
        raise RuntimeError(f"{fn.__qualname__}: found no hook to remove (the source changed?)")
    namespace = dict(vars(module))
    exec(compile(tree, inspect.getsourcefile(fn), "exec"), namespace)
    return namespace[fn.__name__]


def _plain_call(self, *args, **kwargs):
    return self.forward(*args, **kwargs)


class PreHook:
    """The code path before the hooks, while inside the block."""

    def __init__(self):
        self.make = _without_hooks(autograd.Value.make_from_op.__func__, autograd)
        self.grads = _without_hooks(autograd.compute_gradient_of_variables, autograd)
        self.saved = None

    def __enter__(self):
        self.saved = (vars(autograd.Value)["make_from_op"], autograd.compute_gradient_of_variables,
                      vars(nn_module.Module)["__call__"])
        autograd.Value.make_from_op = classmethod(self.make)
        autograd.compute_gradient_of_variables = self.grads
        nn_module.Module.__call__ = _plain_call
        return self

    def __exit__(self, *exc):
        make, grads, call = self.saved
        autograd.Value.make_from_op = make
        autograd.compute_gradient_of_variables = grads
        nn_module.Module.__call__ = call
        return False


class Hooked:
    """The code as it is, no observer installed."""

    def __enter__(self):
        assert not autograd._observers
        return self

    def __exit__(self, *exc):
        return False


def mlp_step():
    rng = np.random.default_rng(0)
    model = mn.nn.Sequential(mn.nn.Linear(784, 100), mn.nn.ReLU(), mn.nn.Linear(100, 10))
    opt = mn.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = mn.nn.SoftmaxLoss()
    x = mn.Tensor(rng.random((100, 784), dtype=np.float32))
    y = rng.integers(0, 10, 100)

    def step():
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        loss.item()
    return step


def turn(step, context, steps):
    gc.collect()   # the last turn's garbage (a profiler's events) is not this turn's cost
    with context:
        start = time.perf_counter_ns()
        for _ in range(steps):
            step()
        return (time.perf_counter_ns() - start) / steps / 1e3   # us per step


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    a = parser.parse_args()
    mn.set_num_threads(a.threads)
    step = mlp_step()
    variants = {"pre-hook": PreHook, "hooks, no observer": Hooked, "profiler on": profiler.profile}
    for make in variants.values():   # warm up every path
        turn(step, make(), a.steps)
    times = {name: [] for name in variants}
    names = list(variants)
    for r in range(a.rounds):
        for name in names[r % 3:] + names[:r % 3]:   # each variant leads a third of the rounds
            times[name].append(turn(step, variants[name](), a.steps))
    base = times["pre-hook"]
    print(f"MLP 784-100-10 step, batch 100, Adam, {a.threads} thread(s); "
          f"{a.rounds} rounds of {a.steps} steps each, variants in turns")
    for name, t in times.items():
        paired = statistics.median(x / b for x, b in zip(t, base))
        print(f"  {name:20s} median {statistics.median(t):8.1f} us/step, best {min(t):8.1f}   "
              f"vs pre-hook: median {statistics.median(t) / statistics.median(base):.4f}, "
              f"per-round {paired:.4f}, best {min(t) / min(base):.4f}")
    micro(a.threads)


def micro(threads, rounds=200, n=2000):
    """The check alone: one cheap op (x + 1 on 4 floats) through make_from_op as it is and
    as it was, best of many interleaved loops (the least disturbed), and how many ops,
    module calls and backward nodes an MLP step has."""
    x = mn.Tensor(np.ones(4, np.float32))
    best = {"pre-hook": float("inf"), "hooks": float("inf")}
    for _ in range(rounds):
        for name, context in (("pre-hook", PreHook()), ("hooks", Hooked())):
            with context:
                start = time.perf_counter_ns()
                for _ in range(n):
                    x + 1.0
                best[name] = min(best[name], (time.perf_counter_ns() - start) / n)
    step = mlp_step()
    with profiler.profile() as prof:
        step()
    kinds = {cat: sum(e.cat == cat for e in prof.events)
             for cat in ("forward", "backward", "module")}
    kinds["backward"] -= 1   # the pass itself
    print(f"one op, best of {rounds} loops: {best['pre-hook']:.0f} ns before the hooks, "
          f"{best['hooks']:.0f} ns with them (+{best['hooks'] - best['pre-hook']:.0f} ns); "
          f"an MLP step runs {kinds['forward']} forward ops, {kinds['backward']} ops and "
          f"gradients in backward and {kinds['module']} module calls")


if __name__ == "__main__":
    main()
