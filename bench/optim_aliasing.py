"""The fused optimizer steps on arrays that lie a multiple of 1 MB apart, against the same
arrays 256 bytes further apart: ns per parameter, for every kernel set this CPU runs.

    python bench/optim_aliasing.py [--items 1048576] [--threads 1] [--rounds 5]

A load whose low ~20 address bits match a store still in flight waits for it (the
buffer pool now starts large blocks at one of 16 offsets for this reason: see
mininet_ext/buffer.pyx). Session 33 found the AVX2 build's Adam 4.6x and SGD 2.1x slower
on two parameters the pool had placed so: their loops read p again after writing m and
v. The arrays here are carved out of one allocation, so the pool's offsets do not apply:
this measures the kernels' own loops (loads before stores since session 33)."""
import argparse
import json
import os
import subprocess
import sys
import time

ONE = r"""
import json, sys, time
import numpy as np
import mininet
from mininet_ext import _isa
from mininet_ext.buffer import Buffer
n, threads, rounds = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
mininet.set_num_threads(threads)
opt = _isa.variant("optim")
span = 4 * n + (1 << 20) - (4 * n) % (1 << 20)   # 4 n bytes rounded up to whole MB
big = np.zeros((4 * span + (1 << 20)) // 4 + 256, np.float32)   # 4 arrays, 1 MB slack
base = (-big.ctypes.data % (1 << 20)) // 4
out = {}
for stagger in (0, 256):
    arrs = [big[base + k * (span + stagger) // 4:][:n] for k in range(4)]
    arrs[0][:] = 0.01
    arrs[1][:] = 1.0
    arrs[2][:] = 0.0
    arrs[3][:] = 0.0
    p, g, m, v = (Buffer.wrap(a) for a in arrs)
    steps = {"adam": lambda t: opt.adam_step(p, g, 0, m, v, n, 1e-3, 0.9, 0.999, 1e-8, 0.0,
                                             False, t, 4),
             "sgd": lambda t: opt.sgd_step(p, g, 0, m, n, 1e-3, 0.9, 0.0, 0.0, False, t == 1,
                                           4)}
    for name, step in steps.items():
        best = float("inf")
        for r in range(rounds):
            t0 = time.perf_counter()
            for t in range(1, 11):
                step(t)
            best = min(best, (time.perf_counter() - t0) / 10)
        out[f"{name} {stagger}"] = best / n * 1e9
print(json.dumps({"path": _isa.active(), "ns": out}))
"""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=1 << 20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", help="write the rows here too")
    args = ap.parse_args(argv)
    if args.items < 1 or args.threads < 1 or args.rounds < 1:
        raise SystemExit("--items, --threads and --rounds must be positive")
    from mininet_ext import _isa
    rows = []
    for isa in _isa.supported():
        env = dict(os.environ, MININET_ISA=isa)
        done = subprocess.run([sys.executable, "-c", ONE, str(args.items), str(args.threads),
                               str(args.rounds)], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{isa}: {done.stderr.strip()}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"ns per parameter, {args.items} float32 items, {args.threads} thread(s); "
          f"arrays 1 MB-aligned apart / 256 B further ({time.strftime('%Y-%m-%d')})")
    print(f"{'path':<11} {'adam':>15} {'sgd':>15}")
    for r in rows:
        ns = r["ns"]
        print(f"{r['path']:<11} {ns['adam 0']:6.3f} / {ns['adam 256']:6.3f} "
              f"{ns['sgd 0']:6.3f} / {ns['sgd 256']:6.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
