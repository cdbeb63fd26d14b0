"""mininet.utils.data against torch.utils.data (PyTorch CPU, the reference): the same
data sets give the same batches; samplers, splits, combinators, workers and their errors."""
import collections
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import mininet as mn
from mininet.data import DistributedSampler, MNISTDataset

torch = pytest.importorskip("torch")
import torch.utils.data as tud   # noqa: E402

import mininet.utils.data as mud   # noqa: E402

Pair = collections.namedtuple("Pair", "left right")
RNG = np.random.default_rng(0)
FEATURES = RNG.normal(size=(11, 3, 2))           # float64, as numpy draws them
LABELS = RNG.integers(0, 5, size=11)


def make_datasets(lib):
    """The same samples for either library: `lib` is torch.utils.data or mininet.utils.data,
    `tensor` that library's tensor constructor (for samples holding tensors)."""
    tensor = torch.tensor if lib is tud else mn.tensor

    class Tuples(lib.Dataset):
        def __len__(self):
            return len(LABELS)

        def __getitem__(self, i):
            return FEATURES[i], int(LABELS[i])

    class Dicts(lib.Dataset):
        def __len__(self):
            return len(LABELS)

        def __getitem__(self, i):
            return {"image": FEATURES[i].astype(np.float32), "label": LABELS[i],
                    "meta": {"id": i, "name": f"s{i}", "weight": 0.25 * i},
                    "pair": [float(i) / 3, i % 2 == 0]}

    class Scalars(lib.Dataset):
        def __len__(self):
            return 9

        def __getitem__(self, i):
            return 1.5 * i - 4

    class Nested(lib.Dataset):
        def __len__(self):
            return len(LABELS)

        def __getitem__(self, i):
            return Pair(tensor(FEATURES[i]), (np.int64(LABELS[i]), [np.float32(i), "x" * i]))

    return {"tuples": Tuples(), "dicts": Dicts(), "scalars": Scalars(), "nested": Nested()}


def assert_same(ours, theirs, dtype=np.float32, where="batch"):
    """Our batch has torch's structure and values; integers and bools are int64, floats
    `dtype` (mininet's rule), where torch keeps float64."""
    if isinstance(theirs, torch.Tensor):
        assert isinstance(ours, mn.Tensor), (where, type(ours))
        want = theirs.numpy()
        assert ours.shape == want.shape, (where, ours.shape, want.shape)
        integral = want.dtype.kind in "iub"
        assert ours.dtype == (np.int64 if integral else dtype), (where, ours.dtype, want.dtype)
        np.testing.assert_allclose(ours.numpy(), want.astype(ours.dtype), rtol=1e-6, err_msg=where)
    elif isinstance(theirs, dict):
        assert isinstance(ours, dict) and list(ours) == list(theirs), (where, ours)
        for k in theirs:
            assert_same(ours[k], theirs[k], dtype, f"{where}[{k!r}]")
    elif isinstance(theirs, (list, tuple)):
        assert type(ours) is type(theirs) and len(ours) == len(theirs), (where, type(ours), ours)
        for k, (a, b) in enumerate(zip(ours, theirs)):
            assert_same(a, b, dtype, f"{where}[{k}]")
    else:
        assert type(ours) is type(theirs) and ours == theirs, (where, ours, theirs)


def both(name):
    return make_datasets(mud)[name], make_datasets(tud)[name]


@pytest.mark.parametrize("name", ["tuples", "dicts", "scalars", "nested"])
@pytest.mark.parametrize("batch_size, drop_last", [(4, False), (4, True), (1, False), (11, False)])
def test_batches_equal_torch(name, batch_size, drop_last):
    ours, theirs = both(name)
    a = list(mud.DataLoader(ours, batch_size=batch_size, drop_last=drop_last))
    b = list(tud.DataLoader(theirs, batch_size=batch_size, drop_last=drop_last))
    assert len(a) == len(b) == len(mud.DataLoader(ours, batch_size, drop_last=drop_last))
    for k, (x, y) in enumerate(zip(a, b)):
        assert_same(x, y, where=f"{name} batch {k}")


def test_float64_dtype_and_no_batching_equal_torch():
    ours, theirs = both("tuples")
    for x, y in zip(mud.DataLoader(ours, 4, dtype="float64"), tud.DataLoader(theirs, 4)):
        assert_same(x, y, dtype=np.float64)
    # batch_size=None: each sample converted (arrays become tensors), nothing stacked
    a = list(mud.DataLoader(ours, batch_size=None))
    b = list(tud.DataLoader(theirs, batch_size=None))
    assert len(a) == len(b) == 11
    for x, y in zip(a, b):
        assert_same(x, y)
    assert [x for x in mud.DataLoader(both("scalars")[0], batch_size=None)] == \
        [x for x in tud.DataLoader(both("scalars")[1], batch_size=None)]


def ids(batches, key=lambda b: b["meta"]["id"]):
    return [key(b).numpy().tolist() for b in batches]


def test_shuffle_is_a_permutation_reproducible_by_seed_and_manual_seed():
    ours, theirs = both("dicts")
    epoch = ids(mud.DataLoader(ours, 4, shuffle=True, generator=3))
    flat = sum(epoch, [])
    torch_epoch = tud.DataLoader(theirs, 4, shuffle=True)
    torch_flat = sum([b["meta"]["id"].tolist() for b in torch_epoch], [])
    assert sorted(flat) == sorted(torch_flat) == list(range(11)) and flat != list(range(11))
    assert [len(b) for b in epoch] == [4, 4, 3]
    assert ids(mud.DataLoader(ours, 4, shuffle=True, generator=3)) == epoch
    assert ids(mud.DataLoader(ours, 4, shuffle=True, seed=3)) == epoch      # needle's spelling
    assert ids(mud.DataLoader(ours, 4, shuffle=True, generator=np.random.default_rng(3))) == epoch
    mn.manual_seed(7)
    loader = mud.DataLoader(ours, 4, shuffle=True)
    e1, e2 = ids(loader), ids(loader)
    assert e1 != e2     # a new order each epoch
    mn.manual_seed(7)
    assert [ids(loader), ids(loader)] == [e1, e2]
    with pytest.raises(TypeError, match="numpy Generator, a seed"):
        mud.DataLoader(ours, 4, shuffle=True, generator="3")


def test_samplers_batch_sampler_and_collate_fn_equal_torch():
    ours, theirs = both("dicts")
    groups = [[0, 3], [5, 1, 2], [10], [4, 4]]
    a = list(mud.DataLoader(ours, batch_sampler=groups))
    b = list(tud.DataLoader(theirs, batch_sampler=groups))
    assert len(a) == len(b) == 4
    for x, y in zip(a, b):
        assert_same(x, y)
    order = [9, 2, 2, 7, 0]
    for x, y in zip(mud.DataLoader(ours, 2, sampler=order),
                    tud.DataLoader(theirs, 2, sampler=order)):
        assert_same(x, y)
    bs = [list(s) for s in mud.BatchSampler(mud.SequentialSampler(range(7)), 3, True)]
    assert bs == [list(s) for s in tud.BatchSampler(tud.SequentialSampler(range(7)), 3, True)]

    def names(batch):
        return "+".join(s["meta"]["name"] for s in batch)
    assert list(mud.DataLoader(ours, 3, collate_fn=names)) == \
        list(tud.DataLoader(theirs, 3, collate_fn=names))
    # default_collate called directly, as in a custom collate_fn
    samples = [ours[i] for i in range(3)]
    assert_same(mud.default_collate(samples), tud.default_collate([theirs[i] for i in range(3)]))


def test_bad_options_and_samples_are_named():
    ours = both("tuples")[0]
    for kw, match in [({"batch_size": 0}, "batch_size must be >= 1"),
                      ({"num_workers": -1}, "num_workers"),
                      ({"timeout": -1}, "timeout"),
                      ({"prefetch_factor": 2}, "prefetch_factor"),
                      ({"persistent_workers": True}, "persistent_workers"),
                      ({"batch_sampler": [[0]], "batch_size": 3}, "batch_sampler"),
                      ({"sampler": [0, 1], "shuffle": True}, "shuffle"),
                      ({"batch_size": None, "drop_last": True}, "drop_last"),
                      ({"generator": 1, "seed": 2}, "not both")]:
        with pytest.raises(ValueError, match=match):
            mud.DataLoader(ours, **kw)
    with pytest.raises(RuntimeError, match=r"differ in shape at \[0\]: \(2,\) in sample 0, "
                                           r"\(3,\) in sample 2"):
        mud.default_collate([(np.zeros(2),), (np.zeros(2),), (np.zeros(3),)])
    with pytest.raises(TypeError, match=r"cannot batch NoneType at \['a'\]"):
        mud.default_collate([{"a": None}])
    with pytest.raises(RuntimeError, match=r"sample 1 .* lacks the key\(s\) \['b'\]"):
        mud.default_collate([{"a": 1, "b": 2}, {"a": 1}])
    with pytest.raises(RuntimeError, match="differ in length"):
        mud.default_collate([[1, 2], [1]])
    with pytest.raises(TypeError, match="dtype complex128"):
        mud.default_collate([np.zeros(2, complex)])


def test_random_split_sizes_as_torch_disjoint_covering():
    data = list(range(23))
    for lengths in ([5, 18], [0.3, 0.3, 0.4], [0.5, 0.5], [0.1] * 10, [1 / 3] * 3, [23], [0, 23]):
        ours = mud.random_split(data, lengths, generator=1)
        theirs = tud.random_split(data, lengths, generator=torch.Generator().manual_seed(1))
        assert [len(s) for s in ours] == [len(s) for s in theirs], lengths
        got = [x for s in ours for x in (s[i] for i in range(len(s)))]
        assert sorted(got) == data, lengths
        assert all(isinstance(s, mud.Subset) for s in ours)
    first = [s.indices for s in mud.random_split(data, [0.5, 0.5], generator=4)]
    assert [s.indices for s in mud.random_split(data, [0.5, 0.5], generator=4)] == first
    mn.manual_seed(2)
    a = mud.random_split(data, [10, 13])[0].indices
    mn.manual_seed(2)
    assert mud.random_split(data, [10, 13])[0].indices == a
    for bad in ([5, 5], [0.5, 0.6], [-1, 24], [1.5, -0.5]):
        with pytest.raises(ValueError, match="random_split: lengths"):
            mud.random_split(data, bad)


def test_subset_and_concat_index_as_torch():
    a, b, c = list(range(10, 15)), list(range(20, 23)), list(range(30, 34))
    ours = mud.ConcatDataset([a, b, c])
    theirs = tud.ConcatDataset([a, b, c])
    assert len(ours) == len(theirs) == 12
    assert ours.cumulative_sizes == theirs.cumulative_sizes
    for i in range(-12, 12):
        assert ours[i] == theirs[i], i
    for i in (12, -13):
        with pytest.raises(IndexError, match=f"index {i} is out of range for 12 samples"):
            ours[i]
    with pytest.raises(ValueError, match="at least one"):
        mud.ConcatDataset([])
    sub, tsub = mud.Subset(ours, [11, 0, 5, -1]), tud.Subset(theirs, [11, 0, 5, -1])
    assert len(sub) == 4 and [sub[i] for i in range(4)] == [tsub[i] for i in range(4)]
    arr = np.arange(50, 60)
    assert mud.Subset(arr, [9, 2, 4])[[0, 2]].tolist() == [59, 54] == \
        tud.Subset(arr, [9, 2, 4])[[0, 2]].tolist()
    ds = both("tuples")[0]
    both_ds = ds + ds
    assert isinstance(both_ds, mud.ConcatDataset) and len(both_ds) == 22
    np.testing.assert_array_equal(both_ds[12][0], ds[1][0])
    # a loader over a Subset of a ConcatDataset collates as torch does
    tds = both("tuples")[1]
    for x, y in zip(mud.DataLoader(mud.Subset(ds + ds, [3, 14, 20]), 2),
                    tud.DataLoader(tud.Subset(tds + tds, [3, 14, 20]), 2)):
        assert_same(x, y)


def make_stream(lib, n=10, shard=True):
    class Stream(lib.IterableDataset):
        def __iter__(self):
            info = lib.get_worker_info()
            start, step = (info.id, info.num_workers) if info is not None and shard else (0, 1)
            for i in range(start, n, step):
                yield {"i": i, "sq": np.array([i * i, -i])}
    return Stream()


def test_iterable_dataset_with_workers_yields_each_item_once_in_torch_order():
    for n, bs in ((10, 3), (7, 2), (1, 4)):
        ours = list(mud.DataLoader(make_stream(mud, n), bs, num_workers=2))
        theirs = list(tud.DataLoader(make_stream(tud, n), bs, num_workers=2))
        assert [b["i"].numpy().tolist() for b in ours] == [b["i"].tolist() for b in theirs]
        assert sorted(sum((b["i"].numpy().tolist() for b in ours), [])) == list(range(n))
        for x, y in zip(ours, theirs):
            assert_same(x, y)
    # in the main process (no worker info) the stream is read whole, in order
    assert ids(mud.DataLoader(make_stream(mud, 5), 2), lambda b: b["i"]) == [[0, 1], [2, 3], [4]]
    dropped = mud.DataLoader(make_stream(mud, 5), 2, drop_last=True)
    assert ids(dropped, lambda b: b["i"]) == [[0, 1], [2, 3]]
    # not sharded: every worker yields every item (as in torch)
    dup = list(mud.DataLoader(make_stream(mud, 4, shard=False), 4, num_workers=2))
    assert [b["i"].numpy().tolist() for b in dup] == [[0, 1, 2, 3]] * 2
    with pytest.raises(ValueError, match="IterableDataset"):
        mud.DataLoader(make_stream(mud), 2, shuffle=True)
    assert mud.get_worker_info() is None


def test_workers_give_the_batches_of_one_process_in_order():
    ours = both("dicts")[0]
    for kw in ({}, {"shuffle": True, "generator": 5}, {"drop_last": True},
               {"batch_sampler": [[3, 1], [0], [9, 8, 7]]}):
        size = {} if "batch_sampler" in kw else {"batch_size": 3}
        one = list(mud.DataLoader(ours, num_workers=0, **size, **kw))
        two = list(mud.DataLoader(ours, num_workers=2, **size, **kw))
        assert len(one) == len(two)
        for k, (x, y) in enumerate(zip(one, two)):
            assert ids([x]) == ids([y]), (kw, k)
            np.testing.assert_array_equal(x["image"].numpy(), y["image"].numpy())
            assert x["meta"]["name"] == y["meta"]["name"]
    # persistent workers over two epochs, prefetching more: the same as in process
    mn.manual_seed(11)
    loader = mud.DataLoader(ours, 2, shuffle=True, num_workers=2, persistent_workers=True,
                            prefetch_factor=3)
    epochs = [ids(loader), ids(loader)]
    pool = loader._pool
    assert pool is not None and not pool.closed
    first, second = iter(loader), iter(loader)
    assert ids([next(second)]) and not pool.closed
    with pytest.raises(RuntimeError, match="newer iter"):
        next(first)
    mn.manual_seed(11)
    single = mud.DataLoader(ours, 2, shuffle=True)
    assert epochs == [ids(single), ids(single)]
    pool.close()


def test_collate_fn_tensors_come_back_from_workers():
    ours = both("tuples")[0]

    def collate(batch):
        return mn.tensor(np.stack([x for x, _ in batch]).sum(axis=(1, 2))), [y for _, y in batch]
    one = list(mud.DataLoader(ours, 4, collate_fn=collate))
    two = list(mud.DataLoader(ours, 4, collate_fn=collate, num_workers=2))
    for (a, la), (b, lb) in zip(one, two):
        assert isinstance(b, mn.Tensor) and b.dtype == a.dtype and la == lb
        np.testing.assert_array_equal(a.numpy(), b.numpy())


_INIT = {}


def _init_worker(worker_id):
    _INIT["mark"] = 100 + worker_id


class WhoLoads(mud.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        info = mud.get_worker_info()
        return {"i": i, "worker": info.id, "mark": _INIT["mark"],
                "draw": mn.init.generator().random()}


def test_worker_init_fn_info_and_seeds():
    mn.manual_seed(0)
    batches = list(mud.DataLoader(WhoLoads(), 2, num_workers=2, worker_init_fn=_init_worker))
    workers = [b["worker"].numpy().tolist() for b in batches]
    assert workers == [[0, 0], [1, 1], [0, 0], [1, 1]]      # round-robin, results in order
    assert [b["mark"].numpy().tolist() for b in batches] == [[100, 100], [101, 101]] * 2
    draws = [b["draw"].numpy() for b in batches]
    assert not np.allclose(draws[0], draws[1])      # each worker its own stream
    mn.manual_seed(0)
    again = list(mud.DataLoader(WhoLoads(), 2, num_workers=2, worker_init_fn=_init_worker))
    for a, b in zip(draws, again):
        np.testing.assert_array_equal(a, b["draw"].numpy())


class Failing(mud.Dataset):
    def __len__(self):
        return 12

    def __getitem__(self, i):
        if i == 7:
            raise ValueError("sample seven is corrupt")
        return np.float32(i)


def test_worker_error_names_worker_and_sample():
    with pytest.raises(ValueError, match=r"(?s)DataLoader worker \d \(pid \d+\) while loading "
                                         r"sample 7: sample seven is corrupt.*Traceback"):
        list(mud.DataLoader(Failing(), 3, num_workers=2))
    with pytest.raises(ValueError, match="sample seven") as info:
        list(mud.DataLoader(Failing(), 3))
    assert "DataLoader: raised while loading sample 7" in info.value.__notes__

    def bad_init(worker_id):
        raise KeyError("no config")
    with pytest.raises(KeyError, match="worker_init_fn"):
        list(mud.DataLoader(Failing(), 3, num_workers=2, worker_init_fn=bad_init))
    with pytest.raises(AttributeError, match=r"worker 0 .* while loading the batch of samples "
                                             r"\[0, 1, 2\] \(pickling its result\): Can't pickle"):
        list(mud.DataLoader(Failing(), 3, num_workers=2, collate_fn=lambda b: lambda: b))
    with pytest.raises(ZeroDivisionError, match=r"worker 0 .* loading item 4 of its iterator"):
        list(mud.DataLoader(BrokenStream(), 2, num_workers=1))


class BrokenStream(mud.IterableDataset):
    def __iter__(self):
        for i in range(6):
            yield 1 / (i - 4)


def run_script(body, timeout=120):
    """Runs body in a fresh interpreter that must finish within `timeout` seconds: a hang
    fails the test instead of blocking the suite."""
    code = textwrap.dedent("""
        import os, sys, time
        import numpy as np
        import mininet.utils.data as mud
    """) + textwrap.dedent(body)
    env = dict(os.environ, MININET_NUM_THREADS="1")
    try:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the DataLoader hung for {timeout} s")


def test_a_killed_worker_is_an_error_not_a_hang():
    result = run_script("""
        class Dies(mud.Dataset):
            def __len__(self):
                return 20
            def __getitem__(self, i):
                if i == 9:
                    os._exit(3)
                return np.float32(i)
        try:
            for batch in mud.DataLoader(Dies(), 2, num_workers=2):
                pass
        except RuntimeError as e:
            print("ERROR", e)
        else:
            print("NO ERROR")
    """)
    assert result.returncode == 0, result.stderr
    assert "ERROR DataLoader worker 0 (pid" in result.stdout, result.stdout
    assert "exited unexpectedly with exit code 3" in result.stdout, result.stdout


def test_timeout_bounds_the_wait_for_a_batch():
    result = run_script("""
        class Slow(mud.Dataset):
            def __len__(self):
                return 4
            def __getitem__(self, i):
                if i == 2:
                    time.sleep(600)
                return np.float32(i)
        got = []
        try:
            for batch in mud.DataLoader(Slow(), 2, num_workers=1, timeout=1):
                got.append(batch.numpy().tolist())
        except RuntimeError as e:
            print("ERROR", got, e)
    """)
    assert result.returncode == 0, result.stderr
    want = "ERROR [[0.0, 1.0]] DataLoader timed out after 1 s waiting for batch 1"
    assert want in result.stdout, result.stdout


def old_loader_batches(dataset, batch_size, shuffle=False, drop_last=False, seed=None,
                       sampler=None):
    """What DataLoader yielded before torch's habits (batched indexing, float32 casting)."""
    n = len(sampler) if sampler is not None else len(dataset)
    count = n // batch_size if drop_last else -(-n // batch_size)
    if sampler is not None:
        order = np.fromiter(iter(sampler), dtype=np.int64)
    elif shuffle:
        rng = np.random.default_rng(seed) if seed is not None else mn.init.generator()
        order = rng.permutation(len(dataset))
    else:
        order = np.arange(len(dataset))
    for b in range(count):
        batch = dataset[order[b * batch_size:(b + 1) * batch_size]]
        arrays = [np.asarray(x) for x in batch]
        yield tuple(x.astype(np.int64 if x.dtype.kind in "iub" else np.float32) for x in arrays)


class CountingTensorDataset(mud.TensorDataset):
    calls = []

    def __getitem__(self, index):
        CountingTensorDataset.calls.append(np.ndim(index))
        return super().__getitem__(index)


def assert_fast_path(loader, reference, counted=True):
    want = list(reference)
    CountingTensorDataset.calls = []
    got = list(loader)
    assert len(got) == len(want) and len(got) > 0
    for g, w in zip(got, want):
        assert type(g) is tuple and len(g) == len(w)
        for a, b in zip(g, w):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a.numpy(), b)
    if counted:   # one array-indexed call per batch (a worker's calls are not seen here)
        assert CountingTensorDataset.calls == [1] * len(got)


def test_our_datasets_keep_the_batched_fast_path():
    x = np.random.default_rng(1).random((103, 4, 3))
    y = np.random.default_rng(2).integers(0, 10, 103).astype(np.uint8)
    ds = CountingTensorDataset(x, y)
    assert_fast_path(mud.DataLoader(ds, 10), old_loader_batches(ds, 10))
    assert_fast_path(mud.DataLoader(ds, 10, drop_last=True),
                     old_loader_batches(ds, 10, drop_last=True))
    assert_fast_path(mud.DataLoader(ds, 16, shuffle=True, seed=4),
                     old_loader_batches(ds, 16, True, seed=4))
    mn.manual_seed(9)
    want = list(old_loader_batches(ds, 16, True))
    mn.manual_seed(9)
    assert_fast_path(mud.DataLoader(ds, 16, shuffle=True), want)
    sampler = DistributedSampler(ds, 2, 1, seed=3)
    assert_fast_path(mud.DataLoader(ds, 8, sampler=sampler),
                     old_loader_batches(ds, 8, sampler=DistributedSampler(ds, 2, 1, seed=3)))
    # Subsets of our data sets index by arrays too; workers keep the path
    sub = mud.Subset(ds, list(range(100, 0, -3)))
    assert_fast_path(mud.DataLoader(sub, 5), old_loader_batches(sub, 5))
    assert_fast_path(mud.DataLoader(ds, 10, num_workers=2), old_loader_batches(ds, 10),
                     counted=False)
    # a collate_fn means per-sample collation, as in torch: lists, not tuples
    CountingTensorDataset.calls = []
    first = next(iter(mud.DataLoader(ds, 4, collate_fn=mud.default_collate)))
    assert type(first) is list and CountingTensorDataset.calls == [0] * 4
    np.testing.assert_array_equal(first[0].numpy(), x[:4].astype(np.float32))


def test_mnist_fast_path_batches_unchanged(tiny_mnist):
    ds = MNISTDataset.load("train", tiny_mnist, download=False)
    assert ds.batch_indexing
    mn.manual_seed(5)
    got = list(mud.DataLoader(ds, 64, shuffle=True))
    mn.manual_seed(5)
    want = list(old_loader_batches(ds, 64, shuffle=True))
    assert len(got) == len(want) == 5
    for (gx, gy), (wx, wy) in zip(got, want):
        assert (gx.dtype, gy.dtype, gx.shape) == (np.float32, np.int64, wx.shape)
        np.testing.assert_array_equal(gx.numpy(), wx)
        np.testing.assert_array_equal(gy.numpy(), wy)


def test_torch_spellings_after_import_mininet_as_torch():
    import mininet as torch_like
    assert torch_like.utils.data.DataLoader is mud.DataLoader is mn.data.DataLoader
    for name in ("Dataset", "IterableDataset", "TensorDataset", "Subset", "ConcatDataset",
                 "random_split", "default_collate", "get_worker_info", "RandomSampler",
                 "SequentialSampler", "BatchSampler", "Sampler", "SubsetRandomSampler"):
        assert hasattr(torch_like.utils.data, name), name
    ds = torch_like.utils.data.TensorDataset(mn.tensor(np.arange(6.0)), mn.tensor(np.arange(6)))
    (xb, yb), = list(torch_like.utils.data.DataLoader(ds, batch_size=6, pin_memory=True))
    assert xb.numpy().tolist() == [0, 1, 2, 3, 4, 5] and yb.dtype == np.int64


def test_spawned_workers_read_a_picklable_dataset():
    x, y = np.arange(30.0).reshape(10, 3), np.arange(10) % 3
    ds = mud.TensorDataset(x, y)
    spawned = list(mud.DataLoader(ds, 4, num_workers=1, multiprocessing_context="spawn"))
    for (a, b), (c, d) in zip(spawned, mud.DataLoader(ds, 4)):
        np.testing.assert_array_equal(a.numpy(), c.numpy())
        np.testing.assert_array_equal(b.numpy(), d.numpy())
    assert len(spawned) == 3


def test_samplers_and_lengths_as_torch():
    for kw in ({"num_samples": 12}, {"replacement": True, "num_samples": 7}, {}):
        ours = list(mud.RandomSampler(range(5), generator=0, **kw))
        theirs = list(tud.RandomSampler(range(5), **kw))
        assert len(ours) == len(theirs) == len(mud.RandomSampler(range(5), **kw))
        assert set(ours) <= set(range(5))
        if not kw.get("replacement"):   # whole permutations, then part of one
            counts = np.bincount(ours, minlength=5)
            assert sorted(counts.tolist()) == sorted(np.bincount(theirs, minlength=5).tolist())
    picked = list(mud.SubsetRandomSampler([4, 8, 15, 16], generator=1))
    assert sorted(picked) == [4, 8, 15, 16]
    stream = mud.ChainDataset([make_stream(mud, 3), make_stream(mud, 2)])
    assert [s["i"] for s in stream] == [0, 1, 2, 0, 1]
    with pytest.raises(TypeError, match="has no len"):
        len(mud.DataLoader(make_stream(mud, 3), 2))
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        mud.BatchSampler(range(3), 0, False)
