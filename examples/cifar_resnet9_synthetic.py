"""Train the course's ResNet9 on random CIFAR-shaped data (3x32x32 images, 10 classes).

    python examples/cifar_resnet9_synthetic.py                # 512 images, 3 epochs
    python examples/cifar_resnet9_synthetic.py --tiny         # CI: 128 images, 2 epochs

No download: each class is a fixed random pattern and every image is its class's
pattern plus noise, so the network has something to learn and the loss must fall.
Prints the loss per epoch, images per second and the accuracy on fresh samples. For
real CIFAR-10 use `mininet train cifar10` or mininet.data.CIFAR10Dataset.
"""
import argparse
import time

import numpy as np

import mininet
from mininet import nn, optim
from mininet.data import DataLoader, TensorDataset
from mininet.models import ResNet9


def synthetic_cifar(n, rng, patterns, noise=1.0):
    """n images (n, 3, 32, 32) float32 and their labels (n,) int64."""
    labels = rng.integers(0, len(patterns), size=n)
    images = patterns[labels] + noise * rng.standard_normal((n, 3, 32, 32))
    return images.astype(np.float32), labels.astype(np.int64)


def evaluate(model, x, y):
    model.eval()
    with mininet.no_grad():
        logits = model(mininet.tensor(x))
    return float((logits.numpy().argmax(axis=1) == y).mean())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=512)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tiny", action="store_true", help="CI mode: 128 images, 2 epochs")
    args = p.parse_args(argv)
    if args.tiny:
        args.samples, args.epochs = 128, 2

    mininet.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    patterns = rng.standard_normal((10, 3, 32, 32))
    x, y = synthetic_cifar(args.samples, rng, patterns)
    loader = DataLoader(TensorDataset(mininet.from_numpy(x), mininet.from_numpy(y)),
                        batch_size=args.batch_size, shuffle=True)

    model = ResNet9()
    opt = optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
    steps = args.epochs * len(loader)
    schedule = optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(1, args.epochs + 1):
        model.train()
        start, total, seen = time.perf_counter(), 0.0, 0
        for xb, yb in loader:
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            schedule.step()
            total += loss.item() * yb.shape[0]
            seen += yb.shape[0]
        elapsed = time.perf_counter() - start
        print(f"epoch {epoch}: loss {total / seen:.4f}, {seen / elapsed:.0f} images/s")
    x_new, y_new = synthetic_cifar(256, rng, patterns)
    print(f"accuracy on fresh samples: {evaluate(model, x_new, y_new):.4f}")


if __name__ == "__main__":
    main()
