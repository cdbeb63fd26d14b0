"""read_pt and write_pt (mininet.interop.pt_reader): files torch.save wrote read equal to
torch.load's tensors (every dtype, views with strides and offsets, shared storages,
pickle protocols 2 and 4, big-endian and re-compressed archives), contiguous tensors as
views over the file's map, write_pt's files loaded by torch.load (weights_only=True), and
hostile files refused with one clear line naming the file, without running code, within
bounded memory (each loaded in a child process under an address-space limit)."""
import json
import os
import pickle
import re
import struct
import zipfile

import numpy as np
import pytest

from mininet import Tensor
from mininet.interop import PtError, read_pt, write_pt
from mininet.interop import pt_reader

from conftest import run_python, torch

needs_torch = pytest.mark.torch
RSS_LIMIT_MB = 100   # what reading one hostile file may add to the peak RSS


# pickles and zips written by hand -------------------------------------------------------------
def op_global(module, name):
    return b"c" + f"{module}\n{name}\n".encode()


def op_str(text):
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def op_int(n):
    if -2 ** 31 <= n < 2 ** 31:
        return b"J" + struct.pack("<i", n)
    raw = n.to_bytes(n.bit_length() // 8 + 1, "little", signed=True)
    return (b"\x8a" + bytes([len(raw)]) if len(raw) < 256 else b"\x8b" + struct.pack("<i", len(raw))) + raw


def op_tuple(*items):
    return b"(" + b"".join(items) + b"t"


def op_call(func, *args):
    return func + op_tuple(*args) + b"R"


def storage_id(key, numel, storage="FloatStorage"):
    return op_tuple(op_str("storage"), op_global("torch", storage), op_str(key), op_str("cpu"),
                    op_int(numel)) + b"Q"


def tensor(key="0", numel=6, offset=0, size=(2, 3), stride=(3, 1), storage="FloatStorage",
           offset_op=None):
    return op_call(op_global("torch._utils", "_rebuild_tensor_v2"), storage_id(key, numel, storage),
                   offset_op or op_int(offset), op_tuple(*map(op_int, size)),
                   op_tuple(*map(op_int, stride)), b"\x89",
                   op_call(op_global("collections", "OrderedDict")))


def state(*entries, proto=2):
    """A pickled OrderedDict of (name, value opcodes) entries."""
    body = b"".join(op_str(name) + value for name, value in entries)
    return bytes([0x80, proto]) + op_call(op_global("collections", "OrderedDict")) + b"(" + body + b"u."


DATA = np.arange(6, dtype="<f4").tobytes()


def write_zip(path, pickled, storages=None, top="archive", extra=(), method=zipfile.ZIP_STORED):
    """A torch.save-like zip: top/data.pkl, top/byteorder, top/data/<key>, top/version."""
    storages = {"0": DATA} if storages is None else storages
    with zipfile.ZipFile(path, "w", method) as z:
        z.writestr(f"{top}/data.pkl", pickled)
        z.writestr(f"{top}/byteorder", b"little")
        for key, raw in storages.items():
            z.writestr(f"{top}/data/{key}", raw)
        z.writestr(f"{top}/version", b"3\n")
        for name, raw in extra:
            z.writestr(name, raw)
    return path


def rezip(src, dst, replace=None, method=zipfile.ZIP_STORED):
    """src's entries into dst, those whose name ends with a key of replace replaced."""
    replace = replace or {}
    with zipfile.ZipFile(src) as a, zipfile.ZipFile(dst, "w", method) as b:
        for info in a.infolist():
            raw = a.read(info)
            for end, new in replace.items():
                if info.filename.endswith(end):
                    raw = new(raw) if callable(new) else new
            b.writestr(info.filename, raw)
    return dst


def test_hand_made_file_is_what_torch_saves(tmp_path):
    """The base of the hostile files below: torch.load and read_pt agree on it."""
    path = write_zip(tmp_path / "ok.pt", state(("w", tensor()), ("t", tensor(size=(3, 2), stride=(1, 3)))))
    got = read_pt(path)
    np.testing.assert_array_equal(got["w"], np.arange(6, dtype=np.float32).reshape(2, 3))
    np.testing.assert_array_equal(got["t"], got["w"].T)
    if torch is not None:
        ref = torch.load(path, weights_only=True)
        for k in ref:
            np.testing.assert_array_equal(got[k], ref[k].numpy())


# what torch.save writes ------------------------------------------------------------------------
def saved_state():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 8, generator=g, dtype=torch.float64)
    return {
        "f32": torch.randn(3, 4, generator=g),
        "f64": base,
        "transposed": base.t(),                               # stride (1, 8), shares f64's storage
        "sliced": base[1:5:2, 3:],                            # offset 11, strides (16, 1)
        "expanded": torch.randn(1, 5, generator=g).expand(4, 5),  # stride 0
        "f16": torch.randn(7, generator=g).half(),
        "bf16": torch.randn(2, 3, generator=g).to(torch.bfloat16),
        "bf16_t": torch.randn(3, 2, generator=g).to(torch.bfloat16).t(),
        "int64": torch.tensor([0, -1, 2 ** 62, -2 ** 63]),
        "num_batches_tracked": torch.tensor(12),
        "int32": torch.tensor([1, -2, 3], dtype=torch.int32),
        "uint8": torch.tensor([0, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False]),
        "empty": torch.zeros(0, 3),
        "scalar": torch.tensor(2.5),
    }


def expected(t):
    t = t.detach()
    if t.dtype in (torch.float16, torch.bfloat16):
        return t.float().numpy()
    if t.dtype == torch.bool:      # mininet has bool: kept
        return t.numpy()
    if not t.is_floating_point():
        return t.long().numpy()
    return t.numpy()


def check_equal(got, ref):
    assert list(got) == list(ref)
    for name, t in ref.items():
        want = expected(t)
        assert got[name].dtype == want.dtype and got[name].shape == want.shape, name
        assert got[name].flags.c_contiguous, name
        np.testing.assert_array_equal(got[name], want, err_msg=name)


@needs_torch
@pytest.mark.parametrize("protocol", [2, 4])
def test_reads_what_torch_saved(tmp_path, protocol):
    ref = saved_state()
    path = tmp_path / "s.pt"
    torch.save(ref, path, pickle_protocol=protocol)
    notes = []
    got = read_pt(path, notes)
    check_equal(got, ref)
    assert any("2 torch.BFloat16Storage tensors converted to float32" in n for n in notes), notes
    assert any("HalfStorage tensor converted to float32" in n for n in notes), notes
    assert all(str(path) in n for n in notes)


@needs_torch
def test_a_model_state_dict_and_parameters(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3),
                                torch.nn.LSTM(4, 5, 2))
    for keep_vars in (False, True):   # keep_vars: Parameters, pickled by _rebuild_parameter
        path = tmp_path / f"m{keep_vars}.pt"
        torch.save(model.state_dict(keep_vars=keep_vars), path)
        check_equal(read_pt(path), model.state_dict())


@needs_torch
def test_contiguous_tensors_are_private_views_over_the_file(tmp_path):
    path = tmp_path / "v.pt"
    w = torch.arange(12.0).reshape(3, 4)
    torch.save({"w": w, "row": w[1], "t": w.t()}, path)
    raw = path.read_bytes()
    got = read_pt(path)
    assert not got["w"].flags.owndata and np.shares_memory(got["w"], got["row"])
    assert got["t"].flags.owndata   # copied to C order
    got["w"][0, 0] = 100.0          # copy-on-write: the file keeps its bytes
    assert path.read_bytes() == raw and read_pt(path)["w"][0, 0] == 0


@needs_torch
def test_big_endian_and_compressed_archives(tmp_path):
    ref = {"a": torch.randn(3, 4, dtype=torch.float64), "b": torch.arange(5),
           "h": torch.randn(4).to(torch.bfloat16)}
    src = tmp_path / "s.pt"
    torch.save(ref, src)
    itemsize = {"0": 8, "1": 8, "2": 2}
    swapped = {f"data/{k}": (lambda n: lambda raw: np.frombuffer(raw, f"<u{n}").byteswap().tobytes())(n)
               for k, n in itemsize.items()}
    big = rezip(src, tmp_path / "big.pt", {"byteorder": b"big", **swapped})
    check_equal(read_pt(big), ref)
    deflated = rezip(src, tmp_path / "z.pt", method=zipfile.ZIP_DEFLATED)
    check_equal(read_pt(deflated), ref)


# write_pt ----------------------------------------------------------------------------------
def sample_arrays():
    r = np.random.default_rng(0)
    return {"w": r.standard_normal((4, 3)).astype(np.float32), "b64": r.standard_normal(5),
            "count": np.array(7, np.int64), "empty": np.zeros((0, 2), np.float32),
            "tensor": Tensor(r.standard_normal((2, 2)), dtype="float64"),
            "view": r.standard_normal((5, 6))[1:, ::2], "naïve name": np.ones(3, np.float32)}


def as_array(v):
    return v.numpy() if isinstance(v, Tensor) else v


@needs_torch
def test_write_pt_files_load_in_torch_and_back(tmp_path):
    arrays = sample_arrays()
    path = tmp_path / "w.pt"
    write_pt(arrays, path)
    ref = torch.load(path, weights_only=True)
    assert list(ref) == list(arrays)
    for name, v in arrays.items():
        np.testing.assert_array_equal(ref[name].numpy(), as_array(v))
        assert ref[name].numpy().dtype == as_array(v).dtype
    back = read_pt(path)
    for name, v in arrays.items():
        np.testing.assert_array_equal(back[name], as_array(v))
    with zipfile.ZipFile(path) as z, open(path, "rb") as f:   # storages 64-byte aligned
        for info in z.infolist():
            if "/data/" in info.filename:
                f.seek(info.header_offset + 26)
                n, m = struct.unpack("<HH", f.read(4))
                assert (info.header_offset + 30 + n + m) % 64 == 0, info.filename


def test_write_pt_refuses_what_it_cannot_write(tmp_path):
    with pytest.raises(TypeError, match="'c' has dtype complex128"):
        write_pt({"c": np.zeros(2, complex)}, tmp_path / "c.pt")
    with pytest.raises(TypeError, match="'x' is a list"):
        write_pt({"x": [1, 2]}, tmp_path / "x.pt")
    assert not (tmp_path / "c.pt").exists()


# limits checked in this process -------------------------------------------------------------
def test_opcode_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(pt_reader, "MAX_OPCODES", 1000)
    path = write_zip(tmp_path / "ops.pt", state(("l", b"]" + b"N" * 2000 + b"0")))
    with pytest.raises(PtError, match=r"ops\.pt: data\.pkl: more than 1,000 opcodes"):
        read_pt(path)


def test_central_directory_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(pt_reader, "MAX_CENTRAL_DIR", 100)
    path = write_zip(tmp_path / "cd.pt", state(("w", tensor())))
    with pytest.raises(PtError, match=r"cd\.pt: the zip's directory is \d+ bytes \(4 entries\), "
                                      r"over the 100-byte limit"):
        read_pt(path)


def test_fifo_and_folder_are_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.pt"
    os.mkfifo(fifo)
    with pytest.raises(PtError, match="pipe.pt: not a regular file"):
        read_pt(fifo)
    with pytest.raises(PtError, match="a directory"):
        read_pt(tmp_path)
    with pytest.raises(OSError, match="cannot read .pt file .*missing.pt"):
        read_pt(tmp_path / "missing.pt")


# hostile files, each read in a child under an address-space limit ---------------------------
SENTINEL = "CODE_RAN"


def sentinel_payload(folder):
    """What os.system would run: create the sentinel file."""
    return f"touch {folder / SENTINEL}"


def case_os_system(folder):
    evil = op_call(op_global("os", "system"), op_str(sentinel_payload(folder)))
    return write_zip(folder / "x.pt", b"\x80\x02" + evil + b"."), \
        r"refuses to load global os\.system: only tensors and storages are read"


def case_posix_system_by_stack_global(folder):
    evil = op_str("posix") + op_str("system") + b"\x93" + op_tuple(op_str(sentinel_payload(folder))) + b"R"
    return write_zip(folder / "x.pt", state(("w", evil), proto=4)), r"refuses to load global posix\.system"


def case_eval_as_a_storage_offset(folder):
    evil = op_call(op_global("builtins", "eval"),
                   op_str(f"__import__('os').system({sentinel_payload(folder)!r})"))
    return write_zip(folder / "x.pt", state(("w", tensor(offset_op=evil)))), \
        r"refuses to load global builtins\.eval"


def case_inst_opcode(folder):
    evil = b"(" + op_str(sentinel_payload(folder)) + b"ios\nsystem\n"
    return write_zip(folder / "x.pt", b"\x80\x02" + evil + b"."), r"opcode INST is not one a state dict needs"


def case_calling_a_storage_type(folder):
    return write_zip(folder / "x.pt", state(("w", op_call(op_global("torch", "FloatStorage"))))), \
        r"calls a _StorageType, which is not an admitted function"


def case_build_on_a_tensor(folder):
    return write_zip(folder / "x.pt", state(("w", tensor() + b"}b"))), r"sets the state of"


def case_storage_offset_past_the_end(folder):
    return write_zip(folder / "x.pt", state(("w", tensor(offset=10, size=(2,), stride=(1,))))), \
        r"reach element 11, past the storage's 6"


def case_huge_shape(folder):
    return write_zip(folder / "x.pt", state(("w", tensor(size=(2 ** 20, 2 ** 20), stride=(2 ** 20, 1))))), \
        r"past the storage's 6"


def case_shape_too_large(folder):
    return write_zip(folder / "x.pt", state(("w", tensor(size=(2 ** 62, 4), stride=(0, 0))))), \
        r"size \(4611686018427387904, 4\) is too large"


def case_broadcast_view_of_petabytes(folder):
    """Stride 0 everywhere: in range, and 2**50 elements were it copied to C order."""
    return write_zip(folder / "x.pt", state(("w", tensor(size=(2 ** 25, 2 ** 25), stride=(0, 0))))), \
        r"copied to C order, takes the copies .* past"


def case_storage_larger_than_its_entry(folder):
    return write_zip(folder / "x.pt", state(("w", tensor(numel=2 ** 40, size=(2 ** 20,), stride=(1,))))), \
        r"declares 1,099,511,627,776 elements of torch\.FloatStorage .* its entry holds 24 bytes"


def case_storage_without_an_entry(folder):
    return write_zip(folder / "x.pt", state(("w", tensor(key="7")))), \
        r"storage '7' has no entry archive/data/7"


def case_storage_declared_twice(folder):
    other = tensor(numel=3, size=(3,), stride=(1,))
    return write_zip(folder / "x.pt", state(("a", tensor()), ("b", other))), \
        r"declared twice"


def case_strides_of_another_rank(folder):
    return write_zip(folder / "x.pt", state(("w", tensor(stride=(1,))))), r"differ in length"


def case_negative_stride(folder):
    return write_zip(folder / "x.pt", state(("w", tensor(stride=(-3, 1))))), \
        r"stride entry is -3, not an integer"


def case_huge_integer_size(folder):
    return write_zip(folder / "x.pt", state(("w", tensor(size=(2 ** 3_000_000,), stride=(1,))))), \
        r"an integer of 3000001 bits"


def case_integer_keys(folder):
    keys = b"".join(op_int(k * (2 ** 61 - 1)) + b"N" for k in range(1, 50))   # one hash
    return write_zip(folder / "x.pt", b"\x80\x02}(" + keys + b"u."), r"a dict key is \d+, not a string"


def case_memo_keys_of_one_hash(folder):
    """PUT with text indices k * (2**61 - 1): each insertion as slow as all before it."""
    puts = b"".join(b"N" + b"p" + str(k * (2 ** 61 - 1)).encode() + b"\n0" for k in range(1, 50))
    return write_zip(folder / "x.pt", b"\x80\x02" + puts + state()[2:]), r"opcode PUT is not one"


def case_not_a_state_dict(folder):
    return write_zip(folder / "x.pt", b"\x80\x02](" + tensor() + b"e."), r"holds a list, not a state dict"


def case_value_not_a_tensor(folder):
    return write_zip(folder / "x.pt", state(("epoch", op_int(3)))), r"entry 'epoch' holds 3, not a tensor"


def case_truncated_zip(folder):
    path = write_zip(folder / "x.pt", state(("w", tensor())))
    raw = path.read_bytes()
    path.write_bytes(raw[:len(raw) // 2])
    return path, r"a zip archive without its end record \(truncated\?\)"


def case_not_a_zip(folder):
    path = folder / "x.pt"
    path.write_bytes(b"this is not a checkpoint\n" * 40)
    return path, r"not a zip archive, so not a file torch\.save writes"


def case_empty_file(folder):
    path = folder / "x.pt"
    path.write_bytes(b"")
    return path, r"an empty file"


def case_legacy_format(folder):
    path = folder / "x.pt"
    if torch is not None:
        torch.save({"w": torch.zeros(2)}, path, _use_new_zipfile_serialization=False)
    else:   # what it starts with: the pickled magic number
        path.write_bytes(b"\x80\x02\x8a\x0alp\xfc\x9cF\xf9 j\xa8P\x19." + bytes(100))
    return path, r"the legacy torch\.save format .* re-save it"


def case_torchscript_archive(folder):
    path = folder / "x.pt"
    if torch is not None:
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)   # jit is deprecated
            torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    else:
        write_zip(path, state(), extra=[("archive/constants.pkl", b"\x80\x02)."),
                                         ("archive/code/__torch__.py", b"")])
    return path, r"a TorchScript archive \(torch\.jit\.save\)"


def case_two_top_folders(folder):
    return write_zip(folder / "x.pt", state(("w", tensor())), extra=[("other/data/1", b"")]), \
        r"do not share one top folder"


def case_no_data_pkl(folder):
    path = folder / "x.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data/0", DATA)
    return path, r"no archive/data\.pkl entry"


def case_duplicate_entries(folder):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # zipfile warns of the duplicate it writes
        path = write_zip(folder / "x.pt", state(("w", tensor())), extra=[("archive/data/0", DATA)])
    return path, r"names an entry twice"


def case_bogus_byte_order(folder):
    path = write_zip(folder / "x.pt", state(("w", tensor())))
    return rezip(path, folder / "y.pt", {"byteorder": b"middle"}), r"neither 'little' nor 'big'"


def case_huge_data_pkl(folder):
    """65 MB of pickle, deflated to 64 KB: refused before it is read."""
    path = folder / "x.pt"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z, z.open("archive/data.pkl", "w") as f:
        for _ in range(65):
            f.write(bytes(1 << 20))
    return path, r"data\.pkl is 68,157,440 bytes, over the 67,108,864-byte limit"


def case_deflated_storage_bomb(folder):
    """A 128 MB storage of zeros deflated to 128 KB: reading it would be a 128 MB copy."""
    path = folder / "x.pt"
    n = 32 << 20
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", state(("w", tensor(numel=n, size=(n,), stride=(1,)))))
        with z.open("archive/data/0", "w") as f:
            for _ in range(128):
                f.write(bytes(1 << 20))
    return path, r"storage '0' \(compressed or unaligned, so read\) takes the copies made while " \
                 r"reading past [\d,]+ bytes, what a file of [\d,]+ bytes may make"


def case_unknown_storage_type(folder):
    return write_zip(folder / "x.pt", state(("w", tensor(storage="ComplexFloatStorage")))), \
        r"storage type torch\.ComplexFloatStorage is not read"


HOSTILE = {name[len("case_"):]: fn for name, fn in globals().items() if name.startswith("case_")}

CHILD = r"""
import json, resource
from mininet.interop.pt_reader import PtError, read_pt

def address_space():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))

limit = address_space() + (1 << 30)
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
for path in json.loads(PATHS):
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        read_pt(path)
        out = {"error": None, "message": ""}
    except PtError as e:
        out = {"error": "PtError", "message": str(e)}
    except BaseException as e:
        out = {"error": "uncaught " + type(e).__name__, "message": str(e)[:500]}
    out["rss_growth_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    print(json.dumps(out), flush=True)
"""


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """{case: (path, expected message, outcome)}, all read by one child process."""
    cases = {}
    for name, write in HOSTILE.items():
        folder = tmp_path_factory.mktemp(name)
        path, expect = write(folder)
        cases[name] = (str(path), expect, folder)
    paths = json.dumps([p for p, _, _ in cases.values()])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MININET_NUM_THREADS": "1"}
    result = run_python(f"PATHS = {paths!r}\n" + CHILD, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    outcomes = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(outcomes) == len(cases), result.stdout
    return {name: (path, expect, folder, out) for (name, (path, expect, folder)), out
            in zip(cases.items(), outcomes)}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_files_are_refused_clearly_without_running_code(hostile, name):
    path, expect, folder, out = hostile[name]
    assert out["error"] == "PtError", out
    message = out["message"]
    assert message.startswith(path + ": ") and "\n" not in message, message
    assert re.search(expect, message), f"{message!r} !~ {expect!r}"
    assert not (folder / SENTINEL).exists(), "the file ran code"
    assert out["rss_growth_mb"] <= RSS_LIMIT_MB, out


def test_the_code_running_pickle_is_live(tmp_path):
    """The os.system case does run code under pickle.loads: the refusal above is real."""
    case_os_system(tmp_path)
    with zipfile.ZipFile(tmp_path / "x.pt") as z:
        pickle.loads(z.read("archive/data.pkl"))
    assert (tmp_path / SENTINEL).exists()
