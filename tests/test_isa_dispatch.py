"""Runtime ISA dispatch (mininet_ext._isa): the GEMM and convolution kernels of every
kernel set this CPU runs, against numpy, each in a fresh process under MININET_ISA;
the forced set really used; sets the CPU lacks and unknown names refused."""
import concurrent.futures
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import cli, run_python
from mininet_ext import _isa

SUPPORTED = _isa.supported()
BUILT = _isa.built()
MR = {"generic": 4, "avx2": 6, "avx512": 12, "avx512bf16": 12}   # tile heights per set
ROOT = Path(__file__).resolve().parent.parent


def isa_env(**env):
    """This environment without the dispatch variables, plus env (2 threads: the threaded
    paths run too)."""
    base = {k: v for k, v in os.environ.items()
            if k not in ("MININET_ISA", "MININET_ISA_PRETEND_MISSING")}
    return {**base, "MININET_NUM_THREADS": "2", **env}


def unsupported_reason(isa):
    if isa not in BUILT:
        return f"this build has no {isa} kernels (it has {', '.join(BUILT)})"
    return f"this CPU lacks {', '.join(_isa.missing_features(isa))}"


# Every GEMM path (plain loops, in place, few rows, transposed B, narrow, blocked,
# K split) and both convolution layouts, float32 and float64, with odd and zero sizes,
# transposed and sliced views; float64 references. Prints what it ran on.
CHECK = r"""
import json
import numpy as np
from mininet import ops
from mininet.autograd import Tensor
from mininet.ndarray import NDArray
from mininet.backend.cpu import CPUDevice
from mininet_ext import _isa, matmul, convgemm

CPUDevice.conv2d_min_pixels = 0    # the fused convolution even for small images
rng = np.random.default_rng(0)
TOL = {np.float32: 2e-5, np.float64: 1e-12}
count = 0

def close(got, want, dtype, k, what):
    global count
    tol = TOL[dtype] * max(1.0, np.sqrt(k))
    scale = max(1.0, float(np.abs(want).max(initial=0.0)))
    err = float(np.abs(got - want).max(initial=0.0))
    assert got.shape == want.shape, (what, got.shape, want.shape)
    assert err <= tol * scale * 4, f"{what}: max error {err:g} (tolerance {tol * scale * 4:g})"
    count += 1

def gemm(m, n, k, dtype):
    x = rng.standard_normal((m, k)).astype(dtype)
    y = rng.standard_normal((k, n)).astype(dtype)
    want = x.astype(np.float64) @ y.astype(np.float64)
    what = f"{m}x{n}x{k} {np.dtype(dtype).name}"
    close((NDArray(x) @ NDArray(y)).numpy(), want, dtype, k, what)
    yt = NDArray(np.ascontiguousarray(y.T)).T            # B transposed (a view)
    close((NDArray(x) @ yt).numpy(), want, dtype, k, what + " B^T")
    xt = NDArray(np.ascontiguousarray(x.T)).T            # A transposed
    close((xt @ NDArray(y)).numpy(), want, dtype, k, what + " A^T")
    wide = rng.standard_normal((m + 1, 2 * k)).astype(dtype)
    wide[1:, ::2] = x                                    # A sliced: offset, column stride 2
    close((NDArray(wide)[1:, ::2] @ NDArray(y)).numpy(), want, dtype, k, what + " A[1:, ::2]")

SHAPES = [(1, 1, 1), (3, 5, 2), (7, 9, 8),              # plain loops
          (64, 64, 64), (100, 10, 100), (20, 33, 47),   # small: in place where the set can
          (5, 300, 700), (13, 200, 90), (1, 257, 65),   # few rows, matrix-vector
          (300, 20, 100), (97, 63, 65),                 # narrow
          (203, 66, 700), (70, 36, 300),                # narrow, a few columns past the panels
          (257, 129, 385), (200, 300, 50),              # blocked, every edge
          (6, 25, 20011),                               # one block, long K: split over threads
          (0, 5, 3), (4, 0, 3), (4, 5, 0)]              # zero sizes
for dtype in (np.float32, np.float64):
    for m, n, k in SHAPES:
        gemm(m, n, k, dtype)
    a = rng.standard_normal((3, 17, 33)).astype(dtype)
    b = rng.standard_normal((33, 19)).astype(dtype)
    close((NDArray(a) @ NDArray(b)).numpy(), a.astype(np.float64) @ b, dtype, 33, "batched")

def conv_ref(x, w, g, stride, pad):
    # y[n, k, p, q] = sum_{c, i, j} xp[n, c, p*s + i, q*s + j] w[k, c, i, j], and the
    # gradients of sum(y * g) by the adjoint, tap by tap
    n, c, h, wd = x.shape
    kk, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    y, dw, dxp = np.zeros((n, kk, oh, ow)), np.zeros_like(w), np.zeros_like(xp)
    g = g(y.shape)
    for i in range(kh):
        for j in range(kw):
            at = (slice(None), slice(None), slice(i, i + stride * oh, stride),
                  slice(j, j + stride * ow, stride))
            y += np.einsum("nchw,kc->nkhw", xp[at], w[:, :, i, j])
            dw[:, :, i, j] = np.einsum("nkhw,nchw->kc", g, xp[at])
            dxp[at] += np.einsum("nkhw,kc->nchw", g, w[:, :, i, j])
    return y, g, dw, dxp[:, :, pad:pad + h, pad:pad + wd]

# N, C, H, W, K, k, stride, pad: the panel path (stride 1 and 2), the pixel-major tiles
# (14x14 and 28x28 maps, 16 and 32 channels), 1x1, many taps, a map that is one pixel
CONVS = [(2, 3, 9, 9, 8, 3, 1, 1), (2, 3, 11, 10, 6, 3, 2, 1), (2, 8, 14, 14, 32, 3, 1, 1),
         (1, 1, 28, 28, 16, 5, 1, 2), (2, 5, 6, 7, 4, 1, 1, 0), (1, 30, 6, 5, 40, 3, 1, 1),
         (2, 2, 1, 1, 3, 1, 1, 0)]
for dtype in (np.float32, np.float64):
    for n, c, h, wd, kk, ks, s, p in CONVS:
        x = rng.standard_normal((n, c, h, wd))
        w = rng.standard_normal((kk, c, ks, ks))
        y_want, g, dw_want, dx_want = conv_ref(x, w, rng.standard_normal, s, p)
        xt = Tensor(x.astype(dtype), requires_grad=True)
        wt = Tensor(w.astype(dtype), requires_grad=True)
        y = ops.conv(xt, wt, stride=s, padding=p)
        y.backward(Tensor(g.astype(dtype)))
        what = f"conv {(n, c, h, wd, kk, ks, s, p)} {np.dtype(dtype).name}"
        close(y.numpy().astype(np.float64), y_want, dtype, c * ks * ks, what)
        close(wt.grad.numpy().astype(np.float64), dw_want, dtype, n * h * wd, what + " dW")
        close(xt.grad.numpy().astype(np.float64), dx_want, dtype, kk * ks * ks, what + " dx")

print(json.dumps({"isa": _isa.active(), "matmul": matmul.kernel_isa(),
                  "conv": convgemm.kernel_isa(), "mr": matmul.blocking()["mr"],
                  "checked": count}))
"""


def run_check(**env):
    r = run_python(CHECK, env=isa_env(**env), timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("isa", _isa.ISAS)
def test_kernels_match_numpy_under_each_isa(isa):
    if isa not in SUPPORTED:
        pytest.skip(unsupported_reason(isa))
    out = run_check(MININET_ISA=isa)
    # the forced set is the one the GEMM and the convolution call (their bound tables)
    assert (out["isa"], out["matmul"], out["conv"]) == (isa, isa, isa)
    assert out["mr"] == MR[isa]
    assert out["checked"] >= 180     # 138 products and 42 convolution results


def test_generic_kernels_odd_zero_and_strided_shapes():
    """The generic set (any CPU) on shapes that leave edges everywhere, empty operands
    and non-contiguous views, through the public API."""
    code = r"""
import numpy as np
import mininet
from mininet_ext import _isa
assert _isa.active() == "generic", _isa.active()
rng = np.random.default_rng(3)
for m, n, k in [(1, 1, 1), (5, 3, 7), (13, 17, 19), (31, 33, 35), (0, 4, 5), (4, 0, 5),
                (4, 5, 0), (129, 5, 1000), (5, 129, 1000)]:
    x, y = rng.standard_normal((m, k)), rng.standard_normal((k, n))
    got = (mininet.Tensor(x, dtype="float64") @ mininet.Tensor(y, dtype="float64")).numpy()
    np.testing.assert_allclose(got, x @ y, rtol=1e-12, atol=1e-12 * max(k, 1))
    big = rng.standard_normal((2 * m + 1, 3 * k + 2)).astype(np.float32)
    xs = mininet.Tensor(big)[1::2, 2::3]                   # offset and strides both ways
    want = big[1::2, 2::3].astype(np.float64) @ y
    got = (xs @ mininet.Tensor(y.astype(np.float32))).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.sqrt(max(k, 1)))
print("ok")
"""
    r = run_python(code, env=isa_env(MININET_ISA="generic"), timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]


def active_in_subprocess(**env):
    code = "from mininet_ext import _isa, matmul; print(_isa.active(), matmul.kernel_isa())"
    r = run_python(code, env=isa_env(**env), timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout.split()


def test_default_is_the_best_set_this_cpu_runs():
    best = SUPPORTED[-1]
    assert active_in_subprocess() == [best, best]
    assert active_in_subprocess(MININET_ISA="auto") == [best, best]


def needs_feature(isa):
    if isa not in BUILT:
        pytest.skip(unsupported_reason(isa))
    return _isa.REQUIRES[isa][-1]     # its last feature: avx2 needs fma, avx512 avx512vl ...


@pytest.mark.parametrize("isa", [i for i in _isa.ISAS if i != "generic"])
def test_a_set_the_cpu_lacks_is_refused_naming_the_feature(isa):
    """With MININET_ISA_PRETEND_MISSING (the test hook) the CPU lacks the feature, or
    really lacks it: importing mininet fails and says which feature, never SIGILL."""
    feature = needs_feature(isa)
    r = run_python("import mininet", timeout=60,
                   env=isa_env(MININET_ISA=isa, MININET_ISA_PRETEND_MISSING=feature))
    assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
    last = r.stderr.strip().splitlines()[-1]
    assert f"MININET_ISA={isa}" in last and f"lacks {feature}" in last, last
    assert "it can run generic" in last, last


def test_a_missing_feature_lowers_the_automatic_choice():
    if "avx512" not in SUPPORTED:
        pytest.skip(unsupported_reason("avx512"))
    assert active_in_subprocess(MININET_ISA_PRETEND_MISSING="avx512f") == ["avx2", "avx2"]
    assert active_in_subprocess(MININET_ISA_PRETEND_MISSING="avx2") == ["generic", "generic"]


def test_unknown_isa_is_refused_naming_the_choices():
    r = run_python("import mininet", env=isa_env(MININET_ISA="sse9"), timeout=60)
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert "MININET_ISA='sse9' is not a kernel set" in last, last
    for isa in _isa.ISAS + ("auto",):
        assert isa in last, last


def test_unknown_pretend_feature_is_refused():
    r = run_python("import mininet", env=isa_env(MININET_ISA_PRETEND_MISSING="avx9000"),
                   timeout=60)
    assert r.returncode == 1 and "avx9000" in r.stderr.strip().splitlines()[-1], r.stderr[-2000:]


def test_info_shows_the_kernel_set_on_its_own_row():
    auto = {"MININET_ISA": "", "MININET_ISA_PRETEND_MISSING": ""}   # whatever this run has
    r = cli("info", "--json", env=auto)
    assert r.returncode == 0, r.stderr
    best = active_in_subprocess()[0]
    assert json.loads(r.stdout)["kernel_isa"].startswith(f"{best} (best this CPU")
    r = cli("info", "--json", env={**auto, "MININET_ISA": "generic"})
    assert json.loads(r.stdout)["kernel_isa"].startswith("generic (forced by MININET_ISA")
    from mininet_ext import _build_info
    assert json.loads(r.stdout)["vector_modules"] == (
        "the default build (the x86-64 baseline)" if _build_info.PORTABLE
        else "the generic build (mininet_ext._generic.*)")
    r = cli("info", env=auto)
    assert any(line.split("│")[1:2] and line.split("│")[1].strip() == "kernel_isa"
               for line in r.stdout.splitlines()), r.stdout


# the pixel-major tiles (vectors, height, run) per set for the MNIST CNN's 5x5 layer (16 ->
# 32 channels at 14x14) and a 3x3 one at 14x14: AVX2 takes one-vector tiles where they
# fit (tab_one), SSE2 keeps two vectors, AVX-512 slides over one vector (no two-vector
# 14-pixel sliding tile fits its registers)
TILES = {"generic": [(2, 7, 0), (2, 7, 0)], "avx2": [(1, 14, 0), (1, 14, 0)],
         "avx512": [(1, 14, 5), (1, 14, 3)], "avx512bf16": [(1, 14, 5), (1, 14, 3)]}


@pytest.mark.parametrize("isa", _isa.ISAS)
def test_pixel_major_tiles_per_set(isa):
    if isa not in SUPPORTED:
        pytest.skip(unsupported_reason(isa))
    code = ("from mininet_ext import convgemm\n"
            "for c, k, p in ((16, 5, 2), (24, 3, 1)):\n"
            "    print(*convgemm.row_slide((2, c, 14, 14), 32, 1, (k, k), (1, 1), (p, p),"
            " (1, 1), 14, 14, 4))")
    r = run_python(code, env=isa_env(MININET_ISA=isa), timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    got = [tuple(int(v) for v in line.split()) for line in r.stdout.splitlines()]
    assert got == TILES[isa]


# the suites of the modules built once per kernel set (_isa.variant)
VARIANT_SUITES = ["tests/test_conv_direct.py", "tests/test_conv_cm.py", "tests/test_conv_nhwc.py",
                  "tests/test_winograd.py", "tests/test_winograd5.py", "tests/test_conv_chunks.py",
                  "tests/test_norm_kernels.py", "tests/test_bn_relu.py", "tests/test_fusion.py",
                  "tests/test_optim_torch.py", "tests/test_small_kernels.py",
                  "tests/test_sequence.py", "tests/test_xent_checked_labels.py",
                  "tests/test_nn_layers_torch.py",
                  "tests/test_step_epilogues.py", "tests/test_row_kernels.py",
                  "tests/test_conv_relu_train.py"]


@pytest.mark.parametrize("isa", _isa.ISAS)
def test_vector_modules_follow_the_kernel_set(isa):
    """The backend's per-set modules are the build for the forced set (avx512bf16 runs
    the avx512 one; in a portable wheel the default build is the generic one), and
    mininet_ext.<name> stays the default build after them."""
    if isa not in SUPPORTED:
        pytest.skip(unsupported_reason(isa))
    code = ("import importlib\n"
            "cpu = importlib.import_module('mininet.backend.cpu')\n"
            "print(*(m.__name__ for m in (cpu._direct, cpu._nhwc, cpu._wino, cpu._norm,"
            " cpu._conv, cpu._red, cpu._opt, cpu._loss, cpu._rnn)))\n"
            "import mininet_ext.norm as d\n"
            "print(d.__name__)")
    r = run_python(code, env=isa_env(MININET_ISA=isa), timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    from mininet_ext import _build_info
    v = _isa.VARIANT_OF[isa]
    # a portable build has no generic variant: its default build is generic
    want = "mininet_ext." if (v == "generic" and _build_info.PORTABLE) else f"mininet_ext._{v}."
    lines = r.stdout.splitlines()
    assert lines[0].split() == [want + m for m in ("conv_direct", "conv_nhwc", "winograd", "norm",
                                                   "conv", "reduce", "optim", "losses", "rnn")]
    assert lines[1] == "mininet_ext.norm"


def test_variant_choice(monkeypatch):
    """Unforced, a -march=native build runs its default modules, a portable one the
    active set's build; a build without the variant falls back to the default."""
    from mininet_ext import _build_info
    monkeypatch.setattr(_isa, "FORCED", False)
    monkeypatch.setattr(_build_info, "PORTABLE", False)
    assert _isa.variant("conv_nhwc").__name__ == "mininet_ext.conv_nhwc"
    monkeypatch.setattr(_build_info, "PORTABLE", True)
    v = _isa.VARIANT_OF[_isa.active()]
    assert _isa.variant("conv_nhwc").__name__ == f"mininet_ext._{v}.conv_nhwc"
    monkeypatch.setattr(_isa, "_ACTIVE", "generic")
    monkeypatch.setattr(_isa, "VARIANT_OF", {"generic": "no_such_set"})
    assert _isa.variant("conv_nhwc").__name__ == "mininet_ext.conv_nhwc"


def _run_suite(isa):
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                           "tests/test_matmul.py", "tests/test_conv.py",
                           "tests/test_conv_slide.py"] + VARIANT_SUITES, cwd=ROOT,
                          env=isa_env(MININET_ISA=isa, OMP_WAIT_POLICY="passive"),
                          capture_output=True, text=True, timeout=900)


_SUITES = {}


def _suite_result(request, isa):
    """The suite's run under isa. The first call starts the runs of every set this
    session selected, two at a time: a suite is mostly pytest's own single-threaded work,
    so on two cores a pair takes about as long as one (four sets: 108 s one after
    another, about 65 s in pairs). Their kernels' threads wait passively, as two
    processes share the cores."""
    if not _SUITES:
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)
        for item in request.session.items:
            if getattr(item, "originalname", None) == request.node.originalname:
                want = item.callspec.params["isa"]
                if _suite_runs_here(want) is None and want not in _SUITES:
                    _SUITES[want] = pool.submit(_run_suite, want)
        pool.shutdown(wait=False)
    if isa not in _SUITES:   # not selected at collection (a rerun): on its own
        _SUITES[isa] = concurrent.futures.Future()
        _SUITES[isa].set_result(_run_suite(isa))
    return _SUITES[isa].result()


def _suite_runs_here(isa):
    """Why the suite under isa is not run in a process of its own, or None."""
    from mininet_ext import _build_info
    if isa not in SUPPORTED:
        return unsupported_reason(isa)
    if isa == _isa.active() and _build_info.PORTABLE:
        return f"{isa} is this process's set: the suite itself tests it"
    return None


@pytest.mark.slow
@pytest.mark.parametrize("isa", _isa.ISAS)
def test_matmul_and_conv_suites_under_each_isa(isa, request):
    """tests/test_matmul.py, tests/test_conv.py and tests/test_conv_slide.py (the tiles
    each set picks, against PyTorch), and the suites of the modules built per set, under
    every set this CPU runs. Only a portable build's own set is left to the suite itself:
    a -march=native build runs its default modules unforced, not the set's build."""
    why = _suite_runs_here(isa)
    if why is not None:
        pytest.skip(why)
    r = _suite_result(request, isa)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
