"""Peak RSS after each epoch of `mininet train mnist --model mlp` (issue 4's memory target).

Usage: python bench/memory_train.py [DATA_DIR] [EPOCHS]
"""
import resource
import sys

from mininet.cli.train import run
from mininet.models import train as train_mod

data = sys.argv[1] if len(sys.argv) > 1 else None
epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
peaks = []
original = train_mod.evaluate


def evaluate_and_measure(*a, **k):
    out = original(*a, **k)
    peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return out


train_mod.evaluate = evaluate_and_measure
run("mlp", epochs, 100, 2e-3, "adam", 1e-4, 0, data, None, None, None, True)
for i, mb in enumerate(peaks, 1):
    print(f"epoch {i}: peak RSS {mb:.1f} MiB")
print(f"growth epoch 2 -> {epochs}: {peaks[-1] - peaks[1]:+.1f} MiB")
