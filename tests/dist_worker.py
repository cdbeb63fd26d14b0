"""Run by tests/test_distributed.py under `mpirun -n R`: python dist_worker.py SCENARIO OUTDIR.

equivalence: float64 MLP (with an unused parameter, tiny buckets so there are several),
  STEPS SGD-momentum steps on DistributedSampler shards with a GradientReducer; each rank
  saves its parameters, rank 0 also a single-process run over the same global batches.
kill: rank 1 kills itself (SIGKILL) in its third step; the others go on into a collective.
stall: rank 1 stops taking part (sleeps) in its third step; the others time out.
buffers: BatchNorm running statistics that differ per rank are averaged.
"""
import os
import signal
import sys
import time

import numpy as np

import mininet as mn
from mininet import distributed, nn, optim
from mininet.data import DataLoader, DistributedSampler, TensorDataset

STEPS, N, BATCH = 6, 144, 8   # per-rank batch: STEPS steps of BATCH fit on each of 2 or 3 ranks


def model():
    mn.manual_seed(3)
    net = nn.Sequential(nn.Linear(5, 16, dtype="float64"), nn.Tanh(),
                        nn.Linear(16, 16, dtype="float64"), nn.ReLU(),
                        nn.Linear(16, 3, dtype="float64"))
    net.unused = nn.Parameter(np.ones(4), dtype="float64")   # never in the graph
    return net


def data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((N, 5)), rng.integers(0, 3, N)


def train(net, batches, reducer=None):
    opt = optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    loss_fn = nn.SoftmaxLoss()
    for step, (x, y) in enumerate(batches):
        if step == STEPS:
            break
        if scenario == "kill" and distributed.rank() == 1 and step == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        if scenario == "stall" and distributed.rank() == 1 and step == 2:
            time.sleep(3600)
        opt.zero_grad()
        loss_fn(net(x), y).backward()
        if reducer is not None:
            reducer.finish()
        opt.step()
    return {name: p.numpy() for name, p in net.named_parameters()}


def main(outdir):
    distributed.init(threads=1)
    r, world = distributed.rank(), distributed.world_size()
    x, y = data()
    ds = TensorDataset(x, y)
    net = model()
    for p in net.parameters():   # start from different weights: broadcast must fix that
        p.data = p.data + r
    distributed.broadcast_parameters(net)
    sampler = DistributedSampler(ds, seed=7)
    loader = DataLoader(ds, BATCH, sampler=sampler, dtype="float64")
    params = train(net, loader, distributed.GradientReducer(net, bucket_mb=0.0002))
    np.savez(os.path.join(outdir, f"rank{r}.npz"), **params)
    if r == 0:   # the same global batches, one process: shard k of step s is rank k's
        shards = [DistributedSampler(N, world, k, seed=7).indices() for k in range(world)]
        glob = [np.concatenate([s[b * BATCH:(b + 1) * BATCH] for s in shards])
                for b in range(STEPS)]
        ref = train(model(), [(mn.Tensor(x[i], dtype="float64"), mn.Tensor(y[i])) for i in glob])
        np.savez(os.path.join(outdir, "single.npz"), **ref)
        with open(os.path.join(outdir, "buckets.txt"), "w") as f:
            f.write(str(len(distributed.GradientReducer(net, bucket_mb=0.0002, overlap=False).buckets)))


def buffers(outdir):
    distributed.init(threads=1)
    bn = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    bn.modules_list[1].running_mean = mn.Tensor(np.full(4, float(distributed.rank()), np.float32))
    distributed.average_buffers(bn)
    np.save(os.path.join(outdir, f"mean{distributed.rank()}.npy"),
            bn.modules_list[1].running_mean.numpy())


if __name__ == "__main__":
    scenario = sys.argv[1]
    (buffers if scenario == "buffers" else main)(sys.argv[2])
