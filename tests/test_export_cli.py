"""`mininet export CHECKPOINT --format onnx|safetensors|pt`: the model rebuilt from the
checkpoint alone, read back by onnxruntime, PyTorch and the safetensors package."""
import numpy as np
import pytest

from conftest import assert_one_line_error, cli

import mininet
from mininet.models import registry
from mininet.training import make_optimizer, save_checkpoint


def _checkpoint(tmp_path, name, seed=0, **kw):
    """A registry model with random (not initial) weights, saved as `mininet train` does."""
    mininet.manual_seed(seed)
    model = registry.build(name, **kw)
    rng = np.random.default_rng(seed)
    for _, p in model.named_parameters():
        p.data = mininet.NDArray(rng.standard_normal(p.shape).astype(np.float32) * 0.2)
    opt = make_optimizer("adam", model.parameters(), 1e-3)
    path = tmp_path / f"{name}.npz"
    save_checkpoint(str(path), model, opt, epoch=1, meta={"model": name, "dataset": "mnist"})
    model.eval()
    return model, path


def assert_float32_close(got, want):
    """float32 sums in another order: 1e-5 of the output's scale."""
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(want).max()))


def _out(model, x):
    with mininet.no_grad():
        y = model(mininet.Tensor(x))
    return (y[0] if isinstance(y, tuple) else y).numpy()


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet"])
def test_onnx_export_of_a_checkpoint_matches_onnxruntime(tmp_path, name):
    ort = pytest.importorskip("onnxruntime")
    model, ck = _checkpoint(tmp_path, name)
    r = cli("export", ck, "--format", "onnx")
    assert r.returncode == 0, r.stderr
    out = ck.with_suffix(".onnx")
    assert f"written to {out}" in r.stdout
    x = registry.get(name).example_input(batch=7, rng=np.random.default_rng(1))
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    assert_float32_close(got, _out(model, x))


def test_onnx_export_of_a_language_model_checkpoint(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    kw = dict(vocab_size=50, embedding_size=8, hidden_size=12, num_layers=2)
    entry = registry.get("lstm")
    kw = {k: v for k, v in kw.items() if k in entry.kwargs}
    model, ck = _checkpoint(tmp_path, "lstm", **kw)
    r = cli("export", ck, "-o", tmp_path / "lm.onnx")
    assert r.returncode == 0, r.stderr
    x = entry.example_input(batch=3, rng=np.random.default_rng(2), **kw)
    sess = ort.InferenceSession(str(tmp_path / "lm.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    assert_float32_close(got, _out(model, x))


def test_pt_and_torch_named_safetensors_load_into_the_registry_twin(tmp_path):
    torch = pytest.importorskip("torch")
    st = pytest.importorskip("safetensors.torch")
    model, ck = _checkpoint(tmp_path, "cnn")
    assert cli("export", ck, "--format", "pt").returncode == 0
    assert cli("export", ck, "--format", "safetensors", "--torch-names",
               "-o", tmp_path / "t.safetensors").returncode == 0
    x = registry.get("cnn").example_input(batch=4, rng=np.random.default_rng(3))
    want = _out(model, x)
    for state in (torch.load(ck.with_suffix(".pt"), weights_only=True),
                  st.load_file(str(tmp_path / "t.safetensors"))):
        twin = registry.build_torch("cnn").eval()
        twin.load_state_dict(state, strict=True)
        with torch.no_grad():
            got = twin(torch.from_numpy(x)).numpy()
        assert_float32_close(got, want)


def test_safetensors_export_has_mininet_names_and_loads_back(tmp_path):
    model, ck = _checkpoint(tmp_path, "mlp")
    assert cli("export", ck, "--format", "safetensors").returncode == 0
    again = registry.build("mlp")
    again.load_state_dict(mininet.load_file(ck.with_suffix(".safetensors")))
    again.eval()
    x = registry.get("mlp").example_input(batch=5, rng=np.random.default_rng(4))
    np.testing.assert_array_equal(_out(again, x), _out(model, x))


def test_export_errors_are_one_line(tmp_path):
    _, ck = _checkpoint(tmp_path, "mlp")
    assert_one_line_error(cli("export", ck, "--format", "tflite"), "--format", "tflite")
    assert_one_line_error(cli("export", ck, "--format", "pt", "--torch-names"), "--torch-names")
    assert_one_line_error(cli("export", ck, "-o", ck), "checkpoint itself")
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip at all")
    assert_one_line_error(cli("export", garbage), "garbage.npz")
    assert not garbage.with_suffix(".onnx").exists()
    assert_one_line_error(cli("export", tmp_path / "missing.npz"), "missing.npz")


@pytest.mark.parametrize("name", sorted(registry.MODELS))
def test_every_registry_model_exports_to_onnx_and_matches_onnxruntime(tmp_path, name):
    """The done-when of the interop work: each model of the registry, at small sizes where
    it has them, exported and run by onnxruntime at a batch other than the traced one."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from mininet import onnx as mn_onnx
    entry = registry.get(name)
    kw = {k: v for k, v in dict(vocab_size=40, embedding_size=8, hidden_size=12,
                                num_layers=2).items() if k in entry.kwargs}
    mininet.manual_seed(0)
    model = registry.build(name, **kw)
    model.eval()
    traced = entry.example_input(batch=2, rng=np.random.default_rng(0), **kw)
    path = tmp_path / f"{name}.onnx"
    mn_onnx.export(model, traced, path, dynamic_batch=1 if entry.language_model else True)
    x = entry.example_input(batch=3, rng=np.random.default_rng(1), **kw)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    assert_float32_close(got, _out(model, x))
