"""Modules (needle's names, PyTorch's habits)."""
from .module import Identity, Module, ModelSummary, Parameter, Residual, StateDictError
from .container import ModuleDict, ModuleList, Sequential
from .layers import (AvgPool2d, Conv, Conv2d, Dropout, Dropout2d, Flatten, Linear, MaxPool2d,
                     Unflatten)
from .activation import (ELU, GELU, LeakyReLU, LogSoftmax, ReLU, Sigmoid, SiLU, Softmax, Softplus,
                         Tanh)
from .norm import BatchNorm1d, BatchNorm2d, GroupNorm, LayerNorm, LayerNorm1d
from .loss import (BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, L1Loss, MSELoss, NLLLoss,
                   SmoothL1Loss, SoftmaxLoss)
from .sequence import GRU, LSTM, RNN, Embedding, GRUCell, LSTMCell, RNNCell
from .attention import MultiHeadAttention, Transformer, TransformerLayer
from .checkpoint import Checkpoint, checkpoint
from . import functional, init
from . import utils
from .utils.fusion import ConvReLU2d
