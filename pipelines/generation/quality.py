"""Fooocus's sampling controls as one value: what a request asks for, and what of it applies to an image.

Fooocus makes its pictures look finished with a few tweaks of the sampling, on by default: sharpness (an
edge-preserving filter on the positive prediction), adaptive CFG ("CFG mimicking from TSNR": a high guidance
scale blended towards a lower one early on), ADM guidance (SDXL's size conditioning scaled differently for
the positive and the negative prompt, early on), and FreeU. `QualityControls` says which of them act on one
image; `guidance.py` applies them during the denoising and leaves the pipeline untouched when none does.

The request's defaults are neutral, so a request that does not name them (an A1111 API call, a record
written before they existed) makes the plain diffusers image; `tables/quality.yaml` holds Fooocus's values,
which the page and the presets start from, and the ranges.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipelines.errors import InvalidRequest
from pipelines.types import Architecture, GenerationRequest

TABLE_PATH = Path(__file__).resolve().parent.parent / "tables" / "quality.yaml"
FLOAT_FIELDS = (
    "sharpness",
    "adaptive_cfg",
    "adm_positive",
    "adm_negative",
    "adm_end",
    "freeu_b1",
    "freeu_b2",
    "freeu_s1",
    "freeu_s2",
)
CONTROL_FIELDS = (*FLOAT_FIELDS[:5], "freeu", *FLOAT_FIELDS[5:], "refiner_swap")  # the request fields, in form order
_DEFAULTS = GenerationRequest()
SWAP_SEPARATE = "separate"  # diffusers' ensemble recipe: what Easel's refiner did before the swap methods existed


@functools.cache
def _table() -> dict[str, Any]:
    data = yaml.safe_load(TABLE_PATH.read_text(encoding="utf-8")) or {}
    for key in ("page_defaults", "neutral", "limits", "refiner_swap"):
        if not isinstance(data.get(key), dict):
            raise ValueError(f"{TABLE_PATH.name}: `{key}` must be a mapping")
    unknown = set(data["page_defaults"]) - set(CONTROL_FIELDS)
    if unknown:
        raise ValueError(f"{TABLE_PATH.name}: page_defaults has unknown fields {sorted(unknown)}")
    return data


def page_defaults() -> dict[str, Any]:
    """Fooocus's values of every control: what the page and the presets start from."""
    return dict(_table()["page_defaults"])


def neutral_values() -> dict[str, float]:
    """The value of each float control that does nothing (what the fast performance modes set)."""
    return {name: float(value) for name, value in _table()["neutral"].items()}


def control_limits() -> dict[str, tuple[float, float]]:
    """field -> (lowest, highest), merged into validation.LIMITS (the page and the API use the same ranges)."""
    return {name: (float(low), float(high)) for name, (low, high) in _table()["limits"].items()}


def swap_methods() -> dict[str, str]:
    """Fooocus's refiner swap methods, each with what it does."""
    return dict(_table()["refiner_swap"])


def check_controls(request: GenerationRequest) -> GenerationRequest:
    """The request with its controls as floats and a known swap method (ranges are checked with LIMITS)."""
    method = str(request.refiner_swap or "").strip().lower()
    if method not in swap_methods():
        raise InvalidRequest(
            f"refiner_swap must be one of {', '.join(swap_methods())}; got {request.refiner_swap!r}.", field="refiner_swap"
        )
    if not isinstance(request.freeu, bool):
        raise InvalidRequest(f"freeu must be true or false, got {request.freeu!r}.", field="freeu")
    if not isinstance(request.prompt_expansion, str):
        raise InvalidRequest("prompt_expansion must be a model name or empty.", field="prompt_expansion")
    return request.replace(
        refiner_swap=method,
        prompt_expansion=request.prompt_expansion.strip(),
        **{name: float(getattr(request, name)) for name in FLOAT_FIELDS},
    )


@dataclass(frozen=True)
class FreeU:
    """diffusers' FreeU factors: b scales the backbone features of the first two up-blocks, s their skips."""

    b1: float
    b2: float
    s1: float
    s2: float


@dataclass(frozen=True)
class QualityControls:
    """The controls that act on one image; neutral values where a control does not apply."""

    sharpness: float = 0.0
    adaptive_cfg: float = 0.0  # 0: off; else the guidance scale mimicked early in the denoising
    adm_positive: float = 1.0
    adm_negative: float = 1.0
    adm_end: float = 0.0
    freeu: FreeU | None = None

    @classmethod
    def for_image(cls, request: GenerationRequest, architecture: Architecture) -> QualityControls:
        """What of the request applies to a model of `architecture`.

        Sharpness and adaptive CFG act on the guided prediction, so only with guidance (CFG above 1), and
        adaptive CFG only when the scale is above the one it mimics, as in Fooocus. ADM scales SDXL's size
        conditioning, which SD 1.x does not have. FreeU acts on every UNet.
        """
        guidance = request.cfg_scale > 1.0
        adm = architecture is Architecture.SDXL and request.adm_end > 0 and (request.adm_positive, request.adm_negative) != (1, 1)
        mimics = guidance and 0 < request.adaptive_cfg < request.cfg_scale
        return cls(
            sharpness=float(request.sharpness) if guidance else 0.0,
            adaptive_cfg=float(request.adaptive_cfg) if mimics else 0.0,
            adm_positive=float(request.adm_positive) if adm else 1.0,
            adm_negative=float(request.adm_negative) if adm else 1.0,
            adm_end=float(request.adm_end) if adm else 0.0,
            freeu=FreeU(request.freeu_b1, request.freeu_b2, request.freeu_s1, request.freeu_s2) if request.freeu else None,
        )

    @property
    def adm(self) -> bool:
        return self.adm_end > 0 and (self.adm_positive, self.adm_negative) != (1.0, 1.0)

    @property
    def guided(self) -> bool:
        """Whether the guided prediction is changed (sharpness or adaptive CFG)."""
        return self.sharpness > 0 or self.adaptive_cfg > 0

    @property
    def active(self) -> bool:
        return self.guided or self.adm or self.freeu is not None

    def metadata(self) -> dict[str, Any]:
        """ImageParams fields: the controls as applied."""
        freeu = self.freeu or FreeU(*(getattr(_DEFAULTS, f"freeu_{k}") for k in ("b1", "b2", "s1", "s2")))
        return {
            "sharpness": self.sharpness,
            "adaptive_cfg": self.adaptive_cfg,
            "adm_positive": self.adm_positive,
            "adm_negative": self.adm_negative,
            "adm_end": self.adm_end,
            "freeu": self.freeu is not None,
            "freeu_b1": freeu.b1,
            "freeu_b2": freeu.b2,
            "freeu_s1": freeu.s1,
            "freeu_s2": freeu.s2,
        }
