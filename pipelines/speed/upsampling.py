"""The VAE decoder's upsamplers on the CPU: nearest 2x upsampling and a 3x3 convolution as one transposed convolution.

Each upsampler repeats every pixel 2x2, then convolves the 4x larger image. An output pixel's 3x3 window
sees only 2x2 distinct input pixels, so the pair is exactly a stride-2 transposed convolution whose 4x4
kernel sums the taps that land on the same input pixel: 16 multiply-adds per output pixel group instead of
36, and no upsampled copy. The three upsamplers hold 28 % of a 512x512 SD decode's multiply-adds; on this
project's 2-core AMX Xeon each ran 2.1-2.2x faster (bf16 and fp32), and a whole decode took 0.68-0.69x
plain diffusers' time (0.97x before; bench/cpu_full_size.py).

Only the rounding differs: the summed taps are rounded once to the weights' dtype (fp32: 1e-6 of the
output's standard deviation; bf16: 0.13 % per layer, below bf16's own step). The UNet keeps its upsamplers:
at its small sizes with 1280 channels oneDNN's transposed convolution measured slower than the pair.
"""

from __future__ import annotations

import types
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.models.upsampling import Upsample2D


def transposed_kernel(weight: torch.Tensor) -> torch.Tensor:
    """The stride-2 4x4 transposed-convolution kernel (in, out, 4, 4) equal to nearest 2x then this 3x3 one.

    Along each axis, output 2i takes input i-1 through tap 0 and input i through taps 1+2; output 2i+1
    takes i through taps 0+1 and i+1 through tap 2. A transposed convolution (stride 2, padding 1) reads
    kernel positions (3, 1) for even outputs and (2, 0) for odd ones, hence the order below.
    """

    def along(t: torch.Tensor, dim: int) -> torch.Tensor:
        tap = t.unbind(dim)
        return torch.stack([tap[2], tap[1] + tap[2], tap[0] + tap[1], tap[0]], dim=dim)

    wide = weight.to(torch.promote_types(weight.dtype, torch.float32))  # the sums rounded once, at the end
    kernel = along(along(wide, 2), 3).transpose(0, 1)
    return kernel.to(weight.dtype).contiguous(memory_format=torch.channels_last)  # oneDNN's fast layout


def _fits(conv: Any) -> bool:
    return (
        isinstance(conv, torch.nn.Conv2d)
        and conv.kernel_size == (3, 3)
        and conv.stride == (1, 1)
        and conv.padding == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
    )


def _conv_of(upsampler: Upsample2D) -> Any:
    return upsampler.conv if upsampler.name == "conv" else upsampler.Conv2d_0


def _kernel_for(upsampler: Upsample2D, conv: torch.nn.Conv2d) -> torch.Tensor:
    """The transposed kernel, kept until the weight is replaced or changed in place (its version moves)."""
    weight = conv.weight
    key = (weight.data_ptr(), weight._version, weight.dtype, weight.device)
    kept = getattr(upsampler, "_easel_transposed", None)
    if kept is None or kept[0] != key:
        with torch.no_grad():
            kept = (key, transposed_kernel(weight.detach()))
        upsampler._easel_transposed = kept
    return kept[1]


def _forward(self: Upsample2D, hidden_states: torch.Tensor, output_size: Any = None, *args, **kwargs) -> torch.Tensor:
    conv = _conv_of(self)
    height, width = hidden_states.shape[-2:]
    doubled = output_size is None or tuple(output_size) == (2 * height, 2 * width)
    if args or kwargs or not doubled or hidden_states.device.type != "cpu":
        return Upsample2D.forward(self, hidden_states, output_size, *args, **kwargs)
    return F.conv_transpose2d(hidden_states, _kernel_for(self, conv), conv.bias, stride=2, padding=1)


def transpose_upsamplers(module: torch.nn.Module) -> int:
    """Run the nearest-upsample-then-conv upsamplers of `module` as transposed convolutions; returns how many."""
    count = 0
    for upsampler in module.modules():
        plain = isinstance(upsampler, Upsample2D) and upsampler.use_conv and upsampler.interpolate
        if plain and upsampler.norm is None and not upsampler.use_conv_transpose and _fits(_conv_of(upsampler)):
            upsampler.forward = types.MethodType(_forward, upsampler)
            if not _conv_of(upsampler).weight.is_meta:
                _kernel_for(upsampler, _conv_of(upsampler))  # now, not in the first decode
            count += 1
    return count
