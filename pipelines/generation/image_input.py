"""The input-image part of a request, planned: which mode (tables/input_modes.yaml), how much is re-made, the
size of the result, the steps, and the image made ready for the diffusion pass (upscaled or framed).

Modes with a `scale` (Vary, Upscale) make the input's own size times the scale, in multiples of 8; A1111's
img2img makes the request's width x height, framed by its resize mode. Steps: a mode whose steps come from
the performance mode runs that mode's `input_steps` (Fooocus's count of steps run), so the schedule is made
long enough that `denoise` of it is that many steps; otherwise the request's steps are the schedule (A1111).
A mask (or outpaint sides) makes the job an inpaint, planned by masking.py: the result is the picture's own size
(grown by the outpaint) for the Inpaint modes, the request's for A1111's img2img.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml
from PIL import Image

from pipelines.errors import InvalidRequest
from pipelines.generation.img2img import schedule_length
from pipelines.generation.masking import MaskPlan, canvas_size, plan_mask
from pipelines.generation.upscale import UpscalerLibrary
from pipelines.images.resize import ResizeMode, lanczos, multiple_of_8, resize_image
from pipelines.performance import PerformanceTable
from pipelines.types import GenerationRequest, ImageInput
from pipelines.validation import LIMITS

TABLE_PATH = Path(__file__).parent.parent / "tables" / "input_modes.yaml"
SCALE = (1.0, 8.0)
NOISE_MULTIPLIER = (0.0, 1.5)  # A1111's "Noise multiplier for img2img"
MAX_PLAIN_UPSCALE = 8192  # an upscale without a diffusion pass (Fast 2x, A1111's extras) may go beyond the models' 4096


@dataclass(frozen=True)
class InputMode:
    key: str
    label: str
    denoise: float
    scale: float | None  # None: the request's size (A1111's img2img)
    upscaler: bool
    steps_from: str  # "input_steps", "request" or "steps_run"
    mask: str = "none"  # "none", "optional" or "required"
    fill: str = "fill"  # the masked content of an inpaint
    only_masked: bool = False


class InputModes:
    def __init__(self, path: Path = TABLE_PATH):
        table = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        self._modes = {}
        for key, row in (table.get("modes") or {}).items():
            if row.get("steps_from") not in ("input_steps", "request", "steps_run"):
                raise ValueError(f"input_modes.yaml: {key}: steps_from must be input_steps, request or steps_run")
            if row.get("mask", "none") not in ("none", "optional", "required"):
                raise ValueError(f"input_modes.yaml: {key}: mask must be none, optional or required")
            scale = row.get("scale")
            self._modes[key] = InputMode(
                key,
                str(row["label"]),
                float(row["denoise"]),
                None if scale is None else float(scale),
                bool(row.get("upscaler")),
                row["steps_from"],
                row.get("mask", "none"),
                str(row.get("fill", "fill")),
                bool(row.get("only_masked", False)),
            )

    def keys(self) -> list[str]:
        return list(self._modes)

    def all(self) -> list[InputMode]:
        return list(self._modes.values())

    def get(self, key: str) -> InputMode:
        """By key or label ("vary_subtle" or "Vary (Subtle)"); InvalidRequest naming input.mode otherwise."""
        for mode in self._modes.values():
            if str(key).strip().lower() in (mode.key, mode.label.lower()):
                return mode
        raise InvalidRequest(f"Unknown input mode {key!r}. Known: {', '.join(self._modes)}.", field="input.mode")


@dataclass(frozen=True)
class InputPlan:
    mode: InputMode
    denoise: float
    width: int  # the result's size
    height: int
    steps: int  # the schedule length given to the pipeline (denoise x steps are run)
    resize: ResizeMode
    upscaler: str | None  # the upscaler of an upscaling mode, resolved
    scale: float | None
    mask: MaskPlan | None = None  # an inpaint's mask settings; None: no mask
    noise_multiplier: float = 1.0  # A1111's initial noise multiplier: the start noise scaled

    @property
    def diffusion(self) -> bool:
        return self.denoise > 0


def _number(value: Any, field: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not low <= value <= high:
        raise InvalidRequest(f"{field} must be a number from {low:g} to {high:g}, got {value!r}.", field=field)
    return float(value)


def plan_input(
    request: GenerationRequest,
    image_size: tuple[int, int],
    modes: InputModes,
    performance: PerformanceTable,
    upscalers: UpscalerLibrary,
) -> InputPlan:
    """The plan for `request.input` on an image of `image_size`; InvalidRequest naming the field at fault."""
    part: ImageInput = request.input  # type: ignore[assignment]
    mode = modes.get(part.mode)
    denoise = _number(mode.denoise if part.denoise is None else part.denoise, "input.denoise", 0.0, 1.0)
    mask = _mask_plan(part, mode, denoise)
    if mask is not None and mask.outpaint:
        denoise = 1.0  # the new area is made from nothing: full strength, as Fooocus outpaints
    try:
        resize = ResizeMode(part.resize_mode)
    except ValueError as exc:
        known = ", ".join(m.value for m in ResizeMode)
        raise InvalidRequest(f"Unknown resize mode {part.resize_mode!r}. Known: {known}.", field="input.resize_mode") from exc
    scale = mode.scale if part.scale is None else _number(part.scale, "input.scale", *SCALE)
    if mask is not None and scale is not None:  # an Inpaint mode: the picture's own size, grown by the outpaint
        if scale != 1.0:
            raise InvalidRequest(f"input.scale: {mode.label} keeps the picture's size; leave the scale out.", field="input.scale")
        width, height = canvas_size(mask, *image_size)
        if max(width, height) > LIMITS["width"][1]:
            raise InvalidRequest(
                f"The outpaint would make {width}x{height}; the largest side is {LIMITS['width'][1]:g}.", field="input.outpaint"
            )
    elif part.size is not None:  # A1111's extras: a size of their own rounding, for an upscale without a pass
        if denoise > 0 or len(part.size) != 2:
            raise InvalidRequest("input.size is for an upscale without a diffusion pass (strength 0).", field="input.size")
        width, height = (int(_number(side, "input.size", 1, MAX_PLAIN_UPSCALE)) for side in part.size)
        scale = width / image_size[0]
    elif scale is None:
        width, height = request.width, request.height
    else:  # a diffusion pass needs multiples of 8 within the model's limits; a plain upscale does not
        width, height = image_size[0] * scale, image_size[1] * scale
        largest = LIMITS["width"][1] if denoise > 0 else MAX_PLAIN_UPSCALE
        if max(width, height) > largest + 4:
            raise InvalidRequest(
                f"input.scale {scale:g} would make {width:.0f}x{height:.0f}; the largest side is {largest:g}.",
                field="input.scale",
            )
        width, height = multiple_of_8(width, height) if denoise > 0 else (max(1, round(width)), max(1, round(height)))
    steps = request.steps
    if mode.steps_from == "steps_run" and denoise > 0:
        steps = schedule_length(request.steps, denoise)
    elif mode.steps_from == "input_steps" and request.performance:
        run = performance.get(request.performance).input_steps
        if run:
            steps = schedule_length(run, denoise) if denoise > 0 else run
    if denoise > 0 and int(steps * denoise) < 1:  # diffusers would run no step at all; A1111 runs at least one
        steps = schedule_length(1, denoise)
    upscaler = upscalers.resolve(part.upscaler, field="input.upscaler", latent=False).name if mode.upscaler else None
    if part.upscaler_2 is not None:
        upscalers.resolve(part.upscaler_2, field="input.upscaler_2", latent=False)
        _number(part.upscaler_2_visibility, "input.upscaler_2_visibility", 0.0, 1.0)
    multiplier = _number(part.noise_multiplier, "input.noise_multiplier", *NOISE_MULTIPLIER)
    return InputPlan(mode, denoise, int(width), int(height), int(steps), resize, upscaler, scale, mask, multiplier)


def _mask_plan(part: ImageInput, mode: InputMode, denoise: float) -> MaskPlan | None:
    """The inpaint settings of a request with a mask or outpaint sides (or of a mode that needs one)."""
    if not part.masked:
        if mode.mask == "required":
            raise InvalidRequest(
                f"{mode.label} needs a mask: paint the part to change, upload a mask, or choose an outpaint side.",
                field="input.mask",
            )
        return None
    if mode.mask == "none":
        raise InvalidRequest(f"{mode.label} takes no mask; use Inpaint or Image to image.", field="input.mask")
    if denoise <= 0:
        raise InvalidRequest("input.denoise must be above 0 for an inpaint.", field="input.denoise")
    return plan_mask(part, mode.label, mode.fill, mode.only_masked, framed=mode.scale is None)


def prepare(
    plan: InputPlan,
    image: Image.Image,
    upscalers: UpscalerLibrary,
    check: Callable[[], None] | None = None,
    second: str | None = None,
    second_visibility: float = 0.0,
) -> Image.Image:
    """The input made ready for the pass: upscaled (Upscale modes), resized (Vary), framed (img2img) to the
    plan's size; A1111's latent resize mode keeps the image at its own size (in multiples of 8) for now."""
    if plan.upscaler is not None:
        out = upscalers.upscale(image, plan.width, plan.height, plan.upscaler, check)
        if second is not None and second_visibility > 0:  # A1111 extras: a second upscaler blended in
            other = upscalers.upscale(image, plan.width, plan.height, second, check)
            out = Image.blend(out, other, second_visibility)
        return out
    if plan.scale is not None:
        return lanczos(image, plan.width, plan.height)
    if plan.resize is ResizeMode.LATENT:
        return lanczos(image, *multiple_of_8(image.width, image.height, low=8))
    return resize_image(plan.resize, image, plan.width, plan.height)
