"""Exchange with other libraries: DLPack and numpy (zero-copy), safetensors files."""
from .dlpack import from_dlpack, from_numpy
from .safetensors import SafetensorsError, load_file, load_metadata, save_file

__all__ = ["SafetensorsError", "from_dlpack", "from_numpy", "load_file", "load_metadata",
           "save_file"]
