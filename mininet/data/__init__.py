"""Datasets, the DataLoader, transforms, and MNIST."""
from .dataset import DataLoader, Dataset, DistributedSampler, TensorDataset
from .cifar import CIFAR10Dataset, CIFARError
from .errors import DataError
from .mnist import MNISTDataset, MNISTError, data_dir, ensure_mnist, read_idx
from .ptb import Corpus, CorpusError, Dictionary, batchify, get_batch
from .transforms import Normalize, RandomCrop, RandomFlipHorizontal

__all__ = ["DataLoader", "Dataset", "DistributedSampler", "TensorDataset", "CIFAR10Dataset", "CIFARError", "MNISTDataset",
           "DataError", "MNISTError", "data_dir", "Corpus", "CorpusError", "Dictionary", "batchify", "get_batch",
           "ensure_mnist", "read_idx", "Normalize", "RandomCrop", "RandomFlipHorizontal"]
