"""Reading a LoRA file: which format it is, its adapted layers, alphas and training metadata.

LoRAs come in several key layouts. Most hold, for each adapted layer, a `down` (rank x in) and an `up`
(out x rank) matrix, and optionally an `alpha` that sets the scale alpha/rank:

- kohya / A1111: `lora_unet_<flat name>.lora_down.weight`, `lora_te_…` (SD1), `lora_te1_…`/`lora_te2_…` (SDXL),
  with `<flat name>.alpha`. LyCORIS LoCon uses the same keys and adds convolution layers (4-D down/up), with
  an optional `lora_mid` core (CP decomposition) for the kernel.
- PEFT (diffusers >= 0.22): `unet.<module path>.lora_A.weight` / `.lora_B.weight`, the scale in the
  `lora_adapter_metadata` header (r, lora_alpha, alpha_pattern, use_rslora) or 1. PEFT's own
  `save_pretrained` writes `base_model.model.<module path>.lora_A.weight` to `adapter_model.safetensors`
  and the scale to `adapter_config.json` beside it.
- older diffusers: `unet.<path>.lora.down.weight`, `text_encoder.<path>.lora_linear_layer.up.weight`, and the
  attention-processor style `…attn1.processor.to_q_lora.down.weight`.

LyCORIS's other layer types use kohya's names with their own tensors (layer_changes.py builds each one's
full-size change): LoHa (`hada_w1_a` …, a Hadamard product of two low-rank products), LoKr (`lokr_w1` …,
a Kronecker product), full (`diff`, `diff_b`: the differences themselves) and norm layers (`w_norm`,
`b_norm`). LoRA, LoHa and LoKr layers may carry DoRA's magnitude (`dora_scale`; PEFT's
`lora_magnitude_vector`).

This module only reads and groups; mapping the layers onto a loaded pipeline's modules is targets.py.
Layouts that are none of these (OFT, IA3, GLoRA) are refused by name rather than applied approximately.
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
from pipelines.loras.layer_changes import FullDiff, HadamardPair, KroneckerPair, LayerChange, LoraPair
from pipelines.loras.names import KOHYA_PREFIXES
from pipelines.types import Architecture

KOHYA_STARTS = tuple(sorted({prefix for prefixes in KOHYA_PREFIXES.values() for prefix in prefixes}))  # lora_unet_, lora_te_, …
PEFT_WEIGHTS, PEFT_CONFIG = "adapter_model", "adapter_config.json"  # the files of PEFT's save_pretrained

# key ending -> role; the first matching ending wins (".lora_up.weight" before shorter forms).
_ROLES: tuple[tuple[str, str], ...] = (
    (".lora_linear_layer.down.weight", "down"),
    (".lora_linear_layer.up.weight", "up"),
    ("_lora.down.weight", "down"),  # attention-processor style: to_q_lora.down.weight
    ("_lora.up.weight", "up"),
    (".lora.down.weight", "down"),
    (".lora.up.weight", "up"),
    (".lora_down.weight", "down"),
    (".lora_up.weight", "up"),
    (".lora_mid.weight", "mid"),  # LoCon's CP core
    (".lora_A.weight", "down"),
    (".lora_B.weight", "up"),
    (".alpha", "alpha"),
    (".dora_scale", "magnitude"),  # LyCORIS DoRA
    (".lora_magnitude_vector.weight", "magnitude"),  # PEFT DoRA
    (".lora_magnitude_vector", "magnitude"),
    *((f".{name}", name) for name in ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2")),
    *((f".{name}", name) for name in ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2")),
    *((f".{name}", name) for name in ("diff", "diff_b", "w_norm", "b_norm")),  # LyCORIS full, norm layers
)

# Layouts we recognize but do not apply, with what to tell the user.
_UNSUPPORTED: tuple[tuple[str, str], ...] = (
    (".oft_blocks", "a LyCORIS OFT"),
    (".oft_diag", "a LyCORIS OFT"),
    ("ia3_", "an IA3 adapter"),
    (".on_input", "an IA3 adapter"),
    (".a1.weight", "a LyCORIS GLoRA"),
)
SUPPORTED_TEXT = "kohya/A1111 LoRA, LyCORIS LoCon, LoHa, LoKr, full or norm (DoRA too), diffusers or PEFT LoRA"

_ARCH_HINTS = (  # training metadata -> architecture, for files whose keys do not tell
    (re.compile(r"sdxl|stable-diffusion-xl", re.I), Architecture.SDXL),
    (re.compile(r"sd_?v?2|stable-diffusion-v2", re.I), Architecture.SD2),
    (re.compile(r"sd_?v?1|stable-diffusion-v1", re.I), Architecture.SD1),
)


@dataclass
class LoraFile:
    path: Path
    format: str  # "kohya", "LyCORIS LoCon", "LyCORIS LoHa", "LyCORIS LoKr", "PEFT", "diffusers"; "… with DoRA"
    pairs: list[LayerChange]
    architecture: Architecture  # what the file was made for, UNKNOWN when nothing tells
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(p.nbytes for p in self.pairs)


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
    pairs: list[LayerChange] = []
    for stem, parts in groups.items():
        alpha = float(parts["alpha"].float().item()) if "alpha" in parts else None
        if alpha is not None and not math.isfinite(alpha):
            raise LoraError(f"{name} is damaged: layer {stem!r} has alpha {alpha}.")
        change = _layer_change(name, stem, parts, alpha)
        if change is None:
            continue  # an alpha without weights: kohya writes these for layers it did not train
        if isinstance(change, LoraPair) and alpha is None and scales:
            change.scale_override = _peft_scale(scales, stem, change.rank)
        pairs.append(change)
    if not pairs:
        raise LoraError(f"{name} holds no LoRA layers (only alphas).")
    return LoraFile(path, _format(list(tensors), pairs), pairs, _architecture(tensors, metadata), metadata)


_LOHA_FACTORS = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")


def _layer_change(name: str, stem: str, parts: dict[str, torch.Tensor], alpha: float | None) -> LayerChange | None:
    """The layer a group of tensors describes; LoraError (naming file and layer) when they do not make one."""
    magnitude = parts.get("magnitude")
    try:
        if any(role.startswith("hada_") for role in parts):
            _require(parts, _LOHA_FACTORS, "LoHa")
            if ("hada_t1" in parts) != ("hada_t2" in parts):
                raise _Damaged("a LoHa layer needs both Tucker cores hada_t1 and hada_t2")
            change: LayerChange = HadamardPair(
                stem, *(parts[r] for r in _LOHA_FACTORS), parts.get("hada_t1"), parts.get("hada_t2"), alpha, magnitude
            )
        elif any(role.startswith("lokr_") for role in parts):
            if "lokr_w1" not in parts:
                _require(parts, ("lokr_w1_a", "lokr_w1_b"), "LoKr")
            if "lokr_w2" not in parts:
                _require(parts, ("lokr_w2_a", "lokr_w2_b"), "LoKr")
            fields = {role.removeprefix("lokr_"): t for role, t in parts.items() if role.startswith("lokr_")}
            change = KroneckerPair(stem, **fields, alpha=alpha, magnitude=magnitude)
        elif any(role in parts for role in ("diff", "diff_b", "w_norm", "b_norm")):
            kind = "norm" if "w_norm" in parts or "b_norm" in parts else "full"
            weight, bias = parts.get("diff", parts.get("w_norm")), parts.get("diff_b", parts.get("b_norm"))
            if weight is None:
                raise _Damaged(f"a LyCORIS {kind} layer needs {'w_norm' if kind == 'norm' else 'diff'}")
            if bias is not None and tuple(bias.shape) != tuple(weight.shape[:1]):
                raise _Damaged(f"its bias difference {tuple(bias.shape)} does not fit {tuple(weight.shape)}")
            if magnitude is not None:
                raise _Damaged(f"DoRA magnitudes on a {kind} layer")
            change = FullDiff(stem, weight, bias, kind)
        elif "down" in parts or "up" in parts:
            if "down" not in parts or "up" not in parts:
                raise _Damaged(f"it has no {'down' if 'down' not in parts else 'up'} weight")
            down, up = parts["down"], parts["up"]
            if down.ndim not in (2, 4) or up.ndim not in (2, 4) or up.shape[1] != down.shape[0]:
                raise _Damaged(f"it has down {tuple(down.shape)} and up {tuple(up.shape)}, which do not multiply")
            if "mid" in parts:  # CP decomposition: (up, mid, down) -> (up, mid·down)
                mid = parts["mid"]
                if mid.ndim != 4 or mid.shape[1] != down.shape[0] or up.shape[1] != mid.shape[0]:
                    raise _Damaged(f"its lora_mid {tuple(mid.shape)} does not fit down {tuple(down.shape)}")
                down = torch.einsum("a b h w, b i -> a i h w", mid.float(), down.float().flatten(1))
            change = LoraPair(stem, down, up, alpha, magnitude=magnitude)
        elif magnitude is not None:
            raise _Damaged("it has DoRA magnitudes but no weights")
        else:
            return None
        change.delta("meta")  # the factors multiply (shapes only, no arithmetic)
    except _Damaged as exc:
        raise LoraError(f"{name} is damaged: layer {stem!r}: {exc}.") from None
    except RuntimeError as exc:  # torch's own shape errors
        raise LoraError(f"{name} is damaged: layer {stem!r} has factors that do not multiply ({exc}).") from None
    return change


class _Damaged(Exception):
    pass


def _require(parts: dict[str, torch.Tensor], roles: tuple[str, ...], kind: str) -> None:
    missing = [r for r in roles if r not in parts]
    if missing:
        raise _Damaged(f"a {kind} layer needs {', '.join(missing)}")


def _role(key: str) -> tuple[str, str] | None:
    for ending, kind in _ROLES:
        if key.endswith(ending):
            return key[: -len(ending)], kind
    return None


def _format(keys: list[str], pairs: list[LayerChange]) -> str:
    kinds = {p.kind for p in pairs}
    if kinds - {"LoRA"}:
        name = "LyCORIS " + "/".join(sorted(kinds - {"LoRA"}))
    elif any(k.startswith(KOHYA_STARTS) for k in keys):
        conv = any(isinstance(p, LoraPair) and p.down.ndim == 4 and tuple(p.down.shape[2:]) != (1, 1) for p in pairs)
        name = "LyCORIS LoCon" if conv else "kohya"
    elif any(".lora_A." in k for k in keys):
        name = "PEFT"
    else:
        name = "diffusers"
    return f"{name} with DoRA" if any(p.magnitude is not None for p in pairs) else name


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
