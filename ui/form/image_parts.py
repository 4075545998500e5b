"""The form's input-image and hires-fix fields <-> the request's `input` and `hires` parts. Pure functions.

Form fields: input_enabled, input_mode (a key of the engine's input modes), input_denoise and input_scale
(-1: the mode's own, Fooocus's "forced overwrite" sliders), input_upscaler ("Automatic": the engine's
default); hires_enabled, hires_scale, hires_upscaler, hires_steps, hires_denoise, hires_prompt, hires_sampler.
The image itself is no form field: the page stores the uploaded file in the engine's input store and hands
its sha256 over, so remembered settings and restored forms never carry a stale file path. The Inpaint tab's
fields are inpaint_parts.py's; `input_tab` says which tab the job uses.
"""

from __future__ import annotations

from typing import Any, Mapping

from pipelines import HiresFix, ImageInput, InvalidRequest
from ui.form.inpaint_parts import INPAINT_DEFAULTS, INPAINT_TAB, UOV_TAB, form_from_inpaint, inpaint_part

MODE_OWN = -1.0  # input_denoise / input_scale: use the mode's value
AUTOMATIC = "Automatic"  # input_upscaler: the first upscaler model installed, else Lanczos
SAME_SAMPLER = "Use same sampler"  # A1111's words
PART_DEFAULTS: dict[str, Any] = {
    "input_enabled": False,
    "input_mode": "vary_subtle",
    "input_denoise": MODE_OWN,
    "input_scale": MODE_OWN,
    "input_upscaler": AUTOMATIC,
    "hires_enabled": False,
    "hires_scale": 2.0,
    "hires_upscaler": "Latent",
    "hires_steps": 0,
    "hires_denoise": 0.7,
    "hires_prompt": "",
    "hires_sampler": SAME_SAMPLER,
    **INPAINT_DEFAULTS,
}
PART_FIELDS = tuple(PART_DEFAULTS)


def _number(values: Mapping[str, Any], name: str) -> float:
    value = values.get(name, PART_DEFAULTS[name])
    try:
        return float(PART_DEFAULTS[name] if value is None else value)
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"{name}: {value!r} is not a number.", field=name) from exc


def parts_from_form(
    values: Mapping[str, Any], image: str | None, source: str | None = None, mask: str | None = None
) -> dict[str, Any]:
    """{"input": ImageInput | None, "hires": HiresFix | None} for the form; `image` is the stored input's sha256,
    `mask` the stored mask's (the Inpaint tab's painted and uploaded masks together)."""
    out: dict[str, Any] = {"input": None, "hires": None}
    if values.get("input_enabled"):
        if not image:
            raise InvalidRequest(
                "Input Image is on, but no image was given: drop or paste one, or untick it.", field="input_image"
            )
        if values.get("input_tab") == INPAINT_TAB:
            out["input"] = inpaint_part(values, image, mask, source)
            return out
        denoise, scale = _number(values, "input_denoise"), _number(values, "input_scale")
        upscaler = str(values.get("input_upscaler") or AUTOMATIC)
        out["input"] = ImageInput(
            image,
            mode=str(values.get("input_mode") or PART_DEFAULTS["input_mode"]),
            denoise=None if denoise < 0 else denoise,
            scale=None if scale < 0 else scale,
            upscaler=None if upscaler == AUTOMATIC else upscaler,
            source=source,
        )
    elif values.get("hires_enabled"):
        sampler = str(values.get("hires_sampler") or SAME_SAMPLER)
        out["hires"] = HiresFix(
            scale=_number(values, "hires_scale"),
            upscaler=str(values.get("hires_upscaler") or "Latent"),
            steps=int(_number(values, "hires_steps")),
            denoise=_number(values, "hires_denoise"),
            prompt=str(values.get("hires_prompt") or ""),
            sampler="" if sampler == SAME_SAMPLER else sampler,
        )
    return out


def form_from_parts(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Form values for the parts a restored request had (its mode and strength; the image stays as it is)."""
    out: dict[str, Any] = {}
    if "input" in fields:
        part = fields["input"]
        part = part if isinstance(part, dict) or part is None else vars(part)
        out["input_enabled"] = part is not None
        out["input_tab"] = UOV_TAB
        if part and (part.get("mask") or part.get("outpaint")):
            out.update(form_from_inpaint(part))
        elif part:
            out["input_mode"] = part.get("mode") or PART_DEFAULTS["input_mode"]
            out["input_denoise"] = MODE_OWN if part.get("denoise") is None else float(part["denoise"])
            out["input_scale"] = MODE_OWN if part.get("scale") is None else float(part["scale"])
            out["input_upscaler"] = part.get("upscaler") or AUTOMATIC
    if "hires" in fields:
        hires = fields["hires"]
        hires = hires if isinstance(hires, dict) or hires is None else vars(hires)
        out["hires_enabled"] = hires is not None
        if hires:
            defaults = HiresFix()
            out.update(
                hires_scale=float(hires.get("scale", defaults.scale)),
                hires_upscaler=hires.get("upscaler") or defaults.upscaler,
                hires_steps=int(hires.get("steps", 0)),
                hires_denoise=float(hires.get("denoise", defaults.denoise)),
                hires_prompt=hires.get("prompt") or "",
                hires_sampler=hires.get("sampler") or SAME_SAMPLER,
            )
    return out
