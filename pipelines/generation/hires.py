"""A1111's hires fix, planned: the target size, the upscaler (a latent mode or a pixel upscaler), the second
pass's steps, strength, prompt and sampler.

The first pass makes the image at the request's size; the result is upscaled (latents resized, or decoded
image upscaled and encoded again) and denoised at `denoise` by the img2img task. A1111's rules: a target
given as hr_resize_x/y wins over hr_scale, one of them 0 keeps the proportions; 0 second-pass steps means
the first pass's steps; an empty hires prompt or sampler means the first pass's.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.errors import InvalidRequest
from pipelines.generation.img2img import schedule_length
from pipelines.generation.upscale import UpscalerChoice, UpscalerLibrary
from pipelines.samplers import SamplerChoice, SamplerTable
from pipelines.types import GenerationRequest, HiresFix
from pipelines.validation import LIMITS

SCALE = (1.0, 4.0)


@dataclass(frozen=True)
class HiresPlan:
    width: int
    height: int
    steps: int  # the second pass's schedule (A1111: denoise x steps are run)
    denoise: float
    upscaler: UpscalerChoice
    choice: SamplerChoice
    sampler_given: bool


def target_size(width: int, height: int, hires: HiresFix) -> tuple[int, int]:
    """A1111's hr_upscale_to_x/y, in multiples of 8 (rounded down, as its latent division does)."""
    if hires.resize_x or hires.resize_y:
        x = hires.resize_x or round(hires.resize_y * width / height)
        y = hires.resize_y or round(hires.resize_x * height / width)
    else:
        x, y = width * hires.scale, height * hires.scale
    return int(x) // 8 * 8, int(y) // 8 * 8


def plan_hires(request: GenerationRequest, upscalers: UpscalerLibrary, samplers: SamplerTable) -> HiresPlan:
    """The plan for `request.hires`; InvalidRequest naming the hires field at fault."""
    hires: HiresFix = request.hires  # type: ignore[assignment]
    checks = (("scale", hires.scale, *SCALE), ("denoise", hires.denoise, 0.0, 1.0), ("steps", hires.steps, 0, LIMITS["steps"][1]))
    for name, value, low, high in checks:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise InvalidRequest(f"hires.{name} must be a number from {low:g} to {high:g}, got {value!r}.", field=f"hires.{name}")
    for name in ("resize_x", "resize_y"):
        value = getattr(hires, name)
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not (value == 0 or LIMITS["width"][0] <= value <= LIMITS["width"][1])
        ):
            raise InvalidRequest(f"hires.{name} must be 0 or a size from 64 to 4096, got {value!r}.", field=f"hires.{name}")
    if hires.denoise <= 0:
        raise InvalidRequest("hires.denoise must be above 0: the second pass re-makes part of the image.", field="hires.denoise")
    width, height = target_size(request.width, request.height, hires)
    if not (LIMITS["width"][0] <= min(width, height) and max(width, height) <= LIMITS["width"][1]):
        raise InvalidRequest(f"The hires fix would make {width}x{height}; sides must be 64 to 4096.", field="hires.scale")
    upscaler = upscalers.resolve(hires.upscaler, field="hires.upscaler")
    given = bool(hires.sampler)
    try:
        choice = samplers.resolve(hires.sampler or request.sampler, (hires.scheduler or None) if given else request.scheduler)
    except InvalidRequest as exc:
        raise InvalidRequest(str(exc), field="hires.sampler" if given else exc.field) from exc
    steps = int(hires.steps or request.steps)
    if hires.denoise > 0 and int(steps * hires.denoise) < 1:  # at least one step runs, as in A1111
        steps = schedule_length(1, hires.denoise)
    return HiresPlan(width, height, steps, float(hires.denoise), upscaler, choice, given)
