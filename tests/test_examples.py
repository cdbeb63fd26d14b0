"""Every script in examples/ runs in its --tiny mode (a fresh interpreter, one thread,
no downloads), exits 0 and prints a figure that shows it learned."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CLI_ENV

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name, *args, timeout=120):
    cmd = [sys.executable, str(EXAMPLES / name), "--tiny", *map(str, args)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, **CLI_ENV}, cwd=EXAMPLES.parent)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{name} hung for {timeout} s")
    assert r.returncode == 0, (r.stdout, r.stderr)
    return r.stdout


def figure(out, label):
    """The number printed after `label:` (the last such line)."""
    found = re.findall(rf"{label}:? ([0-9.]+)", out)
    assert found, f"no {label!r} line in:\n{out}"
    return float(found[-1])


def test_every_example_has_a_test():
    tested = {"mnist_mlp.py", "cifar_resnet9_synthetic.py", "ptb_lstm.py", "custom_op.py",
              "port_from_pytorch.py"}
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_mnist_mlp(mnist_path):
    out = run_example("mnist_mlp.py", "--data-dir", mnist_path)
    assert figure(out, "test accuracy") > 0.8, out


def test_port_from_pytorch(mnist_path, tmp_path):
    out = run_example("port_from_pytorch.py", "--data-dir", mnist_path,
                      "--save-model", tmp_path / "net.pt")
    assert figure(out, "test accuracy") > 0.8, out
    from mininet.interop import read_pt
    weights = read_pt(tmp_path / "net.pt")
    assert tuple(weights["fc2.weight"].shape) == (10, 128)   # torch's (out, in) layout


def test_cifar_resnet9_synthetic():
    out = run_example("cifar_resnet9_synthetic.py")
    losses = [float(v) for v in re.findall(r"epoch \d+: loss ([0-9.]+)", out)]
    assert len(losses) == 2 and losses[-1] < losses[0], out
    assert figure(out, "accuracy on fresh samples") > 0.3, out   # chance is 0.1


def test_ptb_lstm_generated_corpus():
    out = run_example("ptb_lstm.py")
    vocab = int(re.search(r"vocabulary (\d+),", out).group(1))
    assert figure(out, "test perplexity") < vocab / 4, out   # uniform guessing gives vocab


def test_ptb_lstm_data_dir(tmp_path):
    from conftest import SENTENCES, write_corpus
    write_corpus(tmp_path, SENTENCES * 30, SENTENCES * 4, SENTENCES * 4)
    out = run_example("ptb_lstm.py", "--data-dir", tmp_path, "--batch-size", 4, "--bptt", 10)
    assert figure(out, "test perplexity") > 0


def test_custom_op():
    out = run_example("custom_op.py")
    assert "gradient check passed" in out, out
    assert figure(out, "accuracy") > 0.9, out
