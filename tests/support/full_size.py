"""Full-size random-weight SD1.5 and SDXL pipelines built from the bundled configs, for benchmarks.

Real weights cannot be downloaded here, but speed and memory depend only on the architecture and dtype, so
benchmarks run the real-size networks with seeded random weights. Parameters are created directly in the
target dtype on the target device (no fp32 detour, no default init), which keeps SDXL's ~3.5 B parameters
inside memory limits and makes construction take seconds on a GPU.
"""

from __future__ import annotations

import json

import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

from pipelines.loading.configs import bundled_config_dir
from pipelines.types import Architecture

from .random_models import ComponentConfigs, build_pipeline


def bundled_configs(arch: Architecture) -> ComponentConfigs:
    """The bundled full-size model configs of `arch`, by component (unet, vae, text encoders)."""
    folder = bundled_config_dir(arch)
    configs = {}
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        file = folder / name / "config.json"
        if file.is_file():
            configs[name] = json.loads(file.read_text())
    return configs


def full_sd15_pipeline(
    dtype: torch.dtype = torch.float16, device: torch.device | str = "cpu", seed: int = 0
) -> StableDiffusionPipeline:
    """SD1.5 at full size (859 M UNet, 123 M CLIP-L, 84 M VAE) with random weights."""
    configs = bundled_configs(Architecture.SD1)
    return build_pipeline(Architecture.SD1, configs, seed=seed, dtype=dtype, device=device)


def full_sdxl_pipeline(
    dtype: torch.dtype = torch.float16, device: torch.device | str = "cpu", seed: int = 0
) -> StableDiffusionXLPipeline:
    """SDXL base at full size (2.57 B UNet, CLIP-L + OpenCLIP bigG text encoders, 84 M VAE), random weights."""
    configs = bundled_configs(Architecture.SDXL)
    return build_pipeline(Architecture.SDXL, configs, seed=seed, dtype=dtype, device=device)


def full_sdxl_refiner_pipeline(
    dtype: torch.dtype = torch.float16, device: torch.device | str = "cpu", seed: int = 0
) -> StableDiffusionXLImg2ImgPipeline:
    """SDXL refiner at full size (2.26 B UNet, OpenCLIP bigG text encoder, 84 M VAE), random weights."""
    configs = bundled_configs(Architecture.SDXL_REFINER)
    return build_pipeline(Architecture.SDXL_REFINER, configs, seed=seed, dtype=dtype, device=device)


def full_size_pipeline(
    arch: Architecture, dtype: torch.dtype = torch.float16, device: torch.device | str = "cpu", seed: int = 0
) -> StableDiffusionPipeline | StableDiffusionXLPipeline:
    if arch == Architecture.SD1:
        return full_sd15_pipeline(dtype, device, seed)
    if arch == Architecture.SDXL:
        return full_sdxl_pipeline(dtype, device, seed)
    if arch == Architecture.SDXL_REFINER:
        return full_sdxl_refiner_pipeline(dtype, device, seed)
    raise ValueError(f"no full-size model for {arch}")
