"""A1111's extras (postprocessing) routes and the upscaler listings, on the engine's queue.

An extras job is an input-image job without a diffusion pass (mode upscale_fast_2 with the factor asked
for): it runs on the worker like every job (one owner of the device, progress and interrupt see it), loads
no checkpoint, and saves nothing (A1111's API does not save extras either). Resizing to a target size
(resize_mode 1) upscales by the larger ratio, then crops to the target's proportions (upscaling_crop) or
stretches to it, as A1111 does.
"""

from __future__ import annotations

import re
from typing import Any

from PIL import Image

from pipelines import GenerationRequest, ImageInput, Services
from ui.api.schemas import ExtrasBaseRequest, LatentUpscalerModeItem, UpscalerItem

_SCALE_IN_NAME = re.compile(r"(?:^|[^0-9])([1-8])x|x([1-8])(?:[^0-9]|$)", re.IGNORECASE)


def upscaler_items(services: Services) -> list[UpscalerItem]:
    """A1111's /upscalers: the built-ins (scale 4, as A1111 lists them), then the models with their files."""
    items = []
    records = {r.name: r for r in services.upscalers.models()}
    for name in services.upscalers.pixel_names():
        record = records.get(name)
        if record is None:
            items.append(UpscalerItem(name=name, model_name=None, model_path=None, model_url=None, scale=4))
            continue
        match = _SCALE_IN_NAME.search(record.name)
        scale = float(next(g for g in match.groups() if g)) if match else 4.0
        items.append(UpscalerItem(name=name, model_name=record.family or None, model_path=str(record.path), scale=scale))
    return items


def latent_mode_items(services: Services) -> list[LatentUpscalerModeItem]:
    return [LatentUpscalerModeItem(name=name) for name in services.upscalers.latent_names()]


def extras_request(services: Services, payload: ExtrasBaseRequest, data: bytes, field: str) -> tuple[GenerationRequest, Any]:
    """The upscale job for one image, and what to do with the result afterwards (a size to crop or stretch to)."""
    stored = services.inputs.put(data, field=field)
    target = None
    scale = float(payload.upscaling_resize)
    if payload.resize_mode == 1:
        target = (int(payload.upscaling_resize_w), int(payload.upscaling_resize_h))
        scale = max(target[0] / stored.width, target[1] / stored.height)
    second = None if payload.upscaler_2.strip().lower() in ("", "none") else payload.upscaler_2
    part = ImageInput(
        stored.sha256,
        mode="upscale_fast_2",
        scale=scale,
        upscaler=payload.upscaler_1,
        upscaler_2=second,
        upscaler_2_visibility=float(payload.extras_upscaler_2_visibility) if second else 0.0,
    )
    return GenerationRequest(input=part, save_images=False, output_format="png"), (target, payload.upscaling_crop)


def finish(image: Image.Image, after: Any) -> Image.Image:
    target, crop = after
    if target is None or image.size == target:
        return image
    if not crop:
        return image.resize(target, Image.Resampling.LANCZOS)
    left, top = (image.width - target[0]) // 2, (image.height - target[1]) // 2
    return image.crop((left, top, left + target[0], top + target[1]))


def html_info(request: GenerationRequest) -> str:
    part = request.input
    assert part is not None
    text = f"Postprocess upscale by: {part.scale:g}, Postprocess upscaler: {part.upscaler}"
    if part.upscaler_2:
        text += f", Postprocess upscaler 2: {part.upscaler_2}"
    return f"<p>{text}</p>"
