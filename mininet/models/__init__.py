"""Models by name (registry: the one table of `mininet train` and `mininet bench train`,
each with its PyTorch twin) and the classes behind them. The training loop and checkpoints
live in mininet.training; they are re-exported here for older imports."""
from .mlp import CNN, MLP, CifarCNN, MLPResNet, SoftmaxRegression, build_model
from .language import LanguageModel
from .resnet9 import ResNet9
from . import registry
from .train import evaluate, fit, load_checkpoint, save_checkpoint, train_epoch

__all__ = ["CNN", "MLP", "CifarCNN", "LanguageModel", "MLPResNet", "ResNet9", "SoftmaxRegression",
           "build_model", "evaluate", "fit", "load_checkpoint", "registry", "save_checkpoint",
           "train_epoch"]
