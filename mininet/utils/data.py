"""torch.utils.data's names (re-exported from mininet.data), so `import mininet as torch`
scripts find torch.utils.data.DataLoader, Dataset, random_split, ..."""
from ..data import (BatchSampler, ChainDataset, ConcatDataset, DataLoader, Dataset,
                    DistributedSampler, IterableDataset, RandomSampler, Sampler,
                    SequentialSampler, Subset, SubsetRandomSampler, TensorDataset, WorkerInfo,
                    default_collate, default_convert, get_worker_info, random_split)

__all__ = ["BatchSampler", "ChainDataset", "ConcatDataset", "DataLoader", "Dataset",
           "DistributedSampler", "IterableDataset", "RandomSampler", "Sampler",
           "SequentialSampler", "Subset", "SubsetRandomSampler", "TensorDataset", "WorkerInfo",
           "default_collate", "default_convert", "get_worker_info", "random_split"]
