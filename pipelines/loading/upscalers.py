"""Loading upscaler networks (ESRGAN, Real-ESRGAN, Compact, SwinIR, HAT, DAT, ...) with spandrel.

The tensors are read by us, never by code inside the file: `.safetensors` as they are, `.pth`/`.pt` with
`torch.load(weights_only=True)` (probe.load_pickle_state_dict), which refuses pickles holding anything but
tensors. spandrel then recognises the architecture from the key names and builds the network. Loaded
networks are frozen and kept (a few, least recently used first out), since users upscale several images
in a row with the same one.
"""

from __future__ import annotations

import collections
import threading
from pathlib import Path
from typing import Any

import torch

from pipelines.errors import ModelLoadError, UnsafeCheckpoint
from pipelines.loading.probe import SAFETENSORS_SUFFIXES, load_pickle_state_dict
from pipelines.types import ModelRecord


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        from safetensors.torch import load_file

        return load_file(str(path))
    return load_pickle_state_dict(path)


def load_upscaler(path: Path, device: torch.device, dtype: torch.dtype = torch.float32) -> Any:
    """The file's network as a spandrel ImageModelDescriptor, frozen, on `device` (fp32 unless it supports `dtype`)."""
    try:
        import spandrel
    except Exception as exc:  # noqa: BLE001 - torchvision that does not match torch fails in many ways
        raise ModelLoadError(f"Upscaler models need the spandrel package, which could not be imported: {exc}") from exc
    try:
        descriptor = spandrel.ModelLoader().load_from_state_dict(read_state_dict(path))
    except UnsafeCheckpoint:
        raise
    except spandrel.UnsupportedModelError as exc:
        raise ModelLoadError(f"{path.name} is not an upscaler architecture spandrel knows.") from exc
    except Exception as exc:  # noqa: BLE001 - shapes that do not fit the detected architecture, damaged files
        raise ModelLoadError(f"Could not load the upscaler {path.name}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise ModelLoadError(f"{path.name} is a {descriptor.architecture.name} model, not an upscaler.")
    use = dtype
    if dtype == torch.float16 and not descriptor.supports_half or dtype == torch.bfloat16 and not descriptor.supports_bfloat16:
        use = torch.float32
    if device.type == "cpu":
        use = torch.float32  # half precision convolutions are slow or missing on CPUs
    descriptor.model.requires_grad_(False)
    descriptor.to(device, use)
    descriptor.eval()
    return descriptor


class UpscalerLoader:
    """Loaded upscaler networks by file (path, size, mtime), the `capacity` most recently used kept."""

    def __init__(self, device: torch.device, dtype: torch.dtype = torch.float32, capacity: int = 2):
        self.device = device
        self.dtype = dtype
        self.capacity = capacity
        self.loads = 0
        self._lock = threading.Lock()
        self._loaded: collections.OrderedDict[tuple, Any] = collections.OrderedDict()

    def get(self, record: ModelRecord) -> Any:
        assert record.path is not None
        stat = record.path.stat()
        key = (str(record.path.resolve()), stat.st_size, stat.st_mtime_ns)
        with self._lock:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key]
        descriptor = load_upscaler(record.path, self.device, self.dtype)
        self.loads += 1
        with self._lock:
            self._loaded[key] = descriptor
            while len(self._loaded) > self.capacity:
                self._loaded.popitem(last=False)
        return descriptor

    def clear(self) -> None:
        with self._lock:
            self._loaded.clear()
