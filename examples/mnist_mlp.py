"""Train a two-layer MLP on MNIST with mininet's needle-style API.

    python examples/mnist_mlp.py --data-dir ../shared/data/mnist
    python examples/mnist_mlp.py --tiny          # a few seconds: 3 epochs on 2,000 images

The data folder holds the four standard MNIST files (train-images-idx3-ubyte.gz, ...);
the default is $MININET_DATA, else ~/.cache/mininet/mnist (downloaded once, unless
MININET_OFFLINE=1). Prints one line per epoch and the final test accuracy.
"""
import argparse
import os
import time

import numpy as np

import mininet
from mininet import nn, optim
from mininet.data import DataLoader, MNISTDataset, Subset


def build_model(hidden):
    # nn.Linear stores its weight (in_features, out_features), as needle does
    return nn.Sequential(nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def run_epoch(model, loader, loss_fn, opt=None):
    """One pass over loader; trains when opt is given. Returns (mean loss, accuracy)."""
    model.train(opt is not None)
    total_loss, correct, seen = 0.0, 0, 0
    with mininet.enable_grad() if opt is not None else mininet.no_grad():
        for x, y in loader:
            logits = model(x)
            loss = loss_fn(logits, y)
            if opt is not None:
                opt.zero_grad()
                loss.backward()
                opt.step()
            n = y.shape[0]
            total_loss += loss.item() * n
            correct += int((logits.numpy().argmax(axis=1) == y.numpy()).sum())
            seen += n
    return total_loss / seen, correct / seen


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=os.environ.get("MININET_DATA"),
                   help="folder with the four MNIST files (default: $MININET_DATA)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--train-samples", type=int, default=None,
                   help="train on N images drawn at random (a subset may be sorted by class)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tiny", action="store_true",
                   help="CI mode: 3 epochs on 2,000 training images")
    args = p.parse_args(argv)
    if args.tiny:
        args.epochs, args.train_samples = 3, 2000

    mininet.manual_seed(args.seed)
    train = MNISTDataset.load("train", path=args.data_dir)
    test = MNISTDataset.load("test", path=args.data_dir)
    if args.train_samples is not None:
        pick = np.random.default_rng(args.seed).permutation(len(train))[:args.train_samples]
        train = Subset(train, pick.tolist())
    train_loader = DataLoader(train, batch_size=args.batch_size, shuffle=True)
    test_loader = DataLoader(test, batch_size=1000)

    model = build_model(args.hidden)
    loss_fn = nn.SoftmaxLoss()                 # needle's name; nn.CrossEntropyLoss is the same
    opt = optim.Adam(model.parameters(), lr=args.lr)
    print(f"{len(train)} training and {len(test)} test images, "
          f"{sum(p.numel() for p in model.parameters())} parameters")
    for epoch in range(1, args.epochs + 1):
        start = time.perf_counter()
        train_loss, train_acc = run_epoch(model, train_loader, loss_fn, opt)
        print(f"epoch {epoch}: train loss {train_loss:.4f}, train accuracy {train_acc:.4f} "
              f"({time.perf_counter() - start:.2f} s)")
    _, test_acc = run_epoch(model, test_loader, loss_fn)
    print(f"test accuracy: {test_acc:.4f}")
    return test_acc


if __name__ == "__main__":
    main()
