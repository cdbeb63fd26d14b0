"""`mininet bench train --ranks 1,2`: data-parallel scaling. Each configuration runs in
fresh processes (mpirun for 2+ ranks) training one epoch on random data of the model's
input shape, at the same global batch; rank 0 reports samples/s and the communication:
the time a step waits for the gradient allreduce after backward (what overlap did not
hide), and a plain allreduce of all the gradients, timed alone."""
import json
import os
import subprocess
import sys
import time

import numpy as np


def bench_scaling(models, ranks_list, samples, batch_size, threads, repeat):
    """Rows of each (model, rank count); batch_size None: each model's default (registry)."""
    from ..models import registry
    rows = []
    for name in models:
        batch = batch_size or registry.get(name).batch_size
        for ranks in ranks_list:
            per_rank_threads = max(1, threads // ranks)
            args = ["--model", name, "--samples", str(samples), "--batch-size", str(batch),
                    "--threads", str(per_rank_threads), "--repeat", str(repeat)]
            cmd = [sys.executable, "-m", "mininet.cli.bench_dist", *args]
            if ranks > 1:
                from .launch import mpirun_prefix
                cmd = mpirun_prefix(ranks) + cmd
            env = dict(os.environ, MININET_NUM_THREADS=str(per_rank_threads))
            r = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if r.returncode != 0:
                raise RuntimeError(f"{ranks} ranks, {name}: {r.stderr.strip()[-2000:]}")
            rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
    return rows


def worker(name, samples, batch_size, threads, repeat):
    from .. import distributed
    from ..data import DataLoader, DistributedSampler, TensorDataset
    from ..training import make_optimizer, train_epoch
    from .bench_train import train_case
    from .timing import best_time
    distributed.init(threads)
    ranks = distributed.world_size()
    x, y, batch, model = train_case(name, samples, batch_size, np.random.default_rng(0))
    n = len(x)
    distributed.broadcast_parameters(model)
    opt = make_optimizer("adam", model.parameters(), 1e-3)
    per_rank = max(1, batch // ranks)              # the same global batch at every rank count
    data = TensorDataset(x, y)
    if ranks > 1:
        loader = DataLoader(data, per_rank, sampler=DistributedSampler(data, seed=0))
    else:
        loader = DataLoader(data, per_rank, shuffle=True, seed=0)
    reducer = distributed.GradientReducer(model) if ranks > 1 else None
    warm = DataLoader(TensorDataset(x[:per_rank * 3], y[:per_rank * 3]), per_rank)
    train_epoch(model, warm, opt, reducer=reducer)
    if reducer:
        reducer.comm_seconds = 0.0
    seconds = best_time(lambda: train_epoch(model, loader, opt, reducer=reducer), repeat=repeat,
                        warmup=0, min_time=0)
    steps = len(loader) * repeat
    row = {"model": name, "ranks": ranks, "threads_per_rank": threads, "samples": n,
           "global_batch": per_rank * ranks, "seconds": seconds, "samples_per_s": n / seconds,
           "wait_ms_per_step": (reducer.comm_seconds / steps * 1e3) if reducer else 0.0,
           "allreduce_ms": _allreduce_ms(model) if ranks > 1 else 0.0,
           "grad_mb": sum(p.cached_data.size * p.dtype.itemsize for p in model.parameters()) / 2 ** 20}
    if distributed.rank() == 0:
        print(json.dumps(row), flush=True)


def _allreduce_ms(model, times=20):
    """Median milliseconds of one allreduce of all the gradients in 4 MB buckets."""
    from .. import distributed
    size = sum(p.cached_data.size for p in model.parameters())
    buckets = [np.ones(min(2 ** 20, size - at), dtype=np.float32) for at in range(0, size, 2 ** 20)]
    out = []
    for _ in range(times):
        distributed.barrier()
        t0 = time.perf_counter()
        for b in buckets:
            distributed.allreduce_(b)
        out.append(time.perf_counter() - t0)
    return sorted(out)[len(out) // 2] * 1e3


if __name__ == "__main__":
    import argparse
    p = argparse.ArgumentParser()
    for flag, kind in (("--model", str), ("--samples", int), ("--batch-size", int),
                       ("--threads", int), ("--repeat", int)):
        p.add_argument(flag, type=kind, required=True)
    a = p.parse_args()
    worker(a.model, a.samples, a.batch_size, a.threads, a.repeat)
