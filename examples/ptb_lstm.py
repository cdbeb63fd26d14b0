"""A word-level LSTM language model with truncated backpropagation through time.

    python examples/ptb_lstm.py --data-dir ~/ptb   # train/valid/test.txt or PTB's ptb.*.txt
    python examples/ptb_lstm.py                     # a corpus generated from a toy grammar
    python examples/ptb_lstm.py --tiny              # CI: a few seconds

Without --data-dir (or $MININET_PTB_DATA) the script writes a corpus of sentences from
a small grammar into a temporary folder, so it runs anywhere. Prints the training
perplexity per epoch and the validation and test perplexity; a model that learned
something ends far below the vocabulary size (what guessing uniformly gives).
"""
import argparse
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np

import mininet
from mininet import nn, optim
from mininet.data import Corpus, batchify, get_batch

SUBJECTS = ["the cat", "a dog", "the old man", "my sister", "the bird", "a child", "the teacher"]
VERBS = ["sees", "likes", "follows", "finds", "hears", "paints", "feeds"]
OBJECTS = ["the ball", "a tree", "the river", "some bread", "the moon", "a small house"]
ENDINGS = ["", "today", "every morning", "in the park", "at night"]


def write_toy_corpus(folder, sentences=(4000, 400, 400), seed=0):
    """train.txt, valid.txt, test.txt: one generated sentence a line."""
    rng = np.random.default_rng(seed)
    for name, n in zip(("train", "valid", "test"), sentences):
        lines = []
        for _ in range(n):
            words = [rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS),
                     rng.choice(ENDINGS)]
            lines.append(" ".join(w for w in words if w))
        (Path(folder) / f"{name}.txt").write_text("\n".join(lines) + "\n")
    return folder


class WordLM(nn.Module):
    """Embedding -> LSTM -> Dropout -> Linear. forward(x (seq_len, batch) ids, state) ->
    (logits (seq_len * batch, vocab), state)."""

    def __init__(self, vocab, embedding_size, hidden_size, num_layers, dropout):
        super().__init__()
        self.embed = nn.Embedding(vocab, embedding_size)
        self.lstm = nn.LSTM(embedding_size, hidden_size, num_layers)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_size, vocab)

    def forward(self, x, state=None):
        h, state = self.lstm(self.drop(self.embed(x)), state)
        seq_len, batch, hidden = h.shape
        return self.out(self.drop(h).reshape((seq_len * batch, hidden))), state


def detach(state):
    """Cut the graph between windows: truncated BPTT keeps the values, not the history."""
    return None if state is None else tuple(s.detach() for s in state)


def run_epoch(model, batches, bptt, loss_fn, opt=None, clip=0.25):
    """Mean loss per token over the batchified stream; trains when opt is given."""
    model.train(opt is not None)
    state, total, tokens = None, 0.0, 0
    for i in range(0, len(batches) - 1, bptt):
        x, y = get_batch(batches, i, bptt)
        if opt is None:
            with mininet.no_grad():
                logits, state = model(x, state)
                loss = loss_fn(logits, y)
        else:
            state = detach(state)
            logits, state = model(x, state)
            loss = loss_fn(logits, y)
            opt.zero_grad()
            loss.backward()
            optim.clip_grad_norm(model.parameters(), clip)
            opt.step()
        total += loss.item() * y.shape[0]
        tokens += y.shape[0]
    return total / tokens


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=os.environ.get("MININET_PTB_DATA"),
                   help="folder with train/valid/test text (default: $MININET_PTB_DATA, else a "
                        "generated toy corpus)")
    p.add_argument("--max-lines", type=int, default=None, help="read only the first N lines a file")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=20)
    p.add_argument("--bptt", type=int, default=35)
    p.add_argument("--embedding-size", type=int, default=64)
    p.add_argument("--hidden-size", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tiny", action="store_true",
                   help="CI mode: 2 epochs, a one-layer model, the generated corpus cut short")
    args = p.parse_args(argv)
    if args.tiny:
        args.epochs, args.layers, args.max_lines = 2, 1, 1500

    mininet.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.data_dir or write_toy_corpus(tmp, seed=args.seed)
        corpus = Corpus(folder, max_lines=args.max_lines, download=False)
    vocab = len(corpus.dictionary)
    train = batchify(corpus.train, args.batch_size)
    valid = batchify(corpus.valid, 10)
    test = batchify(corpus.test, 10)
    print(f"vocabulary {vocab}, {len(corpus.train)} training tokens")

    model = WordLM(vocab, args.embedding_size, args.hidden_size, args.layers, args.dropout)
    opt = optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(1, args.epochs + 1):
        start = time.perf_counter()
        train_loss = run_epoch(model, train, args.bptt, loss_fn, opt)
        valid_loss = run_epoch(model, valid, args.bptt, loss_fn)
        print(f"epoch {epoch}: train perplexity {math.exp(train_loss):.2f}, valid perplexity "
              f"{math.exp(valid_loss):.2f} ({time.perf_counter() - start:.1f} s)")
    print(f"test perplexity: {math.exp(run_epoch(model, test, args.bptt, loss_fn)):.2f} "
          f"(vocabulary {vocab})")


if __name__ == "__main__":
    main()
