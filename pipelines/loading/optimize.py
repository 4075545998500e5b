"""What is done once to every loaded model: weights frozen, and the CPU's fast memory layout.

On every device, weights are frozen (`requires_grad=False`). This app never trains, but diffusers loads
parameters that require gradients, and torch picks matmul kernels by that flag even under
`inference_mode`: `at::matmul`'s `should_fold` folds a batched, non-contiguous input (SDXL's linear
`proj_in` on a permuted activation, the VAE's attention) into one copied `mm` when the weight requires
grad, and runs a `bmm` on the strided view when it does not. The two round differently on AVX-512 and AMX CPUs (one level
in a pixel of a tiny SDXL image), so a loaded model ran another kernel than the same weights built in
memory. Frozen, every model runs the kernels of a plain inference pipeline, whatever it was loaded from.

On the CPU, oneDNN runs convolutions far faster on channels-last (NHWC) tensors than on the default
NCHW layout, which it otherwise reorders on every call: measured on this project's 2-core AVX512-BF16
machine, the SD1.5 VAE decode at 512x512 in bf16 went from 14.2 s to 8.2 s, and the UNet's convolutions
shed about a tenth of their time (bench/cpu_full_size.py prints the whole-image effect). The numbers
computed are the same convolutions; only the memory order and oneDNN's kernel choice change.

Also on the CPU, weights are moved to 64-byte-aligned memory. A safetensors file loaded in its own
precision is memory-mapped, so each tensor sits wherever the file put it (8-byte offsets that depend
on the header's length); the CPU kernels take other paths for unaligned data, and the same weights gave
slightly different pictures depending on the file they came from. Aligned, a checkpoint gives the
same bits as the diffusers folder or in-memory model it was written from.

And on the CPU the VAE decoder's upsamplers (nearest 2x, then a 3x3 convolution) run as one transposed
convolution with 4/9 of the multiply-adds (pipelines/speed/upsampling.py): a decode took 0.68x the time.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch

from pipelines.devices import DevicePlan
from pipelines.speed.upsampling import transpose_upsamplers

CONV_COMPONENTS = ("unet", "vae")
WEIGHT_COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2")
ALIGNMENT = 64  # bytes: torch's own CPU allocations are aligned to this


def optimize_module(name: str, module: torch.nn.Module, device: torch.device) -> str | None:
    """Freeze the component, and apply what helps it on this device; returns what was done, or None."""
    done = [f"{frozen} parameters frozen"] if (frozen := freeze(module)) else []
    if device.type == "cpu":
        if name in CONV_COMPONENTS:
            module.to(memory_format=torch.channels_last)  # first: it copies the convolutions, aligned
            done.append("channels-last")
        if moved := align_weights(module):
            done.append(f"{moved} tensors aligned")
        if name == "vae" and (transposed := transpose_upsamplers(module)):
            done.append(f"{transposed} upsamplers as transposed convolutions")
    return f"{name}: {', '.join(done)}" if done else None


def freeze(module: torch.nn.Module) -> int:
    """Set `requires_grad=False` on every parameter that has it; returns how many changed.

    The flag is what matters, not autograd: torch chooses some kernels by it (see the module's docstring).
    """
    changed = [p for p in module.parameters() if p.requires_grad]
    for param in changed:
        param.requires_grad_(False)
    return len(changed)


def align_weights(module: torch.nn.Module) -> int:
    """Copy parameters and buffers at unaligned CPU addresses into fresh memory; returns how many moved.

    Tensors that shared memory before share it after (tied weights stay tied).
    """
    copies: dict[tuple[int, tuple[int, ...], tuple[int, ...], torch.dtype], torch.Tensor] = {}
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        if tensor.device.type != "cpu" or tensor.numel() == 0 or tensor.data_ptr() % ALIGNMENT == 0:
            continue
        key = (tensor.data_ptr(), tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype)
        if key not in copies:
            copies[key] = tensor.data.clone(memory_format=torch.preserve_format)
        tensor.data = copies[key]
    return len(copies)


def optimize_for_device(pipe: Any, plan: DevicePlan) -> list[str]:
    """Optimize every component of a loaded pipeline; returns what was done (for the log)."""
    done = []
    for name in WEIGHT_COMPONENTS:
        module = getattr(pipe, name, None)
        if isinstance(module, torch.nn.Module) and (change := optimize_module(name, module, plan.device)):
            done.append(change)
    return done
