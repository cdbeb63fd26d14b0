"""Modules (needle's names, PyTorch's habits)."""
from .module import Identity, Module, Parameter, Residual, Sequential
from .layers import (BatchNorm1d, CrossEntropyLoss, Dropout, Flatten, LayerNorm1d, Linear, MSELoss,
                     ReLU, Sigmoid, SoftmaxLoss, Tanh)
