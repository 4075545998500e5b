"""Where an inpaint works: the masked region cropped with context ("only masked" / Fooocus's respective field),
the size it is worked at, how it goes back, and the canvas an outpaint grows.

The crop is A1111's (modules/masking.py get_crop_region_v2, expand_crop_region): the mask's bounding box with
`padding` pixels around it, widened to the shape it will be worked at. Worked at the model's native size, a
small region gets the detail of a whole picture, and the time of a small one. Outpainting is Fooocus's: the
picture is extended by a fraction of its size on each chosen side, the new pixels repeat the edge, and the
mask covers them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from pipelines.images.resize import ResizeMode, multiple_of_8, resize_image

SIDES = ("left", "right", "top", "bottom")


@dataclass(frozen=True)
class Box:
    left: int
    top: int
    right: int  # exclusive
    bottom: int

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top

    def astuple(self) -> tuple[int, int, int, int]:
        return self.left, self.top, self.right, self.bottom


def mask_box(mask: Image.Image, padding: int = 0) -> Box | None:
    """The masked pixels' bounding box grown by `padding` within the picture; None when nothing is masked."""
    box = mask.convert("L").getbbox()
    if box is None:
        return None
    left, top, right, bottom = box
    if padding:
        left, top = max(left - padding, 0), max(top - padding, 0)
        right, bottom = min(right + padding, mask.width), min(bottom + padding, mask.height)
    return Box(left, top, right, bottom)


def _widen(low: int, high: int, wanted: float, limit: int) -> tuple[int, int]:
    """A1111's expand along one axis: grow [low, high) to `wanted`, centred, shifted back inside [0, limit]."""
    grow = int(wanted - (high - low))
    low -= grow // 2
    high += grow - grow // 2
    if high >= limit:
        low -= high - limit
        high = limit
    if low < 0:
        high -= low
        low = 0
    return low, min(high, limit)


def expand_box(box: Box, width: int, height: int, image_width: int, image_height: int) -> Box:
    """The box widened to the aspect ratio of width x height, as far as the picture allows (A1111's rule)."""
    if box.width / box.height > width / height:
        top, bottom = _widen(box.top, box.bottom, box.width * height / width, image_height)
        return Box(box.left, top, box.right, bottom)
    left, right = _widen(box.left, box.right, box.height * width / height, image_width)
    return Box(left, box.top, right, box.bottom)


def native_size(box: Box, side: int) -> tuple[int, int]:
    """The size a region is worked at: its shape, with the pixels of a side x side picture (the model's own)."""
    ratio = math.sqrt(side * side / (box.width * box.height))
    return multiple_of_8(box.width * ratio, box.height * ratio)


def crop_to(image: Image.Image, box: Box, width: int, height: int) -> Image.Image:
    """The region, resized to width x height (A1111: "resize and fill", the shapes being nearly equal)."""
    out = resize_image(ResizeMode.RESIZE_AND_FILL, image.crop(box.astuple()), width, height)
    return out.convert(image.mode) if out.mode != image.mode else out


def paste_into(canvas: Image.Image, generated: Image.Image, box: Box) -> Image.Image:
    """A copy of `canvas` with `generated` resized back onto the region (A1111: "crop and resize")."""
    out = canvas.copy()
    out.paste(resize_image(ResizeMode.CROP_AND_RESIZE, generated.convert(canvas.mode), box.width, box.height), box.astuple()[:2])
    return out


def outpaint_margins(width: int, height: int, sides: tuple[str, ...], fraction: float) -> Box:
    """How many pixels are added on each side (left, top, right, bottom): the fraction of the picture's width
    (left, right) or height (top, bottom), as Fooocus grows it."""
    grow_x, grow_y = int(width * fraction), int(height * fraction)
    return Box(
        grow_x if "left" in sides else 0,
        grow_y if "top" in sides else 0,
        grow_x if "right" in sides else 0,
        grow_y if "bottom" in sides else 0,
    )


def outpaint(image: Image.Image, mask: Image.Image, sides: tuple[str, ...], fraction: float) -> tuple[Image.Image, Image.Image]:
    """The picture grown on `sides` with its edge pixels repeated, and the mask grown with the new area masked."""
    m = outpaint_margins(image.width, image.height, sides, fraction)
    rows, cols = (m.top, m.bottom), (m.left, m.right)
    pixels = np.pad(np.asarray(image.convert("RGB")), (rows, cols, (0, 0)), mode="edge")
    masked = np.pad(np.asarray(mask.convert("L")), (rows, cols), mode="constant", constant_values=255)
    return Image.fromarray(pixels, "RGB"), Image.fromarray(masked, "L")
