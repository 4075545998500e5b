"""Reading a LoRA file: which format it is, its low-rank pairs, alphas and training metadata.

LoRAs come in several key layouts, all holding the same thing: for each adapted layer a `down` (rank x in)
and an `up` (out x rank) matrix, and optionally an `alpha` that sets the scale alpha/rank:

- kohya / A1111: `lora_unet_<flat name>.lora_down.weight`, `lora_te_…` (SD1), `lora_te1_…`/`lora_te2_…` (SDXL),
  with `<flat name>.alpha`. LyCORIS LoCon uses the same keys and adds convolution layers (4-D down/up).
- PEFT (diffusers >= 0.22): `unet.<module path>.lora_A.weight` / `.lora_B.weight`, the scale in the
  `lora_adapter_metadata` header (r, lora_alpha, alpha_pattern, use_rslora) or 1. PEFT's own
  `save_pretrained` writes `base_model.model.<module path>.lora_A.weight` to `adapter_model.safetensors`
  and the scale to `adapter_config.json` beside it.
- older diffusers: `unet.<path>.lora.down.weight`, `text_encoder.<path>.lora_linear_layer.up.weight`, and the
  attention-processor style `…attn1.processor.to_q_lora.down.weight`.

This module only reads and groups; mapping the groups onto a loaded pipeline's modules is targets.py.
Layouts that are not a plain low-rank product (LoHa, LoKr, DoRA, CP-decomposed LoCon) are refused by name
rather than applied approximately.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pipelines.errors import LoraError, UnsafeCheckpoint
from pipelines.loading.probe import SAFETENSORS_SUFFIXES, load_pickle_state_dict, probe_keys
from pipelines.loras.names import KOHYA_PREFIXES
from pipelines.types import Architecture

KOHYA_STARTS = tuple(sorted({prefix for prefixes in KOHYA_PREFIXES.values() for prefix in prefixes}))  # lora_unet_, lora_te_, …
PEFT_WEIGHTS, PEFT_CONFIG = "adapter_model", "adapter_config.json"  # the files of PEFT's save_pretrained

# key ending -> role; the longest matching ending wins (".lora_up.weight" before ".weight" forms).
_ROLES: tuple[tuple[str, str], ...] = (
    (".lora_linear_layer.down.weight", "down"),
    (".lora_linear_layer.up.weight", "up"),
    ("_lora.down.weight", "down"),  # attention-processor style: to_q_lora.down.weight
    ("_lora.up.weight", "up"),
    (".lora.down.weight", "down"),
    (".lora.up.weight", "up"),
    (".lora_down.weight", "down"),
    (".lora_up.weight", "up"),
    (".lora_A.weight", "down"),
    (".lora_B.weight", "up"),
    (".alpha", "alpha"),
)

# Layouts we recognize but do not apply, with what to tell the user.
_UNSUPPORTED: tuple[tuple[str, str], ...] = (
    ("hada_w1_a", "a LyCORIS LoHa"),
    ("lokr_w1", "a LyCORIS LoKr"),
    ("lokr_w2", "a LyCORIS LoKr"),
    ("dora_scale", "a DoRA LoRA (it has dora_scale weights)"),
    ("lora_magnitude_vector", "a DoRA LoRA (it has magnitude vectors)"),
    (".lora_mid.weight", "a LoCon with CP decomposition (lora_mid weights)"),
    (".diff", "a full-weight difference (LyCORIS 'full')"),
    ("ia3_", "an IA3 adapter"),
)
SUPPORTED_TEXT = "kohya/A1111 LoRA, LyCORIS LoCon, diffusers or PEFT LoRA"

_ARCH_HINTS = (  # training metadata -> architecture, for files whose keys do not tell
    (re.compile(r"sdxl|stable-diffusion-xl", re.I), Architecture.SDXL),
    (re.compile(r"sd_?v?2|stable-diffusion-v2", re.I), Architecture.SD2),
    (re.compile(r"sd_?v?1|stable-diffusion-v1", re.I), Architecture.SD1),
)


@dataclass
class LoraPair:
    """One adapted layer as the file names it: delta = scale * (up @ down)."""

    stem: str  # the key without its role ending, e.g. "lora_unet_down_blocks_0_…_to_q" or "unet.down_blocks.0…to_q"
    down: torch.Tensor
    up: torch.Tensor
    alpha: float | None = None
    scale_override: float | None = None  # from PEFT metadata, when the file carries no alpha

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    @property
    def scale(self) -> float:
        """alpha/rank, as kohya and diffusers define it; 1 when the file gives no alpha."""
        if self.alpha is not None:
            return self.alpha / self.rank
        return 1.0 if self.scale_override is None else self.scale_override

    def delta(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """up @ down in float32 with the layer's own kernel shape still flattened: (out, in*kh*kw)."""
        up = self.up.to(device=device, dtype=torch.float32).flatten(1)
        down = self.down.to(device=device, dtype=torch.float32).flatten(1)
        return up @ down

    @property
    def nbytes(self) -> int:
        return self.down.numel() * self.down.element_size() + self.up.numel() * self.up.element_size()


@dataclass
class LoraFile:
    path: Path
    format: str  # "kohya", "LyCORIS LoCon", "PEFT", "diffusers"
    pairs: list[LoraPair]
    architecture: Architecture  # what the file was made for, UNKNOWN when nothing tells
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(p.nbytes for p in self.pairs)

    @property
    def is_kohya(self) -> bool:
        return self.format in ("kohya", "LyCORIS LoCon")


def read_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors of a LoRA file and its safetensors header metadata (empty for pickles)."""
    try:
        if path.suffix.lower() in SAFETENSORS_SUFFIXES:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt", device="cpu") as f:
                metadata = dict(f.metadata() or {})
                return {k: f.get_tensor(k) for k in f.keys()}, metadata
        state = load_pickle_state_dict(path)
    except UnsafeCheckpoint as exc:
        raise LoraError(f"LoRA {path.name}: {exc}") from exc
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise LoraError(f"LoRA {path.name} could not be read ({type(exc).__name__}: {exc}).") from exc
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}, {}


def read_lora(path: Path) -> LoraFile:
    tensors, metadata = read_tensors(path)
    return parse_lora(path, tensors, metadata, peft_config(path))


def peft_config(path: Path) -> dict | None:
    """The `adapter_config.json` PEFT's save_pretrained writes beside `adapter_model.*` (r, lora_alpha, …), if any."""
    if path.stem != PEFT_WEIGHTS:
        return None
    try:
        config = json.loads((path.parent / PEFT_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def parse_lora(
    path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None, adapter_config: dict | None = None
) -> LoraFile:
    """Group a state dict into low-rank pairs; LoraError (naming the file) for anything else."""
    metadata = dict(metadata or {})
    name = path.name
    if not tensors:
        raise LoraError(f"LoRA {name} holds no tensors.")
    for marker, what in _UNSUPPORTED:
        if any(marker in k for k in tensors):
            raise LoraError(f"{name} is {what}; only {SUPPORTED_TEXT} files can be used.")
    groups: dict[str, dict[str, torch.Tensor]] = {}
    unknown: list[str] = []
    for key, value in tensors.items():
        role = _role(key)
        if role is None:
            unknown.append(key)
            continue
        stem, kind = role
        groups.setdefault(stem, {})[kind] = value
    if unknown:
        raise LoraError(
            f"{name} is not a LoRA this app understands: {len(unknown)} of its {len(tensors)} tensors have no "
            f"LoRA role, e.g. {', '.join(repr(k) for k in unknown[:3])}. Supported: {SUPPORTED_TEXT}."
        )
    scales = _peft_scales(metadata) or ({"": adapter_config} if adapter_config else {})
    pairs: list[LoraPair] = []
    for stem, parts in groups.items():
        if "down" not in parts and "up" not in parts:
            continue  # an alpha without weights: kohya writes these for layers it did not train
        if "down" not in parts or "up" not in parts:
            missing = "down" if "down" not in parts else "up"
            raise LoraError(f"{name} is damaged: layer {stem!r} has no {missing} weight.")
        down, up = parts["down"], parts["up"]
        if down.ndim not in (2, 4) or up.ndim not in (2, 4) or up.shape[1] != down.shape[0]:
            raise LoraError(
                f"{name} is damaged: layer {stem!r} has down {tuple(down.shape)} and up {tuple(up.shape)}, which do not multiply."
            )
        alpha = float(parts["alpha"].float().item()) if "alpha" in parts else None
        if alpha is not None and not math.isfinite(alpha):
            raise LoraError(f"{name} is damaged: layer {stem!r} has alpha {alpha}.")
        pair = LoraPair(stem, down, up, alpha)
        if alpha is None and scales:
            pair.scale_override = _peft_scale(scales, stem, pair.rank)
        pairs.append(pair)
    if not pairs:
        raise LoraError(f"{name} holds no LoRA layers (only alphas).")
    return LoraFile(path, _format(list(tensors), pairs), pairs, _architecture(tensors, metadata), metadata)


def _role(key: str) -> tuple[str, str] | None:
    for ending, kind in _ROLES:
        if key.endswith(ending):
            return key[: -len(ending)], kind
    return None


def _format(keys: list[str], pairs: list[LoraPair]) -> str:
    if any(k.startswith(KOHYA_STARTS) for k in keys):
        conv = any(p.down.ndim == 4 and tuple(p.down.shape[2:]) != (1, 1) for p in pairs)
        return "LyCORIS LoCon" if conv else "kohya"
    if any(".lora_A." in k for k in keys):
        return "PEFT"
    return "diffusers"


def _architecture(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Architecture:
    arch = probe_keys({k: tuple(v.shape) for k, v in tensors.items()}).architecture
    if arch is not Architecture.UNKNOWN:
        return arch
    hint = metadata.get("ss_base_model_version") or metadata.get("modelspec.architecture") or ""
    for pattern, found in _ARCH_HINTS:
        if pattern.search(hint):
            return found
    return Architecture.UNKNOWN


# -- PEFT scales ---------------------------------------------------------------------------------------


def _peft_scales(metadata: dict[str, str]) -> dict[str, dict]:
    """Per component ("unet", "text_encoder", …) the LoraConfig fields diffusers writes into the header."""
    raw = metadata.get("lora_adapter_metadata")
    if not raw:
        return {}
    try:
        flat = json.loads(raw)
    except json.JSONDecodeError:
        return {}
    out: dict[str, dict] = {}
    for key, value in flat.items():
        component, _, field_name = key.rpartition(".")
        out.setdefault(component or "", {})[field_name] = value
    return out


def _peft_scale(scales: dict[str, dict], stem: str, rank: int) -> float | None:
    component = next((c for c in sorted(scales, key=len, reverse=True) if c and stem.startswith(c + ".")), "")
    config = scales.get(component)
    if not config or "lora_alpha" not in config:
        return None
    path = stem[len(component) + 1 :] if component else stem
    alpha = float(config["lora_alpha"])
    for pattern, value in (config.get("alpha_pattern") or {}).items():
        if re.match(rf"(.*\.)?({pattern})$", path):  # peft's own rule for pattern keys
            alpha = float(value)
            break
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
