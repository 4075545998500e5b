"""Fooocus's sampling controls in image metadata, in the words and forms Fooocus writes and reads.

Fooocus's A1111-style infotext carries `Sharpness: 2`, `ADM Guidance: "(1.5, 0.8, 0.3)"`, `Adaptive CFG: 7`
(its log calls it "CFG Mimicking from TSNR"), `FreeU: "(1.01, 1.02, 0.99, 0.95)"` and `Refiner Swap Method:
joint`; its JSON scheme has the same under snake_case keys; "Fooocus V2" among the styles says the prompt
was expanded, `Fooocus V2 Expansion` holds the expanded prompt. Easel writes the same keys, so Fooocus
restores an Easel image's controls, and reads them back from either app.

What a missing key means depends on who wrote the image: Fooocus leaves out adaptive CFG at its default 7
and the swap method at `joint`; Easel leaves out whatever was off; A1111 has none of them, and its refiner
swaps the model inside one sampling run, which is `joint`.
"""

from __future__ import annotations

from typing import Any

from pipelines.prompts.expansion import FOOOCUS_V2
from pipelines.types import ImageParams

EXPANSION_KEY = "Fooocus V2 Expansion"
FOOOCUS_ADAPTIVE_CFG = 7.0  # what Fooocus leaves out of its metadata
_PARAM_LINE_KEYS = ("Steps", "Sampler", "Seed", "CFG scale", "Size-1")


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def control_fields(params: ImageParams) -> dict[str, str]:
    """The controls' infotext fields, in Fooocus's order and forms; nothing for an image made without them."""
    fields: dict[str, str] = {}
    adm = (float(params.adm_positive), float(params.adm_negative), float(params.adm_end))
    if params.sharpness > 0 or params.adaptive_cfg > 0 or adm != (1.0, 1.0, 0.0):
        fields["Sharpness"] = _num(params.sharpness)
        fields["ADM Guidance"] = str(adm)  # Fooocus writes str() of the tuple and reads it back as one
        if params.adaptive_cfg > 0:
            fields["Adaptive CFG"] = _num(params.adaptive_cfg)
    if params.freeu:
        fields["FreeU"] = str(tuple(float(v) for v in (params.freeu_b1, params.freeu_b2, params.freeu_s1, params.freeu_s2)))
    if params.refiner and params.refiner_swap:
        fields["Refiner Swap Method"] = params.refiner_swap
    if params.prompt_expansion:
        fields[EXPANSION_KEY] = params.prompt_expansion
    return fields


def _numbers(value: Any, count: int) -> tuple[float, ...] | None:
    """"(1.5, 0.8, 0.3)" (or a list) as floats, without eval; None unless it holds `count` numbers."""
    items = value if isinstance(value, (list, tuple)) else str(value or "").strip().strip("()[]").split(",")
    try:
        numbers = tuple(float(v) for v in items)
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == count and all(n == n and abs(n) != float("inf") for n in numbers) else None


def _number(value: Any) -> float | None:
    found = _numbers([value], 1) if not isinstance(value, bool) else None
    return found[0] if found else None


def control_request_fields(params: dict[str, Any], source_app: str) -> dict[str, Any]:
    """GenerationRequest fields for the controls an image's parsed metadata (A1111 labels) names.

    Only for an image that carries generation parameters at all; keys it leaves out get the value its app
    means by leaving them out (see the module's docstring)."""
    fooocus = source_app == "fooocus"
    if not fooocus and not any(k in params for k in _PARAM_LINE_KEYS):
        return {}
    out: dict[str, Any] = {"sharpness": _number(params.get("Sharpness")) or 0.0}
    mimic = _number(params.get("Adaptive CFG", params.get("CFG Mimicking from TSNR")))
    out["adaptive_cfg"] = mimic if mimic is not None else (FOOOCUS_ADAPTIVE_CFG if fooocus else 0.0)
    adm = _numbers(params.get("ADM Guidance"), 3)
    out["adm_positive"], out["adm_negative"], out["adm_end"] = adm if adm else (1.0, 1.0, 0.0)
    freeu = _numbers(params.get("FreeU"), 4)
    out["freeu"] = freeu is not None
    if freeu:
        out["freeu_b1"], out["freeu_b2"], out["freeu_s1"], out["freeu_s2"] = freeu
    swap = str(params.get("Refiner Swap Method") or "").strip().lower()
    out["refiner_swap"] = swap or ("separate" if source_app == "easel" else "joint")
    styles = params.get("Styles")
    if EXPANSION_KEY in params or (isinstance(styles, list) and FOOOCUS_V2 in styles):
        out["prompt_expansion"] = FOOOCUS_V2
    else:
        out["prompt_expansion"] = ""
    return out


def record_request_fields(params: ImageParams) -> dict[str, Any]:
    """The controls of an image's exact record (ImageParams, as applied), as request fields."""
    fields = {name: getattr(params, name) for name in ("sharpness", "adaptive_cfg", "adm_positive", "adm_negative", "adm_end")}
    fields.update({name: getattr(params, name) for name in ("freeu", "freeu_b1", "freeu_b2", "freeu_s1", "freeu_s2")})
    if params.refiner_swap:
        fields["refiner_swap"] = params.refiner_swap
    fields["prompt_expansion"] = params.expansion_model or ""
    return fields
