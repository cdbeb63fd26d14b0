"""Interleaved A/B runs: the base and the new version timed in turns, so that a slow
spell of a shared machine hits both alike.

Two benchmark processes started one after the other on a shared machine can differ by
tens of percent with no code change (CPU frequency, neighbours, page placement). Running the two
versions alternately for several rounds and pooling each one's samples turns that
drift into noise both sides share, which the rank test then sees through.

Between processes: each command is a shell command that prints one saved run
(schema mininet-bench/1) on stdout, e.g. `mininet bench matmul --sizes 256 --save -`.
Within one process: ab_callables times two Python callables in turns."""
import json
import time
from datetime import datetime, timezone

from .compare import compare, parse_run
from .runs import MAX_RUN_BYTES
from .stats import summary

ORDERS = ("abba", "abab")


class ABError(RuntimeError):
    """A command of an A/B run that failed, timed out or printed no saved run."""


def schedule(rounds, order="abba"):
    """Which side runs when: "abab" is base, new every round; "abba" swaps the order
    every other round (base new, new base, ...), so a linear drift favours neither."""
    if order not in ORDERS:
        raise ValueError(f"ab: order must be one of {', '.join(ORDERS)}, got {order!r}")
    if rounds < 1:
        raise ValueError(f"ab: rounds must be at least 1, got {rounds}")
    turns = []
    for r in range(rounds):
        pair = ["base", "new"]
        turns += pair[::-1] if order == "abba" and r % 2 else pair
    return turns


# between processes -------------------------------------------------------------------------
def run_ab(base_cmd, new_cmd, rounds=5, order="abba", timeout=None, progress=None):
    """Run the two shell commands in turns for `rounds` rounds; return (base_run, new_run),
    each the merge of its rounds' runs (samples pooled per case). progress(line), when
    given, hears of every turn."""
    commands = {"base": base_cmd, "new": new_cmd}
    runs = {"base": [], "new": []}
    turns = schedule(rounds, order)
    for i, side in enumerate(turns):
        r = i // 2 + 1
        if progress:
            progress(f"round {r}/{rounds}: {side}")
        runs[side].append(run_command(commands[side], f"the {side} command (round {r})", timeout))
    return merge_runs(runs["base"]), merge_runs(runs["new"])


def run_command(command, what, timeout=None):
    """The saved run a shell command prints on stdout; ABError naming `what` otherwise."""
    import subprocess
    try:
        done = subprocess.run(command, shell=True, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ABError(f"{what} ran past {timeout} s: {command}") from None
    if done.returncode != 0:
        last = _last_line(done.stderr) or _last_line(done.stdout)
        raise ABError(f"{what} exited with status {done.returncode}"
                      + (f": {last}" if last else "") + f" ({command})")
    if len(done.stdout) > MAX_RUN_BYTES:
        raise ABError(f"{what} printed {len(done.stdout)} bytes, too many for a saved run")
    if not done.stdout.strip():
        raise ABError(f"{what} printed nothing on stdout; it must print a saved run "
                      f"(e.g. `mininet bench ... --save -`): {command}")
    try:
        return parse_run(done.stdout, f"stdout of {what}")
    except ValueError as e:
        raise ABError(str(e)) from None


def _last_line(data):
    lines = data.decode(errors="replace").strip().splitlines()
    return lines[-1].strip() if lines else ""


def merge_runs(runs):
    """One run from several of the same command: the first one's description, each case's
    samples pooled in order of the runs and its median, quartiles and best recomputed."""
    merged = {k: v for k, v in runs[0].items() if k != "cases"}
    cases = {}
    for run in runs:
        for case in run["cases"]:
            if case["name"] not in cases:
                cases[case["name"]] = {**case, "samples": []}
            cases[case["name"]]["samples"] += case["samples"]
    for case in cases.values():
        case.update(summary(case["samples"]))
    merged["cases"] = list(cases.values())
    return merged


def ab_document(base_cmd, new_cmd, rounds, order, base_run, new_run, result):
    """What `mininet bench ab --save` writes: both commands, both merged runs (each a
    valid mininet-bench/1 run) and the comparison."""
    return {"schema": "mininet-ab/1",
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "base_cmd": base_cmd, "new_cmd": new_cmd, "rounds": rounds, "order": order,
            "base": base_run, "new": new_run, "comparison": result}


def save_json(path, doc, what):
    """doc as indented JSON at path, written atomically."""
    from ..interop.atomic import write_atomically
    data = (json.dumps(doc, indent=2) + "\n").encode()
    write_atomically(path, lambda f: f.write(data), what)


# within one process ------------------------------------------------------------------------
def ab_callables(base_fn, new_fn, rounds=20, min_time=0.01, warmup=1, order="abba"):
    """(base_samples, new_samples): seconds per call of each function, one sample per
    turn, the turns interleaved as schedule(rounds, order). A turn calls its function
    until min_time has passed (at least once) so that short calls are timed over many."""
    if not min_time > 0:
        raise ValueError(f"ab_callables: min_time must be positive seconds, got {min_time}")
    fns = {"base": base_fn, "new": new_fn}
    turns = schedule(rounds, order)
    for _ in range(warmup):
        base_fn()
        new_fn()
    samples = {"base": [], "new": []}
    for side in turns:
        samples[side].append(_turn(fns[side], min_time))
    return samples["base"], samples["new"]


def _turn(fn, min_time):
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return elapsed / calls


def compare_ab(base_cmd, new_cmd, rounds=5, order="abba", alpha=0.01, timeout=None,
               progress=None):
    """run_ab then compare: (base_run, new_run, result)."""
    base_run, new_run = run_ab(base_cmd, new_cmd, rounds, order, timeout, progress)
    return base_run, new_run, compare(base_run, new_run, alpha)
