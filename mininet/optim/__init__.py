"""Optimizers (optimizers.py) and learning-rate schedules (lr_scheduler.py, also reached as
mininet.optim.lr_scheduler, as torch's)."""
from . import lr_scheduler
from .lr_scheduler import (ConstantLR, CosineAnnealingLR, ExponentialLR, LambdaLR, LinearLR,
                           LRScheduler, MultiStepLR, OneCycleLR, PolynomialLR, SequentialLR,
                           StepLR)
from .lbfgs import LBFGS
from .optimizers import (SGD, Adadelta, Adagrad, Adam, AdamW, Optimizer, RMSprop, check_count,
                         check_lr, clip_grad_norm)

__all__ = ["SGD", "Adadelta", "Adagrad", "Adam", "AdamW", "ConstantLR", "CosineAnnealingLR",
           "ExponentialLR", "LBFGS", "LRScheduler", "LambdaLR", "LinearLR", "MultiStepLR",
           "OneCycleLR", "Optimizer", "PolynomialLR", "RMSprop", "SequentialLR", "StepLR",
           "check_count", "check_lr", "clip_grad_norm", "lr_scheduler"]
