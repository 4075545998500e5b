"""Choosing the device and the precision.

The defaults matter most for people without a GPU: on a CPU with native bfloat16 instructions
(AVX512-BF16 or AMX) bf16 halves the time per step, so it is the default there; elsewhere fp32.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

import torch

_DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}


@dataclass(frozen=True)
class DevicePlan:
    device: torch.device
    dtype: torch.dtype
    reason: str  # one line for the log and the UI: why this choice

    @property
    def precision(self) -> str:
        return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[self.dtype]

    @property
    def label(self) -> str:
        return f"{self.device.type} {self.precision}"


def cpu_flags() -> set[str]:
    """CPU feature flags as /proc/cpuinfo names them (empty where that file does not exist)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_has_native_bf16(flags: set[str] | None = None) -> bool:
    flags = cpu_flags() if flags is None else flags
    if flags & {"avx512_bf16", "amx_bf16"}:
        return True
    # Apple silicon (M2 and newer) has bf16 in hardware, but torch's CPU kernels gain little there.
    return False


def choose(device: str = "auto", precision: str = "auto") -> DevicePlan:
    """Pick a device and dtype; explicit choices win, 'auto' follows the hardware."""
    dev = _choose_device(device)
    if precision != "auto":
        if precision not in _DTYPES:
            raise ValueError(f"Unknown precision {precision!r}: use auto, fp32, fp16 or bf16.")
        dtype = _DTYPES[precision]
        if dev.type == "cpu" and dtype == torch.float16:
            raise ValueError("fp16 is not usable on the CPU (many CPU kernels lack it); use bf16 or fp32.")
        return DevicePlan(dev, dtype, f"{precision} chosen on the command line")
    if dev.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return DevicePlan(dev, torch.bfloat16, "CUDA GPU with bfloat16 support")
        return DevicePlan(dev, torch.float16, "CUDA GPU")
    if dev.type == "mps":
        return DevicePlan(dev, torch.float16, "Apple GPU (MPS)")
    if cpu_has_native_bf16():
        return DevicePlan(dev, torch.bfloat16, "CPU with native bfloat16 (avx512_bf16/AMX): bf16 is about twice as fast")
    return DevicePlan(dev, torch.float32, f"CPU without native bfloat16 ({platform.machine()}): fp32")


def _choose_device(device: str) -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but torch sees no CUDA GPU (is the CUDA build of torch installed?).")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("--device mps was asked for, but MPS is not available on this machine.")
    return dev


def free_memory_bytes(device: torch.device) -> int | None:
    """Free memory on the device, for the model cache budget; None when unknown."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # psutil is optional
        return None


def total_memory_bytes(device: torch.device) -> int | None:
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except Exception:
        pages = _sysconf("SC_PHYS_PAGES")
        size = _sysconf("SC_PAGE_SIZE")
        return pages * size if pages and size else None


def _sysconf(name: str) -> int | None:
    import os

    try:
        return int(os.sysconf(name))
    except (ValueError, OSError, AttributeError):
        return None
