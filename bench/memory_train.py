"""Peak RSS after each epoch of `mininet train mnist --model mlp` (issue 4's memory target).

Usage: python bench/memory_train.py [DATA_DIR] [EPOCHS]
"""
import sys

from _rss import record_after, report
from mininet.cli.train import run
from mininet.models import train as train_mod

data = sys.argv[1] if len(sys.argv) > 1 else None
epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
peaks = []
record_after(train_mod, "evaluate", peaks)
run("mlp", epochs, 100, 2e-3, "adam", 1e-4, 0, data, None, None, None, True)
report(peaks)
