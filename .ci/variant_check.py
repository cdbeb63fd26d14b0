"""The installed wheel's per-kernel-set modules (mininet_ext._<set>.<name>, setup.py's
VARIANT_MODULES), under every kernel set this CPU runs, each in a fresh process: the
backend imports the set's build, and convolutions that run its Winograd, channels-last
and direct kernels (each checked to have run), batch norm + ReLU, max pooling, an Adam
step and softmax cross-entropy agree with numpy float64 (forward values only; the test
suites cover the gradients and the LSTM gates, under every set, in a checkout). Needs
numpy only (the venv of .ci/sdist_check.sh has no test extras)."""
import json
import os
import subprocess
import sys

CHECK = r"""
import importlib, json
import numpy as np
import mininet as mn
from mininet import nn, ops, optim
from mininet.autograd import Tensor
from mininet_ext import _build_info, _isa

cpu = importlib.import_module("mininet.backend.cpu")
rng = np.random.default_rng(0)

def conv_ref(x, w, stride, pad):
    n, c, h, wd = x.shape
    k, _, kh, kw = w.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    out = np.zeros((n, k, oh, ow))
    for i in range(kh):
        for j in range(kw):
            win = xp[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride]
            out += np.einsum("nchw,kc->nkhw", win, w[:, :, i, j].astype(np.float64))
    return out

worst = 0.0
def check(got, want):
    global worst
    worst = max(worst, float(np.abs(got - want).max() / max(1.0, np.abs(want).max())))

class Calls:   # a module whose function uses are counted (which paths the convolutions took)
    def __init__(self, module):
        self.module, self.used = module, set()
    def __getattr__(self, name):
        self.used.add(name)
        return getattr(self.module, name)

names = [m.__name__ for m in (cpu._direct, cpu._nhwc, cpu._wino, cpu._norm, cpu._conv, cpu._red,
                              cpu._opt, cpu._loss, cpu._rnn)]
cpu._wino, cpu._nhwc, cpu._direct = Calls(cpu._wino), Calls(cpu._nhwc), Calls(cpu._direct)
# (N, C, H, W, K, k, stride, pad): Winograd 3x3 and 5x5, a first layer (the channel-major
# direct kernel where the set has it), a strided 3x3 (channels-last), a 7x7/4 first layer
# (direct), a 1x1 (im2col)
for n, c, h, w, k, ks, s, p in ((2, 32, 12, 12, 32, 3, 1, 1), (1, 96, 8, 8, 96, 5, 1, 2),
                                (2, 3, 32, 32, 32, 3, 1, 1), (4, 16, 8, 8, 32, 3, 2, 1),
                                (4, 3, 32, 32, 16, 7, 4, 3), (2, 24, 6, 6, 8, 1, 1, 0)):
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((k, c, ks, ks)).astype(np.float32)
    check(ops.conv(Tensor(x), Tensor(wt), stride=s, padding=p).numpy(), conv_ref(x, wt, s, p))
ran = {"winograd": "forward" in cpu._wino.used, "nhwc": "forward" in cpu._nhwc.used,
       "direct": "forward" in cpu._direct.used, "cm": "forward_cm" in cpu._direct.used}

x = rng.standard_normal((8, 6, 10, 10)).astype(np.float32)
bn = nn.BatchNorm2d(6)
y = nn.ReLU()(bn(Tensor(x))).numpy()
x64 = x.astype(np.float64)
m, v = x64.mean(axis=(0, 2, 3), keepdims=True), x64.var(axis=(0, 2, 3), keepdims=True)
check(y, np.maximum((x64 - m) / np.sqrt(v + bn.eps), 0))

pooled = nn.MaxPool2d(2)(Tensor(x)).numpy()
check(pooled, x64.reshape(8, 6, 5, 2, 5, 2).max(axis=(3, 5)))

p0 = rng.standard_normal(1000).astype(np.float32)
g = rng.standard_normal(1000).astype(np.float32)
param = nn.Parameter(Tensor(p0.copy()))
param.grad = Tensor(g)
optim.Adam([param], lr=0.01).step()
mh, vh = g.astype(np.float64), g.astype(np.float64) ** 2   # first step: bias-corrected m, v
check(param.numpy(), p0 - 0.01 * mh / (np.sqrt(vh) + 1e-8))

logits = rng.standard_normal((32, 10)).astype(np.float32)
labels = rng.integers(0, 10, 32)
loss = nn.SoftmaxLoss()(Tensor(logits), Tensor(labels)).numpy()
l64 = logits.astype(np.float64)
lse = np.log(np.exp(l64 - l64.max(1, keepdims=True)).sum(1)) + l64.max(1)
check(loss, (lse - l64[np.arange(32), labels]).mean())

print(json.dumps({"active": _isa.active(), "portable": _build_info.PORTABLE,
                  "modules": names, "ran": ran, "worst": worst}))
"""


def main():
    from mininet_ext import _build_info, _isa
    failures = []
    for isa in _isa.supported():
        env = {k: v for k, v in os.environ.items() if k != "MININET_ISA_PRETEND_MISSING"}
        env["MININET_ISA"] = isa
        r = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True,
                           text=True, timeout=300)
        if r.returncode != 0:
            failures.append(f"{isa}: exit {r.returncode}\n{r.stderr[-2000:]}")
            continue
        got = json.loads(r.stdout.strip().splitlines()[-1])
        v = _isa.VARIANT_OF[isa]
        pkg = "mininet_ext" if (v == "generic" and _build_info.PORTABLE) else f"mininet_ext._{v}"
        wrong = [m for m in got["modules"] if m.rpartition(".")[0] != pkg]
        print(f"{isa}: {', '.join(got['modules'])}; kernels run: "
              f"{', '.join(k for k, v in got['ran'].items() if v)}; "
              f"worst relative error {got['worst']:.2e}")
        if got["active"] != isa or wrong:
            failures.append(f"{isa}: ran {got['active']} with {wrong} (want {pkg}.*)")
        # every path but the channel-major kernel (AVX-512 only) must have run
        missed = [k for k in ("winograd", "nhwc", "direct") if not got["ran"][k]]
        if missed:
            failures.append(f"{isa}: the convolutions never reached {', '.join(missed)}")
        if not got["worst"] < 1e-4:
            failures.append(f"{isa}: worst relative error {got['worst']:.3g} against numpy")
    if failures:
        sys.exit("per-kernel-set modules failed:\n" + "\n".join(failures))
    print("per-kernel-set modules: ok")


if __name__ == "__main__":
    main()
