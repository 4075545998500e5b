"""What a LoRA says about itself, for the UI: base model, trigger words, the tags it was trained on.

Sources, all optional, read without loading a tensor:
- the safetensors header that kohya sd-scripts writes (`ss_tag_frequency`, `ss_base_model_version`,
  `ss_network_dim`, `ss_network_alpha`, `ss_output_name`, …) and the SAI model spec (`modelspec.*`,
  including `modelspec.trigger_phrase`);
- A1111's per-LoRA user metadata beside the file (`<name>.json`: "activation text", "preferred weight");
- a CivitAI helper's `<name>.civitai.info` (`trainedWords`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.loading.probe import SAFETENSORS_SUFFIXES, read_safetensors_header

TOP_TAGS = 20


@dataclass(frozen=True)
class LoraInfo:
    name: str
    path: Path
    architecture: str  # our label ("SD 1.x", "SDXL", "unknown"), from the tensors
    base_model: str = ""  # as the training tool wrote it: ss_base_model_version or modelspec.architecture
    title: str = ""
    description: str = ""
    trigger_words: tuple[str, ...] = ()
    top_tags: tuple[tuple[str, int], ...] = ()  # most frequent training caption tags, with counts
    rank: int | None = None  # ss_network_dim
    alpha: float | None = None  # ss_network_alpha
    preferred_weight: float | None = None  # A1111 user metadata
    metadata: dict[str, str] = field(default_factory=dict, repr=False)  # the raw header metadata

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path),
            "architecture": self.architecture,
            "base_model": self.base_model,
            "title": self.title,
            "description": self.description,
            "trigger_words": list(self.trigger_words),
            "top_tags": [list(t) for t in self.top_tags],
            "rank": self.rank,
            "alpha": self.alpha,
            "preferred_weight": self.preferred_weight,
        }


def header_metadata(path: Path) -> dict[str, str]:
    if path.suffix.lower() not in SAFETENSORS_SUFFIXES:
        return {}
    try:
        return {str(k): str(v) for k, v in (read_safetensors_header(path).get("__metadata__") or {}).items()}
    except (OSError, ValueError, json.JSONDecodeError):
        return {}


def top_tags(tag_frequency: str, limit: int = TOP_TAGS) -> list[tuple[str, int]]:
    """`ss_tag_frequency` is {dataset folder: {tag: count}} as JSON text; merged and sorted by count."""
    try:
        data = json.loads(tag_frequency)
    except (TypeError, json.JSONDecodeError):
        return []
    counts: dict[str, int] = {}
    for folder in data.values() if isinstance(data, dict) else ():
        if not isinstance(folder, dict):
            continue
        for tag, count in folder.items():
            tag = str(tag).strip()
            if tag and isinstance(count, (int, float)):
                counts[tag] = counts.get(tag, 0) + int(count)
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:limit]


def lora_info(name: str, path: Path, architecture: str) -> LoraInfo:
    meta = header_metadata(path)
    sidecar = _json(path.with_suffix(".json"))
    civitai = _json(path.with_suffix(".civitai.info"))
    triggers: list[str] = []
    for text in (meta.get("modelspec.trigger_phrase", ""), str(sidecar.get("activation text", "") or "")):
        triggers += [t.strip() for t in text.split(",") if t.strip()]
    triggers += [str(w).strip() for w in civitai.get("trainedWords") or [] if str(w).strip()]
    return LoraInfo(
        name=name,
        path=path,
        architecture=architecture,
        base_model=meta.get("ss_base_model_version")
        or meta.get("modelspec.architecture")
        or str(sidecar.get("sd version", "") or ""),
        title=meta.get("modelspec.title") or meta.get("ss_output_name") or "",
        description=meta.get("modelspec.description") or str(sidecar.get("description", "") or ""),
        trigger_words=tuple(dict.fromkeys(triggers)),
        top_tags=tuple(top_tags(meta.get("ss_tag_frequency", ""))),
        rank=_number(meta.get("ss_network_dim"), int),
        alpha=_number(meta.get("ss_network_alpha"), float),
        preferred_weight=_number(sidecar.get("preferred weight"), float) or None,
        metadata=meta,
    )


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _number(value: Any, kind: type) -> Any:
    try:
        return kind(float(value)) if value not in (None, "", "None") else None
    except (TypeError, ValueError):
        return None
