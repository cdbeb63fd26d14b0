"""Datasets, the DataLoader, samplers, collation, transforms, and MNIST/CIFAR/PTB."""
from .collate import default_collate, default_convert
from .dataset import (ChainDataset, ConcatDataset, Dataset, DistributedSampler, IterableDataset,
                      Subset, TensorDataset, random_split)
from .loader import DataLoader
from .sampler import BatchSampler, RandomSampler, Sampler, SequentialSampler, SubsetRandomSampler
from .workers import WorkerInfo, get_worker_info
from .cifar import CIFAR10Dataset, CIFARError
from .errors import DataError
from .mnist import MNISTDataset, MNISTError, data_dir, ensure_mnist, read_idx
from .ptb import Corpus, CorpusError, Dictionary, batchify, get_batch
from .transforms import Normalize, RandomCrop, RandomFlipHorizontal

__all__ = ["DataLoader", "Dataset", "DistributedSampler", "TensorDataset", "CIFAR10Dataset",
           "CIFARError", "MNISTDataset", "DataError", "MNISTError", "data_dir", "Corpus",
           "CorpusError", "Dictionary", "batchify", "get_batch", "ensure_mnist", "read_idx",
           "Normalize", "RandomCrop", "RandomFlipHorizontal", "BatchSampler", "ChainDataset",
           "ConcatDataset", "IterableDataset", "RandomSampler", "Sampler", "SequentialSampler",
           "Subset", "SubsetRandomSampler", "WorkerInfo", "default_collate", "default_convert",
           "get_worker_info", "random_split"]
