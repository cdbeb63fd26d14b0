"""Peak RSS after each epoch of `mininet train ptb --model lstm` on a generated corpus
(issue 13's memory target: flat over epochs).

Usage: python bench/memory_lm.py [EPOCHS]
"""
import resource
import sys
import tempfile
from pathlib import Path

import numpy as np

from mininet.cli import train_lm

epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
rng = np.random.default_rng(0)
words = [f"w{i}" for i in range(2000)]
folder = Path(tempfile.mkdtemp())
for split, lines in (("train", 2000), ("valid", 200), ("test", 200)):
    text = "\n".join(" ".join(rng.choice(words, 20)) for _ in range(lines))
    (folder / f"{split}.txt").write_text(text + "\n")
peaks = []
original = train_lm.evaluate_lm


def evaluate_and_measure(*a, **k):
    out = original(*a, **k)
    peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return out


train_lm.evaluate_lm = evaluate_and_measure
train_lm.run_lm("lstm", epochs, 20, 2e-3, "adam", 0.0, 0, str(folder), None, None, None, True,
                35, 0.25, 200, 200, 2)
for i, mb in enumerate(peaks, 1):
    print(f"epoch {i}: peak RSS {mb:.1f} MiB")
print(f"growth epoch 2 -> {epochs}: {peaks[-1] - peaks[1]:+.1f} MiB")
