"""Identify what a model file is (checkpoint, LoRA, VAE, embedding) and its architecture, from its tensors.

Folder names and file names lie (CivitAI downloads land wherever the browser puts them), so the
decision is made from key names and shapes in the file header. Reading a safetensors header costs
one small read; nothing is loaded. `.ckpt` files are read with `weights_only=True`, so a malicious
pickle cannot run code.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from pipelines.errors import UnsafeCheckpoint
from pipelines.types import Architecture, ModelKind

SAFETENSORS_SUFFIXES = {".safetensors", ".sft"}
PICKLE_SUFFIXES = {".ckpt", ".pt", ".pth", ".bin"}
MODEL_SUFFIXES = SAFETENSORS_SUFFIXES | PICKLE_SUFFIXES

_UNET = "model.diffusion_model."

# Bumped whenever the rules below change, so results cached by the registry from older rules are redone.
PROBE_RULES = 3  # 3: inpainting checkpoints are usable
INPAINT_CHANNELS = 9  # an inpainting UNet's input: latents (4), mask (1), masked picture's latents (4)
CONV_IN = "input_blocks.0.0.weight"


@dataclass(frozen=True)
class ProbeResult:
    kind: ModelKind
    architecture: Architecture
    note: str = ""  # non-empty: the file cannot be used, and this says why
    family: str = ""  # upscalers: the network family spandrel detected (ESRGAN, RealESRGAN Compact, SwinIR, ...)
    inpainting: bool = False  # checkpoints: an inpainting UNet (sd-v1-5-inpainting, SDXL inpainting)


def read_safetensors_header(path: Path) -> dict[str, dict]:
    """The tensor table of a .safetensors file: name -> {"dtype", "shape", ...}; metadata under "__metadata__"."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError("file too short for a safetensors header")
        (length,) = struct.unpack("<Q", raw)
        if length <= 0 or length > 100_000_000:
            raise ValueError("not a safetensors file (bad header length)")
        return json.loads(f.read(length))


def load_pickle_state_dict(path: Path) -> dict:
    """Load a .ckpt/.pt safely: tensors only, never arbitrary objects."""
    import pickle

    import torch

    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=_is_zip(path))
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError) as exc:
        raise UnsafeCheckpoint(
            f"{path.name} is a pickle file that holds more than tensors, so it was not loaded "
            f"(loading it could run code hidden inside). Convert it to .safetensors or get a .safetensors "
            f"version of the model. Detail: {str(exc).splitlines()[0][:200]}"
        ) from exc
    while isinstance(data, dict):  # wrappers: Lightning's {"state_dict": ...}, BasicSR's {"params_ema": ...}
        inner = next((data[k] for k in _WRAPPERS if isinstance(data.get(k), dict)), None)
        if inner is None:
            break
        data = inner
    if not isinstance(data, dict):
        raise UnsafeCheckpoint(f"{path.name} does not hold a dictionary of tensors.")
    return data


_WRAPPERS = ("state_dict", "params_ema", "params")


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def shapes_of(path: Path) -> dict[str, Sequence[int]]:
    """Key -> shape for any supported file, plus "__metadata__" text for safetensors."""
    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        header = read_safetensors_header(path)
        return {k: v["shape"] if k != "__metadata__" else v for k, v in header.items()}
    state = load_pickle_state_dict(path)
    shapes: dict[str, Sequence[int]] = {}
    for key, value in state.items():
        if isinstance(value, dict):  # A1111 embeddings: {"string_to_param": {"*": tensor}, ...}
            shapes.update({f"{key}.{inner}": tuple(getattr(v, "shape", ())) for inner, v in value.items()})
        else:
            shapes[key] = tuple(getattr(value, "shape", ()))
    return shapes


def probe_file(path: Path) -> ProbeResult:
    try:
        shapes = shapes_of(path)
    except UnsafeCheckpoint as exc:
        return ProbeResult(ModelKind.UNKNOWN, Architecture.UNKNOWN, str(exc))
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        return ProbeResult(ModelKind.UNKNOWN, Architecture.UNKNOWN, f"{path.name} could not be read: {exc}")
    return probe_keys(shapes)


def probe_keys(shapes: Mapping[str, object]) -> ProbeResult:
    keys = [k for k in shapes if k != "__metadata__"]
    if any(k.startswith(_UNET) for k in keys):
        return _probe_checkpoint(keys, shapes)
    if _looks_like_lora(keys):
        return ProbeResult(ModelKind.LORA, _lora_architecture(keys, shapes))
    if _looks_like_vae(keys):
        return ProbeResult(ModelKind.VAE, Architecture.UNKNOWN)
    if _looks_like_embedding(keys, shapes):
        return ProbeResult(ModelKind.EMBEDDING, _embedding_architecture(keys, shapes))
    family = upscaler_family(keys)
    if family:
        return ProbeResult(ModelKind.UPSCALER, Architecture.UNKNOWN, family=family)
    return ProbeResult(ModelKind.UNKNOWN, Architecture.UNKNOWN, "no known model layout in this file")


def upscaler_family(keys: Iterable[str]) -> str:
    """The upscaler architecture spandrel recognises from these key names ("" for none).

    spandrel's detection reads key names only, so the header is enough: nothing is loaded here. It is imported
    only for files that are no checkpoint, LoRA, VAE or embedding.
    """
    try:
        from spandrel import MAIN_REGISTRY
    except Exception:  # noqa: BLE001 - a broken torchvision beside torch: upscalers are then not recognised
        return ""
    state = dict.fromkeys(keys)
    for support in MAIN_REGISTRY.architectures("detection"):
        try:
            if support.detect(state):
                return support.architecture.name
        except Exception:  # noqa: BLE001,S112 - a detector that needs values: this file is not for it
            continue
    return ""


def _probe_checkpoint(keys: list[str], shapes: Mapping[str, object]) -> ProbeResult:
    has = lambda prefix: any(k.startswith(prefix) for k in keys)  # noqa: E731
    channels = unet_in_channels(shapes)
    note = ""
    if channels not in (4, INPAINT_CHANNELS):
        note = f"an edit model ({channels} input channels, as instruct-pix2pix): not supported"
    if has("conditioner.embedders.1."):
        arch = Architecture.SDXL
    elif has("conditioner.embedders.0.model."):
        arch = Architecture.SDXL_REFINER
    elif has("cond_stage_model.model."):
        arch = Architecture.SD2
    elif has("cond_stage_model.transformer."):
        arch = Architecture.SD1
    else:
        arch = _arch_from_unet(keys, shapes)
    if arch is Architecture.SD2:
        note = note or "SD 2.x checkpoints are not supported (use an SD 1.x or SDXL checkpoint)"
    elif arch is Architecture.UNKNOWN:
        note = note or "a UNet without a text encoder this app recognizes"
    return ProbeResult(ModelKind.CHECKPOINT, arch, note, inpainting=channels == INPAINT_CHANNELS)


def unet_in_channels(shapes: Mapping[str, object]) -> int:
    """The UNet's input channels, from its first convolution (4 when the file does not say)."""
    shape = _shape(shapes, _UNET + CONV_IN)
    return int(shape[1]) if len(shape) == 4 else 4


def _arch_from_unet(keys: Iterable[str], shapes: Mapping[str, object]) -> Architecture:
    """Checkpoints without text encoders: tell by the cross-attention width."""
    if any(k.startswith(_UNET + "label_emb.") for k in keys):
        return Architecture.SDXL
    for key in keys:
        if key.startswith(_UNET) and key.endswith("attn2.to_k.weight"):
            width = _shape(shapes, key)[1]
            return {768: Architecture.SD1, 1024: Architecture.SD2, 2048: Architecture.SDXL, 1280: Architecture.SDXL_REFINER}.get(
                width, Architecture.UNKNOWN
            )
    return Architecture.UNKNOWN


_LORA_MARKERS = (
    "lora_unet_",
    "lora_te_",
    "lora_te1_",
    "lora_te2_",
    ".lora_down.weight",
    ".lora_up.weight",
    ".lora_A.weight",
    ".lora_B.weight",
    ".lora.down.weight",
    "_lora.down.weight",  # diffusers' old attention processors: attn1.processor.to_q_lora.down.weight
    ".lora_linear_layer.down.weight",
    ".hada_w1_a",
    ".lokr_w1",
)


def _looks_like_lora(keys: list[str]) -> bool:
    return any(marker in k for k in keys for marker in _LORA_MARKERS)


# Layer names only one architecture has, in order, for files whose cross-attention width does not tell.
_LORA_NAME_HINTS: tuple[tuple[re.Pattern[str], Architecture], ...] = (
    (re.compile(r"^(lora_te[12]_|text_encoder_2\.|te2\.)"), Architecture.SDXL),  # two text encoders
    (re.compile(r"^lora_te_"), Architecture.SD1),
    (re.compile(r"transformer_blocks[._][1-9]"), Architecture.SDXL),  # SD1 blocks hold one transformer layer
    # attention at the first level (SDXL has none there), in LDM and diffusers names
    (re.compile(r"^lora_unet_(input_blocks_[12]_1_|output_blocks_([6-9]|1[01])_1_|down_blocks_0_attentions_)"), Architecture.SD1),
    (re.compile(r"^lora_unet_(input_blocks|output_blocks|middle_block)_"), Architecture.SDXL),  # kohya SDXL names
    (re.compile(r"^lora_unet_(down_blocks|up_blocks|mid_block)_"), Architecture.SD1),  # kohya SD1 names
)


_CROSS_WIDTHS = {768: Architecture.SD1, 1024: Architecture.SD2, 2048: Architecture.SDXL}


def _cross_attention_width(key: str, shapes: Mapping[str, object]) -> int | None:
    """The input width of a cross-attention key projection a LoRA key adapts (LoRA's down, LoHa's w_b, LoKr's
    two factors' widths multiplied), or None when the key tells none."""
    if "attn2" not in key or "to_k" not in key:
        return None
    if "down" in key.rsplit(".", 2)[-2] or "lora_A" in key or key.endswith((".hada_w1_b", ".hada_w2_b")):
        shape = _shape(shapes, key)
        return shape[1] if len(shape) >= 2 else None
    if key.endswith((".lokr_w1", ".lokr_w1_b")):
        stem = key.rsplit(".", 1)[0]
        second = next((_shape(shapes, f"{stem}.{n}") for n in ("lokr_w2", "lokr_w2_b") if f"{stem}.{n}" in shapes), ())
        first = _shape(shapes, key)
        return first[1] * second[1] if len(first) >= 2 and len(second) >= 2 else None
    return None


def _lora_architecture(keys: list[str], shapes: Mapping[str, object]) -> Architecture:
    # The cross-attention width is the surest sign; names decide otherwise.
    for key in keys:
        width = _CROSS_WIDTHS.get(_cross_attention_width(key, shapes))
        if width is not None:
            return width
    for pattern, arch in _LORA_NAME_HINTS:
        if any(pattern.search(k) for k in keys):
            return arch
    return Architecture.UNKNOWN


# What trainers leave beside a VAE in unpruned files (the discriminator, loss weights, EMA counters).
_VAE_LEFTOVERS = ("loss.", "model_ema.")


def _looks_like_vae(keys: list[str]) -> bool:
    plain = [k.removeprefix("first_stage_model.") for k in keys if not k.startswith(_VAE_LEFTOVERS)]
    return any(
        k.startswith(("encoder.down.", "decoder.up.", "encoder.down_blocks.", "decoder.up_blocks.")) for k in plain
    ) and all(k.startswith(("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")) for k in plain)


def _looks_like_embedding(keys: list[str], shapes: Mapping[str, object]) -> bool:
    names = set(keys)
    if names & {"emb_params", "clip_l", "clip_g"} or any(k.startswith("string_to_param") for k in keys):
        return True
    # Some tools save a single vector table under the token's own name (diffusers' learned_embeds: one 1-D vector).
    shape = _shape(shapes, keys[0]) if len(keys) == 1 else ()
    return len(shape) in (1, 2) and shape[-1] in (768, 1024, 1280)


def _embedding_architecture(keys: list[str], shapes: Mapping[str, object]) -> Architecture:
    if "clip_g" in keys:
        return Architecture.SDXL
    for key in keys:
        shape = _shape(shapes, key)
        if shape:
            return {768: Architecture.SD1, 1024: Architecture.SD2}.get(shape[-1], Architecture.UNKNOWN)
    return Architecture.UNKNOWN


def _shape(shapes: Mapping[str, object], key: str) -> tuple[int, ...]:
    value = shapes.get(key)
    return tuple(value) if isinstance(value, (list, tuple)) else ()


def probe_diffusers_folder(path: Path) -> ProbeResult:
    """A diffusers pipeline folder: its model_index.json names the pipeline class."""
    try:
        index = json.loads((path / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        return ProbeResult(ModelKind.UNKNOWN, Architecture.UNKNOWN, f"model_index.json unreadable: {exc}")
    cls = index.get("_class_name", "")
    try:
        unet = json.loads((path / "unet" / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        unet = {}
    inpainting = unet.get("in_channels") == INPAINT_CHANNELS
    if "XL" in cls:
        has_te1 = (index.get("text_encoder") or [None])[0] is not None
        arch = Architecture.SDXL if has_te1 else Architecture.SDXL_REFINER
        return ProbeResult(ModelKind.CHECKPOINT, arch, inpainting=inpainting)
    if cls.startswith("StableDiffusion"):
        if unet.get("cross_attention_dim") == 1024:
            return ProbeResult(ModelKind.CHECKPOINT, Architecture.SD2, "SD 2.x models are not supported")
        return ProbeResult(ModelKind.CHECKPOINT, Architecture.SD1, inpainting=inpainting)
    return ProbeResult(ModelKind.CHECKPOINT, Architecture.UNKNOWN, f"unsupported pipeline class {cls or '(none)'}")


def probe_vae_folder(path: Path, filenames: Iterable[str]) -> ProbeResult | None:
    """A diffusers AutoencoderKL folder (config.json + weights), as `vae/` of a hub repo; None if it is not one."""
    names = set(filenames)
    if "config.json" not in names or not any(n.endswith((".safetensors", ".bin")) for n in names):
        return None
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(config, dict) or config.get("_class_name") != "AutoencoderKL":
        return None
    return ProbeResult(ModelKind.VAE, Architecture.UNKNOWN)
