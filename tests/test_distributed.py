"""Data-parallel training over MPI (2-3 ranks on loopback TCP) and the pieces that work
without MPI: the sampler, one-process fallbacks."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import mininet as mn
from mininet import distributed, nn
from mininet.cli.launch import mpirun_command, mpirun_prefix, without_ranks
from mininet.data import DataLoader, DistributedSampler, TensorDataset
from conftest import needs_mpi, run_cli, run_python, write_cifar_folder

HERE = Path(__file__).parent


def mpirun(ranks, args, timeout=120, env=None):
    """Run `args` (a python command) as `ranks` MPI ranks over TCP on loopback."""
    cmd = mpirun_prefix(ranks) + ["--mca", "btl", "tcp,self", *args]
    e = dict(os.environ, **(env or {}))
    e.pop("MININET_TTY", None)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=e)


# without MPI -----------------------------------------------------------------------------
@pytest.mark.parametrize("n,ranks", [(10, 3), (12, 4), (7, 2), (1, 3), (96, 2)])
def test_sampler_covers_the_data_once_per_epoch(n, ranks):
    for epoch in range(3):
        shards = []
        for r in range(ranks):
            s = DistributedSampler(n, ranks, r, seed=5)
            s.set_epoch(epoch)
            shards.append(list(s))
        sizes = {len(s) for s in shards}
        assert sizes == {-(-n // ranks)}                     # same steps on every rank
        everything = [i for s in shards for i in s]
        assert sorted(set(everything)) == list(range(n))     # covers the set
        assert len(everything) - n == len(everything) - len(set(everything))  # only padding repeats
        assert len(everything) - n < ranks


def test_sampler_shuffles_per_epoch_alike_on_every_rank():
    a, b = DistributedSampler(100, 2, 0, seed=1), DistributedSampler(100, 2, 1, seed=1)
    e0a, e0b = list(a), list(b)
    e1a, e1b = list(a), list(b)        # iterating moves on to the next epoch
    assert set(e0a).isdisjoint(e0b) and set(e1a).isdisjoint(e1b)
    assert e0a != e1a
    a.set_epoch(0)
    assert list(a) == e0a              # set_epoch replays an epoch (--resume)
    assert list(DistributedSampler(100, 2, 0, seed=2)) != e0a


def test_sampler_without_padding_and_unshuffled():
    shards = [list(DistributedSampler(10, 3, r, shuffle=False, pad=False)) for r in range(3)]
    assert shards == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert [len(DistributedSampler(10, 3, r, pad=False)) for r in range(3)] == [4, 3, 3]


def test_sampler_errors_and_loader():
    with pytest.raises(ValueError, match="rank 2 is not in"):
        DistributedSampler(10, 2, 2)
    ds = TensorDataset(np.arange(10.0)[:, None], np.arange(10))
    with pytest.raises(ValueError, match="shuffle"):
        DataLoader(ds, 2, shuffle=True, sampler=DistributedSampler(ds, 2, 0))
    loader = DataLoader(ds, 2, sampler=DistributedSampler(ds, 2, 1, shuffle=False))
    assert len(loader) == 3
    assert [y.numpy().tolist() for _, y in loader] == [[1, 3], [5, 7], [9]]


def test_one_process_is_a_world_of_one():
    assert (distributed.rank(), distributed.world_size()) == (0, 1)
    net = nn.Linear(3, 2)
    x = mn.Tensor(np.ones((4, 3), dtype=np.float32))
    net(x).sum().backward()
    before = net.weight.grad.numpy()
    distributed.broadcast_parameters(net)
    distributed.allreduce_gradients(net)
    reducer = distributed.GradientReducer(net)
    reducer.finish()
    np.testing.assert_array_equal(net.weight.grad.numpy(), before)
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}


def test_one_process_never_imports_mpi4py():
    code = ("import sys, numpy as np, mininet as mn; from mininet import distributed, nn;"
            "distributed.init(); net = nn.Linear(3, 2); r = distributed.GradientReducer(net);"
            "net(mn.Tensor(np.ones((2, 3), np.float32))).sum().backward(); r.finish();"
            "distributed.broadcast_parameters(net); distributed.average_buffers(net);"
            "assert 'mpi4py' not in sys.modules, 'imported'")
    env = {k: v for k, v in os.environ.items() if k not in distributed._MPI_ENV}
    r = run_python(code, env=env)
    assert r.returncode == 0, r.stderr


def test_post_accumulate_grad_hook_fires_once_per_backward_with_the_full_grad():
    w = mn.Tensor(np.array([1.0, 2.0]), dtype="float64", requires_grad=True)
    seen = []
    handle = w.register_post_accumulate_grad_hook(lambda t: seen.append(t.grad.numpy().copy()))
    ((w * w).sum() + (w * 3.0).sum()).backward()   # two paths into w: one call, the sum
    assert len(seen) == 1
    np.testing.assert_allclose(seen[0], [5.0, 7.0])
    handle.remove()
    (w * w).sum().backward()
    assert len(seen) == 1
    with pytest.raises(RuntimeError, match="leaf"):
        (w * 2.0).register_post_accumulate_grad_hook(print)


def test_launcher_command():
    assert without_ranks(["train", "--ranks", "2", "--epochs", "1", "--ranks=3"]) == \
        ["train", "--epochs", "1"]


@needs_mpi
def test_mpirun_command():
    cmd = mpirun_command(3, ["train", "mnist", "--ranks", "3"])
    assert cmd[1:3] == ["-n", "3"] and "--bind-to" in cmd and "--oversubscribe" in cmd
    assert cmd[-3:] == ["train", "mnist", "--distributed"]


# two and three ranks -----------------------------------------------------------------------
@needs_mpi
@pytest.mark.parametrize("ranks", [2, 3])
def test_ranks_stay_identical_and_equal_one_process_over_the_global_batch(ranks, tmp_path):
    r = mpirun(ranks, [sys.executable, str(HERE / "dist_worker.py"), "equivalence", str(tmp_path)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert int((tmp_path / "buckets.txt").read_text()) > 2   # several buckets, in order
    ref = np.load(tmp_path / "single.npz")
    first = np.load(tmp_path / "rank0.npz")
    for k in range(ranks):
        mine = np.load(tmp_path / f"rank{k}.npz")
        for name in ref.files:
            np.testing.assert_array_equal(mine[name], first[name])   # bit-identical ranks
            np.testing.assert_allclose(mine[name], ref[name], rtol=1e-11, atol=1e-12)
    sys.path.insert(0, str(HERE))
    from dist_worker import model
    start = {name: p.numpy() for name, p in model().named_parameters()}
    assert not np.allclose(first["modules_list.0.weight"], start["modules_list.0.weight"])
    np.testing.assert_array_equal(first["unused"], start["unused"])  # zero grads: unmoved


@needs_mpi
def test_batchnorm_statistics_are_averaged_over_ranks(tmp_path):
    r = mpirun(3, [sys.executable, str(HERE / "dist_worker.py"), "buffers", str(tmp_path)])
    assert r.returncode == 0, r.stdout + r.stderr
    for k in range(3):   # ranks held 0, 1, 2
        np.testing.assert_array_equal(np.load(tmp_path / f"mean{k}.npy"), np.ones(4, np.float32))


@needs_mpi
def test_a_killed_rank_ends_the_job(tmp_path):
    t0 = time.perf_counter()
    r = mpirun(2, [sys.executable, str(HERE / "dist_worker.py"), "kill", str(tmp_path)],
               env={"MININET_DIST_TIMEOUT": "20"}, timeout=60)
    assert r.returncode != 0
    assert time.perf_counter() - t0 < 40
    assert not (tmp_path / "rank0.npz").exists()


@needs_mpi
def test_a_stalled_rank_times_out_with_a_clear_error(tmp_path):
    t0 = time.perf_counter()
    r = mpirun(2, [sys.executable, "-c",
                   "import sys, runpy; sys.argv = ['dist_worker.py', 'stall', sys.argv[1]];"
                   "from mininet import distributed\n"
                   "try:\n runpy.run_path(sys.argv[0].replace('dist_worker.py', %r), run_name='__main__')\n"
                   "except distributed.DistributedError as e:\n print('ERROR', e, flush=True); distributed.abort(3)"
                   % str(HERE / "dist_worker.py"), str(tmp_path)],
               env={"MININET_DIST_TIMEOUT": "3"}, timeout=60)
    assert r.returncode != 0
    assert time.perf_counter() - t0 < 30
    assert "gradient allreduce did not complete within 3 s" in r.stdout, r.stdout + r.stderr



def _cli(args, env=None, timeout=180):
    return run_cli(*args, env={"MININET_MPIRUN_ARGS": "--mca btl tcp,self", **(env or {})},
                   timeout=timeout)


@pytest.mark.slow
@needs_mpi
def test_cli_trains_on_two_ranks_saves_once_and_resumes(mnist_path, tmp_path):
    ck = tmp_path / "m.npz"
    base = ["train", "mnist", "--data-dir", str(mnist_path), "--ranks", "2", "--save", str(ck),
            "--json", "--batch-size", "50"]
    r = _cli(base + ["--epochs", "1"])
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)                         # one JSON document: rank 0 alone prints
    assert out["ranks"] == 2 and out["global_batch_size"] == 100
    assert out["epochs"][0]["test_acc"] > 0.8
    assert "data-parallel over 2 ranks" in r.stderr and "global batch 100" in r.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]   # no temp files left
    r = _cli(base + ["--epochs", "2", "--resume", str(ck)])
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert [e["epoch"] for e in out["epochs"]] == [1, 2] and out["epochs"][1]["test_acc"] > 0.85
    assert "resumed from" in r.stderr


@pytest.mark.slow
@needs_mpi
def test_cli_distributed_errors(mnist_path, tmp_path):
    r = _cli(["train", "mnist", "--ranks", "2", "--data-dir", str(tmp_path / "none"), "--epochs", "1"])
    assert r.returncode != 0 and "error:" in r.stderr
    assert str(tmp_path / "none") in r.stderr
    r = _cli(["train", "ptb", "--ranks", "2"])
    assert r.returncode == 2 and "not ptb" in r.stderr
    r = _cli(["train", "mnist", "--ranks", "2", "--resume", str(tmp_path / "missing.npz"),
              "--data-dir", str(mnist_path)])   # rank 0 reads it and tells the others
    assert r.returncode == 2 and "missing.npz: no such file" in r.stderr


@pytest.mark.slow
@needs_mpi
def test_bench_train_ranks_reports_scaling():
    r = _cli(["bench", "train", "--ranks", "1,2", "--models", "mlp", "--samples", "2000", "--threads",
              "2", "--json"])
    assert r.returncode == 0, r.stderr
    one, two = json.loads(r.stdout)
    assert (one["ranks"], one["threads_per_rank"], two["ranks"], two["threads_per_rank"]) == (1, 2, 2, 1)
    assert one["global_batch"] == two["global_batch"] == 100
    assert two["allreduce_ms"] > 0 and two["samples_per_s"] > 0
    assert abs(two["grad_mb"] - 79510 * 4 / 2 ** 20) < 1e-9   # 784-100-10's parameters
    r = _cli(["bench", "train", "--ranks", "0,x"])
    assert r.returncode == 2 and "--ranks" in r.stderr
    r = _cli(["bench", "train", "--ranks", "1,2", "--models", "lstm-lm"])
    assert r.returncode == 2 and "lstm-lm" in r.stderr


@needs_mpi
def test_cli_trains_resnet9_with_batchnorm_on_two_ranks(tmp_path):
    """BatchNorm's running statistics are averaged before each evaluation; an odd test set
    (21 images) is split unpadded, so the accuracy is over exactly 21 images."""
    write_cifar_folder(tmp_path, test_size=21)
    res = _cli(["train", "cifar10", "--data-dir", str(tmp_path), "--epochs", "2", "--ranks", "2",
                "--batch-size", "10", "--json"])
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["ranks"] == 2 and len(out["epochs"]) == 2
    for e in out["epochs"]:
        assert abs(e["test_acc"] * 21 - round(e["test_acc"] * 21)) < 1e-9   # k of 21 images
