"""A1111's extras (postprocessing) routes and the upscaler listings, on the engine's queue.

An extras job is an input-image job without a diffusion pass (mode upscale_fast_2 with the factor asked
for): it runs on the worker like every job (one owner of the device, progress and interrupt see it), loads
no checkpoint, and saves nothing (A1111's API does not save extras either). Resizing to a target size
(resize_mode 1) upscales by the larger ratio, then crops to the target's proportions (upscaling_crop) or
stretches to it, as A1111 does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from PIL import Image

from pipelines import GenerationRequest, ImageInput, InvalidRequest, Services
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


@dataclass(frozen=True)
class Afterwards:
    """What the extras route does with the upscaled picture: the canvas to centre it on, and the factor it reports."""

    canvas: tuple[int, int] | None
    scale: float


def a1111_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """The size A1111's upscalers make at `scale`: each side scaled and rounded down to a multiple of 8."""
    return int(width * scale // 8 * 8), int(height * scale // 8 * 8)


def extras_request(
    services: Services, payload: ExtrasBaseRequest, data: bytes, field: str
) -> tuple[GenerationRequest, Afterwards]:
    """The upscale job for one image, and what to do with the result afterwards (a canvas to centre it on).

    As A1111's extras: the factor (resize_mode 1: the larger of the two ratios to the size asked for) gives each
    side rounded down to a multiple of 8, the model runs while the picture is smaller than that (a factor below
    1 is a plain Lanczos downscale), and resize_mode 1 with upscaling_crop centres the result on a canvas of
    the size asked for (cropping what sticks out); without crop the result keeps its own size."""
    stored = services.inputs.put(data, field=field)
    target = None
    scale = float(payload.upscaling_resize)
    name = "upscaling_resize"
    if payload.resize_mode == 1:
        target = (int(payload.upscaling_resize_w), int(payload.upscaling_resize_h))
        scale = max(target[0] / stored.width, target[1] / stored.height)
        name = "upscaling_resize_w"
    size = a1111_size(stored.width, stored.height, scale)
    if min(size) < 1:
        raise InvalidRequest(
            f"{name}: {scale:g} times {stored.width}x{stored.height} rounds down to {size[0]}x{size[1]} (sides are "
            "rounded down to multiples of 8, as A1111 does).",
            field=name,
        )
    second = None if payload.upscaler_2.strip().lower() in ("", "none") else payload.upscaler_2
    part = ImageInput(
        stored.sha256,
        mode="upscale_fast_2",
        size=size,
        upscaler=payload.upscaler_1,
        upscaler_2=second,
        upscaler_2_visibility=float(payload.extras_upscaler_2_visibility) if second else 0.0,
    )
    canvas = target if target is not None and payload.upscaling_crop else None
    return GenerationRequest(input=part, save_images=False, output_format="png"), Afterwards(canvas, scale)


def finish(image: Image.Image, after: Afterwards) -> Image.Image:
    """resize_mode 1 with crop: the picture centred on a black canvas of the size asked for, as A1111 pastes it."""
    canvas = after.canvas
    if canvas is None or image.size == canvas:
        return image
    out = Image.new("RGB", canvas)
    out.paste(image, (canvas[0] // 2 - image.width // 2, canvas[1] // 2 - image.height // 2))
    return out


def html_info(request: GenerationRequest, after: Afterwards) -> str:
    part = request.input
    assert part is not None
    text = f"Postprocess upscale by: {after.scale:g}, Postprocess upscaler: {part.upscaler}"
    if part.upscaler_2:
        text += f", Postprocess upscaler 2: {part.upscaler_2}"
    return f"<p>{text}</p>"
