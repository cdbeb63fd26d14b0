"""Modules (needle's names, PyTorch's habits)."""
from .module import Identity, Module, Parameter, Residual, Sequential
from .layers import (AvgPool2d, BatchNorm1d, BatchNorm2d, Conv, Conv2d, CrossEntropyLoss, Dropout,
                     Flatten, LayerNorm1d, Linear, MaxPool2d, MSELoss, ReLU, Sigmoid, SoftmaxLoss,
                     Tanh)
from .sequence import GRU, LSTM, RNN, Embedding, GRUCell, LSTMCell, RNNCell
from .attention import MultiHeadAttention, Transformer, TransformerLayer
from .checkpoint import Checkpoint, checkpoint
from . import functional
