"""Write a diffusers SD1.5 / SDXL pipeline as a single-file checkpoint in the original LDM key layout.

This is the layout users download from CivitAI or train with A1111/kohya (`model.diffusion_model.*`,
`first_stage_model.*`, `cond_stage_model.*` / `conditioner.embedders.*`), so tests can feed the app the
same kind of file it meets in the wild. The mapping is written from the two layouts' definitions (LDM's
openaimodel.py / autoencoder / OpenCLIP on one side, diffusers / transformers on the other), is general in
the number of blocks and layers per block, and raises on any tensor it does not know, so a model class
change can never silently drop weights.

Only renaming, reshaping, concatenation and transposition are done, so it also works on meta tensors:
tests check the full-size key layout without allocating anything.
"""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path
from typing import Any, Callable

import diffusers
import torch
from diffusers import DiffusionPipeline
from safetensors.torch import save_file
from transformers import CLIPTextConfig

from pipelines.loading.configs import ALL_COMPONENTS, bundled_config_dir, sidecar_path
from pipelines.types import Architecture

StateDict = dict[str, torch.Tensor]

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD1_CLIP_PREFIX = "cond_stage_model.transformer.text_model."
SDXL_CLIP_PREFIX = "conditioner.embedders.0.transformer.text_model."
SDXL_OPENCLIP_PREFIX = "conditioner.embedders.1.model."
REFINER_OPENCLIP_PREFIX = "conditioner.embedders.0.model."  # the refiner's only embedder

_RESNET_NAMES = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}


def _resnet(rest: str) -> str:
    layer, _, param = rest.partition(".")
    if layer not in _RESNET_NAMES:
        raise KeyError(rest)
    return f"{_RESNET_NAMES[layer]}.{param}"


def unet_to_ldm(state: StateDict, config: dict[str, Any]) -> StateDict:
    """diffusers UNet2DConditionModel -> LDM `openaimodel.UNetModel` keys (without the prefix).

    LDM numbers the blocks flat: input block 0 is conv_in, then each level has `lpb` (resnet, attention)
    blocks and a downsampler, so level i layer j sits at (lpb+1)*i + j + 1; output blocks have lpb+1 layers
    per level at (lpb+1)*i + j, with the upsampler as the last sub-module of the level's last block.
    """
    lpb = config["layers_per_block"]
    if not isinstance(lpb, int):
        raise ValueError("per-block layers_per_block lists have no LDM layout")
    up_has_attn = ["CrossAttn" in t for t in config["up_block_types"]]
    out: StateDict = {}
    for key, value in state.items():
        out[_unet_key(key, lpb, up_has_attn)] = value
    return out


def _unet_key(key: str, lpb: int, up_has_attn: list[bool]) -> str:
    for diff, ldm in _UNET_TOP.items():
        if key.startswith(diff + "."):
            return ldm + key[len(diff) :]
    if m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        idx = (lpb + 1) * i + j + 1
        return f"input_blocks.{idx}.0.{_resnet(rest)}" if kind == "resnets" else f"input_blocks.{idx}.1.{rest}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"input_blocks.{(lpb + 1) * (int(m[1]) + 1)}.0.op.{m[2]}"
    if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"middle_block.{2 * int(m[1])}.{_resnet(m[2])}"
    if m := re.fullmatch(r"mid_block\.attentions\.(\d+)\.(.+)", key):
        return f"middle_block.{2 * int(m[1]) + 1}.{m[2]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        idx = (lpb + 1) * i + j
        return f"output_blocks.{idx}.0.{_resnet(rest)}" if kind == "resnets" else f"output_blocks.{idx}.1.{rest}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        i = int(m[1])
        return f"output_blocks.{(lpb + 1) * i + lpb}.{2 if up_has_attn[i] else 1}.conv.{m[2]}"
    raise KeyError(f"no LDM name for UNet tensor {key!r}")


_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def vae_to_ldm(state: StateDict, config: dict[str, Any]) -> StateDict:
    """diffusers AutoencoderKL -> LDM `AutoencoderKL` keys (without the prefix).

    The LDM decoder numbers its `up` levels from the lowest resolution's opposite end (diffusers up_blocks.0
    is LDM up.{n-1}), and its mid-block attention uses 1x1 convolutions where diffusers has linears.
    """
    n_up = len(config["up_block_types"])
    out: StateDict = {}
    for key, value in state.items():
        new_key, is_attn = _vae_key(key, n_up)
        if is_attn and value.ndim == 2:
            value = value.reshape(*value.shape, 1, 1)
        out[new_key] = value
    return out


def _vae_key(key: str, n_up: int) -> tuple[str, bool]:
    if m := re.fullmatch(r"(encoder|decoder)\.conv_norm_out\.(.+)", key):
        return f"{m[1]}.norm_out.{m[2]}", False
    if re.fullmatch(r"(encoder|decoder)\.conv_(in|out)\..+|(post_)?quant_conv\..+", key):
        return key, False
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        return f"encoder.down.{m[1]}.block.{m[2]}.{_vae_resnet(m[3])}", False
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"encoder.down.{m[1]}.downsample.conv.{m[2]}", False
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        return f"decoder.up.{n_up - 1 - int(m[1])}.block.{m[2]}.{_vae_resnet(m[3])}", False
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        return f"decoder.up.{n_up - 1 - int(m[1])}.upsample.conv.{m[2]}", False
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{_vae_resnet(m[3])}", False
    attn = r"(encoder|decoder)\.mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)\.(.+)"
    if m := re.fullmatch(attn, key):
        return f"{m[1]}.mid.attn_1.{_VAE_ATTN[m[2]]}.{m[3]}", True
    raise KeyError(f"no LDM name for VAE tensor {key!r}")


def _vae_resnet(rest: str) -> str:
    return rest.replace("conv_shortcut", "nin_shortcut", 1)


def clip_to_ldm(state: StateDict, prefix: str) -> StateDict:
    """transformers CLIPTextModel -> the `transformer.text_model.*` layout LDM and sgm keep as is.

    transformers >= 5.6 flattened CLIPTextModel (no `text_model.` level); files always have it. LDM files
    also carry the `position_ids` buffer, which we add so tests see what real files hold.
    """
    out = {prefix + key.removeprefix("text_model."): value for key, value in state.items()}
    pos_key = "embeddings.position_embedding.weight"
    pos = state.get(pos_key, state.get("text_model." + pos_key))
    if pos is not None:
        out[prefix + "embeddings.position_ids"] = torch.arange(pos.shape[0], device=pos.device).unsqueeze(0)
    return out


_OPENCLIP_LAYER = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}


def open_clip_to_ldm(state: StateDict, prefix: str) -> StateDict:
    """transformers CLIPTextModelWithProjection -> OpenCLIP `model.*` keys as SDXL's embedder 1 stores them.

    OpenCLIP fuses q/k/v into `attn.in_proj_weight` (q, k, v stacked on dim 0) and keeps `text_projection`
    as a [width, embed] matrix (x @ P), the transpose of the transformers Linear weight. `logit_scale`
    (unused for text conditioning) is written too, as in the real SDXL file.
    """
    out: StateDict = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        key = key.removeprefix("text_model.")
        if key == "embeddings.token_embedding.weight":
            out[prefix + "token_embedding.weight"] = value
        elif key == "embeddings.position_embedding.weight":
            out[prefix + "positional_embedding"] = value
        elif key.startswith("final_layer_norm."):
            out[prefix + "ln_final." + key.split(".", 1)[1]] = value
        elif key == "text_projection.weight":
            out[prefix + "text_projection"] = value.T.contiguous()
        elif m := re.fullmatch(r"encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)", key):
            qkv.setdefault(f"{m[1]}.{m[3]}", {})[m[2]] = value
        elif m := re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)\.(weight|bias)", key):
            if m[2] not in _OPENCLIP_LAYER:
                raise KeyError(f"no OpenCLIP name for text encoder tensor {key!r}")
            out[f"{prefix}transformer.resblocks.{m[1]}.{_OPENCLIP_LAYER[m[2]]}.{m[3]}"] = value
        else:
            raise KeyError(f"no OpenCLIP name for text encoder tensor {key!r}")
    for layer_param, parts in qkv.items():
        layer, param = layer_param.split(".")
        name = "in_proj_weight" if param == "weight" else "in_proj_bias"
        out[f"{prefix}transformer.resblocks.{layer}.attn.{name}"] = torch.cat([parts["q"], parts["k"], parts["v"]], 0)
    scale_device = next(iter(state.values())).device
    out[prefix + "logit_scale"] = torch.tensor(4.6052, device=scale_device)  # ln(100), OpenCLIP's trained value
    return out


def pipeline_state_dicts(pipe: DiffusionPipeline) -> dict[str, StateDict]:
    """The component state dicts a checkpoint is made of, by component name."""
    names = ("unet", "vae", "text_encoder", "text_encoder_2")
    return {name: getattr(pipe, name).state_dict() for name in names if getattr(pipe, name, None) is not None}


def ldm_state_dict(arch: Architecture, states: dict[str, StateDict], configs: dict[str, dict[str, Any]]) -> StateDict:
    """Assemble the full LDM-layout state dict of an SD1.x, SDXL or SDXL refiner model from its components."""
    out: StateDict = {}
    _add(out, UNET_PREFIX, unet_to_ldm(states["unet"], configs["unet"]))
    _add(out, VAE_PREFIX, vae_to_ldm(states["vae"], configs["vae"]))
    if arch == Architecture.SD1:
        _add(out, "", clip_to_ldm(states["text_encoder"], SD1_CLIP_PREFIX))
    elif arch == Architecture.SDXL:
        _add(out, "", clip_to_ldm(states["text_encoder"], SDXL_CLIP_PREFIX))
        _add(out, "", open_clip_to_ldm(states["text_encoder_2"], SDXL_OPENCLIP_PREFIX))
    elif arch == Architecture.SDXL_REFINER:
        _add(out, "", open_clip_to_ldm(states["text_encoder_2"], REFINER_OPENCLIP_PREFIX))
    else:
        raise ValueError(f"no LDM layout for {arch}")
    return out


def _add(out: StateDict, prefix: str, part: StateDict) -> None:
    for key, value in part.items():
        if prefix + key in out:
            raise KeyError(f"two tensors map to {prefix + key!r}")
        out[prefix + key] = value


def pipeline_arch(pipe: DiffusionPipeline) -> Architecture:
    if getattr(pipe, "text_encoder_2", None) is None:
        return Architecture.SD1
    return Architecture.SDXL if getattr(pipe, "text_encoder", None) is not None else Architecture.SDXL_REFINER


# Bookkeeping every transformers config carries; none of it shapes the model, so sidecars leave it out.
# (dtype especially: transformers would build CLIPTextModelWithProjection in it.)
_GENERIC_TRANSFORMERS_KEYS = (
    "transformers_version",
    "dtype",
    "torch_dtype",
    "_name_or_path",
    "id2label",
    "label2id",
    "return_dict",
    "output_hidden_states",
    "output_attentions",
    "chunk_size_feed_forward",
    "is_encoder_decoder",
    "problem_type",
)


def pipeline_configs(pipe: DiffusionPipeline) -> dict[str, dict[str, Any]]:
    """JSON-able configs of the pipeline's components, in the form a sidecar holds them."""
    configs: dict[str, dict[str, Any]] = {}
    for name in ALL_COMPONENTS:
        component = getattr(pipe, name, None)
        if component is None:
            continue
        if hasattr(component.config, "to_dict") and not isinstance(component.config, dict):  # transformers
            cfg = component.config.to_dict()
            for drop in _GENERIC_TRANSFORMERS_KEYS:
                cfg.pop(drop, None)
        else:
            cfg = {k: v for k, v in dict(component.config).items() if not k.startswith("_") or k == "_class_name"}
            cfg["_class_name"] = type(component).__name__
        configs[name] = json.loads(json.dumps(cfg))
    return configs


def sidecar_overrides(arch: Architecture, configs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The components whose configs differ from the bundled full-size ones (empty for a standard model)."""
    bundled = bundled_config_dir(arch)
    overrides = {}
    for name, cfg in configs.items():
        file = bundled / name / ("scheduler_config.json" if name == "scheduler" else "config.json")
        if not file.is_file() or not _same_config(name, cfg, json.loads(file.read_text())):
            overrides[name] = cfg
    return overrides


def _same_config(name: str, ours: dict[str, Any], bundled: dict[str, Any]) -> bool:
    """Whether our config builds the same model as the bundled one (defaults filled in on both sides)."""
    if name.startswith("text_encoder"):
        a, b = CLIPTextConfig.from_dict(ours).to_dict(), CLIPTextConfig.from_dict(bundled).to_dict()
        skip = {"transformers_version", "dtype", "torch_dtype", "_name_or_path", "architectures"}
        return all(a.get(k) == b.get(k) for k in set(a) | set(b) if k not in skip)
    cls = getattr(diffusers, bundled["_class_name"])
    params = inspect.signature(cls.__init__).parameters.values()
    expected = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
    expected.update(bundled)
    missing = object()
    return all(
        _norm(value) == _norm(expected.get(key, missing))
        for key, value in ours.items()
        if not key.startswith("_") and expected.get(key, missing) is not missing
    )


def _norm(value: Any) -> Any:
    return json.loads(json.dumps(value))


def save_single_file(
    pipe: DiffusionPipeline,
    path: Path,
    *,
    sidecar: bool | None = None,
    saver: Callable[[StateDict, Path], None] | None = None,
) -> Path:
    """Write `pipe` to `path` (.safetensors or .ckpt by suffix) in the LDM layout; returns `path`.

    A sidecar `<stem>.config.json` is written when the component configs differ from the bundled
    full-size ones (`sidecar=None`), or as forced by `sidecar`. An existing stale sidecar is removed.
    """
    path = Path(path)
    arch = pipeline_arch(pipe)
    configs = pipeline_configs(pipe)
    state = ldm_state_dict(arch, pipeline_state_dicts(pipe), configs)
    state = {k: v.detach().contiguous() for k, v in state.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    if saver is not None:
        saver(state, path)
    elif path.suffix == ".safetensors":
        save_file(state, str(path), metadata={"format": "pt"})
    elif path.suffix in (".ckpt", ".pt", ".pth"):
        save_ckpt(state, path)
    else:
        raise ValueError(f"unknown checkpoint suffix {path.suffix!r}")
    overrides = sidecar_overrides(arch, configs) if sidecar is None or sidecar else {}
    if sidecar and not overrides:
        overrides = configs
    side = sidecar_path(path)
    if overrides:
        side.write_text(json.dumps(overrides, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    elif side.exists():
        side.unlink()
    return path


def save_ckpt(state: StateDict, path: Path) -> None:
    """A pickled `{"state_dict": ...}` as the original LDM/A1111 `.ckpt` files are (plain tensors only)."""
    torch.save({"state_dict": state}, str(path))


def write_diffusers_folder(pipe: DiffusionPipeline, path: Path) -> Path:
    """`save_pretrained` in safetensors: the folder layout users get from the hub."""
    path = Path(path)
    pipe.save_pretrained(str(path), safe_serialization=True)
    return path


def save_vae_file(vae: torch.nn.Module, path: Path, *, prefix: str = "", layout: str = "ldm") -> Path:
    """A stand-alone VAE file as users download them (`vae-ft-mse-840000-ema-pruned`, `sdxl_vae`).

    layout "ldm" writes the original key names (`encoder.down.0.block.0...`, attention as 1x1 convolutions),
    optionally under `prefix` (some files keep `first_stage_model.`); "diffusers" writes the state dict as is.
    """
    path = Path(path)
    state = vae.state_dict()
    if layout == "ldm":
        state = vae_to_ldm(state, dict(vae.config))
    elif layout != "diffusers":
        raise ValueError(f"unknown VAE layout {layout!r}")
    state = {prefix + k: v.detach().contiguous() for k, v in state.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file(state, str(path), metadata={"format": "pt"})
    else:
        torch.save({"state_dict": state}, str(path))
    return path
