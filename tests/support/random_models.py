"""Build diffusers pipelines of the real SD1.5 / SDXL / SDXL refiner classes from config dicts, with seeded random weights.

Shared by `tiny_models` (fast unit-test models) and `full_size` (benchmark models). Weights are created
empty (no default init, which is slow at full size) and then filled from a seeded generator, so the same
seed always gives the same bits, on any machine, at any size.

Why not the default init: it leaves norm scales at 1 and biases at 0, so a checkpoint round trip that
dropped or swapped them would still compare equal. Every tensor here is random, yet scaled so activations
stay O(1) and a 64x64 image generates without NaN in fp32, bf16 or fp16.
"""

from __future__ import annotations

import json
import math
from typing import Any

import diffusers
import torch
from accelerate import init_empty_weights
from diffusers import (
    AutoencoderKL,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from pipelines.loading.configs import bundled_config_dir, tokenizer_kwargs
from pipelines.types import Architecture

ComponentConfigs = dict[str, dict[str, Any]]

# Component order fixes the per-component seeds: seed * 16 + index.
_MODEL_COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2")


def _materialize_random_(module: torch.nn.Module, seed: int, dtype: torch.dtype, device: torch.device | str) -> None:
    """Replace every (meta) parameter with a seeded random tensor of `dtype` on `device`.

    Matrices and kernels get N(0, 1/fan_in) (variance-preserving), 1-D weights (norm scales) 1 + N(0, 0.1^2),
    biases N(0, 0.02^2). Parameters are visited in `named_parameters()` order, which is fixed by the config.
    """
    gen = torch.Generator(device=device).manual_seed(seed)
    for name, param in list(module.named_parameters()):
        owner_name, _, leaf = name.rpartition(".")
        owner = module.get_submodule(owner_name) if owner_name else module
        value = torch.empty(param.shape, dtype=dtype, device=device)
        if value.ndim >= 2:
            fan_in = math.prod(value.shape[1:])
            value.normal_(0.0, 1.0 / math.sqrt(fan_in), generator=gen)
        elif leaf == "weight" or leaf.endswith("_weight"):
            value.normal_(1.0, 0.1, generator=gen)
        else:
            value.normal_(0.0, 0.02, generator=gen)
        owner._parameters[leaf] = torch.nn.Parameter(value, requires_grad=False)
    # Non-persistent buffers (CLIP's position_ids) were built on the CPU by init_empty_weights.
    module.to(device)


def _json_copy(cfg: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(cfg))


def build_model(
    component: str, cfg: dict[str, Any], seed: int, dtype: torch.dtype, device: torch.device | str
) -> torch.nn.Module:
    """One component (unet, vae, text_encoder, text_encoder_2) of the real class, with random weights."""
    cfg = _json_copy(cfg)
    with init_empty_weights():
        if component == "unet":
            model: torch.nn.Module = UNet2DConditionModel.from_config(cfg)
        elif component == "vae":
            model = AutoencoderKL.from_config(cfg)
        elif component == "text_encoder":
            model = CLIPTextModel(CLIPTextConfig.from_dict(cfg))
        elif component == "text_encoder_2":
            model = CLIPTextModelWithProjection(CLIPTextConfig.from_dict(cfg))
        else:
            raise ValueError(f"unknown model component {component!r}")
    _materialize_random_(model, seed * 16 + _MODEL_COMPONENTS.index(component), dtype, device)
    return model.eval()


def bundled_scheduler(arch: Architecture):
    """The scheduler class and config the real model ships with (PNDM for SD1.5, Euler for SDXL)."""
    folder = bundled_config_dir(arch)
    class_name = json.loads((folder / "model_index.json").read_text())["scheduler"][1]
    return getattr(diffusers, class_name).from_pretrained(folder, subfolder="scheduler")


def build_pipeline(
    arch: Architecture,
    configs: ComponentConfigs,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> StableDiffusionPipeline | StableDiffusionXLPipeline | StableDiffusionXLImg2ImgPipeline:
    """A complete pipeline of `arch` from per-component configs, with the real tokenizer(s) and scheduler."""
    models = {name: build_model(name, cfg, seed, dtype, device) for name, cfg in configs.items() if name in _MODEL_COMPONENTS}
    scheduler = bundled_scheduler(arch)
    if arch == Architecture.SD1:
        return StableDiffusionPipeline(
            **models,
            **tokenizer_kwargs(arch),
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    if arch == Architecture.SDXL:
        return StableDiffusionXLPipeline(
            **models, **tokenizer_kwargs(arch), scheduler=scheduler, force_zeros_for_empty_prompt=True
        )
    if arch == Architecture.SDXL_REFINER:  # as the published refiner: OpenCLIP only, aesthetic-score conditioning
        return StableDiffusionXLImg2ImgPipeline(
            **models,
            text_encoder=None,
            tokenizer=None,
            **tokenizer_kwargs(arch),
            scheduler=scheduler,
            requires_aesthetics_score=True,
            force_zeros_for_empty_prompt=False,
        )
    raise ValueError(f"no random pipeline for {arch}")
