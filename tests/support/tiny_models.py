"""Tiny random-weight SD1.5, SDXL and SDXL refiner pipelines of the real architectures, for fast tests.

Same component classes and block types as the real models (CrossAttnDownBlock2D / DownBlock2D UNets,
SDXL's "text_time" added conditioning and linear projections, a 4-level AutoencoderKL with the real 8x
downscale, CLIPTextModel + CLIPTextModelWithProjection, the real CLIP tokenizer and the shipped schedulers),
only narrow. A 64x64 image takes a fraction of a second on a CPU.

Layout choices that matter to the tests:
- SD1.5 uses layers_per_block 1 and SDXL 2, so the checkpoint key mapping is exercised at both.
- SDXL's two text encoders have different widths (32 and 64): diffusers tells `conditioner.embedders.0`
  from `.1` in a single file partly by the width of the position embedding, so equal widths would make it
  load text_encoder_2 from the wrong embedder.
- Text encoders have 3 layers so "clip skip 2" picks a real intermediate layer.
- The refiner has the published refiner's shape: four levels (no attention at the first and last), the
  same depth of transformer layers everywhere, cross-attention on OpenCLIP alone (width 64, as the tiny
  base's text_encoder_2) and 5 micro-conditioning numbers (aesthetic score instead of the target size).
"""

from __future__ import annotations

import copy

import torch
from diffusers import (
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLPipeline,
)

from pipelines.types import Architecture

from .random_models import ComponentConfigs, build_pipeline

_DOWN_ENC = "DownEncoderBlock2D"
_UP_DEC = "UpDecoderBlock2D"

_TEXT_ENCODER_BASE = {
    "architectures": ["CLIPTextModel"],
    "model_type": "clip_text_model",
    "attention_dropout": 0.0,
    "dropout": 0.0,
    "bos_token_id": 0,
    "eos_token_id": 2,  # as in the real configs: pool at the argmax id (<|endoftext|>)
    "pad_token_id": 1,
    "hidden_act": "quick_gelu",
    "hidden_size": 32,
    "intermediate_size": 64,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "num_attention_heads": 4,
    "num_hidden_layers": 3,
    "projection_dim": 32,
    "vocab_size": 49408,
}

_VAE_BASE = {
    "_class_name": "AutoencoderKL",
    "act_fn": "silu",
    "block_out_channels": [16, 16, 32, 32],
    "down_block_types": [_DOWN_ENC] * 4,
    "up_block_types": [_UP_DEC] * 4,
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "sample_size": 64,
}

_SD15_CONFIGS: ComponentConfigs = {
    "unet": {
        "_class_name": "UNet2DConditionModel",
        "act_fn": "silu",
        "attention_head_dim": 4,  # diffusers' name for the number of heads in SD1.x configs
        "block_out_channels": [32, 32, 64, 64],
        "center_input_sample": False,
        "cross_attention_dim": 32,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "downsample_padding": 1,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "in_channels": 4,
        "layers_per_block": 1,
        "mid_block_scale_factor": 1,
        "norm_eps": 1e-05,
        "norm_num_groups": 8,
        "out_channels": 4,
        "sample_size": 8,
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    },
    "vae": {**_VAE_BASE, "scaling_factor": 0.18215},
    "text_encoder": dict(_TEXT_ENCODER_BASE),
}

_SDXL_TEXT2 = {
    **_TEXT_ENCODER_BASE,
    "architectures": ["CLIPTextModelWithProjection"],
    "hidden_act": "gelu",
    "hidden_size": 64,
    "intermediate_size": 128,
    "projection_dim": 64,
}
_SDXL_TIME_DIM = 8

_SDXL_CONFIGS: ComponentConfigs = {
    "unet": {
        "_class_name": "UNet2DConditionModel",
        "act_fn": "silu",
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": _SDXL_TIME_DIM,
        "attention_head_dim": [2, 2, 4],
        "block_out_channels": [32, 32, 64],
        "center_input_sample": False,
        "cross_attention_dim": _TEXT_ENCODER_BASE["hidden_size"] + _SDXL_TEXT2["hidden_size"],
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "downsample_padding": 1,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "in_channels": 4,
        "layers_per_block": 2,
        "mid_block_scale_factor": 1,
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "norm_eps": 1e-05,
        "norm_num_groups": 8,
        "out_channels": 4,
        # 6 micro-conditioning numbers (original size, crop, target size), each embedded, + pooled text
        "projection_class_embeddings_input_dim": 6 * _SDXL_TIME_DIM + _SDXL_TEXT2["projection_dim"],
        "sample_size": 8,
        "transformer_layers_per_block": [1, 1, 2],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "use_linear_projection": True,
    },
    "vae": {**_VAE_BASE, "scaling_factor": 0.13025, "force_upcast": True},
    "text_encoder": dict(_TEXT_ENCODER_BASE),
    "text_encoder_2": _SDXL_TEXT2,
}


_SDXL_REFINER_CONFIGS: ComponentConfigs = {
    "unet": {
        **_SDXL_CONFIGS["unet"],
        # what makes the refiner's UNet (stabilityai/stable-diffusion-xl-refiner-1.0), in small
        "attention_head_dim": [2, 2, 4, 4],
        "block_out_channels": [16, 32, 64, 64],
        "cross_attention_dim": _SDXL_TEXT2["hidden_size"],
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        # original size (2), crop (2) and aesthetic score (1), each embedded, + pooled text
        "projection_class_embeddings_input_dim": 5 * _SDXL_TIME_DIM + _SDXL_TEXT2["projection_dim"],
        "transformer_layers_per_block": 2,
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    },
    "vae": dict(_SDXL_CONFIGS["vae"]),
    "text_encoder_2": dict(_SDXL_TEXT2),
}


def tiny_sd15_configs() -> ComponentConfigs:
    """Component configs of the tiny SD1.5 model (a fresh copy: safe to edit, e.g. for a sidecar)."""
    return copy.deepcopy(_SD15_CONFIGS)


def tiny_sdxl_configs() -> ComponentConfigs:
    """Component configs of the tiny SDXL model (a fresh copy)."""
    return copy.deepcopy(_SDXL_CONFIGS)


def tiny_sdxl_refiner_configs() -> ComponentConfigs:
    """Component configs of the tiny SDXL refiner (a fresh copy)."""
    return copy.deepcopy(_SDXL_REFINER_CONFIGS)


def tiny_vae_config(arch: Architecture = Architecture.SDXL) -> dict:
    """The tiny models' VAE config (SD1.5 and SDXL differ only in scaling factor and upcasting)."""
    return tiny_configs(arch)["vae"]


def tiny_configs(arch: Architecture) -> ComponentConfigs:
    if arch == Architecture.SD1:
        return tiny_sd15_configs()
    if arch == Architecture.SDXL:
        return tiny_sdxl_configs()
    if arch == Architecture.SDXL_REFINER:
        return tiny_sdxl_refiner_configs()
    raise ValueError(f"no tiny model for {arch}")


def tiny_sd15_pipeline(seed: int = 0, dtype: torch.dtype = torch.float32) -> StableDiffusionPipeline:
    """A tiny SD1.5 pipeline; the same seed gives bit-identical weights."""
    return build_pipeline(Architecture.SD1, tiny_sd15_configs(), seed=seed, dtype=dtype)


def tiny_sdxl_pipeline(seed: int = 0, dtype: torch.dtype = torch.float32) -> StableDiffusionXLPipeline:
    """A tiny SDXL base pipeline; the same seed gives bit-identical weights."""
    return build_pipeline(Architecture.SDXL, tiny_sdxl_configs(), seed=seed, dtype=dtype)


def tiny_sdxl_refiner_pipeline(seed: int = 0, dtype: torch.dtype = torch.float32) -> StableDiffusionXLImg2ImgPipeline:
    """A tiny SDXL refiner pipeline. Give it another seed than the base it is tested with: with the same seed
    its VAE and text encoder would equal the base's, and a test could not tell which model did the work."""
    return build_pipeline(Architecture.SDXL_REFINER, tiny_sdxl_refiner_configs(), seed=seed, dtype=dtype)


def tiny_sd15_inpainting_configs() -> ComponentConfigs:
    """The tiny SD1.5 model as an inpainting one (sd-v1-5-inpainting's shape): a UNet of 9 input channels,
    the noisy latents, the mask and the masked picture's latents."""
    configs = tiny_sd15_configs()
    configs["unet"]["in_channels"] = 9
    return configs


def tiny_sd15_inpainting_pipeline(seed: int = 0, dtype: torch.dtype = torch.float32) -> StableDiffusionInpaintPipeline:
    """A tiny SD1.5 inpainting pipeline (StableDiffusionInpaintPipeline over a 9-channel UNet)."""
    base = build_pipeline(Architecture.SD1, tiny_sd15_inpainting_configs(), seed=seed, dtype=dtype)
    return StableDiffusionInpaintPipeline(**base.components, requires_safety_checker=False)


def tiny_vae(seed: int, arch: Architecture = Architecture.SDXL, dtype: torch.dtype = torch.float32):
    """A stand-alone tiny AutoencoderKL (what a user's VAE file holds), of the tiny models' VAE shape."""
    from .random_models import build_model

    return build_model("vae", tiny_vae_config(arch), seed=seed, dtype=dtype, device="cpu")
