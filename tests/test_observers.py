"""The op observer hook that the profiler and the ONNX tracer build on."""
import numpy as np

import mininet as mn
from mininet import autograd


class Recorder:
    def __init__(self):
        self.events = []

    def begin(self, op, inputs, phase):
        self.events.append(("begin", type(op).__name__, phase, len(inputs)))
        return len(self.events)

    def end(self, token, result):
        self.events.append(("end", token))

    def module_begin(self, module, args):
        self.events.append(("module", type(module).__name__))
        return type(module).__name__

    def module_end(self, token, out):
        self.events.append(("module_end", token, tuple(out.shape)))


def test_observer_sees_forward_ops_modules_and_backward_and_leaves_values_alone():
    rng = np.random.default_rng(0)
    model = mn.nn.Sequential(mn.nn.Linear(4, 3), mn.nn.ReLU())
    x = mn.Tensor(rng.standard_normal((2, 4)).astype(np.float32))
    want = model(x).numpy()
    rec = Recorder()
    autograd.add_observer(rec)
    try:
        out = model(x)
        out.sum().backward()
    finally:
        autograd.remove_observer(rec)
    np.testing.assert_array_equal(out.numpy(), want)
    modules = [e[1] for e in rec.events if e[0] == "module"]
    assert modules == ["Sequential", "Linear", "ReLU"]
    assert ("module_end", "Sequential", (2, 3)) in rec.events
    forward = [e[1] for e in rec.events if e[0] == "begin" and e[2] == "forward"]
    backward = [e[1] for e in rec.events if e[0] == "begin" and e[2] == "backward"]
    assert "Linear" in forward and "ReLU" in forward
    assert "ReLU" in backward and "Linear" in backward
    begins = sum(e[0] == "begin" for e in rec.events)
    assert begins == sum(e[0] == "end" for e in rec.events)
    assert not autograd._observers
    # forward ops even under no_grad, where no graph is kept
    rec2 = Recorder()
    autograd.add_observer(rec2)
    try:
        with mn.no_grad():
            model(x)
    finally:
        autograd.remove_observer(rec2)
    assert any(e[:3] == ("begin", "ReLU", "forward") for e in rec2.events)
