"""Mapping a LoRA file's layer names onto the modules of OUR loaded diffusers pipeline.

The name tables are built from the model itself (its named modules), not from string rewriting, so every
name a LoRA may use for a layer is derived from the layer that is really there:

- kohya SD1 names flatten the diffusers module path (`lora_unet_down_blocks_0_attentions_0_…_to_q`);
- kohya SDXL names flatten the original LDM path (`lora_unet_input_blocks_4_1_…_to_q`), which is computed
  from the UNet's actual block structure (resnets/attentions/samplers per level), as the checkpoint
  converter numbers them;
- diffusers/PEFT names are the module paths themselves (`unet.down_blocks.0.…to_q`), plus the old
  attention-processor spellings (`attn1.processor.to_q_lora`, `self_attn.to_q_lora`).

`resolve` checks everything before a single weight is touched: the file's architecture against the model's,
every layer name, and every shape; each failure is a LoraError naming the file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from pipelines.errors import LoraError
from pipelines.loras.formats import LoraFile, LoraPair
from pipelines.types import Architecture

TARGET_TYPES = (torch.nn.Linear, torch.nn.Conv2d)

# component -> kohya prefix, per architecture
KOHYA_COMPONENTS: dict[Architecture, dict[str, str]] = {
    Architecture.SD1: {"unet": "lora_unet_", "text_encoder": "lora_te_"},
    Architecture.SDXL: {"unet": "lora_unet_", "text_encoder": "lora_te1_", "text_encoder_2": "lora_te2_"},
}

_RESNET_LDM = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_UNET_TOP_LDM = {
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_PROCESSOR_TE = {"to_q": "q_proj", "to_k": "k_proj", "to_v": "v_proj", "to_out": "out_proj"}


def flat(name: str) -> str:
    return name.replace(".", "_")


def unet_ldm_prefixes(unet: Any) -> dict[str, str]:
    """diffusers block path -> LDM block path, counted from the UNet's own blocks."""
    out = dict(_UNET_TOP_LDM)
    k = 1
    for i, block in enumerate(unet.down_blocks):
        attentions = getattr(block, "attentions", None) or []
        for j in range(len(block.resnets)):
            out[f"down_blocks.{i}.resnets.{j}"] = f"input_blocks.{k}.0"
            if j < len(attentions):
                out[f"down_blocks.{i}.attentions.{j}"] = f"input_blocks.{k}.1"
            k += 1
        if getattr(block, "downsamplers", None):
            out[f"down_blocks.{i}.downsamplers.0.conv"] = f"input_blocks.{k}.0.op"
            k += 1
    mid = unet.mid_block
    if mid is not None:
        for j in range(len(mid.resnets)):
            out[f"mid_block.resnets.{j}"] = f"middle_block.{2 * j}"
        for j in range(len(getattr(mid, "attentions", None) or [])):
            out[f"mid_block.attentions.{j}"] = f"middle_block.{2 * j + 1}"
    k = 0
    for i, block in enumerate(unet.up_blocks):
        attentions = getattr(block, "attentions", None) or []
        for j in range(len(block.resnets)):
            out[f"up_blocks.{i}.resnets.{j}"] = f"output_blocks.{k}.0"
            if j < len(attentions):
                out[f"up_blocks.{i}.attentions.{j}"] = f"output_blocks.{k}.1"
            if j == len(block.resnets) - 1 and getattr(block, "upsamplers", None):
                out[f"up_blocks.{i}.upsamplers.0.conv"] = f"output_blocks.{k}.{2 if attentions else 1}.conv"
            k += 1
    return out


def unet_ldm_name(path: str, prefixes: dict[str, str]) -> str | None:
    """The LDM name of a UNet module path (resnet layers renamed too), or None if it has none."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        head = ".".join(parts[:cut])
        if head in prefixes:
            rest = parts[cut:]
            if ".resnets." in f".{head}." and rest:
                if rest[0] not in _RESNET_LDM:
                    return None
                rest = _RESNET_LDM[rest[0]].split(".") + rest[1:]
            return ".".join([prefixes[head], *rest])
    return None


@dataclass
class ModuleIndex:
    """Every LoRA-adaptable layer of a pipeline, under every name a LoRA file may give it."""

    architecture: Architecture
    modules: dict[tuple[str, str], torch.nn.Module]  # (component, module path) -> Linear/Conv2d
    kohya: dict[str, tuple[str, str]]  # "lora_unet_…" flat name -> (component, module path)

    @classmethod
    def build(cls, pipe: Any, architecture: Architecture) -> ModuleIndex:
        modules: dict[tuple[str, str], torch.nn.Module] = {}
        kohya: dict[str, tuple[str, str]] = {}
        prefixes = KOHYA_COMPONENTS.get(architecture, {})
        for component, kohya_prefix in prefixes.items():
            model = getattr(pipe, component, None)
            if model is None:
                continue
            ldm = unet_ldm_prefixes(model) if component == "unet" else {}
            for path, module in model.named_modules():
                if not isinstance(module, TARGET_TYPES):
                    continue
                modules[(component, path)] = module
                kohya[kohya_prefix + flat(path)] = (component, path)
                ldm_path = unet_ldm_name(path, ldm) if ldm else None
                if ldm_path:
                    kohya.setdefault(kohya_prefix + flat(ldm_path), (component, path))
        return cls(architecture, modules, kohya)

    def target_of(self, stem: str) -> tuple[str, str] | None:
        """(component, module path) for a pair's stem in any supported naming, or None."""
        if stem in self.kohya:
            return self.kohya[stem]
        component, _, path = stem.partition(".")
        if component == "base_model":  # a bare PEFT save of one model: base_model.model.<path>
            path = path.removeprefix("model.")
            candidates = [c for c in ("unet", "text_encoder", "text_encoder_2")]
        elif component in ("unet", "text_encoder", "text_encoder_2"):
            candidates = [component]
        else:
            return None
        for candidate in candidates:
            normalized = _normalize_diffusers_path(candidate, path)
            if (candidate, normalized) in self.modules:
                return candidate, normalized
        return None


def _normalize_diffusers_path(component: str, path: str) -> str:
    """Old diffusers spellings -> module paths: `attn1.processor.to_out` -> `attn1.to_out.0`, …"""
    path = path.replace(".processor.", ".")
    head, _, leaf = path.rpartition(".")
    if component == "unet":
        if leaf == "to_out":
            return f"{path}.0"
        return path
    if head.endswith("self_attn") and leaf in _PROCESSOR_TE:
        return f"{head}.{_PROCESSOR_TE[leaf]}"
    return path


@dataclass
class LayerPatch:
    """One pair of one file, resolved: which parameter it changes and by how much per unit weight."""

    component: str
    path: str
    weight: torch.nn.Parameter
    pair: LoraPair

    def delta(self, lora_weight: float) -> torch.Tensor:
        """lora_weight * scale * (up @ down), float32, in the parameter's shape and on its device."""
        product = self.pair.delta(self.weight.device)
        return (product * (self.pair.scale * lora_weight)).reshape(self.weight.shape)


def resolve(lora: LoraFile, index: ModuleIndex, model_name: str) -> list[LayerPatch]:
    """Map every pair of `lora` onto `index`; LoraError naming the file for anything that does not fit."""
    name = lora.path.name
    arch = index.architecture
    if lora.architecture not in (Architecture.UNKNOWN, arch):
        raise LoraError(
            f"{name} is a LoRA for {lora.architecture.label}, but the model {model_name} is {arch.label}. "
            f"Pick a {arch.label} LoRA or a {lora.architecture.label} model."
        )
    patches: list[LayerPatch] = []
    unknown: list[str] = []
    for pair in lora.pairs:
        target = index.target_of(pair.stem)
        if target is None:
            unknown.append(pair.stem)
            continue
        module = index.modules[target]
        _check_shape(name, model_name, pair, target, module.weight)
        patches.append(LayerPatch(target[0], target[1], module.weight, pair))
    if unknown:
        what = "none of its layers" if not patches else f"{len(unknown)} of its {len(lora.pairs)} layers"
        raise LoraError(
            f"{name} does not fit the {arch.label} model {model_name}: {what} exist in it "
            f"(e.g. {', '.join(repr(s) for s in unknown[:3])}). It may be made for another model type."
        )
    return patches


def _check_shape(name: str, model_name: str, pair: LoraPair, target: tuple[str, str], weight: torch.Tensor) -> None:
    out_ok = pair.up.shape[0] == weight.shape[0]
    in_ok = math.prod(pair.down.shape[1:]) == math.prod(weight.shape[1:])
    kernel_ok = pair.down.ndim < 4 or weight.ndim < 4 or tuple(pair.down.shape[2:]) == tuple(weight.shape[2:])
    if not (out_ok and in_ok and kernel_ok):
        raise LoraError(
            f"{name} does not fit the model {model_name}: layer {target[0]}.{target[1]} has weights of shape "
            f"{tuple(weight.shape)}, the LoRA gives {tuple(pair.up.shape[:1]) + tuple(pair.down.shape[1:])}. "
            f"It was probably made for another model type."
        )


def group_by_parameter(patches: list[tuple[LayerPatch, float]]) -> dict[int, list[tuple[LayerPatch, float]]]:
    """Patches of several LoRAs gathered per parameter, so each weight is rewritten once."""
    out: dict[int, list[tuple[LayerPatch, float]]] = {}
    for patch, weight in patches:
        out.setdefault(id(patch.weight), []).append((patch, weight))
    return out


def stacked_factors(group: list[tuple[LayerPatch, float]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(U, D) in float32 with U @ D = Σ weightᵢ·scaleᵢ·(upᵢ @ downᵢ): the ranks side by side, scales folded into U.

    One product of the stacked factors sums every LoRA on the layer in the float32 accumulator of a single
    matrix multiply, instead of one full-size temporary per LoRA.
    """
    ups = [p.pair.up.to(device, torch.float32).flatten(1) * (p.pair.scale * w) for p, w in group]
    downs = [p.pair.down.to(device, torch.float32).flatten(1) for p, _ in group]
    return torch.cat(ups, dim=1), torch.cat(downs, dim=0)


CHUNK_ELEMENTS = 1 << 18  # float32 working block per step: 1 MiB, small enough to stay in the CPU cache


@torch.no_grad()
def add_low_rank_(weight: torch.Tensor, up: torch.Tensor, down: torch.Tensor) -> None:
    """weight += up @ down, computed in float32 and rounded once to the weight's dtype.

    On the CPU, half-precision weights are done a block of rows at a time, so the float32 copy lives in the
    cache and the weight itself is read and written once (with the stacked factors, a switch in
    bench/lora_switch.py went from 35 s to 6 s).
    """
    if weight.dim() == 4 and not weight.is_contiguous():
        # a channels-last convolution (pipelines/optimize.py): its memory runs (out, kh, kw, in), so patch that
        # view, with the factor's columns put in the same order
        out_ch, in_ch, kh, kw = weight.shape
        weight = weight.permute(0, 2, 3, 1)
        down = down.reshape(down.shape[0], in_ch, kh, kw).permute(0, 2, 3, 1).reshape(down.shape[0], -1)
    rows = weight.shape[0]
    flat = weight.view(rows, -1)
    if weight.dtype == torch.float32:
        flat.addmm_(up, down)
        return
    # On a GPU the whole float32 copy is cheap and many small kernels are not: one block there.
    step = rows if weight.device.type != "cpu" else max(1, CHUNK_ELEMENTS // max(1, flat.shape[1]))
    for start in range(0, rows, step):
        block = flat[start : start + step]
        block.copy_(block.float().addmm_(up[start : start + step], down))
