"""A PyTorch-style MNIST training script, running on mininet with its imports changed.

    python examples/port_from_pytorch.py --data-dir ../shared/data/mnist
    python examples/port_from_pytorch.py --tiny --data-dir ../shared/data/mnist   # CI: seconds

Everything below the imports is written as for PyTorch: an nn.Module with Conv2d,
Dropout and Linear layers, F.relu / F.max_pool2d / F.log_softmax / F.nll_loss,
torch.flatten, TensorDataset and DataLoader from torch.utils.data, Adadelta with a
StepLR schedule, model.train() / model.eval(), torch.no_grad(), .to(device), .item(),
argmax(dim=1, keepdim=True), eq / view_as. Two lines differ from the PyTorch original:
the images come from the MNIST files as numpy arrays (no torchvision), and the weights
are saved with mininet.interop.save_torch (a .pt file that torch.load reads) instead of
torch.save.

Differences that matter when porting, all of which this script avoids: nn.Linear
stores its weight as (in_features, out_features) (F.linear takes torch's (out, in));
dtypes are float32, float64, int64 and bool only.
"""
import argparse
import gzip
import os
from pathlib import Path

import numpy as np

import mininet as torch                       # was: import torch
import mininet.nn as nn                       # was: import torch.nn as nn
import mininet.nn.functional as F             # was: import torch.nn.functional as F
import mininet.optim as optim                 # was: import torch.optim as optim
from mininet.optim.lr_scheduler import StepLR
from mininet.utils.data import DataLoader, TensorDataset
from mininet.interop import save_torch


class Net(nn.Module):
    def __init__(self, width=32):
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, 1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(2 * width * 12 * 12, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = self.dropout1(F.max_pool2d(x, 2))
        x = torch.flatten(x, 1)
        x = self.dropout2(F.relu(self.fc1(x)))
        return F.log_softmax(self.fc2(x), dim=1)


def train(args, model, device, loader, optimizer, epoch):
    model.train()
    for batch_idx, (data, target) in enumerate(loader):
        data, target = data.to(device), target.to(device)
        optimizer.zero_grad()
        loss = F.nll_loss(model(data), target)
        loss.backward()
        optimizer.step()
        if batch_idx % args.log_interval == 0:
            print(f"epoch {epoch} [{batch_idx * len(data)}/{len(loader.dataset)}] "
                  f"loss {loss.item():.4f}")


def test(model, device, loader):
    model.eval()
    test_loss, correct = 0.0, 0
    with torch.no_grad():
        for data, target in loader:
            data, target = data.to(device), target.to(device)
            output = model(data)
            test_loss += F.nll_loss(output, target, reduction="sum").item()
            pred = output.argmax(dim=1, keepdim=True)
            correct += pred.eq(target.view_as(pred)).sum().item()
    n = len(loader.dataset)
    print(f"test: average loss {test_loss / n:.4f}, accuracy {correct}/{n}")
    print(f"test accuracy: {correct / n:.4f}")
    return correct / n


def read_mnist(folder, split):
    """(images (N, 1, 28, 28) float32 normalised as the PyTorch example does, labels (N,)
    int64) from the standard gzipped IDX files."""
    prefix = "train" if split == "train" else "t10k"
    with gzip.open(Path(folder) / f"{prefix}-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
    with gzip.open(Path(folder) / f"{prefix}-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    images = (images.astype(np.float32) / 255.0 - 0.1307) / 0.3081
    return images, labels.astype(np.int64)


def subset(images, labels, n, seed):
    pick = np.random.default_rng(seed).permutation(len(labels))[:n]
    return images[pick], labels[pick]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("MININET_DATA"),
                        help="folder with the four MNIST files (default: $MININET_DATA)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--test-batch-size", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1.0)
    parser.add_argument("--gamma", type=float, default=0.7)
    parser.add_argument("--width", type=int, default=32, help="channels of the first conv")
    parser.add_argument("--train-samples", type=int, default=None)
    parser.add_argument("--test-samples", type=int, default=None)
    parser.add_argument("--no-accel", action="store_true", help="stay on the CPU")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--log-interval", type=int, default=20)
    parser.add_argument("--save-model", default=None, metavar="PATH",
                        help="write the weights as a PyTorch .pt file")
    parser.add_argument("--tiny", action="store_true",
                        help="CI mode: 2 epochs on 1,000 images, a half-width net, "
                             "2,000 test images")
    args = parser.parse_args(argv)
    if args.tiny:
        args.epochs, args.width, args.train_samples, args.test_samples = 2, 16, 1000, 2000
    if args.data_dir is None:
        parser.error("--data-dir (or $MININET_DATA): the folder with the four MNIST files")

    torch.manual_seed(args.seed)
    use_accel = not args.no_accel and torch.accelerator.is_available()
    device = torch.accelerator.current_accelerator() if use_accel else torch.device("cpu")

    x_train, y_train = read_mnist(args.data_dir, "train")
    x_test, y_test = read_mnist(args.data_dir, "test")
    if args.train_samples:
        x_train, y_train = subset(x_train, y_train, args.train_samples, args.seed)
    if args.test_samples:
        x_test, y_test = subset(x_test, y_test, args.test_samples, args.seed)
    train_loader = DataLoader(TensorDataset(torch.from_numpy(x_train), torch.from_numpy(y_train)),
                              batch_size=args.batch_size, shuffle=True)
    test_loader = DataLoader(TensorDataset(torch.from_numpy(x_test), torch.from_numpy(y_test)),
                             batch_size=args.test_batch_size)

    model = Net(args.width).to(device)
    optimizer = optim.Adadelta(model.parameters(), lr=args.lr)
    scheduler = StepLR(optimizer, step_size=1, gamma=args.gamma)
    for epoch in range(1, args.epochs + 1):
        train(args, model, device, train_loader, optimizer, epoch)
        test(model, device, test_loader)
        scheduler.step()
    if args.save_model:
        save_torch(model, args.save_model)
        print(f"weights written to {args.save_model} (torch.load reads them)")


if __name__ == "__main__":
    main()
