"""The Inpaint or Outpaint tab's fields <-> the request's input part with a mask. Pure functions.

Form fields: input_tab ("uov" or "inpaint": which tab of the Input Image panel the job uses), inpaint_method (a key
of the engine's Inpaint modes), inpaint_prompt, outpaint (sides), outpaint_fraction, inpaint_denoise, inpaint_fill,
only_masked, only_masked_padding, mask_blur, invert_mask, inpaint_model ("Same as the model" or a checkpoint).
The picture and the mask are no form fields: the page stores what the editor holds and hands over the hashes.
A method sets its own strength, masked content and area (Fooocus does so when a method is picked); `method_values`
says which.
"""

from __future__ import annotations

from typing import Any, Mapping

from pipelines import ImageInput, InputModes, InvalidRequest

UOV_TAB, INPAINT_TAB = "uov", "inpaint"
SAME_MODEL = "Same as the model"
SIDES = ("left", "right", "top", "bottom")
DEFAULT_METHOD = "inpaint"
INPAINT_DEFAULTS: dict[str, Any] = {
    "input_tab": UOV_TAB,
    "inpaint_method": DEFAULT_METHOD,
    "inpaint_prompt": "",
    "outpaint": [],
    "outpaint_fraction": 0.3,
    "inpaint_denoise": 1.0,
    "inpaint_fill": "fill",
    "only_masked": False,
    "only_masked_padding": 32,
    "mask_blur": 4,
    "invert_mask": False,
    "inpaint_model": SAME_MODEL,
}
FILLS = [
    ("Fill (from the colours around)", "fill"),
    ("Original", "original"),
    ("Latent noise", "latent_noise"),
    ("Latent nothing", "latent_nothing"),
]


def methods() -> list[tuple[str, str]]:
    """(label, key) of the engine's Inpaint modes (those that need a mask), Fooocus's list."""
    return [(mode.label, mode.key) for mode in InputModes().all() if mode.mask == "required"]


def method_values(key: str) -> dict[str, Any]:
    """The form values a method sets: its strength, masked content and area."""
    mode = InputModes().get(key)
    return {"inpaint_denoise": mode.denoise, "inpaint_fill": mode.fill, "only_masked": mode.only_masked}


def _number(values: Mapping[str, Any], name: str) -> float:
    value = values.get(name, INPAINT_DEFAULTS[name])
    try:
        return float(INPAINT_DEFAULTS[name] if value is None else value)
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"{name}: {value!r} is not a number.", field=name) from exc


def inpaint_part(values: Mapping[str, Any], image: str, mask: str | None, source: str | None = None) -> ImageInput:
    """The input part of the Inpaint tab: the stored picture's and mask's hashes, and the tab's settings."""
    sides = tuple(str(side).lower() for side in values.get("outpaint") or ())
    if mask is None and not sides:
        raise InvalidRequest(
            "Inpaint: paint over the part to change (or upload a mask), or tick an outpaint side.", field="inpaint_mask"
        )
    blur = int(_number(values, "mask_blur"))
    model = str(values.get("inpaint_model") or SAME_MODEL)
    return ImageInput(
        image,
        mode=str(values.get("inpaint_method") or DEFAULT_METHOD),
        denoise=_number(values, "inpaint_denoise"),
        source=source,
        mask=mask,
        mask_blur_x=blur,
        mask_blur_y=blur,
        invert_mask=bool(values.get("invert_mask")),
        inpaint_fill=str(values.get("inpaint_fill") or INPAINT_DEFAULTS["inpaint_fill"]),
        only_masked=bool(values.get("only_masked")),
        only_masked_padding=int(_number(values, "only_masked_padding")),
        outpaint=sides,
        outpaint_fraction=_number(values, "outpaint_fraction"),
        inpaint_prompt=str(values.get("inpaint_prompt") or ""),
        inpaint_model=None if model == SAME_MODEL else model,
    )


def form_from_inpaint(part: Mapping[str, Any]) -> dict[str, Any]:
    """Form values of a restored input part with a mask (or outpaint sides); {} for one without."""
    if not (part.get("mask") or part.get("outpaint")):
        return {}
    keys = [key for _, key in methods()]
    mode = part.get("mode")
    return {
        "input_tab": INPAINT_TAB,
        "inpaint_method": mode if mode in keys else DEFAULT_METHOD,
        "inpaint_prompt": part.get("inpaint_prompt") or "",
        "outpaint": list(part.get("outpaint") or []),
        "outpaint_fraction": float(part.get("outpaint_fraction") or INPAINT_DEFAULTS["outpaint_fraction"]),
        "inpaint_denoise": float(part["denoise"])
        if part.get("denoise") is not None
        else method_values(mode if mode in keys else DEFAULT_METHOD)["inpaint_denoise"],
        "inpaint_fill": part.get("inpaint_fill") or INPAINT_DEFAULTS["inpaint_fill"],
        "only_masked": bool(part.get("only_masked")),
        "only_masked_padding": int(part.get("only_masked_padding", INPAINT_DEFAULTS["only_masked_padding"])),
        "mask_blur": int(part.get("mask_blur_x", INPAINT_DEFAULTS["mask_blur"])),
        "invert_mask": bool(part.get("invert_mask")),
        "inpaint_model": part.get("inpaint_model") or SAME_MODEL,
    }
