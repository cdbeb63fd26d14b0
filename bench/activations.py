"""Activations and row normalisations against PyTorch: forward (no graph) and forward +
backward (the output's gradient given) of mininet's and torch's functional forms, each
pair timed in turns in one run (measure_together); medians in microseconds and their
ratio (mininet / PyTorch time).

    python bench/activations.py [--ops relu,gelu,...] [--shapes 256x512,2048x256]
                                [--threads 2] [--min-time 0.3] [--json FILE]

Each of these ops used to be built from several elementwise passes (erf alone from about
40); they are now one kernel pass each way (the elementwise table, mininet/backend/
opcodes.py, or the row kernels), and this is their check against the library users
compare with. The results are checked against PyTorch's before timing."""
import argparse
import json
import statistics
import sys

import numpy as np

OPS = {
    # name: (mininet fn(F, x), torch fn(TF, x))
    "relu": (lambda F, x: F.relu(x), lambda T, x: T.relu(x)),
    "gelu": (lambda F, x: F.gelu(x), lambda T, x: T.gelu(x)),
    "gelu_tanh": (lambda F, x: F.gelu(x, approximate="tanh"),
                  lambda T, x: T.gelu(x, approximate="tanh")),
    "silu": (lambda F, x: F.silu(x), lambda T, x: T.silu(x)),
    "leaky_relu": (lambda F, x: F.leaky_relu(x, 0.1), lambda T, x: T.leaky_relu(x, 0.1)),
    "elu": (lambda F, x: F.elu(x), lambda T, x: T.elu(x)),
    "softplus": (lambda F, x: F.softplus(x), lambda T, x: T.softplus(x)),
    "tanh": (lambda F, x: x.tanh(), lambda T, x: x.tanh()),
    "sigmoid": (lambda F, x: x.sigmoid(), lambda T, x: x.sigmoid()),
    "softmax": (lambda F, x: F.softmax(x, -1), lambda T, x: T.softmax(x, -1)),
    "log_softmax": (lambda F, x: F.log_softmax(x, -1), lambda T, x: T.log_softmax(x, -1)),
    "layer_norm": (lambda F, x: F.layer_norm(x, (x.shape[-1],)),
                   lambda T, x: T.layer_norm(x, (x.shape[-1],))),
}


def parse_shapes(spec):
    try:
        shapes = [tuple(int(d) for d in s.split("x")) for s in spec.split(",") if s]
    except ValueError:
        raise SystemExit(f"--shapes: give sizes like 256x512,2048x256, got {spec!r}")
    if not shapes or any(not s or min(s) < 1 for s in shapes):
        raise SystemExit(f"--shapes: each shape needs positive sizes, got {spec!r}")
    return shapes


def case(name, shape, min_time):
    import torch
    import mininet
    import mininet.nn.functional as F
    import torch.nn.functional as TF
    from mininet.benchmark.harness import measure_together
    mfn, tfn = OPS[name]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    mx = mininet.Tensor(x, requires_grad=True)
    tx = torch.tensor(x, requires_grad=True)
    g = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    mg, tg = mininet.Tensor(g), torch.tensor(g)

    def m_fwd():
        with mininet.no_grad():
            return mfn(F, mx)

    def t_fwd():
        with torch.no_grad():
            return tfn(TF, tx)

    def m_both():
        mx.grad = None
        mfn(F, mx).backward(mg)

    def t_both():
        tx.grad = None
        tfn(TF, tx).backward(tg)

    m_both()
    t_both()
    scale = max(float(np.abs(tx.grad.numpy()).max()), 1.0)
    if not (np.allclose(m_fwd().numpy(), t_fwd().numpy(), rtol=1e-4, atol=1e-5)
            and np.allclose(mx.grad.numpy(), tx.grad.numpy(), rtol=1e-4, atol=1e-5 * scale)):
        raise SystemExit(f"{name} {shape}: mininet and PyTorch disagree")
    row = {"op": name, "shape": list(shape)}
    for mode, fns in (("fwd", {"mininet": m_fwd, "torch": t_fwd}),
                      ("fwd+bwd", {"mininet": m_both, "torch": t_both})):
        got = measure_together(fns, min_time=min_time)
        med = {impl: statistics.median(s) * 1e6 for impl, s in got.items()}
        row[mode] = {"mininet_us": med["mininet"], "torch_us": med["torch"],
                     "ratio": med["mininet"] / med["torch"]}
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", default=",".join(OPS), help="comma list of: " + ", ".join(OPS))
    ap.add_argument("--shapes", default="256x512,2048x256")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-time", type=float, default=0.3, help="seconds of samples per case")
    ap.add_argument("--json", help="write the rows here too")
    args = ap.parse_args(argv)
    ops = [o for o in args.ops.split(",") if o]
    unknown = [o for o in ops if o not in OPS]
    if unknown:
        raise SystemExit(f"--ops: unknown {', '.join(unknown)}; known: {', '.join(OPS)}")
    if args.threads < 1:
        raise SystemExit(f"--threads must be at least 1, got {args.threads}")
    shapes = parse_shapes(args.shapes)
    try:
        import torch
    except ImportError:
        raise SystemExit("bench/activations.py compares with PyTorch: pip install -e '.[torch]'")
    import mininet
    from mininet.benchmark import peak
    mininet.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    print(f"activations vs PyTorch, float32, {args.threads} threads ({peak.cpu_model()}); "
          "medians in us, ratio = mininet / PyTorch time")
    print(f"{'op':<12} {'shape':<10} {'fwd':>8} {'torch':>8} {'ratio':>6}   "
          f"{'fwd+bwd':>8} {'torch':>8} {'ratio':>6}")
    rows = []
    for name in ops:
        for shape in shapes:
            r = case(name, shape, args.min_time)
            rows.append(r)
            f, b = r["fwd"], r["fwd+bwd"]
            print(f"{name:<12} {'x'.join(map(str, shape)):<10} {f['mininet_us']:8.1f} "
                  f"{f['torch_us']:8.1f} {f['ratio']:6.2f}   {b['mininet_us']:8.1f} "
                  f"{b['torch_us']:8.1f} {b['ratio']:6.2f}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"cpu": peak.cpu_model(), "threads": args.threads, "rows": rows}, fh,
                      indent=1)


if __name__ == "__main__":
    sys.exit(main())
