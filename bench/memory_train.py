"""Peak RSS after each epoch of `mininet train mnist --model mlp` (issue 4's memory target).

Usage: python bench/memory_train.py [DATA_DIR] [EPOCHS]
"""
import sys

from _rss import record_after, report
from mininet import training
from mininet.cli.train import TrainConfig, run

data = sys.argv[1] if len(sys.argv) > 1 else None
epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
peaks = []
record_after(training, "evaluate", peaks)
run(TrainConfig("mnist", "mlp", epochs, data_dir=data, json_out=True))
report(peaks)
