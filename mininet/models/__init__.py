"""Models for MNIST and the training loop behind `mininet train`."""
from .mlp import MLP, MLPResNet, SoftmaxRegression, build_model
from .train import evaluate, fit, load_checkpoint, save_checkpoint, train_epoch
from .language import LanguageModel
from .resnet9 import ResNet9
