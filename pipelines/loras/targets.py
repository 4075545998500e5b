"""Mapping a LoRA file's layer names onto the modules of OUR loaded diffusers pipeline.

The table is built from the model itself (its named modules), under every name a published file may give
each layer (names.py: kohya flat names, LDM block names, diffusers/PEFT dotted paths, with and without the
`text_model.` level that transformers 5 dropped), so a layer is found by what trainers call it, not by
what the installed libraries call it.

`resolve` checks everything before a single weight is touched: the file's architecture against the model's,
every layer name, and every shape; each failure is a LoraError naming the file, and a file that only partly
fits says which part (UNet, text encoders) did not, with counts.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch

from pipelines.errors import LoraError
from pipelines.loras.formats import LoraFile
from pipelines.loras.layer_changes import FullDiff, LayerChange, LoraPair, decomposed_change, magnitude_axis
from pipelines.loras.names import (
    COMPONENTS,
    DOTTED_PREFIXES,
    KOHYA_PREFIXES,
    PART_LABELS,
    claimed_component,
    flat,
    old_diffusers_path,
    published_paths,
    unet_ldm_name,
    unet_ldm_prefixes,
)
from pipelines.types import Architecture

TARGET_TYPES = (torch.nn.Linear, torch.nn.Conv2d, torch.nn.LayerNorm, torch.nn.GroupNorm)  # norms: LyCORIS norm layers


@dataclass
class ModuleIndex:
    """Every LoRA-adaptable layer of a pipeline, under every name a published LoRA file may give it."""

    architecture: Architecture
    modules: dict[tuple[str, str], torch.nn.Module]  # (component, module path) -> Linear/Conv2d
    names: dict[tuple[str, str], str]  # (component, published path, dotted or kohya-flat) -> module path

    @classmethod
    def build(cls, pipe: Any, architecture: Architecture) -> ModuleIndex:
        modules: dict[tuple[str, str], torch.nn.Module] = {}
        names: dict[tuple[str, str], str] = {}
        for component in COMPONENTS:
            model = getattr(pipe, component, None)
            if model is None:
                continue
            ldm = unet_ldm_prefixes(model) if component == "unet" else {}
            for path, module in model.named_modules():
                if not isinstance(module, TARGET_TYPES) or getattr(module, "weight", None) is None:  # affine-free norms
                    continue
                modules[(component, path)] = module
                spellings = published_paths(component, path)
                ldm_path = unet_ldm_name(path, ldm) if ldm else None
                for spelling in spellings + ((ldm_path,) if ldm_path else ()):
                    names.setdefault((component, spelling), path)
                    names.setdefault((component, flat(spelling)), path)
        return cls(architecture, modules, names)

    def targets_of(self, stem: str) -> list[tuple[str, str]]:
        """(component, module path) of every layer a pair's stem may mean, in any supported naming.

        More than one only for names without a component prefix (PEFT `base_model.model.…`), where the
        shapes decide (`resolve`).
        """
        for prefix, component in KOHYA_PREFIXES.get(self.architecture, {}).items():
            if stem.startswith(prefix):
                return self._found(component, stem[len(prefix) :])
        for prefix, components in DOTTED_PREFIXES:
            if stem.startswith(prefix):
                rest = stem[len(prefix) :]
                return [target for c in components for target in self._found(c, old_diffusers_path(c, rest))]
        return []

    def _found(self, component: str, name: str) -> list[tuple[str, str]]:
        path = self.names.get((component, name))
        return [] if path is None else [(component, path)]


@dataclass
class LayerPatch:
    """One layer of one file, resolved: which parameter it changes and by how much per unit weight."""

    component: str
    path: str
    weight: torch.nn.Parameter
    pair: LayerChange

    @property
    def low_rank(self) -> bool:
        """A plain low-rank product: its factors can be stacked with others' (no full-size temporary)."""
        return isinstance(self.pair, LoraPair) and self.pair.magnitude is None

    @property
    def magnitude_axis(self) -> int | None:
        """DoRA's axis for this weight (0: per output channel, 1: per input channel); None without DoRA."""
        magnitude = self.pair.magnitude
        return None if magnitude is None else magnitude_axis(magnitude, tuple(self.weight.shape))

    def change(self, original: torch.Tensor, lora_weight: float, start: int = 0) -> torch.Tensor:
        """What this layer adds to `original` at `lora_weight`: float32, the parameter's rows from `start` on
        (all of them, or a block of them; DoRA per input channel needs all)."""
        rows = original.shape[0]
        delta = self.pair.rows(start, start + rows, original.device).reshape(original.shape).mul_(self.pair.scale)
        if self.pair.magnitude is not None:
            delta = decomposed_change(original, delta, self.pair.magnitude, self.magnitude_axis, start)
        return delta.mul_(lora_weight)


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
        targets = index.targets_of(pair.stem)
        if not targets:
            unknown.append(pair.stem)
            continue
        target = next((t for t in targets if _fits(pair, index.modules[t].weight)), targets[0])
        module = index.modules[target]
        _check_shape(name, model_name, pair, target, module.weight)
        patches.append(LayerPatch(target[0], target[1], module.weight, pair))
        bias = getattr(pair, "bias", None)
        if bias is not None:  # LyCORIS full / norm: the bias's difference, patched like any other weight
            if module.bias is None:
                raise LoraError(f"{name} changes the bias of {target[0]}.{target[1]}, which has none in the model {model_name}.")
            patches.append(LayerPatch(target[0], f"{target[1]}.bias", module.bias, FullDiff(pair.stem, bias, kind=pair.kind)))
    if unknown:
        raise LoraError(misfit_message(name, f"the {arch.label} model {model_name}", lora.pairs, unknown))
    return patches


def misfit_message(name: str, model: str, pairs: list[LayerChange], unknown: list[str]) -> str:
    """Which parts of a LoRA (UNet, text encoders) are not in the model, with counts and examples."""
    total = Counter(claimed_component(pair.stem) for pair in pairs)
    missing: dict[str | None, list[str]] = {}
    for stem in unknown:
        missing.setdefault(claimed_component(stem), []).append(stem)
    order = {component: i for i, component in enumerate(COMPONENTS)}
    details = []
    for part in sorted(total, key=lambda p: order.get(p or "", len(order))):
        label = PART_LABELS.get(part or "", "layers without a model prefix")
        stems = missing.get(part, [])
        if not stems:
            details.append(f"{label}: all {total[part]} found")
            continue
        examples = ", ".join(repr(s) for s in stems[:2]) + (", …" if len(stems) > 2 else "")
        details.append(f"{label}: {len(stems)} of {total[part]} not found, e.g. {examples}")
    what = (
        "none of its layers exist in it"
        if len(unknown) == len(pairs)
        else f"{len(unknown)} of its {len(pairs)} layers are not in it"
    )
    return f"{name} does not fit {model}: {what} ({'; '.join(details)}). It may be made for another model type."


def _fits(pair: LayerChange, weight: torch.Tensor) -> bool:
    out_ch, *rest = pair.shape
    out_ok = out_ch == weight.shape[0]
    in_ok = math.prod(rest) == math.prod(weight.shape[1:])
    kernel_ok = len(rest) < 3 or weight.ndim < 4 or tuple(rest[1:]) == tuple(weight.shape[2:])
    magnitude_ok = pair.magnitude is None or magnitude_axis(pair.magnitude, tuple(weight.shape)) is not None
    return out_ok and in_ok and kernel_ok and magnitude_ok


def _check_shape(name: str, model_name: str, pair: LayerChange, target: tuple[str, str], weight: torch.Tensor) -> None:
    if not _fits(pair, weight):
        gives = f"{tuple(pair.shape)}" + (
            f" with DoRA magnitudes {tuple(pair.magnitude.shape)}" if pair.magnitude is not None else ""
        )
        raise LoraError(
            f"{name} does not fit the model {model_name}: layer {target[0]}.{target[1]} has weights of shape "
            f"{tuple(weight.shape)}, the {pair.kind} gives {gives}. It was probably made for another model type."
        )


def group_by_parameter(patches: list[tuple[LayerPatch, float]]) -> dict[int, list[tuple[LayerPatch, float]]]:
    """Patches of several LoRAs gathered per parameter, so each weight is rewritten once."""
    out: dict[int, list[tuple[LayerPatch, float]]] = {}
    for patch, weight in patches:
        out.setdefault(id(patch.weight), []).append((patch, weight))
    return out


def stacked_factors(group: list[tuple[LayerPatch, float]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(U, D) in float32 with U @ D = Σ weightᵢ·scaleᵢ·(upᵢ @ downᵢ) over the group's plain low-rank pairs: the
    ranks side by side, scales folded into U.

    One product of the stacked factors sums every LoRA on the layer in the float32 accumulator of a single
    matrix multiply, instead of one full-size temporary per LoRA.
    """
    group = [(p, w) for p, w in group if p.low_rank]
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


@torch.no_grad()
def add_changes_(weight: torch.Tensor, group: list[tuple[LayerPatch, float]]) -> None:
    """weight += every change of `group` (LoHa, LoKr, DoRA and plain pairs together), summed in float32 against
    the weight as it is now and rounded once.

    As in add_low_rank_, a block of rows at a time on the CPU, so the float32 copies stay in the cache and
    the weight is read and written once; all rows at once on a GPU, or where DoRA normalises per input
    channel (its norms run over all rows).
    """
    rows = weight.shape[0]
    whole = weight.device.type != "cpu" or any(patch.magnitude_axis == 1 for patch, _ in group)
    step = rows if whole else max(1, CHUNK_ELEMENTS // max(1, weight[0].numel()))
    up, down = stacked_factors(group, weight.device) if any(patch.low_rank for patch, _ in group) else (None, None)
    for start in range(0, rows, step):
        block = weight[start : start + step]
        original = block.float()
        total = original.clone()
        for patch, lora_weight in group:
            if not patch.low_rank:
                total += patch.change(original, lora_weight, start)
        if up is not None:
            total += (up[start : start + step] @ down).reshape(original.shape)
        block.copy_(total)
