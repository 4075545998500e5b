"""LoRA files written the way trainers write them, for tiny (or full-size) pipelines.

- `kohya_lora`: kohya sd-scripts layout, on every attention layer of the UNet. SD1 names flatten the diffusers
  module path; SDXL names flatten the original LDM path, computed here with the checkpoint exporter's own
  mapping (ckpt_export.unet_to_ldm), not with the app's code, so a mapping error in the app cannot hide behind
  the same error in the test. Text-encoder names are the transformers-4 paths kohya flattens
  (`lora_te_text_model_encoder_layers_0_…`), whatever the installed transformers calls the module.
  Optional LyCORIS LoCon convolution layers (3x3 down, 1x1 up). The exact spellings of each trainer, on a
  hand-typed set of layers, are in published_lora_keys.py.
- `peft_lora`: written by diffusers itself (`save_lora_weights` with the PEFT adapter config in the header).

Both return the tensors too, so tests can compute base + weight * alpha/rank * (up @ down) themselves.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from pipelines.types import Architecture

from .ckpt_export import unet_to_ldm

UNET_LINEARS = (
    "attn1.to_q",
    "attn1.to_k",
    "attn1.to_v",
    "attn1.to_out.0",
    "attn2.to_q",
    "attn2.to_k",
    "attn2.to_v",
    "attn2.to_out.0",
    "ff.net.0.proj",
    "ff.net.2",
)
TE_LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1", "mlp.fc2")
KOHYA_TE = {
    Architecture.SD1: {"text_encoder": "lora_te_"},
    Architecture.SDXL: {"text_encoder": "lora_te1_", "text_encoder_2": "lora_te2_"},
}


def unet_targets(unet, conv: bool = False) -> list[str]:
    """Attention and feed-forward linears of every transformer block, proj_in/out, and (LoCon) resnet convs."""
    names = []
    for name, module in unet.named_modules():
        if isinstance(module, torch.nn.Linear) and (name.endswith(UNET_LINEARS) or name.endswith(("proj_in", "proj_out"))):
            names.append(name)
        if conv and isinstance(module, torch.nn.Conv2d) and name.endswith(("resnets.0.conv1",)) and "down_blocks.0" in name:
            names.append(name)
    return names


def te_targets(text_encoder) -> list[str]:
    return [n for n, m in text_encoder.named_modules() if isinstance(m, torch.nn.Linear) and n.endswith(TE_LINEARS)]


def _kohya_te_name(prefix: str, path: str) -> str:
    """kohya flattens CLIP paths as transformers 4 spelled them: always under `text_model.` (transformers 5
    dropped that level from CLIPTextModel, not from CLIPTextModelWithProjection)."""
    return prefix + ("text_model." + path.removeprefix("text_model.")).replace(".", "_")


def _kohya_unet_name(unet, path: str, arch: Architecture) -> str:
    if arch is Architecture.SD1:
        return "lora_unet_" + path.replace(".", "_")
    ldm = next(iter(unet_to_ldm({path + ".weight": torch.empty(0)}, dict(unet.config))))
    return "lora_unet_" + ldm.removesuffix(".weight").replace(".", "_")


def _pair(module: torch.nn.Module, rank: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    weight = module.weight
    out_dim, fan_in = weight.shape[0], math.prod(weight.shape[1:])
    if weight.ndim == 4:
        down = torch.randn(rank, *weight.shape[1:], generator=gen) / math.sqrt(fan_in)
        up = torch.randn(out_dim, rank, 1, 1, generator=gen) / math.sqrt(rank)
    else:
        down = torch.randn(rank, fan_in, generator=gen) / math.sqrt(fan_in)
        up = torch.randn(out_dim, rank, generator=gen) / math.sqrt(rank)
    return down, up


def kohya_lora(
    pipe,
    arch: Architecture,
    path: Path,
    rank: int = 4,
    alpha: float | None = 2.0,
    seed: int = 0,
    text_encoders: bool = True,
    conv: bool = False,
    dtype: torch.dtype = torch.float16,
    metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Write a kohya LoRA for `pipe` to `path`; returns {(component, module path): (down, up, alpha)}."""
    gen = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    layers: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor, float | None]] = {}

    def add(component: str, module_path: str, kohya_name: str) -> None:
        module = getattr(pipe, component).get_submodule(module_path)
        down, up = _pair(module, rank, gen)
        down, up = down.to(dtype), up.to(dtype)
        tensors[f"{kohya_name}.lora_down.weight"] = down
        tensors[f"{kohya_name}.lora_up.weight"] = up
        if alpha is not None:
            tensors[f"{kohya_name}.alpha"] = torch.tensor(float(alpha))
        layers[(component, module_path)] = (down, up, alpha)

    for module_path in unet_targets(pipe.unet, conv):
        add("unet", module_path, _kohya_unet_name(pipe.unet, module_path, arch))
    if text_encoders:
        for component, prefix in KOHYA_TE[arch].items():
            for module_path in te_targets(getattr(pipe, component)):
                add(component, module_path, _kohya_te_name(prefix, module_path))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    return layers


def peft_lora(pipe, arch: Architecture, path: Path, rank: int = 4, alpha: float = 8.0, seed: int = 0) -> dict[str, Any]:
    """Write a LoRA with diffusers' own `save_lora_weights` (PEFT keys, adapter config in the header).

    The adapters are created by peft on deep copies of the UNet and text encoder(s), with random B matrices,
    so the pipeline passed in is not changed. Returns {(component, module path): (down, up, alpha)}.
    """
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    from peft import LoraConfig, get_peft_model_state_dict

    torch.manual_seed(seed)
    components = ["unet"] + list(KOHYA_TE[arch])
    layers: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor, float | None]] = {}
    saved: dict[str, Any] = {}
    for component in components:
        model = copy.deepcopy(getattr(pipe, component))
        targets = ["to_q", "to_k", "to_v", "to_out.0", "proj_in"] if component == "unet" else ["q_proj", "v_proj", "fc1"]
        config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, init_lora_weights=False)
        model.add_adapter(config)
        state = get_peft_model_state_dict(model)
        for key, value in state.items():
            if key.endswith("lora_A.weight"):
                module_path = key.removesuffix(".lora_A.weight")
                layers[(component, module_path)] = (value.clone(), state[module_path + ".lora_B.weight"].clone(), alpha)
        saved[f"{component}_lora_layers"] = state
        saved[f"{component}_lora_adapter_metadata"] = config.to_dict()
    cls = StableDiffusionXLPipeline if arch is Architecture.SDXL else StableDiffusionPipeline
    cls.save_lora_weights(str(path.parent), weight_name=path.name, **saved)
    return layers
