"""The VAE decoder's upsamplers as transposed convolutions: the same function as nearest 2x then the 3x3 convolution."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from diffusers.models.upsampling import Upsample2D

from pipelines.speed.upsampling import transpose_upsamplers, transposed_kernel

# The SD VAE decoder's upsamplers at a 512x512 decode: (channels, input size); smaller inputs keep tests quick.
SD_UPSAMPLERS = [(512, 16), (512, 24), (256, 32)]


def plain(upsampler: Upsample2D, x: torch.Tensor) -> torch.Tensor:
    return upsampler.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


@pytest.mark.parametrize(("channels", "size"), SD_UPSAMPLERS)
def test_the_transposed_kernel_is_the_same_function_in_float64(channels, size):
    """In float64 nothing rounds visibly: any wrong tap or offset would show as a difference of order one."""
    torch.manual_seed(channels + size)
    upsampler = Upsample2D(channels, use_conv=True, out_channels=channels).double().requires_grad_(False)
    x = torch.randn(1, channels, size, size + 3, dtype=torch.float64)  # not square: rows and columns each checked
    expected = plain(upsampler, x)
    actual = F.conv_transpose2d(x, transposed_kernel(upsampler.conv.weight.detach()), upsampler.conv.bias, stride=2, padding=1)
    assert actual.shape == expected.shape
    assert (actual - expected).abs().max() < 1e-10 * expected.abs().max()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_vae_decode_with_transposed_upsamplers_matches_the_plain_decode(dtype):
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=(32, 64, 64, 64),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        norm_num_groups=32,
    ).to(dtype)
    vae.eval().requires_grad_(False)
    reference = copy.deepcopy(vae)
    assert transpose_upsamplers(vae) == 3  # SD's decoder layout: three 2x upsamplers
    latents = torch.randn(1, 4, 16, 16).to(dtype)
    with torch.inference_mode():
        expected = reference.decode(latents).sample.float()
        actual = vae.decode(latents).sample.float()
    deviation = float((actual - expected).abs().mean() / expected.std())
    # fp32: only the order of additions differs; bf16: the summed taps round once more (0.13 % per layer)
    assert deviation < (1e-5 if dtype == torch.float32 else 2e-2), deviation
    assert not torch.equal(actual, expected) or dtype == torch.float32  # bf16 did run the other kernel


def test_a_weight_changed_in_place_or_replaced_gets_a_new_kernel():
    torch.manual_seed(1)
    upsampler = Upsample2D(8, use_conv=True, out_channels=8)
    model = torch.nn.Sequential(upsampler)
    transpose_upsamplers(model)
    x = torch.randn(1, 8, 6, 6)
    with torch.inference_mode():
        upsampler(x)
        with torch.no_grad():
            upsampler.conv.weight.mul_(-2.0)  # in place: the version counter moves
        assert torch.allclose(upsampler(x), plain(upsampler, x), atol=1e-5)
        upsampler.conv.weight.data = torch.randn_like(upsampler.conv.weight)  # replaced: another tensor
        assert torch.allclose(upsampler(x), plain(upsampler, x), atol=1e-5)


def test_sizes_other_than_double_and_other_upsamplers_keep_the_plain_path():
    torch.manual_seed(2)
    upsampler = Upsample2D(8, use_conv=True, out_channels=8)
    transposed_conv = Upsample2D(8, use_conv_transpose=True, out_channels=8)
    no_conv = Upsample2D(8, use_conv=False)
    assert transpose_upsamplers(torch.nn.ModuleList([upsampler, transposed_conv, no_conv])) == 1
    x = torch.randn(1, 8, 5, 5)
    with torch.inference_mode():
        odd = upsampler(x, output_size=(9, 11))  # the UNet asks for such sizes after odd latents
        expected = upsampler.conv(F.interpolate(x, size=(9, 11), mode="nearest"))
    assert torch.equal(odd, expected)
