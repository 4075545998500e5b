"""Image to image: an image (or a first pass's latents) noised part of the way and denoised from there.

The task pipelines are diffusers' own `StableDiffusion[XL]Img2ImgPipeline`, built with `from_pipe` over the
loaded model's modules (no weight is loaded or copied twice), so LoRAs patched into those modules, the
VAE override, the step callback (progress, previews, stop/skip, prompt editing) and the refiner hand-over
all work as in text to image.

Seeds. diffusers draws from the generator twice, in this order: the VAE posterior sample of the encoded
image, then the noise added at the starting timestep; ancestral samplers go on drawing from it while
denoising. Easel keeps that order, so `torch.Generator("cpu").manual_seed(seed)` gives plain diffusers'
picture, but draws both on the CPU in fp32 and casts (the image is encoded here, `encode`, and the pipeline's
`prepare_latents` is asked for fp32 noise): as in text to image, a seed means the same picture on any device
and in any precision. On the CPU in fp32 every operation is diffusers' own, bit for bit.

Large images are encoded and decoded in tiles (diffusers' VAE tiling), above `TILED_VAE_PIXELS`.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import torch
from PIL import Image

from pipelines.loading.loader import LoadedModel
from pipelines.types import Architecture

TILED_VAE_PIXELS = 1280 * 1280  # above this the VAE works in tiles: SDXL's 1024x1024 stays whole, a 2x upscale does not


class _CpuNoise:
    """prepare_latents with the start noise drawn in fp32 (on the generator's device, the CPU), then cast, and
    scaled by A1111's initial noise multiplier (`start_noise`)."""

    _easel_noise_multiplier: float = 1.0

    def prepare_latents(self, image, timestep, batch_size, num_images_per_prompt, dtype, device, generator=None, *args, **kwargs):
        with _scaled_noise(self.scheduler, self._easel_noise_multiplier):  # type: ignore[attr-defined]
            latents = super().prepare_latents(  # type: ignore[misc]
                image.float(), timestep, batch_size, num_images_per_prompt, torch.float32, device, generator, *args, **kwargs
            )
        return latents.to(dtype)


@contextlib.contextmanager
def _scaled_noise(scheduler: Any, multiplier: float) -> Iterator[None]:
    """The scheduler's add_noise with the noise scaled, for the start latents only (an instance attribute that
    hides the method, removed afterwards)."""
    if multiplier == 1.0:
        yield
        return
    add_noise = scheduler.add_noise
    scheduler.add_noise = lambda original, noise, timesteps: add_noise(original, noise * multiplier, timesteps)
    try:
        yield
    finally:
        del scheduler.add_noise


@contextlib.contextmanager
def start_noise(task: Any, multiplier: float) -> Iterator[None]:
    """A1111's initial noise multiplier for one call of an img2img task pipeline."""
    task._easel_noise_multiplier = multiplier
    try:
        yield
    finally:
        task._easel_noise_multiplier = 1.0


@functools.cache
def _task_class(mixin: type, base: type) -> type:
    """diffusers' task pipeline `base` with Easel's `mixin` in front (one class per pair, made once)."""
    return type(f"Easel{base.__name__}", (mixin, base), {})


def task_pipe(model: LoadedModel, mixin: type, sd_class: str, sdxl_class: str) -> Any:
    """The model's diffusers task pipeline (`sd_class` or `sdxl_class`, with `mixin`) over its own modules:
    shared with the text-to-image pipeline, not copied."""
    import diffusers

    sdxl = model.architecture in (Architecture.SDXL, Architecture.SDXL_REFINER)
    pipe = model.pipe
    if isinstance(pipe, mixin):
        return pipe
    # from_pipe casts the shared modules to its torch_dtype (float32 by default): keep theirs.
    task = _task_class(mixin, getattr(diffusers, sdxl_class if sdxl else sd_class)).from_pipe(pipe, torch_dtype=pipe.unet.dtype)
    task.set_progress_bar_config(disable=True)
    return task


def img2img_pipe(model: LoadedModel) -> Any:
    """The model's img2img pipeline, with the CPU-noise prepare_latents."""
    return task_pipe(model, _CpuNoise, "StableDiffusionImg2ImgPipeline", "StableDiffusionXLImg2ImgPipeline")


@contextlib.contextmanager
def tiled_vae(vae: Any, width: int, height: int, above: int = TILED_VAE_PIXELS) -> Iterator[None]:
    """The VAE in tiles for this block when the image is larger than `above` pixels; as it was afterwards."""
    before = getattr(vae, "use_tiling", False)
    if width * height > above and hasattr(vae, "enable_tiling"):
        vae.enable_tiling()
    try:
        yield
    finally:
        if hasattr(vae, "use_tiling"):
            vae.use_tiling = before


def pixels(pipe: Any, image: Image.Image) -> torch.Tensor:
    """The image as the pipeline's own preprocessing makes it: (1, 3, H, W) in [-1, 1], H and W multiples of 8."""
    return pipe.image_processor.preprocess(image)


def encode(pipe: Any, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Pixels -> the latents the denoiser works on, as diffusers' prepare_latents encodes them (fp16 VAEs that
    overflow upcast, SDXL's optional latents mean/std), the posterior sample drawn on the CPU in fp32."""
    vae = pipe.vae
    dtype = pipe.unet.dtype
    upcast = vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False)
    if upcast:
        vae.to(dtype=torch.float32)
    try:
        posterior = vae.encode(image.to(vae.device, vae.dtype)).latent_dist
        noise = torch.randn(posterior.mean.shape, generator=generator, dtype=torch.float32)
        latents = posterior.mean + posterior.std * noise.to(posterior.mean.device, posterior.mean.dtype)
    finally:
        if upcast:
            vae.to(dtype=dtype)
    latents = latents.to(dtype)
    mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
    if mean is not None and std is not None:
        mean = torch.tensor(mean).view(1, 4, 1, 1).to(latents.device, dtype)
        std = torch.tensor(std).view(1, 4, 1, 1).to(latents.device, dtype)
        return (latents - mean) * vae.config.scaling_factor / std
    return vae.config.scaling_factor * latents


def run_steps(samplers: Any, scheduler_config: Any, choice: Any, steps: int, strength: float) -> int:
    """How many step-callback calls an img2img pass makes: diffusers' get_timesteps tail of the schedule."""
    scheduler = samplers.make(scheduler_config, choice)
    scheduler.set_timesteps(steps, device="cpu")
    start = max(steps - min(int(steps * strength), steps), 0)
    return len(scheduler.timesteps[start * scheduler.order :])


def schedule_length(steps_run: int, strength: float, most: int = 150) -> int:
    """The schedule length that runs `steps_run` steps at `strength` (Fooocus counts steps run, diffusers and
    A1111 the whole schedule): the smallest n with int(n * strength) >= steps_run."""
    if strength <= 0:
        return steps_run
    n = max(1, int(steps_run / strength))
    while int(n * strength) < steps_run and n < most:
        n += 1
    return min(n, most)
