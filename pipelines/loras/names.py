"""The names published LoRA files give a layer, derived from a loaded layer by rules that hold for every library version.

Trainers name layers after the libraries they ran on: diffusers UNet paths, and transformers-4 CLIP paths,
which all start with `text_model.`. The modules we load are named by whatever versions are installed
(transformers 5 dropped `text_model.` from CLIPTextModel but not from CLIPTextModelWithProjection), so a
table keyed by our own module paths refuses nearly every published text-encoder LoRA. Every spelling
below is therefore produced for each loaded layer, with and without the version-dependent parts:

- `OPTIONAL_ROOTS`: a path level one version has and another not (`text_model.` of the CLIP text encoders);
- the UNet's original LDM path (`input_blocks.4.1.…`, as kohya's SDXL scripts and LDM-named SD1 files
  spell it), counted from the UNet's own block structure the way the checkpoint converter numbers it;
- kohya flattens any of these (`lora_te_text_model_encoder_layers_0_mlp_fc1`), diffusers/PEFT keep the dots;
- old diffusers attention-processor spellings (`attn1.processor.to_q_lora`, `self_attn.to_q_lora`) are
  rewritten to module paths before lookup (`old_diffusers_path`).
"""

from __future__ import annotations

from typing import Any

from pipelines.types import Architecture

COMPONENTS = ("unet", "text_encoder", "text_encoder_2")
PART_LABELS = {"unet": "UNet", "text_encoder": "text encoder", "text_encoder_2": "text encoder 2"}

# component -> a root level of its published paths that the installed library may lack (or have where files do not)
OPTIONAL_ROOTS = {"text_encoder": "text_model.", "text_encoder_2": "text_model."}

# kohya/A1111 key prefix -> component, per architecture (SD1 has one text encoder, SDXL two). SimpleTuner's
# LyCORIS files flatten the UNet's diffusers paths the same way under `lycoris_`.
KOHYA_PREFIXES: dict[Architecture, dict[str, str]] = {
    Architecture.SD1: {"lora_unet_": "unet", "lycoris_": "unet", "lora_te_": "text_encoder"},
    Architecture.SDXL: {"lora_unet_": "unet", "lycoris_": "unet", "lora_te1_": "text_encoder", "lora_te2_": "text_encoder_2"},
}

# diffusers/PEFT key prefix -> the components it may mean. PEFT's `save_pretrained` of one model writes
# `base_model.model.`, diffusers' old `unet.save_attn_procs` no prefix at all: those may be any component.
DOTTED_PREFIXES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("unet.", ("unet",)),
    ("text_encoder.", ("text_encoder",)),
    ("text_encoder_2.", ("text_encoder_2",)),
    ("base_model.model.", COMPONENTS),
    ("", COMPONENTS),
)

# old diffusers attention-processor leaf -> module leaf (LoRAAttnProcessor keys, text encoders before 0.17)
_PROCESSOR_LEAVES = {
    "unet": {"to_q": "to_q", "to_k": "to_k", "to_v": "to_v", "to_out": "to_out.0"},
    "text_encoder": {"to_q": "q_proj", "to_k": "k_proj", "to_v": "v_proj", "to_out": "out_proj"},
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


def flat(name: str) -> str:
    return name.replace(".", "_")


def published_paths(component: str, path: str) -> tuple[str, ...]:
    """A module path as files may spell it: with and without the component's optional root level."""
    root = OPTIONAL_ROOTS.get(component)
    if root is None:
        return (path,)
    bare = path.removeprefix(root)
    return (root + bare, bare)


def claimed_component(stem: str) -> str | None:
    """The component a layer name says it belongs to (by its prefix), whatever the model; None if it does not say."""
    for prefixes in KOHYA_PREFIXES.values():
        for prefix, component in prefixes.items():
            if stem.startswith(prefix):
                return component
    return next((c[0] for prefix, c in DOTTED_PREFIXES if prefix and len(c) == 1 and stem.startswith(prefix)), None)


def old_diffusers_path(component: str, path: str) -> str:
    """Old diffusers spellings -> module paths: `attn1.processor.to_out` -> `attn1.to_out.0`, `self_attn.to_q` -> `q_proj`."""
    path = path.replace(".processor.", ".")
    head, _, leaf = path.rpartition(".")
    leaves = _PROCESSOR_LEAVES["unet" if component == "unet" else "text_encoder"]
    is_attention = head.endswith(("attn1", "attn2")) if component == "unet" else head.endswith("self_attn")
    return f"{head}.{leaves[leaf]}" if is_attention and leaf in leaves else path


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
