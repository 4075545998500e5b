"""Checking a GenerationRequest before it reaches the queue, with messages that name the field.

The UI and the HTTP API both call `validate` at submit time, so a bad value is refused at once
(HTTP 422 for the API) instead of failing minutes later in the worker.
"""

from __future__ import annotations

import math

from pipelines.errors import InvalidRequest
from pipelines.generation.quality import check_controls, control_limits
from pipelines.samplers import SamplerTable
from pipelines.speed.token_merging import MAX_RATIO
from pipelines.types import GenerationRequest

# field: (lowest, highest)
LIMITS: dict[str, tuple[float, float]] = {
    "width": (64, 4096),
    "height": (64, 4096),
    "steps": (1, 150),
    "cfg_scale": (0.0, 30.0),
    "image_count": (1, 32),
    "clip_skip": (1, 12),
    "seed": (-1, 2**63 - 1),
    "refiner_switch": (0.0, 1.0),
    **control_limits(),  # Fooocus's sampling controls (tables/quality.yaml)
    "step_cache": (0, 10),
    "token_merging": (0.0, MAX_RATIO),
}
OUTPUT_FORMATS = {"png": "png", "jpeg": "jpeg", "jpg": "jpeg", "webp": "webp"}
MAX_LORAS = 5
LORA_WEIGHT = (-2.0, 2.0)


def validate(request: GenerationRequest, samplers: SamplerTable) -> GenerationRequest:
    """Return the request with names normalized; raise InvalidRequest naming the first bad field."""
    for name, (low, high) in LIMITS.items():
        value = getattr(request, name)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (isinstance(value, float) and not math.isfinite(value))
        ):
            raise InvalidRequest(f"{name} must be a number, got {value!r}.", field=name)
        if not low <= value <= high:
            raise InvalidRequest(f"{name} must be between {low:g} and {high:g}, got {value!r}.", field=name)
    for name in ("width", "height"):
        if getattr(request, name) % 8:
            raise InvalidRequest(f"{name} must be a multiple of 8, got {getattr(request, name)}.", field=name)
    for name in ("steps", "image_count", "clip_skip", "seed", "width", "height", "step_cache"):
        if int(getattr(request, name)) != getattr(request, name):
            raise InvalidRequest(f"{name} must be a whole number, got {getattr(request, name)!r}.", field=name)
    if not isinstance(request.prompt, str) or not isinstance(request.negative_prompt, str):
        raise InvalidRequest("prompt and negative_prompt must be text.", field="prompt")
    fmt = OUTPUT_FORMATS.get(str(request.output_format).lower())
    if fmt is None:
        raise InvalidRequest(
            f"output_format must be one of png, jpeg, webp; got {request.output_format!r}.", field="output_format"
        )
    if len([lo for lo in request.loras if lo.enabled]) > MAX_LORAS:
        raise InvalidRequest(f"At most {MAX_LORAS} LoRAs can be used at once.", field="loras")
    for lora in request.loras:
        if not LORA_WEIGHT[0] <= float(lora.weight) <= LORA_WEIGHT[1]:
            raise InvalidRequest(f"LoRA {lora.name!r}: weight must be between -2 and 2, got {lora.weight}.", field="loras")
    choice = samplers.resolve(request.sampler, request.scheduler)  # raises for unknown names
    request = check_controls(request)  # Fooocus's sampling controls: floats, a known refiner swap method
    return request.replace(
        output_format=fmt,
        sampler=choice.sampler,
        scheduler=request.scheduler if choice.note else choice.schedule,
        steps=int(request.steps),
        image_count=int(request.image_count),
        clip_skip=int(request.clip_skip),
        seed=int(request.seed),
        width=int(request.width),
        height=int(request.height),
        cfg_scale=float(request.cfg_scale),
        step_cache=int(request.step_cache),
        token_merging=float(request.token_merging),
        fast_decode=bool(request.fast_decode),
    )
