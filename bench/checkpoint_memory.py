"""Peak RSS and step time of a deep MLP with and without activation checkpointing.

    python bench/checkpoint_memory.py [--layers 32] [--width 1024] [--batch 512] [--every 4]

Each mode runs in a fresh process (peak RSS is per process): SGD steps of a stack of
`layers` Linear+ReLU layers of `width`, checkpointing every `every` layers as one segment.
Prints a table, or JSON with --json.
"""
import argparse
import json
import subprocess
import sys
import time

from _rss import peak_mib


def run_mode(args):
    import numpy as np
    import mininet as mn
    from mininet import nn, optim
    mn.manual_seed(0)
    blocks = [nn.Sequential(*[m for _ in range(args.every)
                              for m in (nn.Linear(args.width, args.width), nn.ReLU())])
              for _ in range(args.layers // args.every)]
    if args.mode == "checkpoint":
        blocks = [nn.Checkpoint(b) for b in blocks]
    model = nn.Sequential(*blocks, nn.Linear(args.width, 10))
    opt = optim.SGD(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    x = mn.Tensor(rng.standard_normal((args.batch, args.width)).astype(np.float32))
    y = mn.Tensor(rng.integers(0, 10, args.batch))
    loss_fn = nn.SoftmaxLoss()
    times, losses = [], []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
        losses.append(loss.item())
    peak = peak_mib()
    print(json.dumps({"mode": args.mode, "peak_rss_mib": peak, "step_s": sorted(times)[len(times) // 2],
                      "losses": losses}))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--every", type=int, default=4, help="layers per checkpointed segment")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--mode", choices=("plain", "checkpoint"))
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.layers % args.every:
        p.error("--layers must be a multiple of --every")
    if args.mode:
        return run_mode(args)
    rows = []
    for mode in ("plain", "checkpoint"):
        cmd = [sys.executable, __file__, "--mode", mode] + [
            f"--{k}={getattr(args, k)}" for k in ("layers", "width", "batch", "every", "steps")]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"deep MLP: {args.layers} x Linear({args.width}) + ReLU, batch {args.batch}, "
          f"checkpoint every {args.every} layers")
    for r in rows:
        print(f"{r['mode']:>10}: peak RSS {r['peak_rss_mib']:7.1f} MiB, step {r['step_s'] * 1e3:7.1f} ms")


if __name__ == "__main__":
    main()
