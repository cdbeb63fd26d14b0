"""safetensors files: mininet's writer and reader against the reference package (numpy and
PyTorch APIs, both directions, bitwise), memory-mapped loading, hostile headers, the
atomic write, peak memory, and `mininet train --export-weights`."""
import json
import os
import struct

import numpy as np
import pytest

import mininet
from mininet import NDArray, Tensor
from mininet.interop.safetensors import SafetensorsError, load_metadata
from mininet.models import build_model

from conftest import needs_mpi, run_cli, run_python, torch

safetensors = pytest.importorskip("safetensors", reason="the safetensors package is the "
                                  "reference here: pip install -e '.[test]'")
import safetensors.numpy as st_numpy  # noqa: E402

rng = np.random.default_rng(0)


def special_floats(dtype, shape):
    """Random values with NaN, infinities, -0.0 and a subnormal: bitwise checks see them."""
    a = rng.standard_normal(shape).astype(dtype)
    flat = a.reshape(-1)
    specials = [np.nan, np.inf, -np.inf, -0.0, np.finfo(dtype).tiny / 2]
    flat[:len(specials)] = np.array(specials, dtype=dtype)[:flat.size]
    return a


def same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def sample_state():
    return {"w": Tensor(special_floats(np.float32, (7, 5))),
            "b64": Tensor(special_floats(np.float64, (3,)), dtype="float64"),
            "idx": Tensor(np.array([0, -1, 2 ** 62, -2 ** 63], np.int64)),
            "scalar": Tensor(np.float32(3.5)),
            "empty": Tensor(np.zeros((0, 4), np.float32)),
            "view.T": Tensor(special_floats(np.float32, (4, 6))).transpose()[1:]}


# round trips -----------------------------------------------------------------------------
@pytest.mark.parametrize("mmap", [True, False])
def test_round_trip_keeps_every_bit(tmp_path, mmap):
    state = sample_state()
    path = tmp_path / "m.safetensors"
    mininet.save_file(state, path, metadata={"epoch": "3", "note": "é ü"})
    back = mininet.load_file(path, mmap=mmap)
    assert set(back) == set(state)
    for name, t in state.items():
        assert isinstance(back[name], Tensor)
        assert same_bits(back[name].numpy(), t.numpy()), name
    assert load_metadata(path) == {"epoch": "3", "note": "é ü"}


def test_numpy_arrays_and_ndarrays_are_saved_too(tmp_path):
    path = tmp_path / "a.safetensors"
    arrays = {"f16": np.arange(4, dtype=np.float16), "u8": np.arange(3, dtype=np.uint8),
              "big_endian": np.arange(3, dtype=">f4"), "flag": np.array([True, False]),
              "nd": NDArray(np.ones((2, 2)))}
    mininet.save_file(arrays, path)
    ref = st_numpy.load_file(str(path))
    assert ref["f16"].dtype == np.float16 and same_bits(ref["f16"], arrays["f16"])
    assert same_bits(ref["big_endian"], np.arange(3, dtype=np.float32))
    assert same_bits(ref["flag"], arrays["flag"]) and same_bits(ref["u8"], arrays["u8"])
    assert same_bits(ref["nd"], np.ones((2, 2)))


def test_save_refuses_what_the_format_cannot_hold(tmp_path):
    path = tmp_path / "x.safetensors"
    with pytest.raises(TypeError, match="'s'.*<U1"):
        mininet.save_file({"s": np.array(["a"])}, path)
    with pytest.raises(TypeError, match="list"):
        mininet.save_file({"l": [1, 2]}, path)
    with pytest.raises(ValueError, match="__metadata__"):
        mininet.save_file({"__metadata__": np.zeros(1)}, path)
    with pytest.raises(TypeError, match="metadata"):
        mininet.save_file({"a": np.zeros(1)}, path, metadata={"epoch": 3})
    assert not path.exists() and not list(tmp_path.iterdir())


# against the reference package --------------------------------------------------------------
def test_reference_numpy_reads_mininet_files(tmp_path):
    state = sample_state()
    path = tmp_path / "m.safetensors"
    mininet.save_file(state, path, metadata={"format": "mininet"})
    ref = st_numpy.load_file(str(path))
    for name, t in state.items():
        assert same_bits(ref[name], t.numpy()), name
    with safetensors.safe_open(str(path), framework="np") as f:
        assert f.metadata() == {"format": "mininet"}


@pytest.mark.torch
def test_reference_torch_reads_mininet_files(tmp_path):
    import safetensors.torch as st_torch
    state = sample_state()
    path = tmp_path / "m.safetensors"
    mininet.save_file(state, path)
    ref = st_torch.load_file(str(path))
    for name, t in state.items():
        assert same_bits(ref[name].numpy(), t.numpy()), name


def test_mininet_reads_reference_numpy_files(tmp_path):
    arrays = {"a": special_floats(np.float32, (3, 4)), "b": special_floats(np.float64, (5,)),
              "c": np.arange(-3, 3, dtype=np.int64), "z": np.zeros((2, 0), np.float32),
              "s": np.array(2.0)}
    path = tmp_path / "ref.safetensors"
    st_numpy.save_file(arrays, str(path), metadata={"k": "v"})
    back = mininet.load_file(path)
    for name, a in arrays.items():
        assert same_bits(back[name].numpy(), a), name
    assert load_metadata(path) == {"k": "v"}


@pytest.mark.torch
def test_mininet_reads_reference_torch_files_and_converts_small_dtypes(tmp_path):
    import safetensors.torch as st_torch
    g = torch.Generator().manual_seed(0)
    native = {"f32": torch.randn(4, 3, generator=g), "f64": torch.randn(6, dtype=torch.float64),
              "i64": torch.arange(-5, 5), "t": torch.randn(3, 5, generator=g).t().contiguous(),
              "bool": torch.tensor([True, False, True])}
    native["f32"][0, 0] = float("nan")
    converted = {"f16": torch.randn(5, generator=g).half(),
                 "bf16": torch.randn(5, generator=g).bfloat16(),
                 "i32": torch.tensor([-2 ** 31, 0, 2 ** 31 - 1], dtype=torch.int32),
                 "i16": torch.tensor([-7, 9], dtype=torch.int16),
                 "i8": torch.tensor([-128, 127], dtype=torch.int8),
                 "u8": torch.tensor([0, 255], dtype=torch.uint8)}
    path = tmp_path / "torch.safetensors"
    st_torch.save_file({**native, **converted}, str(path))
    back = mininet.load_file(path)
    for name, t in native.items():
        assert same_bits(back[name].numpy(), t.numpy()), name
    for name, t in converted.items():
        want = t.float() if t.is_floating_point() else t.long()
        assert same_bits(back[name].numpy(), want.numpy()), name


@pytest.mark.torch
def test_model_weights_cross_both_ways(tmp_path):
    """mininet -> torch -> (torch writes) -> mininet: load_state_dict takes load_file's dict."""
    import safetensors.torch as st_torch
    model = build_model("mlp")
    first, second = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    mininet.save_file(model.state_dict(), first)
    st_torch.save_file(st_torch.load_file(str(first)), str(second))
    fresh = build_model("mlp")
    fresh.load_state_dict(mininet.load_file(second))
    for (name, p), (_, q) in zip(model.named_parameters(), fresh.named_parameters()):
        assert same_bits(p.numpy(), q.numpy()), name
    x = Tensor(rng.standard_normal((3, 784)).astype(np.float32))
    assert same_bits(model(x).numpy(), fresh(x).numpy())


# the memory map ---------------------------------------------------------------------------
def test_mapped_tensors_are_private_writable_views(tmp_path):
    path = tmp_path / "m.safetensors"
    mininet.save_file({"w": np.arange(6.0).reshape(2, 3)}, path)
    before = path.read_bytes()
    w = mininet.load_file(path)["w"]
    w.cached_data[0, 0] = 100.0          # copy-on-write: stays in this process
    (w * 2).numpy()
    assert w.numpy()[0, 0] == 100.0
    assert path.read_bytes() == before
    # save_file replaces the file by renaming: tensors over the old one keep their values
    mininet.save_file({"w": np.zeros((2, 3))}, path)
    assert w.numpy()[0, 1] == 1.0
    assert mininet.load_file(path)["w"].numpy()[0, 1] == 0.0


def test_mapped_tensors_share_one_map_and_compute(tmp_path):
    path = tmp_path / "m.safetensors"
    a, b = rng.standard_normal((8, 5)), rng.standard_normal((5, 3))
    mininet.save_file({"a": a, "b": b}, path)
    d = mininet.load_file(path)
    np.testing.assert_allclose((d["a"] @ d["b"]).numpy(), a @ b, rtol=1e-12)
    assert d["a"].cached_data.handle.nbytes == a.nbytes    # a view of its own bytes only


def raw_file(path, header, data=b"", length=None):
    """A file with this header (a dict, or raw bytes) and data; length overrides N."""
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text) if length is None else length) + text + data)
    return path


def test_misaligned_tensors_are_copied(tmp_path):
    """A writer that does not pad: the data starts at an odd offset, so the F64 tensor is
    read into an aligned buffer instead of viewed in place."""
    values = np.array([1.5, -2.25, 1e300])
    header = {"x": {"dtype": "F64", "shape": [3], "data_offsets": [0, 24]}}
    text = json.dumps(header).encode()
    text += b" " * ((-len(text) - 8) % 8 + 1)     # 8 + N is odd
    path = raw_file(tmp_path / "odd.safetensors", text, values.tobytes())
    assert (8 + len(text)) % 8 != 0
    for mmap in (True, False):
        x = mininet.load_file(path, mmap=mmap)["x"]
        assert same_bits(x.numpy(), values)
        assert x.cached_data.handle.address % 8 == 0


def test_load_to_a_device_and_order(tmp_path):
    path = tmp_path / "m.safetensors"
    mininet.save_file({"b": np.zeros(2), "a": np.ones(3, np.float32)}, path)
    d = mininet.load_file(path, device="cpu")
    assert d["a"].device == mininet.cpu() and sorted(d) == ["a", "b"]


@pytest.mark.parametrize("mmap", [True, False])
def test_peak_memory_loading_a_large_tensor(tmp_path, mmap):
    """One 64 MB tensor: the map costs nothing until read; reading every value (or the
    one copy that mmap=False makes) adds about the tensor's size, never twice it."""
    path = tmp_path / "big.safetensors"
    n = 16 * 1024 * 1024
    mininet.save_file({"w": np.full(n, 0.5, np.float32)}, path)
    code = (
        "import resource, sys, mininet\n"
        "def rss(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024\n"
        "base = rss()\n"
        f"d = mininet.load_file({str(path)!r}, mmap={mmap})\n"
        "loaded = rss()\n"
        "total = d['w'].cached_data.sum().item()\n"
        "print(base, loaded, rss(), total)\n")
    r = run_python(code, timeout=120)
    assert r.returncode == 0, r.stderr
    base, loaded, peak, total = r.stdout.split()
    size = n * 4
    assert float(total) == n * 0.5
    if mmap:
        assert int(loaded) - int(base) < 0.1 * size
    assert int(peak) - int(base) < 1.25 * size, (int(peak) - int(base)) / size


# hostile files --------------------------------------------------------------------------------
def t(dtype="F32", shape=(2,), offsets=(0, 8)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


HOSTILE = [
    # (id, header (dict or bytes), data, N override, words in the message, reference refuses)
    ("short", None, b"", None, ["too short"], True),
    ("length-past-end", {"a": t()}, bytes(8), 10_000, ["runs past the end"], True),
    ("length-over-limit", {"a": t()}, bytes(8), 200_000_000, ["limit"], True),
    ("not-json", b"{not json", b"", None, ["not valid JSON"], True),
    ("not-utf8", b'{"\xff": 1}', b"", None, ["not UTF-8"], True),
    ("not-object", b"[1, 2]", b"", None, ["not an object"], True),
    ("nan", b'{"a": NaN}', b"", None, ["not valid JSON"], True),
    ("deep", b"[" * 100_000, b"", None, ["not valid JSON"], True),
    ("huge-int", b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, ' + b"9" * 5000
     + b"]}}", bytes(8), None, ["not valid JSON"], True),
    ("duplicate", b'{"a": ' + json.dumps(t()).encode() + b', "a": '
     + json.dumps(t()).encode() + b"}", bytes(8), None, ["duplicate name 'a'"], False),
    ("unknown-dtype", {"a": t("F33")}, bytes(8), None, ["unknown dtype 'F33'"], True),
    ("dtype-not-string", {"a": t(5)}, bytes(8), None, ["unknown dtype 5"], True),
    ("refused-dtype", {"a": t("F8_E4M3", (8,))}, bytes(8), None, ["F8_E4M3", "not supported"], False),
    ("missing-field", {"a": {"dtype": "F32", "shape": [2]}}, bytes(8), None, ["needs dtype"], True),
    ("shape-mismatch", {"a": t(shape=(3,))}, bytes(8), None, ["12 bytes", "hold 8"], True),
    ("negative-dim", {"a": t(shape=(-2,))}, bytes(8), None, ["shape"], True),
    ("float-dim", {"a": t(shape=(2.0,))}, bytes(8), None, ["shape"], True),
    ("bool-dim", {"a": t(shape=(True, 2))}, bytes(8), None, ["shape"], True),
    ("too-many-dims", {"a": t(shape=(1,) * 65 + (2,))}, bytes(8), None, ["at most 64"], False),
    ("huge-empty-shape", {"a": t(shape=(0, 2 ** 70), offsets=(0, 0))}, b"", None, ["too large"], True),
    ("offsets-outside", {"a": t(offsets=(8, 16))}, bytes(8), None, ["outside the data"], True),
    ("offsets-backwards", {"a": t(offsets=(8, 0))}, bytes(8), None, ["run backwards"], True),
    ("offsets-three", {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4, 8]}}, bytes(8),
     None, ["two integers"], True),
    ("overlap", {"a": t(), "b": t(offsets=(4, 12))}, bytes(12), None, ["overlaps tensor 'a'"], True),
    ("gap", {"a": t(shape=(1,), offsets=(0, 4)), "b": t(shape=(1,), offsets=(8, 12))},
     bytes(12), None, ["bytes [4, 8)", "no tensor"], True),
    ("uncovered-tail", {"a": t(shape=(1,), offsets=(0, 4))}, bytes(8), None,
     ["cover 4 of the 8"], True),
    ("metadata-not-strings", {"__metadata__": {"epoch": 3}, "a": t()}, bytes(8), None,
     ["__metadata__", "strings"], True),
    ("metadata-not-object", {"__metadata__": [1], "a": t()}, bytes(8), None, ["__metadata__"], True),
]


@pytest.mark.parametrize("name, header, data, length, words, reference",
                         HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_headers_are_refused_naming_the_file(tmp_path, name, header, data, length,
                                                     words, reference):
    path = tmp_path / f"{name}.safetensors"
    if header is None:
        path.write_bytes(b"abc")
    else:
        raw_file(path, header, data, length)
    for mmap in (True, False):
        with pytest.raises(SafetensorsError) as e:
            mininet.load_file(path, mmap=mmap)
        msg = str(e.value)
        assert str(path) in msg and all(w in msg for w in words), msg
        assert "\n" not in msg and len(msg) < 400
    if reference:   # the reference implementation refuses it as well
        with pytest.raises(Exception):
            st_numpy.load_file(str(path))


def test_header_is_read_within_bounds(tmp_path):
    """A header length near the limit on a small file is refused before any allocation."""
    path = raw_file(tmp_path / "h.safetensors", b"{}", length=99_999_999)
    with pytest.raises(SafetensorsError, match="runs past the end"):
        mininet.load_file(path)


def test_missing_file_is_an_os_error_naming_it(tmp_path):
    with pytest.raises(OSError, match="missing.safetensors"):
        mininet.load_file(tmp_path / "missing.safetensors")


# writing atomically ----------------------------------------------------------------------------
def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    mininet.save_file({"a": np.ones(3)}, path)
    before = path.read_bytes()

    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="m.safetensors.*No space left"):
        mininet.save_file({"a": np.zeros(3)}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_file_mode_is_a_plain_files(tmp_path):
    path = tmp_path / "m.safetensors"
    mininet.save_file({"a": np.ones(1)}, path)
    mask = os.umask(0)
    os.umask(mask)
    assert (path.stat().st_mode & 0o777) == (0o666 & ~mask)


# the command line -------------------------------------------------------------------------------
def cli(*args):
    return run_cli(*args, env={"MININET_NUM_THREADS": "1", "COLUMNS": "200",
                               "MININET_OFFLINE": "1"}, timeout=240)


@pytest.mark.slow
def test_train_export_weights(tmp_path, tiny_mnist):
    out = tmp_path / "model.safetensors"
    r = cli("train", "mnist", "--data-dir", tiny_mnist, "--batch-size", "50", "--epochs", "1",
            "--export-weights", out)
    assert r.returncode == 0, r.stderr
    assert "weights written to" in r.stdout
    weights = mininet.load_file(out)
    model = build_model("mlp")
    assert set(weights) == set(model.state_dict())
    model.load_state_dict(weights)
    assert load_metadata(out)["model"] == "mlp"
    ref = st_numpy.load_file(str(out))
    for name, w in weights.items():
        assert same_bits(ref[name], w.numpy())


def test_export_weights_is_checked_before_training(tmp_path, tiny_mnist):
    r = cli("train", "mnist", "--data-dir", tiny_mnist, "--export-weights", tmp_path)
    assert r.returncode == 2 and "--export-weights" in r.stderr and r.stdout == ""
    r = cli("train", "ptb", "--data-dir", tmp_path, "--export-weights", tmp_path / "w.st")
    assert r.returncode == 2 and "ptb" in r.stderr


@pytest.mark.slow
@needs_mpi
def test_export_weights_on_two_ranks_is_written_once(tmp_path, tiny_mnist):
    out = tmp_path / "model.safetensors"
    r = run_cli("train", "mnist", "--data-dir", tiny_mnist, "--batch-size", "50", "--epochs",
                "1", "--ranks", "2", "--export-weights", out,
                env={"MININET_MPIRUN_ARGS": "--mca btl tcp,self", "MININET_NUM_THREADS": "1",
                     "MININET_OFFLINE": "1"}, timeout=240)
    assert r.returncode == 0, r.stderr
    assert "data-parallel over 2 ranks" in r.stdout + r.stderr
    assert (r.stdout + r.stderr).count("weights written to") == 1
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]
    build_model("mlp").load_state_dict(mininet.load_file(out))
