"""Exchange with other libraries: DLPack and numpy (zero-copy), safetensors files,
PyTorch's weights (.pt files and torch-named state dicts)."""
from .dlpack import from_dlpack, from_numpy
from .safetensors import SafetensorsError, load_file, load_metadata, save_file
from .pt_reader import PtError, read_pt, write_pt
from .save import load, save
from .torch_weights import (LoadReport, TorchWeightsError, load_torch_state_dict, save_torch,
                            torch_names, torch_state_dict)

__all__ = ["LoadReport", "PtError", "SafetensorsError", "TorchWeightsError", "from_dlpack",
           "from_numpy", "load", "load_file", "load_metadata", "load_torch_state_dict", "read_pt",
           "save", "save_file", "save_torch", "torch_names", "torch_state_dict", "write_pt"]
