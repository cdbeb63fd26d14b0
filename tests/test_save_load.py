"""mininet.save / mininet.load as torch.save / torch.load are used, without pickle."""
import numpy as np
import pytest

import mininet
from mininet import nn


def _model():
    mininet.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Linear(3, 2))


def test_a_state_dict_round_trips_and_loads_into_a_model(tmp_path):
    model = _model()
    for suffix in (".pt", ".safetensors", ".ckpt"):
        path = tmp_path / f"m{suffix}"
        mininet.save(model.state_dict(), path)
        again = _model()
        for p in again.parameters():
            p.data = p.data * 0
        again.load_state_dict(mininet.load(path))
        x = mininet.Tensor(np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32))
        model.eval(), again.eval()
        np.testing.assert_array_equal(again(x).numpy(), model(x).numpy())
    assert not list(tmp_path.glob("*.tmp*"))


def test_a_pt_file_is_read_by_torch_and_a_torch_file_by_mininet(tmp_path):
    torch = pytest.importorskip("torch")
    sd = _model().state_dict()
    mininet.save(sd, tmp_path / "m.pt")
    theirs = torch.load(tmp_path / "m.pt", weights_only=True)
    assert list(theirs) == list(sd)
    for k, v in sd.items():
        np.testing.assert_array_equal(theirs[k].numpy(), np.asarray(v))
    torch.save({"w": torch.arange(6.0).reshape(2, 3)}, tmp_path / "t.pt")
    ours = mininet.load(tmp_path / "t.pt")
    np.testing.assert_array_equal(ours["w"].numpy(), np.arange(6.0).reshape(2, 3))


def test_nested_structures_keep_their_shape_and_values(tmp_path):
    sd = _model().state_dict()
    obj = {"model": sd, "epoch": 3, "lr": 0.5, "name": "run", "done": False, "best": None,
           "history": [1.5, 2.5], "pair": (mininet.tensor([1.0, 2.0]), 7),
           "by_id": {0: mininet.tensor([[1, 2]])}}
    path = tmp_path / "all.pt"     # nested: safetensors whatever the suffix
    mininet.save(obj, path)
    back = mininet.load(path)
    assert back["epoch"] == 3 and back["lr"] == 0.5 and back["name"] == "run"
    assert back["done"] is False and back["best"] is None and back["history"] == [1.5, 2.5]
    assert isinstance(back["pair"], tuple) and back["pair"][1] == 7
    np.testing.assert_array_equal(back["pair"][0].numpy(), [1.0, 2.0])
    np.testing.assert_array_equal(back["by_id"][0].numpy(), [[1, 2]])
    assert list(back["model"]) == list(sd)
    for k, v in sd.items():
        np.testing.assert_array_equal(back["model"][k].numpy(), np.asarray(v))
    # safetensors readers see the tensors under their paths
    flat = mininet.load_file(path)
    assert "model.0.weight" in flat or any(k.startswith("model.") for k in flat)


def test_what_cannot_be_saved_is_named(tmp_path):
    with pytest.raises(TypeError, match="object at epoch.*no pickle"):
        mininet.save({"epoch": object()}, tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()
    with pytest.raises(ValueError, match="map_location"):
        mininet.load(tmp_path / "x.pt", map_location="cuda:3")


def test_a_tampered_structure_is_refused(tmp_path):
    from mininet.interop.safetensors import save_file
    path = tmp_path / "bad.safetensors"
    save_file({"a": np.zeros(2, np.float32)}, path,
              metadata={"mininet.structure": '{"__tensor__": "missing"}'})
    with pytest.raises(ValueError, match="lacks"):
        mininet.load(path)
    save_file({"a": np.zeros(2, np.float32)}, path, metadata={"mininet.structure": "{not json"})
    with pytest.raises(ValueError, match="not JSON"):
        mininet.load(path)


def test_colliding_names_bools_and_deep_nesting(tmp_path):
    ones, zeros = mininet.tensor([1.0, 1.0]), mininet.tensor([0.0, 0.0])
    with pytest.raises(ValueError, match="both be named 'a.b'"):
        mininet.save({"a.b": ones, "a": {"b": zeros}}, tmp_path / "c.st")
    assert not (tmp_path / "c.st").exists()
    mask = mininet.tensor([True, False, True])
    mininet.save({"mask": mask}, tmp_path / "m.pt")
    back = mininet.load(tmp_path / "m.pt")["mask"]
    assert back.dtype == mininet.bool
    x = mininet.tensor([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(x[back].numpy(), [1.0, 3.0])
    from mininet.interop.safetensors import save_file
    deep = '{"__list__": [' * 5000 + '{"__value__": 1}' + ']}' * 5000
    save_file({"a": np.zeros(1, np.float32)}, tmp_path / "d.st", metadata={"mininet.structure": deep})
    with pytest.raises(ValueError, match="nested too deeply"):
        mininet.load(tmp_path / "d.st")


def test_recorded_writes_as_torch_and_writes_into_views_refused():
    a = mininet.tensor(np.ones(3, np.float32), requires_grad=True)
    w = mininet.tensor(np.float32(5), requires_grad=True)
    x = a * 1
    y = (x * x).sum()
    x[0] = w                        # recorded (torch's CopySlices): x's graph goes through it
    (x * 2).sum().backward()
    assert a.grad.tolist() == [0.0, 2.0, 2.0] and w.grad.item() == 2.0
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()                # y's op saved x's old values (torch raises too)
    w.grad = None
    buf = mininet.zeros(2, 3)
    row = buf[0]
    with pytest.raises(RuntimeError, match="view"):
        row[:] = w * 2
    out = mininet.zeros(3)          # the common pattern still records and differentiates
    out[1] = w * 2
    out.sum().backward()
    assert w.grad.item() == 2.0
