"""Peak RSS after each epoch of `mininet train ptb --model lstm` on a generated corpus
(issue 13's memory target: flat over epochs).

Usage: python bench/memory_lm.py [EPOCHS]
"""
import sys
import tempfile
from pathlib import Path

import numpy as np

from _rss import record_after, report
from mininet.cli import train_lm
from mininet.cli.train import TrainConfig

epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
rng = np.random.default_rng(0)
words = [f"w{i}" for i in range(2000)]
folder = Path(tempfile.mkdtemp())
for split, lines in (("train", 2000), ("valid", 200), ("test", 200)):
    text = "\n".join(" ".join(rng.choice(words, 20)) for _ in range(lines))
    (folder / f"{split}.txt").write_text(text + "\n")
peaks = []
record_after(train_lm, "evaluate_lm", peaks)
train_lm.run_lm(TrainConfig("ptb", "lstm", epochs, batch_size=20, weight_decay=0.0,
                            data_dir=str(folder), json_out=True))
report(peaks)
