"""Inpainting: diffusers' own `StableDiffusion[XL]InpaintPipeline`, built with `from_pipe` over the loaded model's
modules as img2img.py builds its pipelines, so LoRAs, the VAE override, the step callback and the refiner work
unchanged. Any checkpoint inpaints: a normal one (4-channel UNet) by diffusers' masked latent blending, an
inpainting one (9-channel UNet: latents, mask, masked picture) by its own conditioning. An inpainting checkpoint
also makes pictures from text (A1111 does so: the whole picture masked, a blank grey picture) and varies them
(the whole picture masked), since its UNet needs the mask and the masked picture in every pass.

Seeds. diffusers' inpaint pipelines draw from the generator in this order: the VAE sample of the picture (a
4-channel UNet, or a strength below 1), the start noise, the VAE sample of the masked picture; then the
sampler's own. Easel keeps that order and draws each on the CPU in fp32 (img2img.encode), so on the CPU in fp32
the result is plain diffusers' bit for bit, and a seed means the same picture on any device.

With a 4-channel UNet diffusers still encodes the masked picture, which only a 9-channel UNet reads: Easel draws
the random numbers that encode would draw (so the generator goes on the same) and skips the encode itself, one
VAE encoder pass less per picture.

A1111's latent fills are done where diffusers makes the start latents: "latent noise" puts the start noise
itself in the masked area of the picture's latents (A1111 draws that noise from the same seed), "latent
nothing" zeros. A1111's initial noise multiplier scales the start noise.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from PIL import Image

from pipelines.generation.img2img import encode, task_pipe
from pipelines.generation.masking import Fill
from pipelines.loading.loader import LoadedModel

INPAINT_CHANNELS = 9  # latents (4) + mask (1) + masked picture's latents (4)


class _MaskedStart:
    """diffusers' inpaint prepare_latents and VAE sampling, with the draws on the CPU in fp32 and A1111's latent fills."""

    _easel_fill: Fill = Fill.ORIGINAL
    _easel_noise_multiplier: float = 1.0
    _easel_mask: torch.Tensor | None = None  # (1, 1, H, W) in [0, 1]: the mask the pipeline is given, in pixels

    def _encode_vae_image(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return encode(self, image.float(), generator)

    def prepare_latents(
        self,
        batch_size,
        num_channels_latents,
        height,
        width,
        dtype,
        device,
        generator,
        latents=None,
        image=None,
        timestep=None,
        is_strength_max=True,
        add_noise=True,
        return_noise=False,
        return_image_latents=False,
    ):
        if latents is not None:
            raise ValueError("Easel hands the inpaint pipelines a picture, never start latents")
        scale = self.vae_scale_factor  # type: ignore[attr-defined]
        shape = (batch_size, num_channels_latents, int(height) // scale, int(width) // scale)
        image_latents = None
        if return_image_latents or not is_strength_max:
            image_latents = image.to(device, dtype) if image.shape[1] == 4 else self._encode_vae_image(image, generator)
            image_latents = image_latents.to(device, dtype).repeat(batch_size // image_latents.shape[0], 1, 1, 1)
        start = torch.randn(shape, generator=generator, dtype=torch.float32).to(device, dtype)
        noise = start * self._easel_noise_multiplier
        if image_latents is not None and self._easel_fill.in_latents and self._easel_mask is not None:
            area = torch.nn.functional.interpolate(self._easel_mask.float(), size=shape[-2:])  # as diffusers scales it
            area = (area >= 0.5).to(device, dtype)  # diffusers makes the mask binary
            fill = start if self._easel_fill is Fill.LATENT_NOISE else torch.zeros_like(start)
            image_latents = image_latents * (1 - area) + fill * area
        scheduler = self.scheduler  # type: ignore[attr-defined]
        if not add_noise:  # SDXL's denoising_start: the latents as they are
            latents = image_latents
        elif is_strength_max:
            latents = noise * scheduler.init_noise_sigma
        else:
            latents = scheduler.add_noise(image_latents, noise, timestep)
        outputs: tuple[torch.Tensor, ...] = (latents,)
        if return_noise:
            outputs += (noise,)
        if return_image_latents:
            outputs += (image_latents,)
        return outputs

    def prepare_mask_latents(
        self, mask, masked_image, batch_size, height, width, dtype, device, generator, do_classifier_free_guidance
    ):
        unet = self.unet  # type: ignore[attr-defined]
        if unet.config.in_channels != INPAINT_CHANNELS and masked_image is not None and masked_image.shape[1] != 4:
            scale = self.vae_scale_factor  # type: ignore[attr-defined]
            shape = (masked_image.shape[0], self.vae.config.latent_channels, height // scale, width // scale)  # type: ignore[attr-defined]
            torch.randn(shape, generator=generator, dtype=torch.float32)  # the posterior sample diffusers would draw
            masked_image = torch.zeros(shape, dtype=dtype, device=device)  # latents: unread by a 4-channel UNet
        return super().prepare_mask_latents(  # type: ignore[misc]
            mask, masked_image, batch_size, height, width, dtype, device, generator, do_classifier_free_guidance
        )


def inpaint_pipe(model: LoadedModel) -> Any:
    """The model's inpaint pipeline, with the CPU draws and A1111's latent fills."""
    return task_pipe(model, _MaskedStart, "StableDiffusionInpaintPipeline", "StableDiffusionXLInpaintPipeline")


def is_inpainting(model: LoadedModel) -> bool:
    """An inpainting checkpoint: its UNet takes the mask and the masked picture besides the latents."""
    return model.pipe.unet.config.in_channels == INPAINT_CHANNELS


def mask_tensor(mask: Image.Image) -> torch.Tensor:
    """An "L" mask as the pipelines' mask processor reads it: (1, 1, H, W) in [0, 1]."""
    return torch.from_numpy(np.array(mask.convert("L"), dtype=np.float32) / 255.0)[None, None]


def full_mask(width: int, height: int) -> Image.Image:
    """Everything masked: how an inpainting checkpoint varies a whole picture (A1111's img2img on one)."""
    return Image.new("L", (width, height), 255)


def blank(width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(picture, mask) of a text-to-image pass on an inpainting checkpoint: mid grey (0 once normalized to
    [-1, 1], A1111's blank), all masked."""
    return torch.full((1, 3, height, width), 0.5), torch.ones(1, 1, height, width)


@contextlib.contextmanager
def latent_fill(task: Any, fill: Fill, mask: torch.Tensor | None, noise_multiplier: float = 1.0) -> Iterator[None]:
    """The masked content and noise multiplier for one call of the task pipeline (per-call state on the pipeline,
    which only the worker thread drives); cleared afterwards whatever happens."""
    task._easel_fill, task._easel_mask, task._easel_noise_multiplier = fill, mask, noise_multiplier
    try:
        yield
    finally:
        task._easel_fill, task._easel_mask, task._easel_noise_multiplier = Fill.ORIGINAL, None, 1.0
