"""Tampered checkpoints (issue item 14): every header field and every array is checked
against the model and the optimizer before anything is loaded, and every fused kernel's
wrapper checks the sizes of its buffers (a wrong size is a ValueError, never a read past
the end: an Adam moment of shape (3,) used to segfault the fused step)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mininet.models import build_model, load_checkpoint, save_checkpoint
from mininet.models.train import CheckpointError, checkpoint_epoch, make_optimizer
from conftest import cli as _cli


def _model_and_adam():
    model = build_model("softmax")
    return model, make_optimizer("adam", model.parameters(), 1e-3)


@pytest.fixture
def good(tmp_path):
    """A real checkpoint (epoch 2, Adam moments after one step, an rng state)."""
    from mininet import nn
    from mininet.autograd import Tensor
    from mininet.init import generator
    model, opt = _model_and_adam()
    x = Tensor(np.random.default_rng(0).random((4, 784), dtype=np.float32))
    nn.SoftmaxLoss()(model(x), Tensor(np.arange(4))).backward()
    opt.step()
    path = tmp_path / "good.npz"
    save_checkpoint(path, model, opt, 2, {"model": "softmax", "optimizer": "adam"},
                    generator().bit_generator.state)
    return path


def tamper(src, dst, header=None, arrays=None, drop=()):
    """A copy of checkpoint src with header fields and arrays replaced (or dropped)."""
    with np.load(src) as d:
        data = {k: d[k] for k in d.files}
    h = json.loads(bytes(data["header"]).decode())
    h.update(header or {})
    data.update(arrays or {})
    for k in drop:
        data.pop(k, None)
    data["header"] = np.frombuffer(json.dumps(h).encode(), dtype=np.uint8)
    np.savez(dst, **data)
    return dst


def test_a_good_checkpoint_loads(good):
    model, opt = _model_and_adam()
    header = load_checkpoint(good, model, opt)
    assert header["epoch"] == 2 and opt.step_count == 1 and checkpoint_epoch(good) == 2
    assert set(opt.state[0]) == {"m", "v"}


@pytest.mark.parametrize("field, value", [
    ("epoch", -3), ("epoch", "3"), ("epoch", True), ("epoch", 1.5), ("epoch", None),
    ("epoch", 2 ** 40), ("step_count", -1), ("step_count", 0.5), ("lr", float("nan")),
    ("lr", -1.0), ("lr", "fast"), ("lr", float("inf")), ("meta", [1, 2]),
    ("meta", {"model": {"nested": 1}}), ("rng_state", 5), ("rng_state", "x"),
    ("rng_state", {"bit_generator": "PCG64"}), ("rng_state", {}),
    ("rng_state", {"bit_generator": "MT19937", "state": {"key": [1], "pos": 0}}),
])
def test_tampered_header_fields_are_checkpoint_errors(good, tmp_path, field, value):
    bad = tamper(good, tmp_path / "bad.npz", header={field: value})
    model, opt = _model_and_adam()
    with pytest.raises(CheckpointError, match="bad.npz") as info:
        load_checkpoint(bad, model, opt)
    assert field in str(info.value)
    assert checkpoint_epoch(bad) is None


def test_a_header_that_is_not_an_object(good, tmp_path):
    with np.load(good) as d:
        data = {k: d[k] for k in d.files}
    data["header"] = np.frombuffer(b"[1, 2]", dtype=np.uint8)
    np.savez(tmp_path / "bad.npz", **data)
    with pytest.raises(CheckpointError, match="bad.npz"):
        load_checkpoint(tmp_path / "bad.npz", *_model_and_adam())


@pytest.mark.parametrize("arrays, drop, words", [
    ({"optim/0/m": np.zeros(3, np.float32)}, (), ["optim", "(3,)"]),
    ({"optim/0/m": np.zeros((784, 10), np.float64)}, (), ["float64"]),
    ({"optim/1/v": -np.ones(10, np.float32)}, (), ["negative"]),
    ({"optim/1/v": np.full(10, np.nan, np.float32)}, (), ["NaN"]),
    ({"optim/0/zz": np.zeros((784, 10), np.float32)}, (), ["zz"]),
    ({"optim/7/m": np.zeros(3, np.float32)}, (), ["7"]),
    ({"optim/-1/m": np.zeros(10, np.float32)}, (), ["optim/-1/m"]),
    ({"optim/0": np.zeros(3, np.float32)}, (), ["optim/0"]),
    ({"model/linear.weight": np.zeros((784, 10), np.float64)}, (), ["float64"]),
    ({"model/linear.weight": np.zeros((10, 784), np.float32)}, (), ["(10, 784)"]),
    ({"model/linear.bias": np.full(10, np.inf, np.float32)}, (), ["infinite"]),
    ({"model/linear.bias": np.array(["a"] * 10)}, (), ["linear.bias"]),
    ({"model/extra": np.zeros(3, np.float32)}, (), ["extra"]),
    ({"stray": np.zeros(3, np.float32)}, (), ["stray"]),
    ({}, ("model/linear.bias",), ["linear.bias", "missing"]),
])
def test_tampered_arrays_are_checkpoint_errors_and_load_nothing(good, tmp_path, arrays, drop, words):
    bad = tamper(good, tmp_path / "bad.npz", arrays=arrays, drop=drop)
    model, opt = _model_and_adam()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match="bad.npz") as info:
        load_checkpoint(bad, model, opt)
    for w in words:
        assert w in str(info.value), (w, str(info.value))
    for k, v in model.state_dict().items():   # nothing was half-loaded
        np.testing.assert_array_equal(v, before[k])
    assert opt.state == {} and opt.step_count == 0


def test_optimizer_load_state_dict_checks_before_it_changes_anything():
    from mininet import optim, nn
    layer = nn.Linear(3, 2)
    opt = optim.Adam(layer.parameters(), lr=0.1)
    good = {"m": np.zeros((3, 2), np.float32), "v": np.zeros((3, 2), np.float32)}
    for sd, err in [({"step_count": 1, "lr": 0.1, "state": {0: {**good, "m": np.zeros(3, np.float32)}}}, ValueError),
                    ({"step_count": -1, "lr": 0.1, "state": {}}, ValueError),
                    ({"step_count": 1, "lr": float("nan"), "state": {}}, ValueError),
                    ({"step_count": 1, "lr": 0.1, "state": {5: good}}, KeyError),
                    ({"step_count": 1, "lr": 0.1, "state": {0: {"m": [0.0] * 6}}}, TypeError),
                    # the checkpoint header's checks: save_checkpoint writes an int
                    ({"step_count": 3.0, "lr": 0.1, "state": {}}, ValueError),
                    ({"step_count": True, "lr": 0.1, "state": {}}, ValueError),
                    ({"step_count": 1, "lr": "0.1", "state": {}}, ValueError)]:
        with pytest.raises(err):
            opt.load_state_dict(sd)
        assert opt.state == {} and opt.step_count == 0 and opt.lr == 0.1
    opt.load_state_dict({"step_count": 3, "lr": 0.05, "state": {0: good}})
    assert opt.step_count == 3 and opt.lr == 0.05 and set(opt.state[0]) == {"m", "v"}


# peak RSS from VmHWM: after an exec, ru_maxrss starts at the parent's (pytest's) peak
BOUNDED_LOAD = """if True:
    import sys
    from mininet.models import build_model, load_checkpoint
    from mininet.models.train import CheckpointError, make_optimizer
    model = build_model("softmax")
    opt = make_optimizer("adam", model.parameters(), 1e-3)
    contents = open(sys.argv[1], "rb").read() if sys.argv[2] == "contents" else None
    peak_mb = lambda: int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024
    peak0 = peak_mb()
    try:
        load_checkpoint(sys.argv[1], model, opt, contents=contents)
        print("loaded")
    except CheckpointError as e:
        print("CheckpointError", e)
    print("rss_growth_mb", peak_mb() - peak0)
"""


def with_member(src, dst, name, header, zero_bytes):
    """A copy of checkpoint src with member `name` (a .npy header, then zero_bytes of zeros,
    deflated to about a thousandth) added, or replacing the member of that name."""
    import zipfile
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            if info.filename != name:
                zout.writestr(info, zin.read(info))
        with zout.open(name, "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, header)
            for _ in range(zero_bytes >> 24):
                f.write(bytes(1 << 24))
    return dst


MB256 = 256 << 20


@pytest.mark.parametrize("via", ["path", "contents"])
@pytest.mark.parametrize("name, header, zeros, words", [
    ("junk.npy", {"descr": "|u1", "fortran_order": False, "shape": (MB256,)}, MB256,
     ["junk", "not an entry"]),
    ("model/linear.weight.npy", {"descr": "<f4", "fortran_order": False, "shape": (MB256 // 4,)},
     MB256, ["linear.weight", "(67108864,)", "(784, 10)"]),
    ("header.npy", {"descr": "|u1", "fortran_order": False, "shape": (MB256,)}, MB256,
     ["header.npy", "uint8 (268435456,)"]),
    ("model/linear.bias.npy", {"descr": "<f4", "fortran_order": False, "shape": (10,)},
     MB256, ["linear.bias", "not the 40 bytes"]),
], ids=["extra-member", "declared-huge", "huge-header", "trailing-data"])
def test_a_zip_bomb_member_is_refused_before_its_data_is_read(good, tmp_path, name, header,
                                                              zeros, words, via):
    """A checkpoint of 300 KB holding a member that inflates to 256 MB: refused from the
    member names and .npy headers, reading exactly what the model needs (np.load read
    every member whole, before any check: RSS grew by the member's size)."""
    bad = with_member(good, tmp_path / "bad.npz", name, header, zeros)
    r = subprocess.run([sys.executable, "-c", BOUNDED_LOAD, str(bad), via], capture_output=True,
                       text=True, timeout=120, env=dict(os.environ, MININET_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr[-2000:]
    first, growth = r.stdout.splitlines()
    assert first.startswith("CheckpointError") and "bad.npz" in first, r.stdout
    for w in words:
        assert w in first, (w, first)
    assert float(growth.split()[1]) < 32, r.stdout


@pytest.fixture(scope="module")
def cli_checkpoint(tiny_mnist, tmp_path_factory):
    """The CLI's arguments and the checkpoint of its first epoch."""
    ck = tmp_path_factory.mktemp("ck") / "ck.npz"
    base = ("train", "mnist", "--data-dir", tiny_mnist, "--model", "softmax", "--batch-size", "50")
    r = _cli(*base, "--epochs", "1", "--save", ck)
    assert r.returncode == 0, r.stderr
    return base, ck


@pytest.mark.parametrize("header, arrays, words", [
    ({"epoch": -3}, {}, ["epoch", "-3"]),
    ({"rng_state": 5}, {}, ["rng_state"]),
    ({}, {"optim/0/m": np.zeros(3, np.float32)}, ["optim", "(3,)"]),
])
def test_resume_from_a_tampered_checkpoint_is_one_line_exit_2(cli_checkpoint, tmp_path, header,
                                                              arrays, words):
    """Before: epoch -3 trained epochs -2..N, rng_state 5 was a TypeError traceback and a
    moment of shape (3,) segfaulted (exit 139) in the fused Adam step."""
    base, ck = cli_checkpoint
    bad = tamper(ck, tmp_path / "bad.npz", header=header, arrays=arrays)
    r = _cli(*base, "--epochs", "2", "--resume", bad)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --resume") and "bad.npz" in lines[0], r.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


# the fused kernels' wrappers ----------------------------------------------------------------
def test_an_optimizer_state_of_the_wrong_size_is_a_valueerror_not_a_segfault():
    """The state set behind load_state_dict's back reaches the fused kernels' size checks
    (in a child process: before the fix this crashed the interpreter)."""
    code = """if True:
        import numpy as np
        from mininet import nn, optim
        from mininet.autograd import Tensor
        from mininet.ndarray import NDArray
        for make, name in ((lambda ps: optim.Adam(ps), "m"), (lambda ps: optim.SGD(ps, momentum=0.9), "v")):
            layer = nn.Linear(2000, 500)
            opt = make(layer.parameters())
            layer(Tensor(np.ones((2, 2000), np.float32))).sum().backward()
            opt.step()
            opt.state[0][name] = NDArray(np.zeros(3, np.float32))
            try:
                opt.step()
            except ValueError as e:
                print("ValueError", e)
    """
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, MININET_NUM_THREADS="1"))
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    assert r.stdout.count("ValueError") == 2 and "(1000000,)" in r.stdout, r.stdout


def _buf(n, itemsize=4):
    from mininet_ext.buffer import Buffer
    return Buffer(n * itemsize)


def _calls():
    """(name, call with one buffer too small, the same call with every buffer big enough)."""
    from mininet_ext import conv, convgemm, losses, norm, optim, rnn, strided
    B = _buf
    n = 10
    labels = np.zeros(4, np.int64)
    from mininet_ext.buffer import Buffer
    lab = Buffer.wrap(labels)
    bad_lab = Buffer.wrap(np.array([0, 1, 2, 7], np.int64))
    xs = (2, 3, 6, 6)   # N, C, H, W
    big = 2 * 3 * 6 * 6
    conv_args = lambda x, w, y: (x, 0, w, 0, None, 0, y, xs, 4, 1, (3, 3), (1, 1), (1, 1), (1, 1), 6, 6, 4)
    return [
        ("sgd_step p", lambda s: optim.sgd_step(B(n - s), B(n), 0, B(n), n, .1, .9, 0, 0, False, False, 4)),
        ("sgd_step v", lambda s: optim.sgd_step(B(n), B(n), 0, B(n - s), n, .1, .9, 0, 0, False, False, 4)),
        ("sgd_step g_off", lambda s: optim.sgd_step(B(n), B(n), s, B(n), n, .1, .9, 0, 0, False, False, 4)),
        ("adam_step m", lambda s: optim.adam_step(B(n), B(n), 0, B(n - 7 * s), B(n), n, .1, .9, .99, 1e-8, 0, False, 1, 4)),
        ("adam_step v f64", lambda s: optim.adam_step(B(n, 8), B(n, 8), 0, B(n, 8), B(n - s, 8), n, .1, .9, .99, 1e-8, 0, False, 1, 8)),
        ("adam_step itemsize", lambda s: optim.adam_step(B(n), B(n), 0, B(n), B(n), n, .1, .9, .99, 1e-8, 0, False, 1, 4 + 2 * s)),
        ("xent logits", lambda s: losses.forward(B(4 * 5 - s), 0, lab, B(20), 4, 5, 4)),
        ("xent labels range", lambda s: losses.forward(B(20), 0, bad_lab if s else lab, B(20), 4, 5, 4)),
        ("xent grad out", lambda s: losses.backward(B(20), lab, B(20 - s), 4, 5, 1.0, 4)),
        ("batchnorm x", lambda s: norm.forward(B(big - s), 0, B(3), 0, B(3), 0, B(big), B(big), B(3), B(3), B(3), 2, 3, 36, 1e-5, 4)),
        ("batchnorm mean", lambda s: norm.forward(B(big), 0, B(3), 0, B(3), 0, B(big), B(big), B(3 - s), B(3), B(3), 2, 3, 36, 1e-5, 4)),
        ("batchnorm grad dx", lambda s: norm.backward(B(big), 0, B(big), B(3), 0, B(3), B(big - s), B(3), B(3), 2, 3, 36, 4)),
        ("batchnorm1d w_off", lambda s: norm.forward_2d(B(6), 0, B(3), s, B(3), 0, B(6), B(6), B(3), B(3), B(3), 2, 3, 1e-5, 4)),
        ("batchnorm1d grad db", lambda s: norm.backward_2d(B(6), 0, B(6), B(3), 0, B(3), B(6), B(3), B(3 - s), 2, 3, 4)),
        ("lstm z", lambda s: rnn.lstm_forward(B(2 * 16 - s), B(8), B(40), B(8), B(8), 2, 4, 4)),
        ("lstm dc_prev", lambda s: rnn.lstm_backward(B(40), B(8), B(8), B(8), B(32), B(8 - s), 2, 4, 4)),
        ("im2col x strides", lambda s: conv.im2col(B(big), 0, (108, 36, 6, 1 + s), xs, B(27 * 72), (3, 3), (1, 1), (1, 1), (1, 1), 6, 6, 4)),
        ("im2col col", lambda s: conv.im2col(B(big), 0, (108, 36, 6, 1), xs, B(27 * 72 - s), (3, 3), (1, 1), (1, 1), (1, 1), 6, 6, 4)),
        ("col2im dx", lambda s: conv.col2im(B(27 * 72), B(big - s), xs, (3, 3), (1, 1), (1, 1), (1, 1), 6, 6, 4)),
        ("to_nchw bias", lambda s: conv.to_nchw(B(24), B(4 - s), 0, B(24), 4, 2, 3, 4)),
        ("from_nchw db", lambda s: conv.from_nchw(B(24), 0, B(24), B(4 - s), 4, 2, 3, 4)),
        ("maxpool idx", lambda s: conv.maxpool(B(big), B(54), B(54 - s, 8), xs, (2, 2), (2, 2), (0, 0), (1, 1), 3, 3, 4)),
        ("maxpool 2x2 geometry", lambda s: conv.maxpool(B(big), B(2 * 3 * (3 + s) * 3), B(2 * 3 * (3 + s) * 3, 8), xs, (2, 2), (2, 2), (0, 0), (1, 1), 3 + s, 3, 4)),
        ("maxpool backward dx", lambda s: conv.maxpool_backward(B(54), Buffer.wrap(np.zeros(54, np.int64)), B(big - s), xs, 3, 3, 4)),
        ("avgpool backward", lambda s: conv.avgpool(B(54 - s), B(big), xs, (2, 2), (2, 2), (0, 0), 3, 3, True, 4)),
        ("maxpool gather out", lambda s: conv.maxpool_gather(B(big), Buffer.wrap(np.zeros(54, np.int64)), B(54 - s), xs, 3, 3, 4)),
        ("conv2d w", lambda s: convgemm.forward(*conv_args(B(big), B(4 * 27 - s), B(2 * 4 * 36)))),
        ("conv2d out", lambda s: convgemm.forward(*conv_args(B(big), B(4 * 27), B(2 * 4 * 36 - s)))),
        ("conv2d output larger than the input gives", lambda s: convgemm.forward(
            B(big), 0, B(108), 0, None, 0, B(2 * 4 * (6 + s) * 6), xs, 4, 1, (3, 3), (1, 1),
            (1, 1), (1, 1), 6 + s, 6, 4)),
        ("conv2d weight grad dw", lambda s: convgemm.weight_grad(B(2 * 4 * 36), 0, B(big), 0, B(108 - s), xs, 4, 1, (3, 3), (1, 1), (1, 1), (1, 1), 6, 6, 4)),
        ("conv2d input grad dx", lambda s: convgemm.input_grad(B(2 * 4 * 36), 0, B(108), 0, B(big - s), xs, 4, 1, (3, 3), (1, 1), (1, 1), (1, 1), 6, 6, 4)),
        ("conv2d bias grad dy", lambda s: convgemm.bias_grad(B(24 - s), 0, B(4), 2, 4, 3, 4)),
        ("take_rows src", lambda s: strided.take_rows(B(12 - s), 0, lab, 0, B(12), 4, 4, 3, 4)),
        ("add_rows idx", lambda s: strided.add_rows(B(12), 0, lab, s, B(12), 4, 4, 3, 4)),
    ]


@pytest.mark.parametrize("name, call", _calls(), ids=[name for name, _ in _calls()])
def test_every_fused_kernel_wrapper_checks_its_buffer_sizes(name, call):
    call(0)                      # every buffer big enough: runs
    with pytest.raises(ValueError):
        call(1)                  # one buffer a little too small (or a bad label/geometry)


def test_optimizer_state_of_mixed_dtype_parameters_keeps_each_parameters_dtype():
    """load_state_dict converted every state array to the last parameter's dtype."""
    import mininet
    from mininet import optim
    a = mininet.Tensor(np.ones(3), dtype="float64", requires_grad=True)
    b = mininet.Tensor(np.ones(2), dtype="float32", requires_grad=True)
    opt = optim.Adam([a, b], lr=0.1)
    for p in (a, b):
        p.grad = mininet.Tensor(np.full(p.shape, 0.5), dtype=p.dtype)
    opt.step()
    other = optim.Adam([a, b], lr=0.1)
    other.load_state_dict(opt.state_dict())
    assert [other.state[i]["m"].dtype for i in (0, 1)] == [np.float64, np.float32]
    other.step()
    np.testing.assert_allclose(other.state[0]["m"].numpy(), opt.state[0]["m"].numpy() * 0.9 + 0.05)
