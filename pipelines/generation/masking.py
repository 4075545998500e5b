"""The mask part of an input image, planned and made ready: A1111's masked img2img and Fooocus's Inpaint or Outpaint.

Planning (at submit) checks the mask settings and says what the job makes: with a mode that has a scale (the
page's Inpaint methods) the picture's own size, grown by the outpaint sides; with A1111's img2img the request's
width x height, the picture and the mask framed by its resize mode. Preparing (on the worker) is A1111's order:
outpaint growth (Fooocus's), invert, frame, blur, then either the masked region cropped with its padding (only
masked) or the whole picture, at the size the model works at; the result goes back through `paste_back`, which
keeps the input's own pixels wherever the blurred mask is 0.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any

from PIL import Image

from pipelines.errors import InvalidRequest
from pipelines.images import masks, regions
from pipelines.images.regions import Box
from pipelines.images.resize import ResizeMode, lanczos, multiple_of_8, resize_image
from pipelines.types import GenerationRequest, ImageInput

BLUR = (0, 64)  # A1111's slider range of mask blur
PADDING = (0, 256)
FRACTION = (0.05, 1.0)


class Fill(str, enum.Enum):
    """A1111's masked content (inpainting_fill 0-3): what the masked area starts from."""

    FILL = "fill"  # the colours around it
    ORIGINAL = "original"  # what is there
    LATENT_NOISE = "latent_noise"  # noise, in latent space
    LATENT_NOTHING = "latent_nothing"  # zeros, in latent space

    @classmethod
    def from_a1111(cls, index: int) -> Fill:
        return list(cls)[index]

    @property
    def label(self) -> str:
        return self.value.replace("_", " ")

    @property
    def in_latents(self) -> bool:
        return self in (Fill.LATENT_NOISE, Fill.LATENT_NOTHING)


@dataclass(frozen=True)
class MaskPlan:
    mask: str | None  # the stored mask's sha256; None: outpaint only
    fill: Fill
    blur_x: int
    blur_y: int
    invert: bool
    only_masked: bool
    padding: int
    outpaint: tuple[str, ...]
    fraction: float
    framed: bool  # A1111's img2img: the picture and the mask framed to the request's size by its resize mode


def _number(value: Any, field: str, low: float, high: float, whole: bool = False) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and low <= value <= high
    if not ok or (whole and not float(value).is_integer()):
        kind = "a whole number" if whole else "a number"
        raise InvalidRequest(f"{field} must be {kind} from {low:g} to {high:g}, got {value!r}.", field=field)
    return float(value)


def plan_mask(part: ImageInput, mode_label: str, mode_fill: str, only_masked: bool, framed: bool) -> MaskPlan:
    """The mask settings checked (InvalidRequest naming the field at fault), the mode's defaults filled in."""
    try:
        fill = Fill(part.inpaint_fill or mode_fill)
    except ValueError as exc:
        known = ", ".join(f.value for f in Fill)
        raise InvalidRequest(
            f"Unknown masked content {part.inpaint_fill!r}. Known: {known}.", field="input.inpaint_fill"
        ) from exc
    sides = tuple(str(side).strip().lower() for side in part.outpaint)
    unknown = [side for side in sides if side not in regions.SIDES]
    if unknown:
        raise InvalidRequest(f"Unknown outpaint side {unknown[0]!r}. Known: {', '.join(regions.SIDES)}.", field="input.outpaint")
    if sides and framed:
        raise InvalidRequest(
            f"input.outpaint: {mode_label} frames the picture to the request's size; outpaint with an Inpaint mode.",
            field="input.outpaint",
        )
    return MaskPlan(
        mask=part.mask,
        fill=fill,
        blur_x=int(_number(part.mask_blur_x, "input.mask_blur_x", *BLUR, whole=True)),
        blur_y=int(_number(part.mask_blur_y, "input.mask_blur_y", *BLUR, whole=True)),
        invert=bool(part.invert_mask),
        only_masked=only_masked if part.only_masked is None else bool(part.only_masked),
        padding=int(_number(part.only_masked_padding, "input.only_masked_padding", *PADDING, whole=True)),
        outpaint=tuple(side for side in regions.SIDES if side in sides),
        fraction=_number(part.outpaint_fraction, "input.outpaint_fraction", *FRACTION),
        framed=framed,
    )


def canvas_size(plan: MaskPlan, width: int, height: int) -> tuple[int, int]:
    """The size of the picture an inpaint makes from one of width x height: grown by the outpaint sides."""
    m = regions.outpaint_margins(width, height, plan.outpaint, plan.fraction)
    return width + m.left + m.right, height + m.top + m.bottom


def job_model(request: GenerationRequest) -> GenerationRequest:
    """The request as it runs: an inpaint on the inpaint model picked for it (an inpainting checkpoint)."""
    part = request.input
    if part is None or not part.masked or not part.inpaint_model:
        return request
    return request.replace(model=part.inpaint_model)


def with_inpaint_prompt(request: GenerationRequest) -> GenerationRequest:
    """Fooocus's additional inpaint prompt, put before the prompt on its own line."""
    part = request.input
    if part is None or not part.masked or not part.inpaint_prompt.strip():
        return request
    extra = part.inpaint_prompt.strip()
    return request.replace(prompt=f"{extra}\n{request.prompt}" if request.prompt.strip() else extra)


@dataclass
class MaskedInput:
    """An inpaint made ready: what the result is laid over, through which mask, and where it is worked on."""

    canvas: Image.Image  # the picture at the result's size (outpainted, framed): kept wherever `overlay` is 0
    mask: Image.Image  # "L": the blurred mask on the canvas
    overlay: Image.Image  # "L": where the new pixels show over the canvas (A1111's mask_for_overlay)
    region: Box | None  # only masked: the part of the canvas worked on; None: the whole canvas
    target: tuple[int, int] | None  # A1111's img2img: the request's size, which the region is worked at

    def work_size(self, native: int) -> tuple[int, int]:
        """The size the model works at: the request's (A1111's img2img), the region's shape at the model's native
        size (only masked), or the canvas in multiples of 8."""
        if self.target is not None:
            return self.target
        if self.region is not None:
            return regions.native_size(self.region, native)
        return multiple_of_8(*self.canvas.size)

    def work_pair(self, size: tuple[int, int], fill: Fill) -> tuple[Image.Image, Image.Image]:
        """(picture, mask) at `size`, the masked area pre-filled from its surroundings for Fill.FILL and the
        latent fills (A1111 fills the pixels for every content but "original")."""
        if self.region is not None:
            image, mask = regions.crop_to(self.canvas, self.region, *size), regions.crop_to(self.mask, self.region, *size)
        else:
            image, mask = lanczos(self.canvas, *size), lanczos(self.mask, *size)
        if fill is not Fill.ORIGINAL:
            image = masks.fill(image, mask)
        return image, mask

    def paste_back(self, generated: Image.Image) -> Image.Image:
        """The generated picture back on the canvas: in its region, resized, then shown through the overlay mask."""
        if self.region is not None:
            generated = regions.paste_into(self.canvas, generated, self.region)
        else:
            generated = lanczos(generated.convert("RGB"), *self.canvas.size)
        return masks.overlay(generated, self.canvas, self.overlay)


def masked_input(
    plan: MaskPlan, image: Image.Image, mask: Image.Image | None, size: tuple[int, int], resize: ResizeMode
) -> MaskedInput:
    """The picture and its mask made ready (A1111's order); `size` is the result's (the plan's width x height).
    A mask of another size than the picture is stretched to it first (A1111 frames both to the request's size by the
    resize mode, which for the default, just resize, is the same); InvalidRequest when nothing is masked."""
    mask = Image.new("L", image.size, 0) if mask is None else mask.convert("L")
    if mask.size != image.size:  # stretched to the picture, and binary again
        mask = masks.binary_mask(mask.resize(image.size, Image.Resampling.LANCZOS))
    if plan.outpaint:
        image, mask = regions.outpaint(image, mask, plan.outpaint, plan.fraction)
    if plan.invert:
        mask = masks.invert(mask)
    if plan.framed:
        frame = ResizeMode.JUST_RESIZE if resize is ResizeMode.LATENT else resize
        image, mask = resize_image(frame, image, *size), resize_image(frame, mask, *size).convert("L")
    if masks.is_blank(mask):
        raise InvalidRequest(
            "The mask is empty: paint the part to change, upload a mask, or choose an outpaint side.", field="input.mask"
        )
    mask = masks.blur(mask, plan.blur_x, plan.blur_y)
    if plan.only_masked:
        box = regions.mask_box(mask, plan.padding)
        assert box is not None  # a blur never empties a mask
        target = size if plan.framed else None
        if target is not None:
            box = regions.expand_box(box, *target, *mask.size)
        return MaskedInput(image, mask, mask, box, target)
    return MaskedInput(image, mask, masks.doubled(mask), None, size if plan.framed else None)
