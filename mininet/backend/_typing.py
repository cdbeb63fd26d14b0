"""Type aliases for the public API's annotations (mypy: `make typecheck`). Modules import
them with `from __future__ import annotations`, so none is evaluated at run time."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, TypeAlias, Union

if TYPE_CHECKING:
    import numpy as np

    from .device import Device

# a dtype as mininet takes it: "float32", np.float32, np.dtype("float32"), mininet.float32
DTypeLike: TypeAlias = Union[str, "np.dtype[Any]", type, None]
# a device: "cpu", "cuda", "cuda:1", or a Device
DeviceLike: TypeAlias = Union[str, "Device", None]
# a file path
PathLike: TypeAlias = Union[str, "os.PathLike[str]"]
