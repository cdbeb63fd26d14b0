"""The CUDA emulator (mininet/backend/emulator) catches kernel bugs: copies of the real
kernels with a bug put in (a __syncthreads removed, an index one past the end), launches
the driver would refuse, and small kernels for barriers, warps, shared memory and
memory. Needs only a host C++ compiler; no GPU, and MININET_CUDA need not be set."""
import gc
import shutil

import numpy as np
import pytest

from mininet.backend import cuda_build
from mininet.backend.emulator import driver, tools
from mininet.backend.cuda_device import GEOM, VIEW

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="no host C++ compiler (g++)")

MINI = """#include "common.cuh"
extern "C" __global__ void divergent_barrier(float* x) {
    if (threadIdx.x < 16) __syncthreads();
    else __syncthreads();
    x[threadIdx.x] = 1;
}
extern "C" __global__ void barrier_vs_shuffle(float* x) {
    float v = threadIdx.x;
    if (threadIdx.x == 0) __syncthreads();
    else v = __shfl_sync(0xffffffffu, v, 0);
    x[threadIdx.x] = v;
}
extern "C" __global__ void half_warp_exits(float* x) {
    float v = threadIdx.x;
    if (threadIdx.x >= 16) return;
    x[threadIdx.x] = __shfl_down_sync(0xffffffffu, v, 1);
}
extern "C" __global__ void warp_ops(float* out, unsigned* votes) {
    float v = threadIdx.x;
    int t = threadIdx.x;
    out[4 * t + 0] = __shfl_sync(0xffffffffu, v, 3);
    out[4 * t + 1] = __shfl_up_sync(0xffffffffu, v, 2);
    out[4 * t + 2] = __shfl_down_sync(0xffffffffu, v, 5, 16);
    out[4 * t + 3] = __shfl_xor_sync(0xffffffffu, v, 1);
    unsigned b = __ballot_sync(0xffffffffu, t % 3 == 0);
    if ((t & 31) == 0) votes[t / 32] = b;
}
extern "C" __global__ void block_id_through_shared(int* out) {
    __shared__ int id;
    if (threadIdx.x == 0) id = blockIdx.x;
    __syncthreads();
    out[blockIdx.x * blockDim.x + threadIdx.x] = id;
}
extern "C" __global__ void uninitialised_shared(float* out) {
    __shared__ float s[64];
    if (threadIdx.x >= 64) s[0] = 0;   // never at run time (a shared array nothing writes folds to 0)
    out[threadIdx.x] = s[threadIdx.x];
}
extern "C" __global__ void last_writer_wins(int* x) { x[0] = threadIdx.x; }
extern "C" __global__ void write(float* x, long long i) { x[i] = 1; }
extern "C" __global__ void float_atomics(float* x) { atomicAdd(x, 0.1f * threadIdx.x); }
"""


@pytest.fixture(scope="module")
def ctx():
    driver.init()
    context = driver.Device(0).retain_primary_context()
    context.push()
    yield context
    driver.Context.pop()


@pytest.fixture
def mode(monkeypatch):
    return lambda m: monkeypatch.setenv("MININET_CUDA_EMU", m)


def module(tmp_path, name, edit=None, source=None):
    """cuda_src/<name>.cu (or `source`) built for the host from a copy in tmp_path, with
    edit = (old, new) applied once."""
    src = cuda_build.source_dir()
    shutil.copy(src / "common.cuh", tmp_path)
    text = source if source is not None else (src / f"{name}.cu").read_text()
    if edit:
        assert text.count(edit[0]) == 1, edit[0]
        text = text.replace(*edit)
    (tmp_path / f"{name}.cu").write_text(text)
    return driver.module_from_file(cuda_build.compile_host(name, src_dir=tmp_path))


@pytest.fixture(scope="module")
def mini(ctx, tmp_path_factory):
    return module(tmp_path_factory.mktemp("mini"), "mini", source=MINI)


def device(array):
    buf = driver.mem_alloc(array.nbytes)
    driver.memcpy_htod(buf, np.ascontiguousarray(array))
    return buf


def host(buf, like):
    out = np.empty_like(like)
    driver.memcpy_dtoh(out, buf)
    return out


def view(n):
    return (1,) * 5 + (n,) + (0,) * 5 + (1,)


def expect(kind, call, *words):
    with pytest.raises(driver.KernelError) as err:
        call()
    assert err.value.kind == kind, str(err.value)
    for w in words:
        assert w in str(err.value), str(err.value)
    return str(err.value)


# ---- the three bugs of the issue ------------------------------------------------------------
def test_a_removed_syncthreads_is_a_race(ctx, tmp_path, mode):
    """reduce_best's tree without the barrier between its steps: a thread reads a slot that
    another updates in the same step. Caught whatever the thread order."""
    tree = "            }\n        }\n        __syncthreads();\n    }"
    mod = module(tmp_path, "reduce", edit=(tree, "            }\n        }\n    }"))
    fn = mod.get_function("reduce_f32").prepare("iPqqPP")
    x = device(np.random.default_rng(0).standard_normal(1000).astype(np.float32))
    out = driver.mem_alloc(4)
    mode("checked")
    msg = expect("race", lambda: fn.prepared_call((1, 1, 1), (256, 1, 1), 1, int(x), 1000, 1, int(out), 0),
                 "reduce_f32", "shared-memory race", "since the last __syncthreads")
    assert "reduce_best<float>" in msg and "::val" in msg   # names the __shared__ array
    (tmp_path / "ok").mkdir()
    fixed = module(tmp_path / "ok", "reduce")
    fixed.get_function("reduce_f32").prepare("iPqqPP").prepared_call(
        (1, 1, 1), (256, 1, 1), 1, int(x), 1000, 1, int(out), 0)
    assert host(out, np.zeros(1, np.float32))[0] == host(x, np.zeros(1000, np.float32)).max()


@pytest.mark.parametrize("checked", ["checked", "fast"])
def test_an_index_one_past_the_end_is_out_of_bounds(ctx, tmp_path, mode, checked):
    """unary with `i <= n`: its last thread reads and writes one element past the end.
    Checked builds catch the access itself; fast ones through the guard page after it."""
    loop = "    GRID_STRIDE(i, n) out[i] = unary_op<T>(op, a[view_offset(va, i)]);"
    mod = module(tmp_path, "elementwise", edit=(loop, loop.replace("GRID_STRIDE(i, n)", "GRID_STRIDE(i, n + 1)")))
    fn = mod.get_function("unary_f32").prepare("iP" + VIEW + "Pq")
    n = 100
    a, out = device(np.ones(n, np.float32)), driver.mem_alloc(4 * n)
    mode(checked)
    expect("bounds", lambda: fn.prepared_call((1, 1, 1), (128, 1, 1), 0, int(a), *view(n), int(out), n),
           "unary_f32", "thread (100,0,0)", "0 bytes past the end of a 400-byte allocation")


def test_a_grid_over_the_limit_is_refused(ctx, mini):
    fn = mini.get_function("write").prepare("Pq")
    x = driver.mem_alloc(4)
    for grid, block in [((1, 65536, 1), (1, 1, 1)), ((1, 1, 70000), (1, 1, 1)),
                        ((1, 1, 1), (1025, 1, 1)), ((1, 1, 1), (1, 1, 65)), ((0, 1, 1), (1, 1, 1))]:
        with pytest.raises(driver.LogicError, match="cuLaunchKernel failed: invalid argument"):
            fn.prepared_call(grid, block, int(x), 0)
    with pytest.raises(driver.LogicError, match="dynamic shared memory"):
        fn.prepared_call((1, 1, 1), (1, 1, 1), int(x), 0, shared_size=64 * 1024)


def test_launch_bounds_and_the_prepared_format_are_checked(ctx):
    mod = driver.module_from_file(cuda_build.compile_host("matmul"))
    gemm = mod.get_function("gemm_f32").prepare("PqqPPqqPPiii")
    with pytest.raises(driver.LaunchError, match=r"__launch_bounds__\(256\)"):
        gemm.prepared_call((1, 1, 1), (512, 1, 1), 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 1)
    fill = driver.module_from_file(cuda_build.compile_host("strided")).get_function("fill_f32")
    fill.prepare("P" + VIEW + "dq")   # a double for `float value`
    x = driver.mem_alloc(16)
    with pytest.raises(driver.LogicError, match=r"parameter 3 \(float value\) is a 4-byte floating"):
        fill.prepared_call((1, 1, 1), (32, 1, 1), int(x), *view(4), 1.0, 4)
    conv = driver.module_from_file(cuda_build.compile_host("conv")).get_function("col2im_f32")
    conv.prepare("PP" + "i" * 13)   # struct Geom has 14 ints
    with pytest.raises(driver.LogicError, match=r"parameter 3 \(Geom g\) is a 56-byte struct"):
        conv.prepared_call((1, 1, 1), (32, 1, 1), int(x), int(x), *range(13))
    assert conv.prepare("PP" + GEOM)
    with pytest.raises(driver.LogicError, match="named symbol not found"):
        mod.get_function("gemm_f16")


# ---- barriers, warps, shared memory ---------------------------------------------------------------
def test_divergent_barriers_and_deadlocks(mini, mode):
    x = driver.mem_alloc(4 * 64)
    mode("fast")
    expect("barrier", lambda: mini.get_function("divergent_barrier").prepare("P").prepared_call(
        (1, 1, 1), (64, 1, 1), int(x)), "divergent __syncthreads")
    expect("deadlock", lambda: mini.get_function("barrier_vs_shuffle").prepare("P").prepared_call(
        (1, 1, 1), (32, 1, 1), int(x)), "1 threads wait at __syncthreads", "31 in a warp operation")
    expect("warp", lambda: mini.get_function("half_warp_exits").prepare("P").prepared_call(
        (1, 1, 1), (32, 1, 1), int(x)), "has exited")
    expect("warp", lambda: mini.get_function("half_warp_exits").prepare("P").prepared_call(
        (1, 1, 1), (16, 1, 1), int(x)), "names lanes that do not exist")


@pytest.mark.parametrize("order", ["checked", "fast"])
def test_warp_shuffles_and_votes(mini, mode, order):
    mode(order)
    out, votes = driver.mem_alloc(4 * 4 * 64), driver.mem_alloc(4 * 2)
    mini.get_function("warp_ops").prepare("PP").prepared_call((1, 1, 1), (64, 1, 1), int(out), int(votes))
    got = host(out, np.zeros((64, 4), np.float32))
    t = np.arange(64)
    lane, base = t % 32, t - t % 32
    seg = t % 16
    want = np.stack([base + 3, np.where(lane >= 2, t - 2, t), np.where(seg + 5 < 16, t + 5, t), t ^ 1], 1)
    np.testing.assert_array_equal(got, want)
    ballot = sum(1 << i for i in range(32) if i % 3 == 0)
    assert host(votes, np.zeros(2, np.uint32)).tolist() == [ballot, sum(1 << i for i in range(32) if (i + 32) % 3 == 0)]


def test_shared_memory_is_per_block_and_poisoned(mini, mode):
    mode("fast")   # blocks in parallel on the OS threads
    out = driver.mem_alloc(4 * 64 * 50)
    mini.get_function("block_id_through_shared").prepare("P").prepared_call((50, 1, 1), (64, 1, 1), int(out))
    np.testing.assert_array_equal(host(out, np.zeros((50, 64), np.int32)), np.arange(50)[:, None] + 0 * np.arange(64))
    fn = mini.get_function("uninitialised_shared").prepare("P")
    fn.prepared_call((1, 1, 1), (64, 1, 1), int(out))
    assert np.isnan(host(out, np.zeros(64, np.float32))).all()   # 0xFF bytes: NaN
    mode("checked")
    expect("uninitialised", lambda: fn.prepared_call((1, 1, 1), (64, 1, 1), int(out)),
           "uninitialised_shared::s", "no thread of this block has written")


def test_a_result_that_depends_on_the_thread_order(mini, mode):
    mode("checked")
    x = driver.mem_alloc(4)
    expect("order", lambda: mini.get_function("last_writer_wins").prepare("P").prepared_call(
        (1, 1, 1), (64, 1, 1), int(x)), "depends on the thread order", "reverse")
    # float atomics round differently in each order: not an error
    mini.get_function("float_atomics").prepare("P").prepared_call((1, 1, 1), (64, 1, 1), int(x))


# ---- memory ----------------------------------------------------------------------------------------
def test_host_copies_must_stay_inside_an_allocation(ctx):
    x = driver.mem_alloc(16)
    with pytest.raises(driver.LogicError, match="not inside one live device allocation"):
        driver.memcpy_htod(int(x), np.zeros(5, np.float32))
    with pytest.raises(driver.LogicError, match="not inside one live device allocation"):
        driver.memcpy_dtoh(np.zeros(2, np.float64), int(x) + 8 + 4)
    fresh = host(driver.mem_alloc(8), np.zeros(2, np.float32))
    assert np.isnan(fresh).all()   # device memory is never silently zero


def test_a_kernel_touching_memory_back_in_the_pool(mini, mode):
    pool = tools.DeviceMemoryPool()
    block = pool.allocate(256)
    ptr = int(block)
    block.free()
    assert (pool.active_blocks, pool.held_blocks) == (0, 1)
    write = mini.get_function("write").prepare("Pq")
    for m in ("fast", "checked"):
        mode(m)
        expect("bounds", lambda: write.prepared_call((1, 1, 1), (1, 1, 1), ptr, 3), "freed", "held by the pool")
    again = pool.allocate(256)
    assert int(again) == ptr
    write.prepared_call((1, 1, 1), (1, 1, 1), int(again), 3)
    pool.free_held()


def test_a_pooled_block_collected_in_a_reference_cycle_is_reused_whole(ctx):
    """Before: a failed test's traceback kept a training step's buffers in a reference
    cycle; the collector finalized the DeviceAllocation inside a pooled one first (freed,
    address 0), then the pooled one gave that dead allocation back, and later tests got
    blocks at address 0 ('0 is not device memory'). The pool now holds plain addresses, as
    PyCUDA's does."""
    pool = tools.DeviceMemoryPool()
    cycle = [pool.allocate(256)]
    cycle.append(cycle)
    ptr = int(cycle[0])
    del cycle
    gc.collect()
    assert (pool.active_blocks, pool.held_blocks) == (0, 1)
    again = pool.allocate(256)
    assert int(again) == ptr
    driver.memcpy_htod(again, np.zeros(64, np.float32))
    again.free()
    assert int(again) == ptr   # as PyCUDA: the address outlives free(); freeing twice is an error
    with pytest.raises(driver.LogicError, match="invalid resource handle"):
        again.free()
    assert (pool.active_blocks, pool.held_blocks) == (0, 1)
    pool.free_held()
    x = driver.mem_alloc(8)
    x.free()
    with pytest.raises(driver.LogicError, match="invalid resource handle"):
        x.free()


def test_a_trap_names_the_kernel(ctx, mode):
    mode("fast")
    unary = driver.module_from_file(cuda_build.compile_host("elementwise")).get_function("unary_f32")
    x = device(np.ones(4, np.float32))
    expect("trap", lambda: unary.prepare("iP" + VIEW + "Pq").prepared_call(
        (1, 1, 1), (32, 1, 1), 99, int(x), *view(4), int(x), 4), "__trap() called", "ops_gen.cuh")


def test_coverage_counts_launches(mini, mode):
    mode("auto")
    before = driver.coverage().get("write", {"fast": 0, "checked": 0})
    x = driver.mem_alloc(4)
    fn = mini.get_function("write").prepare("Pq")
    for _ in range(4):
        fn.prepared_call((1, 1, 1), (1, 1, 1), int(x), 0)
    after = driver.coverage()["write"]
    assert after["fast"] + after["checked"] == before["fast"] + before["checked"] + 4
    assert after["checked"] >= 2   # auto: the first launches of every kernel are checked
